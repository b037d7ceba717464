"""The REINFORCE architecture update (ProxylessNAS, Cai et al. 2019, section 3.3.2).

α is a policy: each block's op is drawn from softmax(α_b), independently, so a network's path has
log p(path) = Σ_b log softmax(α_b)[i_b]. A step samples S networks, scores each on one held-out batch
with R = ACC × (LAT / T)^w (MnasNet's soft-constrained reward; w < 0 favours fast networks), and
ascends J = E[R] with the policy gradient

    ∇α J ≈ (1/S) Σ_s (R_s − b) ∇α log p(path_s),   ∇_{α_b} log p = onehot(i_b) − softmax(α_b),

b a moving average of past rewards. LAT is `SearchLatency.arch`, the very LUT prediction the gradient
rule's E[LAT] is the expectation of: a number, never differentiated, which is the point of the rule
(any hardware objective would do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from hil.errors import ConfigError
from hil.optimizers.dist import Dist
from hil.optimizers.proxyless.latency import SearchLatency
from hil.optimizers.proxyless.supernet import Supernet


def reward(acc: float, latency_ms: float, target_ms: float, exponent: float) -> float:
    """R = ACC × (LAT / T)^w."""
    return acc * (latency_ms / target_ms) ** exponent


def policy_gradient(alphas: Sequence[torch.Tensor], paths: torch.Tensor,
                    advantages: torch.Tensor) -> list[torch.Tensor]:
    """The descent direction −∇α J: −(1/S) Σ_s A_s (onehot(i_sb) − softmax(α_b)) for every block b.

    `paths` is (S, blocks) op indices, `advantages` (S,) the R_s − b. Negated so that a minimizing
    optimizer (the search's Adam) ascends the expected reward.
    """
    out = []
    for b, a in enumerate(alphas):
        p = torch.softmax(a.detach(), 0)
        onehot = torch.nn.functional.one_hot(paths[:, b].to(a.device), len(p)).to(p.dtype)
        adv = advantages.to(device=a.device, dtype=p.dtype)
        out.append(-(adv[:, None] * (onehot - p)).mean(0))
    return out


class ReinforceUpdate:
    """One REINFORCE step per call; its only state is the baseline b (checkpointed by the search)."""

    def __init__(self, target_ms: float, samples: int = 8, baseline_decay: float = 0.95,
                 exponent: float = -0.07) -> None:
        if samples < 1:
            raise ConfigError(f"REINFORCE needs at least one sampled network per step, got {samples}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ConfigError(f"the baseline decay must be in [0, 1), got {baseline_decay!r}")
        if not (math.isfinite(exponent) and exponent <= 0):
            raise ConfigError(f"the reward exponent w must be <= 0 (negative favours fast networks), got {exponent!r}")
        if not target_ms > 0:
            raise ConfigError(f"the target latency must be positive, got {target_ms!r}")
        self.target_ms = target_ms
        self.samples = samples
        self.decay = baseline_decay
        self.exponent = exponent
        self.baseline: float | None = None

    def state(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state(self, state: dict[str, Any]) -> None:
        b = state.get("baseline")
        self.baseline = None if b is None else float(b)

    @torch.no_grad()
    def sample(self, net: Supernet, latency: SearchLatency, batch: tuple[torch.Tensor, torch.Tensor],
               dist: Dist | None = None) -> tuple[list[int], float, float]:
        """Draw one network from softmax(α) (the net's generator), score it; (op indices, ACC, LAT ms)."""
        x, y = batch
        # The weight steps' mode: one path per block, drawn from softmax(α) by the shared generator, so
        # every rank draws the same network. Like the gradient rule's forward, BN uses the batch.
        net.set_mode("weights")
        correct = (net(x).argmax(1) == y).sum().float()
        seen = torch.tensor(float(len(y)), device=correct.device)
        if dist is not None and dist.world > 1:  # the accuracy on the whole batch, not this rank's share
            both = dist.all_sum(torch.stack([correct, seen]))
            correct, seen = both[0], both[1]
        idx = [m.sampled[0] for _, m in net.mixed_ops()]
        arch = [m.choices[i] for (_, m), i in zip(net.mixed_ops(), idx, strict=True)]
        lat, _ = latency.arch(arch)
        return idx, float(correct / seen), lat

    def step(self, net: Supernet, latency: SearchLatency, opt: torch.optim.Optimizer,
             batch: tuple[torch.Tensor, torch.Tensor], dist: Dist | None = None) -> float:
        """One update of α; returns −mean R (a loss: lower is better, like the gradient rule's)."""
        paths, rewards = [], []
        for _ in range(self.samples):
            idx, acc, lat = self.sample(net, latency, batch, dist)
            paths.append(idx)
            rewards.append(reward(acc, lat, self.target_ms, self.exponent))
        r = torch.tensor(rewards, dtype=torch.float64)
        mean = float(r.mean())
        # No history on the first step: the batch's own mean is the only estimate of b there is.
        b = mean if self.baseline is None else self.baseline
        grads = policy_gradient(net.arch_parameters(), torch.tensor(paths), r - b)
        opt.zero_grad(set_to_none=True)
        for a, g in zip(net.arch_parameters(), grads, strict=True):
            a.grad = g.to(a.dtype)
        opt.step()
        # b moves after the step, so R_s − b uses no R_s of its own (an unbiased estimator from step 2).
        self.baseline = mean if self.baseline is None else self.decay * self.baseline + (1 - self.decay) * mean
        net.set_mode("weights")
        return -mean
