"""RTL benchmark: harness speed, full HAQ LUT build time, 8-bit MobileNet latencies vs HAQ's, validation.

1. Simulated cycles per second of each configuration's native harness (one large GEMM, timing run).
2. Wall time of `hil lut build` of the full MobileNet-V1 layer space (2..8 x 2..8 bits) on all three
   configurations at once (each device runs its inventory's `workers` harness processes).
3. 8-bit MobileNet-V1/V2 latency from the LUT (per-layer sum) next to HAQ's published figures.
4. `hil validate` per device: per-layer LUT sum vs one continuous whole-network simulation.

    .venv/bin/python benchmarks/rtl_bench.py [--bits 2..8] [--samples 5] [--db out/rtl-bench.db]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("bismo-edge", "bismo-cloud", "bitfusion-spatial")
# HAQ (CVPR 2019) / ACCELERATORS.md: MobileNet 8-bit baselines in ms; cloud at batch 16.
HAQ_8BIT = {("mobilenet-v1", "bismo-edge"): 96.20, ("mobilenet-v2", "bismo-edge"): 115.84,
            ("mobilenet-v1", "bismo-cloud"): 151.09, ("mobilenet-v2", "bismo-cloud"): 189.82}


def hil(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "hil", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"hil {' '.join(args)} failed:\n{p.stderr}")
    return json.loads(p.stdout)


def _cpu() -> str:
    """CPU model and the ISA extensions that matter to the Verilated models (vector width, popcount)."""
    model, flags = platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == platform.machine():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(f for f in have if f.startswith(("avx", "sse4")) or f in ("popcnt", "bmi2", "fma"))
                break
    except OSError:
        pass
    return f"{model} [{' '.join(flags)}]"


def harness_speed(device: str) -> dict:
    out = hil("rtl", "sim", "-d", device, "--gemm", "512,2048,512", "--bits", "8,8")
    cpu = out.get("sim_cycles_per_cpu_s")
    return {"device": device, "cycles": out["cycles"], "wall_s": round(out["sim_wall_s"], 2),
            "cycles_per_s": round(out["sim_cycles_per_s"]), "harness_cpu_s": out.get("harness_cpu_s"),
            "cycles_per_cpu_s": round(cpu) if cpu else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="2..8")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--db", default=str(ROOT / "out" / "rtl-bench.db"))
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": f"{platform.node()} · {os.cpu_count()} cores · {_cpu()}",
                    "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}

    if not args.skip_speed:
        report["speed"] = [harness_speed(d) for d in DEVICES]
        print(json.dumps(report["speed"]), file=sys.stderr)

    devs = [x for d in DEVICES for x in ("-d", d)]
    t0 = time.perf_counter()
    build = hil("lut", "build", *devs, "--space", "mobilenet-v1-layers", "--bits", args.bits, "--db", args.db,
                "--calibration-nets", "0")
    report["lut_build"] = {"wall_s": round(time.perf_counter() - t0, 1), "bits": args.bits,
                           "loadavg_end": os.getloadavg(),
                           "devices": {d["device"]: {k: d[k] for k in ("status", "entries", "total", "measured",
                                                                          "reused", "wall_s")}
                                       for d in build["devices"]}}
    print(json.dumps(report["lut_build"]), file=sys.stderr)

    rows = []
    for model in ("mobilenet-v1", "mobilenet-v2"):
        space = f"{model}-layers"
        hil("lut", "build", *devs, "--space", space, "--bits", "8", "--db", args.db, "--calibration-nets", "0")
        for d in DEVICES:
            shown = hil("lut", "show", "-d", d, "--space", space, "--bits", "8", "--db", args.db)
            by_key = {r["key"]: r for r in shown["rows"]}
            sys.path.insert(0, str(ROOT))
            from hil.lut_builder.spaces import make_space

            sp = make_space(space, bits="8")
            layers = sp.layers([8] * len(sp.units), [8] * len(sp.units))
            ms = sum(by_key[q.key]["latency_ms"] for q in layers)
            cycles = sum(by_key[q.key]["metric_cycles"] for q in layers)
            uj = sum(by_key[q.key]["metric_energy_uj"] for q in layers)
            rows.append({"model": model, "device": d, "batch": shown["fingerprint"]["batch"], "ms": round(ms, 2),
                         "cycles": cycles, "energy_uj": round(uj, 1), "haq_ms": HAQ_8BIT.get((model, d))})
    report["mobilenet_8bit"] = rows
    print(json.dumps(rows), file=sys.stderr)

    vals = []
    for d in DEVICES:
        v = hil("validate", "-d", d, "--space", "mobilenet-v1-layers", "--bits", args.bits, "--db", args.db,
                "--samples", str(args.samples), "--seed", "0")
        ratios = [p["measured_ms"] / p["block_sum_ms"] for p in v["points"]]
        vals.append({"device": d, "n": v["n"], "within_10pct": v["within_10pct"], "mape": round(v["mape"], 3),
                     "kendall_tau": v["kendall_tau"], "network_over_sum_min": round(min(ratios), 4),
                     "network_over_sum_max": round(max(ratios), 4)})
    report["validate"] = vals
    out = ROOT / "docs" / "img" / "rtl-bench.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
