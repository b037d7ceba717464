"""The PGO training workload of the accelerator harness builds (verilator_build, $HIL_RTL_PGO=1).

The workload is fixed and deterministic: two timing GEMMs and a sample of MobileNet-V1 layers (every
4th of its 20, at 224) at three bit pairs, alternately at batch 1 and 16, i.e. the kind of run a LUT
build makes, kept small so that training an instrumented harness costs seconds. It only steers the
compiler's layout: cycle counts do not depend on it (docs/BENCHMARKS.md, issue 19: every LUT entry
identical with and without PGO).

Each driver attaches `drive` to its harness spec with a `train_key` that hashes this file and the
driver's source, so a change to either rebuilds the PGO harnesses. This module imports only the
standard library and hil.workload: the drivers go to boards in the agent bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Protocol

from hil.workload import QuantLayer

# (M, K, N, wbits, abits) timing GEMMs
GEMMS = ((128, 1024, 128, 8, 8), (64, 512, 64, 2, 4))
LAYER_BITS = ((8, 8), (4, 4), (2, 6))
BATCHES = (1, 16)
LAYERS = (
    QuantLayer("conv", (112, 112, 32), (112, 112, 64), 1, 1, 1, 8, 8),
    QuantLayer("conv", (28, 28, 128), (28, 28, 256), 1, 1, 1, 8, 8),
    QuantLayer("conv", (7, 7, 1024), (7, 7, 1024), 1, 1, 1, 8, 8),
    QuantLayer("dwconv", (14, 14, 512), (14, 14, 512), 3, 1, 512, 8, 8),
    QuantLayer("dwconv", (56, 56, 128), (28, 28, 128), 3, 2, 128, 8, 8),
)


class Trainee(Protocol):
    """What the workload calls: an accelerator driver on the instrumented harness."""

    def time_gemm(self, m: int, k: int, n: int, wbits: int, abits: int) -> Any: ...

    def layer(self, layer: QuantLayer, batch: int) -> Any: ...


def train_key(kind: str, driver_source: Path) -> str:
    h = hashlib.sha256()
    for p in (Path(__file__), driver_source):
        h.update(p.read_bytes())
    return f"{kind}:{h.hexdigest()[:16]}"


def drive(acc: Trainee) -> None:
    """Run the training workload on `acc`."""
    for m, k, n, wb, ab in GEMMS:
        acc.time_gemm(m, k, n, wb, ab)
    runs = [dataclasses.replace(q, wbits=w, abits=a) for q in LAYERS for w, a in LAYER_BITS]
    for i, q in enumerate(runs):
        acc.layer(q, BATCHES[i % len(BATCHES)])
