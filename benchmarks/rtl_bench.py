"""RTL benchmark: harness speed, full HAQ LUT build time, 8-bit MobileNet latencies vs HAQ's, validation.

1. Simulated cycles per second of each configuration's native harness (`hil rtl sim --gemm
   512,2048,512 --bits 8,8`, a timing run; `--gemm-runs` of them, the median), per wall second and per
   CPU-second of the harness.
2. Wall time and CPU-seconds of `hil lut build` of the full MobileNet-V1 layer space (2..8 x 2..8
   bits) on all three configurations at once, into a fresh store (a stored entry is never simulated
   again, so timing into a used store would time nothing). `--cold` builds the harnesses inside the
   timed run too, in a fresh cache, as after a change to the RTL.
   Part `builds` (not in the default parts) times the three harness builds alone: built at once into
   an empty cache, as a cold build does them, once with nothing cached (a fresh machine) and once with
   Verilator's runtime library already built (an RTL or preset change).
3. 8-bit MobileNet-V1/V2 latency from the LUT (per-layer sum) next to HAQ's published figures.
4. `hil validate` per device: per-layer LUT sum vs one continuous whole-network simulation.

The report (docs/img/rtl-bench.json, and a summary on stdout) names the CPU model and its ISA flags
and sets 1 and 2 against issue 19's targets for a 2-core CPU: >= 4 M cycles/s on bismo-edge, >= 2 M
on the others, the full table on all three in <= 300 s.

    .venv/bin/python benchmarks/rtl_bench.py [--bits 2..8] [--samples 5] [--db out/rtl-bench.db]
    .venv/bin/python benchmarks/rtl_bench.py --parts speed,table [--cold]     # issue 19's table only
    .venv/bin/python benchmarks/rtl_bench.py --parts builds                   # cold harness builds alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("bismo-edge", "bismo-cloud", "bitfusion-spatial")
# HAQ (CVPR 2019) / ACCELERATORS.md: MobileNet 8-bit baselines in ms; cloud at batch 16.
HAQ_8BIT = {("mobilenet-v1", "bismo-edge"): 96.20, ("mobilenet-v2", "bismo-edge"): 115.84,
            ("mobilenet-v1", "bismo-cloud"): 151.09, ("mobilenet-v2", "bismo-cloud"): 189.82}


# `--without-avx512`: every hil command through benchmarks/rtl_no_avx512.py (harnesses built with -mno-avx512f)
HIL = [sys.executable, "-m", "hil"]


def hil(*args: str) -> dict:
    p = subprocess.run([*HIL, *args, "--json"], capture_output=True, text=True, cwd=ROOT)
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


# issue 19's targets on a 2-core CPU: simulated cycles per second, and the full table's wall time
SPEED_TARGET = {"bismo-edge": 4e6, "bismo-cloud": 2e6, "bitfusion-spatial": 2e6}
TABLE_TARGET_S = 300.0


def speed_median(device: str, runs: int) -> dict:
    """`runs` GEMMs (0.1-2 s each, so one alone scatters with the machine): the median of each rate."""
    got = [harness_speed(device) for _ in range(runs)]
    med = {k: statistics.median(g[k] for g in got) for k in ("cycles_per_s", "cycles_per_cpu_s") if got[0][k]}
    return {"device": device, "cycles": got[0]["cycles"], "runs": got, **{f"median_{k}": v for k, v in med.items()},
            "target": SPEED_TARGET[device], "met": med["cycles_per_s"] >= SPEED_TARGET[device]}


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cold_builds() -> dict:
    """Wall and compiler CPU-seconds of the three harnesses built at once (one thread each, as the
    devices of a cold `hil lut build` build them) into an empty cache: with nothing cached, and with
    Verilator's runtime library built before the clock starts."""
    import shutil
    import threading

    sys.path.insert(0, str(ROOT))
    from hil.rtl.presets import make_accelerator
    from hil.rtl.verilator_build import build_harness, runtime_library

    specs = [make_accelerator(d).spec for d in DEVICES]  # what `hil lut build` builds
    out = {}
    for runtime_cached in (False, True):
        cache = tempfile.mkdtemp(prefix="rtl-bench-builds-")
        os.environ["HIL_RTL_CACHE"] = cache
        try:
            if runtime_cached:
                runtime_library(specs[0])
            t0, c0 = time.perf_counter(), children_cpu_s()
            threads = [threading.Thread(target=build_harness, args=(s,)) for s in specs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            built = sorted(p.parent.name for p in Path(cache).glob("*/harness"))
            out["runtime_cached" if runtime_cached else "fresh"] = {
                "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(children_cpu_s() - c0, 1),
                "built": built}
        finally:
            os.environ.pop("HIL_RTL_CACHE")
            shutil.rmtree(cache, ignore_errors=True)
    return out


def summary(report: dict) -> list[str]:
    avx512 = "avx512f" in report["machine"]
    lines = [f"machine: {report['machine']}",
             "AVX-512: no" if not avx512 else "AVX-512: on the CPU, not used by the harnesses (--without-avx512)"
             if report.get("without_avx512") else "AVX-512: yes (the targets are for a CPU without it)"]
    for r in report.get("speed", []):
        lines.append(f"{r['device']}: {r['median_cycles_per_s'] / 1e6:.2f} M cycles/s (wall), "
                     f"{(r.get('median_cycles_per_cpu_s') or 0) / 1e6:.2f} M per harness CPU-s; target "
                     f"{r['target'] / 1e6:.0f} M: {'met' if r['met'] else 'NOT met'}")
    t = report.get("lut_build")
    if t:
        done = ", ".join(f"{d} {v['wall_s']:.0f} s" for d, v in t["devices"].items())
        how = "cold: harnesses built in the run" if t["cold"] else "warm harnesses"
        met = ("met" if t["wall_s"] <= TABLE_TARGET_S else "NOT met") if t["bits"] == "2..8" else "set for 2..8 bits"
        lines.append(f"full table ({t['bits']}, {how}): {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} CPU-s "
                     f"({done}); target {TABLE_TARGET_S:.0f} s: {met}")
    for how, b in report.get("builds", {}).items():
        lines.append(f"three harness builds at once ({how.replace('_', ' ')}): {b['wall_s']:.1f} s wall, "
                     f"{b['cpu_s']:.1f} CPU-s")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="2..8")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--db", default=str(ROOT / "out" / "rtl-bench.db"),
                    help="store for parts 3 and 4 (part 2 times its build into a fresh one next to it)")
    ap.add_argument("--parts", default="speed,table,mobilenet,validate")
    ap.add_argument("--gemm-runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="time the harness builds too (fresh harness cache)")
    ap.add_argument("--without-avx512", action="store_true",
                    help="on an AVX-512 CPU, build the harnesses without it (benchmarks/rtl_no_avx512.py): the "
                    "ISA of a CPU without it, not that CPU's speed")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "rtl-bench.json"))
    args = ap.parse_args()
    if args.without_avx512:
        HIL[1:] = [str(ROOT / "benchmarks" / "rtl_no_avx512.py")]
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import rtl_no_avx512  # noqa: F401  (patches the harness flags of this process too)
    parts = set(args.parts.split(","))
    known = {"speed", "table", "mobilenet", "validate", "builds"}
    if parts - known:
        raise SystemExit(f"--parts: unknown {sorted(parts - known)}")
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": f"{platform.node()} · {os.cpu_count()} cores · {_cpu()}",
                    "without_avx512": args.without_avx512,
                    "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": os.getloadavg()}

    if "speed" in parts:
        report["speed"] = [speed_median(d, args.gemm_runs) for d in DEVICES]
        print(json.dumps(report["speed"]), file=sys.stderr)

    if "builds" in parts:
        report["builds"] = cold_builds()
        print(json.dumps(report["builds"]), file=sys.stderr)

    devs = [x for d in DEVICES for x in ("-d", d)]
    if "table" in parts:
        fresh = Path(tempfile.mkdtemp(prefix="rtl-bench-table-", dir=Path(args.db).parent))
        if args.cold:
            os.environ["HIL_RTL_CACHE"] = str(fresh / "rtl-cache")
        else:  # the harnesses built (or found in the cache) before the clock starts
            sys.path.insert(0, str(ROOT))
            from hil.rtl.presets import make_accelerator

            for d in DEVICES:
                acc = make_accelerator(d)
                acc.start()
                acc.close()
        t0, c0 = time.perf_counter(), children_cpu_s()
        build = hil("lut", "build", *devs, "--space", "mobilenet-v1-layers", "--bits", args.bits,
                    "--db", str(fresh / "table.db"), "--calibration-nets", "0")
        report["lut_build"] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(children_cpu_s() - c0, 1),
                               "bits": args.bits, "cold": args.cold, "store": str(fresh / "table.db"),
                               "loadavg_end": os.getloadavg(), "target_s": TABLE_TARGET_S,
                               "devices": {d["device"]: {k: d[k] for k in ("status", "entries", "total", "measured",
                                                                              "reused", "wall_s")}
                                           for d in build["devices"]}}
        if args.cold:
            os.environ.pop("HIL_RTL_CACHE")
        print(json.dumps(report["lut_build"]), file=sys.stderr)

    if "mobilenet" in parts:
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
                rows.append({"model": model, "device": d, "batch": shown["fingerprint"]["batch"],
                             "ms": round(ms, 2), "cycles": cycles, "energy_uj": round(uj, 1),
                             "haq_ms": HAQ_8BIT.get((model, d))})
        report["mobilenet_8bit"] = rows
        print(json.dumps(rows), file=sys.stderr)

    if "validate" in parts:
        # the full table: the one just timed, else the one in --db (built there if it is not)
        table_db = report["lut_build"]["store"] if "lut_build" in report else args.db
        if "lut_build" not in report:
            hil("lut", "build", *devs, "--space", "mobilenet-v1-layers", "--bits", args.bits, "--db", table_db,
                "--calibration-nets", "0")
        vals = []
        for d in DEVICES:
            v = hil("validate", "-d", d, "--space", "mobilenet-v1-layers", "--bits", args.bits, "--db", table_db,
                    "--samples", str(args.samples), "--seed", "0")
            ratios = [p["measured_ms"] / p["block_sum_ms"] for p in v["points"]]
            vals.append({"device": d, "n": v["n"], "within_10pct": v["within_10pct"], "mape": round(v["mape"], 3),
                         "kendall_tau": v["kendall_tau"], "network_over_sum_min": round(min(ratios), 4),
                         "network_over_sum_max": round(max(ratios), 4)})
        report["validate"] = vals
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2), file=sys.stderr)
    print("\n".join(summary(report)))


if __name__ == "__main__":
    main()
