"""HAQ's paper-table shapes at Fashion-MNIST scale, on the simulated accelerators (issue 14).

    .venv/bin/python benchmarks/haq_bench.py SHAPE --v1 V1.safetensors [--v2 V2.safetensors] [options]

SHAPE:
  a  Table 5: one policy per device (bitfusion-spatial, bismo-edge, bismo-cloud) under the same
     relative latency budget, each policy's latency (LUT sum) on all three devices.
  b  Table 6: flexible bits vs fixed 4, 5, 6 bits on one device: the search's budget is the fixed
     policy's own latency (equal or lower latency), accuracy after the same final fine-tune.
  c  Table 7: the agent searched on V1 acts on V2, vs a search on V2 and fixed 4 bits on V2, each
     network's budget its own fixed 4/4 latency.
  d  energy on bitfusion-spatial: flexible bits vs fixed bits at equal or lower energy (b's shape,
     with the fixed policy's energy as the search's budget).
  e  search cost: wall seconds per episode split into simulation, fine-tune + eval and agent
     (read from the search logs of the other shapes' runs, or from a run of its own).

Base models come from `hil train` (their own train/val split is reused, so val stays unseen).
Every row uses the same fine-tune budget (--finetune-batches per episode, --final-finetune-batches
at the end). Results: OUT/SHAPE.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hil.inventory import load_inventory
from hil.optimizers.haq.search import SearchConfig, evaluate_policy, fixed, search, transfer
from hil.store import open_store

DEVICES = ("bitfusion-spatial", "bismo-edge", "bismo-cloud")


def _cfg(args: argparse.Namespace, checkpoint: str, device: str, budget: str, seed: int) -> SearchConfig:
    return SearchConfig(model="mobilenet-v1", device=device, budget=budget, checkpoint=checkpoint,
                        episodes=args.episodes, warmup=args.warmup, finetune_batches=args.finetune_batches,
                        final_finetune_batches=args.final_finetune_batches, batch_size=args.batch_size,
                        min_bits=args.min_bits, val_limit=args.val_limit, test_limit=args.test_limit,
                        seed=seed)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _progress(e: dict[str, Any]) -> None:
    t = e["timings"]
    _log(f"  episode {e['episode']}: reward {e['reward']:.3f} acc {e['accuracy']:.4f} cost {e['cost']:.4g}/"
         f"{e['target']:.4g} ({t['episode_s']:.1f} s: sim {t['simulation_s']:.1f}, ft {t['finetune_eval_s']:.1f}, "
         f"agent {t['agent_s']:.2f})")


def _partial(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Rows so far, so an interrupted benchmark still leaves its finished rows."""
    (args.out / f"{args.shape}.partial.json").write_text(json.dumps(rows, indent=1))


def shape_a(args: argparse.Namespace, store: Any, inv: Any) -> dict[str, Any]:
    rows = []
    for seed in args.seeds:
        for dev in DEVICES:
            out = args.out / f"a-{dev}-s{seed}"
            _log(f"search on {dev}, seed {seed}")
            rep = search(_cfg(args, args.v1, dev, f"latency={args.budget}", seed), out, store, inv,
                         progress=_progress, log=_log)
            lat = {d: evaluate_policy(out / "policy.json", d, store, inv, simulate=False)["predicted"]["latency_ms"]
                   for d in DEVICES}
            rows.append({"seed": seed, "searched_on": dev, "latency_ms": lat,
                         "val_acc": rep["accuracy"]["val_after_finetune"]})
            _partial(args, rows)
    return {"rows": rows}


def _versus_fixed(args: argparse.Namespace, store: Any, inv: Any, base: SearchConfig, bits: int, kind: str,
                  prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed `bits`/`bits` on `base`'s device, then a search whose absolute budget is that fixed
    policy's own `kind` cost (equal or lower latency or energy); both get the same final fine-tune."""
    _log(f"fixed {bits} bits on {base.device}, seed {base.seed}")
    f = fixed(base, bits, args.out / f"{prefix}-fixed{bits}-s{base.seed}", store, inv, log=_log)
    cost, unit = ((f["predicted"]["latency_ms"], "ms") if kind == "latency" else
                  (f["predicted"]["energy_uj"], "uJ"))
    _log(f"search at <= {cost:.6g} {unit} (fixed {bits}'s {kind}), seed {base.seed}")
    s = search(replace(base, budget=f"{kind}={cost:.9g}{unit}"), args.out / f"{prefix}-haq{bits}-s{base.seed}",
               store, inv, progress=_progress, log=_log)
    return f, s


def shape_b(args: argparse.Namespace, store: Any, inv: Any) -> dict[str, Any]:
    rows = []
    for seed in args.seeds:
        for bits in args.fixed_bits:
            base = _cfg(args, args.v1, args.device, "latency=1.0", seed)
            f, s = _versus_fixed(args, store, inv, base, bits, "latency", "b")
            rows.append({"seed": seed, "bits": bits, "fixed_latency_ms": f["predicted"]["latency_ms"],
                         "fixed_test_acc": f["accuracy"]["test_after_finetune"],
                         "haq_latency_ms": s["predicted"]["latency_ms"],
                         "haq_simulated_ms": s["simulated"]["latency_ms"],
                         "haq_test_acc": s["accuracy"]["test_after_finetune"]})
            _partial(args, rows)
    return {"device": args.device, "rows": rows}


def shape_c(args: argparse.Namespace, store: Any, inv: Any) -> dict[str, Any]:
    """Each network's budget is its own fixed 4/4 latency (as in b), so the transferred policy, the
    direct V2 search and fixed 4 bits compare at equal or lower latency."""
    rows = []
    for seed in args.seeds:
        v1 = _cfg(args, args.v1, args.device, "latency=1.0", seed)
        v2 = replace(v1, checkpoint=args.v2, model="mobilenet-v2")
        lat1 = fixed(v1, 4, args.out / f"c-v1-fixed4-s{seed}", store, inv, log=_log)["predicted"]["latency_ms"]
        f = fixed(v2, 4, args.out / f"c-fixed4-s{seed}", store, inv, log=_log)
        v1 = replace(v1, budget=f"latency={lat1:.9g}ms")
        v2 = replace(v2, budget=f"latency={f['predicted']['latency_ms']:.9g}ms")
        src = args.out / f"c-v1-s{seed}"
        _log(f"V1 search at <= {lat1:.6g} ms, seed {seed}")
        search(v1, src, store, inv, progress=_progress, log=_log)
        t = transfer(src, v2, args.out / f"c-transfer-s{seed}", store, inv, log=_log)
        d = search(v2, args.out / f"c-v2-s{seed}", store, inv, progress=_progress, log=_log)
        rows.append({"seed": seed, **{k: {"latency_ms": r["predicted"]["latency_ms"],
                                          "test_acc": r["accuracy"]["test_after_finetune"]}
                                      for k, r in (("transfer", t), ("direct", d), ("fixed4", f))}})
        _partial(args, rows)
    return {"device": args.device, "rows": rows}


def shape_d(args: argparse.Namespace, store: Any, inv: Any) -> dict[str, Any]:
    """Energy on bitfusion-spatial, as b does latency: each fixed k's own energy is the search's budget."""
    rows = []
    for seed in args.seeds:
        for bits in args.fixed_bits:
            base = _cfg(args, args.v1, "bitfusion-spatial", "energy=1.0", seed)
            f, s = _versus_fixed(args, store, inv, base, bits, "energy", "d")
            rows.append({"seed": seed, "bits": bits, "fixed_energy_uj": f["predicted"]["energy_uj"],
                         "fixed_latency_ms": f["predicted"]["latency_ms"],
                         "fixed_test_acc": f["accuracy"]["test_after_finetune"],
                         "haq_energy_uj": s["predicted"]["energy_uj"],
                         "haq_simulated_energy_uj": s["simulated"]["energy_uj"],
                         "haq_latency_ms": s["predicted"]["latency_ms"],
                         "haq_test_acc": s["accuracy"]["test_after_finetune"]})
            _partial(args, rows)
    return {"device": "bitfusion-spatial", "rows": rows}


def shape_e(args: argparse.Namespace, store: Any, inv: Any) -> dict[str, Any]:
    logs = sorted(args.out.glob("*/search.jsonl"))
    if not logs:
        out = args.out / f"e-{args.device}"
        search(_cfg(args, args.v1, args.device, f"latency={args.budget}", args.seeds[0]), out, store, inv,
               progress=_progress, log=_log)
        logs = [out / "search.jsonl"]
    per: dict[str, dict[str, float]] = {}
    for path in logs:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        keys = ("episode_s", "simulation_s", "finetune_eval_s", "agent_s", "cost_s")
        per[path.parent.name] = {k: statistics.mean(e["timings"][k] for e in lines) for k in keys}
        per[path.parent.name]["episodes"] = len(lines)
    return {"runs": per}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shape", choices=("a", "b", "c", "d", "e"))
    p.add_argument("--v1", required=True, help="MobileNet-V1 float checkpoint from `hil train`")
    p.add_argument("--v2", default=None, help="MobileNet-V2 float checkpoint (shape c)")
    p.add_argument("--device", default="bismo-edge")
    p.add_argument("--budget", type=float, default=0.5, help="fraction of the 8/8 network (shapes a, e)")
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--finetune-batches", type=int, default=10)
    p.add_argument("--final-finetune-batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--min-bits", type=int, default=2)
    p.add_argument("--val-limit", type=int, default=1000)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fixed-bits", default="4,5,6",
                   help="shapes b, d: the fixed bitwidths whose latency (b) or energy (d) budgets a\n"
                   "search (comma-separated)")
    p.add_argument("--out", type=Path, default=Path("haq-bench"))
    p.add_argument("--db", default=None)
    p.add_argument("--inventory", default="inventory.yaml")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.fixed_bits = [int(b) for b in args.fixed_bits.split(",")]
    if args.shape == "c" and not args.v2:
        p.error("shape c needs --v2")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    store = open_store(args.db or str(args.out / "hil.db"))
    inv = load_inventory(args.inventory)
    t0 = time.perf_counter()
    try:
        res = {"a": shape_a, "b": shape_b, "c": shape_c, "d": shape_d, "e": shape_e}[args.shape](args, store, inv)
    finally:
        store.close()
    res.update({"shape": args.shape, "wall_s": time.perf_counter() - t0, "argv": sys.argv,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    (args.out / f"{args.shape}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
