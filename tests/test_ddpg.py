"""The shared DDPG agent: exploration, learning from a final reward, and checkpoint-resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil.errors import ConfigError
from hil.optimizers.rl.ddpg import AgentStateError, DDPGAgent, DDPGConfig, Transition, truncated_normal

torch.set_num_threads(1)

TARGETS = (0.2, 0.8, 0.5)


def _episode(agent: DDPGAgent, explore: bool = True) -> tuple[list[Transition], float, list[float]]:
    """A per-step task with only a final reward: hit a target action at each of three steps."""
    n = len(TARGETS)
    states = [np.eye(n + 1, dtype=np.float32)[i] for i in range(n + 1)]
    steps, actions = [], []
    for i in range(n):
        a = agent.act(states[i], explore)
        actions.append(a)
        steps.append(Transition(states[i], a, states[i + 1], i == n - 1))
    reward = -sum((a - t) ** 2 for a, t in zip(actions, TARGETS, strict=True))
    return steps, reward, actions


def test_truncated_normal_stays_in_bounds_and_centres_on_the_mean():
    rng = np.random.default_rng(0)
    xs = np.array([truncated_normal(rng, 0.5, 0.1, 0.0, 1.0) for _ in range(4000)])
    assert xs.min() >= 0.0 and xs.max() <= 1.0
    assert abs(xs.mean() - 0.5) < 0.01 and abs(xs.std() - 0.1) < 0.01
    # a mean far outside the interval still gives a value inside it (no endless rejection)
    assert 0.0 <= truncated_normal(rng, 5.0, 0.1, 0.0, 1.0) <= 1.0


def test_warmup_is_uniform_then_noise_decays_per_episode():
    agent = DDPGAgent(4, DDPGConfig(warmup_episodes=2, noise_sigma=0.5, noise_decay=0.9, batch_size=4,
                                    replay_size=64))
    assert agent.warming_up
    for _ in range(2):
        steps, r, _ = _episode(agent)
        info = agent.end_episode(steps, r)
        assert "critic_loss" not in info  # nothing learned while warming up
    assert not agent.warming_up and agent.sigma == pytest.approx(0.5)
    steps, r, _ = _episode(agent)
    assert "critic_loss" in agent.end_episode(steps, r)
    assert agent.sigma == pytest.approx(0.45)
    assert agent.baseline is not None


def test_learns_per_step_targets_from_the_final_reward_alone():
    # the paper's learning rates; a uniform random policy scores -0.43 on average here
    cfg = DDPGConfig(warmup_episodes=20, noise_sigma=0.3, noise_decay=0.97, batch_size=32, replay_size=600, seed=0)
    agent = DDPGAgent(len(TARGETS) + 1, cfg)
    for _ in range(300):
        steps, r, _ = _episode(agent)
        agent.end_episode(steps, r)
    _, after, actions = _episode(agent, explore=False)
    assert after > -0.1, actions


def test_a_resumed_agent_continues_exactly(tmp_path):
    cfg = DDPGConfig(warmup_episodes=3, batch_size=8, replay_size=64, seed=3)
    straight = DDPGAgent(len(TARGETS) + 1, cfg)
    for _ in range(8):
        steps, r, _ = _episode(straight)
        straight.end_episode(steps, r)

    first = DDPGAgent(len(TARGETS) + 1, cfg)
    for _ in range(5):
        steps, r, _ = _episode(first)
        first.end_episode(steps, r)
    first.save(tmp_path / "agent")
    assert not list((tmp_path / "agent").glob("*.pt")) and not list((tmp_path / "agent").glob("*.pkl"))
    resumed = DDPGAgent.load(tmp_path / "agent", cfg)
    assert resumed.episode == 5
    for _ in range(3):
        steps, r, _ = _episode(resumed)
        resumed.end_episode(steps, r)
    for a, b in zip(straight.actor.parameters(), resumed.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    assert straight.baseline == resumed.baseline
    assert _episode(straight)[2] == _episode(resumed)[2]


def test_bad_settings_and_foreign_state_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError):
        DDPGConfig(tau=0.0)
    agent = DDPGAgent(2, DDPGConfig(batch_size=4, replay_size=8))
    agent.save(tmp_path)
    with pytest.raises(AgentStateError, match="batch_size"):
        DDPGAgent.load(tmp_path, DDPGConfig(batch_size=8, replay_size=8))
    with pytest.raises(AgentStateError):
        DDPGAgent.load(tmp_path / "nowhere")
