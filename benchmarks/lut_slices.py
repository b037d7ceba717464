"""How far a build's slices sit apart, and how much leveling them buys: two LUT builds back to back.

Each build is the user's `hil lut build` with the defaults. For each build, a fit of log latency =
key + slice over every attempt gives the sd of the slice effects (how much the host's speed moved
between the ~10 s slices) and what is left per attempt; then the two builds' LUTs are compared entry
by entry, as read before leveling (the accepted attempt) and as read now (`lut_latencies`).

    .venv/bin/python benchmarks/lut_slices.py --resolution 128 --out /tmp/lut-slices
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def slice_fit(records: list) -> dict[str, float]:
    """log latency = key effect + slice effect, fitted by alternating means over every attempt."""
    by_slice: dict[str, list] = {}
    for m in records:
        by_slice.setdefault(m.metrics["slice"]["id"], []).append(m)
    by_key: dict[str, list] = {}
    for m in records:
        by_key.setdefault(m.key, []).append(m)
    eff = dict.fromkeys(by_slice, 0.0)
    mu = {k: statistics.fmean(math.log(m.latency_ms) for m in v) for k, v in by_key.items()}
    for _ in range(30):
        eff = {s: statistics.fmean(math.log(m.latency_ms) - mu[m.key] for m in v) for s, v in by_slice.items()}
        mean = statistics.fmean(eff.values())
        eff = {s: e - mean for s, e in eff.items()}
        mu = {k: statistics.fmean(math.log(m.latency_ms) - eff[m.metrics["slice"]["id"]] for m in v)
              for k, v in by_key.items()}
    resid = [math.log(m.latency_ms) - mu[m.key] - eff[m.metrics["slice"]["id"]] for m in records]
    return {"slices": len(by_slice), "slice_effect_sd": statistics.pstdev(eff.values()),
            "attempt_residual_sd": statistics.pstdev(resid)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--out", default="/tmp/lut-slices")
    ap.add_argument("--reread", action="store_true",
                    help="read the two stores of an earlier run in --out again (after a change of the reader)")
    args = ap.parse_args()
    from hil.latency import NOT_LUT_PREFIXES, lut_latencies, slice_levels
    from hil.store import open_store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    builds = []
    for name in ("a", "b"):
        db = out / f"{name}.db"
        t0 = time.perf_counter()
        build = [sys.executable, "-m", "hil", "lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile",
                 "--resolution", str(args.resolution), "--db", str(db), "--json"]
        p = subprocess.CompletedProcess(build, 0) if args.reread else \
            subprocess.run(build, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"build {name} failed:\n{p.stderr}")
        store = open_store(str(db), readonly=True)
        cls = next(c for c in store.classes("local-cpu") if c.entries > 20).fp_class
        lut = {k: m for k, m in store.lut(cls).items() if not k.startswith(NOT_LUT_PREFIXES)}
        recs = [m for m in store.attempts(cls) if m.ok and m.key in lut]
        leveled = {k: v for k, v in lut_latencies(store, cls).items() if k in lut}
        levels = slice_levels(recs)
        builds.append({"wall_s": None if args.reread else round(time.perf_counter() - t0, 1),
                       "fit": slice_fit(recs),
                       "level_sd": statistics.pstdev(math.log(x) for x in levels.values()),
                       "accepted": {k: m.latency_ms for k, m in lut.items()}, "leveled": leveled})
        store.close()
    keys = sorted(set(builds[0]["accepted"]) & set(builds[1]["accepted"]))
    agree = {how: statistics.pstdev(math.log(builds[0][how][k] / builds[1][how][k]) for k in keys)
             for how in ("accepted", "leveled")}
    report = {"resolution": args.resolution, "entries": len(keys), "read_at": time.strftime("%Y-%m-%d %H:%M"),
              "reread": args.reread,
              "builds": [{k: v for k, v in b.items() if k not in ("accepted", "leveled")} for b in builds],
              "between_builds_entry_sd": agree}
    (out / "lut-slices.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
