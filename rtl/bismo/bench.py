"""Simulated cycles per second of the BISMO harness, and a whole network layer by layer.

    python -m hil.rtl.bismo.bench --config bismo-edge                       # GEMM speed only
    python -m hil.rtl.bismo.bench --config bismo-edge --model mobilenet-v1 --bits 8 --batch 1

Speed is reported per wall-clock second and per CPU-second of the harness process (read from
/proc), since other work on a shared machine slows the wall clock but not the CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hil.rtl.presets import make_accelerator


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bismo-edge")
    ap.add_argument("--model", help="a quantization space model, e.g. mobilenet-v1 / mobilenet-v2")
    ap.add_argument("--bits", type=int, default=8, help="weight and activation bits")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    acc = make_accelerator(args.config)
    pid = getattr(getattr(acc.regs, "_proc", None), "pid", None)
    out: dict[str, object] = {"config": args.config, "loadavg": os.getloadavg()}
    try:
        if args.model:
            from hil.lut_builder.spaces.quant_layers import QuantLayerSpace

            space = QuantLayerSpace(args.model)
            n = len(space.units)
            layers = space.layers([args.bits] * n, [args.bits] * n)
            work = [lambda q=q: acc.layer(q, args.batch) for q in layers]
            out.update(model=args.model, bits=args.bits, batch=args.batch, layers=len(layers))
        else:
            work = [lambda: acc.time_gemm(256, 1024, 256, 8, 8)] * 3 + [lambda: acc.time_gemm(64, 288, 3136, 8, 8)] * 3
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
        out.update(
            cycles=cycles,
            compute_cycles=compute,
            latency_ms=round(latency, 3),
            energy_mj=round(energy / 1e3, 3),
            wall_s=round(wall, 2),
            harness_cpu_s=round(cpu, 2),
            python_cpu_s=round(time.process_time() - py0, 2),
            mcycles_per_wall_s=round(cycles / wall / 1e6, 2),
            mcycles_per_harness_cpu_s=round(cycles / cpu / 1e6, 2) if cpu > 0 else None,
        )
    finally:
        acc.close()
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28s} {v}")


if __name__ == "__main__":
    main()
