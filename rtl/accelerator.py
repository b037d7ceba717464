"""What every simulated (or board-hosted) accelerator offers the rest of hil.

`rtl/bismo/` and `rtl/bitfusion/` each implement `Accelerator`; the rtl-sim device
(`hil.devices.host.rtl_sim`) and `hil rtl sim` use only this seam.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hil.workload import QuantLayer


@dataclass(frozen=True)
class SimResult:
    """Outcome of one GEMM or layer on an accelerator; every count read from the RTL's own counters."""

    cycles: int  # total, from start to done
    compute_cycles: int  # cycles the compute array was busy (the formula's pure-compute term)
    latency_ms: float  # cycles at the configured clock
    energy_uj: float  # counter-based energy model (constants labelled in docs/ACCELERATORS)
    dram_bytes: int  # bytes read + written at the DRAM port
    stage_cycles: dict[str, int] = field(default_factory=dict)  # per-stage busy/stall counters
    utilization: dict[str, float] = field(default_factory=dict)  # per-stage busy / total
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Accelerator(Protocol):
    name: str  # configuration name, e.g. "bismo-edge"
    clock_mhz: float
    supported_bits: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        """Fingerprint class: configuration parameters, RTL hash, Verilator version."""
        ...

    def gemm(
        self, w: np.ndarray, a: np.ndarray, wbits: int, abits: int, wsigned: bool, asigned: bool
    ) -> tuple[np.ndarray, SimResult]:
        """Run W (M x K) times A (K x N) through the RTL: the integer product and the counters."""
        ...

    def time_gemm(
        self, m: int, k: int, n: int, wbits: int, abits: int, wsigned: bool = True, asigned: bool = False,
        out_bits: int | None = None,
    ) -> SimResult:
        """Counters for a GEMM of this shape (cycle counts don't depend on operand values). Outputs are
        stored at `out_bits` (None: what the accelerator's layer LUT entries store)."""
        ...

    def layer(self, layer: QuantLayer, batch: int) -> SimResult:
        """One conv / depthwise conv / FC layer mapped onto the accelerator, with batch."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class NetworkRunner(Protocol):
    """An accelerator that can run a whole (mixed-precision) network as one continuous simulation."""

    def network(self, layers: list[QuantLayer], batch: int) -> SimResult:
        """Every layer in one run; the counters are the RTL's own for the whole network."""
        ...
