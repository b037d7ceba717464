"""Simulated cycles per second of an accelerator's harness, over GEMMs or any list of layers.

    python -m hil.rtl.bismo.bench --config bismo-edge                       # GEMM speed

`run_layers(acc, layers, batch)` times a list of layers the caller builds (benchmarks/rtl_fidelity.py
passes MobileNet's from the quantization spaces; rtl itself does not depend on them).
Speed is reported per wall-clock second and per CPU-second of the harness process (read from
/proc), since other work on a shared machine slows the wall clock but not the CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.rtl.accelerator import Accelerator, SimResult
from hil.rtl.presets import make_accelerator
from hil.workload import QuantLayer


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(acc: Accelerator, work: list[Callable[[], SimResult]]) -> dict[str, Any]:
    """Run `work` on `acc`; cycles, latency, energy and simulated cycles per second (wall and harness CPU)."""
    pid = getattr(getattr(acc, "regs", None), "_proc", None)
    pid = getattr(pid, "pid", None)
    cpu0, wall0, py0 = (_cpu_seconds(pid) if pid else float("nan")), time.perf_counter(), time.process_time()
    cycles = compute = 0
    latency = energy = 0.0
    for job in work:
        r = job()
        cycles += r.cycles
        compute += r.compute_cycles
        latency += r.latency_ms
        energy += r.energy_uj
    wall = time.perf_counter() - wall0
    cpu = (_cpu_seconds(pid) if pid else float("nan")) - cpu0
    return {
        "cycles": cycles,
        "compute_cycles": compute,
        "latency_ms": round(latency, 3),
        "energy_mj": round(energy / 1e3, 3),
        "wall_s": round(wall, 2),
        "harness_cpu_s": round(cpu, 2),
        "python_cpu_s": round(time.process_time() - py0, 2),
        "mcycles_per_wall_s": round(cycles / wall / 1e6, 2),
        "mcycles_per_harness_cpu_s": round(cycles / cpu / 1e6, 2) if cpu > 0 else None,
        "loadavg": os.getloadavg(),
    }


def run_layers(acc: Accelerator, layers: list[QuantLayer], batch: int) -> dict[str, Any]:
    """Every layer's `layer()` run in turn (the per-layer LUT sum of a network), timed."""
    return {"layers": len(layers), "batch": batch,
            **measure(acc, [lambda q=q: acc.layer(q, batch) for q in layers])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bismo-edge")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    acc = make_accelerator(args.config)
    try:
        work = [lambda: acc.time_gemm(256, 1024, 256, 8, 8)] * 3 + [lambda: acc.time_gemm(64, 288, 3136, 8, 8)] * 3
        out: dict[str, Any] = {"config": args.config, **measure(acc, work)}
    finally:
        acc.close()
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28s} {v}")


if __name__ == "__main__":
    main()
