"""HAQ's environment: per-layer states, actions to bits, a budget enforced after the episode, costs
from the device's RTL LUT, and the reward from a short fine-tune scored on a held-out split.

An episode has two steps per searched layer: its weight bits, then its activation bits. The state of
a step (OPTIMIZERS.md) is the layer's index, input and output channels, stride, kernel, weight
count, feature-map size, depthwise flag, weight-or-activation flag and the previous action, each
feature min-max normalized over the model's steps. An action a in [0, 1] becomes
bits = round(a * (b_max - b_min + 1) + b_min - 0.5), clamped to [b_min, b_max].

Costs: per layer and (w, a) pair, the latency (ms) and energy (uJ) the device's LUT holds for the
layer's real shape (the model's resolution and width, the device's batch); a network's cost is the
sum over its layers. A missing entry is measured on demand through the LUT build path
(`hil.lut_builder.build.build_on_target`) on the device, stored, then read back: never guessed.
Size is weight bits / 8 in bytes, from the shapes alone.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hil.devices.host.targets import open_target, settings_for
from hil.errors import ConfigError, HilError
from hil.inventory import Inventory
from hil.lease import hold
from hil.lut_builder.build import build_on_target
from hil.measure import Measurement, MeasureSettings
from hil.nets.models import ConvUnit
from hil.optimizers.data import DataSplits
from hil.optimizers.haq.finetune import FinetuneConfig, finetune_quantized
from hil.optimizers.haq.quantize import Policy, QuantizedModel, check_bits
from hil.optimizers.train import evaluate
from hil.store import Store
from hil.target import Target, fingerprint_class
from hil.workload import Network, QuantLayer, Workload

KINDS = ("latency", "energy", "size")
UNITS = {"latency": {"ms": 1.0, "s": 1e3, "us": 1e-3}, "energy": {"uj": 1.0, "mj": 1e3, "nj": 1e-3},
         "size": {"b": 1.0, "kb": 1024.0, "mb": 1024.0**2}}
NAT_UNIT = {"latency": "ms", "energy": "uJ", "size": "B"}


@dataclass(frozen=True)
class Budget:
    """`latency=0.5` is half of the 8/8 network; `latency=2.5ms`, `energy=300uJ`, `size=40KB` are
    absolute (units: ms/s/us, uJ/mJ/nJ, B/KB/MB)."""

    kind: str
    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*([a-zA-Z]*)\s*", text or "")
        if not m:
            raise ConfigError(f"budget {text!r}: write KIND=VALUE, e.g. latency=0.5 (a fraction of 8/8) or "
                              "latency=2.5ms")
        kind, num, unit = m.group(1).lower(), m.group(2), m.group(3).lower()
        if kind not in KINDS:
            raise ConfigError(f"budget kind {kind!r} is not one of {', '.join(KINDS)}")
        try:
            value = float(num)
        except ValueError:
            raise ConfigError(f"budget {text!r}: {num!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"budget {text!r} must be positive")
        if not unit:
            if value > 1.0:
                raise ConfigError(f"budget {text!r}: a bare number is a fraction of the 8/8 network (<= 1); "
                                  f"give a unit for an absolute budget, e.g. {kind}={num}{NAT_UNIT[kind]}")
            return cls(kind, value, True)
        if unit not in UNITS[kind]:
            raise ConfigError(f"budget {text!r}: unit {unit!r} is not one of {', '.join(UNITS[kind])}")
        return cls(kind, value * UNITS[kind][unit], False)

    def target(self, full: float) -> float:
        """The budget in natural units given the 8/8 network's cost."""
        return self.value * full if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}" + ("" if self.relative else NAT_UNIT[self.kind])


@dataclass(frozen=True)
class LayerCost:
    latency_ms: float
    energy_uj: float
    dram_bytes: float


class CostModel:
    """Per-layer costs on one device from its LUT in `store`, measured on demand when missing."""

    def __init__(self, store: Store, inventory: Inventory, device: str, units: Iterable[ConvUnit],
                 log: Callable[[str], None] | None = None, lease_timeout_s: float = 600.0) -> None:
        self.store = store
        self.inventory = inventory
        self.device = device
        self.dev = inventory.device(device)  # an unknown device fails here, naming it
        self.settings: MeasureSettings = settings_for(self.dev)
        self.units = {u.name: u for u in units}
        self.log = log
        self.lease_timeout_s = lease_timeout_s
        self._target: Target | None = None
        self._fp_class: str | None = None
        self._cache: dict[str, LayerCost] = {}
        self.measured = 0  # entries this process had to simulate
        self.sim_s = 0.0  # wall seconds spent simulating

    @property
    def batch(self) -> int:
        return self.settings.batch

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

    def qlayer(self, name: str, wbits: int, abits: int) -> QuantLayer:
        return self.units[name].qlayer(wbits, abits)

    def ensure(self, layers: Iterable[QuantLayer]) -> None:
        """Measure (and store) every layer the LUT lacks, through the LUT build path."""
        want = {q.key: q for q in layers if q.key not in self._cache}
        if not want:
            return
        lut = self.store.lut(self.fp_class)
        missing = [q for k, q in want.items() if k not in lut]
        if missing:
            t0 = time.perf_counter()
            if self.log:
                self.log(f"measuring {len(missing)} missing LUT entries on {self.device}")
            target = self.target()
            with hold(target, self.lease_timeout_s, lease=self.store.lease(target.name)):
                res = build_on_target(self.store, target, _Needed(missing), self.settings)
            self.measured += res.measured
            self.sim_s += time.perf_counter() - t0
            lut = self.store.lut(self.fp_class)
            still = [q.key for q in missing if q.key not in lut]
            if still:
                detail = res.errors[-1] if res.errors else "no record"
                raise HilError(f"{self.device}: could not measure {still[0]} ({detail})")
        for k in want:
            self._cache[k] = _layer_cost(lut[k])

    def layer(self, name: str, wbits: int, abits: int) -> LayerCost:
        q = self.qlayer(name, wbits, abits)
        if q.key not in self._cache:
            self.ensure([q])
        return self._cache[q.key]

    def prefetch(self, bits: Iterable[int], fixed: Mapping[str, tuple[int | None, int | None]]) -> None:
        """Every (w, a) pair of every layer (pins respected) in one build: the search then only reads."""
        bits = list(bits)
        need = []
        for name in self.units:
            fw, fa = fixed.get(name, (None, None))
            for w in [fw] if fw is not None else bits:
                for a in [fa] if fa is not None else bits:
                    need.append(self.qlayer(name, w, a))
        self.ensure(need)

    def cost(self, policy: Mapping[str, tuple[int, int]], kind: str) -> float:
        if kind == "size":
            return float(sum(self.units[n].weights * w for n, (w, _) in policy.items()) / 8.0)
        self.ensure(self.qlayer(n, w, a) for n, (w, a) in policy.items())
        costs = [self.layer(n, w, a) for n, (w, a) in policy.items()]
        return float(sum(c.latency_ms if kind == "latency" else c.energy_uj for c in costs))

    def per_layer(self, policy: Mapping[str, tuple[int, int]]) -> dict[str, LayerCost]:
        self.ensure(self.qlayer(n, w, a) for n, (w, a) in policy.items())
        return {n: self.layer(n, w, a) for n, (w, a) in policy.items()}

    def simulate_network(self, policy: Mapping[str, tuple[int, int]]) -> Measurement:
        """The whole network at `policy` as one continuous run on the device."""
        net = Network(tuple(self.qlayer(n, w, a) for n, (w, a) in policy.items()), name="haq-policy")
        target = self.target()
        t0 = time.perf_counter()
        with hold(target, self.lease_timeout_s, lease=self.store.lease(target.name)):
            records = list(target.measure([net], self.settings))
        self.sim_s += time.perf_counter() - t0
        rec = records[0]
        if not rec.ok:
            raise HilError(f"{self.device}: whole-network simulation failed: {rec.error_kind}: {rec.error}")
        return rec


def simulated_cost(rec: Measurement, kind: str) -> float | None:
    """A whole-network simulation's cost in a budget's units; None for size (not simulated) or a
    device that reports no energy."""
    if kind == "latency":
        return rec.latency_ms
    if kind == "energy":
        return rec.metrics.get("energy_uj")
    return None


def _layer_cost(m: Measurement) -> LayerCost:
    energy = m.metrics.get("energy_uj")
    if energy is None:
        raise HilError(f"the LUT entry {m.key} of {m.device} has no energy (not an RTL record?)")
    return LayerCost(m.latency_ms, float(energy), float(m.metrics.get("dram_bytes", 0.0)))


class _Needed:
    """The few workloads a search lacks, as a search space for the LUT build path."""

    name = "haq-on-demand"

    def __init__(self, layers: list[QuantLayer]) -> None:
        self._layers = sorted(layers, key=lambda q: q.key)

    def options(self) -> dict[str, Any]:
        return {"layers": len(self._layers)}

    def workloads(self) -> list[Workload]:
        return list(self._layers)

    def sample(self, n: int, seed: int) -> list[Network]:
        return []


# --------------------------------------------------------------------------- the episode
@dataclass(frozen=True)
class Step:
    layer: str
    what: str  # 'w' or 'a'


def action_to_bits(action: float, bmin: int, bmax: int) -> int:
    b = round(action * (bmax - bmin + 1) + bmin - 0.5)
    return int(min(max(b, bmin), bmax))


@dataclass
class EnvConfig:
    bmin: int = 1
    bmax: int = 8
    finetune_batches: int = 10
    finetune_lr: float = 0.01
    batch_size: int = 128
    reward_scale: float = 0.1  # HAQ: 0.1 x (accuracy change in percentage points)
    seed: int = 0

    def __post_init__(self) -> None:
        check_bits(self.bmin, "--min-bits")
        check_bits(self.bmax, "--max-bits")
        if self.bmin > self.bmax:
            raise ConfigError(f"min bits {self.bmin} exceed max bits {self.bmax}")
        if self.finetune_batches < 0:
            raise ConfigError(f"fine-tune batches must be >= 0, got {self.finetune_batches}")


@dataclass
class EpisodeResult:
    policy: Policy
    cost: float
    target: float
    accuracy: float
    reward: float
    lowered: int  # bit steps the budget enforcement took off
    timings: dict[str, float] = field(default_factory=dict)


class HaqEnv:
    """States, actions, budget and reward for one model, one device, one budget."""

    def __init__(self, qmodel: QuantizedModel, costs: CostModel, budget: Budget, data: DataSplits,
                 cfg: EnvConfig, device: torch.device | str = "cpu") -> None:
        self.q = qmodel
        self.costs = costs
        self.budget = budget
        self.data = data
        self.cfg = cfg
        self.device = torch.device(device)
        self.fixed = qmodel.fixed()
        self.steps: list[Step] = []
        for name in qmodel.units:
            fw, fa = self.fixed.get(name, (None, None))
            if fw is None:
                self.steps.append(Step(name, "w"))
            if fa is None:
                self.steps.append(Step(name, "a"))
        if not self.steps:
            raise ConfigError("nothing to search: every layer's bits are pinned")
        self._features = self._static_features()
        qmodel.set_policy(qmodel.uniform(8, 8))
        self.base_state = {k: v.detach().clone() for k, v in qmodel.model.state_dict().items()}
        self.full_cost = costs.cost(qmodel.uniform(8, 8), budget.kind)
        self.target = budget.target(self.full_cost)
        self.min_policy = qmodel.uniform(cfg.bmin, cfg.bmin)
        self.min_cost = costs.cost(self.min_policy, budget.kind)
        if self.min_cost > self.target * (1 + 1e-9):
            raise ConfigError(f"budget {budget} ({self.target:.6g} {NAT_UNIT[budget.kind]}) is below what "
                              f"all-minimum bits reach on {costs.device}: {self.min_cost:.6g} "
                              f"{NAT_UNIT[budget.kind]} ({self.min_cost / self.full_cost:.3f} of 8/8)")
        self.reference_accuracy = self._accuracy()

    @property
    def state_dim(self) -> int:
        return self._features.shape[1] + 1

    def _static_features(self) -> np.ndarray:
        names = list(self.q.units)
        rows = []
        for s in self.steps:
            u = self.q.units[s.layer]
            rows.append([names.index(s.layer), u.cin, u.cout, u.stride, u.kernel, u.weights,
                         u.input[0] * u.input[1], float(u.kind == "dwconv"), float(s.what == "w")])
        f = np.asarray(rows, dtype=np.float64)
        lo, hi = f.min(0), f.max(0)
        return ((f - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)

    def state(self, i: int, prev_action: float) -> np.ndarray:
        return np.concatenate([self._features[i], np.float32([prev_action])]).astype(np.float32)

    def policy_from_actions(self, actions: list[float]) -> Policy:
        if len(actions) != len(self.steps):
            raise ValueError(f"{len(actions)} actions for {len(self.steps)} steps")
        pol = {n: list(b) for n, b in self.q.uniform(8, 8).items()}
        for s, a in zip(self.steps, actions, strict=True):
            pol[s.layer][0 if s.what == "w" else 1] = action_to_bits(a, self.cfg.bmin, self.cfg.bmax)
        return {n: (w, a) for n, (w, a) in pol.items()}

    def enforce(self, policy: Mapping[str, tuple[int, int]], target: float | None = None) -> tuple[Policy, int]:
        """Lower bits one step at a time until the budget (or `target`, in its units) holds by the
        LUT, in HAQ's order (its code's `_final_action_wall`): sweep the layers from last to first,
        activations then weights, re-checking the cost after every layer; repeat sweeps until met."""
        pol = {n: list(b) for n, b in policy.items()}
        kind, bmin = self.budget.kind, self.cfg.bmin
        limit = self.target if target is None else target
        lowered = 0

        def cost() -> float:
            return self.costs.cost({n: (w, a) for n, (w, a) in pol.items()}, kind)

        cur = cost()
        while cur > limit:
            moved = False
            for s_layer in reversed(list(self.q.units)):
                fw, fa = self.fixed.get(s_layer, (None, None))
                if fa is None and pol[s_layer][1] > bmin:
                    pol[s_layer][1] -= 1
                    lowered += 1
                    moved = True
                if fw is None and pol[s_layer][0] > bmin:
                    pol[s_layer][0] -= 1
                    lowered += 1
                    moved = True
                cur = cost()
                if cur <= limit:
                    break
            if not moved:
                break
        return {n: (w, a) for n, (w, a) in pol.items()}, lowered

    def enforce_on_simulation(self, policy: Mapping[str, tuple[int, int]],
                              rounds: int = 4) -> tuple[Policy, int, Measurement]:
        """`policy` held to the budget on the whole network simulated in one run, not only on the LUT
        sum; returns the policy, the bit steps taken off and its simulation. A continuous run
        overlaps and stalls at layer boundaries a little differently from the layers run alone
        (0.03 % over a LUT-met budget seen in CI), so a policy at the budget's edge can be over it:
        then the LUT target is tightened by the simulated/LUT ratio and bits are lowered again, until
        the simulation holds or no bit can go lower. A size budget needs no simulation to hold."""
        pol: Policy = dict(policy)
        lowered = 0
        rec = self.costs.simulate_network(pol)
        for _ in range(rounds):
            simulated = simulated_cost(rec, self.budget.kind)
            if simulated is None or simulated <= self.target:
                break
            pol, n = self.enforce(pol, self.target * self.costs.cost(pol, self.budget.kind) / simulated)
            if n == 0:  # every searched layer is at the minimum already
                break
            lowered += n
            rec = self.costs.simulate_network(pol)
        return pol, lowered, rec

    def _accuracy(self) -> float:
        return evaluate(self.q.model, self.data.val, device=self.device, channels_last=False).accuracy

    def restore(self) -> None:
        self.q.model.load_state_dict(self.base_state)

    def finetune(self, batches: int, lr: float | None = None) -> None:
        cfg = FinetuneConfig(batches, lr=lr if lr is not None else self.cfg.finetune_lr,
                             batch_size=self.cfg.batch_size, seed=self.cfg.seed)
        finetune_quantized(self.q, self.data, cfg, device=self.device)

    def run(self, actions: list[float]) -> EpisodeResult:
        """The episode's end: enforce the budget, fine-tune the quantized model briefly, score it."""
        t0 = time.perf_counter()
        sim0 = self.costs.sim_s
        policy, lowered = self.enforce(self.policy_from_actions(actions))
        t_cost = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.restore()
        self.q.set_policy(policy)
        self.finetune(self.cfg.finetune_batches)
        acc = self._accuracy()
        t_ft = time.perf_counter() - t1
        reward = self.cfg.reward_scale * 100.0 * (acc - self.reference_accuracy)
        return EpisodeResult(policy, self.costs.cost(policy, self.budget.kind), self.target, acc, reward, lowered,
                             {"cost_s": t_cost, "simulation_s": self.costs.sim_s - sim0, "finetune_eval_s": t_ft})
