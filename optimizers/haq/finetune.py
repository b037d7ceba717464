"""Quantization-aware fine-tune of a HAQ policy, in one process or many.

One function fine-tunes a quantized model at fixed bits (`finetune_quantized`): the search's
per-episode fine-tunes and its final one call it in the search's process, and `hil haq finetune`
calls it under DistributedDataParallel on a search's output (`finetune_result`), since running the
whole search on N ranks would repeat the RL search and its device measurements on every rank.

The bits are plain ints on the `QuantConv` modules, not parameters: nothing trains them, and every
rank builds the same ones from the checkpoint's policy. The fake quantizers stay in the forward
pass, so the weights (and BN) adapt to the rounding they will be run with. The activation clips
are buffers calibrated by the search; DDP hands rank 0's to every rank, all equal anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hil.errors import ConfigError, HilError
from hil.nets.models import make_model
from hil.optimizers.data import DataSplits, fashion_mnist
from hil.optimizers.dist import Dist
from hil.optimizers.haq.quantize import QuantizedModel, QuantOptions, quantize
from hil.optimizers.train import (
    CheckpointError,
    TrainConfig,
    TrainResult,
    evaluate,
    model_meta,
    read_checkpoint,
    save_checkpoint,
    train,
)

CHECKPOINT = "haq.safetensors"  # what a search, a fixed baseline and a transfer write in their folder


@dataclass(frozen=True)
class FinetuneConfig:
    batches: int  # per epoch
    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batches", "epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")

    def train_config(self) -> TrainConfig:
        # The settings the search's fine-tunes have always had (no deterministic kernels, NCHW), so a
        # fine-tune here and one inside the search are the same computation.
        return TrainConfig(epochs=self.epochs, lr=self.lr, steps_per_epoch=self.batches, batch_size=self.batch_size,
                           seed=self.seed, deterministic=False, channels_last=False)


def finetune_quantized(q: QuantizedModel, data: DataSplits, cfg: FinetuneConfig, *, dist: Dist | None = None,
                       device: str | torch.device | None = "cpu", checkpoint: str | os.PathLike[str] | None = None,
                       meta: dict[str, Any] | None = None, resume: bool = True,
                       log: Callable[[str], None] | None = None) -> TrainResult:
    """Train `q.model` in place at `q`'s current policy, the fake quantizers in the forward pass.

    `checkpoint`, `meta`, `resume`, `dist` and `log` are `train`'s: with a checkpoint, rank 0 writes
    it and its resume state after every epoch, and a rerun resumes with any number of processes.
    Zero batches or epochs is no fine-tune at all (the search's `--final-finetune-batches 0`).
    """
    if cfg.batches == 0 or cfg.epochs == 0:
        return TrainResult()
    policy = q.policy()
    result = train(q.model, data, cfg.train_config(), device=device, dist=dist, checkpoint=checkpoint, meta=meta,
                   resume=resume, validate=False, log=log)
    if q.policy() != policy:  # cheap, and a changed bit would silently void the search's costs
        raise HilError("the fine-tune changed the policy's bits")
    return result


# --------------------------------------------------------------------------- checkpoints
def haq_meta(q: QuantizedModel, *, device: str, budget: str, data: DataSplits) -> dict[str, Any]:
    """The metadata of a HAQ checkpoint: enough to rebuild the quantized model and its data split."""
    return {**model_meta(q.spec), "data": data.describe(), "haq": {
        "policy": {n: list(b) for n, b in q.policy().items()}, "quant": asdict(q.options), "device": device,
        "budget": budget}}


def load_quantized(path: str | os.PathLike[str]) -> tuple[QuantizedModel, dict[str, Any]]:
    """A checkpoint written by a search (or `hil haq finetune`) as a quantized model at its policy."""
    tensors, meta = read_checkpoint(path)
    if "haq" not in meta:
        raise CheckpointError(f"{path} is not a HAQ checkpoint (no policy in its metadata)")
    try:
        spec = make_model(meta["model"], **meta["options"])
        h = meta["haq"]
        qopts = dict(h["quant"])
        if qopts.get("classifier_bits"):
            qopts["classifier_bits"] = tuple(qopts["classifier_bits"])
        q = quantize(spec, spec.build(), QuantOptions(**qopts))
        q.set_policy({n: (int(w), int(a)) for n, (w, a) in h["policy"].items()})
    except (KeyError, TypeError, ValueError, AttributeError, HilError) as e:
        # hand-edited or foreign metadata reaches the factories; one line, not their traceback
        raise CheckpointError(f"{path}: its HAQ metadata does not build a quantized model "
                              f"({type(e).__name__}: {e})") from None
    try:
        q.model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit {spec.name}: {str(e).splitlines()[0]}") from None
    return q, meta


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """A search's output folder (its haq.safetensors) or a HAQ checkpoint file; cheap path checks only."""
    p = Path(source)
    if p.is_dir():
        if not (p / CHECKPOINT).is_file():
            raise ConfigError(f"{p} holds no {CHECKPOINT}: give the output folder of `hil haq search`, "
                              "`fixed` or a transfer, or the checkpoint itself")
        return p / CHECKPOINT
    if not p.exists():
        raise ConfigError(f"{p} not found (give a `hil haq search` output folder or its {CHECKPOINT})")
    if not p.is_file():
        raise ConfigError(f"{p} is neither a folder nor a checkpoint file")
    return p


def _split(ckpt: Path, meta: dict[str, Any]) -> tuple[int, int]:
    """(split_seed, val_size) the search scored on: the checkpoint's own record, else (for outputs
    written before checkpoints recorded it) its folder's policy.json, else the search's defaults."""
    data = meta.get("data")
    if isinstance(data, dict) and "split_seed" in data and "val_size" in data:
        return int(data["split_seed"]), int(data["val_size"])
    seed, val_size = 0, 5000
    try:
        policy = json.loads((ckpt.parent / "policy.json").read_text())
        cfg = policy.get("config", {})
        seed, val_size = int(cfg.get("split_seed", seed)), int(cfg.get("val_size", val_size))
        seed = int(policy.get("pretrained", {}).get("split_seed", seed))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return seed, val_size


def default_out(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.name.removesuffix(".safetensors") + ".finetuned.safetensors")


def finetune_result(source: str | os.PathLike[str], out: str | os.PathLike[str] | None, cfg: FinetuneConfig, *,
                    train_limit: int | None = None, val_limit: int | None = None, test_limit: int | None = None,
                    dist: Dist | None = None, resume: bool = True,
                    log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Fine-tune a search's quantized model at its policy's bits and score it on its own split.

    Every rank of `dist` fine-tunes its share of each global batch; rank 0 alone scores, writes
    `out` (and its resume state) and returns the report, the others None.
    """
    if cfg.batches < 1 or cfg.epochs < 1:
        raise ConfigError(f"--batches and --epochs must be positive, got {cfg.batches} and {cfg.epochs}")
    d = dist or Dist.single("cpu")
    ckpt = resolve_source(source)
    out = Path(out) if out is not None else default_out(ckpt)
    if out.resolve() == ckpt.resolve():
        raise ConfigError(f"--out {out} is the checkpoint being fine-tuned; write the result elsewhere")
    q, meta = load_quantized(ckpt)
    split_seed, val_size = _split(ckpt, meta)
    data = fashion_mnist(val_size=val_size, seed=split_seed, size=q.spec.options["input_size"],
                         train_limit=train_limit, val_limit=val_limit, test_limit=test_limit)
    before = evaluate(q.model, data.val, device=d.device, channels_last=False).accuracy if d.main else None
    if d.main and log:
        log(f"fine-tuning {ckpt} at its policy's bits: {cfg.epochs} epoch(s) of {cfg.batches} batches"
            + (f" in {d.world} processes" if d.world > 1 else ""))
    new_meta = {k: v for k, v in meta.items() if k not in ("val_acc", "test_acc", "epoch")}
    new_meta.update({"data": data.describe(), "finetune": {"from": str(ckpt), **asdict(cfg)}})
    t0 = time.perf_counter()
    result = finetune_quantized(q, data, cfg, dist=d, device=None, checkpoint=out, meta=new_meta, resume=resume,
                                log=log)
    train_s = time.perf_counter() - t0
    if not d.main:
        return None
    val = evaluate(q.model, data.val, device=d.device, channels_last=False).accuracy
    test = evaluate(q.model, data.test, device=d.device, channels_last=False).accuracy
    save_checkpoint(out, q.model, {**new_meta, "epoch": result.epochs, "val_acc": val, "test_acc": test})
    return {"checkpoint": str(out), "from": str(ckpt), "model": q.spec.name, "options": q.spec.options,
            "policy": {n: list(b) for n, b in q.policy().items()}, **asdict(cfg),
            "epochs_done": result.epochs, "resumed_from": result.resumed_from,
            "val_before": before, "val_after": val, "test_after": test, "recorded_test_acc": meta.get("test_acc"),
            "val_images": len(data.val), "test_images": len(data.test), "train_s": train_s,
            "world": d.world, "backend": d.backend}
