"""AMC's environment: one step per prunable channel group, the action wall, and the reward.

A step's action is the fraction of the group's channels to keep (AMC's public code acts on input
channels; we act on a group, which is the same thing once depthwise and residual couplings are
honoured). It becomes a channel count rounded to the divisor, at least the minimum keep ratio, and
is then clipped by the *action wall*: the largest count such that, with every later group at its
minimum, the budget still holds. The first step's wall is feasible whenever the all-minimum model
meets the budget, and each step keeps the next one feasible, so every episode meets the budget by
construction (OPTIMIZERS.md), for FLOPs exactly and for latency as the LUT predicts it.

Costs: FLOPs are the model's MACs from its description. Latency is the device's LUT summed over the
pruned model's layers through `LatencyModel` (calibrated when the LUT has a calibration); a layer
whose key the LUT lacks (a pruned shape never timed) is measured on demand on the device through the
LUT build path, stored, and read back: never guessed.

State (OPTIMIZERS.md), each feature min-max normalized over the steps: group index, group type
(plain / depthwise-coupled / residual), in channels and out channels of its first producer, stride,
kernel, weight count; then FLOPs already removed and FLOPs of the later groups (fractions of the
full model), and the previous action.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from hil.devices.host.targets import open_target, settings_for
from hil.errors import ConfigError, HilError
from hil.inventory import Inventory
from hil.latency import LatencyModel
from hil.lease import hold
from hil.lut_builder.build import build_on_target
from hil.measure import MeasureSettings
from hil.nets.models import ModelSpec
from hil.optimizers.amc.prune import ChannelGraph, Group, candidates, keep_channels, min_keep
from hil.optimizers.bn import calibration_batches, recalibrate_bn
from hil.optimizers.data import ImageSet
from hil.optimizers.train import evaluate
from hil.speedup import Speedup, measure_speedup
from hil.store import Store
from hil.target import Target, fingerprint_class
from hil.workload import Network, Workload

KINDS = ("flops", "latency")
REWARDS = ("acc", "flops-log")
PREFETCH_CANDIDATES = 8  # a clipped step measures all its candidates at once up to this many
UNITS = {"flops": {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}, "latency": {"ms": 1.0, "s": 1e3, "us": 1e-3}}


@dataclass(frozen=True)
class Budget:
    """`flops=0.5` / `latency=0.5`: that fraction of the unpruned model; `latency=2ms`, `flops=5M`:
    absolute (MACs; units k/M/G, or ms/s/us)."""

    kind: str
    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*", text or "")
        if not m:
            raise ConfigError(f"budget {text!r}: write KIND=VALUE, e.g. flops=0.5 or latency=0.5 (fractions of "
                              "the unpruned model) or latency=2ms")
        kind, num, unit = m.group(1).lower(), m.group(2), m.group(3).lower()
        if kind not in KINDS:
            raise ConfigError(f"budget kind {kind!r} is not one of {', '.join(KINDS)}")
        try:
            value = float(num)
        except ValueError:
            raise ConfigError(f"budget {text!r}: {num!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"budget {text!r} must be positive")
        if not unit and value <= 1.0:
            return cls(kind, value, True)
        if not unit and kind == "latency":
            raise ConfigError(f"budget {text!r}: a bare number is a fraction of the unpruned model (<= 1); "
                              f"give a unit for an absolute latency, e.g. latency={num}ms")
        if unit not in UNITS[kind]:
            raise ConfigError(f"budget {text!r}: unit {unit!r} is not one of {', '.join(u for u in UNITS[kind] if u)}")
        return cls(kind, value * UNITS[kind][unit], False)

    def target(self, full: float) -> float:
        return self.value * full if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}" + ("" if self.relative else (" MACs" if self.kind == "flops" else "ms"))


class Cost(Protocol):
    """What a budget is counted in, for a whole model."""

    kind: str

    def __call__(self, spec: ModelSpec) -> float: ...

    def prefetch(self, specs: Iterable[ModelSpec]) -> None:
        """Make the costs of `specs` cheap to ask for (one measurement request for all of them)."""
        ...


class FlopsCost:
    kind = "flops"

    def __call__(self, spec: ModelSpec) -> float:
        return float(spec.macs)

    def prefetch(self, specs: Iterable[ModelSpec]) -> None:
        pass


class LatencyCost:
    """A model's latency (ms) on one device, from its LUT; missing layers measured on demand."""

    kind = "latency"

    def __init__(self, store: Store, inventory: Inventory, device: str, protocol: MeasureSettings | None = None,
                 log: Callable[[str], None] | None = None, lease_timeout_s: float = 600.0,
                 clock: str | None = None) -> None:
        self.store = store
        self.inventory = inventory
        self.device = device
        self.dev = inventory.device(device)  # an unknown device fails here, naming it
        self.settings = settings_for(self.dev, protocol, clock=clock)
        self.log = log
        self.lease_timeout_s = lease_timeout_s
        self._target: Target | None = None
        self._fp_class: str | None = None
        self._model: LatencyModel | None = None
        self.measured = 0  # entries this process had to measure
        self.measure_s = 0.0

    def target(self) -> Target:
        if self._target is None:
            self._target = open_target(self.inventory, self.device)
            self._fp_class = fingerprint_class(self._target.describe(self.settings))
        return self._target

    @property
    def fp_class(self) -> str:
        self.target()
        assert self._fp_class is not None
        return self._fp_class

    def close(self) -> None:
        if self._target is not None:
            self._target.close()
            self._target = None

    def model(self) -> LatencyModel:
        if self._model is None:
            self._model = LatencyModel.from_store(self.store, self.device, self.fp_class)
        return self._model

    def ensure(self, workloads: Iterable[Workload]) -> None:
        """Measure (and store) every workload the LUT lacks, through the LUT build path."""
        table = self.model().table
        missing = {w.key: w for w in workloads if w.key not in table}
        if not missing:
            return
        t0 = time.perf_counter()
        if self.log:
            self.log(f"measuring {len(missing)} missing LUT entries on {self.device}")
        target = self.target()
        with hold(target, self.lease_timeout_s, lease=self.store.lease(target.name)):
            res = build_on_target(self.store, target, _Needed(list(missing.values())), self.settings)
        self.measured += res.measured
        self.measure_s += time.perf_counter() - t0
        self._model = LatencyModel.from_store(self.store, self.device, self.fp_class)
        still = [k for k in missing if k not in self._model.table]
        if still:
            detail = res.errors[-1] if res.errors else "no record"
            raise HilError(f"{self.device}: could not measure {still[0]} ({detail})")

    def prefetch(self, specs: Iterable[ModelSpec]) -> None:
        self.ensure(w for s in specs for w in s.workloads())

    def __call__(self, spec: ModelSpec) -> float:
        layers = spec.workloads()
        self.ensure(layers)
        return float(self.model().network(layers))

    def per_layer(self, spec: ModelSpec) -> dict[str, float]:
        self.ensure(spec.workloads())
        return {layer.name: self.model().latency(layer.workload) for layer in spec.layers}

    def speedup(self, base: ModelSpec, candidate: ModelSpec) -> Speedup:
        """The candidate's speedup over the base: predicted by this LUT's model, measured with both
        whole networks in one session (hil.speedup, the same as `hil speedup`)."""
        self.ensure([*base.workloads(), *candidate.workloads()])
        target = self.target()
        with hold(target, self.lease_timeout_s, lease=self.store.lease(target.name)):
            return measure_speedup(self.store, target, self.model(), base.network(), candidate.network(),
                                   self.settings)


class _Needed:
    """The few workloads a search lacks, as a search space for the LUT build path."""

    name = "amc-on-demand"

    def __init__(self, layers: list[Workload]) -> None:
        self._layers = sorted(layers, key=lambda w: w.key)

    def options(self) -> dict[str, Any]:
        return {"layers": len(self._layers)}

    def workloads(self) -> list[Workload]:
        return list(self._layers)

    def sample(self, n: int, seed: int) -> list[Network]:
        return []


# --------------------------------------------------------------------------- the episode
@dataclass
class EnvConfig:
    divisor: int = 8
    min_ratio: float = 0.2
    reward: str = "acc"
    eval_batch: int = 500
    # BN recalibration before scoring (bn.py): training batches of `bn_batch_size` images, drawn for
    # `bn_seed`; 0 batches scores the pruned model with the unpruned model's statistics (the paper)
    bn_batches: int = 0
    bn_batch_size: int = 128
    bn_seed: int = 0

    def __post_init__(self) -> None:
        if self.bn_batches < 0:
            raise ConfigError(f"--bn-batches must be >= 0, got {self.bn_batches}")
        if self.bn_batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.bn_batch_size}")
        if self.divisor < 1:
            raise ConfigError(f"--divisor must be at least 1, got {self.divisor}")
        if not 0 < self.min_ratio <= 1:
            raise ConfigError(f"--min-ratio must be within (0, 1], got {self.min_ratio}")
        if self.reward not in REWARDS:
            raise ConfigError(f"--reward {self.reward!r} is not one of {', '.join(REWARDS)}")


@dataclass
class EpisodeResult:
    keep: dict[str, int]  # group -> channels kept
    cost: float
    target: float
    flops: int
    accuracy: float
    reward: float
    clipped: int  # steps whose action the wall lowered
    timings: dict[str, float] = field(default_factory=dict)


def reward_of(kind: str, accuracy: float, flops: float) -> float:
    """AMC's rewards: accuracy (the paper's default), or -error * log(FLOPs)."""
    if kind == "acc":
        return float(accuracy)
    return float(-(1.0 - accuracy) * math.log(max(flops, 1.0)))


class AmcEnv:
    """States, the action wall and the reward for one model, one budget."""

    def __init__(self, spec: ModelSpec, model: nn.Module, cost: Cost, budget: Budget, val: ImageSet,
                 cfg: EnvConfig, device: torch.device | str = "cpu", train: ImageSet | None = None) -> None:
        if budget.kind != cost.kind:
            raise ConfigError(f"a {budget.kind} budget needs a {budget.kind} cost, got {cost.kind}")
        self.spec = spec
        self.model = model
        self.cost = cost
        self.budget = budget
        self.val = val
        self.cfg = cfg
        self.device = torch.device(device)
        if cfg.bn_batches and train is None:
            raise ConfigError("BN recalibration (--bn-batches) needs the training split")
        # drawn once and moved to the device once: every episode recalibrates on the same training
        # images (bn.py)
        self.bn_inputs = ([x.to(self.device) for x in
                           calibration_batches(train, cfg.bn_batches, cfg.bn_batch_size, cfg.bn_seed)]
                          if train is not None else [])
        self.graph = ChannelGraph(spec)
        self.groups: list[Group] = [g for g in self.graph.prunable()
                                    if len(candidates(g.channels, cfg.divisor, cfg.min_ratio)) > 1]
        if not self.groups:
            raise ConfigError(f"model {spec.name!r} has nothing prunable: every channel group has at most "
                              f"{cfg.divisor} channels or the minimum keep ratio {cfg.min_ratio} keeps all")
        self.cands = {g.name: candidates(g.channels, cfg.divisor, cfg.min_ratio) for g in self.groups}
        self.min_keep = {g.name: min_keep(g.channels, cfg.divisor, cfg.min_ratio) for g in self.groups}
        self.full_cost = cost(spec)
        self.full_flops = spec.macs
        self.target = budget.target(self.full_cost)
        self.min_spec = self.graph.apply(self.min_keep)
        self.min_cost = cost(self.min_spec)
        if self.min_cost > self.target * (1 + 1e-9):
            unit = "MACs" if budget.kind == "flops" else "ms"
            raise ConfigError(f"budget {budget} ({self.target:.6g} {unit}) is infeasible: the smallest model "
                              f"the minimum keep ratio {cfg.min_ratio} allows costs {self.min_cost:.6g} {unit} "
                              f"({self.min_cost / self.full_cost:.3f} of the unpruned model)")
        self._features = self._static_features()
        self._unit_macs = {u.name: u.macs for u in spec.convs()}
        self.reference_accuracy = self.accuracy(model)

    # ------------------------------------------------------------------ states
    @property
    def steps(self) -> int:
        return len(self.groups)

    @property
    def state_dim(self) -> int:
        return self._features.shape[1] + 3

    def _static_features(self) -> np.ndarray:
        rows = []
        for i, g in enumerate(self.groups):
            first = self.graph.convs[g.producers[0]]
            kind = 1.0 if g.residual else (0.5 if g.depthwise else 0.0)
            kernel = max([first.kernel] + [self.graph.convs[d].kernel for d in g.depthwise])
            weights = sum(self.graph.convs[u].weights for u in {*g.producers, *g.depthwise, *g.consumers})
            rows.append([i, kind, first.cin, g.channels, first.stride, kernel, weights])
        f = np.asarray(rows, dtype=np.float64)
        lo, hi = f.min(0), f.max(0)
        return ((f - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)

    def state(self, i: int, keep: Mapping[str, int], prev_action: float) -> np.ndarray:
        reduced = (self.full_flops - self.graph.apply(keep).macs) / self.full_flops
        later = {u for g in self.groups[i:] for u in (*g.producers, *g.depthwise, *g.consumers)}
        rest = sum(self._unit_macs[u] for u in later) / self.full_flops
        return np.concatenate([self._features[i], np.float32([reduced, rest, prev_action])]).astype(np.float32)

    # ------------------------------------------------------------------ the wall
    def _spec_with(self, keep: Mapping[str, int], i: int, n: int) -> ModelSpec:
        trial = dict(keep)
        trial[self.groups[i].name] = n
        for g in self.groups[i + 1:]:
            trial[g.name] = self.min_keep[g.name]
        return self.graph.apply(trial)

    def _cost_with(self, keep: Mapping[str, int], i: int, n: int) -> float:
        return self.cost(self._spec_with(keep, i, n))

    def wall(self, keep: Mapping[str, int], i: int, want: int) -> int:
        """The largest candidate <= `want` for step i that keeps the budget reachable."""
        cands = [c for c in self.cands[self.groups[i].name] if c <= want]
        if self._cost_with(keep, i, cands[-1]) <= self.target:
            return cands[-1]
        if len(cands) <= PREFETCH_CANDIDATES:
            # one measurement request for every candidate instead of one per bisection probe: a
            # request's fixed cost (fingerprint, drift reference) dominates a few small layers
            self.cost.prefetch(self._spec_with(keep, i, c) for c in cands[:-1])
        lo, hi = 0, len(cands) - 1  # cands[lo] feasible (the wall invariant), cands[hi] not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._cost_with(keep, i, cands[mid]) <= self.target:
                lo = mid
            else:
                hi = mid
        return cands[lo]

    def act(self, keep: dict[str, int], i: int, action: float) -> tuple[int, bool]:
        """Channels kept at step i for `action` (a kept fraction), after rounding and the wall."""
        g = self.groups[i]
        want = keep_channels(action, g.channels, self.cfg.divisor, self.cfg.min_ratio)
        n = self.wall(keep, i, want)
        keep[g.name] = n
        return n, n < want

    # ------------------------------------------------------------------ the reward
    def accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.val, device=self.device, channels_last=False,
                        batch_size=self.cfg.eval_batch).accuracy

    def recalibrate(self, pruned: nn.Module) -> None:
        """Re-estimate the BN statistics of a pruned model on the training batches (none: no-op)."""
        if self.bn_inputs:
            recalibrate_bn(pruned, self.bn_inputs)

    def pruned_model(self, keep: Mapping[str, int]) -> tuple[nn.Module, ModelSpec]:
        """The model an episode scores: the trained model pruned by L1 norm, its BN statistics
        re-estimated when `bn_batches` > 0. The trained model itself is left untouched."""
        pruned, pspec = self.graph.prune(self.model, keep)
        self.recalibrate(pruned)
        return pruned, pspec

    def finish(self, keep: Mapping[str, int], clipped: int) -> EpisodeResult:
        """The episode's end: prune the trained model by L1 norm, (optionally) recalibrate its BN,
        score it on the held-out split without fine-tuning."""
        t0 = time.perf_counter()
        pruned, pspec = self.graph.prune(self.model, keep)
        t_bn = time.perf_counter()
        self.recalibrate(pruned)
        t_bn = time.perf_counter() - t_bn
        acc = self.accuracy(pruned)
        t_eval = time.perf_counter() - t0  # prune, recalibrate and score
        cost = self.cost(pspec)
        if cost > self.target * (1 + 1e-9):  # the wall makes this impossible; say so loudly if not
            raise HilError(f"internal: episode cost {cost:.6g} exceeds the budget {self.target:.6g}")
        flops = pspec.macs
        return EpisodeResult(dict(keep), cost, self.target, flops, acc, reward_of(self.cfg.reward, acc, flops),
                             clipped, {"eval_s": t_eval, "bn_s": t_bn})
