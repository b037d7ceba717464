"""Models built from workloads: shapes, names, MAC and parameter counts, LUT and accelerator ties."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hil.errors import ConfigError
from hil.lut_builder.spaces.proxyless import ProxylessMobileSpace
from hil.nets.models import (
    OPS,
    make_model,
    mobilenet_v1,
    mobilenet_v2,
    proxyless_family,
    proxyless_net,
    sample_arch,
)
from hil.nets.torch_build import build_module
from hil.workload import ConvLayer, MBConv, workload_from_json

ARCH = sample_arch(7, 0.5)


def specs():
    return [
        mobilenet_v1(0.25),
        mobilenet_v1(0.75, stem_stride=2),
        mobilenet_v2(0.35),
        mobilenet_v2(1.0),
        mobilenet_v2(1.4, input_size=40, in_channels=3, classes=7),
        proxyless_net(ARCH, 0.5),
        proxyless_net(sample_arch(8, 1.0, input_size=64, in_channels=3), 1.0, input_size=64, in_channels=3),
    ]


def hook_counts(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, tuple[int, ...]]]:
    """MACs of every Conv2d / Linear counted from the shapes torch actually produced."""
    macs = 0
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out[0].numel() * (mod.in_channels // mod.groups) * k
        else:
            macs += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, mod in model.named_modules():
        if name in model.order:
            handles.append(mod.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape))))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return macs, shapes


@pytest.mark.parametrize("spec", specs(), ids=lambda s: f"{s.name}-{s.options['width']}")
def test_macs_params_and_shapes_agree_with_torch(spec):
    model = spec.build()
    o = spec.options
    x = torch.randn(1, o["in_channels"], o["input_size"], o["input_size"])
    macs, shapes = hook_counts(model, x)
    assert spec.macs == macs
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert sum(spec.layer_macs().values()) == spec.macs
    for layer in spec.layers:
        w = layer.workload
        if hasattr(w, "output"):
            h, wd, c = w.output
            assert shapes[layer.name] == (1, c, h, wd), layer.name
    assert shapes["classifier"] == (1, o["classes"])


def test_published_imagenet_counts():
    # MobileNet-V2 1.0 / 224: 3,504,872 parameters and 300.8 M MACs (Sandler et al.; torchvision's count).
    v2 = mobilenet_v2(1.0, input_size=224, in_channels=3, classes=1000)
    assert v2.options["stem_stride"] == 2
    assert v2.params == 3_504_872
    assert v2.macs == pytest.approx(300.8e6, rel=1e-3)
    # MobileNet-V1 1.0 / 224: 569 M mult-adds, 4.2 M parameters (Howard et al., Table 1), 4,231,976 trainable.
    v1 = mobilenet_v1(1.0, input_size=224, in_channels=3, classes=1000)
    assert v1.params == 4_231_976
    assert v1.macs == pytest.approx(569e6, rel=1e-3)
    assert v1.layers[-2].workload.output[:2] == (7, 7)


def test_layers_are_found_by_stable_names():
    spec = mobilenet_v2(0.5)
    model = spec.build()
    names = [layer.name for layer in spec.layers]
    assert names[:3] == ["stem", "block0", "block1"] and names[-2:] == ["head", "classifier"]
    assert spec.layers[0].workload.key.startswith("Conv-input:32x32x1-output:32x32x16")
    for layer in spec.layers:
        built = build_module(layer.workload)
        assert type(model.get_submodule(layer.name)) is type(built)
    units = spec.convs()
    assert [u.name for u in units[:6]] == ["stem", "block0.dw", "block0.project", "block1.expand", "block1.dw",
                                           "block1.project"]
    for u in units:
        mod = model.get_submodule(u.module)
        if u.kind == "fc":
            assert isinstance(mod, nn.Linear) and (mod.in_features, mod.out_features) == (u.cin, u.cout)
            assert u.bn is None
            continue
        assert isinstance(mod, nn.Conv2d)
        assert (mod.in_channels, mod.out_channels, mod.kernel_size[0], mod.stride[0], mod.groups) == (
            u.cin, u.cout, u.kernel, u.stride, u.groups)
        bn = model.get_submodule(u.bn)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == u.cout
        assert (u.kind == "dwconv") == (u.groups == u.cin > 1)
    v1 = mobilenet_v1(0.5)
    assert [layer.name for layer in v1.layers[:4]] == ["stem", "block1.dw", "block1.pw", "block2.dw"]
    assert isinstance(v1.build().get_submodule("block2.dw.0"), nn.Conv2d)
    with pytest.raises(ConfigError, match="no layer"):
        v1.layer("block99.dw")


def test_state_dict_keys_are_layer_names():
    keys = mobilenet_v1(0.25).build().state_dict().keys()
    assert "block13.pw.0.weight" in keys and "classifier.fc.bias" in keys


def test_network_workload_builds_the_same_model():
    spec = proxyless_net(ARCH, 0.5)
    net = spec.network()
    assert list(net.layers) == spec.workloads()
    assert workload_from_json(net.to_json()).key == net.key
    model, seq = spec.build(), build_module(net)
    assert sum(p.numel() for p in seq.parameters()) == spec.params
    # Same parameters in the same order: copy them over and both give the same logits.
    for p, q in zip(model.parameters(), seq.parameters(), strict=True):
        q.data.copy_(p.data)
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(model.eval()(x), seq.eval()(x), atol=1e-5)


def test_proxyless_layers_are_keys_of_the_space_lut():
    space = ProxylessMobileSpace(**proxyless_family(0.5).options())
    lut_keys = {w.key for w in space.workloads()}
    for seed in range(5):
        spec = proxyless_net(sample_arch(seed, 0.5), 0.5)
        assert {w.key for w in spec.workloads()} <= lut_keys
    # v2's fixed layers are the space's fixed layers: one LUT prices both
    v2 = mobilenet_v2(1.0)
    full = proxyless_family(1.0)
    assert v2.layer("stem").workload.key == full.first_conv.key
    assert v2.layer("block0").workload.key == full.first_block.key
    assert v2.layer("head").workload.key == full.last_conv.key
    assert v2.layer("classifier").workload.key == full.logits.key


def test_proxyless_names_keep_slot_positions():
    arch = ["3x3_MBConv3"] * 21
    arch[2] = "zero"
    spec = proxyless_net(",".join(arch), 0.5)
    names = [layer.name for layer in spec.layers]
    assert "block3" not in names and "block2" in names and "block4" in names
    assert len(names) == 2 + 20 + 2
    assert spec.options["arch"] == ",".join(arch)
    rebuilt = make_model("proxyless", **spec.options)
    assert rebuilt.workloads() == spec.workloads()
    blk = spec.layer("block5").workload  # first block of stage 2: stride 2, no skip
    assert isinstance(blk, MBConv) and blk.stride == 2 and blk.idskip == 0


def test_proxyless_bad_arch():
    with pytest.raises(ConfigError, match="21 block choices"):
        proxyless_net(["3x3_MBConv3"] * 20)
    bad = ["3x3_MBConv3"] * 21
    bad[4] = "zero"  # the first block of the second stage changes shape
    with pytest.raises(ConfigError, match="cannot be 'zero'"):
        proxyless_net(bad)
    bad[4] = "9x9_MBConv3"
    with pytest.raises(ConfigError, match="unknown ProxylessNAS op"):
        proxyless_net(bad)
    with pytest.raises(ConfigError, match="needs an architecture"):
        make_model("proxyless", width=0.5)


def test_sample_arch_is_seeded():
    assert sample_arch(3) == sample_arch(3)
    assert len({sample_arch(s) for s in range(10)}) == 10
    assert set(sample_arch(3)) <= set(OPS)


def test_qlayers_for_the_accelerators():
    spec = mobilenet_v2(0.5)
    units = spec.convs()
    q = spec.qlayers(8, 8)
    assert len(q) == len(units) == 1 + 2 + 16 * 3 + 1 + 1
    assert [x.name for x in q[:3]] == ["conv", "dwconv", "conv"] and q[-1].name == "fc"
    # the normalized image and the linear bottlenecks are signed, ReLU6 outputs are not
    assert q[0].asigned and not q[1].asigned
    assert q[3].asigned  # block1.expand reads block0's linear output
    assert not q[4].asigned and not q[5].asigned and not q[-1].asigned
    assert q[-1].input == (1, 1, 1280) and q[-1].output == (1, 1, 10)
    bits = list(range(len(units)))
    mixed = spec.qlayers([2 + b % 7 for b in bits], [8 - b % 7 for b in bits])
    assert [x.wbits for x in mixed[:3]] == [2, 3, 4] and [x.abits for x in mixed[:3]] == [8, 7, 6]
    assert mixed[5].key == units[5].qlayer(7, 3).key
    with pytest.raises(ConfigError, match="bitwidths"):
        spec.qlayers([8, 8], 8)
    v1q = mobilenet_v1(0.5).qlayers(4, 4)
    assert sum(x.name == "dwconv" for x in v1q) == 13 and len(v1q) == 28


def test_bad_model_options():
    with pytest.raises(ConfigError, match="unknown model"):
        make_model("resnet-50")
    for width in (0.0, -1, 5.0):
        with pytest.raises(ConfigError, match="width multiplier"):
            mobilenet_v2(width)
    with pytest.raises(ConfigError, match="stem_stride"):
        mobilenet_v1(1.0, stem_stride=3)
    with pytest.raises(ConfigError, match=r"takes no|unexpected"):
        make_model("mobilenet-v2", widht=1.0)


def test_width_rounds_channels_to_multiples_of_8():
    for spec in (mobilenet_v1(0.3), mobilenet_v2(0.3), proxyless_net(ARCH, 0.3)):
        for u in spec.convs()[:-1]:
            assert u.cout % 8 == 0, (spec.name, u.name, u.cout)
    assert isinstance(mobilenet_v2(0.3).layers[0].workload, ConvLayer)


def test_random_forward_is_deterministic():
    random.seed(0)
    torch.manual_seed(0)
    a = mobilenet_v2(0.25).build()
    torch.manual_seed(0)
    b = mobilenet_v2(0.25).build()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))
