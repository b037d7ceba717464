"""How much signal AMC's no-fine-tune reward carries, with and without BN recalibration.

The same K random policies (kept fractions drawn uniformly in [min-ratio, 1] per group, through the
rounding and the action wall, as AMC's warm-up episodes draw them) under a FLOPs budget are scored
on the held-out split with each number of BN recalibration batches. Per setting: the spread of their
accuracies (best, deciles, median, standard deviation), the seconds a recalibration takes, and the
Spearman rank correlation with the largest setting (does a few batches rank policies as many do?).
The uniform policy (one kept fraction, the largest meeting the budget) is scored alongside.

    python -m benchmarks.amc_bn_signal --out /tmp/sig --seed 0 --policies 40 --bn-batches 0 1 4 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.amc_bench import spread, uniform_keep
from hil.inventory import load_inventory
from hil.optimizers.amc.search import SearchConfig, prepare
from hil.optimizers.bn import calibration_batches, recalibrate_bn
from hil.store import SqliteStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder: the trained model (trained here if absent), results")
    ap.add_argument("--checkpoint", default=None, help="a trained model (e.g. an amc_bench seed's pretrained one)")
    ap.add_argument("--model", default="mobilenet-v1")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-batches", type=int, default=150)
    ap.add_argument("--val-limit", type=int, default=500)
    ap.add_argument("--budget-flops", type=float, default=0.5)
    ap.add_argument("--policies", type=int, default=40)
    ap.add_argument("--bn-batches", type=int, nargs="+", default=[0, 1, 4, 16])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SearchConfig(model=args.model, width=args.width, budget=f"flops={args.budget_flops}",
                       pretrain_batches=args.pretrain_batches, val_limit=args.val_limit, seed=args.seed,
                       checkpoint=args.checkpoint)
    store = SqliteStore(out / "hil.db")
    setup = prepare(cfg, out, store, load_inventory("inventory.yaml"))
    env = setup.env
    try:
        rng = np.random.default_rng(args.seed)
        policies: list[dict[str, int]] = []
        for _ in range(args.policies):
            keep: dict[str, int] = {}
            for i in range(env.steps):
                env.act(keep, i, float(rng.uniform(cfg.min_ratio, 1.0)))
            policies.append(keep)
        uni = uniform_keep(setup.spec, args.budget_flops * setup.spec.macs, cfg.divisor, cfg.min_ratio)
        results: dict[str, Any] = {"reference_val": env.reference_accuracy, "policies": len(policies),
                                   "flops_ratio": [env.graph.apply(k).macs / env.full_flops for k in policies],
                                   "settings": {}}
        accs: dict[int, list[float]] = {}
        for n in args.bn_batches:
            inputs = calibration_batches(setup.data.train, n, cfg.batch_size, cfg.seed)
            xs, secs = [], []
            for keep in [*policies, uni]:
                pruned, _ = env.graph.prune(env.model, keep)
                t0 = time.perf_counter()
                recalibrate_bn(pruned, inputs)
                secs.append(time.perf_counter() - t0)
                xs.append(env.accuracy(pruned))
            accs[n] = xs[:-1]
            results["settings"][str(n)] = {"accuracy": spread(accs[n]), "uniform": xs[-1],
                                           "recalibrate_s_median": statistics.median(secs)}
            print(f"bn={n}: {json.dumps(results['settings'][str(n)])}", file=sys.stderr, flush=True)
        top = max(args.bn_batches)
        for n in args.bn_batches:
            rho = spearmanr(accs[n], accs[top]).statistic if n != top else 1.0
            results["settings"][str(n)]["spearman_vs_" + str(top)] = float(rho)
        results["accuracies"] = {str(n): accs[n] for n in args.bn_batches}
        (out / "signal.json").write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in results.items() if k not in ("accuracies", "flops_ratio")}, indent=1))
    finally:
        setup.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
