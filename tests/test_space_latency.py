import pytest
import torch

from hil.errors import ConfigError, MissingEntryError
from hil.latency import LatencyModel, NetworkCalibration
from hil.lut_builder.spaces import make_space
from hil.nets.proxyless import OPS
from hil.nets.torch_build import build_module, input_shape


def test_space_shape_and_unique_workloads():
    s = make_space("proxyless-mobile")
    assert len(s.slots) == 21
    assert sum(not sl.first_in_stage for sl in s.slots) == 15  # blocks that may be skipped
    ws = s.workloads()
    assert len({w.key for w in ws}) == len(ws)
    # 4 fixed layers + 6 candidates for each stage's first block and 6 shared by its other blocks
    assert len(ws) == 4 + 5 * 12 + 6
    keys = {w.key for w in ws}
    assert "expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:7-stride:2-idskip:0" in keys
    assert "Conv_1-input:7x7x320-output:7x7x1280" in keys


def test_sampling_is_seeded_and_layers_are_lut_workloads():
    s = make_space("proxyless-mobile", resolution=64)
    a, b = s.sample(5, seed=3), s.sample(5, seed=3)
    assert [n.key for n in a] == [n.key for n in b]
    assert [n.key for n in s.sample(5, seed=4)] != [n.key for n in a]
    keys = {w.key for w in s.workloads()}
    for net in a:
        assert all(layer.key in keys for layer in net.layers)


def test_network_builds_and_runs_in_torch():
    s = make_space("proxyless-mobile", resolution=32, classes=10)
    net = s.network(["3x3_MBConv3"] + ["zero" if not sl.first_in_stage else "5x5_MBConv6" for sl in s.slots[1:]])
    m = build_module(net).eval()
    with torch.inference_mode():
        y = m(torch.randn(input_shape(net, 2)))
    assert y.shape == (2, 10)


def test_bad_space_options():
    with pytest.raises(ConfigError, match="resolution"):
        make_space("proxyless-mobile", resolution=3)
    with pytest.raises(ConfigError, match="unknown search space 'nas-bench'"):
        make_space("nas-bench")
    with pytest.raises(ConfigError, match="bits"):
        make_space("proxyless-mobile", bits="2..8")
    s = make_space("proxyless-mobile")
    with pytest.raises(ConfigError, match="first of its stage"):
        s.check_arch(["zero"] * 21)


def test_missing_entry_names_the_key():
    m = LatencyModel({"a": 1.0}, device="cpu0")
    with pytest.raises(MissingEntryError, match=r"'b'.*cpu0"):
        m.latency("b")


def test_expected_latency_matches_manual_and_is_differentiable():
    s = make_space("proxyless-mobile", resolution=32)
    table = {w.key: float(i + 1) for i, w in enumerate(s.workloads())}
    m = LatencyModel(table)
    cands = [[sl.workload(op) if op in sl.choices else None for op in OPS] for sl in s.slots]
    logits = torch.zeros(len(s.slots), len(OPS), requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    e = m.expected(s.fixed, cands, list(probs))
    manual = sum(table[w.key] for w in s.fixed) + sum(
        sum((table[c.key] if c is not None else 0.0) for c in cs) / len(OPS) for cs in cands)
    assert float(e.detach()) == pytest.approx(manual, rel=1e-5)
    e.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # the same with plain floats
    assert m.expected(s.fixed, cands, [[1 / len(OPS)] * len(OPS)] * len(cands)) == pytest.approx(manual)


def test_calibration_fit_recovers_scale_and_offset():
    sums = [10.0, 12.0, 15.0, 20.0, 30.0]
    meas = [1.1 * x + 2.0 for x in sums]
    c = NetworkCalibration.fit(sums, meas)
    assert c.scale == pytest.approx(1.1) and c.offset_ms == pytest.approx(2.0)
    assert LatencyModel({"a": 10.0}, calibration=c).network(["a"]) == pytest.approx(13.0)
