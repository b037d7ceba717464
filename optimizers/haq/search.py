"""A HAQ search end to end, resumable, and the fixed-bits baseline with the same fine-tune.

Output folder (`out`):
  config.json         the search's settings (a rerun must match, except the episode count)
  pretrained.safetensors  the float model trained here when no --checkpoint was given
  agent/              the DDPG agent after the last finished episode (safetensors + JSON)
  search.jsonl        one line per finished episode: bits, cost, accuracy, reward, timings
  haq.safetensors     the final quantized, fine-tuned model (policy, clips and data split in it;
                      `hil haq finetune` fine-tunes it further, in N processes)
  policy.json         per layer: name, kind, w/a bits, predicted latency and energy; accuracies;
                      predicted vs whole-network simulated latency and energy
  bits.png, roofline.png  the paper's Fig. 3 and Fig. 4 shapes

An interrupted search reruns from the last finished episode: the agent (with its replay buffer and
random generators) and the log are both written after every episode, the log first; lines beyond
the agent's episode count are dropped on resume.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from hil.errors import ConfigError
from hil.inventory import Inventory
from hil.measure import Measurement
from hil.nets.models import ModelSpec, make_model
from hil.optimizers.data import Batches, DataSplits, fashion_mnist
from hil.optimizers.haq.env import Budget, CostModel, EnvConfig, HaqEnv, simulated_cost
from hil.optimizers.haq.finetune import CHECKPOINT, FinetuneConfig, finetune_quantized, haq_meta, load_quantized
from hil.optimizers.haq.plots import plot_bits, plot_roofline
from hil.optimizers.haq.quantize import Policy, QuantizedModel, QuantOptions, check_bits, quantize
from hil.optimizers.rl.ddpg import DDPGAgent, DDPGConfig, Transition
from hil.optimizers.train import (
    TrainConfig,
    evaluate,
    load_model,
    model_meta,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)
from hil.store import Store

POLICY_FORMAT = "hil-haq-policy/1"
MODELS = ("mobilenet-v1", "mobilenet-v2")
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchConfig:
    model: str = "mobilenet-v2"
    width: float = 1.0
    input_size: int = 32
    device: str = "bismo-edge"
    budget: str = "latency=0.5"
    episodes: int = 600
    warmup: int = 20  # HAQ's code: 20 warm-up episodes of random actions
    noise_decay: float = 0.99  # HAQ's code
    finetune_batches: int = 10
    final_finetune_batches: int = 300
    finetune_lr: float = 0.01
    batch_size: int = 128
    min_bits: int = 1
    max_bits: int = 8
    seed: int = 0  # agent, fine-tune order, pretraining
    split_seed: int = 0  # train/val split; a --checkpoint's own split wins (its val must stay unseen)
    val_size: int = 5000
    val_limit: int | None = 2000
    train_limit: int | None = None
    test_limit: int | None = None
    checkpoint: str | None = None  # a float model from `hil train`; else one is trained here
    pretrain_batches: int = 400
    first_weight_bits: int | None = 8
    quantize_first_input: bool = False
    classifier_bits: tuple[int, int] | None = (8, 8)
    calibration_batches: int = 4

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r} for HAQ (known: {', '.join(MODELS)})")
        check_bits(self.min_bits, "--min-bits")
        check_bits(self.max_bits, "--max-bits")
        if self.min_bits > self.max_bits:
            raise ConfigError(f"--min-bits {self.min_bits} exceeds --max-bits {self.max_bits}")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be positive, got {self.episodes}")
        for name in ("finetune_batches", "final_finetune_batches", "pretrain_batches", "warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        Budget.parse(self.budget)

    def quant_options(self) -> QuantOptions:
        return QuantOptions(self.first_weight_bits, self.quantize_first_input,
                            tuple(self.classifier_bits) if self.classifier_bits else None)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Settings a resumed search may change: they don't alter the episodes already run.
RESUMABLE = {"episodes", "final_finetune_batches", "test_limit"}


@dataclass
class Setup:
    """What a search, a fixed baseline and an evaluation share."""

    cfg: SearchConfig
    spec: ModelSpec
    data: DataSplits
    qmodel: QuantizedModel
    costs: CostModel
    env: HaqEnv
    pretrain: dict[str, Any] = field(default_factory=dict)


def _log_to(log: Callable[[str], None] | None, msg: str) -> None:
    if log:
        log(msg)


def prepare(cfg: SearchConfig, out: Path, store: Store, inventory: Inventory,
            log: Callable[[str], None] | None = None) -> Setup:
    """Model (trained or loaded), data, quantizer with calibrated clips, LUT costs and the env."""
    inventory.device(cfg.device)  # an unknown device: one clear line before any training
    budget = Budget.parse(cfg.budget)
    out.mkdir(parents=True, exist_ok=True)
    pretrain: dict[str, Any] = {}
    split_seed, val_size = cfg.split_seed, cfg.val_size
    if cfg.checkpoint:
        model, spec, meta = load_model(cfg.checkpoint, device="cpu")
        if spec.name != cfg.model:
            raise ConfigError(f"checkpoint {cfg.checkpoint} holds a {spec.name}, not the {cfg.model} asked for")
        split = meta.get("data", {})
        split_seed, val_size = split.get("split_seed", split_seed), split.get("val_size", val_size)
        pretrain = {"checkpoint": cfg.checkpoint, "test_acc": meta.get("test_acc"), "val_acc": meta.get("val_acc"),
                    "split_seed": split_seed}
    else:
        spec = make_model(cfg.model, width=cfg.width, input_size=cfg.input_size)
        model = spec.build()
    data = fashion_mnist(val_size=val_size, seed=split_seed, size=spec.options["input_size"],
                         train_limit=cfg.train_limit, val_limit=cfg.val_limit, test_limit=cfg.test_limit)
    if not cfg.checkpoint:
        path = out / "pretrained.safetensors"
        if path.exists():
            tensors, meta = read_checkpoint(path)
            model.load_state_dict(tensors)
        else:
            _log_to(log, f"training a float {spec.name} for {cfg.pretrain_batches} batches (no --checkpoint given)")
            seed_everything(cfg.seed)
            model = spec.build()
            t0 = time.perf_counter()
            train(model, data, TrainConfig(epochs=1, steps_per_epoch=max(1, cfg.pretrain_batches),
                                           batch_size=cfg.batch_size, lr=0.1, seed=cfg.seed, deterministic=False,
                                           channels_last=False), device="cpu", validate=False)
            acc = evaluate(model, data.val, device="cpu", channels_last=False).accuracy
            meta = {**model_meta(spec), "val_acc": acc, "pretrain_batches": cfg.pretrain_batches,
                    "train_s": time.perf_counter() - t0}
            save_checkpoint(path, model, meta)
        pretrain = {"checkpoint": str(path), "val_acc": meta.get("val_acc")}
    model.to("cpu")
    qmodel = quantize(spec, model, cfg.quant_options())
    cal = Batches(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    qmodel.calibrate(x for i, (x, _) in zip(range(cfg.calibration_batches), cal.epoch(0), strict=False))
    costs = CostModel(store, inventory, cfg.device, spec.convs(), log=log)
    costs.prefetch(range(cfg.min_bits, cfg.max_bits + 1), qmodel.fixed())
    env_cfg = EnvConfig(cfg.min_bits, cfg.max_bits, cfg.finetune_batches, cfg.finetune_lr, cfg.batch_size,
                        seed=cfg.seed)
    env = HaqEnv(qmodel, costs, budget, data, env_cfg)
    return Setup(cfg, spec, data, qmodel, costs, env, pretrain)


def _check_resume(cfg: SearchConfig, out: Path) -> None:
    """A folder with episodes done takes only the same settings; one without (a start that failed on
    bad input, say) takes the new ones."""
    path = out / "config.json"
    if path.exists() and (out / "agent" / "agent.json").exists():
        saved = json.loads(path.read_text())
        now = json.loads(json.dumps(cfg.to_json()))
        for k in now:
            if k not in RESUMABLE and saved.get(k) != now[k]:
                raise ConfigError(f"{out} holds a search with {k}={saved.get(k)!r}, this run has {now[k]!r}; "
                                  "use the same settings to resume, or another --out")
    path.write_text(json.dumps(cfg.to_json(), indent=1))


def _read_log(path: Path, keep: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    lines = lines[:keep]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))  # drop an episode the agent never saw
    return lines


def search(cfg: SearchConfig, out: str | os.PathLike[str], store: Store, inventory: Inventory, *,
           progress: Progress | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the search, then the final fine-tune, network simulation, JSON and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(cfg, out)
    t_start = time.perf_counter()
    setup = prepare(cfg, out, store, inventory, log)
    env = setup.env
    try:
        dcfg = DDPGConfig(warmup_episodes=cfg.warmup, noise_decay=cfg.noise_decay, seed=cfg.seed,
                          replay_size=max(64, 128 * len(env.steps)))
        agent_dir = out / "agent"
        agent = (DDPGAgent.load(agent_dir, dcfg) if (agent_dir / "agent.json").exists()
                 else DDPGAgent(env.state_dim, dcfg))
        log_path = out / "search.jsonl"
        history = _read_log(log_path, agent.episode)
        if agent.episode:
            _log_to(log, f"resuming {out} after episode {agent.episode}/{cfg.episodes}")
        for ep in range(agent.episode, cfg.episodes):
            t0 = time.perf_counter()
            actions, states = [], []
            prev = 0.0
            for i in range(len(env.steps)):
                s = env.state(i, prev)
                a = agent.act(s)
                states.append(s)
                actions.append(a)
                prev = a
            t_act = time.perf_counter() - t0
            res = env.run(actions)
            t1 = time.perf_counter()
            steps = [Transition(states[i], actions[i], states[i + 1] if i + 1 < len(states) else states[i],
                                i + 1 == len(states)) for i in range(len(states))]
            info = agent.end_episode(steps, res.reward)
            t_agent = time.perf_counter() - t1 + t_act
            entry = {"episode": ep + 1, "reward": res.reward, "accuracy": res.accuracy, "cost": res.cost,
                     "target": res.target, "lowered": res.lowered, "sigma": info["sigma"], "warmup": info["warmup"],
                     "policy": {n: list(b) for n, b in res.policy.items()},
                     "timings": {**res.timings, "agent_s": t_agent, "episode_s": time.perf_counter() - t0}}
            with log_path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            agent.save(agent_dir)
            history.append(entry)
            if progress:
                progress(entry)
        best = max(history, key=lambda e: (e["reward"], -e["cost"]))
        policy = {n: (int(w), int(a)) for n, (w, a) in best["policy"].items()}
        report = finish(setup, policy, out, log=log)
        report["search"] = {"episodes": len(history), "best_episode": best["episode"], "best_reward": best["reward"],
                            "reference_accuracy": env.reference_accuracy, "wall_s": time.perf_counter() - t_start,
                            "log": str(log_path)}
        (out / "policy.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        setup.costs.close()


def fixed(cfg: SearchConfig, bits: int, out: str | os.PathLike[str], store: Store, inventory: Inventory, *,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The uniform-bits baseline: every searched layer at `bits`/`bits`, the same final fine-tune."""
    check_bits(bits, "--bits")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the budget only matters to a search; a generous one keeps prepare() from refusing
    setup = prepare(SearchConfig(**{**asdict(cfg), "budget": "latency=1.0",
                                    "classifier_bits": cfg.classifier_bits}), out, store, inventory, log)
    try:
        report = finish(setup, setup.qmodel.uniform(bits, bits), out, log=log, hold_budget=False)
        for k in ("budget", "budget_target", "budget_kind", "lowered_on_simulation"):  # a baseline has no budget
            report.pop(k)
        report["fixed_bits"] = bits
        (out / "policy.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        setup.costs.close()


def transfer(source: str | os.PathLike[str], cfg: SearchConfig, out: str | os.PathLike[str], store: Store,
             inventory: Inventory, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """HAQ's Table 7: the agent a search trained on one network acts (greedily, no noise) on
    another; its bits are then held to this budget and fine-tuned like a search's best policy."""
    src = Path(source) / "agent"
    out = Path(out)
    setup = prepare(cfg, out, store, inventory, log)
    try:
        agent = DDPGAgent.load(src)
        env = setup.env
        if agent.state_dim != env.state_dim:
            raise ConfigError(f"the agent in {src} sees {agent.state_dim} state features, this model {env.state_dim}")
        actions, prev = [], 0.0
        for i in range(len(env.steps)):
            prev = agent.act(env.state(i, prev), explore=False)
            actions.append(prev)
        policy, lowered = env.enforce(env.policy_from_actions(actions))
        report = finish(setup, policy, out, log=log)
        report["transfer"] = {"agent": str(src), "agent_episodes": agent.episode, "lowered": lowered}
        (out / "policy.json").write_text(json.dumps(report, indent=1))
        return report
    finally:
        setup.costs.close()


def finish(setup: Setup, policy: Policy, out: Path, log: Callable[[str], None] | None = None, *,
           hold_budget: bool = True) -> dict[str, Any]:
    """Final fine-tune of `policy`, checkpoint, predicted vs whole-network simulated cost, plots.
    With `hold_budget` the policy is first held to the budget on the whole-network simulation."""
    cfg, env, q, costs = setup.cfg, setup.env, setup.qmodel, setup.costs
    simulated, held = None, 0
    if hold_budget:
        policy, held, simulated = env.enforce_on_simulation(policy)
        if held:
            _log_to(log, f"the whole network simulated over the budget: {held} more bit steps lowered")
        over = simulated_cost(simulated, env.budget.kind)
        if over is not None and over > env.target:  # every bit at the minimum, or four rounds not enough
            _log_to(log, f"the whole network still simulates over the budget: {over:.6g} > {env.target:.6g}")
    env.restore()
    q.set_policy(policy)
    before = evaluate(q.model, setup.data.val, device="cpu", channels_last=False).accuracy
    _log_to(log, f"final fine-tune: {cfg.final_finetune_batches} batches")
    # The same function as `hil haq finetune`, which repeats or extends this one in N processes.
    finetune_quantized(q, setup.data, FinetuneConfig(cfg.final_finetune_batches, lr=cfg.finetune_lr,
                                                     batch_size=cfg.batch_size, seed=cfg.seed))
    after = evaluate(q.model, setup.data.val, device="cpu", channels_last=False).accuracy
    test = evaluate(q.model, setup.data.test, device="cpu", channels_last=False).accuracy
    ckpt = out / CHECKPOINT
    save_checkpoint(ckpt, q.model, {**haq_meta(q, device=cfg.device, budget=cfg.budget, data=setup.data),
                                    "val_acc": after, "test_acc": test})
    report = cost_report(setup.spec, q, costs, policy, simulate=True, simulated=simulated)
    report.update({
        "format": POLICY_FORMAT, "budget": cfg.budget, "budget_target": env.target,
        "budget_kind": env.budget.kind, "full_8_8_cost": env.full_cost, "min_bits_cost": env.min_cost,
        "lowered_on_simulation": held,
        "accuracy": {"reference_8_8_val": env.reference_accuracy, "val_before_finetune": before,
                     "val_after_finetune": after, "test_after_finetune": test,
                     "val_images": len(setup.data.val), "test_images": len(setup.data.test)},
        "checkpoint": str(ckpt), "pretrained": setup.pretrain, "config": cfg.to_json(),
        "lut": {"fingerprint_class": costs.fp_class, "entries_measured_here": costs.measured},
    })
    full = cost_report(setup.spec, q, costs, q.uniform(8, 8), simulate=False)
    report["plots"] = {
        "bits": str(plot_bits(report["layers"], out / "bits.png", f"{setup.spec.name} on {cfg.device}")),
        "roofline": str(plot_roofline(full["layers"], report["layers"], costs, out / "roofline.png")),
    }
    return report


def cost_report(spec: ModelSpec, q: QuantizedModel, costs: CostModel, policy: Policy, *,
                simulate: bool, simulated: Measurement | None = None) -> dict[str, Any]:
    """Per-layer bits and predicted costs on `costs`'s device; with `simulate`, the whole network run
    (`simulated`, when that run of `policy` was already made)."""
    per = costs.per_layer(policy)
    layers = []
    for name, (w, a) in policy.items():
        u = q.units[name]
        c = per[name]
        layers.append({"name": name, "kind": u.kind, "wbits": w, "abits": a, "latency_ms": c.latency_ms,
                       "energy_uj": c.energy_uj, "dram_bytes": c.dram_bytes, "macs": u.macs * costs.batch,
                       "weights": u.weights})
    predicted = {"latency_ms": sum(x["latency_ms"] for x in layers),
                 "energy_uj": sum(x["energy_uj"] for x in layers),
                 "size_bytes": costs.cost(policy, "size")}
    report: dict[str, Any] = {"model": spec.name, "options": spec.options, "device": costs.device,
                              "batch": costs.batch, "layers": layers, "predicted": predicted}
    if simulate:
        rec = simulated or costs.simulate_network(policy)
        report["simulated"] = {"latency_ms": rec.latency_ms, "energy_uj": rec.metrics.get("energy_uj"),
                               "cycles": rec.metrics.get("cycles"), "provenance": rec.provenance,
                               "continuous_run": True}
        report["predicted_over_simulated"] = {
            "latency": predicted["latency_ms"] / rec.latency_ms,
            "energy": predicted["energy_uj"] / rec.metrics["energy_uj"] if rec.metrics.get("energy_uj") else None}
    return report


def read_policy(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read policy {p}: {e}") from None
    if data.get("format") != POLICY_FORMAT:
        raise ConfigError(f"{p} is not a HAQ policy ({POLICY_FORMAT})")
    return data


def evaluate_policy(path: str | os.PathLike[str], device: str, store: Store, inventory: Inventory, *,
                    simulate: bool = True, accuracy: bool = False,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A saved policy's cost on any device (LUT sum, and the whole network simulated), and with
    `accuracy` its checkpoint's test accuracy."""
    data = read_policy(path)
    spec = make_model(data["model"], **data["options"])
    units = {u.name for u in spec.convs()}
    policy = {x["name"]: (check_bits(int(x["wbits"]), x["name"]), check_bits(int(x["abits"]), x["name"]))
              for x in data["layers"]}
    if set(policy) != units:
        raise ConfigError(f"policy {path} does not name the layers of {spec.name}")
    costs = CostModel(store, inventory, device, spec.convs(), log=log)
    try:
        q = quantize(spec, spec.build(), QuantOptions(**_quant_kwargs(data["config"])))
        report = cost_report(spec, q, costs, policy, simulate=simulate)
    finally:
        costs.close()
    report["policy"] = str(path)
    if accuracy:
        report["accuracy"] = checkpoint_accuracy(data["checkpoint"], data["config"])
    return report


def _quant_kwargs(c: dict[str, Any]) -> dict[str, Any]:
    cls = c.get("classifier_bits")
    return {"first_weight_bits": c.get("first_weight_bits"), "quantize_first_input": c.get("quantize_first_input"),
            "classifier_bits": tuple(cls) if cls else None}


def checkpoint_accuracy(path: str | os.PathLike[str], cfg: dict[str, Any]) -> dict[str, Any]:
    q, meta = load_quantized(path)
    names = {f.name for f in fields(SearchConfig)}
    c = SearchConfig(**{k: v for k, v in cfg.items() if k in names and k != "classifier_bits"})
    data = fashion_mnist(val_size=c.val_size, seed=c.split_seed, size=q.spec.options["input_size"],
                         val_limit=c.val_limit, test_limit=c.test_limit, train_limit=1)
    with torch.no_grad():
        test = evaluate(q.model, data.test, device="cpu", channels_last=False)
    return {"checkpoint": str(path), "test_acc": test.accuracy, "test_images": test.n,
            "recorded_test_acc": meta.get("test_acc")}
