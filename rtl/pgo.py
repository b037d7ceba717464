"""The PGO training workloads of the harness builds (verilator_build.build_harness, $HIL_RTL_PGO=1).

A workload is fixed and deterministic: a timing GEMM and a sample of MobileNet-V1 layers at mixed
bitwidths with the configuration's batch, i.e. the kind of run a LUT build makes, kept small so that
training the instrumented harness costs seconds. The training key hashes this file and the driver's
sources, so a change to either rebuilds the PGO harnesses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# (M, K, N, wbits, abits) timing GEMMs, and (wbits, abits) of the MobileNet-V1 layers trained on
GEMMS = ((128, 1024, 128, 8, 8), (64, 512, 64, 2, 4))
LAYER_BITS = ((8, 8), (4, 4), (2, 6))
LAYER_STRIDE = 4  # every 4th of the 20 MobileNet-V1 layers


def train_key(kind: str) -> str:
    h = hashlib.sha256()
    for p in (Path(__file__), HERE / kind / "driver.py"):
        h.update(p.read_bytes())
    return f"{kind}:{h.hexdigest()[:16]}"


def _layers() -> list[Any]:
    from hil.lut_builder.spaces.quant_layers import mobilenet_v1_layers

    base = mobilenet_v1_layers("8").workloads()[::LAYER_STRIDE]
    import dataclasses

    return [dataclasses.replace(q, wbits=w, abits=a) for q in base for w, a in LAYER_BITS]


def train(cfg: Any, exe: Path) -> None:
    """Drive the harness `exe` of configuration `cfg` through the training workload."""
    from hil.rtl.sim_harness import SimHarness

    regs = SimHarness(exe, cfg.dram(), name=f"{cfg.name}-pgo-training")
    if hasattr(cfg, "dk"):
        from hil.rtl.bismo.driver import BismoAccelerator

        acc: Any = BismoAccelerator(cfg, regs)  # type: ignore[arg-type]
        batch = 16 if cfg.name == "bismo-cloud" else 1
    else:
        from hil.rtl.bitfusion.driver import BitFusionAccelerator

        acc = BitFusionAccelerator(cfg, regs)  # type: ignore[arg-type]
        batch = cfg.batch
    try:
        for m, k, n, wb, ab in GEMMS:
            acc.time_gemm(m, k, n, wb, ab)
        for q in _layers():
            acc.layer(q, batch)
    finally:
        acc.close()
