"""`hil haq search | fixed | finetune | eval`: HAQ mixed-precision quantization against a device's RTL LUT."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.commands.common import add_db_arg, add_inventory_arg, add_json_arg, emit, progress_bar, progress_enabled
from hil.commands.train import add_nproc_arg, run_ranked
from hil.errors import ConfigError

if TYPE_CHECKING:
    from hil.optimizers.dist import Dist


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("haq", help="HAQ: mixed-precision quantization with the device's latency/energy in the loop")
    hsub = p.add_subparsers(dest="haq_command", metavar="SUBCOMMAND", required=True)

    s = hsub.add_parser("search", help="search per-layer bits under a latency, energy or size budget")
    _add_run_args(s)
    s.add_argument("--budget", required=True,
                   help="KIND=VALUE: latency|energy|size, a fraction of the 8/8 network (latency=0.5) or "
                        "absolute with a unit (latency=2.5ms, energy=300uJ, size=40KB)")
    s.add_argument("--episodes", type=int, default=600, help="search episodes (default 600)")
    s.add_argument("--warmup", type=int, default=20, help="warm-up episodes of random actions (default 20)")
    s.set_defaults(func=_search)

    f = hsub.add_parser("fixed", help="the uniform-bits baseline, with the same final fine-tune")
    _add_run_args(f)
    f.add_argument("--bits", type=int, required=True, help="weight and activation bits of every searched layer")
    f.set_defaults(func=_fixed)

    t = hsub.add_parser("finetune", help="fine-tune a search's quantized model at its bits, in N processes")
    t.add_argument("source", metavar="RESULT_DIR_OR_CHECKPOINT",
                   help="output folder of `hil haq search`/`fixed` (its haq.safetensors), or a HAQ checkpoint")
    t.add_argument("--epochs", type=int, default=1, help="epochs of --batches batches each (default 1)")
    t.add_argument("--batches", type=int, default=300, help="training batches per epoch (default 300)")
    t.add_argument("--lr", type=float, default=0.01, help="peak of the cosine learning rate (default 0.01)")
    t.add_argument("--batch-size", type=int, default=128, help="global batch, split over --nproc (default 128)")
    t.add_argument("--seed", type=int, default=0, help="batch order and augmentation (default 0)")
    t.add_argument("--train-limit", type=int, default=None)
    t.add_argument("--val-limit", type=int, default=None)
    t.add_argument("--test-limit", type=int, default=None)
    t.add_argument("--threads", type=int, default=None, help="CPU threads for torch, per process")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT.state.pt when it exists (default on)")
    t.add_argument("--out", default=None, metavar="FILE",
                   help="default: the input checkpoint with .finetuned.safetensors (resume state: FILE.state.pt)")
    add_nproc_arg(t)
    add_json_arg(t)
    t.set_defaults(func=_finetune)

    e = hsub.add_parser("eval", help="a policy's predicted and simulated cost on a device")
    e.add_argument("policy", metavar="POLICY", help="policy.json written by `hil haq search` or `fixed`")
    e.add_argument("--device", required=True, help="device of the inventory (e.g. bismo-cloud)")
    e.add_argument("--simulate", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the whole network on the device in one continuous run (default on)")
    e.add_argument("--accuracy", action="store_true", help="also evaluate the policy's checkpoint on the test split")
    add_db_arg(e)
    add_inventory_arg(e)
    add_json_arg(e)
    e.set_defaults(func=_eval)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="mobilenet-v1 or mobilenet-v2")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--input-size", type=int, default=32, help="input resolution (default 32, Fashion-MNIST padded)")
    p.add_argument("--device", required=True, help="device of the inventory whose LUT gives the costs")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="float model from `hil train` (default: train one here for --pretrain-batches)")
    p.add_argument("--pretrain-batches", type=int, default=400)
    p.add_argument("--finetune-batches", type=int, default=10, help="fine-tune batches per episode (default 10)")
    p.add_argument("--final-finetune-batches", type=int, default=300, help="fine-tune of the final policy")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--min-bits", type=int, default=1)
    p.add_argument("--max-bits", type=int, default=8)
    p.add_argument("--first-weight-bits", default="8",
                   help="bits of the first layer's weights, or 'search' (default 8)")
    p.add_argument("--quantize-first-input", action=argparse.BooleanOptionalAction, default=False,
                   help="quantize the image fed to the first layer (default off)")
    p.add_argument("--classifier-bits", default="8/8", help="W/A bits of the classifier, or 'search' (default 8/8)")
    p.add_argument("--val-limit", type=int, default=2000, help="held-out validation images scored per episode")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: haq-<model>-<device>)")
    add_db_arg(p)
    add_inventory_arg(p)
    add_json_arg(p)


def _bits_option(text: str, name: str, pair: bool) -> Any:
    if text.strip().lower() == "search":
        return None
    try:
        vals = tuple(int(x) for x in text.split("/")) if pair else (int(text),)
    except ValueError:
        form = "W/A like 8/8" if pair else "a number"
        raise ConfigError(f"{name} must be {form} or 'search', got {text!r}") from None
    if (pair and len(vals) != 2) or any(not 1 <= v <= 8 for v in vals):
        raise ConfigError(f"{name} {text!r}: bits must be within 1..8")
    return vals if pair else vals[0]


def _config(args: argparse.Namespace, **extra: Any) -> Any:
    import torch

    from hil.optimizers.haq.search import SearchConfig

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("min_bits", "max_bits"):
        v = getattr(args, name)
        if not 1 <= v <= 8:
            raise ConfigError(f"--{name.replace('_', '-')} {v}: bits must be within 1..8")
    return SearchConfig(
        model=args.model, width=args.width, input_size=args.input_size, device=args.device,
        checkpoint=args.checkpoint, pretrain_batches=args.pretrain_batches, finetune_batches=args.finetune_batches,
        final_finetune_batches=args.final_finetune_batches, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
        min_bits=args.min_bits, max_bits=args.max_bits,
        first_weight_bits=_bits_option(args.first_weight_bits, "--first-weight-bits", False),
        quantize_first_input=args.quantize_first_input,
        classifier_bits=_bits_option(args.classifier_bits, "--classifier-bits", True),
        val_limit=args.val_limit, train_limit=args.train_limit, test_limit=args.test_limit, seed=args.seed, **extra)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from hil.inventory import load_inventory
    from hil.store import open_store

    return open_store(args.db), load_inventory(args.inventory)


def _log(args: argparse.Namespace) -> Callable[[str], None] | None:
    if args.json:
        return None
    return lambda msg: print(f"hil: {msg}", file=sys.stderr, flush=True)


def _summary(rep: dict[str, Any]) -> str:
    pred, sim, acc = rep["predicted"], rep.get("simulated", {}), rep.get("accuracy", {})
    lines = [f"{rep['model']} on {rep['device']} (batch {rep['batch']}):",
             f"  predicted (LUT sum): {pred['latency_ms']:.4f} ms, {pred['energy_uj']:.2f} uJ, "
             f"{pred['size_bytes'] / 1024:.1f} KiB of weights"]
    if sim:
        lines.append(f"  simulated whole network: {sim['latency_ms']:.4f} ms, {sim['energy_uj']:.2f} uJ "
                     f"({sim['cycles']} cycles, one continuous run)")
    if "budget_target" in rep:
        held = rep.get("lowered_on_simulation")
        lines.append(f"  budget {rep['budget']}: {rep['budget_target']:.6g} (8/8 network: {rep['full_8_8_cost']:.6g})"
                     + (f"; {held} bit steps lowered to hold it on the whole-network simulation" if held else ""))
    if "val_after_finetune" in acc:
        lines.append(f"  accuracy: val {100 * acc['val_before_finetune']:.2f}% -> "
                     f"{100 * acc['val_after_finetune']:.2f}% "
                     f"after the final fine-tune, test {100 * acc['test_after_finetune']:.2f}% "
                     f"(8/8 reference val {100 * acc['reference_8_8_val']:.2f}%)")
    elif "test_acc" in acc:
        lines.append(f"  checkpoint test accuracy {100 * acc['test_acc']:.2f}% on {acc['test_images']} images")
    lines.append("  bits (w/a): " + " ".join(f"{x['name']}={x['wbits']}/{x['abits']}" for x in rep["layers"]))
    if "plots" in rep:
        lines.append(f"  plots: {rep['plots']['bits']}, {rep['plots']['roofline']}")
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    from hil.optimizers.haq.search import search

    cfg = _config(args, budget=args.budget, episodes=args.episodes, warmup=args.warmup)
    out = args.out or f"haq-{cfg.model}-{cfg.device}"
    store, inv = _open(args)
    bar = progress_bar(cfg.episodes, "episode", "haq search") if progress_enabled(args.json) else None
    log = _log(args)

    def progress(e: dict[str, Any]) -> None:
        if bar is not None:
            bar.n = e["episode"]
            bar.set_postfix(reward=f"{e['reward']:.3f}", acc=f"{e['accuracy']:.3f}",
                            cost=f"{e['cost']:.4g}/{e['target']:.4g}")
        elif log:
            log(f"episode {e['episode']}/{cfg.episodes}: reward {e['reward']:.3f} accuracy {e['accuracy']:.4f} "
                f"cost {e['cost']:.4g} (budget {e['target']:.4g}) {e['timings']['episode_s']:.1f} s")

    try:
        rep = search(cfg, out, store, inv, progress=progress, log=log)
    finally:
        if bar is not None:
            bar.close()
        store.close()
    emit(rep, args.json, _summary(rep) + f"\n  policy: {out}/policy.json")
    return 0


def _fixed(args: argparse.Namespace) -> int:
    from hil.optimizers.haq.search import fixed

    if not 1 <= args.bits <= 8:
        raise ConfigError(f"--bits {args.bits}: bits must be within 1..8")
    cfg = _config(args)
    out = args.out or f"haq-fixed{args.bits}-{cfg.model}-{cfg.device}"
    store, inv = _open(args)
    try:
        rep = fixed(cfg, args.bits, out, store, inv, log=_log(args))
    finally:
        store.close()
    emit(rep, args.json, _summary(rep) + f"\n  policy: {out}/policy.json")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from hil.optimizers.haq.search import evaluate_policy

    store, inv = _open(args)
    try:
        rep = evaluate_policy(args.policy, args.device, store, inv, simulate=args.simulate, accuracy=args.accuracy,
                              log=_log(args))
    finally:
        store.close()
    emit(rep, args.json, _summary(rep))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import torch

    from hil.optimizers.haq.finetune import resolve_source

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("epochs", "batches"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be positive, got {getattr(args, name)}")
    resolve_source(args.source)  # a wrong path: one line before any worker starts
    # The CPU, as the search: its quantized model and data never leave it.
    return run_ranked(args, "cpu", lambda dist: _finetune_in(args, dist))


def _finetune_in(args: argparse.Namespace, dist: Dist) -> int:
    from hil.optimizers.haq.finetune import FinetuneConfig, finetune_result

    cfg = FinetuneConfig(args.batches, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    log = _log(args)
    rep = finetune_result(args.source, args.out, cfg, train_limit=args.train_limit, val_limit=args.val_limit,
                          test_limit=args.test_limit, dist=dist, resume=args.resume, log=log)
    if rep is None:
        return 0  # not rank 0: rank 0 scores, writes and reports
    procs = f" in {rep['world']} processes" if rep["world"] > 1 else ""
    resumed = f", resumed after epoch {rep['resumed_from']}" if rep["resumed_from"] else ""
    emit(rep, args.json, f"{rep['model']} fine-tuned at its policy's bits: {rep['epochs_done']} epoch(s) of "
                         f"{rep['batches']} batches{procs}{resumed}: val {100 * rep['val_before']:.2f}% -> "
                         f"{100 * rep['val_after']:.2f}%, test {100 * rep['test_after']:.2f}% on "
                         f"{rep['test_images']} images\n  checkpoint: {rep['checkpoint']}")
    return 0
