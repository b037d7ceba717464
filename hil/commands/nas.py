"""`hil nas search|retrain|plot`: ProxylessNAS against a device's LUT (docs/NAS.md)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.commands.common import add_db_arg, add_json_arg, emit, progress_enabled
from hil.commands.train import add_nproc_arg, run_ranked
from hil.errors import ConfigError
from hil.optimizers.dataset_location import DATA_ENV

if TYPE_CHECKING:
    from hil.optimizers.dist import Dist

# torch is imported inside the commands: every `hil` invocation builds this parser.
SPACES = ("proxyless-mobile",)
LOSSES = ("mul#log", "add#linear", "add#hinge")  # = optimizers/proxyless/latency.py LOSSES (tested)
ARCH_UPDATES = ("gradient", "reinforce")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nas", help="ProxylessNAS: search an architecture for a device's LUT, retrain it")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = s.add_parser("search", help="search the space against a device's LUT (resumable); writes DIR/arch.json")
    a.add_argument("--device", "-d", required=True, help="device whose LUT drives the search")
    a.add_argument("--space", required=True, choices=SPACES)
    a.add_argument("--target-ms", type=float, required=True, help="target latency on that device (ms)")
    a.add_argument("--loss", choices=LOSSES, default="mul#log",
                   help="mul#log: CE·α·(log E[LAT]/log T)^β; add#linear: CE + λ(E[LAT]−T)/T; add#hinge: CE + "
                        "λ·max(0, E[LAT]−T)/T, a target that binds (default mul#log)")
    a.add_argument("--epochs", type=int, default=6, help="epochs in all, warm-up included (default 6)")
    a.add_argument("--warmup-epochs", type=int, default=None,
                   help="weight-only epochs before the architecture steps (default: a third of --epochs)")
    a.add_argument("--largest-first", type=float, default=0.5, metavar="SHARE",
                   help="share of the warm-up that trains only each block's largest op, whose weights then "
                        "start the other ops; 0 = the paper's uniform warm-up from scratch, which does not "
                        "train at small budgets (default 0.5)")
    a.add_argument("--resolution", type=int, default=32, help="input resolution of search and LUT (default 32)")
    a.add_argument("--width", type=float, default=1.0, help="width multiplier of search and LUT (default 1.0)")
    a.add_argument("--out", default=None, metavar="DIR", help="output folder (default: nas-<device>-<target>ms)")
    a.add_argument("--grad-mode", choices=("full_v2", "two"), default="full_v2",
                   help="full_v2: recompute every path in backward; two: two sampled paths, logits rescaled")
    # Checked in _search, not by argparse `choices`: a bad value is one line, not the usage.
    a.add_argument("--arch-update", default="gradient", metavar="{gradient,reinforce}",
                   help="gradient: the latency loss through binary gates; reinforce: policy gradient of "
                        "R = ACC×(LAT/T)^w over sampled networks, T = --target-ms (default gradient)")
    a.add_argument("--rl-samples", type=int, default=8, metavar="S",
                   help="reinforce: networks sampled per architecture step (default 8)")
    a.add_argument("--rl-baseline-decay", type=float, default=0.95,
                   help="reinforce: moving-average baseline b <- d·b + (1−d)·mean R (default 0.95)")
    a.add_argument("--rl-exponent", type=float, default=-0.07, metavar="W",
                   help="reinforce: reward exponent w <= 0 (default -0.07, MnasNet's)")
    a.add_argument("--derive", default="argmax", metavar="{argmax,target}",
                   help="argmax: every block's likeliest op, zero included (the paper's); target: skip a block "
                        "when p(zero) > 1/2, else its likeliest op, then skip the likeliest-to-skip blocks "
                        "until the prediction is at most --target-ms. A finished search may be rerun with "
                        "another --derive (default argmax)")
    a.add_argument("--arch-every", type=int, default=5, metavar="K", help="one architecture step every K weight steps")
    a.add_argument("--arch-lr", type=float, default=1e-3, help="Adam learning rate of α (β1 = 0)")
    a.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the weights")
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--loss-alpha", type=float, default=0.2, help="mul#log α (default 0.2)")
    a.add_argument("--loss-beta", type=float, default=0.3, help="mul#log β (default 0.3)")
    a.add_argument("--loss-lambda", type=float, default=0.1, help="add#linear and add#hinge λ (default 0.1)")
    a.add_argument("--steps-per-epoch", type=int, default=None, metavar="N", help="cap on weight steps per epoch")
    add_nproc_arg(a)
    add_db_arg(a)
    _add_common(a)
    a.set_defaults(func=_search)

    r = s.add_parser("retrain", help="train a searched architecture from scratch (resumable checkpoint)")
    r.add_argument("arch", metavar="ARCH.json", help="written by `hil nas search`")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--out", default=None, metavar="FILE",
                   help="checkpoint (default: beside ARCH.json, model.safetensors)")
    r.add_argument("--lr", type=float, default=0.1)
    r.add_argument("--batch-size", type=int, default=128)
    add_nproc_arg(r)
    _add_common(r)
    r.set_defaults(func=_retrain)

    g = s.add_parser("plot", help="one PNG of the searched architectures (one row per ARCH.json)")
    g.add_argument("arch", nargs="+", metavar="ARCH.json")
    g.add_argument("-o", "--output", required=True, metavar="PNG")
    g.set_defaults(func=_plot)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=5000, help="training images held out as the validation split")
    p.add_argument("--train-limit", type=int, default=None, metavar="N", help="first N training images only")
    p.add_argument("--val-limit", type=int, default=None, metavar="N", help="first N validation/test images only")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"Fashion-MNIST IDX files (default: ${DATA_ENV} or the Debian package's folder)")
    p.add_argument("--torch-device", default="cpu", help="where torch trains: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the saved state when it exists (default on)")
    add_json_arg(p)


def _setup(args: argparse.Namespace) -> Any:
    import torch

    from hil.optimizers.train import pick_device

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("train_limit", "val_limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {v}")
    return pick_device(args.torch_device)


def _log(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.json:
        return None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def _data(args: argparse.Namespace, size: int) -> Any:
    from hil.optimizers.data import fashion_mnist

    return fashion_mnist(args.data_dir, val_size=args.val_size, seed=args.seed, size=size,
                         train_limit=args.train_limit, val_limit=args.val_limit, test_limit=args.val_limit)


def _search(args: argparse.Namespace) -> int:
    from hil.optimizers.proxyless.latency import open_latency
    from hil.store import open_store

    t0 = time.perf_counter()
    if args.arch_update not in ARCH_UPDATES:
        raise ConfigError(f"--arch-update must be one of {', '.join(ARCH_UPDATES)}, got {args.arch_update!r}")
    if args.resolution < 28:
        raise ConfigError(f"--resolution must be at least 28 (Fashion-MNIST images are 28x28), got {args.resolution}")
    with open_store(args.db) as store:
        latency = open_latency(store, args.device, args.resolution, args.width)
    latency.check_target(args.target_ms)  # before importing torch, loading data or building anything
    from hil.optimizers.proxyless.search import SearchConfig

    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.epochs // 3
    cfg = SearchConfig(epochs=args.epochs, warmup_epochs=warmup, largest_first=args.largest_first,
                       batch_size=args.batch_size, lr=args.lr,
                       arch_lr=args.arch_lr, arch_every=args.arch_every, grad_mode=args.grad_mode, loss=args.loss,
                       target_ms=args.target_ms, loss_alpha=args.loss_alpha, loss_beta=args.loss_beta,
                       loss_lambda=args.loss_lambda, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                       arch_update=args.arch_update, rl_samples=args.rl_samples,
                       rl_baseline_decay=args.rl_baseline_decay, rl_exponent=args.rl_exponent,
                       derive=args.derive)
    _setup(args)
    return run_ranked(args, args.torch_device, lambda dist: _search_in(args, dist, latency, cfg, t0))


def _search_in(args: argparse.Namespace, dist: Dist, latency: Any, cfg: Any, t0: float) -> int:
    from hil.optimizers.proxyless.run import ARCH_FILE, run_search

    data = _data(args, args.resolution)
    out = Path(args.out or f"nas-{args.device}-{args.target_ms:g}ms")
    rec = run_search(latency, data, cfg, out, device=dist.device, resume=args.resume,
                     progress=progress_enabled(args.json), log=_log(args), dist=dist)
    if not dist.main:
        return 0  # rank 0 writes and reports
    report = {**rec.to_json(), "arch_file": str(out / ARCH_FILE), "out": str(out),
              "wall_s": time.perf_counter() - t0}
    lo, hi = rec.range_ms
    text = (f"{args.device}: {','.join(rec.arch)}\n"
            f"predicted {rec.predicted_ms:.4g} ms (LUT sum {rec.lut_sum_ms:.4g} ms; target {rec.target_ms:g} ms; "
            f"the space spans {lo:.4g}..{hi:.4g} ms)\n"
            f"architecture: {out / ARCH_FILE}; retrain with `hil nas retrain {out / ARCH_FILE}`")
    emit(report, args.json, text)
    return 0


def _retrain(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _setup(args)
    return run_ranked(args, args.torch_device, lambda dist: _retrain_in(args, dist, t0))


def _retrain_in(args: argparse.Namespace, dist: Dist, t0: float) -> int:
    from hil.optimizers.proxyless.arch import ArchRecord, retrain
    from hil.optimizers.train import TrainConfig, evaluate, model_meta, save_checkpoint

    rec = ArchRecord.read(args.arch)
    device = dist.device
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    data = _data(args, rec.resolution)
    out = Path(args.out) if args.out else Path(args.arch).with_name("model.safetensors")
    progress = progress_enabled(args.json)
    model, spec, result = retrain(rec, data, cfg, checkpoint=out, dist=dist, resume=args.resume,
                                  progress=progress, log=_log(args), extra_meta={"data": data.describe()})
    if not dist.main:
        return 0  # rank 0 scores, writes and reports
    test = evaluate(model, data.test, device=device, progress=progress)
    last = result.history[-1] if result.history else None
    save_checkpoint(out, model, {**model_meta(spec), "data": data.describe(), "epoch": result.epochs,
                                 "val_acc": last.val_acc if last else None, "test_acc": test.accuracy,
                                 "nas": {"device": rec.device, "predicted_ms": rec.predicted_ms,
                                         "target_ms": rec.target_ms, "arch_file": str(args.arch)}})
    report = {"checkpoint": str(out), "arch": list(rec.arch), "device": rec.device,
              "predicted_ms": rec.predicted_ms, "epochs": result.epochs, "resumed_from": result.resumed_from,
              "test_acc": test.accuracy, "val_acc": last.val_acc if last else None, "macs": spec.macs,
              "params": spec.params, "wall_s": time.perf_counter() - t0, "world": dist.world}
    text = (f"{args.arch}: {result.epochs} epoch(s), test accuracy {100 * test.accuracy:.2f}% on {test.n} images; "
            f"predicted {rec.predicted_ms:.4g} ms on {rec.device}\ncheckpoint: {out}")
    emit(report, args.json, text)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from hil.optimizers.proxyless.arch import ArchRecord, plot_archs

    recs = [ArchRecord.read(p) for p in args.arch]
    plot_archs(recs, args.output)
    print(f"wrote {args.output} ({len(recs)} architecture(s))")
    return 0
