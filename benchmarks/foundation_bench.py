"""Foundation benchmark: LUT build time and validation fidelity on the local CPU, through the real CLI.

For each resolution: a fresh store, `hil lut build` (timed; entries, median CV, calibration), then
`hil validate` on N sampled networks (each measured twice: accuracy next to repeatability). Prints a
Markdown table for docs/BENCHMARKS.md and writes the JSON and scatter plots next to it. With several
`--schedules` each resolution is run once per schedule, back to back, so they compare in one run.

    .venv/bin/python benchmarks/foundation_bench.py --resolutions 224 128 --samples 50 \
        [--schedules interleaved sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hil(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "hil", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"hil {' '.join(args)} failed:\n{p.stderr}")
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread: CPU time of the one torch thread, for a shared, busy machine")
    ap.add_argument("--schedules", nargs="+", choices=["interleaved", "sequential"], default=["interleaved"])
    ap.add_argument("--min-repeats", type=int, default=None,
                    help="the protocol's minimum timed runs per workload (default: the protocol's 30)")
    args = ap.parse_args()
    rows = []
    for res, schedule in [(r, s) for r in args.resolutions for s in args.schedules]:
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "bench.db")
            space = ["--space", "proxyless-mobile", "--resolution", str(res), "--db", db, "--clock", args.clock,
                     "--schedule", schedule]
            if args.min_repeats:
                space += ["--min-repeats", str(args.min_repeats)]
            t0 = time.perf_counter()
            build = hil("lut", "build", "-d", args.device, *space)
            build_wall = time.perf_counter() - t0
            reps = f"-r{args.min_repeats}" if args.min_repeats else ""
            plot = os.path.join(args.out, f"validate-{args.device}-{res}-{args.clock}-{schedule}{reps}.png")
            t1 = time.perf_counter()
            val = hil("validate", "-d", args.device, *space, "--samples", str(args.samples), "--plot", plot)
            val_wall = time.perf_counter() - t1
        row = {
            "resolution": res, "clock": args.clock, "schedule": schedule, "loadavg": os.getloadavg(),
            "min_repeats": args.min_repeats or 30,
            "entries": build["entries"], "validate_wall_s": round(val_wall, 1),
            "build_calibrated": val["build_calibrated"], "session_calibration": val["session_calibration"],
            "build_wall_s": round(build_wall, 1),
            "blocks_wall_s": round(build["devices"][0]["wall_s"], 1), "median_cv": build["median_cv"],
            "noisy": build["devices"][0]["noisy"], "drift": build["devices"][0]["drift"],
            "calibration": val["calibration"], "n": val["n"], "within_10pct": val["within_10pct"],
            "within_5pct": val["within_5pct"], "kendall_tau": val["kendall_tau"], "mape": val["mape"],
            "rmspe": val["rmspe"], "rmse_ms": val["rmse_ms"], "bias": val["mean_bias"],
            "raw_sum": val["raw_sum"], "repeatability": val["repeatability"], "plot": plot, "points": val["points"],
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    machine = f"{platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()}"
    print(f"Machine: {machine}; `{' '.join(sys.argv)}`; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| res | clock | schedule | entries | build (s) | median CV | ±10% | ±5% | tau | MAPE | bias "
          "| build's calibration ±10% / bias | plain sum ±10% / tau / bias | repeat MAPE / ±10% | calibration |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, rep, c, b = r["raw_sum"], r["repeatability"], r["calibration"], r["build_calibrated"]
        print(f"| {r['resolution']} | {r['clock']} | {r['schedule']} | {r['entries']} | {r['build_wall_s']} "
              f"| {100 * r['median_cv']:.2f}% "
              f"| {100 * r['within_10pct']:.0f}% | {100 * r['within_5pct']:.0f}% | {r['kendall_tau']:.3f} "
              f"| {r['mape']:.2f}% | {r['bias']:+.2f}% | {100 * b['within_10pct']:.0f}% / {b['mean_bias']:+.2f}% "
              f"| {100 * s['within_10pct']:.0f}% / {s['kendall_tau']:.3f} / "
              f"{s['mean_bias']:+.2f}% | {rep['mape']:.2f}% / {100 * rep['within_10pct']:.0f}% "
              f"| ×{c['scale']:.3f} {c['offset_ms']:+.2f} ms |")
    reps = f"-r{args.min_repeats}" if args.min_repeats else ""
    name = f"foundation-bench-{'-'.join(map(str, args.resolutions))}-{args.clock}-{'-'.join(args.schedules)}{reps}.json"
    Path(args.out, name).write_text(
        json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
