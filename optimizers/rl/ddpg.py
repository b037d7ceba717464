"""DDPG for per-layer design decisions (HAQ's bitwidths, AMC's keep ratios): one agent for both.

What makes it work on these tasks (OPTIMIZERS.md) is not the RL library but two tricks from AMC and
HAQ: the episode's final reward is given to every step of the episode, and a moving-average baseline
is subtracted from rewards when the critic learns. Otherwise it is textbook DDPG: actor and critic
300-300, soft target updates with tau = 0.01, actor lr 1e-4, critic lr 1e-3, discount 1, a number of
warm-up episodes of uniform random actions, then the actor's action plus truncated-normal noise
whose sigma decays per episode.

Everything an interrupted search needs to continue identically is in `save()`: the four networks,
both optimizers, the replay buffer, the baseline, the episode counter and the random generators'
states. Tensors go to safetensors, the rest to JSON; nothing is pickled. The agent runs on whatever
torch device its caller names (no `.cuda()` anywhere).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hil.errors import ConfigError, HilError

FORMAT = "hil-ddpg/1"


class AgentStateError(HilError):
    """A saved agent is missing, damaged, or was made with other settings."""


@dataclass(frozen=True)
class DDPGConfig:
    """Defaults are the published ones (AMC paper and HAQ/AMC public code) unless noted."""

    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    discount: float = 1.0
    batch_size: int = 64
    replay_size: int = 6400  # transitions (HAQ: 128 episodes' worth of a ~50-step episode)
    warmup_episodes: int = 100
    noise_sigma: float = 0.5
    noise_decay: float = 0.95  # per episode after warm-up (AMC 0.95; HAQ's code uses 0.99)
    baseline_alpha: float = 0.5  # moving-average step of the reward baseline (AMC/HAQ code)
    action_low: float = 0.0
    action_high: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.batch_size < 1 or self.replay_size < self.batch_size:
            raise ConfigError("DDPG needs hidden >= 1, batch >= 1 and a replay buffer of at least one batch")
        if not 0 < self.tau <= 1 or not 0 < self.baseline_alpha <= 1:
            raise ConfigError("DDPG tau and baseline_alpha must be within (0, 1]")
        if self.warmup_episodes < 0 or self.noise_sigma < 0 or not 0 < self.noise_decay <= 1:
            raise ConfigError("DDPG warm-up episodes and noise sigma must be >= 0, decay within (0, 1]")
        if not self.action_low < self.action_high:
            raise ConfigError("DDPG action_low must be below action_high")


class Actor(nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


class Critic(nn.Module):
    """Q(s, a): state and action enter the first hidden layer through separate weights (AMC's form)."""

    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.fs = nn.Linear(state_dim, hidden)
        self.fa = nn.Linear(1, hidden)
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.rest(self.fs(s) + self.fa(a))


@dataclass
class Transition:
    state: np.ndarray
    action: float
    next_state: np.ndarray
    done: bool


class ReplayBuffer:
    """A ring buffer of (s, a, r, s', done) as tensors, so it saves to safetensors as is."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        self.capacity = capacity
        self.s = torch.zeros(capacity, state_dim)
        self.a = torch.zeros(capacity, 1)
        self.r = torch.zeros(capacity, 1)
        self.s2 = torch.zeros(capacity, state_dim)
        self.done = torch.zeros(capacity, 1)
        self.size = 0
        self.pos = 0

    def add(self, s: np.ndarray, a: float, r: float, s2: np.ndarray, done: bool) -> None:
        i = self.pos
        self.s[i] = torch.as_tensor(s, dtype=torch.float32)
        self.a[i, 0] = a
        self.r[i, 0] = r
        self.s2[i] = torch.as_tensor(s2, dtype=torch.float32)
        self.done[i, 0] = float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, self.size, (n,), generator=gen)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"replay.s": self.s, "replay.a": self.a, "replay.r": self.r, "replay.s2": self.s2,
                "replay.done": self.done}


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float, low: float, high: float) -> float:
    """A draw of N(mean, sigma) restricted to [low, high], by inverting the normal CDF on the
    truncated interval (exact, no rejection loop that could spin when the mean is far outside)."""
    if sigma <= 0:
        return float(min(max(mean, low), high))
    cdf = lambda x: 0.5 * (1.0 + math.erf((x - mean) / (sigma * math.sqrt(2.0))))  # noqa: E731
    lo, hi = cdf(low), cdf(high)
    if hi - lo < 1e-12:  # the mass is all beyond one bound
        return float(low if mean < low else high)
    u = lo + (hi - lo) * rng.random()
    x = mean + sigma * math.sqrt(2.0) * _erfinv(2.0 * u - 1.0)
    return float(min(max(x, low), high))


def _erfinv(y: float) -> float:
    y = min(max(y, -1 + 1e-15), 1 - 1e-15)
    return float(torch.erfinv(torch.tensor(y, dtype=torch.float64)))


class DDPGAgent:
    """Acts for one step at a time; learns at the end of each episode from its final reward."""

    def __init__(self, state_dim: int, cfg: DDPGConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg or DDPGConfig()
        self.state_dim = state_dim
        self.device = torch.device(device)
        torch_gen = torch.Generator().manual_seed(self.cfg.seed)
        with torch.random.fork_rng(devices=[]):  # initial weights from our seed, not the caller's state
            torch.manual_seed(self.cfg.seed)
            self.actor = Actor(state_dim, self.cfg.hidden)
            self.critic = Critic(state_dim, self.cfg.hidden)
        self.actor_target = Actor(state_dim, self.cfg.hidden)
        self.critic_target = Critic(state_dim, self.cfg.hidden)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for m in (self.actor, self.critic, self.actor_target, self.critic_target):
            m.to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr_critic)
        self.replay = ReplayBuffer(self.cfg.replay_size, state_dim)
        self.gen = torch_gen
        self.rng = np.random.default_rng(self.cfg.seed)
        self.episode = 0  # episodes finished
        self.baseline: float | None = None
        self.updates = 0
        self.history: list[dict[str, Any]] = []  # per episode: reward, sigma, losses

    # ------------------------------------------------------------------ acting
    @property
    def warming_up(self) -> bool:
        return self.episode < self.cfg.warmup_episodes

    @property
    def sigma(self) -> float:
        """Exploration noise of the current episode: decays once per episode after the warm-up."""
        return self.cfg.noise_sigma * self.cfg.noise_decay ** max(0, self.episode - self.cfg.warmup_episodes)

    def act(self, state: np.ndarray, explore: bool = True) -> float:
        lo, hi = self.cfg.action_low, self.cfg.action_high
        if explore and self.warming_up:
            return float(self.rng.uniform(lo, hi))
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)[None]
            mu = float(self.actor(s)[0, 0]) * (hi - lo) + lo
        if not explore:
            return mu
        return truncated_normal(self.rng, mu, self.sigma, lo, hi)

    # ------------------------------------------------------------------ learning
    def end_episode(self, steps: list[Transition], final_reward: float) -> dict[str, Any]:
        """Store the episode with its final reward on every step, then learn (after the warm-up):
        one gradient step per transition of the episode, as AMC and HAQ do."""
        for t in steps:
            self.replay.add(t.state, self._to_unit(t.action), final_reward, t.next_state, t.done)
        info: dict[str, Any] = {"episode": self.episode, "reward": final_reward, "sigma": self.sigma,
                                "warmup": self.warming_up}
        if not self.warming_up and self.replay.size >= self.cfg.batch_size:
            losses = [self._update() for _ in steps]
            info["critic_loss"] = float(np.mean([x[0] for x in losses]))
            info["actor_loss"] = float(np.mean([x[1] for x in losses]))
        info["baseline"] = self.baseline
        self.episode += 1
        self.history.append(info)
        return info

    def _to_unit(self, a: float) -> float:
        lo, hi = self.cfg.action_low, self.cfg.action_high
        return (a - lo) / (hi - lo)

    def _update(self) -> tuple[float, float]:
        cfg = self.cfg
        s, a, r, s2, done = (x.to(self.device) for x in self.replay.sample(cfg.batch_size, self.gen))
        batch_mean = float(r.mean())
        # The baseline turns "this episode was good" into "better than usual": raw accuracies all
        # sit near the same value and a critic fit to them barely separates actions.
        self.baseline = batch_mean if self.baseline is None else (
            self.baseline + cfg.baseline_alpha * (batch_mean - self.baseline))
        r = r - self.baseline
        with torch.no_grad():
            q_next = self.critic_target(s2, self.actor_target(s2))
            target = r + cfg.discount * (1.0 - done) * q_next
        critic_loss = nn.functional.mse_loss(self.critic(s, a), target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                    pt.mul_(1.0 - cfg.tau).add_(p, alpha=cfg.tau)
        self.updates += 1
        return float(critic_loss.detach()), float(actor_loss.detach())

    # ------------------------------------------------------------------ checkpoint
    def save(self, folder: str | os.PathLike[str]) -> None:
        """`agent.safetensors` (networks, optimizer moments, replay, torch generator) and `agent.json`
        (config, counters, baseline, numpy generator, optimizer hyper-parameters), written atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, net in self._nets().items():
            for k, v in net.state_dict().items():
                tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
        opt_meta = {}
        for name, opt in self._opts().items():
            sd = opt.state_dict()
            opt_meta[name] = {"param_groups": sd["param_groups"], "state_keys": {}}
            for pid, st in sd["state"].items():
                keys = []
                for k, v in st.items():
                    tensors[f"{name}.state.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
                    keys.append(k)
                opt_meta[name]["state_keys"][str(pid)] = keys
        tensors.update({k: v.contiguous() for k, v in self.replay.tensors().items()})
        tensors["torch_generator"] = self.gen.get_state()
        meta = {
            "format": FORMAT, "config": asdict(self.cfg), "state_dim": self.state_dim, "episode": self.episode,
            "baseline": self.baseline, "updates": self.updates, "replay_size": self.replay.size,
            "replay_pos": self.replay.pos, "numpy_generator": self.rng.bit_generator.state,
            "optimizers": opt_meta, "history": self.history,
        }
        _atomic(folder / "agent.safetensors", lambda p: save_file(tensors, str(p)))
        _atomic(folder / "agent.json", lambda p: p.write_text(json.dumps(meta, indent=1)))

    @classmethod
    def load(cls, folder: str | os.PathLike[str], cfg: DDPGConfig | None = None,
             device: str | torch.device = "cpu") -> DDPGAgent:
        """The agent saved in `folder`; with `cfg`, it must equal the saved configuration."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "agent.json").read_text())
            tensors = load_file(str(folder / "agent.safetensors"))
        except (OSError, ValueError) as e:
            raise AgentStateError(f"cannot read the agent saved in {folder}: {e}") from None
        if meta.get("format") != FORMAT:
            raise AgentStateError(f"{folder}/agent.json is not a {FORMAT} agent")
        saved = DDPGConfig(**meta["config"])
        if cfg is not None and cfg != saved:
            diff = next(k for k in asdict(cfg) if asdict(cfg)[k] != asdict(saved)[k])
            raise AgentStateError(f"the agent in {folder} was made with {diff}={getattr(saved, diff)!r}, "
                                  f"this run has {getattr(cfg, diff)!r}; use the same settings or another --out")
        agent = cls(int(meta["state_dim"]), saved, device)
        for name, net in agent._nets().items():
            net.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                                 if k.startswith(name + ".") and ".state." not in k})
        for name, opt in agent._opts().items():
            om = meta["optimizers"][name]
            state = {int(pid): {k: tensors[f"{name}.state.{pid}.{k}"].to(agent.device) for k in keys}
                     for pid, keys in om["state_keys"].items()}
            opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
        for k in ("s", "a", "r", "s2", "done"):
            getattr(agent.replay, k).copy_(tensors[f"replay.{k}"])
        agent.replay.size, agent.replay.pos = int(meta["replay_size"]), int(meta["replay_pos"])
        agent.gen.set_state(tensors["torch_generator"])
        agent.rng.bit_generator.state = meta["numpy_generator"]
        agent.episode, agent.baseline, agent.updates = int(meta["episode"]), meta["baseline"], int(meta["updates"])
        agent.history = list(meta["history"])
        return agent

    def _nets(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                "critic_target": self.critic_target}

    def _opts(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt}


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise AgentStateError(f"cannot write {path}: {e.strerror or e}") from None
