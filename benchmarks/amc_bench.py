"""AMC at small scale, in the shapes of the paper's Tables 3 and 4 (Fashion-MNIST, 32x32 inputs).

(a) Table 4: AMC under a 50% FLOPs budget vs uniform pruning (one kept fraction for every group, the
    largest that meets the same FLOPs), from the same trained model, with the same fine-tune.
(b) Table 3: the 50%-FLOPs and the 50%-latency policies on a device: FLOPs, LUT-predicted speedup,
    and speedup measured on whole networks in one interleaved request; accuracy after the same fine-tune.
(c) search cost per episode (the search logs' timings).

Rows are written to OUT/rows.jsonl as each finishes; a rerun skips finished rows (and resumes an
interrupted search from its agent checkpoint).

    python benchmarks/amc_bench.py --out amc-bench --model mobilenet-v1 --width 0.5 --seeds 0 1 2 \
        --episodes 300 --warmup 100 --device local-cpu --budget-latency 0.5 --bn-batches 4 0

The FLOPs search runs once per `--bn-batches` value (BN recalibration before each episode is scored;
0 is the paper's reward), all from the seed's one trained model; the uniform row is scored without
fine-tuning under each value too. OUT/summary.json: each fine-tuned policy's test accuracy per seed,
mean and standard deviation across seeds.
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

from hil.errors import HilError
from hil.inventory import load_inventory
from hil.measure import MeasureSettings
from hil.nets.models import make_model
from hil.optimizers.amc.env import LatencyCost
from hil.optimizers.amc.prune import ChannelGraph, candidates
from hil.optimizers.amc.search import SearchConfig, finetune_pruned, load_pruned, measure_speedup, save_pruned, search
from hil.optimizers.bn import calibration_batches, recalibrate_bn
from hil.optimizers.data import fashion_mnist
from hil.optimizers.train import evaluate
from hil.store import SqliteStore


def uniform_keep(spec: Any, target_macs: float, divisor: int, min_ratio: float) -> dict[str, int]:
    """One kept fraction for every group: the largest (in steps of 1%) whose model meets the FLOPs."""
    g = ChannelGraph(spec)
    for pct in range(100, 0, -1):
        keep = {}
        for gr in g.prunable():
            c = candidates(gr.channels, divisor, min_ratio)
            keep[gr.name] = max([x for x in c if x <= pct / 100 * gr.channels] or [c[0]])
        if g.apply(keep).macs <= target_macs:
            return keep
    raise HilError("no uniform fraction meets the FLOPs budget")


def run_name(budget: str, bn: int) -> str:
    """A search's row name: the budget, and the BN batches when any (bn=0 keeps the old names)."""
    return budget if bn == 0 else f"{budget} bn={bn}"


def run_dir(budget: str, bn: int) -> str:
    return run_name(budget, bn).replace("=", "").replace(" ", "-")


def spread(xs: list[float]) -> dict[str, float] | None:
    """Best, deciles, median and worst of episode accuracies: how much the reward tells episodes apart."""
    if not xs:
        return None
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return {"n": len(xs), "max": max(xs), "p90": q[8], "median": statistics.median(xs), "p10": q[0],
            "min": min(xs), "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def uniform_val(pre: Path, keep: dict[str, int], args: argparse.Namespace, seed: int) -> dict[str, float]:
    """The uniform model's held-out accuracy without fine-tuning, for each BN setting of the searches."""
    cfg = json.loads((pre / "config.json").read_text())
    data = fashion_mnist(val_size=cfg["val_size"], seed=cfg["split_seed"], size=32, val_limit=args.val_limit)
    model, _, _ = load_pruned(pre / "pretrained.safetensors")
    graph = ChannelGraph(make_model(args.model, width=args.width, input_size=32))
    res = {}
    for bn in args.bn_batches:
        pruned, _ = graph.prune(model, keep)
        recalibrate_bn(pruned, calibration_batches(data.train, bn, cfg["batch_size"], seed))
        res[f"bn={bn}"] = evaluate(pruned, data.val, device="cpu", channels_last=False).accuracy
    return res


def _stats(per_seed: dict[int, float]) -> dict[str, Any]:
    xs = [per_seed[s] for s in sorted(per_seed)]
    return {"per_seed": {str(s): per_seed[s] for s in sorted(per_seed)}, "mean": statistics.mean(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else None}


SPEED = ("flops_ratio", "predicted_speedup", "measured_speedup")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fine-tuned policy: test accuracy per seed, mean and sample standard deviation across seeds;
    the same for its FLOPs ratio and predicted and measured speedup where the rows have them."""
    by: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        if r["row"].startswith("finetune"):
            d = by.setdefault(r["policy"], {})
            for k in ("test_after_finetune", *SPEED):
                if r.get(k) is not None:
                    d.setdefault(k, {})[r["seed"]] = r[k]
    return {policy: {**_stats(d["test_after_finetune"]), **{k: _stats(d[k]) for k in SPEED if k in d}}
            for policy, d in by.items()}


def summary_table(summary: dict[str, Any]) -> str:
    seeds = sorted({s for v in summary.values() for s in v["per_seed"]}, key=int)
    speed = [k for k in SPEED if any(k in v for v in summary.values())]
    lines = ["| policy | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | "
             + "".join(f"{k} (mean) | " for k in speed).rstrip(),
             "|---" * (len(seeds) + 2 + len(speed)) + "|"]
    for policy, v in summary.items():
        cells = [f"{100 * v['per_seed'][s]:.2f}%" if s in v["per_seed"] else "" for s in seeds]
        sd = f" ± {100 * v['stdev']:.2f}" if v["stdev"] is not None else ""
        extra = "".join(f" {v[k]['mean']:.3f} |" if k in v else " |" for k in speed)
        lines.append(f"| {policy} | " + " | ".join(cells) + f" | {100 * v['mean']:.2f}%{sd} |" + extra)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="mobilenet-v1")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--device", default="local-cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--latency-episodes", type=int, default=None,
                    help="episodes of the latency-budgeted search (default --episodes): on-demand LUT entries "
                         "make its episodes the costly ones")
    ap.add_argument("--latency-warmup", type=int, default=None, help="its warm-up episodes (default --warmup)")
    ap.add_argument("--inventory", default="inventory.yaml", help="inventory file naming --device")
    ap.add_argument("--flops-device", default=None,
                    help="device the FLOPs-budgeted searches report their predicted speedup on (default --device); "
                         "their policies do not depend on it, so one folder's FLOPs searches serve every device")
    ap.add_argument("--pretrain-batches", type=int, default=600)
    ap.add_argument("--finetune-batches", type=int, default=300)
    ap.add_argument("--val-limit", type=int, default=1000)
    ap.add_argument("--budget-flops", type=float, default=0.5)
    ap.add_argument("--budget-latency", type=float, default=0.5)
    ap.add_argument("--min-time", type=float, default=0.1, help="LUT protocol: seconds per workload")
    ap.add_argument("--min-repeats", type=int, default=20)
    ap.add_argument("--clock", default="thread", choices=["wall", "thread"])
    ap.add_argument("--db", default=None, help="store (default OUT/hil.db)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-speedup", action="store_true",
                    help="fine-tune rows without LUT-predicted and measured speedup (Table 4 needs accuracy only)")
    ap.add_argument("--bn-batches", type=int, nargs="+", default=[4, 0],
                    help="one FLOPs-budgeted search per value: BN recalibration batches before scoring (0: the "
                         "paper); the first also runs the latency search (default 4 0)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {json.loads(x)["row"] for x in rows_path.read_text().splitlines()} if rows_path.exists() else set()
    store = SqliteStore(args.db or out / "hil.db")
    inv = load_inventory(args.inventory)
    proto = replace(MeasureSettings(), min_time_s=args.min_time, min_repeats=args.min_repeats, max_attempts=2)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def emit(row: dict[str, Any]) -> None:
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(json.dumps(row))

    for seed in args.seeds:
        base = SearchConfig(model=args.model, width=args.width, device=args.device, episodes=args.episodes,
                            warmup=args.warmup, pretrain_batches=args.pretrain_batches, val_limit=args.val_limit,
                            seed=seed, split_seed=0, clock=args.clock)
        # (budget, BN batches): the FLOPs budget once per --bn-batches value, the latency one with the first
        searches = [(f"flops={args.budget_flops}", n) for n in args.bn_batches]
        if not args.skip_latency:
            searches.append((f"latency={args.budget_latency}", args.bn_batches[0]))
        ckpts: dict[str, Path] = {}
        pre = out / f"seed{seed}" / run_dir(*searches[0])  # the first search trains the model
        for budget, bn in searches:
            name = run_name(budget, bn)
            d = out / f"seed{seed}" / run_dir(budget, bn)
            cfg = replace(base, budget=budget, bn_batches=bn)
            if budget.startswith("flops=") and args.flops_device:
                cfg = replace(cfg, device=args.flops_device)
            if budget.startswith("latency="):
                cfg = replace(cfg, episodes=args.latency_episodes or args.episodes,
                              warmup=args.warmup if args.latency_warmup is None else args.latency_warmup)
            if d != pre:  # the same trained model as the first search
                cfg = replace(cfg, checkpoint=str(pre / "pretrained.safetensors"))
            t0 = time.perf_counter()
            rep = search(cfg, d, store, inv, protocol=proto, log=log)
            ckpts[name] = Path(rep["checkpoint"])
            row = f"search seed={seed} {name}"
            if row not in done:
                eps = [json.loads(x) for x in (d / "search.jsonl").read_text().splitlines()]
                emit({"row": row, "seed": seed, "budget": budget, "bn_batches": bn,
                      "flops_ratio": rep["flops"]["ratio"],
                      "predicted_speedup": rep["predicted"]["speedup"],
                      "val_no_finetune": rep["accuracy"]["val_no_finetune"],
                      "reference_val": rep["accuracy"]["reference_val"],
                      "episode_accuracy": {"warmup": spread([e["accuracy"] for e in eps if e["warmup"]]),
                                           "agent": spread([e["accuracy"] for e in eps if not e["warmup"]])},
                      "episode_s_median": statistics.median(e["timings"]["episode_s"] for e in eps),
                      "bn_s_median": statistics.median(e["timings"].get("bn_s", 0.0) for e in eps),
                      "episodes": len(eps), "lut_entries_measured": rep["search"]["lut_entries_measured_here"],
                      "lut_measure_s": rep["search"]["lut_measure_s"], "wall_s": time.perf_counter() - t0})
        # the uniform baseline at the FLOPs budget, pruned from the same trained model
        spec = make_model(args.model, width=args.width, input_size=32)
        model, _, meta = load_pruned(pre / "pretrained.safetensors")
        keep = uniform_keep(spec, args.budget_flops * spec.macs, base.divisor, base.min_ratio)
        pruned, pspec = ChannelGraph(spec).prune(model, keep)
        uni = out / f"seed{seed}" / "uniform.safetensors"
        save_pruned(uni, pruned, pspec, {"keep": keep, "uniform": True}, {"data": meta.get("data", {})})
        ckpts["uniform"] = uni
        for name, ck in ckpts.items():
            row = f"finetune seed={seed} {name}"
            if row in done:
                continue
            extra: dict[str, Any] = {}
            if name == "uniform":
                # the uniform model scored as the searches score their episodes: with each BN setting
                extra["val_no_finetune"] = uniform_val(pre, keep, args, seed)
            ft = finetune_pruned(ck, ck.with_name(ck.stem + ".ft.safetensors"), batches=args.finetune_batches,
                                 seed=seed, log=log)
            _, ps, _ = load_pruned(ck)
            full = make_model(args.model, width=args.width, input_size=32)
            if not args.skip_speedup:
                lat = LatencyCost(store, inv, args.device, proto, log=log, clock=args.clock)
                try:
                    pred = lat(full) / lat(ps)
                finally:
                    lat.close()
                sp = measure_speedup(ck, args.device, store, inv, protocol=proto, clock=args.clock, log=log)
                extra.update({"predicted_speedup": pred, "measured_speedup": sp["measured"]["speedup"],
                              "measured_full_ms": sp["measured"]["full_ms"],
                              "measured_pruned_ms": sp["measured"]["pruned_ms"]})
            emit({"row": row, "seed": seed, "policy": name, "flops_ratio": ps.macs / full.macs,
                  "test_after_finetune": ft["test_after"], "val_after_finetune": ft["val_after"], **extra})
    summary = summarize([json.loads(x) for x in rows_path.read_text().splitlines()])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(summary_table(summary))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
