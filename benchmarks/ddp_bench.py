"""Training throughput of 2 gloo processes vs 1 process on this CPU (docs/BENCHMARKS.md, "Distributed training").

Every configuration trains the same model with the same global batch through `hil.optimizers.train`,
started by the same launcher as `hil train --nproc` (a one-process job too, so every run pays the
same start-up): 2 epochs of --steps steps; the first epoch is warm-up, the second is timed. Samples/s
is global samples of the timed epoch over rank 0's training seconds (no validation). Rounds alternate
the configurations, because the machine is shared and its load drifts; the 1-minute load average is
recorded before and after each run, and each rank's CPU seconds.

    .venv/bin/python benchmarks/ddp_bench.py --model mobilenet-v2 --width 0.5 --steps 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from hil.nets.models import make_model
from hil.optimizers.data import fashion_mnist
from hil.optimizers.dist import Dist, launch
from hil.optimizers.train import TrainConfig, train

CONFIGS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread (gloo)", 2, 1))


def job(model: str, width: float, steps: int, batch: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    d = Dist.from_env("cpu")
    spec = make_model(model, width=width)
    data = fashion_mnist(train_limit=steps * batch, val_limit=1, test_limit=1)
    torch.manual_seed(0)
    net = spec.build()
    cfg = TrainConfig(epochs=2, batch_size=batch, steps_per_epoch=steps, seed=0)
    cpu0 = time.process_time()
    r = train(net, data, cfg, dist=d, validate=False)
    out = {"rank": d.rank, "train_s": r.history[1].train_s, "samples": r.history[1].samples,
           "cpu_s": time.process_time() - cpu0, "loss": r.history[1].train_loss}
    d.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet-v2")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20, help="steps per epoch (2 epochs: warm-up, timed)")
    ap.add_argument("--batch-size", type=int, default=128, help="global batch")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    for rnd in range(args.rounds):
        for name, nproc, threads in CONFIGS:
            load0 = os.getloadavg()[0]
            ranks = launch(nproc, job, args.model, args.width, args.steps, args.batch_size, threads)
            r0 = ranks[0]
            rec = {"config": name, "round": rnd, "samples_per_s": r0["samples"] / r0["train_s"],
                   "train_s": r0["train_s"], "cpu_s": [ranks[r]["cpu_s"] for r in sorted(ranks)],
                   "loss": r0["loss"], "load_before": load0, "load_after": os.getloadavg()[0]}
            rows[name].append(rec)
            print(json.dumps(rec), flush=True)
    base = statistics.median(r["samples_per_s"] for r in rows[CONFIGS[0][0]])
    print(f"\n{args.model} width {args.width:g}, global batch {args.batch_size}, {args.steps} timed steps, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}", file=sys.stdout)
    print("| configuration | samples/s (median) | runs | vs 1x1 | load avg during |")
    print("|---|---|---|---|---|")
    for name, _, _ in CONFIGS:
        sps = [r["samples_per_s"] for r in rows[name]]
        loads = [x for r in rows[name] for x in (r["load_before"], r["load_after"])]
        print(f"| {name} | {statistics.median(sps):.1f} | {', '.join(f'{s:.1f}' for s in sps)} | "
              f"{statistics.median(sps) / base:.2f}x | {min(loads):.1f}–{max(loads):.1f} |")


if __name__ == "__main__":
    main()
