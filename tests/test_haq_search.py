"""A reduced HAQ search against the real Verilator simulation of bismo-edge, end to end.

Tiny MobileNet-V1, a few episodes, a handful of fine-tune batches: the final policy meets its
latency budget when the whole network is re-simulated in one continuous run; its checkpoint
evaluates to the accuracy it recorded; an interrupted search resumes where it stopped; bad input
gets one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hil.errors import ConfigError
from hil.inventory import load_inventory
from hil.optimizers.data import fashion_mnist
from hil.optimizers.haq.env import Budget, action_to_bits
from hil.optimizers.haq.search import SearchConfig, evaluate_policy, load_quantized, prepare, search, transfer
from hil.optimizers.train import evaluate
from hil.store import SqliteStore
from tests.hilcli import INVENTORY, assert_user_error, hil

torch.set_num_threads(1)

CFG = SearchConfig(model="mobilenet-v1", width=0.25, input_size=32, device="bismo-edge", budget="latency=0.6",
                   episodes=3, warmup=1, finetune_batches=2, final_finetune_batches=3, pretrain_batches=20,
                   batch_size=32, min_bits=2, val_limit=200, test_limit=200, train_limit=2000,
                   calibration_batches=2)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A search interrupted after episode 2 of 3, then rerun to the end."""
    root = tmp_path_factory.mktemp("haq")
    mp = pytest.MonkeyPatch()
    mp.setenv("HIL_LEASE_DIR", str(root / "leases"))
    store = SqliteStore(root / "hil.db")
    inv = load_inventory(INVENTORY)
    out = root / "out"
    seen: list[int] = []

    def stop_after_two(e: dict) -> None:
        seen.append(e["episode"])
        if e["episode"] == 2:
            raise Stop

    with pytest.raises(Stop):
        search(CFG, out, store, inv, progress=stop_after_two)
    log_before = (out / "search.jsonl").read_text().splitlines()
    messages: list[str] = []
    report = search(CFG, out, store, inv, progress=lambda e: seen.append(e["episode"]), log=messages.append)
    yield {"root": root, "out": out, "store": store, "inv": inv, "report": report, "seen": seen,
           "log_before": log_before, "messages": messages}
    store.close()
    mp.undo()


def test_final_policy_meets_its_latency_budget_on_the_whole_network_simulation(run):
    rep = run["report"]
    assert rep["budget_kind"] == "latency"
    target = rep["budget_target"]
    assert target == pytest.approx(0.6 * rep["full_8_8_cost"])
    assert rep["predicted"]["latency_ms"] <= target
    assert rep["simulated"]["continuous_run"] and rep["simulated"]["provenance"] == "simulated"
    assert rep["simulated"]["latency_ms"] <= target and rep["lowered_on_simulation"] >= 0
    names = [x["name"] for x in rep["layers"]]
    assert names[0] == "stem" and names[-1] == "classifier" and len(names) == 28
    for x in rep["layers"]:
        assert 2 <= x["wbits"] <= 8 and 2 <= x["abits"] <= 8
        assert x["latency_ms"] > 0 and x["energy_uj"] > 0
    by = {x["name"]: x for x in rep["layers"]}
    assert (by["stem"]["wbits"], by["classifier"]["wbits"], by["classifier"]["abits"]) == (8, 8, 8)
    assert (run["out"] / "bits.png").stat().st_size > 0 and (run["out"] / "roofline.png").stat().st_size > 0
    saved = json.loads((run["out"] / "policy.json").read_text())
    assert saved["simulated"] == rep["simulated"]


def test_a_policy_over_its_budget_in_the_whole_network_run_is_lowered_until_it_holds(run):
    # Mixed bits run 0.1-0.8 % slower in one continuous simulation than the LUT's per-layer sum on this
    # device and model (seen on random policies), so a budget met exactly by the LUT is over it there.
    import random

    setup = prepare(CFG, run["out"], run["store"], run["inv"])
    env, costs, fixed = setup.env, setup.costs, setup.qmodel.fixed()
    try:
        rng = random.Random(0)
        for _ in range(10):
            policy = {n: (fixed.get(n, (None, None))[0] or rng.randint(2, 8),
                          fixed.get(n, (None, None))[1] or rng.randint(2, 8)) for n in setup.qmodel.units}
            lut = costs.cost(policy, "latency")
            if costs.simulate_network(policy).latency_ms > lut * 1.001:
                break
        else:
            pytest.fail("no random policy ran slower as a whole network than its LUT sum")
        env.target = lut  # met by the LUT, exactly
        held, lowered, rec = env.enforce_on_simulation(policy)
        assert lowered > 0 and rec.latency_ms <= env.target
        assert rec.latency_ms == costs.simulate_network(held).latency_ms  # the record is the held policy's
        assert all(hw <= w and ha <= a for (w, a), (hw, ha) in zip(policy.values(), held.values(), strict=True))
        env.target = rec.latency_ms * 1.01  # within budget on the simulation: nothing to lower
        assert env.enforce_on_simulation(held)[:2] == (held, 0)
    finally:
        costs.close()


def test_every_episode_met_the_budget_and_the_agent_acted(run):
    lines = [json.loads(x) for x in (run["out"] / "search.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in lines] == [1, 2, 3]
    for e in lines:
        assert e["cost"] <= e["target"]
        assert set(e["timings"]) >= {"simulation_s", "finetune_eval_s", "agent_s", "episode_s"}
    assert lines[0]["warmup"] and not lines[2]["warmup"]


def test_an_interrupted_search_resumes_where_it_stopped(run):
    assert run["seen"] == [1, 2, 3]  # episode 3 only ran in the second call
    after = (run["out"] / "search.jsonl").read_text().splitlines()
    assert after[:2] == run["log_before"]
    assert any("resuming" in m and "episode 2/3" in m for m in run["messages"])
    agent = json.loads((run["out"] / "agent" / "agent.json").read_text())
    assert agent["episode"] == 3
    assert not list(run["out"].rglob("*.pt")) and not list(run["out"].rglob("*.pkl"))


def test_the_checkpoint_evaluates_to_its_recorded_accuracy(run):
    rep = run["report"]
    q, meta = load_quantized(rep["checkpoint"])
    assert q.policy() == {x["name"]: (x["wbits"], x["abits"]) for x in rep["layers"]}
    data = fashion_mnist(val_size=CFG.val_size, seed=CFG.seed, size=32, train_limit=1, val_limit=1,
                         test_limit=CFG.test_limit)
    acc = evaluate(q.model, data.test, device="cpu", channels_last=False).accuracy
    assert acc == pytest.approx(rep["accuracy"]["test_after_finetune"])
    assert meta["haq"]["device"] == "bismo-edge"
    # what `hil haq finetune` rescores on: the search's own split
    assert (meta["data"]["split_seed"], meta["data"]["val_size"]) == (CFG.split_seed, CFG.val_size)


def test_policy_eval_reuses_the_lut_and_matches(run):
    rep = evaluate_policy(run["out"] / "policy.json", "bismo-edge", run["store"], run["inv"], simulate=False)
    assert rep["predicted"] == pytest.approx(run["report"]["predicted"])


def test_the_agent_transfers_to_another_network_within_its_budget(run):
    from dataclasses import replace

    cfg = replace(CFG, model="mobilenet-v2", budget="latency=0.5")
    rep = transfer(run["out"], cfg, run["root"] / "v2", run["store"], run["inv"])
    assert rep["transfer"]["agent_episodes"] == 3
    assert rep["model"] == "mobilenet-v2" and rep["layers"][1]["name"] == "block0.dw"
    assert rep["predicted"]["latency_ms"] <= rep["budget_target"]
    assert rep["simulated"]["latency_ms"] <= rep["budget_target"]


def test_budget_below_the_all_minimum_cost_names_the_minimum(run):
    from dataclasses import replace

    cfg = replace(CFG, budget="latency=0.01")
    with pytest.raises(ConfigError, match=r"all-minimum bits reach on bismo-edge: [0-9.e-]+ ms"):
        search(cfg, run["root"] / "low", run["store"], run["inv"])


def test_budget_and_action_parsing():
    assert Budget.parse("latency=0.5") == Budget("latency", 0.5, True)
    assert Budget.parse("energy=2mJ") == Budget("energy", 2000.0, False)
    assert Budget.parse("size=40KB").value == 40 * 1024
    for bad in ("latency=2", "speed=0.5", "latency=-1", "size=3ms"):
        with pytest.raises(ConfigError):
            Budget.parse(bad)
    assert [action_to_bits(a, 1, 8) for a in (0.0, 0.124, 0.126, 0.5, 0.99, 1.0)] == [1, 1, 2, 4, 8, 8]


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "resnet-50", "--device", "bismo-edge", "--budget", "latency=0.5"], ["resnet-50"]),
    (["--model", "mobilenet-v2", "--device", "tpu-v9", "--budget", "latency=0.5"], ["tpu-v9"]),
    (["--model", "mobilenet-v2", "--device", "bismo-edge", "--budget", "latency=0.5", "--max-bits", "9"],
     ["--max-bits", "1..8"]),
    (["--model", "mobilenet-v2", "--device", "bismo-edge", "--budget", "speed=0.5"], ["speed"]),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, args, words):
    p = hil("haq", "search", *args, "--out", str(tmp_path / "o"), "--db", str(tmp_path / "h.db"),
            "-i", str(INVENTORY), "--json")
    assert_user_error(p, *words)


def test_cli_fixed_bits_outside_range(tmp_path: Path):
    p = hil("haq", "fixed", "--model", "mobilenet-v1", "--device", "bismo-edge", "--bits", "0",
            "--out", str(tmp_path / "o"), "--db", str(tmp_path / "h.db"), "-i", str(INVENTORY))
    assert_user_error(p, "--bits", "1..8")
