"""Train, evaluate and fine-tune; checkpoints that resume.

A checkpoint is two files. `OUT` (safetensors) holds the weights, with the model's name, options
and results as JSON in its metadata: enough to rebuild and evaluate it. `OUT.state.pt` holds what a
resume needs (weights, optimizer state, epoch, history, config), written with `torch.save` of plain
tensors and read back with `weights_only=True`; nothing is ever unpickled as objects.

Determinism: the learning rate is a pure function of the step, the batch order and augmentation of
a pure function of (seed, epoch), and torch runs its deterministic kernels while training, so an
interrupted run resumed from its last epoch ends with the same weights as an uninterrupted one
(on one machine, same thread count).

Distributed: given a `Dist` of N processes, `train` runs under DistributedDataParallel with the
same global batch; rank 0 alone reads and writes the checkpoint, whose contents do not depend on
N, so a run resumes with any number of processes (docs/TRAINING.md).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils.deterministic
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from hil.errors import ConfigError, HilError
from hil.nets.models import ModelSpec, make_model
from hil.optimizers.data import Batches, DataSplits, ImageSet
from hil.optimizers.dist import Dist, pick_device

FORMAT = "hil-checkpoint/1"


class CheckpointError(HilError):
    """A checkpoint is missing, unreadable, or does not fit the model or the run."""


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the previous settings come back after."""
    if not enabled:
        yield
        return
    fill = torch.utils.deterministic
    prev = (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, fill.fill_uninitialized_memory)
    # cuBLAS needs this before its first handle to be deterministic; harmless on the CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also NaN-fills every torch.empty: a third of a CPU training step in the profile,
    # and no kernel we run reads memory it did not write.
    fill.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[2], prev[3]
        fill.fill_uninitialized_memory = prev[4]


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum, cosine learning rate from `lr` to 0 over all steps, no decay on
    BN and biases (the usual MobileNet recipe, scaled to a small dataset)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    deterministic: bool = True
    steps_per_epoch: int | None = None  # cap, for short fine-tunes
    # NHWC kernels: about twice as fast for depthwise-heavy nets on CPU (benchmarks/train_bench.py).
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps per epoch must be positive, got {self.steps_per_epoch}")


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based: the number of epochs done
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    samples: int  # training images seen in this epoch
    train_s: float  # seconds of training steps in this epoch (evaluation not included)


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done when this call started

    @property
    def epochs(self) -> int:
        return self.history[-1].epoch if self.history else self.resumed_from

    @property
    def epoch_times(self) -> list[float]:
        """Training seconds of the epochs run by this call (not the resumed ones)."""
        return [h.train_s for h in self.history[self.resumed_from:]]


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    n: int


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, *, device: str | torch.device | None = None,
             batch_size: int = 500, channels_last: bool = True, progress: bool = False) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy on `data`, in eval mode (train mode restored after)."""
    dev = pick_device(device)
    was_training = model.training
    model.to(dev).eval()
    correct, loss_sum = 0, 0.0
    batches = Batches(data, batch_size, device=dev, channels_last=channels_last)
    for x, y in tqdm(batches.epoch(), total=len(batches), desc=f"eval {data.name}", leave=False,
                     disable=not progress, file=sys.stderr):
        out = model(x)
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    model.train(was_training)
    n = len(data)
    return EvalResult(correct / n if n else 0.0, loss_sum / n if n else 0.0, n)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def state_path(checkpoint: str | os.PathLike[str]) -> Path:
    return Path(str(checkpoint) + ".state.pt")


def train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    *,
    device: str | torch.device | None = None,
    dist: Dist | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
    resume: bool = True,
    validate: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `model` in place on `data.train` for `cfg.epochs` epochs, scoring `data.val` each epoch.

    The initial weights are the caller's: seed (`seed_everything`) before building the model.
    With `checkpoint`, weights (plus `meta`) and resume state are written after every epoch, and a
    run whose state file exists continues from it (`resume=False` starts over). Fine-tuning is the
    same call on an already trained model, with a smaller `lr` and fewer epochs.

    With a `dist` of several processes (every rank calls this with the same arguments) the model
    runs under DistributedDataParallel: `cfg.batch_size` stays the global batch, each rank gets its
    share of it from a seeded DistributedSampler, and only rank 0 reads and writes the checkpoint
    and calls `log`. `device` is then ignored: the rank's device is `dist.device`.
    """
    d = dist or Dist.single(device)
    dev = d.device
    if cfg.batch_size % d.world:
        raise ConfigError(f"batch size {cfg.batch_size} does not split evenly over {d.world} processes")
    seed_everything(cfg.seed)
    model.to(dev).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.momentum > 0)
    batches = Batches(data.train, cfg.batch_size // d.world, shuffle=True, augmented=cfg.augment, seed=cfg.seed,
                      device=dev, drop_last=len(data.train) >= cfg.batch_size, channels_last=cfg.channels_last,
                      rank=d.rank, world=d.world)
    # len(batches) is the same on every rank and for every world size: floor(n / global batch).
    steps = len(batches) if cfg.steps_per_epoch is None else min(len(batches), cfg.steps_per_epoch)
    if steps == 0:
        raise ConfigError("the training set is empty")
    total = steps * cfg.epochs
    result = TrainResult()
    if checkpoint is not None and d.main:
        _make_parent(Path(checkpoint))
    if checkpoint is not None and resume:
        result = _resume_all(d, state_path(checkpoint), model, optimizer, cfg)
        if log and d.main and result.resumed_from:
            log(f"resuming {checkpoint} after epoch {result.resumed_from}/{cfg.epochs}")
    log = log if d.main else None
    progress = progress and d.main
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    # DDP averages the ranks' gradients of their mean losses: the gradient of the global batch's mean.
    # It also broadcasts rank 0's weights now, so ranks start equal whatever they were handed.
    net = model if d.world == 1 else DistributedDataParallel(
        model, device_ids=[dev] if dev.type == "cuda" else None)

    with deterministic(cfg.deterministic):
        for epoch in range(result.epochs, cfg.epochs):
            t0 = time.perf_counter()
            loss_sum, correct, seen = (torch.zeros((), device=dev) for _ in range(3))
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not progress, file=sys.stderr)
            lr = cfg.lr
            for i, (x, y) in enumerate(itertools.islice(batches.epoch(epoch), steps)):
                lr = cosine_lr(cfg.lr, epoch * steps + i, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                out = net(x)
                loss = criterion(out, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulated on the device: no host sync per step.
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(y)
                bar.update(1)
                if progress and i % 20 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.4f}")
            bar.close()
            # The epoch's figures of the whole job, and rank 0's BN statistics on every rank (each
            # rank's were updated from its own shard), so that every rank validates the same model.
            totals = d.all_sum(torch.stack([loss_sum, correct.float(), seen.float()]))
            d.broadcast_buffers(model)
            n_seen = int(totals[2])
            train_loss, train_acc = float(totals[0]) / n_seen, float(totals[1]) / n_seen
            train_s = time.perf_counter() - t0
            val = None
            if validate and len(data.val):
                val = evaluate(model, data.val, device=dev, channels_last=cfg.channels_last,
                               progress=progress)
            model.train()
            stats = EpochStats(epoch + 1, train_loss, train_acc, val.loss if val else None,
                               val.accuracy if val else None, lr, n_seen, train_s)
            result.history.append(stats)
            if checkpoint is not None and d.main:
                _save_state(state_path(checkpoint), model, optimizer, cfg, result, d.world)
                save_checkpoint(checkpoint, model, {**(meta or {}), "epoch": epoch + 1,
                                                    "val_acc": val.accuracy if val else None})
            if log:
                v = f" val_acc {val.accuracy:.4f}" if val else ""
                log(f"epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f} acc {train_acc:.4f}{v} "
                    f"({train_s:.1f} s)")
    # When any rank returns, rank 0's files are complete.
    d.barrier()
    return result


def finetune(model: nn.Module, data: DataSplits, *, epochs: int = 1, lr: float = 0.01,
             steps_per_epoch: int | None = None, **kwargs: Any) -> TrainResult:
    """A short training of an already trained (pruned, quantized) model at a small learning rate."""
    cfg_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(epochs=epochs, lr=lr, steps_per_epoch=steps_per_epoch, **cfg_fields)
    return train(model, data, cfg, **kwargs)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                result: TrainResult, world: int = 1) -> None:
    # Nothing here depends on the number of processes: the module is the unwrapped one (no DDP
    # "module." prefix), the position is whole epochs of the global batch, and `world` is only told.
    state = {
        "format": FORMAT,
        "epoch": result.epochs,
        "samples": sum(h.samples for h in result.history),
        "world": world,
        "config": asdict(cfg),
        "history": [asdict(h) for h in result.history],
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports an unwritable path as RuntimeError
        raise CheckpointError(f"cannot write training state {path}: {e}") from None


def _resume_all(d: Dist, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                cfg: TrainConfig) -> TrainResult:
    """Rank 0 reads the state and hands it to every rank; a bad state fails every rank alike, with
    rank 0's message, so no rank is left waiting for the others."""
    state: dict[str, Any] | None = None
    error: str | None = None
    if d.main and path.exists():
        try:
            state = _read_state(path, cfg)
        except CheckpointError as e:
            error = str(e)
    state, error = d.broadcast_object((state, error))
    if error is not None:
        raise CheckpointError(error)
    if state is None:
        return TrainResult()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model: {str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    history = [EpochStats(**h) for h in state["history"]]
    return TrainResult(history=history, resumed_from=int(state["epoch"]))


def _read_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"cannot read training state {path}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a hil training state")
    saved = state["config"]
    now = asdict(cfg)
    diff = [k for k in now if saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise CheckpointError(f"{path} was trained with {k}={saved.get(k)!r}, this run has {k}={now[k]!r}; "
                              "resume with the same settings, or start over (--no-resume / another --out)")
    return state


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights as safetensors, `meta` (JSON-able) in its metadata; written atomically."""
    path = Path(path)
    _make_parent(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "hil": json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the folder of checkpoint {path}: {e.strerror or e}") from None


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, meta) of a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {e}") from None
    if header.get("format") != FORMAT or "hil" not in header:
        raise CheckpointError(f"checkpoint {path} has no hil metadata (format {FORMAT})")
    try:
        meta = json.loads(header["hil"])
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path}: damaged metadata") from None
    _check_meta(path, meta)
    return tensors, meta


def _check_meta(path: Path, meta: Any) -> None:
    """The metadata is JSON we read fields of: each must have the type we use it as."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: metadata must be a JSON object, got {type(meta).__name__}")
    expect: dict[str, tuple[type, ...]] = {"model": (str,), "options": (dict,), "data": (dict,),
                                           "epoch": (int, type(None))}
    for key, types in expect.items():
        if key in meta and not isinstance(meta[key], types):
            raise CheckpointError(f"checkpoint {path}: metadata field {key!r} has the wrong type "
                                  f"({type(meta[key]).__name__})")
    for key in ("split_seed", "val_size"):
        value = meta.get("data", {}).get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise CheckpointError(f"checkpoint {path}: metadata field 'data.{key}' must be a non-negative "
                                  f"integer, got {value!r}")


def model_meta(spec: ModelSpec) -> dict[str, Any]:
    """What a checkpoint records to rebuild its model."""
    return {"model": spec.name, "options": dict(spec.options), "macs": spec.macs, "params": spec.params}


def load_model(path: str | os.PathLike[str], *, device: str | torch.device | None = None
               ) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild a checkpoint's model from its metadata and load its weights."""
    tensors, meta = read_checkpoint(path)
    if "model" not in meta or not isinstance(meta.get("options"), dict):
        raise CheckpointError(f"checkpoint {path} does not name its model")
    try:
        spec = make_model(meta["model"], **meta["options"])
    except (HilError, TypeError, ValueError) as e:  # options of the wrong type reach the factories too
        raise CheckpointError(f"checkpoint {path}: its model metadata does not build a model: {e}") from None
    model = spec.build()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit model {spec.name}: "
                              f"{str(e).splitlines()[0]}") from None
    return model.to(pick_device(device)), spec, meta
