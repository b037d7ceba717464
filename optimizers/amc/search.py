"""An AMC search end to end, resumable; fine-tuning and exporting its pruned model.

Output folder (`out`):
  config.json             the search's settings (a rerun must match, except the episode count)
  pretrained.safetensors  the model trained here when no --checkpoint was given
  agent/                  the shared DDPG agent after the last finished episode (safetensors + JSON)
  search.jsonl            one line per finished episode: channels kept, cost, FLOPs, accuracy, reward
  amc.safetensors         the best policy's pruned model (no fine-tune), its rebuilding config in the
                          JSON metadata (model, options with the kept channels, every layer's workload)
  policy.json             per group and per layer: channels kept; FLOPs, predicted latency and
                          speedup on the device; accuracies
  policy.png              kept ratio per layer (the paper's "pruning policy" figure)

An interrupted search reruns from the last finished episode: the agent (with its replay buffer and
random generators) and the log are written after every episode, the log first; lines beyond the
agent's episode count are dropped on resume.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hil.errors import ConfigError
from hil.inventory import Inventory
from hil.measure import MeasureSettings
from hil.nets.models import Layer, ModelSpec, SpecNet, make_model
from hil.optimizers.amc.env import REWARDS, AmcEnv, Budget, Cost, EnvConfig, FlopsCost, LatencyCost
from hil.optimizers.amc.plots import plot_policy
from hil.optimizers.amc.prune import ChannelGraph
from hil.optimizers.amc.reconstruct import reconstruct
from hil.optimizers.data import DataSplits, fashion_mnist
from hil.optimizers.dist import Dist
from hil.optimizers.rl.ddpg import DDPGAgent, DDPGConfig, Transition
from hil.optimizers.train import (
    CheckpointError,
    TrainConfig,
    evaluate,
    finetune,
    load_model,
    model_meta,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)
from hil.store import Store
from hil.workload import workload_from_json

POLICY_FORMAT = "hil-amc-policy/1"
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchConfig:
    model: str = "mobilenet-v1"
    width: float = 1.0
    input_size: int = 32
    arch: str | None = None  # a ProxylessNAS architecture, for --model proxyless
    device: str = "local-cpu"
    budget: str = "flops=0.5"
    episodes: int = 400
    warmup: int = 100  # AMC: 100 warm-up episodes of random actions
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    divisor: int = 8
    min_ratio: float = 0.2
    reward: str = "acc"
    # BN recalibration on this many training batches before scoring (bn.py; docs/AMC.md for why 4 and
    # not the paper's 0, which stays available)
    bn_batches: int = 4
    reconstruct: bool = False
    reconstruct_batches: int = 4
    batch_size: int = 128
    seed: int = 0
    split_seed: int = 0
    val_size: int = 5000
    val_limit: int | None = 1000  # held-out images scored per episode
    train_limit: int | None = None
    test_limit: int | None = None
    checkpoint: str | None = None  # a trained model from `hil train`; else one is trained here
    pretrain_batches: int = 400
    clock: str | None = None  # the measurement clock: the device's (None), 'wall' or 'thread'

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be positive, got {self.episodes}")
        for name in ("warmup", "pretrain_batches", "reconstruct_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.reward not in REWARDS:
            raise ConfigError(f"--reward {self.reward!r} is not one of {', '.join(REWARDS)}")
        if not self.noise_sigma >= 0 or not 0 < self.noise_decay <= 1:
            raise ConfigError("--noise-sigma must be >= 0 and --noise-decay within (0, 1]")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        self.env_config()
        Budget.parse(self.budget)

    def env_config(self) -> EnvConfig:
        return EnvConfig(self.divisor, self.min_ratio, self.reward, bn_batches=self.bn_batches,
                         bn_batch_size=self.batch_size, bn_seed=self.seed)

    def model_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"width": self.width, "input_size": self.input_size}
        if self.arch:
            opts["arch"] = self.arch
        return opts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Settings a resumed search may change: they don't alter the episodes already run.
RESUMABLE = {"episodes", "test_limit", "reconstruct", "reconstruct_batches"}
# Settings added after searches were already written, with the value those searches ran with: a
# config.json without the key resumes only with that value.
ADDED = {"bn_batches": 0}


@dataclass
class Setup:
    cfg: SearchConfig
    spec: ModelSpec
    model: nn.Module
    data: DataSplits
    env: AmcEnv
    latency: LatencyCost
    pretrain: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.latency.close()


def _log_to(log: Callable[[str], None] | None, msg: str) -> None:
    if log:
        log(msg)


def prepare(cfg: SearchConfig, out: Path, store: Store, inventory: Inventory, *,
            protocol: MeasureSettings | None = None, log: Callable[[str], None] | None = None) -> Setup:
    """The trained model (loaded or trained here), data, the device's LUT costs and the env."""
    # an unknown device fails here, before any training
    latency = LatencyCost(store, inventory, cfg.device, protocol, log=log, clock=cfg.clock)
    budget = Budget.parse(cfg.budget)
    out.mkdir(parents=True, exist_ok=True)
    split_seed, val_size = cfg.split_seed, cfg.val_size
    pretrain: dict[str, Any] = {}
    if cfg.checkpoint:
        model, spec, meta = load_model(cfg.checkpoint, device="cpu")
        if spec.name != cfg.model:
            raise ConfigError(f"checkpoint {cfg.checkpoint} holds a {spec.name}, not the {cfg.model} asked for")
        split = meta.get("data", {})
        split_seed, val_size = split.get("split_seed", split_seed), split.get("val_size", val_size)
        pretrain = {"checkpoint": cfg.checkpoint, "val_acc": meta.get("val_acc"), "test_acc": meta.get("test_acc")}
    else:
        spec = make_model(cfg.model, **cfg.model_options())
        model = spec.build()
    data = fashion_mnist(val_size=val_size, seed=split_seed, size=spec.options["input_size"],
                         train_limit=cfg.train_limit, val_limit=cfg.val_limit, test_limit=cfg.test_limit)
    if not cfg.checkpoint:
        path = out / "pretrained.safetensors"
        if path.exists():
            tensors, meta = read_checkpoint(path)
            if meta.get("model") != spec.name or meta.get("options") != json.loads(json.dumps(spec.options)):
                raise ConfigError(f"{path} holds a trained {meta.get('model')} {meta.get('options')}, not this "
                                  f"{spec.name} {spec.options}; use another --out")
            model.load_state_dict(tensors)
        else:
            _log_to(log, f"training {spec.name} for {cfg.pretrain_batches} batches (no --checkpoint given)")
            seed_everything(cfg.seed)
            model = spec.build()
            t0 = time.perf_counter()
            train(model, data, TrainConfig(epochs=1, steps_per_epoch=max(1, cfg.pretrain_batches),
                                           batch_size=cfg.batch_size, lr=0.1, seed=cfg.seed, deterministic=False,
                                           channels_last=False), device="cpu", validate=False)
            acc = evaluate(model, data.val, device="cpu", channels_last=False).accuracy
            meta = {**model_meta(spec), "val_acc": acc, "pretrain_batches": cfg.pretrain_batches,
                    "train_s": time.perf_counter() - t0,
                    "data": {"split_seed": split_seed, "val_size": val_size}}
            save_checkpoint(path, model, meta)
        pretrain = {"checkpoint": str(path), "val_acc": meta.get("val_acc")}
    model.to("cpu").eval()
    cost: Cost = latency if budget.kind == "latency" else FlopsCost()
    try:
        env = AmcEnv(spec, model, cost, budget, data.val, cfg.env_config(), train=data.train)
    except BaseException:
        latency.close()
        raise
    return Setup(cfg, spec, model, data, env, latency, pretrain)


def _check_resume(cfg: SearchConfig, out: Path) -> None:
    path = out / "config.json"
    # only episodes already run bind the settings: a search refused before its first episode (an
    # infeasible budget, say) may be rerun in the same folder with others
    if path.exists() and (out / "agent" / "agent.json").exists():
        saved = json.loads(path.read_text())
        now = json.loads(json.dumps(cfg.to_json()))
        for k in now:
            was = saved.get(k, ADDED.get(k))
            if k not in RESUMABLE and was != now[k]:
                raise ConfigError(f"{out} holds a search with {k}={was!r}, this run has {now[k]!r}; "
                                  "use the same settings to resume, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_json(), indent=1))


def _read_log(path: Path, keep: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()][:keep]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))  # drop an episode the agent never saw
    return lines


def agent_config(cfg: SearchConfig, steps: int) -> DDPGConfig:
    return DDPGConfig(warmup_episodes=cfg.warmup, noise_sigma=cfg.noise_sigma, noise_decay=cfg.noise_decay,
                      seed=cfg.seed, action_low=cfg.min_ratio, action_high=1.0,
                      replay_size=max(64, 128 * steps))


def run_episode(env: AmcEnv, agent: DDPGAgent, explore: bool = True) -> tuple[dict[str, int], list[Transition], int]:
    """One pass over the groups: the agent's kept fractions through the rounding and the wall."""
    keep: dict[str, int] = {}
    states, actions = [], []
    prev, clipped = 0.0, 0
    for i, g in enumerate(env.groups):
        s = env.state(i, keep, prev)
        a = agent.act(s, explore=explore)
        n, was_clipped = env.act(keep, i, a)
        clipped += int(was_clipped)
        # the replay holds the action actually taken (after rounding and the wall), as AMC's code does
        taken = min(max(n / g.channels, agent.cfg.action_low), agent.cfg.action_high)
        states.append(s)
        actions.append(taken)
        prev = taken
    steps = [Transition(states[i], actions[i], states[i + 1] if i + 1 < len(states) else states[i],
                        i + 1 == len(states)) for i in range(len(states))]
    return keep, steps, clipped


def search(cfg: SearchConfig, out: str | os.PathLike[str], store: Store, inventory: Inventory, *,
           protocol: MeasureSettings | None = None, progress: Progress | None = None,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the search; then prune the best policy, save it, report and plot it."""
    out = Path(out)
    _check_resume(cfg, out)
    t_start = time.perf_counter()
    setup = prepare(cfg, out, store, inventory, protocol=protocol, log=log)
    env = setup.env
    try:
        dcfg = agent_config(cfg, env.steps)
        agent_dir = out / "agent"
        agent = (DDPGAgent.load(agent_dir, dcfg) if (agent_dir / "agent.json").exists()
                 else DDPGAgent(env.state_dim, dcfg))
        log_path = out / "search.jsonl"
        history = _read_log(log_path, agent.episode)
        if agent.episode:
            _log_to(log, f"resuming {out} after episode {agent.episode}/{cfg.episodes}")
        for ep in range(agent.episode, cfg.episodes):
            t0 = time.perf_counter()
            keep, steps, clipped = run_episode(env, agent)
            t_act = time.perf_counter() - t0
            res = env.finish(keep, clipped)
            t1 = time.perf_counter()
            info = agent.end_episode(steps, res.reward)
            entry = {"episode": ep + 1, "reward": res.reward, "accuracy": res.accuracy, "cost": res.cost,
                     "target": res.target, "flops": res.flops, "clipped": res.clipped, "sigma": info["sigma"],
                     "warmup": info["warmup"], "keep": res.keep,
                     "timings": {**res.timings, "act_s": t_act, "agent_s": time.perf_counter() - t1,
                                 "episode_s": time.perf_counter() - t0}}
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            agent.save(agent_dir)
            history.append(entry)
            if progress:
                progress(entry)
        best = max(history, key=lambda e: (e["reward"], -e["cost"]))
        report = finish(setup, {k: int(v) for k, v in best["keep"].items()}, out, log=log)
        report["search"] = {"episodes": len(history), "best_episode": best["episode"],
                            "best_reward": best["reward"], "reference_accuracy": env.reference_accuracy,
                            "wall_s": time.perf_counter() - t_start, "log": str(log_path),
                            "lut_entries_measured_here": setup.latency.measured,
                            "lut_measure_s": setup.latency.measure_s}
        (out / "policy.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        setup.close()


def finish(setup: Setup, keep: dict[str, int], out: Path, log: Callable[[str], None] | None = None
           ) -> dict[str, Any]:
    """Prune the trained model to `keep`, optionally reconstruct, save the checkpoint; the report."""
    cfg, env = setup.cfg, setup.env
    pruned, pspec = env.graph.prune(setup.model, keep)
    if cfg.reconstruct:
        _log_to(log, f"least-squares reconstruction on {cfg.reconstruct_batches} batches")
        reconstruct(env.graph, setup.model, pruned, pspec, keep, setup.data.train, cfg.reconstruct_batches,
                    cfg.batch_size, cfg.seed)
    env.recalibrate(pruned)  # after reconstruction: the saved model is scored as the episodes were
    val = env.accuracy(pruned)
    test = evaluate(pruned, setup.data.test, device="cpu", channels_last=False).accuracy
    ckpt = out / "amc.safetensors"
    save_pruned(ckpt, pruned, pspec, {"device": cfg.device, "budget": cfg.budget, "keep": keep,
                                      "reconstructed": cfg.reconstruct},
                {"val_acc": val, "test_acc": test,
                 "data": {"split_seed": setup.data.seed, "val_size": setup.data.val_size}})
    report = policy_report(setup.spec, pspec, env.graph, keep, setup.latency)
    report.update({
        "format": POLICY_FORMAT, "budget": cfg.budget, "budget_kind": env.budget.kind, "budget_target": env.target,
        "full_cost": env.full_cost, "min_cost": env.min_cost,
        "accuracy": {"reference_val": env.reference_accuracy, "val_no_finetune": val, "test_no_finetune": test,
                     "val_images": len(setup.data.val), "test_images": len(setup.data.test)},
        "checkpoint": str(ckpt), "pretrained": setup.pretrain, "config": cfg.to_json(),
    })
    title = f"{setup.spec.name} {cfg.budget} on {cfg.device}"
    report["plots"] = {"policy": str(plot_policy([(cfg.budget, report["layers"])], out / "policy.png", title))}
    return report


def policy_report(spec: ModelSpec, pspec: ModelSpec, graph: ChannelGraph, keep: dict[str, int],
                  latency: LatencyCost) -> dict[str, Any]:
    """Channels kept per group and per conv; FLOPs; LUT-predicted latency and speedup on the device."""
    full_ms, pruned_ms = latency(spec), latency(pspec)
    units = {u.name: u for u in pspec.convs()}
    layers = [{"name": u.name, "kind": u.kind, "channels": u.cout, "kept": units[u.name].cout,
               "kept_ratio": units[u.name].cout / u.cout, "macs": units[u.name].macs, "full_macs": u.macs}
              for u in spec.convs() if u.kind != "fc"]
    groups = [{"name": g.name, "channels": g.channels, "kept": keep.get(g.name, g.channels),
               "residual": g.residual, "producers": g.producers} for g in graph.prunable()]
    return {"model": spec.name, "options": spec.options, "device": latency.device, "groups": groups,
            "layers": layers, "flops": {"full": spec.macs, "pruned": pspec.macs, "ratio": pspec.macs / spec.macs},
            "params": {"full": spec.params, "pruned": pspec.params},
            "predicted": {"full_ms": full_ms, "pruned_ms": pruned_ms, "speedup": full_ms / pruned_ms,
                          "fingerprint_class": latency.fp_class}}


# --------------------------------------------------------------------------- pruned checkpoints
def save_pruned(path: Path, model: nn.Module, spec: ModelSpec, amc: dict[str, Any], extra: dict[str, Any]) -> None:
    """Safetensors weights; JSON metadata that rebuilds the pruned model exactly: the base model's name
    and options, the channels kept per group, and every layer's workload."""
    meta = {**model_meta(spec), **extra, "amc": {**amc, "layers": [
        {"name": layer.name, "workload": layer.workload.to_json()} for layer in spec.layers]}}
    save_checkpoint(path, model, meta)


def load_pruned(path: str | os.PathLike[str]) -> tuple[SpecNet, ModelSpec, dict[str, Any]]:
    """A checkpoint written by `save_pruned` (or an unpruned one from `hil train`) as a model."""
    tensors, meta = read_checkpoint(path)
    if "model" not in meta or not isinstance(meta.get("options"), dict):
        raise CheckpointError(f"checkpoint {path} does not name its model")
    options = dict(meta["options"])
    channels = options.pop("channels", None)
    base = make_model(meta["model"], **options)
    spec = ChannelGraph(base).apply(channels) if channels else base
    recorded = meta.get("amc", {}).get("layers")
    if recorded is not None:
        layers = tuple(Layer(x["name"], workload_from_json(x["workload"])) for x in recorded)
        if layers != spec.layers:
            raise CheckpointError(f"checkpoint {path}: its layers do not match its model options and channels")
    model = spec.build()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit its pruned model: {str(e).splitlines()[0]}") from None
    return model.eval(), spec, meta


def finetune_pruned(path: str | os.PathLike[str], out: str | os.PathLike[str], *, batches: int, lr: float = 0.01,
                    batch_size: int = 128, seed: int = 0, train_limit: int | None = None,
                    val_limit: int | None = None, test_limit: int | None = None,
                    log: Callable[[str], None] | None = None, dist: Dist | None = None) -> dict[str, Any] | None:
    """Fine-tune a pruned checkpoint on the training split (its own train/val split), score it.

    With a `dist` of several processes every rank fine-tunes its share of each batch and rank 0
    alone scores, writes `out` and returns the report (None on the other ranks).
    """
    if batches < 1:
        raise ConfigError(f"--batches must be positive, got {batches}")
    d = dist or Dist.single("cpu")
    model, spec, meta = load_pruned(path)
    split = meta.get("data", {})
    data = fashion_mnist(val_size=split.get("val_size", 5000), seed=split.get("split_seed", 0),
                         size=spec.options["input_size"], train_limit=train_limit, val_limit=val_limit,
                         test_limit=test_limit)
    before = evaluate(model, data.val, device=d.device, channels_last=False).accuracy if d.main else None
    if d.main:
        _log_to(log, f"fine-tuning {path} for {batches} batches" + (f" in {d.world} processes" if d.world > 1 else ""))
    t0 = time.perf_counter()
    finetune(model, data, epochs=1, lr=lr, steps_per_epoch=batches, batch_size=batch_size, seed=seed,
             validate=False, dist=d, channels_last=False, deterministic=False)
    train_s = time.perf_counter() - t0
    if not d.main:
        return None
    val = evaluate(model, data.val, device=d.device, channels_last=False).accuracy
    test = evaluate(model, data.test, device=d.device, channels_last=False).accuracy
    out = Path(out)
    new_meta = {k: v for k, v in meta.items() if k not in ("val_acc", "test_acc")}
    new_meta.update({"val_acc": val, "test_acc": test, "finetune": {"from": str(path), "batches": batches, "lr": lr}})
    save_checkpoint(out, model, new_meta)
    return {"checkpoint": str(out), "from": str(path), "model": spec.name, "macs": spec.macs, "batches": batches,
            "val_before": before, "val_after": val, "test_after": test, "train_s": train_s, "world": d.world,
            "val_images": len(data.val), "test_images": len(data.test)}


def measure_speedup(path: str | os.PathLike[str], device: str, store: Store, inventory: Inventory, *,
                    protocol: MeasureSettings | None = None, clock: str | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A pruned checkpoint's predicted (LUT) and measured speedup over its unpruned model on a device
    (hil.speedup: both whole networks timed end to end in one session)."""
    _, spec, meta = load_pruned(path)
    options = {k: v for k, v in spec.options.items() if k != "channels"}
    base = make_model(spec.name, **options)
    lat = LatencyCost(store, inventory, device, protocol, log=log, clock=clock)
    try:
        s = lat.speedup(base, spec)
        fp = lat.fp_class
    finally:
        lat.close()
    return {"checkpoint": str(path), "model": spec.name, "device": device, "macs": {"full": base.macs,
            "pruned": spec.macs}, "predicted": {"full_ms": s.base.predicted_ms, "pruned_ms": s.candidate.predicted_ms,
            "speedup": s.predicted}, "measured": {"full_ms": s.base.measured_ms, "pruned_ms": s.candidate.measured_ms,
            "speedup": s.measured, "session": s.session}, "error": s.error,
            "fingerprint_class": fp, "amc": {k: v for k, v in meta.get("amc", {}).items() if k != "layers"}}


def plot_policies(paths: list[str], out: str | os.PathLike[str]) -> Path:
    """Several searches' kept ratios per layer (e.g. the FLOPs- and the latency-budgeted policy)."""
    series, title = [], ""
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:  # ValueError: not JSON, or not even text
            raise ConfigError(f"cannot read policy {p}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
            raise ConfigError(f"{p} is not an AMC policy ({POLICY_FORMAT})")
        bn = data.get("config", {}).get("bn_batches")  # absent in policies written before the option
        label = f"{data['budget']} on {data['device']}" + ("" if bn is None else f", {bn} BN batches")
        series.append((label, data["layers"]))
        title = f"{data['model']} {data['options'].get('width', '')}"
    names = [[x["name"] for x in s[1]] for s in series]
    if any(n != names[0] for n in names):
        raise ConfigError("the policies prune different models; plot policies of one model together")
    return plot_policy(series, Path(out), f"AMC pruning policies: {title}")
