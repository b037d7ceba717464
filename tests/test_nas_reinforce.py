"""The REINFORCE architecture update of ProxylessNAS (optimizers/proxyless/reinforce.py): the estimator
against the exact gradient of E[R], α following latency, resume with the baseline, and the CLI."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hil.errors import ConfigError
from hil.latency import LatencyModel
from hil.optimizers.data import Batches, fashion_mnist
from hil.optimizers.proxyless.latency import SearchLatency
from hil.optimizers.proxyless.reinforce import ReinforceUpdate, policy_gradient, reward
from hil.optimizers.proxyless.run import build_supernet, lut_space
from hil.optimizers.proxyless.search import STATE_FILE, SearchConfig, read_state_info, search
from hil.optimizers.train import CheckpointError
from tests.hilcli import FAST, assert_user_error, hil

RES, WIDTH = 32, 0.25


@pytest.fixture(autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _op_ms(op: str) -> float:
    """A local-cpu-like cost: grows with kernel area and expansion (k²·e); "zero" costs nothing."""
    if op == "zero":
        return 0.0
    k, e = int(op[0]), int(op[-1])
    return 1e-3 * k * k * e


@pytest.fixture(scope="module")
def latency() -> SearchLatency:
    """A synthetic LUT of the space at resolution 32, width 0.25 (no measuring: the ranking is what counts)."""
    space = lut_space(RES, WIDTH)
    table = {w.key: 0.05 for w in space.fixed}
    for slot in space.slots:
        for op in slot.choices:
            w = slot.workload(op)
            if w is not None:
                table[w.key] = _op_ms(op)
    return SearchLatency(LatencyModel(table, "local-cpu"), space)


@pytest.fixture(scope="module")
def data():
    return fashion_mnist(size=RES, train_limit=128, val_limit=64, test_limit=8)


# ---- the estimator against the exact gradient ---------------------------------------------------

@pytest.mark.parametrize("baseline", [0.0, 0.6])
def test_policy_gradient_matches_the_exact_gradient_of_expected_reward(baseline):
    # One block of three ops, a deterministic reward per op: E[R] = Σ_i p_i R_i, so
    # ∂E[R]/∂α = p ⊙ (R − p·R). The estimator's mean over many sampled paths must match it, whatever the
    # baseline (it only lowers the variance). A wrong sign, or ∇p in place of ∇log p, misses by > 0.05.
    alpha = torch.tensor([0.3, -0.4, 0.8])
    table = torch.tensor([1.0, 0.2, 0.5])
    p = torch.softmax(alpha, 0)
    exact = p * (table - (p * table).sum())
    gen = torch.Generator().manual_seed(0)
    paths = torch.multinomial(p, 40_000, replacement=True, generator=gen)[:, None]
    (descent,) = policy_gradient([alpha], paths, table[paths[:, 0]] - baseline)
    torch.testing.assert_close(-descent, exact, atol=0.01, rtol=0)
    assert exact.abs().min() > 0.05  # the case is not degenerate: every component is tested
    # exact enumeration: each op once, its advantage weighted by 3·p_i, is the closed form itself
    (enum,) = policy_gradient([alpha], torch.arange(3)[:, None], 3 * p * table)
    torch.testing.assert_close(-enum, exact)


def test_reward_favours_fast_networks_with_a_negative_exponent():
    assert reward(0.5, 1.0, 1.0, -0.07) == 0.5
    assert reward(0.5, 0.5, 1.0, -2.0) > reward(0.5, 2.0, 1.0, -2.0)
    assert reward(0.5, 3.0, 1.0, 0.0) == 0.5  # w = 0: accuracy alone


# ---- α follows latency when every sampled network is as accurate --------------------------------

def test_reinforce_moves_alpha_toward_faster_ops(latency, data):
    net = build_supernet(RES, WIDTH, 0)
    net.set_generator(torch.Generator().manual_seed(0))
    with torch.no_grad():  # every network predicts class 0, on labels all 0: ACC = 1 for each sample
        net.classifier.fc.bias.fill_(0.0)
        net.classifier.fc.bias[0] = 1e4
    net.train()
    before = [p.detach().clone() for p in net.probs()]
    # T at the uniform policy's E[LAT] keeps R near 1: far-off rewards (say 1e-8) would drown in Adam's eps.
    update = ReinforceUpdate(target_ms=float(latency.expected(before)), samples=4, baseline_decay=0.8,
                             exponent=-8.0)
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.1, betas=(0.0, 0.999))
    val = Batches(data.val, 16, shuffle=True, seed=0, drop_last=True)
    batches = itertools.chain.from_iterable(val.epoch(e) for e in range(100))
    rewards = []
    for x, _ in itertools.islice(batches, 40):
        rewards.append(-update.step(net, latency, opt, (x, torch.zeros(len(x), dtype=torch.long))))
    after = [p.detach().clone() for p in net.probs()]
    assert update.baseline is not None and update.baseline > 0
    lat = [torch.tensor([0.0 if w is None else latency.model.cost(w) for w in ops]) for ops in latency.candidates]
    gain = [float(a[int(t.argmin())] - b[int(t.argmin())]) for a, b, t in zip(after, before, lat, strict=True)]
    # The fastest op's mass rose, on average over the blocks by more than 0.15 (from 1/6 or 1/7). Within
    # a block whose fastest op is barely faster than the next (3x3 expand 3 vs 6: 0.027 ms of ~2.5 ms)
    # the noisy estimate may crown the runner-up, so per block the test asks for a faster block.
    assert sum(gain) / len(gain) > 0.15, gain
    faster = [float((a * t).sum()) < float((b * t).sum()) for a, b, t in zip(after, before, lat, strict=True)]
    assert sum(faster) >= 18, faster
    assert float(latency.expected(after)) < 0.6 * float(latency.expected(before))
    assert sum(rewards[-5:]) > sum(rewards[:5])


# ---- the whole search: resume keeps the baseline -------------------------------------------------

def test_reinforce_search_resumes_like_an_uninterrupted_one(latency, data, tmp_path):
    cfg = SearchConfig(epochs=2, warmup_epochs=0, batch_size=16, steps_per_epoch=2, arch_every=1,
                       target_ms=latency.range().max_ms, eval_limit=0, arch_lr=0.05, arch_update="reinforce",
                       rl_samples=2, rl_exponent=-1.0)

    def run(out: Path, stop_after: int | None = None):
        def log(msg: str) -> None:
            if stop_after is not None and msg.startswith(f"epoch {stop_after}/"):
                raise KeyboardInterrupt  # Ctrl-C right after an epoch's checkpoint

        net = build_supernet(RES, WIDTH, 0)
        return net, search(net, latency, data, cfg, out_dir=out, log=log)

    whole, r = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_after=1)
    b1 = read_state_info(tmp_path / "b" / STATE_FILE)["arch_update_state"]["baseline"]
    assert isinstance(b1, float)
    resumed, r2 = run(tmp_path / "b")
    assert r2.resumed_from == 1 and r.arch == r2.arch
    for (n, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    # the baseline carried over: the resumed run ends with the uninterrupted run's
    assert (read_state_info(tmp_path / "b" / STATE_FILE)["arch_update_state"]
            == read_state_info(tmp_path / "a" / STATE_FILE)["arch_update_state"])
    assert r.history[-1].arch_loss is not None and r.history[-1].arch_loss < 0  # −mean R
    # the state of a REINFORCE search is not resumed by a gradient one
    with pytest.raises(CheckpointError, match="arch_update='reinforce', this run has 'gradient'"):
        search(build_supernet(RES, WIDTH, 0), latency, data, replace(cfg, arch_update="gradient"),
               out_dir=tmp_path / "b")


@pytest.mark.parametrize("bad,words", [
    (dict(arch_update="nope"), "unknown architecture update 'nope'"),
    (dict(rl_exponent=0.5), "exponent w must be <= 0"),
    (dict(rl_samples=0), "at least one sampled network"),
    (dict(rl_baseline_decay=1.0), "baseline decay must be in [0, 1)"),
])
def test_bad_reinforce_settings_are_config_errors(bad, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        SearchConfig(**{"arch_update": "reinforce", **bad})


def test_gradient_rule_state_has_no_update_state(latency, data, tmp_path):
    cfg = SearchConfig(epochs=1, warmup_epochs=0, batch_size=16, steps_per_epoch=1, arch_every=1,
                       target_ms=latency.range().max_ms, eval_limit=0)
    search(build_supernet(RES, WIDTH, 0), latency, data, cfg, out_dir=tmp_path)
    assert "arch_update_state" not in read_state_info(tmp_path / STATE_FILE)


# ---- the CLI --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_reinforce_search_resumes_and_refuses_bad_values(tmp_path):
    db = tmp_path / "hil.db"
    p = hil("lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile", "--resolution", str(RES),
            "--width", str(WIDTH), *FAST, "--cv-threshold", "9", "--calibration-nets", "0", "--db", str(db),
            "--json", env={"HIL_LEASE_DIR": str(tmp_path / "leases")})
    assert p.returncode == 0, p.stderr
    out = tmp_path / "s"
    args = ["nas", "search", "--device", "local-cpu", "--space", "proxyless-mobile", "--db", str(db),
            "--target-ms", "100", "--warmup-epochs", "0", "--out", str(out), "--resolution", str(RES),
            "--width", str(WIDTH), "--steps-per-epoch", "2", "--batch-size", "16", "--arch-every", "1",
            "--train-limit", "64", "--val-limit", "32", "--threads", "1", "--arch-update", "reinforce",
            "--rl-samples", "2"]
    p = hil(*args, "--epochs", "1")
    assert p.returncode == 0, p.stderr
    p = hil(*args, "--epochs", "2")
    assert p.returncode == 0, p.stderr
    assert "after epoch 1/2" in p.stderr, p.stderr  # resumed, baseline and all
    hist = json.loads((out / "alpha_history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["arch_steps"] == 2 for h in hist)
    rec = json.loads((out / "arch.json").read_text())
    assert rec["search"]["arch_update"] == "reinforce" and len(rec["arch"]) == 21
    assert isinstance(read_state_info(out / STATE_FILE)["arch_update_state"]["baseline"], float)
    p = hil(*args[:-4], "--arch-update", "nope", "--epochs", "1")
    assert_user_error(p, "--arch-update", "gradient, reinforce", "'nope'")
