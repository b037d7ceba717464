"""Epoch time and accuracy of the base models on Fashion-MNIST (docs/BENCHMARKS.md, "Training substrate").

Trains each model on the full 55k training split (or --train-limit) for --epochs epochs with the
default recipe of `hil train`, scores the 5k validation split each epoch and the 10k test split at
the end, and prints one JSON line per model plus a Markdown table. Wall and process CPU seconds and
the load average before and after each run are recorded, because the machine may be shared.

    .venv/bin/python benchmarks/train_bench.py --models mobilenet-v2 --width 0.5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from hil.nets.models import make_model, sample_arch
from hil.optimizers.data import fashion_mnist
from hil.optimizers.train import TrainConfig, evaluate, model_meta, pick_device, train


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"


def run(name: str, args: argparse.Namespace, dev: torch.device, data, out_dir: Path) -> dict:  # type: ignore[no-untyped-def]
    options: dict = {"width": args.width}
    if name == "proxyless":
        options["arch"] = args.arch or ",".join(sample_arch(args.arch_seed, args.width))
    spec = make_model(name, **options)
    torch.manual_seed(args.seed)
    model = spec.build()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    load0 = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train(model, data, cfg, device=dev, checkpoint=out_dir / f"{name}.safetensors", meta=model_meta(spec),
                   resume=False, progress=sys.stderr.isatty(),
                   log=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
    t_eval = time.perf_counter()
    test = evaluate(model, data.test, device=dev)
    eval_s = time.perf_counter() - t_eval
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    times = result.epoch_times
    return {
        "model": name, "options": spec.options, "macs": spec.macs, "params": spec.params,
        "epochs": result.epochs, "epoch_s": times, "epoch_s_mean": sum(times) / len(times) if times else None,
        "test_eval_s": eval_s, "val_acc": [h.val_acc for h in result.history],
        "train_acc": [h.train_acc for h in result.history], "test_acc": test.accuracy,
        "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "device": device_name(dev), "batch_size": cfg.batch_size, "lr": cfg.lr,
        "data": data.describe(), "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mobilenet-v1,mobilenet-v2,proxyless")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default=None, help="proxyless architecture (default: sample_arch(--arch-seed))")
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N val and test images")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    data = fashion_mnist(train_limit=args.train_limit, val_limit=args.test_limit, test_limit=args.test_limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            row = run(name, args, dev, data, Path(tmp))
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    print("\n| model | width | MACs | params | epochs | s/epoch | val acc | test acc | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['options']['width']:g} | {r['macs'] / 1e6:.1f} M | {r['params'] / 1e6:.2f} M "
              f"| {r['epochs']} | {r['epoch_s_mean']:.0f} | {r['val_acc'][-1]:.4f} | {r['test_acc']:.4f} "
              f"| {r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
