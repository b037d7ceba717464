"""How far a build's slices sit apart, and how much leveling them buys: two LUT builds back to back.

Each build is the user's `hil lut build` with the defaults. For each build, the reader's fit of log
latency = key + slice (`hil.latency.fit_slices`) gives the sd of the slice effects (how much the host's speed moved
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--out", default="/tmp/lut-slices")
    ap.add_argument("--reread", action="store_true",
                    help="read the two stores of an earlier run in --out again (after a change of the reader)")
    args = ap.parse_args()
    from hil.latency import NOT_LUT_PREFIXES, fit_slices, lut_latencies
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
        fit = fit_slices(recs)  # the reader's own fit
        builds.append({"wall_s": None if args.reread else round(time.perf_counter() - t0, 1),
                       "fit": {"slices": len(fit.slice_log),
                               "slice_effect_sd": statistics.pstdev(fit.slice_log.values()),
                               "attempt_residual_sd": fit.residual_sd},
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
