"""proxyless-mobile on the simulated accelerators: its float workloads lowered to 8/8 quantized layers
(`hil.nets.models.lower`), a LUT built with real Verilator runs of bismo-edge, validated against whole
networks in one continuous simulation, and searched by `hil nas search` like any other device's LUT.

Tiny sizes (resolution 32, width 0.25: 58 entries, a few seconds of simulation).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from hil.latency import LatencyModel
from hil.lut_builder.spaces.proxyless import ProxylessMobileSpace
from hil.nets.models import lower, mobilenet_v1, mobilenet_v2, proxyless_net, qlayer_macs
from hil.nets.torch_build import build_module, input_shape
from hil.store import open_store
from hil.workload import ConvLayer, Logits, MBConv, QuantLayer, Workload
from tests.hilcli import assert_user_error, hil

RES, WIDTH = 32, 0.25
DEVICE = "bismo-edge"
SPACE = ["--space", "proxyless-mobile", "--resolution", str(RES), "--width", str(WIDTH)]


def torch_convs(w: Workload) -> list[tuple[tuple[int, ...], tuple[int, ...], int, int, int, int]]:
    """(input HWC, output HWC, kernel, stride, groups, MACs) of every conv / linear the torch module of
    `w` runs, read from the tensors a forward pass sees: an account independent of the lowering's."""
    module = build_module(w).eval()
    seen: list[tuple[tuple[int, ...], tuple[int, ...], int, int, int, int]] = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            _, c, h, wd = inp[0].shape
            _, co, ho, wo = out.shape
            k = mod.kernel_size[0]
            seen.append(((h, wd, c), (ho, wo, co), k, mod.stride[0], mod.groups,
                         ho * wo * co * (c // mod.groups) * k * k))
        else:
            fi, fo = inp[0].shape[-1], out.shape[-1]
            seen.append(((1, 1, fi), (1, 1, fo), 1, 1, 1, fi * fo))

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        module(torch.zeros(input_shape(w, 1)))
    return seen


@pytest.mark.parametrize("res,width", [(32, 0.25), (64, 0.5)])
def test_lowering_matches_the_torch_module_layer_by_layer(res, width):
    space = ProxylessMobileSpace(resolution=res, width=width)
    kinds = set()
    for w in space.workloads():
        qs = lower(w, 8, 8)
        got = [(q.input, q.output, q.kernel, q.stride, q.groups, qlayer_macs(q)) for q in qs]
        assert got == torch_convs(w), w.key
        assert all(q.wbits == 8 and q.abits == 8 for q in qs)
        kinds.add(type(w))
        if isinstance(w, MBConv):
            # 1x1 expand (absent at expand 1), kxk depthwise over the expanded width, 1x1 project
            names = [q.name for q in qs]
            assert names == (["conv", "dwconv", "conv"] if w.expand != 1 else ["dwconv", "conv"])
            dw = qs[-2]
            assert (dw.kernel, dw.stride, dw.groups) == (w.kernel, w.stride, w.input[2] * w.expand)
    assert kinds == {ConvLayer, MBConv, Logits}


def test_a_network_lowers_as_its_blocks_and_as_the_model_spec_does():
    space = ProxylessMobileSpace(resolution=RES, width=WIDTH)
    rng = random.Random(3)
    archs = [space.random_arch(rng) for _ in range(12)] + [tuple(s.choices[-1] for s in space.slots)]
    for arch in archs:  # the last: every block that may be skipped is zero
        net = space.network(arch)
        whole = lower(net, 8, 8)
        # per LUT entry, each in its context, concatenated: what the LUT sum adds up; zero blocks absent
        assert whole == [q for w in net.layers for q in lower(w, 8, 8)]
        spec = proxyless_net(arch, WIDTH, input_size=RES, in_channels=3, classes=1000, stem_stride=2)
        assert whole == spec.qlayers(8, 8)  # "through the models' qlayers"
        assert sum(qlayer_macs(q) for q in whole) == spec.macs
    # the context rule (input signedness of a lone block) holds on the other models too
    for spec in (mobilenet_v1(0.25), mobilenet_v2(0.5, input_size=64)):
        assert [q for layer in spec.layers for q in lower(layer.workload, 8, 8)] == spec.qlayers(8, 8)


@pytest.fixture(scope="module")
def rtl_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rtl-proxyless")
    db = root / "hil.db"
    p = hil("lut", "build", "-d", DEVICE, *SPACE, "--calibration-nets", "0", "--db", str(db), "--json",
            env={"HIL_LEASE_DIR": str(root / "leases")})
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["failed"] == 0 and rep["entries"] == rep["total"] == 58
    return db


def test_rtl_sim_lut_has_the_spaces_keys_each_a_simulation_of_its_lowered_layers(rtl_db):
    from hil.rtl.presets import make_accelerator

    space = ProxylessMobileSpace(resolution=RES, width=WIDTH)
    with open_store(str(rtl_db)) as store:
        model = LatencyModel.from_store(store, DEVICE)
        table = model.table
        records = store.lut(model.fp_class)
    assert set(table) == {w.key for w in space.workloads()}  # the keys every device's LUT has
    # Three entries re-simulated here, straight through the accelerator: the stem, a block, the logits.
    picks = [space.first_conv, space.slots[4].workload("7x7_MBConv6"), space.logits]
    acc = make_accelerator(DEVICE, {})
    try:
        for w in picks:
            assert table[w.key] == pytest.approx(acc.network(lower(w, 8, 8), 1).latency_ms, rel=1e-12), w.key
    finally:
        acc.close()
    # twice the expanded width is more work for the array (kernel sizes may share one K tile, so
    # only expand is compared)
    slot = space.slots[0]
    assert table[slot.workload("7x7_MBConv6").key] > table[slot.workload("7x7_MBConv3").key]
    lowered_keys = records[picks[1].key].metrics["lowered"]
    assert lowered_keys == {"wbits": 8, "abits": 8, "layers": [q.key for q in lower(picks[1], 8, 8)]}


def test_validate_sums_blocks_against_continuous_whole_network_simulations(rtl_db, tmp_path):
    p = hil("validate", "-d", DEVICE, *SPACE, "--samples", "3", "--db", str(rtl_db), "--json",
            env={"HIL_LEASE_DIR": str(tmp_path / "leases")})
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["n"] == 3
    # deterministic simulation: block sums miss only the overlap across block boundaries
    assert 0 < rep["mape"] < 5 and rep["within_10pct"] == 1.0  # mape in percent


TINY = ["--steps-per-epoch", "2", "--batch-size", "16", "--arch-every", "1", "--train-limit", "64",
        "--val-limit", "32", "--threads", "1", "--epochs", "2", "--warmup-epochs", "1"]


def test_nas_search_runs_on_the_rtl_sim_lut(rtl_db, tmp_path):
    env = {"HIL_LEASE_DIR": str(tmp_path / "leases")}
    base = ["nas", "search", "--device", DEVICE, *SPACE, "--db", str(rtl_db), *TINY]
    p = hil(*base, "--target-ms", "0.0001", "--out", str(tmp_path / "bad"), env=env)
    assert_user_error(p, "unreachable", DEVICE, "spans")
    out = tmp_path / "s"
    p = hil(*base, "--target-ms", "3", "--loss", "add#linear", "--out", str(out), "--json", env=env)
    assert p.returncode == 0, p.stderr
    arch = json.loads((out / "arch.json").read_text())
    space = ProxylessMobileSpace(resolution=RES, width=WIDTH)
    with open_store(str(rtl_db)) as store:
        table = LatencyModel.from_store(store, DEVICE).table
    lut_sum = sum(table[w.key] for w in space.layers(arch["arch"]))
    assert arch["predicted_ms"] == pytest.approx(lut_sum) and arch["lut_sum_ms"] == pytest.approx(lut_sum)


def test_quantized_networks_are_not_lowered_again():
    """A network of QuantLayers keeps its own bitwidths; only float workloads are lowered at 8/8."""
    from hil.devices.host.rtl_sim import lowered

    q = QuantLayer("conv", (8, 8, 8), (8, 8, 8), 3, 1, 1, 4, 2)
    assert lowered(q) is None
    block = MBConv((8, 8, 8), (8, 8, 8), 3, 3, 1, 1)
    assert [x.wbits for x in lowered(block) or []] == [8, 8, 8]
