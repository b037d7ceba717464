"""Simulation speed of two harness binaries of one configuration, measured alternately in one run.

On a shared machine wall-clock speed follows the neighbours' load, so this reports simulated cycles
per CPU-second of the harness process, and runs the two binaries in turns (A, B, A, B, ...) so that
both see the same conditions. A binary is a cached harness (`$HIL_RTL_CACHE/<name>-<hash>/harness`,
e.g. one an earlier commit built); `new` is the current tree's (built if needed).

    .venv/bin/python benchmarks/rtl_speed_ab.py --config bismo-cloud --old ~/.cache/hil/rtl/bismo-2d3e.../harness

Work per turn: `hil rtl sim`'s GEMM (512x2048x512 at 8/8, a timing run) and a sample of the
MobileNet-V1 2..8 x 2..8 LUT entries (every 49th key: 20 layers at mixed bits, the device's batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from hil.lut_builder.spaces.quant_layers import mobilenet_v1_layers
from hil.rtl.accelerator import Accelerator
from hil.rtl.presets import make_accelerator, preset_config
from hil.rtl.sim_harness import SimHarness

BATCH = {"bismo-edge": 1, "bismo-cloud": 16, "bitfusion-spatial": 16}


def _accelerator(config: str, exe: Path | None) -> Accelerator:
    if exe is None:
        return make_accelerator(config)
    cfg = preset_config(config)
    regs = SimHarness(exe, cfg.dram(), name=f"{config}@{exe.parent.name}")
    if config.startswith("bismo"):
        from hil.rtl.bismo.driver import BismoAccelerator

        return BismoAccelerator(cfg, regs)  # type: ignore[arg-type]
    from hil.rtl.bitfusion.driver import BitFusionAccelerator

    return BitFusionAccelerator(cfg, regs)  # type: ignore[arg-type]


def _turn(acc: Any, work: str, config: str) -> dict[str, float]:
    if hasattr(acc, "_run_key"):
        acc._run_key = lambda writes: None  # time the simulation, not the driver's memory of runs
    cpu0, t0 = acc.regs.cpu_seconds(), time.perf_counter()
    if work == "gemm":
        cycles = acc.time_gemm(512, 2048, 512, 8, 8).cycles
    else:
        cycles = sum(acc.layer(q, BATCH[config]).cycles for q in mobilenet_v1_layers("2..8").workloads()[::49])
    return {"cycles": cycles, "cpu_s": acc.regs.cpu_seconds() - cpu0, "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, choices=sorted(BATCH))
    ap.add_argument("--old", type=Path, required=True, help="the other harness binary")
    ap.add_argument("--turns", type=int, default=3)
    args = ap.parse_args()
    accs = {"old": _accelerator(args.config, args.old), "new": _accelerator(args.config, None)}
    sums: dict[str, dict[str, dict[str, float]]] = {
        v: {w: {"cycles": 0, "cpu_s": 0.0, "wall_s": 0.0} for w in ("gemm", "lut-sample")} for v in accs}
    try:
        for _ in range(args.turns):
            for work in ("gemm", "lut-sample"):
                for v, acc in accs.items():
                    for k, x in _turn(acc, work, args.config).items():
                        sums[v][work][k] += x
    finally:
        for acc in accs.values():
            acc.close()
    out: dict[str, Any] = {"config": args.config, "cpu": platform.processor() or platform.machine(),
                           "loadavg": os.getloadavg(), "turns": args.turns}
    for work in ("gemm", "lut-sample"):
        o, n = sums["old"][work], sums["new"][work]
        if o["cycles"] != n["cycles"]:
            raise SystemExit(f"{work}: the binaries disagree on cycles ({o['cycles']} vs {n['cycles']})")
        out[work] = {
            "cycles_per_turn": int(o["cycles"] // args.turns),
            "old_mcycles_per_cpu_s": round(o["cycles"] / o["cpu_s"] / 1e6, 2),
            "new_mcycles_per_cpu_s": round(n["cycles"] / n["cpu_s"] / 1e6, 2),
            "old_mcycles_per_wall_s": round(o["cycles"] / o["wall_s"] / 1e6, 2),
            "new_mcycles_per_wall_s": round(n["cycles"] / n["wall_s"] / 1e6, 2),
            "speedup_cpu": round(o["cpu_s"] / n["cpu_s"], 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
