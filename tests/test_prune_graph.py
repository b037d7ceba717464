"""Channel groups from the models' own description: residual- and depthwise-coupled channels are
pruned together, every pruned model runs, and its MACs (counted on the torch module) equal the
model's own count."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.models import make_model, mobilenet_v1, mobilenet_v2, proxyless_net, sample_arch
from hil.optimizers.amc.prune import ChannelGraph, candidates, keep_channels, min_keep

torch.set_num_threads(1)

ARCH = sample_arch(3, 0.5)


def torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every Conv2d and Linear, counted by hooks on the module actually run."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x[:1])
    for h in hs:
        h.remove()
    return total


SPECS = {
    "mobilenet-v1": lambda: mobilenet_v1(0.5),
    "mobilenet-v2": lambda: mobilenet_v2(0.5),
    "proxyless": lambda: proxyless_net(ARCH, 0.5),
}


def test_mobilenet_v2_groups_couple_residual_stages():
    g = ChannelGraph(mobilenet_v2(1.0))
    names = [x.name for x in g.prunable()]
    # stem, 17 block middles (block0 has none), 7 stage outputs (block0..), head: 1 + 16 + 7 + 1
    assert len(names) == 25
    stage = g.groups["block1.project"]  # 24 channels: block1 then block2 added to it
    assert stage.producers == ["block1.project", "block2.project"] and stage.residual
    assert stage.consumers == ["block2.expand", "block3.expand"]
    assert g.groups["block6.project"].producers == [f"block{i}.project" for i in range(6, 10)]
    assert g.groups["stem"].depthwise == ["block0.dw"]
    assert g.groups["block0.project"].consumers == ["block1.expand"]
    assert g.groups["block5.expand"].depthwise == ["block5.dw"]


def test_mobilenet_v1_depthwise_follows_its_producer():
    g = ChannelGraph(mobilenet_v1(1.0))
    assert [x.name for x in g.prunable()] == ["stem"] + [f"block{i}.pw" for i in range(1, 14)]
    assert g.groups["block3.pw"].depthwise == ["block4.dw"]
    assert g.groups["block13.pw"].consumers == ["classifier"]


@pytest.mark.parametrize("name", list(SPECS))
def test_random_prunings_run_and_count_their_macs(name):
    spec = SPECS[name]()
    model = spec.build()
    g = ChannelGraph(spec)
    rng = random.Random(0)
    x = torch.randn(2, 1, 32, 32)
    for _ in range(3):
        keep = {gr.name: rng.choice(candidates(gr.channels)) for gr in g.prunable()}
        pruned, pspec = g.prune(model, keep)
        out = pruned.eval()(x)
        assert out.shape == (2, 10)
        assert torch_macs(pruned, x) == pspec.macs < spec.macs or all(
            v == g.groups[k].channels for k, v in keep.items())
        # the spec rebuilds the same shapes: every parameter of the built model matches
        rebuilt = pspec.build()
        rebuilt.load_state_dict(pruned.state_dict())
        assert torch.allclose(rebuilt.eval()(x), out)
        assert pspec.options["channels"] == {k: v for k, v in keep.items() if v != g.groups[k].channels}
    assert torch_macs(model, x) == spec.macs


def test_pruning_nothing_keeps_the_function():
    spec = mobilenet_v2(0.5)
    model = spec.build().eval()
    pruned, pspec = ChannelGraph(spec).prune(model, {})
    x = torch.randn(2, 1, 32, 32)
    assert pspec.workloads() == spec.workloads()
    assert torch.allclose(pruned.eval()(x), model(x))


def test_largest_l1_channels_are_kept_and_residual_sum_is_exact():
    spec = mobilenet_v2(0.5)
    model = spec.build().eval()
    g = ChannelGraph(spec)
    name = "block3.project"  # 16 channels at width 0.5, three blocks
    score = g.importance(model, name)
    k = 8
    keep = {name: k}
    idx = g.select(model, keep)[name]
    assert set(idx.tolist()) == set(torch.topk(score, k).indices.tolist())
    # zeroing the dropped channels in the original gives the pruned network's outputs exactly
    pruned, _ = g.prune(model, keep)
    dropped = sorted(set(range(g.groups[name].channels)) - set(idx.tolist()))
    ref = spec.build().eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in g.groups[name].producers:
            u = g.convs[p]
            ref.get_submodule(u.module).weight[dropped] = 0
            bn = ref.get_submodule(u.bn)
            bn.bias[dropped] = 0
            bn.running_mean[dropped] = 0
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(pruned(x), ref(x), atol=1e-5)


def test_rounding_and_minimum():
    assert min_keep(64) == 16 and min_keep(8) == 8 and min_keep(1280) == 256
    assert keep_channels(0.5, 64) == 32 and keep_channels(0.0, 64) == 16 and keep_channels(1.0, 20) == 20
    assert keep_channels(0.5, 64, divisor=4) == 32 and min_keep(64, divisor=4) == 16
    assert candidates(20) == [8, 16, 20]


def test_unknown_group_is_a_config_error():
    with pytest.raises(ConfigError, match="no prunable channel group 'block99'"):
        ChannelGraph(make_model("mobilenet-v1")).apply({"block99": 8})


def test_least_squares_reconstruction_fits_the_unpruned_outputs_better():
    from hil.optimizers.amc.reconstruct import reconstruct
    from hil.optimizers.data import Batches, fashion_mnist

    spec = mobilenet_v1(0.25)
    torch.manual_seed(0)
    model = spec.build().eval()
    for m in model.modules():  # positive BN shifts keep a random network's features alive
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.uniform_(0.1, 1.0)
    g = ChannelGraph(spec)
    keep = {"block13.pw": 64}  # of 256: the classifier's input channels
    data = fashion_mnist(val_size=100, seed=0, size=32, train_limit=128, val_limit=10, test_limit=10).train
    plain, pspec = g.prune(model, keep)
    fitted, _ = g.prune(model, keep)
    done = reconstruct(g, model, fitted, pspec, keep, data, batches=2, batch_size=64)
    assert done == ["classifier"]
    assert not torch.equal(fitted.classifier.fc.weight, plain.classifier.fc.weight)
    x = torch.cat([b for b, _ in Batches(data, 64).epoch(0)])
    with torch.no_grad():
        ref = model(x)
        err_plain = float(((plain.eval()(x) - ref) ** 2).sum())
        err_fitted = float(((fitted.eval()(x) - ref) ** 2).sum())
    assert err_fitted < err_plain
