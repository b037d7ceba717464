"""ProxylessNAS (optimizers/proxyless): gradients through binary gates, α following latency and CE,
memory of one path, and the CLI on a LUT measured here on the local CPU."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch

from hil.errors import ConfigError, MissingEntryError
from hil.latency import LatencyModel
from hil.nets.models import proxyless_net
from hil.optimizers.data import Batches, fashion_mnist
from hil.optimizers.proxyless.latency import LatencyLoss, SearchLatency
from hil.optimizers.proxyless.memory import saved_bytes
from hil.optimizers.proxyless.run import build_supernet, lut_space, open_latency, train_family
from hil.optimizers.proxyless.search import arch_step
from hil.optimizers.proxyless.supernet import MixedOp
from hil.store import open_store
from tests.hilcli import FAST, assert_user_error, hil

RES, WIDTH = 32, 0.25


@pytest.fixture(autouse=True)
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def lut_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The space's LUT at resolution 32, width 0.25, measured on this CPU with the fast protocol."""
    d = tmp_path_factory.mktemp("nas-lut")
    db = d / "hil.db"
    p = hil("lut", "build", "-d", "local-cpu", "--space", "proxyless-mobile", "--resolution", str(RES),
            "--width", str(WIDTH), *FAST, "--cv-threshold", "9", "--calibration-nets", "0", "--db", str(db),
            "--json", env={"HIL_LEASE_DIR": str(d / "leases")})
    assert p.returncode == 0, p.stderr
    return db


@pytest.fixture(scope="module")
def latency(lut_db: Path) -> SearchLatency:
    with open_store(str(lut_db)) as store:
        return open_latency(store, "local-cpu", RES, WIDTH)


@pytest.fixture(scope="module")
def data():
    return fashion_mnist(size=RES, train_limit=256, val_limit=128, test_limit=64)


# ---- gradients through the binary gates --------------------------------------------------------

def _mixed(seed: int = 0) -> MixedOp:
    torch.manual_seed(seed)
    m = MixedOp(lut_space(RES, WIDTH).slots[1])  # a block that may be skipped: 7 paths
    with torch.no_grad():
        m.alpha.copy_(torch.randn(len(m.choices)))
    m.generator = torch.Generator().manual_seed(seed)
    return m


def test_full_v2_gate_gradients_equal_autograd_through_all_paths():
    m = _mixed()
    x = torch.randn(4, *reversed(m.slot.input[:2]), m.slot.input[2]).permute(0, 3, 1, 2).contiguous()
    x.requires_grad_(True)
    w = torch.randn(4, m.slot.output[2], m.slot.output[0], m.slot.output[1])
    m.eval()  # BN in eval mode: the recomputation in backward sees the very same function
    m.mode = "full_v2"
    (m(x) * w).sum().backward()
    active = m.sampled[0]
    grad_gates, grad_x = m.gates.grad.clone(), x.grad.clone()
    # reference: y = Σ_j g_j o_j(x) with g one-hot at the sampled path, every path in the graph
    x2 = x.detach().clone().requires_grad_(True)
    g = torch.zeros(len(m.choices))
    g[active] = 1.0
    g.requires_grad_(True)
    y = sum(g[j] * m.ops[op](x2) for j, op in enumerate(m.choices))
    (y * w).sum().backward()
    torch.testing.assert_close(grad_gates, g.grad)
    torch.testing.assert_close(grad_x, x2.grad)
    # dL/dα_i = Σ_j dL/dg_j p_j (δ_ij − p_i)
    m.alpha_grad_from_gates()
    p = torch.softmax(m.alpha.detach(), 0)
    jac = torch.diag(p) - p[:, None] * p[None, :]
    torch.testing.assert_close(m.alpha.grad, jac @ g.grad)


def test_full_v2_recomputation_leaves_batch_norm_statistics_alone():
    m = _mixed(2)
    m.train()
    x = torch.randn(8, m.slot.input[2], m.slot.input[0], m.slot.input[1])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.mode = "full_v2"
    m(x).square().mean().backward()
    active = m.choices[m.sampled[0]]
    changed = {k.split(".")[1] for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {active}  # only the path that ran forward saw a batch
    nbt = [v for k, v in m.state_dict().items() if k.endswith("num_batches_tracked") and f".{active}." in k]
    assert all(int(v) == 1 for v in nbt)


def test_two_path_mode_rescales_only_the_sampled_logits():
    m = _mixed(1)
    x = torch.randn(2, m.slot.input[2], m.slot.input[0], m.slot.input[1])
    m.mode = "two"
    m(x).square().mean().backward()
    pair = sorted(m.sampled)
    assert len(set(pair)) == 2
    m.alpha_grad_from_gates()
    others = [i for i in range(len(m.choices)) if i not in pair]
    assert m.alpha.grad[others].abs().sum() == 0 and m.alpha.grad[pair].abs().sum() > 0
    old = m.alpha.detach().clone()
    opt = torch.optim.Adam([m.alpha], lr=0.1, betas=(0.0, 0.999))
    opt.step()
    m.rescale_after_step(old)
    a = m.alpha.detach()
    torch.testing.assert_close(torch.logsumexp(a[pair], 0), torch.logsumexp(old[pair], 0))
    torch.testing.assert_close(a[others], old[others])
    assert not torch.equal(a[pair], old[pair])


def test_fixed_supernet_is_the_derived_network():
    # The supernet's argmax paths, with their weights copied by name, are exactly `proxyless_net(arch)`.
    net = build_supernet(RES, WIDTH, 0)
    with torch.no_grad():
        for _, m in net.mixed_ops():
            m.alpha.copy_(torch.randn(len(m.choices)))
    arch = net.derive()
    spec = proxyless_net(arch, WIDTH, input_size=RES, stem_stride=2).build()
    chosen = {}
    for k, v in net.state_dict().items():
        block, _, rest = k.partition(".ops.")
        if k.endswith(".alpha"):
            continue
        if rest:
            op, _, tail = rest.partition(".")
            if op != arch[int(block[5:]) - 1]:
                continue
            k = f"{block}.{tail}"
        chosen[k] = v
    spec.load_state_dict(chosen)  # strict: every layer of the derived net found by name
    net.set_mode("fixed")
    x = torch.randn(4, 1, RES, RES)
    torch.testing.assert_close(net.train()(x), spec.train()(x))


def test_smaller_ops_inherit_the_largest_ops_kernel_centres_and_first_channels():
    net = build_supernet(RES, WIDTH, 0)
    net.inherit_from_largest()
    for _, m in net.mixed_ops():
        big = m.ops[m.largest]
        assert m.largest == "7x7_MBConv6"
        for op in m.choices:
            if op in ("zero", m.largest):
                continue
            small = m.ops[op]
            k, e = int(op[0]), int(op[-1])
            mid = m.slot.input[2] * e
            lo = (7 - k) // 2
            expand, dw, project = (small.body[i][0].weight for i in range(3))
            torch.testing.assert_close(expand, big.body[0][0].weight[:mid])
            torch.testing.assert_close(dw, big.body[1][0].weight[:mid, :, lo:lo + k, lo:lo + k])
            torch.testing.assert_close(project, big.body[2][0].weight[:, :mid])
            for i in range(3):
                bn, src = small.body[i][1], big.body[i][1]
                torch.testing.assert_close(bn.weight, src.weight[:bn.num_features])
                torch.testing.assert_close(bn.bias, src.bias[:bn.num_features])


def test_warm_up_trains_the_largest_path_then_inherits_then_samples(latency, data):
    from hil.optimizers.proxyless.search import SearchConfig, search
    from hil.optimizers.proxyless.supernet import Supernet

    class Recording(Supernet):  # the real supernet, with a record of what each weight step ran
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.events: list[str] = []

        def inherit_from_largest(self) -> None:
            self.events.append("inherit")
            super().inherit_from_largest()

        def forward(self, x):
            self.events.append(self.mode)
            return super().forward(x)

    def run(share: float) -> Recording:
        cfg = SearchConfig(epochs=2, warmup_epochs=1, largest_first=share, batch_size=16, steps_per_epoch=4,
                           arch_every=100, target_ms=latency.range().max_ms, eval_limit=0)
        torch.manual_seed(0)
        net = Recording(train_family(RES, WIDTH))
        search(net, latency, data, cfg)
        return net

    assert run(0.5).events == ["largest"] * 2 + ["inherit"] + ["weights"] * 6
    # the public method's warm-up: no largest phase, nothing inherited
    assert run(0.0).events == ["weights"] * 8
    # the whole warm-up on the largest path; the first search step inherits first
    assert run(1.0).events == ["largest"] * 4 + ["inherit"] + ["weights"] * 4


def test_target_derivation_decides_skipping_first_then_skips_until_the_target(latency):
    from hil.optimizers.proxyless.search import derive

    net = build_supernet(RES, WIDTH, 0)
    with torch.no_grad():
        for b, (_, m) in enumerate(net.mixed_ops()):
            m.alpha.zero_()
            m.alpha[m.choices.index("5x5_MBConv3")] = 1.0
            if "zero" in m.choices:  # p(zero) ≈ 0.37: the single likeliest op, below 1/2
                m.alpha[m.choices.index("zero")] = 1.5 + 0.01 * b
        net.block3.alpha[-1] = 5.0  # p(zero) > 1/2: skipped whatever the target
    skippable = [b for b, (_, m) in enumerate(net.mixed_ops()) if "zero" in m.choices]
    assert set(derive(net, latency, "argmax", 1.0)) == {"zero", "5x5_MBConv3"}  # argmax skips all 15
    assert [b for b, op in enumerate(derive(net, latency, "argmax", 1.0)) if op == "zero"] == skippable

    roomy = derive(net, latency, "target", latency.range().max_ms)
    assert [b for b, op in enumerate(roomy) if op == "zero"] == [2]  # block3 only
    assert all(op == "5x5_MBConv3" for b, op in enumerate(roomy) if b != 2)
    # a target between: skips in descending p(zero) (the later block first) until the prediction fits
    full, none = latency.arch(roomy)[0], latency.arch(derive(net, latency, "argmax", 1.0))[0]
    target = (full + none) / 2
    arch = derive(net, latency, "target", target)
    skipped = [b for b, op in enumerate(arch) if op == "zero"]
    assert latency.arch(arch)[0] <= target < full
    last = min(b for b in skipped if b != 2)  # the last one skipped: un-skipping it overshoots
    assert skipped == [2] + [b for b in skippable if b >= last and b != 2]
    back = list(arch)
    back[last] = "5x5_MBConv3"
    assert latency.arch(back)[0] > target
    # an unreachable target for this α: every skippable block skipped, no further
    assert derive(net, latency, "target", 1e-6) == derive(net, latency, "argmax", 1.0)


def test_argmax_net_is_scored_on_re_estimated_bn_statistics_and_the_supernet_is_left_alone(data):
    # The score depends on the weights, not on the running statistics the sampled ops gathered, and
    # scoring changes nothing in the supernet.
    from hil.optimizers.proxyless.search import score_argmax_net

    net = build_supernet(RES, WIDTH, 0)
    with torch.no_grad():
        for _, m in net.mixed_ops():
            m.alpha.copy_(torch.randn(len(m.choices)))
    net.set_mode("fixed")  # a little training, so that the score has something to lose
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    for x, y in itertools.islice(itertools.chain.from_iterable(Batches(data.train, 32, shuffle=True).epoch(e)
                                                                for e in range(5)), 40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.set_mode("weights")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = score_argmax_net(net, data, torch.device("cpu"), 64, 0)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert net.mode == "weights" and net.training
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.add_(3.0)
                mod.running_var.mul_(50.0)
    assert score_argmax_net(net, data, torch.device("cpu"), 64, 0) == acc


# ---- α follows the latency term, or CE when its weight is 0 ------------------------------------

def _arch_steps(latency: SearchLatency, data, loss: LatencyLoss, grad_mode: str, steps: int, seed: int = 0,
                tamper=None):
    net = build_supernet(RES, WIDTH, seed)
    net.set_generator(torch.Generator().manual_seed(seed))
    if tamper:
        tamper(net)
    net.train()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    val = Batches(data.val, 32, shuffle=True, seed=seed, drop_last=True)
    before = [p.detach().clone() for p in net.probs()]
    for batch in itertools.islice(itertools.chain.from_iterable(val.epoch(e) for e in range(100)), steps):
        arch_step(net, latency, loss, opt, batch, grad_mode)
    return net, before, [p.detach().clone() for p in net.probs()]


@pytest.mark.parametrize("kind,grad_mode", [("add#linear", "full_v2"), ("mul#log", "two")])
def test_large_latency_weight_moves_alpha_toward_faster_ops(latency, data, kind, grad_mode):
    loss = LatencyLoss(kind, target_ms=latency.range().min_ms, beta=20.0, lam=100.0)
    _, before, after = _arch_steps(latency, data, loss, grad_mode, steps=8)
    assert float(latency.expected(after)) < float(latency.expected(before))
    # Fastest by the calibrated cost E[LAT] is made of (the LUT with the calibration's weight term). At
    # this tiny geometry the six convolutions of a block time within a few per cent of each other, so
    # which one is "fastest" is the fast protocol's noise and CE may outweigh the latency pull there (a
    # CI run saw two such blocks fall). Judge the blocks with a clear fastest op: 10 % ahead of the next.
    clear = []
    for ops, b, a in zip(latency.candidates, before, after, strict=True):
        costs = [0.0 if w is None else latency.model.cost(w) for w in ops]
        order = sorted(range(len(costs)), key=costs.__getitem__)
        if costs[order[0]] <= 0.9 * costs[order[1]]:
            clear.append(float(a[order[0]]) > float(b[order[0]]))
    assert len(clear) >= 15, len(clear)  # at least the 15 skippable blocks, whose zero op costs nothing
    rose = sum(clear)
    # the clear fastest op of (nearly) every such block gained probability (pulled the wrong way, none
    # would); the two-path mode moves a block's mass only between its two sampled paths, so fewer
    # blocks move in a few steps
    assert rose >= (len(clear) - 1 if grad_mode == "full_v2" else 0.75 * len(clear)), (rose, len(clear))


def test_zero_latency_weight_leaves_alpha_to_ce_alone(latency, data):
    # With λ = 0 (add#linear) or β = 0 (mul#log: α·CE) the latency term vanishes: α moves, and by the same
    # steps whatever the target and the loss kind (Adam is blind to the constant factor α·), so CE alone
    # steers it. Whether those steps reach the CE-best op is the estimator's business: its gate gradients
    # are checked exactly against autograd above.
    runs = [LatencyLoss("add#linear", target_ms=latency.range().max_ms, lam=0.0),
            LatencyLoss("add#linear", target_ms=latency.range().min_ms, lam=0.0),
            LatencyLoss("mul#log", target_ms=latency.range().min_ms, beta=0.0)]
    afters = []
    for loss in runs:
        _, before, after = _arch_steps(latency, data, loss, "full_v2", steps=3)
        afters.append(torch.cat(after))
    assert (afters[0] - torch.cat(before)).abs().max() > 1e-3  # α moved
    torch.testing.assert_close(afters[0], afters[1])
    torch.testing.assert_close(afters[0], afters[2], rtol=1e-3, atol=1e-4)


def test_the_cli_offers_exactly_the_losses_the_search_knows():
    # the parser keeps its own tuple so that `hil` starts without importing the optimizer
    from hil.commands import nas as cli
    from hil.optimizers.proxyless import latency as lat

    assert cli.LOSSES == lat.LOSSES


def test_hinge_loss_binds_at_the_target():
    # add#hinge pulls E[LAT] down only above T (slope λ/T, as add#linear), and leaves CE alone
    # below it; add#linear keeps pulling below T
    ce = torch.tensor(1.5, requires_grad=True)
    for ms, slope in [(0.5, 0.0), (0.79, 0.0), (1.2, 10.0 / 0.8)]:
        lat = torch.tensor(ms, requires_grad=True)
        loss = LatencyLoss("add#hinge", target_ms=0.8, lam=10.0)(ce, lat)
        g_lat, g_ce = torch.autograd.grad(loss, [lat, ce])
        assert float(g_lat) == pytest.approx(slope) and float(g_ce) == 1.0
        assert loss.item() == pytest.approx(1.5 + 10.0 * max(0.0, ms - 0.8) / 0.8)
    lat = torch.tensor(0.5, requires_grad=True)
    g_lin, = torch.autograd.grad(LatencyLoss("add#linear", target_ms=0.8, lam=10.0)(ce, lat), [lat])
    assert float(g_lin) == pytest.approx(10.0 / 0.8)


def test_hinge_search_below_the_target_is_the_ce_search(latency, data):
    # a target above the space's slowest net never binds: α moves exactly as with no latency term
    free = _arch_steps(latency, data, LatencyLoss("add#hinge", target_ms=latency.range().max_ms * 1.01,
                                                  lam=100.0), "full_v2", steps=3)[2]
    ce_only = _arch_steps(latency, data, LatencyLoss("add#linear", target_ms=latency.range().max_ms, lam=0.0),
                          "full_v2", steps=3)[2]
    torch.testing.assert_close(torch.cat(free), torch.cat(ce_only))
    # and one at the fastest net binds: α moves toward faster ops, as add#linear's does
    loss = LatencyLoss("add#hinge", target_ms=latency.range().min_ms, lam=100.0)
    _, before, after = _arch_steps(latency, data, loss, "full_v2", steps=8)
    assert float(latency.expected(after)) < float(latency.expected(before))


# ---- memory: one path, not all ------------------------------------------------------------------

def test_supernet_step_keeps_about_one_path_of_activations(data):
    net = build_supernet(RES, WIDTH, 0)
    net.set_generator(torch.Generator().manual_seed(0))
    net.train()
    x = next(Batches(data.train, 32).epoch())[0]
    net.set_mode("weights")
    sampled_bytes = saved_bytes(lambda: net(x))
    arch = [m.choices[m.sampled[0]] for _, m in net.mixed_ops()]
    single = proxyless_net(arch, WIDTH, input_size=RES, stem_stride=2).build().train()
    single_bytes = saved_bytes(lambda: single(x))
    net.set_mode("full_v2")
    full_v2_bytes = saved_bytes(lambda: net(x))
    net.set_mode("all")
    all_bytes = saved_bytes(lambda: net(x))
    assert 0.9 < sampled_bytes / single_bytes < 1.1, (sampled_bytes, single_bytes)
    assert full_v2_bytes < 1.5 * single_bytes, (full_v2_bytes, single_bytes)
    assert all_bytes > 3 * single_bytes, (all_bytes, single_bytes)


# ---- LUT coverage and targets -------------------------------------------------------------------

def test_a_missing_key_names_the_key_and_the_command(latency):
    table = dict(latency.model.table)
    gone = latency.candidates[3][2].key
    del table[gone]
    with pytest.raises(MissingEntryError, match=re.escape(
            "hil lut build --device local-cpu --space proxyless-mobile --resolution 32 --width 0.25")) as e:
        SearchLatency(LatencyModel(table, "local-cpu"), lut_space(RES, WIDTH))
    assert gone in str(e.value)


def test_unreachable_target_names_the_range(latency):
    r = latency.range()
    with pytest.raises(ConfigError, match=rf"spans {r.min_ms:.4g}\.\.{r.max_ms:.4g} ms"):
        latency.check_target(r.min_ms * 0.5)
    latency.check_target(r.min_ms * 1.01)


def test_predicted_latency_is_the_lut_sum(latency):
    arch = lut_space(RES, WIDTH).random_arch(__import__("random").Random(5))
    predicted, lut_sum = latency.arch(arch)
    manual = sum(latency.model.table[w.key] for w in lut_space(RES, WIDTH).layers(arch))
    assert lut_sum == pytest.approx(manual) and predicted == pytest.approx(manual)  # no calibration fitted
    one_hot = [torch.tensor([float(op == a) for op in slot.choices]) for slot, a in
               zip(lut_space(RES, WIDTH).slots, arch, strict=True)]
    assert float(latency.expected(one_hot)) == pytest.approx(manual, rel=1e-5)


# ---- the CLI end to end --------------------------------------------------------------------------

TINY = ["--resolution", str(RES), "--width", str(WIDTH), "--steps-per-epoch", "4", "--batch-size", "16",
        "--arch-every", "2", "--train-limit", "128", "--val-limit", "64", "--threads", "1"]


@pytest.mark.slow
def test_cli_search_resume_retrain(lut_db, tmp_path):
    out = tmp_path / "s"
    args = ["nas", "search", "--device", "local-cpu", "--space", "proxyless-mobile", "--db", str(lut_db),
            "--target-ms", "100", "--warmup-epochs", "1", "--out", str(out), *TINY]
    p = hil(*args, "--epochs", "1")
    assert p.returncode == 0, p.stderr
    # the one-process search resumed in two processes (docs/TRAINING.md)
    p = hil(*args, "--epochs", "2", "--nproc", "2", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    hist = json.loads((out / "alpha_history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and [h["phase"] for h in hist] == ["warmup", "search"]
    assert hist[1]["arch_steps"] == 2 and set(hist[1]["alpha"]) == {f"block{i}" for i in range(1, 22)}
    assert (out / "arch.png").stat().st_size > 0 and (out / "search.safetensors").exists()
    arch = json.loads((out / "arch.json").read_text())
    assert arch["arch"] == rep["arch"] and len(arch["arch"]) == 21
    # its predicted latency is its LUT sum (this LUT has no calibration)
    with open_store(str(lut_db)) as store:
        table = LatencyModel.from_store(store, "local-cpu").table
    manual = sum(table[w.key] for w in lut_space(RES, WIDTH).layers(arch["arch"]))
    assert arch["predicted_ms"] == pytest.approx(manual) and arch["lut_sum_ms"] == pytest.approx(manual)
    # the derived network builds and trains a step
    model = proxyless_net(**arch["model"]["options"]).build()
    x, y = next(Batches(fashion_mnist(size=RES, train_limit=8).train, 8).epoch())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and model.stem[0].weight.grad is not None
    # retrain from scratch to a checkpoint
    ck = tmp_path / "model.safetensors"
    p = hil("nas", "retrain", str(out / "arch.json"), "--epochs", "1", "--train-limit", "64", "--val-limit", "32",
            "--threads", "1", "--out", str(ck), "--nproc", "2", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["arch"] == arch["arch"] and r["epochs"] == 1 and ck.exists() and r["world"] == 2
    assert not list(tmp_path.rglob("*.pt")) or all(f.name.endswith(".state.pt") for f in tmp_path.rglob("*.pt"))
    # a finished search derived again with another rule: nothing searched, arch.json rewritten
    mtime = (out / "search.safetensors").stat().st_mtime_ns
    p = hil(*args, "--epochs", "2", "--derive", "target", "--target-ms", "100", "--json")
    assert p.returncode == 0, p.stderr
    again = json.loads((out / "arch.json").read_text())
    assert again["search"]["derive"] == "target" and (out / "search.safetensors").stat().st_mtime_ns == mtime
    # 100 ms is far above this space here, and no block's p(zero) passed 1/2 in two epochs: nothing skipped
    assert max(ops.get("zero", 0.0) for ops in again["alpha"].values()) <= 0.5 and "zero" not in again["arch"]
    p = hil(*args, "--epochs", "2", "--derive", "nope")
    assert_user_error(p, "nope", "argmax, target")


@pytest.mark.slow
def test_cli_bad_input_is_one_line(lut_db, tmp_path):
    base = ["nas", "search", "--device", "local-cpu", "--space", "proxyless-mobile", "--out", str(tmp_path / "o")]
    # unreachable target: the range this space spans on the device
    p = hil(*base, "--db", str(lut_db), "--target-ms", "0.001", *TINY)
    assert_user_error(p, "unreachable", "spans", "local-cpu")
    # a LUT of another width than the search
    p = hil(*base, "--db", str(lut_db), "--target-ms", "100", "--resolution", str(RES), "--width", "0.5")
    assert_user_error(p, "another resolution or width", "--width 0.5")
    # no LUT at all
    p = hil(*base, "--db", str(tmp_path / "empty.db"), "--target-ms", "100")
    assert_user_error(p, "no LUT for device 'local-cpu'", "hil lut build")
    # one key missing from the LUT
    db = tmp_path / "partial.db"
    db.write_bytes(lut_db.read_bytes())
    key = lut_space(RES, WIDTH).slots[5].workload("5x5_MBConv6").key
    con = sqlite3.connect(db)
    con.execute("DELETE FROM measurements WHERE key = ?", (key,))
    con.commit()
    con.close()
    p = hil(*base, "--db", str(db), "--target-ms", "100", *TINY)
    assert_user_error(p, key, "hil lut build --device local-cpu")
    p = hil("nas", "retrain", str(tmp_path / "nope.json"))
    assert_user_error(p, "nope.json", "not found")



def test_resumed_search_ends_like_an_uninterrupted_one(latency, data, tmp_path):
    from hil.optimizers.proxyless.search import SearchConfig, search

    cfg = SearchConfig(epochs=3, warmup_epochs=1, batch_size=16, steps_per_epoch=4, arch_every=2,
                       target_ms=latency.range().max_ms, eval_limit=0, arch_lr=0.05)

    def run(out: Path, stop_after: int | None = None):
        def log(msg: str) -> None:
            if stop_after is not None and msg.startswith(f"epoch {stop_after}/"):
                raise KeyboardInterrupt  # Ctrl-C right after an epoch's checkpoint

        net = build_supernet(RES, WIDTH, 0)
        return net, search(net, latency, data, cfg, out_dir=out, log=log)

    whole, r = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_after=2)
    resumed, r2 = run(tmp_path / "b")
    assert r2.resumed_from == 2 and [h.epoch for h in r2.history] == [1, 2, 3]
    assert r.arch == r2.arch
    for (n, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=n)


def test_a_state_from_before_largest_first_resumes_only_as_the_uniform_warm_up(latency, data, tmp_path):
    # States written before the setting existed were searched with the public warm-up (share 0), not
    # with today's default: resuming one under the default must be refused, naming the setting.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from hil.optimizers.proxyless.search import FORMAT, STATE_FILE, SearchConfig, search
    from hil.optimizers.train import CheckpointError

    def cfg(share: float, epochs: int) -> SearchConfig:
        return SearchConfig(epochs=epochs, warmup_epochs=1, largest_first=share, batch_size=16, steps_per_epoch=2,
                            arch_every=100, target_ms=latency.range().max_ms, eval_limit=0)

    search(build_supernet(RES, WIDTH, 0), latency, data, cfg(0.0, 1), out_dir=tmp_path)
    state = tmp_path / STATE_FILE
    with safe_open(str(state), framework="pt") as f:
        info = json.loads(f.metadata()["hil"])
    del info["config"]["largest_first"]
    save_file(load_file(str(state)), str(state), metadata={"format": FORMAT, "hil": json.dumps(info)})
    with pytest.raises(CheckpointError, match=re.escape("largest_first=0.0, this run has 0.5")):
        search(build_supernet(RES, WIDTH, 0), latency, data, cfg(0.5, 2), out_dir=tmp_path)
    r = search(build_supernet(RES, WIDTH, 0), latency, data, cfg(0.0, 2), out_dir=tmp_path)
    assert r.resumed_from == 1 and len(r.history) == 2


# ---- the supernet under DistributedDataParallel (2 gloo processes) ------------------------------

DDP_CFG = dict(epochs=2, warmup_epochs=1, batch_size=16, steps_per_epoch=2, arch_every=2, eval_limit=0,
               arch_lr=0.05)


def _ddp_search(lut_db: str, out: Path, log=None, dist=None):
    from hil.optimizers.proxyless.search import SearchConfig, search

    with open_store(lut_db) as store:
        latency = open_latency(store, "local-cpu", RES, WIDTH)
    cfg = SearchConfig(target_ms=latency.range().max_ms, **DDP_CFG)
    net = build_supernet(RES, WIDTH, 0)
    r = search(net, latency, fashion_mnist(size=RES, train_limit=128, val_limit=64, test_limit=8), cfg,
               out_dir=out, log=log, dist=dist)
    return net, r


def _nas_worker(lut_db: str, tmp: str) -> dict:
    import shutil

    from hil.optimizers.dist import Dist

    torch.set_num_threads(1)
    d = Dist.from_env("cpu")
    tmp_path = Path(tmp)

    def snap(msg: str) -> None:  # the state as an interruption after epoch 1 leaves it
        if msg.startswith("epoch 1/"):
            shutil.copytree(tmp_path / "two0", tmp_path / "two-after-1")

    # Each rank gets its own folder: only rank 0's may fill.
    net, r = _ddp_search(lut_db, tmp_path / f"two{d.rank}", log=snap, dist=d)
    out = {"state": {k: v.clone() for k, v in net.state_dict().items()}, "arch": r.arch}
    if d.main:
        shutil.copytree(tmp_path / "one", tmp_path / "one-in-two")
    d.barrier()
    _, r2 = _ddp_search(lut_db, tmp_path / "one-in-two", dist=d)
    out.update(resumed_from=r2.resumed_from, epochs=[h.epoch for h in r2.history])
    d.close()
    return out


def test_supernet_search_in_two_processes_and_resume_across_world_sizes(lut_db, tmp_path):
    from hil.optimizers.dist import launch
    from hil.optimizers.proxyless.search import STATE_FILE

    def stop_after_1(msg: str) -> None:
        if msg.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _ddp_search(str(lut_db), tmp_path / "one", log=stop_after_1)
    ranks = launch(2, _nas_worker, str(lut_db), str(tmp_path))
    # the replicas agree: same sampled paths, averaged weight and α gradients, rank 0's BN statistics
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    assert ranks[0]["arch"] == ranks[1]["arch"]
    assert (tmp_path / "two0" / STATE_FILE).exists() and not (tmp_path / "two1" / STATE_FILE).exists()
    # one process's state resumed in two, and two processes' state resumed in one
    assert ranks[0]["resumed_from"] == ranks[1]["resumed_from"] == 1 and ranks[0]["epochs"] == [1, 2]
    _, r = _ddp_search(str(lut_db), tmp_path / "two-after-1")
    assert r.resumed_from == 1 and [h.epoch for h in r.history] == [1, 2]
