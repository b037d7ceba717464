"""Does the ProxylessNAS supernet train? The search's weight warm-up, with and without the largest-first
phase (`SearchConfig.largest_first`), on Fashion-MNIST at the benchmarks' geometry.

    nice -n 19 .venv/bin/python benchmarks/nas_warmup.py --db /tmp/nas-warmup/hil.db \
        --out docs/img/nas-warmup.json [--epochs 10 --steps-per-epoch 100 --shares 0 0.5]

Each share runs `search()` with every epoch a warm-up epoch (no architecture steps), so α stays
uniform and every weight step after the largest-first phase samples one path per block uniformly, as
the public method's warm-up does. Per epoch it records the supernet's training accuracy (of the paths
sampled in that epoch's steps) and, at the end, the accuracy of 20 uniformly sampled networks with the
supernet's weights on --eval-images validation images, each scored as the search scores its argmax net
(BN statistics re-estimated on 4 training batches). Chance is
0.10. The LUT (any device's proxyless-mobile LUT at this geometry, built if missing) only satisfies the
search's interface: with no architecture steps it steers nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from nas_search import build_lut

from hil.optimizers.data import DataSplits, fashion_mnist
from hil.optimizers.proxyless.latency import open_latency
from hil.optimizers.proxyless.run import build_supernet
from hil.optimizers.proxyless.search import SearchConfig, score_argmax_net, search
from hil.optimizers.proxyless.supernet import Supernet
from hil.store import open_store


@torch.no_grad()
def sampled_accuracy(net: Supernet, data: DataSplits, nets: int, images: int, seed: int) -> list[float]:
    """Accuracy of `nets` uniformly sampled architectures with the supernet's weights, each scored as the
    search scores its argmax net (`score_argmax_net`: BN statistics re-estimated for that net)."""
    rng = random.Random(seed)
    saved = [m.alpha.detach().clone() for _, m in net.mixed_ops()]
    accs = []
    for _ in range(nets):
        for _, m in net.mixed_ops():
            m.alpha.zero_()
            m.alpha[rng.randrange(len(m.choices))] = 1.0
        accs.append(score_argmax_net(net, data, torch.device("cpu"), images, seed))
    for (_, m), a in zip(net.mixed_ops(), saved, strict=True):
        m.alpha.copy_(a)
    return accs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--device", default="local-cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--train-limit", type=int, default=20000)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    build_lut(args.db, args.resolution, args.width, args.device)
    with open_store(str(args.db)) as store:
        latency = open_latency(store, args.device, args.resolution, args.width)
    data = fashion_mnist(size=args.resolution, train_limit=args.train_limit, val_limit=args.eval_images)
    runs = []
    for share in args.shares:
        cfg = SearchConfig(epochs=args.epochs, warmup_epochs=args.epochs, largest_first=share,
                           steps_per_epoch=args.steps_per_epoch, target_ms=latency.range().max_ms,
                           eval_limit=0, seed=args.seed)
        net = build_supernet(args.resolution, args.width, args.seed)
        t0 = time.perf_counter()
        r = search(net, latency, data, cfg, log=lambda m, s=share: print(f"share {s}: {m}", file=sys.stderr,
                                                                          flush=True))
        wall = time.perf_counter() - t0
        sampled = sampled_accuracy(net, data, 20, args.eval_images, args.seed)
        runs.append({"largest_first": share, "wall_s": wall,
                     "train_acc": [h.train_acc for h in r.history],
                     "train_loss": [h.train_loss for h in r.history],
                     "sampled_val_acc": sampled,
                     "sampled_val_acc_median": sorted(sampled)[len(sampled) // 2]})
        print(f"share {share}: last-epoch train acc {r.history[-1].train_acc:.3f}, sampled nets' val acc "
              f"median {runs[-1]['sampled_val_acc_median']:.3f} (min {min(sampled):.3f}, max {max(sampled):.3f}), "
              f"{wall:.0f} s", flush=True)
    rec = {"machine": os.uname().nodename, "cpu_threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1) + "\n")
    plot(rec, args.out.with_suffix(".png"))
    return 0


def plot(rec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = rec["args"]["steps_per_epoch"]
    for run in rec["runs"]:
        x = [steps * (i + 1) for i in range(len(run["train_acc"]))]
        label = ("uniform from scratch (the paper's warm-up)" if run["largest_first"] == 0
                 else f"largest path first ({run['largest_first']:.0%} of the warm-up), then uniform")
        ax.plot(x, run["train_acc"], marker="o", label=label)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("weight steps")
    ax.set_ylabel("supernet train accuracy (per epoch)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("ProxylessNAS supernet warm-up, Fashion-MNIST", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
