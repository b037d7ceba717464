"""`hil train` (a base model on Fashion-MNIST, to a checkpoint) and `hil eval` (a checkpoint)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.commands.common import add_json_arg, emit, progress_enabled
from hil.errors import AlreadyReported, ConfigError, HilError
from hil.optimizers.dataset_location import DATA_ENV

# torch and the model code are imported inside the commands: every `hil` invocation builds this
# parser, and `hil lut show` should not pay for importing torch.
MODEL_NAMES = ("mobilenet-v1", "mobilenet-v2", "proxyless")

if TYPE_CHECKING:
    import torch

    from hil.optimizers.dist import Dist


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a base model on Fashion-MNIST and report its test accuracy")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="network family")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier, 0.1..4.0 (default 1.0)")
    p.add_argument("--arch", default=None,
                   help="proxyless only: 21 comma-separated block ops, e.g. 3x3_MBConv6,zero,...")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="checkpoint (safetensors; resume state goes to FILE.state.pt) "
                        "(default: ./<model>-w<width>.safetensors)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the cosine schedule")
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random crop + horizontal flip (default on)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from FILE.state.pt when it exists (default on)")
    p.add_argument("--stem-stride", type=int, default=None, choices=(1, 2),
                   help="stride of the first conv (default 1 for 32x32 inputs)")
    p.add_argument("--train-limit", type=int, default=None, metavar="N",
                   help="train on the first N training images only (quick runs)")
    add_nproc_arg(p)
    _add_common(p)
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on the Fashion-MNIST test (or val) split")
    e.add_argument("checkpoint", metavar="FILE", help="a checkpoint written by `hil train`")
    e.add_argument("--split", choices=("test", "val"), default="test")
    _add_common(e)
    e.set_defaults(func=_eval)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of training and of the train/val split")
    p.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    p.add_argument("--test-limit", type=int, default=None, metavar="N",
                   help="score the first N val and test images only")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=f"Fashion-MNIST IDX files (default: ${DATA_ENV} or the Debian package's folder)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    add_json_arg(p)


def add_nproc_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N local processes with DistributedDataParallel (gloo on CPU, nccl on "
                        "CUDA: one GPU each); --batch-size stays the global batch (docs/TRAINING.md)")


def relaunch(args: argparse.Namespace) -> int | None:
    """With --nproc N > 1 and outside torchrun: start this same command in N workers, wait, and
    return the exit status. None means: this process is to do the work itself.

    The workers get the command's own words without --nproc (torchrun's environment tells them
    who they are), and CPU threads split between them unless --threads says otherwise.
    """
    import os

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be positive, got {args.nproc}")
    batch = getattr(args, "batch_size", None)
    if batch is not None and batch % args.nproc:
        raise ConfigError(f"batch size {batch} does not split evenly over {args.nproc} processes")
    if args.nproc == 1:
        return None
    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc under torchrun: torchrun has started the processes already; drop --nproc")
    from hil.optimizers.dist import launch

    words = _without_nproc(args.argv)
    if args.threads is None:
        words += ["--threads", str(max(1, (os.cpu_count() or 1) // args.nproc))]
    launch(args.nproc, sys.executable, "-m", "hil", *words)
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for w in argv:
        if skip:
            skip = False
        elif w == "--nproc":
            skip = True
        elif not w.startswith("--nproc="):
            out.append(w)
    return out


def _setup(args: argparse.Namespace) -> torch.device:
    import torch

    from hil.optimizers.train import pick_device

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def _log(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Epoch lines on stderr, unless the caller asked for JSON only."""
    if args.json:
        return None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def run_ranked(args: argparse.Namespace, device: str | None, body: Callable[[Dist], int]) -> int:
    """`body(dist)` in this process, or in each of --nproc workers started for it.

    In a worker, a user error of rank > 0 exits quietly: every rank runs the same code on the same
    inputs, so rank 0 meets the same error and prints it in its one line.
    """
    code = relaunch(args)
    if code is not None:
        return code
    from hil.optimizers.dist import Dist

    dist = Dist.from_env(device)
    try:
        code = body(dist)
        # Every rank done before any tears its process group down: a gloo rank whose peer closes
        # while work is still in flight can abort at exit ("terminate called without an active
        # exception", seen once in CI on `hil amc finetune --nproc 2`).
        dist.barrier()
        return code
    except HilError:
        if dist.main:
            raise
        # The pause keeps the launcher from stopping rank 0 (our exit ends the job) before it has said it.
        time.sleep(3)
        raise AlreadyReported() from None
    except KeyboardInterrupt:
        if dist.main:
            raise
        raise AlreadyReported(130) from None  # Ctrl-C reaches every rank; rank 0 says it
    finally:
        dist.close()


def _train(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _setup(args)
    return run_ranked(args, args.device, lambda dist: _train_in(args, dist, t0))


def _train_in(args: argparse.Namespace, dist: Dist, t0: float) -> int:
    import torch

    from hil.nets.models import make_model
    from hil.optimizers.data import fashion_mnist
    from hil.optimizers.train import TrainConfig, evaluate, model_meta, save_checkpoint, seed_everything, train

    device = dist.device
    options: dict[str, Any] = {"width": args.width, "stem_stride": args.stem_stride}
    if args.model == "proxyless":
        options["arch"] = args.arch
    elif args.arch is not None:
        raise ConfigError(f"--arch applies to --model proxyless, not {args.model}")
    spec = make_model(args.model, **options)
    for name, value in (("--train-limit", args.train_limit), ("--test-limit", args.test_limit)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be positive, got {value}")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      augment=args.augment, seed=args.seed)
    data = fashion_mnist(args.data_dir, val_size=args.val_size, seed=args.seed, size=spec.options["input_size"],
                         train_limit=args.train_limit, val_limit=args.test_limit, test_limit=args.test_limit)
    out = args.out or f"{spec.name}-w{spec.options['width']:g}.safetensors"
    meta = {**model_meta(spec), "data": data.describe(),
            "train": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "seed")}}
    seed_everything(args.seed)  # the initial weights come from the seed too
    model = spec.build()
    progress = progress_enabled(args.json)
    result = train(model, data, cfg, dist=dist, checkpoint=out, meta=meta, resume=args.resume,
                   progress=progress, log=_log(args))
    if not dist.main:
        return 0  # rank 0 scores, writes and reports
    test = evaluate(model, data.test, device=device, progress=progress)
    last = result.history[-1] if result.history else None
    val_acc = last.val_acc if last else None
    save_checkpoint(out, model, {**meta, "epoch": result.epochs, "val_acc": val_acc, "test_acc": test.accuracy})
    wall = time.perf_counter() - t0
    times = result.epoch_times
    samples = sum(h.samples for h in result.history[result.resumed_from:])
    report = {
        "model": spec.name, "options": spec.options, "macs": spec.macs, "params": spec.params,
        "epochs": result.epochs, "epochs_run": len(times), "resumed_from": result.resumed_from,
        "test_acc": test.accuracy, "test_loss": test.loss, "val_acc": val_acc,
        "epoch_s": times, "wall_s": wall, "device": str(device), "threads": torch.get_num_threads(),
        "world": dist.world, "backend": dist.backend,
        "train_samples_per_s": samples / sum(times) if times and sum(times) > 0 else None,
        "data": data.describe(), "checkpoint": out,
    }
    per_epoch = f", {sum(times) / len(times):.1f} s/epoch" if times else ""
    procs = f" x {dist.world} processes ({dist.backend})" if dist.world > 1 else ""
    text = (f"{spec.name} width {spec.options['width']:g}: {result.epochs} epoch(s), test accuracy "
            f"{100 * test.accuracy:.2f}% on {test.n} images{per_epoch}, {wall:.0f} s in all on {device}{procs}\n"
            f"checkpoint: {out}")
    emit(report, args.json, text)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hil.optimizers.data import fashion_mnist
    from hil.optimizers.train import evaluate, load_model

    t0 = time.perf_counter()
    device = _setup(args)
    model, spec, meta = load_model(args.checkpoint, device=device)
    # The val split must be the one the model was trained against: take its seed and size from the meta.
    split = meta.get("data", {})
    seed = split.get("split_seed", args.seed) if args.split == "val" else args.seed
    val_size = split.get("val_size", args.val_size) if args.split == "val" else args.val_size
    data = fashion_mnist(args.data_dir, val_size=val_size, seed=seed, size=spec.options["input_size"],
                         test_limit=args.test_limit, val_limit=args.test_limit)
    result = evaluate(model, getattr(data, args.split), device=device, progress=progress_enabled(args.json))
    report = {"checkpoint": args.checkpoint, "model": spec.name, "options": spec.options,
              "epoch": meta.get("epoch"), "split": args.split, "n": result.n,
              f"{args.split}_acc": result.accuracy, f"{args.split}_loss": result.loss,
              "macs": spec.macs, "params": spec.params, "device": str(device),
              "wall_s": time.perf_counter() - t0}
    text = (f"{args.checkpoint}: {spec.name} width {spec.options['width']:g}, epoch {meta.get('epoch')}: "
            f"{args.split} accuracy {100 * result.accuracy:.2f}% on {result.n} images")
    emit(report, args.json, text)
    return 0
