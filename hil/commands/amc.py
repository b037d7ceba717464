"""`hil amc search | finetune | speedup | export | plot`: AMC channel pruning under a FLOPs or a
measured-latency budget, with the device's LUT in the loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.commands.common import add_db_arg, add_inventory_arg, add_json_arg, emit, progress_bar, progress_enabled
from hil.commands.lut import add_protocol_args, protocol_from_args
from hil.commands.train import add_nproc_arg, run_ranked
from hil.errors import ConfigError

if TYPE_CHECKING:
    from hil.optimizers.dist import Dist


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("amc", help="AMC: channel pruning by reinforcement learning under FLOPs or latency budgets")
    asub = p.add_subparsers(dest="amc_command", metavar="SUBCOMMAND", required=True)

    s = asub.add_parser("search", help="search per-layer channel counts under a budget")
    s.add_argument("--model", required=True, help="mobilenet-v1, mobilenet-v2 or proxyless (with --arch)")
    s.add_argument("--arch", default=None, help="ProxylessNAS architecture: 21 comma-separated ops")
    s.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    s.add_argument("--input-size", type=int, default=32, help="input resolution (default 32)")
    s.add_argument("--device", required=True, help="device of the inventory whose LUT gives latencies")
    s.add_argument("--budget", required=True,
                   help="flops=F or latency=F, a fraction of the unpruned model; or absolute: latency=2ms, flops=5M")
    s.add_argument("--episodes", type=int, default=400, help="search episodes (default 400)")
    s.add_argument("--warmup", type=int, default=100, help="warm-up episodes of random actions (default 100)")
    s.add_argument("--reward", choices=["acc", "flops-log"], default="acc",
                   help="acc: held-out accuracy without fine-tuning (default); flops-log: -error*log(FLOPs)")
    s.add_argument("--bn-batches", type=int, default=4, metavar="N",
                   help="re-estimate BatchNorm statistics of each pruned model on N training batches (no weight "
                        "update) before scoring it (default 4; departs from the paper); 0 scores it with the "
                        "unpruned model's statistics, as the paper does")
    s.add_argument("--divisor", type=int, default=8, help="kept channels are multiples of this (default 8)")
    s.add_argument("--min-ratio", type=float, default=0.2, help="minimum kept fraction of a group (default 0.2)")
    s.add_argument("--reconstruct", action="store_true",
                   help="least-squares reconstruction of the layers after pruned channels (final model)")
    s.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="trained model from `hil train` (default: train one here for --pretrain-batches)")
    s.add_argument("--pretrain-batches", type=int, default=400)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--val-limit", type=int, default=1000, help="held-out images scored per episode (default 1000)")
    s.add_argument("--train-limit", type=int, default=None)
    s.add_argument("--test-limit", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch (training and scoring)")
    s.add_argument("--out", default=None, metavar="DIR", help="output folder (default: amc-<model>-<budget>-<device>)")
    add_protocol_args(s)
    add_db_arg(s)
    add_inventory_arg(s)
    add_json_arg(s)
    s.set_defaults(func=_search)

    f = asub.add_parser("finetune", help="fine-tune a pruned checkpoint and score it")
    f.add_argument("checkpoint", metavar="CHECKPOINT", help="amc.safetensors written by `hil amc search`")
    f.add_argument("--batches", type=int, default=300, help="training batches (default 300)")
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--train-limit", type=int, default=None)
    f.add_argument("--val-limit", type=int, default=None)
    f.add_argument("--test-limit", type=int, default=None)
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--out", default=None, metavar="FILE", help="default: CHECKPOINT with .finetuned.safetensors")
    add_nproc_arg(f)
    add_json_arg(f)
    f.set_defaults(func=_finetune)

    m = asub.add_parser("speedup", help="predicted (LUT) and measured speedup of a pruned checkpoint on a device")
    m.add_argument("checkpoint", metavar="CHECKPOINT")
    m.add_argument("--device", required=True)
    add_protocol_args(m)
    add_db_arg(m)
    add_inventory_arg(m)
    add_json_arg(m)
    m.set_defaults(func=_speedup)

    e = asub.add_parser("export", help="a pruned checkpoint as a model config (JSON) and, optionally, TFLite")
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--tflite", choices=["float32", "float16", "int8"], default=None,
                   help="also convert the pruned model with its trained weights to TFLite at this precision")
    add_json_arg(e)
    e.set_defaults(func=_export)

    pl = asub.add_parser("plot", help="kept ratio per layer of several policies in one figure")
    pl.add_argument("policies", nargs="+", metavar="POLICY", help="policy.json files of `hil amc search`")
    pl.add_argument("--out", required=True, metavar="PNG")
    add_json_arg(pl)
    pl.set_defaults(func=_plot)


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise ConfigError(f"--threads must be positive, got {n}")
        torch.set_num_threads(n)


def _log(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.json:
        return None
    return lambda msg: print(f"hil: {msg}", file=sys.stderr, flush=True)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from hil.inventory import load_inventory
    from hil.store import open_store

    inv = load_inventory(args.inventory)
    return open_store(args.db), inv


def _summary(rep: dict[str, Any]) -> str:
    pred, acc, fl = rep["predicted"], rep["accuracy"], rep["flops"]
    lines = [f"{rep['model']} pruned under {rep['budget']} on {rep['device']}:",
             f"  MACs {fl['pruned']:,} of {fl['full']:,} ({fl['ratio']:.3f})",
             f"  predicted latency (LUT): {pred['pruned_ms']:.4f} ms of {pred['full_ms']:.4f} ms, "
             f"speedup {pred['speedup']:.3f}x",
             f"  accuracy without fine-tune: val {100 * acc['val_no_finetune']:.2f}% (unpruned "
             f"{100 * acc['reference_val']:.2f}%), test {100 * acc['test_no_finetune']:.2f}%",
             "  kept: " + " ".join(f"{g['name']}={g['kept']}/{g['channels']}" for g in rep["groups"]),
             f"  checkpoint: {rep['checkpoint']}  plot: {rep['plots']['policy']}"]
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    from hil.optimizers.amc.search import SearchConfig, search

    _threads(args.threads)
    protocol = protocol_from_args(args)
    cfg = SearchConfig(model=args.model, arch=args.arch, width=args.width, input_size=args.input_size,
                       device=args.device, budget=args.budget, episodes=args.episodes, warmup=args.warmup,
                       reward=args.reward, bn_batches=args.bn_batches, divisor=args.divisor, min_ratio=args.min_ratio,
                       reconstruct=args.reconstruct, checkpoint=args.checkpoint,
                       pretrain_batches=args.pretrain_batches, batch_size=args.batch_size, val_limit=args.val_limit,
                       train_limit=args.train_limit, test_limit=args.test_limit, seed=args.seed, clock=args.clock)
    out = args.out or f"amc-{cfg.model}-{cfg.budget.replace('=', '')}-{cfg.device}"
    store, inv = _open(args)
    inv.device(cfg.device)  # an unknown device: one line before anything else
    bar = progress_bar(cfg.episodes, "episode", "amc search") if progress_enabled(args.json) else None
    log = _log(args)

    def progress(e: dict[str, Any]) -> None:
        if bar is not None:
            bar.n = e["episode"]
            bar.set_postfix(reward=f"{e['reward']:.3f}", acc=f"{e['accuracy']:.3f}",
                            cost=f"{e['cost']:.4g}/{e['target']:.4g}")
        elif log:
            log(f"episode {e['episode']}/{cfg.episodes}: reward {e['reward']:.4f} accuracy {e['accuracy']:.4f} "
                f"cost {e['cost']:.4g} (budget {e['target']:.4g}) {e['timings']['episode_s']:.1f} s")

    try:
        rep = search(cfg, out, store, inv, protocol=protocol, progress=progress, log=log)
    finally:
        if bar is not None:
            bar.close()
        store.close()
    emit(rep, args.json, _summary(rep) + f"\n  policy: {out}/policy.json")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    _threads(args.threads)
    return run_ranked(args, "cpu", lambda dist: _finetune_in(args, dist))


def _finetune_in(args: argparse.Namespace, dist: Dist) -> int:
    from hil.optimizers.amc.search import finetune_pruned

    out = args.out or str(args.checkpoint).removesuffix(".safetensors") + ".finetuned.safetensors"
    rep = finetune_pruned(args.checkpoint, out, batches=args.batches, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, train_limit=args.train_limit, val_limit=args.val_limit,
                          test_limit=args.test_limit, log=_log(args), dist=dist)
    if rep is None:
        return 0  # not rank 0: rank 0 scores, writes and reports
    emit(rep, args.json, f"{rep['model']} ({rep['macs']:,} MACs) fine-tuned {rep['batches']} batches: val "
                         f"{100 * rep['val_before']:.2f}% -> {100 * rep['val_after']:.2f}%, test "
                         f"{100 * rep['test_after']:.2f}%\n  checkpoint: {rep['checkpoint']}")
    return 0


def _speedup(args: argparse.Namespace) -> int:
    from hil.optimizers.amc.search import measure_speedup

    protocol = protocol_from_args(args)
    store, inv = _open(args)
    inv.device(args.device)
    try:
        rep = measure_speedup(args.checkpoint, args.device, store, inv, protocol=protocol, clock=args.clock,
                              log=_log(args))
    finally:
        store.close()
    p, m = rep["predicted"], rep["measured"]
    emit(rep, args.json, f"{rep['model']} on {rep['device']}: predicted {p['pruned_ms']:.4f} ms of "
                         f"{p['full_ms']:.4f} ms ({p['speedup']:.3f}x); measured {m['pruned_ms']:.4f} ms of "
                         f"{m['full_ms']:.4f} ms ({m['speedup']:.3f}x, whole networks in one session)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from hil.optimizers.amc.export import export

    rep = export(args.checkpoint, args.out, tflite=args.tflite)
    emit(rep, args.json, "\n".join(f"{k}: {v}" for k, v in rep["files"].items()))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from hil.optimizers.amc.search import plot_policies

    path = plot_policies(args.policies, args.out)
    emit({"plot": str(path)}, args.json, f"plot: {path}")
    return 0
