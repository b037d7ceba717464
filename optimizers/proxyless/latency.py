"""Expected latency of the supernet from a device's LUT, and the ProxylessNAS latency losses.

E[LAT] = fixed + Σ_blocks Σ_ops p_op · LUT(op), taken from `hil.latency.LatencyModel.expected`
(differentiable in the probabilities, calibrated like every other prediction of that LUT).

The latency geometry is the LUT's: `hil lut build --space proxyless-mobile --resolution R --width W`
times the family with a 3-channel input and 1000 classes. The network trained on Fashion-MNIST has
the same 21 searchable blocks (same keys) and differs only in the stem's input channels and the
classifier's size, which every architecture shares; its latency is predicted as the LUT geometry's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hil.errors import ConfigError, MissingEntryError
from hil.latency import LatencyModel, select_class
from hil.lut_builder.spaces.proxyless import ProxylessMobileSpace
from hil.store import Store
from hil.workload import Workload

if TYPE_CHECKING:  # the loss works on tensors; checking a LUT and a target needs no torch
    import torch

LOSSES = ("mul#log", "add#linear", "add#hinge")


def measure_command(device: str, space: ProxylessMobileSpace) -> str:
    return (f"hil lut build --device {device} --space {space.name} --resolution {space.resolution} "
            f"--width {space.width:g}")


def lut_space(resolution: int, width: float) -> ProxylessMobileSpace:
    """The space as `hil lut build --space proxyless-mobile --resolution R --width W` measures it."""
    return ProxylessMobileSpace(resolution=resolution, width=width)


def open_latency(store: Store, device: str, resolution: int, width: float) -> SearchLatency:
    """The device's LUT for the space at this resolution and width; a clear error if it lacks a key."""
    space = lut_space(resolution, width)
    keys = [w.key for w in space.workloads()]
    model = LatencyModel.from_store(store, device, select_class(store, device, keys).fp_class)
    return SearchLatency(model, space)


@dataclass(frozen=True)
class LatencyRange:
    min_ms: float
    max_ms: float


class SearchLatency:
    """The supernet's latency on one device: expectation, range, and one architecture's prediction."""

    def __init__(self, model: LatencyModel, space: ProxylessMobileSpace) -> None:
        self.model = model
        self.space = space
        self.candidates: list[list[Workload | None]] = [
            [slot.workload(op) for op in slot.choices] for slot in space.slots]
        self.check()

    def keys(self) -> list[str]:
        return [w.key for w in self.space.workloads()]

    def check(self) -> None:
        """Every workload of the space must be in the LUT; the error names the first missing key."""
        keys = self.keys()
        missing = [k for k in keys if k not in self.model.table]
        if not missing:
            return
        cmd = measure_command(self.model.device or "DEVICE", self.space)
        blocks = {w.key for ops in self.candidates for w in ops if w is not None}
        if blocks.isdisjoint(self.model.table):  # the head may be shared by other widths: judge by the blocks
            stems = sorted(k for k in self.model.table if k.startswith("Conv-input:"))
            other = f" (it holds e.g. {stems[0]!r})" if stems else ""
            raise ConfigError(
                f"the LUT of device {self.model.device!r} covers none of {self.space.name} at resolution "
                f"{self.space.resolution}, width {self.space.width:g}: it was built for another resolution or "
                f"width{other}; measure this one with `{cmd}`")
        raise MissingEntryError(missing[0], self.model.device,
                                f"{len(missing)} of {len(keys)} keys missing; measure them with `{cmd}`")

    def expected(self, probs: Sequence[Any]) -> Any:
        """E[LAT] in ms; a tensor differentiable in `probs` when they are tensors."""
        return self.model.expected(self.space.fixed, self.candidates, probs)

    def range(self) -> LatencyRange:
        """The fastest and the slowest architecture of the space on this device (ms, calibrated)."""
        fixed = sum(self.model.cost(w) for w in self.space.fixed) + self.model.calibration.offset_ms
        costs = [[0.0 if w is None else self.model.cost(w) for w in ops] for ops in self.candidates]
        return LatencyRange(float(fixed + sum(min(x) for x in costs)), float(fixed + sum(max(x) for x in costs)))

    def arch(self, arch: Sequence[str]) -> tuple[float, float]:
        """(predicted ms, calibrated; plain LUT sum ms) of one architecture."""
        layers = self.space.layers(arch)
        return self.model.network(layers), self.model.block_sum(layers)

    def check_target(self, target_ms: float) -> None:
        if not (target_ms > 0 and math.isfinite(target_ms)):
            raise ConfigError(f"--target-ms must be a positive number, got {target_ms!r}")
        r = self.range()
        if target_ms < r.min_ms:
            raise ConfigError(
                f"target {target_ms:g} ms is unreachable on {self.model.device!r}: {self.space.name} at resolution "
                f"{self.space.resolution}, width {self.space.width:g} spans {r.min_ms:.4g}..{r.max_ms:.4g} ms")


@dataclass(frozen=True)
class LatencyLoss:
    """mul#log: CE · α · (log E[LAT] / log T)^β; add#linear: CE + λ (E[LAT] − T) / T;
    add#hinge: CE + λ max(0, E[LAT] − T) / T.

    The first two keep pushing below T, so a large weight drives every search to the space's fastest
    net whatever T is. add#hinge makes T binding (MnasNet's hard constraint, as a loss): above T it
    pulls like add#linear, below T only CE steers, so a search for "the best net at T" ends near T.

    The log ratio depends on the unit. The public code took milliseconds, fine for its 20–200 ms phones,
    but below 1 ms both logs turn negative and the loss would reward slower nets; we take microseconds,
    which keeps both logs positive for every latency this project measures.
    """

    kind: str = "mul#log"
    target_ms: float = 1.0
    alpha: float = 0.2
    beta: float = 0.3
    lam: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ConfigError(f"unknown latency loss {self.kind!r} (known: {', '.join(LOSSES)})")
        if not self.target_ms > 0:
            raise ConfigError(f"the target latency must be positive, got {self.target_ms!r}")
        if self.kind == "mul#log" and self.target_ms * 1000.0 <= 1.0:
            raise ConfigError(f"mul#log needs a target above 1 µs, got {self.target_ms!r} ms")

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        if self.kind == "mul#log":
            ratio = (expected_ms * 1000.0).log() / math.log(self.target_ms * 1000.0)
            return self.alpha * ce * ratio ** self.beta
        over = (expected_ms - self.target_ms) / self.target_ms
        return ce + self.lam * (over.clamp(min=0.0) if self.kind == "add#hinge" else over)
