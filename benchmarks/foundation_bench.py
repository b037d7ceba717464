"""Foundation benchmark: LUT build time and validation fidelity on the local CPU, through the real CLI.

For each resolution: a fresh store, `hil lut build` (timed; entries, median CV, calibration), then
`hil validate` on N sampled networks scoring the stored model (the build's calibration), then
`hil lut anchor` and `hil validate` again (the stored model is now the anchor's calibration; the
validation is a new session). Each validation reports the stored model, the plain sum, speedups over
ProxylessNAS-Mobile, repeatability and the host's drift reference. Prints a Markdown table for
docs/BENCHMARKS.md and writes the JSON (after every step: an interrupted run keeps what it measured)
and scatter plots next to it.

    .venv/bin/python benchmarks/foundation_bench.py --resolutions 224 128 --samples 50 [--runs 2]
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


def _val_row(val: dict, wall_s: float) -> dict:
    keep = ("n", "within_10pct", "within_5pct", "kendall_tau", "mape", "rmspe", "rmse_ms", "mean_bias", "raw_sum",
            "unleveled", "reanchored_in_session", "speedup", "repeatability", "calibration", "drift_reference",
            "leveling", "points")
    return {**{k: val.get(k) for k in keep}, "wall_s": round(wall_s, 1), "loadavg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole sequence per resolution")
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread: CPU time of the one torch thread, for a shared, busy machine")
    ap.add_argument("--schedule", choices=["interleaved", "sequential"], default="interleaved")
    ap.add_argument("--min-repeats", type=int, default=None,
                    help="the protocol's minimum timed runs per workload (default: the CLI's)")
    ap.add_argument("--tag", default="", help="suffix of the output files")
    ap.add_argument("--keep-stores", metavar="DIR", default=None,
                    help="write each run's store into DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    rows: list[dict] = []
    name = f"foundation-bench-{'-'.join(map(str, args.resolutions))}{args.tag}.json"
    out_json = Path(args.out, name)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    for run, res in [(k, r) for k in range(args.runs) for r in args.resolutions]:
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(args.keep_stores or tmp, f"bench-{res}-run{run}{args.tag}.db")
            space = ["--space", "proxyless-mobile", "--resolution", str(res), "--db", db, "--clock", args.clock,
                     "--schedule", args.schedule]
            if args.min_repeats:
                space += ["--min-repeats", str(args.min_repeats)]
            row: dict = {"run": run, "resolution": res, "clock": args.clock, "schedule": args.schedule,
                         "min_repeats": args.min_repeats or "cli default", "started": time.strftime("%H:%M:%S")}
            rows.append(row)
            t0 = time.perf_counter()
            build = hil("lut", "build", "-d", args.device, *space)
            row["build"] = {"wall_s": round(time.perf_counter() - t0, 1), "entries": build["entries"],
                            "median_cv": build["median_cv"], "noisy": build["devices"][0]["noisy"],
                            "drift": build["devices"][0]["drift"], "calibration": build["devices"][0]["calibration"],
                            "loadavg": os.getloadavg()}
            out_json.write_text(json.dumps(rows, indent=2))
            for step in ("no_anchor", "anchor"):
                if step == "anchor":
                    t1 = time.perf_counter()
                    a = hil("lut", "anchor", "-d", args.device, *space)
                    row["anchor_step"] = {"wall_s": round(time.perf_counter() - t1, 1), "calibration": a["calibration"],
                                     "drift_vs_previous": a["drift_vs_previous"], "loadavg": os.getloadavg(),
                                     "at": time.strftime("%H:%M:%S")}
                plot = os.path.join(args.out, f"validate-{args.device}-{res}-{step}{args.tag}-run{run}.png")
                t1 = time.perf_counter()
                val = hil("validate", "-d", args.device, *space, "--samples", str(args.samples), "--plot", plot)
                row[step] = {**_val_row(val, time.perf_counter() - t1), "plot": plot, "at": time.strftime("%H:%M:%S")}
                out_json.write_text(json.dumps(rows, indent=2))
        print(json.dumps({k: v for k, v in row.items() if k not in ("no_anchor", "anchor")}), file=sys.stderr)
    machine = f"{platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()}"
    print(f"Machine: {machine}; `{' '.join(sys.argv)}`; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| run | res | build (s) | anchor | stored model ±10% / ±5% / MAPE / τ | as timed (unleveled) ±10% / τ "
          "| plain sum ±10% / MAPE / τ "
          "| speedup median err / p90 / ±5% / ±10% / τ | repeatability τ | re-anchored in session ±10% "
          "| drift ref build / calibration / validation (ms) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for step in ("no_anchor", "anchor"):
            v = r.get(step)
            if not v:
                continue
            s, sp, rep, d = v["raw_sum"], v["speedup"], v["repeatability"], v["drift_reference"]
            re_, u = v["reanchored_in_session"], v.get("unleveled")
            unlev = f"{100 * u['within_10pct']:.0f}% / {u['kendall_tau']:.3f}" if u else "n/a"
            print(f"| {r['run']} | {r['resolution']} | {r['build']['wall_s']} | {'yes' if step == 'anchor' else 'no'} "
                  f"| {100 * v['within_10pct']:.0f}% / {100 * v['within_5pct']:.0f}% / {v['mape']:.2f}% / "
                  f"{v['kendall_tau']:.3f} | {unlev} | {100 * s['within_10pct']:.0f}% / {s['mape']:.2f}% / "
                  f"{s['kendall_tau']:.3f} "
                  f"| {sp['median_abs_err']:.2f}% / {sp['p90_abs_err']:.2f}% / {100 * sp['within_5pct']:.0f}% / "
                  f"{100 * sp['within_10pct']:.0f}% / {sp['kendall_tau']:.3f} | {rep['kendall_tau']:.3f} "
                  f"| {100 * re_['within_10pct']:.0f}% | {d.get('build_ms') or 0:.3f} / "
                  f"{d.get('calibration_ms') or 0:.3f} / "
                  f"{' '.join(f'{x:.3f}' for x in d.get('validation_ms', []))} | {v['loadavg'][0]:.1f} |")


if __name__ == "__main__":
    main()
