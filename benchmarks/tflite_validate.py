"""TFLite (LiteRT) validation: per-block LUT sum vs whole-model latency, float32 and int8.

For each precision this builds the proxyless-mobile LUT on a local `tflite` device and validates it
on N sampled architectures (each measured twice) with the real CLI, exactly as a user would:

    hil lut build -d tflite-<precision> --space proxyless-mobile --resolution R
    hil validate  -d tflite-<precision> --space proxyless-mobile --resolution R --samples N --plot ...

With `--cpu-clock` it repeats the same through the library with the backend's thread-CPU clock
(`MeasureSettings(clock="thread")`): on a shared host the wall clock of a long invocation is inflated
by the other processes' time slices far more than a short block's, which biases "sum of blocks vs
network" by contention alone; the CPU clock shows what the model error is without it.
`--hot-blocks` adds the plain sum of blocks timed the old way, with their data left in L2 between
invocations (`cold_cache=False`), against the same measured networks.

Prints a Markdown table for docs/BENCHMARKS.md; writes JSON and scatter plots to --out.

    .venv/bin/python benchmarks/tflite_validate.py --resolution 128 --samples 50 --cpu-clock
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def hil(*args: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-m", "hil", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"hil {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout)


def inventory(path: Path, precisions: list[str], threads: int) -> None:
    lines = ["version: 1", "devices:"]
    for prec in precisions:
        lines += [f"  tflite-{prec}:", "    backend: tflite", f"    precision: {prec}", f"    threads: {threads}"]
    path.write_text("\n".join(lines) + "\n")


def summarize(val: dict[str, Any], build: dict[str, Any] | None, wall_s: float) -> dict[str, Any]:
    keep = ("n", "within_10pct", "within_5pct", "kendall_tau", "mape", "rmspe", "rmse_ms", "mean_bias",
            "raw_sum", "repeatability", "calibration", "speedup", "drift_reference", "reanchored_in_session",
            "unleveled", "leveling", "points")
    row = {k: val.get(k) for k in keep}
    row["wall_s"] = round(wall_s, 1)
    if build:
        dev = build["devices"][0]
        row.update(entries=dev["entries"], median_cv=dev["median_cv"], noisy=dev["noisy"], drift=dev["drift"])
    return row


def via_cli(prec: str, args: argparse.Namespace, inv: Path, db: Path, out: Path) -> list[dict[str, Any]]:
    dev = f"tflite-{prec}"
    space = ["--space", "proxyless-mobile", "--resolution", str(args.resolution), "--db", str(db), "-i", str(inv)]
    t0 = time.perf_counter()
    proto = ["--max-attempts", str(args.wall_max_attempts)]
    build = hil("lut", "build", "-d", dev, *space, *proto, "--calibration-nets", str(args.calibration_nets))
    plot = out / f"validate-{dev}-{args.resolution}.png"
    val = hil("validate", "-d", dev, *space, *proto, "--samples", str(args.samples), "--plot", str(plot))
    row = {"device": dev, "clock": "wall", "precision": prec, "plot": str(plot), "anchor": False,
           "loadavg": os.getloadavg(), **summarize(val, build, time.perf_counter() - t0)}
    if not args.anchor:
        return [row]
    # re-anchor the stored calibration, then validate again in a new session
    t1 = time.perf_counter()
    hil("lut", "anchor", "-d", dev, *space, *proto)
    plot = out / f"validate-{dev}-{args.resolution}-anchor.png"
    val = hil("validate", "-d", dev, *space, *proto, "--samples", str(args.samples), "--plot", str(plot))
    return [row, {"device": dev, "clock": "wall", "precision": prec, "plot": str(plot), "anchor": True,
                  "loadavg": os.getloadavg(), **summarize(val, None, time.perf_counter() - t1)}]


def via_library(prec: str, args: argparse.Namespace, db: Path, out: Path) -> list[dict[str, Any]]:
    from hil.devices.agent.local import LocalTarget
    from hil.devices.agent.tflite_backend import TfliteBackend
    from hil.devices.host.tflite_convert import ConverterCache
    from hil.lut_builder.build import build_on_target
    from hil.lut_builder.spaces import make_space
    from hil.measure import MeasureSettings
    from hil.store import open_store
    from hil.validate import metrics, plot, validate

    dev = f"tflite-{prec}-cpuclock"
    space = make_space("proxyless-mobile", resolution=args.resolution)
    settings = replace(MeasureSettings(), precision=prec, threads=args.threads, clock="thread")
    target = LocalTarget(dev, TfliteBackend(ConverterCache()))
    store = open_store(str(db))
    t0 = time.perf_counter()
    rows = []
    try:
        res = build_on_target(store, target, space, settings, calibration_nets=args.calibration_nets)
        report = validate(store, target, space, settings, args.samples, 0)
        png = out / f"validate-{dev}-{args.resolution}.png"
        plot(report, str(png))
        rows.append({"device": dev, "clock": "thread", "precision": prec, "plot": str(png),
                     **summarize(report.to_json(), {"devices": [res.to_json()]}, time.perf_counter() - t0)})
        if args.hot_blocks:
            # The same networks against a LUT of blocks timed with their data left in L2 (cold_cache off):
            # networks are timed identically either way (a whole network is never rotated: copies = 1).
            t1 = time.perf_counter()
            hot = LocalTarget(f"{dev}-hot", TfliteBackend(ConverterCache(), cold_cache=False))
            hres = build_on_target(store, hot, space, settings)
            from hil.latency import LatencyModel
            from hil.target import fingerprint_class

            lut = LatencyModel.from_store(store, hot.name, fingerprint_class(hot.describe(settings)))
            nets = {n.key: n for n in space.sample(args.samples + args.calibration_nets + 1, 0)}
            meas = [p["measured_ms"] for p in report.points]
            pred = [lut.block_sum(nets[p["network"]].layers) for p in report.points]
            m = metrics(pred, meas).to_json()
            rows.append({"device": f"{dev}-hot", "clock": "thread", "precision": prec, "n": m["n"],
                         "within_10pct": m["within_10pct"], "within_5pct": m["within_5pct"],
                         "kendall_tau": m["kendall_tau"], "mape": m["mape"], "rmspe": m["rmspe"],
                         "rmse_ms": m["rmse_ms"], "mean_bias": m["mean_bias"], "raw_sum": m,
                         "repeatability": rows[0]["repeatability"],
                         "calibration": {"scale": 1.0, "offset_ms": 0.0, "fitted_on": 0},
                         "median_cv": hres.median_cv, "wall_s": round(time.perf_counter() - t1, 1)})
    finally:
        store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration-nets", type=int, default=10)
    ap.add_argument("--cpu-clock", action="store_true", help="also validate with the thread-CPU clock")
    ap.add_argument("--no-wall", action="store_true", help="skip the wall-clock (CLI) runs")
    ap.add_argument("--hot-blocks", action="store_true",
                    help="with --cpu-clock: also score a LUT of blocks timed with warm caches (cold_cache off)")
    ap.add_argument("--wall-max-attempts", type=int, default=3,
                    help="attempts per noisy entry in the wall-clock runs (the protocol's default: 3)")
    ap.add_argument("--anchor", action="store_true",
                    help="wall-clock runs: also `hil lut anchor` and validate again (the stored model re-anchored)")
    ap.add_argument("--db", default=str(Path.home() / ".cache" / "hil" / "bench" / "tflite.db"),
                    help="measurement store (kept: a rerun resumes)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    inv = db.with_suffix(".inventory.yaml")
    inventory(inv, args.precisions, args.threads)

    rows = []
    load0 = os.getloadavg()
    for prec in args.precisions:
        if args.cpu_clock:
            for row in via_library(prec, args, db, out):
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        if not args.no_wall:
            for row in via_cli(prec, args, inv, db, out):
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    load1 = os.getloadavg()

    import ai_edge_litert
    import tensorflow as tf

    machine = (f"{platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()} · "
               f"LiteRT {ai_edge_litert.__version__} · converter tensorflow {tf.__version__}")
    print(f"Machine: {machine}; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
          f"`{' '.join(sys.argv)}`; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| device | clock | anchor | res | n | stored ±10% | ±5% | tau | MAPE | bias "
          "| plain sum ±10% / tau / MAPE / bias | speedup median err / ±5% / ±10% / τ "
          "| repeat MAPE / ±10% | calibration | median CV | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, rep, c, sp = r["raw_sum"], r["repeatability"], r["calibration"], r.get("speedup") or {}
        spt = (f"{sp['median_abs_err']:.2f}% / {100 * sp['within_5pct']:.0f}% / {100 * sp['within_10pct']:.0f}% / "
               f"{sp['kendall_tau']:.3f}" if sp else "—")
        print(f"| {r['device']} | {r['clock']} | {'yes' if r.get('anchor') else 'no'} | {args.resolution} | {r['n']} "
              f"| {100 * r['within_10pct']:.0f}% "
              f"| {100 * r['within_5pct']:.0f}% | {r['kendall_tau']:.3f} | {r['mape']:.2f}% | {r['mean_bias']:+.2f}% "
              f"| {100 * s['within_10pct']:.0f}% / {s['kendall_tau']:.3f} / {s['mape']:.2f}% / {s['mean_bias']:+.2f}% "
              f"| {spt} | {rep['mape']:.2f}% / {100 * rep['within_10pct']:.0f}% "
              f"| ×{c['scale']:.3f} {c['offset_ms']:+.3f} ms | {100 * (r.get('median_cv') or 0):.2f}% "
              f"| {r['wall_s']} |")
    (out / f"tflite-validate-{args.resolution}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
