"""Is the additive model's error the blocks' context? Blocks timed alone against blocks timed inside networks.

An exploration for issue 11, not the product's build. In one process on torch-cpu (one thread, the
backend's steady heap), interleaved single calls over many rounds so the host's drift falls on all
arms alike:

- **isolated**: every block of the space timed alone over rotating copies whose weights exceed
  2 x L2 (the torch-cpu backend's cold-cache protocol), one call per timed run after an unrelated task;
- **grouped**: the same, with as many calls back to back per timed run as the product's protocol
  groups (`MeasureSettings.min_run_ms`), the way `hil lut build` times a block;
- **in context**: `--build` networks sampled from the space, each run block by block with a clock
  stamp between blocks, so every block's time is taken where a network runs it, after its real
  predecessor. A key's entry is the median over all its contexts;
- **whole**: `--build` and `--test` networks (disjoint seeds) timed end to end.

Each LUT predicts the test networks after the product's calibration fitted on the build networks
(scale, offset; isolated also with the weight term), and the report gives the error sd (log, bias
removed: what ranks), MAPE and Kendall tau, with the test networks' own repeatability (two halves
of their rounds) as the floor no predictor is judged finer than.

    .venv/bin/python benchmarks/in_context_lut.py --resolution 224 --out /tmp/in-context \
        [--compare-store STORE_WITH_A_LUT_BUILD_OF_THE_SPACE]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def kendall(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += (1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1)
    return 2 * s / (n * (n - 1))


def score(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    e = np.log(pred / meas)
    return {"err_sd_pct": round(100 * float(e.std()), 3),
            "mape_pct": round(100 * float(np.mean(np.abs(pred / meas - 1))), 3),
            "kendall_tau": round(kendall(list(pred), list(meas)), 4)}


def fit(cols: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    # least squares on the relative error, as hil.latency's calibration fits
    x = np.column_stack([*cols, np.ones_like(y)])
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--build", type=int, default=40, help="networks whose blocks are timed in context")
    ap.add_argument("--test", type=int, default=40, help="networks scored")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--out", default="/tmp/in-context")
    ap.add_argument("--compare-store", metavar="DB", action="append", default=[],
                    help="a store with a `hil lut build` of this space on local-cpu: its entries, as the product "
                         "reads them, are compared with this run's isolated ones and scored on the same test "
                         "networks (repeat to score several)")
    args = ap.parse_args()

    from hil.devices.agent.host_info import l2_cache_bytes, pin_allocator, rotation_copies
    from hil.measure import MeasureSettings
    from hil.nets.torch_build import build_module, input_shape
    from lut_builder.spaces.proxyless import ProxylessMobileSpace

    torch.set_num_threads(1)
    pin_allocator()
    space = ProxylessMobileSpace(resolution=args.resolution)
    build = space.sample(args.build, seed=101)
    test = [n for n in space.sample(args.test + args.build, seed=202) if n.key not in {b.key for b in build}]
    test = test[:args.test]
    l2 = l2_cache_bytes()

    def weight_bytes(m: torch.nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))

    blocks = {}
    for w in space.workloads():
        m = build_module(w).eval()
        copies = rotation_copies(weight_bytes(m), l2)
        blocks[w.key] = (itertools.cycle([m] + [copy.deepcopy(m) for _ in range(copies - 1)]),
                         torch.randn(input_shape(w, 1)), weight_bytes(m))
    nets = {}
    for n in build + test:
        nets[n.key] = (build_module(n).eval(), torch.randn(input_shape(n, 1)), [w.key for w in n.layers])

    iso: dict[str, list[float]] = {k: [] for k in blocks}
    # grouped: as the product's protocol times a block, `number` calls back to back per timed run so
    # that a run lasts at least MeasureSettings.min_run_ms (the later calls find the input and the
    # activation buffers in cache)
    grouped: dict[str, list[float]] = {k: [] for k in blocks}
    min_run_ms = MeasureSettings().min_run_ms
    number = {}
    with torch.inference_mode():
        for k, (turn, x, _) in blocks.items():
            next(turn)(x)
            t0 = time.perf_counter()
            next(turn)(x)
            number[k] = max(1, math.ceil(min_run_ms / (1e3 * (time.perf_counter() - t0))))
    ctx: dict[str, list[float]] = {k: [] for k in blocks}
    whole: dict[str, list[float]] = {k: [] for k in nets}
    own: dict[str, list[float]] = {k: [] for k in nets}  # a build network's blocks, summed in that run
    build_keys = {n.key for n in build}
    tasks = [("iso", k) for k in blocks] + [("grp", k) for k in blocks] + [("whole", k) for k in nets]
    tasks += [("ctx", k) for k in build_keys]
    rng = random.Random(0)
    t_start = time.perf_counter()
    with torch.inference_mode():
        for r in range(args.rounds):
            rng.shuffle(tasks)
            for kind, key in tasks:
                if kind == "iso":
                    turn, x, _ = blocks[key]
                    next(turn)(x)
                    for _ in range(2):
                        m = next(turn)
                        t0 = time.perf_counter()
                        m(x)
                        iso[key].append(time.perf_counter() - t0)
                elif kind == "grp":
                    turn, x, _ = blocks[key]
                    next(turn)(x)
                    for _ in range(2):
                        t0 = time.perf_counter()
                        for _ in range(number[key]):
                            next(turn)(x)
                        grouped[key].append((time.perf_counter() - t0) / number[key])
                elif kind == "whole":
                    m, x, _ = nets[key]
                    m(x)
                    for _ in range(2):
                        t0 = time.perf_counter()
                        m(x)
                        whole[key].append(time.perf_counter() - t0)
                else:
                    m, x, keys = nets[key]
                    m(x)
                    for _ in range(2):
                        h = x
                        t = [time.perf_counter()]
                        for layer in m:
                            h = layer(h)
                            t.append(time.perf_counter())
                        for k, a, b in zip(keys, t[:-1], t[1:], strict=True):
                            ctx[k].append(b - a)
                        own[key].append(t[-1] - t[0])
            print(f"round {r + 1}/{args.rounds}  {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)

    lut_iso = {k: 1e3 * statistics.median(v) for k, v in iso.items()}
    lut_ctx = {k: 1e3 * statistics.median(v) for k, v in ctx.items() if v}
    wbytes = {k: b[2] for k, b in blocks.items()}
    covered = [n for n in test if all(k in lut_ctx for k in nets[n.key][2])]

    def arrays(ns: list) -> dict[str, np.ndarray]:
        return {"y": np.array([1e3 * statistics.median(whole[n.key]) for n in ns]),
                "iso": np.array([sum(lut_iso[k] for k in nets[n.key][2]) for n in ns]),
                "ctx": np.array([sum(lut_ctx.get(k, math.nan) for k in nets[n.key][2]) for n in ns]),
                "w": np.array([float(sum(wbytes[k] for k in nets[n.key][2])) for n in ns])}

    b, t = arrays(build), arrays(covered)
    # what the product's defaults change: 10 calibration networks, and entries from fewer samples
    c10 = fit([b["iso"][:10]], b["y"][:10])
    lut_half = {k: 1e3 * statistics.median(v[: len(v) // 2]) for k, v in iso.items()}
    lut_tenth = {k: 1e3 * statistics.median(v[: max(2, len(v) // 4)]) for k, v in iso.items()}

    def sums(lut: dict[str, float], ns: list) -> np.ndarray:
        return np.array([sum(lut[k] for k in nets[n.key][2]) for n in ns])

    sensitivity = {}
    for name, lut in (("entries_first_half_of_rounds", lut_half), ("entries_first_quarter_of_rounds", lut_tenth)):
        c = fit([sums(lut, build)], b["y"])
        sensitivity[name] = score(c[0] * sums(lut, covered) + c[1], t["y"])
    lut_grp = {k: 1e3 * statistics.median(v) for k, v in grouped.items()}
    c = fit([sums(lut_grp, build)], b["y"])
    sensitivity["grouped_calls_as_the_product_times"] = score(c[0] * sums(lut_grp, covered) + c[1], t["y"])
    sensitivity["grouped_vs_single_entries_sd_pct"] = round(100 * float(np.log(
        np.array([lut_grp[k] for k in blocks]) / np.array([lut_iso[k] for k in blocks])).std()), 2)
    sensitivity["calibration_on_10_networks"] = score(c10[0] * t["iso"] + c10[1], t["y"])
    # entry precision of this run: each key's median over even rounds against odd rounds
    halves_iso = [np.array([statistics.median(iso[k][i::4] + iso[k][i + 1::4]) for k in blocks]) for i in (0, 2)]
    entry_halves_sd = 100 * float(np.log(halves_iso[0] / halves_iso[1]).std())
    from hil.latency import lut_latencies, select_class
    from hil.store import open_store

    product = []
    for db in args.compare_store:
        store = open_store(db, readonly=True)
        cls = select_class(store, "local-cpu", keys=list(blocks))
        stored = lut_latencies(store, cls.fp_class)
        common = [k for k in blocks if k in stored]
        ratio = np.log(np.array([stored[k] for k in common]) / np.array([lut_iso[k] for k in common]))
        c = fit([sums(stored, build)], b["y"])
        product.append({"store": db, "keys": len(common),
                        "min_run_ms": cls.fingerprint_class.get("protocol", {}).get("min_run_ms"),
                        "entries_vs_this_run_sd_pct": round(100 * float(ratio.std()), 2),
                        "scored_here_after_fit_on_build": score(c[0] * sums(stored, covered) + c[1], t["y"])})
    own_sum = np.array([1e3 * statistics.median(own[n.key]) for n in build])
    c_iso = fit([b["iso"]], b["y"])
    c_isow = fit([b["iso"], b["w"]], b["y"])
    c_ctx = fit([b["ctx"]], b["y"])
    halves = [[1e3 * statistics.median(whole[n.key][i::2]) for n in covered] for i in (0, 1)]
    result = {
        "machine": f"{platform.node()} · {platform.machine()} · torch {torch.__version__} · 1 thread",
        "resolution": args.resolution, "rounds": args.rounds, "build_networks": len(build),
        "test_networks": len(covered), "keys": len(blocks), "keys_in_context": len(lut_ctx),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "isolated_raw_sum": score(t["iso"], t["y"]),
        "isolated_scale_offset": score(c_iso[0] * t["iso"] + c_iso[1], t["y"]),
        "isolated_scale_weights_offset": score(c_isow[0] * t["iso"] + c_isow[1] * t["w"] + c_isow[2], t["y"]),
        "in_context_raw_sum": score(t["ctx"], t["y"]),
        "in_context_scale_offset": score(c_ctx[0] * t["ctx"] + c_ctx[1], t["y"]),
        "product_sensitivity": sensitivity,
        "entry_halves_sd_pct": round(entry_halves_sd, 2),
        "product_build_entries": product,
        "build_networks_own_in_context_sum": score(own_sum, b["y"]),
        "build_networks_median_in_context_lut": score(b["ctx"], b["y"]),
        "repeatability_halves": score(np.array(halves[0]), np.array(halves[1])),
        "spread_sd_pct": round(100 * float(np.log(t["y"]).std()), 2),
        "fits": {"isolated": c_iso.tolist(), "isolated_weights": c_isow.tolist(), "in_context": c_ctx.tolist()},
    }
    result["raw"] = {"whole_ms": {k: 1e3 * statistics.median(v) for k, v in whole.items()},
                     "isolated_ms": lut_iso, "grouped_ms": lut_grp, "number": number, "in_context_ms": lut_ctx,
                     "build": [n.key for n in build], "test": [n.key for n in covered],
                     "layers": {k: v[2] for k, v in nets.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"in-context-{args.resolution}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != 'raw'}, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
