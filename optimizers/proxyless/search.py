"""The ProxylessNAS search: weight warm-up, then alternating weight and architecture steps; resumable.

Weight steps (SGD, cosine learning rate) train the sampled path of every block on the training split.
The first `largest_first` share of the warm-up's steps trains only every block's largest op, whose
weights then initialise the block's other ops (`Supernet.inherit_from_largest`; ours, see supernet.py);
the rest of the warm-up samples paths uniformly, as the public code's warm-up does throughout.
After `warmup_epochs`, every `arch_every` weight steps one architecture step (Adam, lr 1e-3, β1 = 0,
as in the public code) on a batch of the held-out validation split updates α by one of two rules
(`SearchConfig.arch_update`, behind `make_arch_update`): "gradient" samples gates and descends the
latency loss (`LatencyLoss`) through them; "reinforce" (reinforce.py) samples whole networks and
ascends their expected reward by the policy gradient. The final network is the argmax op of every block.

Checkpoints: `DIR/search.safetensors` holds the supernet (weights and α) and both optimizers' state as
tensors, with the config, counters and the per-epoch history as JSON in its metadata; written after
every epoch (with the update rule's state: REINFORCE's baseline), so an interrupted search resumes
from its last finished epoch. The sampling of paths and
batches is a pure function of (seed, epoch), so a resumed search ends like an uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from hil.errors import ConfigError
from hil.optimizers.bn import calibration_batches, recalibrate_bn
from hil.optimizers.data import Batches, DataSplits
from hil.optimizers.dist import Dist
from hil.optimizers.proxyless.latency import LatencyLoss, SearchLatency
from hil.optimizers.proxyless.reinforce import ReinforceUpdate
from hil.optimizers.proxyless.supernet import GRAD_MODES, Supernet
from hil.optimizers.train import CheckpointError, cosine_lr, seed_everything

FORMAT = "hil-nas-search/1"
STATE_FILE = "search.safetensors"
ARCH_UPDATES = ("gradient", "reinforce")
DERIVATIONS = ("argmax", "target")


@dataclass(frozen=True)
class SearchConfig:
    epochs: int = 6
    warmup_epochs: int = 2
    # Share of the warm-up's weight steps that train the largest path before the other ops inherit
    # its weights; 0 is the public method's warm-up (uniform sampling from scratch).
    largest_first: float = 0.5
    batch_size: int = 64
    lr: float = 0.05  # weights: SGD + Nesterov, cosine over all weight steps
    momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = 1e-3  # α: Adam, β1 = 0 (the public code's setting)
    arch_every: int = 5  # one architecture step every K weight steps
    grad_mode: str = "full_v2"
    loss: str = "mul#log"
    target_ms: float = 1.0
    loss_alpha: float = 0.2
    loss_beta: float = 0.3
    loss_lambda: float = 0.1
    seed: int = 0
    steps_per_epoch: int | None = None  # cap, for quick runs
    eval_limit: int = 1000  # val images scoring the derived net after each epoch
    arch_update: str = "gradient"  # gradient: through binary gates; reinforce: policy gradient
    # REINFORCE only: networks sampled per step, baseline b <- decay·b + (1 − decay)·mean R, and the
    # exponent w of R = ACC × (LAT / target_ms)^w.
    rl_samples: int = 8
    rl_baseline_decay: float = 0.95
    rl_exponent: float = -0.07
    # How the final network is read from α (`derive`); it does not change the search, so a finished
    # search may be derived again with another rule.
    derive: str = "argmax"

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"need epochs >= 1 and 0 <= warm-up epochs <= epochs, got {self.epochs} "
                              f"and {self.warmup_epochs}")
        if not 0.0 <= self.largest_first <= 1.0:
            raise ConfigError(f"the largest-first share of the warm-up must be within 0..1, got {self.largest_first}")
        if self.batch_size < 1 or self.arch_every < 1:
            raise ConfigError("batch size and the architecture-step interval must be positive")
        if not (self.lr > 0 and self.arch_lr > 0):
            raise ConfigError("learning rates must be positive")
        if self.grad_mode not in GRAD_MODES:
            raise ConfigError(f"unknown gradient mode {self.grad_mode!r} (known: {', '.join(GRAD_MODES)})")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError("steps per epoch must be positive")
        self.latency_loss()  # validates the loss settings
        if self.arch_update not in ARCH_UPDATES:
            raise ConfigError(f"unknown architecture update {self.arch_update!r} (known: {', '.join(ARCH_UPDATES)})")
        if self.arch_update == "reinforce":
            self.reinforce()  # validates its settings
        if self.derive not in DERIVATIONS:
            raise ConfigError(f"unknown derivation {self.derive!r} (known: {', '.join(DERIVATIONS)})")

    def latency_loss(self) -> LatencyLoss:
        return LatencyLoss(self.loss, self.target_ms, self.loss_alpha, self.loss_beta, self.loss_lambda)

    def reinforce(self) -> ReinforceUpdate:
        return ReinforceUpdate(self.target_ms, self.rl_samples, self.rl_baseline_decay, self.rl_exponent)


@dataclass(frozen=True)
class EpochLog:
    epoch: int  # 1-based
    phase: str  # warmup | search
    train_loss: float
    train_acc: float
    arch_steps: int
    arch_loss: float | None
    expected_ms: float
    arch: list[str]
    arch_ms: float  # predicted latency of the argmax architecture
    val_acc: float | None  # the argmax architecture with the supernet's weights, BN statistics re-estimated
    alpha: dict[str, dict[str, float]]  # block -> op -> probability after this epoch
    train_s: float


@dataclass
class SearchResult:
    arch: tuple[str, ...]
    predicted_ms: float
    lut_sum_ms: float
    expected_ms: float
    history: list[EpochLog] = field(default_factory=list)
    resumed_from: int = 0


def _cycle(batches: Batches, start_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for e in itertools.count(start_epoch):
        yield from batches.epoch(e)


EVAL_BN_BATCHES = 4


@torch.no_grad()
def score_argmax_net(net: Supernet, data: DataSplits, device: torch.device, limit: int, seed: int) -> float | None:
    """Validation accuracy of the argmax network with the supernet's weights, its BN statistics first
    re-estimated on a few training batches: the running statistics an op gathered while sampled among
    others describe other networks' inputs, which scores subnetworks near chance (docs/NAS.md). The
    supernet's own buffers are put back afterwards, so an evaluation never changes the search."""
    if limit <= 0 or len(data.val) == 0:
        return None
    was = net.mode
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    net.set_mode("fixed")
    batches = [x.to(device) for x in calibration_batches(data.train, min(EVAL_BN_BATCHES, len(data.train) // 64),
                                                           64, seed)]
    recalibrate_bn(net, batches)
    net.eval()
    correct = n = 0
    for x, y in Batches(data.val.subset(limit), 250, device=device).epoch():
        correct += int((net(x).argmax(1) == y).sum())
        n += len(y)
    for k, v in net.named_buffers():
        v.copy_(buffers[k])
    net.train()
    net.set_mode(was)
    return correct / n


def search(
    net: Supernet,
    latency: SearchLatency,
    data: DataSplits,
    cfg: SearchConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    meta: dict[str, Any] | None = None,
    dist: Dist | None = None,
) -> SearchResult:
    """Search in place on `net` (seed before building it: its initial weights are the caller's).

    With a `dist` of several processes (every rank calls this alike) the weight steps run under
    DistributedDataParallel on each rank's share of the batch; every rank samples the same paths
    (the path generator is seeded from (seed, epoch) and drawn alike everywhere), and the
    architecture steps average α's gradients, which come from the gates outside autograd, by hand.
    Every rank reads the resume state (one shared path); rank 0 alone writes it and logs.
    """
    d = dist or Dist(device=torch.device(device))
    dev = d.device
    if cfg.batch_size % d.world:
        raise ConfigError(f"batch size {cfg.batch_size} does not split evenly over {d.world} processes")
    latency.check_target(cfg.target_ms)
    update = make_arch_update(cfg)
    net.to(dev).train()
    opt_w = torch.optim.SGD(_param_groups(net, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                            nesterov=cfg.momentum > 0)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=(0.0, 0.999), eps=1e-8)
    train_b = Batches(data.train, cfg.batch_size // d.world, shuffle=True, seed=cfg.seed, device=dev,
                      drop_last=len(data.train) >= cfg.batch_size, rank=d.rank, world=d.world)
    val_b = Batches(data.val, cfg.batch_size // d.world, shuffle=True, seed=cfg.seed + 1, device=dev,
                    drop_last=len(data.val) >= cfg.batch_size, rank=d.rank, world=d.world)
    if len(train_b) == 0 or (cfg.epochs > cfg.warmup_epochs and len(val_b) == 0):
        raise ConfigError("the search needs a non-empty training split and validation split")
    steps = len(train_b) if cfg.steps_per_epoch is None else min(len(train_b), cfg.steps_per_epoch)
    total = steps * cfg.epochs
    largest_steps = round(cfg.largest_first * cfg.warmup_epochs * steps)
    history: list[EpochLog] = []
    start = 0
    path = Path(out_dir) / STATE_FILE if out_dir is not None else None
    if path is not None and resume and path.exists():
        start, history = _load_state(path, net, opt_w, opt_a, cfg, meta or {}, update)
        if log and d.main:
            log(f"resuming {path} after epoch {start}/{cfg.epochs}")
    log = log if d.main else None
    progress = progress and d.main
    # Paths not sampled in a step get no gradient: DDP must look for them.
    weights_net = net if d.world == 1 else DistributedDataParallel(
        net, device_ids=[dev] if dev.type == "cuda" else None, find_unused_parameters=True)
    seed_everything(cfg.seed)
    gen = torch.Generator()
    net.set_generator(gen)
    criterion = nn.CrossEntropyLoss()

    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        gen.manual_seed(cfg.seed * 1_000_003 + epoch)
        searching = epoch >= cfg.warmup_epochs
        val_iter = _cycle(val_b, epoch * 1000)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev)
        seen = arch_steps = 0
        arch_loss_sum = 0.0
        bar = tqdm(total=steps, desc=f"{'search' if searching else 'warm-up'} {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=not progress, file=sys.stderr)
        for i, (x, y) in enumerate(itertools.islice(train_b.epoch(epoch), steps)):
            lr = cosine_lr(cfg.lr, epoch * steps + i, total)
            for g in opt_w.param_groups:
                g["lr"] = lr
            step = epoch * steps + i
            if step == largest_steps and step > 0:
                net.inherit_from_largest()
            net.set_mode("largest" if step < largest_steps else "weights")
            out = weights_net(x)
            loss = criterion(out, y)
            opt_w.zero_grad(set_to_none=True)
            loss.backward()
            opt_w.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if searching and (i + 1) % cfg.arch_every == 0:
                arch_loss_sum += update.step(net, latency, opt_a, next(val_iter), d)
                arch_steps += 1
            bar.update(1)
        bar.close()
        # The job's figures, and rank 0's BN statistics everywhere (each rank's came from its shard).
        totals = d.all_sum(torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=dev),
                                        torch.tensor(arch_loss_sum, device=dev)]))
        d.broadcast_buffers(net)
        seen = int(totals[2])
        loss_sum, correct, arch_loss_sum = totals[0], totals[1], float(totals[3]) / d.world
        net.set_mode("weights")
        with torch.no_grad():
            expected = float(latency.expected(net.probs()))
        arch = derive(net, latency, cfg.derive, cfg.target_ms)
        arch_ms, _ = latency.arch(arch)
        rec = EpochLog(
            epoch=epoch + 1, phase="search" if searching else "warmup",
            train_loss=float(loss_sum) / seen, train_acc=float(correct) / seen, arch_steps=arch_steps,
            arch_loss=arch_loss_sum / arch_steps if arch_steps else None, expected_ms=expected,
            arch=list(arch), arch_ms=arch_ms, val_acc=score_argmax_net(net, data, dev, cfg.eval_limit, cfg.seed),
            alpha=net.alpha_table(), train_s=time.perf_counter() - t0)
        history.append(rec)
        if path is not None and d.main:
            _save_state(path, net, opt_w, opt_a, cfg, history, meta or {}, update.state())
        if log:
            va = f", val acc (argmax net) {rec.val_acc:.3f}" if rec.val_acc is not None else ""
            log(f"epoch {rec.epoch}/{cfg.epochs} {rec.phase}: loss {rec.train_loss:.3f} acc {rec.train_acc:.3f}, "
                f"E[LAT] {expected:.4g} ms, argmax net {arch_ms:.4g} ms{va} ({rec.train_s:.1f} s)")
    d.barrier()  # rank 0's state is on disk when any rank returns
    arch = derive(net, latency, cfg.derive, cfg.target_ms)
    predicted, lut_sum = latency.arch(arch)
    with torch.no_grad():
        expected = float(latency.expected(net.probs()))
    return SearchResult(arch, predicted, lut_sum, expected, history, start)


class ArchUpdate(Protocol):
    """An architecture-update rule: one step of α on one held-out batch, and its state for resume."""

    def step(self, net: Supernet, latency: SearchLatency, opt: torch.optim.Optimizer,
             batch: tuple[torch.Tensor, torch.Tensor], dist: Dist | None = None) -> float: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


class GradientUpdate:
    """The binary-gate gradient of the latency loss (`arch_step`); no state beyond the optimizer's."""

    def __init__(self, loss_fn: LatencyLoss, grad_mode: str) -> None:
        self.loss_fn = loss_fn
        self.grad_mode = grad_mode

    def step(self, net: Supernet, latency: SearchLatency, opt: torch.optim.Optimizer,
             batch: tuple[torch.Tensor, torch.Tensor], dist: Dist | None = None) -> float:
        return arch_step(net, latency, self.loss_fn, opt, batch, self.grad_mode, dist)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def derive(net: Supernet, latency: SearchLatency, rule: str, target_ms: float) -> tuple[str, ...]:
    """The final network. "argmax" (the paper's): every block's likeliest op, `zero` included.

    "target" (ours): argmax lets `zero` win a block with p ≈ 0.25 against six ops of ≈ 0.12, so a search
    whose E[LAT] sits at the target derives a net far below it. This rule decides skip-or-keep first: a
    block is skipped when p(zero) > 1/2; a kept block takes its likeliest MBConv op; then, while the
    prediction is above the target, the kept skippable block with the largest p(zero) is skipped.
    """
    if rule == "argmax":
        return net.derive()
    if rule != "target":
        raise ConfigError(f"unknown derivation {rule!r} (known: {', '.join(DERIVATIONS)})")
    arch: list[str] = []
    kept: list[tuple[float, int]] = []  # (p(zero), block) of the skippable blocks kept
    for b, (_, m) in enumerate(net.mixed_ops()):
        p = m.probs().detach().cpu()
        ops = [i for i, op in enumerate(m.choices) if op != "zero"]
        best = m.choices[max(ops, key=lambda i: float(p[i]))]
        if "zero" not in m.choices:
            arch.append(best)
            continue
        p_zero = float(p[m.choices.index("zero")])
        arch.append("zero" if p_zero > 0.5 else best)
        if p_zero <= 0.5:
            kept.append((p_zero, b))
    for _, b in sorted(kept, reverse=True):
        if latency.arch(arch)[0] <= target_ms:
            break
        arch[b] = "zero"
    return tuple(arch)


def make_arch_update(cfg: SearchConfig) -> ArchUpdate:
    if cfg.arch_update == "reinforce":
        return cfg.reinforce()
    return GradientUpdate(cfg.latency_loss(), cfg.grad_mode)


def arch_step(net: Supernet, latency: SearchLatency, loss_fn: LatencyLoss, opt: torch.optim.Optimizer,
              batch: tuple[torch.Tensor, torch.Tensor], grad_mode: str, dist: Dist | None = None) -> float:
    """One architecture update on one held-out batch (this rank's share of it); returns its loss.

    Runs on the plain module, not through DDP: α's gradient is added from the gates after the
    backward, so it is averaged over the ranks here, to the gradient of the whole batch's mean.
    """
    x, y = batch
    net.set_mode(grad_mode)
    ce = nn.functional.cross_entropy(net(x), y)
    loss = loss_fn(ce, latency.expected(net.probs()))
    opt.zero_grad(set_to_none=True)
    # Weights do not move in this step; their gradients are dropped by the next weight step.
    loss.backward()
    net.alpha_grads_from_gates()
    if dist is not None and dist.world > 1:
        for a in net.arch_parameters():
            if a.grad is not None:
                dist.all_sum(a.grad).div_(dist.world)
    old = [a.detach().clone() for a in net.arch_parameters()]
    opt.step()
    net.rescale_after_step(old)
    net.set_mode("weights")
    return float(loss.detach())


def _param_groups(net: Supernet, weight_decay: float) -> list[dict[str, Any]]:
    ws = net.weight_parameters()
    return [{"params": [p for p in ws if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in ws if p.ndim <= 1], "weight_decay": 0.0}]


# ---- checkpoint: tensors in safetensors, everything else as JSON in its metadata ------------------

def _optimizer_tensors(prefix: str, opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            out[f"{prefix}.{names[id(p)]}.{k}"] = t.detach().cpu().contiguous()
    return out


def _load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    params: dict[str, nn.Parameter]) -> None:
    for key, t in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        pname, _, k = key[len(prefix) + 1:].rpartition(".")
        p = params[pname]
        opt.state[p][k] = t.to(p.device) if k != "step" or t.ndim else t.clone()


def _save_state(path: Path, net: Supernet, opt_w: torch.optim.Optimizer, opt_a: torch.optim.Optimizer,
                cfg: SearchConfig, history: list[EpochLog], meta: dict[str, Any],
                update_state: dict[str, Any] | None = None) -> None:
    names = {id(p): n for n, p in net.named_parameters()}
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors |= _optimizer_tensors("opt_w", opt_w, names) | _optimizer_tensors("opt_a", opt_a, names)
    info = {"format": FORMAT, "config": asdict(cfg), "epoch": len(history),
            "history": [asdict(h) for h in history], "meta": meta}
    if update_state:  # absent for the gradient rule, whose state files stay as they were
        info["arch_update_state"] = update_state
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "hil": json.dumps(info, sort_keys=True)})
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"cannot write search state {path}: {e.strerror or e}") from None


def read_state_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a hil search state ({FORMAT})")
        return json.loads(header["hil"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read search state {path}: {e}") from None


# What a state written before a setting existed was searched with.
_BEFORE_THE_SETTING: dict[str, Any] = {"largest_first": 0.0}


def _load_state(path: Path, net: Supernet, opt_w: torch.optim.Optimizer, opt_a: torch.optim.Optimizer,
                cfg: SearchConfig, meta: dict[str, Any],
                update: ArchUpdate | None = None) -> tuple[int, list[EpochLog]]:
    info = read_state_info(path)
    saved, now = info["config"], asdict(cfg)
    # A setting added since the state was written had its default then, except where the behaviour
    # before the setting existed is not today's default.
    defaults = {f.name: f.default for f in fields(SearchConfig)} | _BEFORE_THE_SETTING
    # More epochs may be added to a finished search, and it may be derived again; anything else must match.
    diff = [k for k in now if k not in ("epochs", "derive") and saved.get(k, defaults[k]) != now[k]]
    diff += [f"meta.{k}" for k in meta if info.get("meta", {}).get(k) != meta[k]]
    if diff:
        k = diff[0]
        was = info["meta"].get(k[5:]) if k.startswith("meta.") else saved.get(k, defaults[k])
        is_ = meta[k[5:]] if k.startswith("meta.") else now[k]
        raise CheckpointError(f"{path} was searched with {k}={was!r}, this run has {is_!r}; use the same "
                              "settings, another --out, or --no-resume")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read search state {path}: {e}") from None
    state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this supernet: {str(e).splitlines()[0]}") from None
    params = dict(net.named_parameters())
    _load_optimizer("opt_w", opt_w, tensors, params)
    _load_optimizer("opt_a", opt_a, tensors, params)
    if update is not None:
        update.load_state(info.get("arch_update_state", {}))
    history = [EpochLog(**h) for h in info["history"]]
    return int(info["epoch"]), history
