"""BN recalibration of AMC's pruned models before scoring (`--bn-batches`), on a tiny MobileNet-V1.

Recalibration replaces the BN running statistics by those of the pruned model on a few training
batches (nothing else changes), the episode is scored after it, the held-out split never feeds it,
it is a function of the seed, and 0 batches scores exactly as before.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.models import make_model
from hil.optimizers.amc.env import AmcEnv, Budget, EnvConfig, FlopsCost
from hil.optimizers.bn import batchnorms, calibration_batches, recalibrate_bn
from hil.optimizers.data import MEAN, STD, ImageSet, fashion_mnist
from hil.optimizers.train import TrainConfig, evaluate, seed_everything, train

torch.set_num_threads(1)
BATCH = 32


@pytest.fixture(scope="module")
def trained() -> dict:
    data = fashion_mnist(val_size=5000, seed=0, size=32, train_limit=1000, val_limit=200, test_limit=1)
    spec = make_model("mobilenet-v1", width=0.25, input_size=32)
    seed_everything(0)
    model = spec.build()
    train(model, data, TrainConfig(epochs=1, steps_per_epoch=10, batch_size=BATCH, lr=0.1, seed=0,
                                   deterministic=False, channels_last=False), device="cpu", validate=False)
    return {"data": data, "spec": spec, "model": model.eval()}


def make_env(trained: dict, bn_batches: int, *, val: ImageSet | None = None, seed: int = 0) -> AmcEnv:
    cfg = EnvConfig(bn_batches=bn_batches, bn_batch_size=BATCH, bn_seed=seed)
    return AmcEnv(trained["spec"], trained["model"], FlopsCost(), Budget.parse("flops=0.5"),
                  val if val is not None else trained["data"].val, cfg, train=trained["data"].train)


def policy(env: AmcEnv) -> dict[str, int]:
    keep: dict[str, int] = {}
    for i in range(env.steps):
        env.act(keep, i, 0.6)
    return keep


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_recalibration_changes_only_bn_statistics_and_the_episode_is_scored_after_it(trained):
    before = buffers(trained["model"])
    env = make_env(trained, 2)
    keep = policy(env)
    raw, pspec = env.graph.prune(trained["model"], keep)
    cal, cspec = env.pruned_model(keep)
    assert cspec == pspec and pspec.macs <= env.target
    raw_sd, cal_sd = raw.state_dict(), cal.state_dict()
    stats = [k for k in raw_sd if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(raw_sd[k], cal_sd[k]) for k in stats)
    # weights, biases and BN affine parameters: untouched (no weight update)
    for k in raw_sd:
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(raw_sd[k], cal_sd[k]), k
    # the statistics are those of the training batches: the first BN's mean is the stem conv's
    # output averaged over both batches' images and positions
    inputs = calibration_batches(trained["data"].train, 2, BATCH, 0)
    first_conv = next(m for m in cal.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        stem = torch.cat([first_conv(x) for x in inputs])
    torch.testing.assert_close(batchnorms(cal)[0].running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    # the episode's accuracy is the recalibrated model's, not the raw one's
    res = env.finish(keep, 0)
    assert res.accuracy == evaluate(cal, trained["data"].val, device="cpu", channels_last=False).accuracy
    raw_eval = evaluate(raw, trained["data"].val, device="cpu", channels_last=False)
    cal_eval = evaluate(cal, trained["data"].val, device="cpu", channels_last=False)
    assert cal_eval.loss != raw_eval.loss
    assert res.flops == pspec.macs <= env.target and res.timings["bn_s"] > 0
    # the trained model the episodes prune is left as it was
    after = trained["model"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_held_out_split_never_feeds_recalibration(trained):
    val = trained["data"].val
    inverted = ImageSet("val", 255 - val.images, val.labels)  # a very different held-out set
    a, b = make_env(trained, 2), make_env(trained, 2, val=inverted)
    keep = policy(a)
    sa, sb = a.pruned_model(keep)[0].state_dict(), b.pruned_model(keep)[0].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # every calibration image is a training image
    train_images = {bytes(x.numpy()) for x in trained["data"].train.images}
    for x in a.bn_inputs:
        pixels = torch.round((x * STD + MEAN) * 255).to(torch.uint8)
        assert all(bytes(p.numpy()) in train_images for p in pixels)
    assert sum(len(x) for x in a.bn_inputs) == 2 * BATCH


def test_recalibration_is_a_function_of_the_seed(trained):
    keep = policy(make_env(trained, 0))
    one = make_env(trained, 2, seed=3).pruned_model(keep)[0].state_dict()
    again = make_env(trained, 2, seed=3).pruned_model(keep)[0].state_dict()
    other = make_env(trained, 2, seed=4).pruned_model(keep)[0].state_dict()
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one if k.endswith("running_mean"))


def test_zero_batches_scores_exactly_as_before(trained):
    env = make_env(trained, 0)
    assert env.bn_inputs == [] and EnvConfig().bn_batches == 0
    keep = policy(env)
    raw, _ = env.graph.prune(trained["model"], keep)
    model, _ = env.pruned_model(keep)
    sr, sm = raw.state_dict(), model.state_dict()
    assert sr.keys() == sm.keys() and all(torch.equal(sr[k], sm[k]) for k in sr)
    assert env.finish(keep, 0).accuracy == evaluate(raw, trained["data"].val, device="cpu",
                                                    channels_last=False).accuracy
    # no BN layer: nothing to recalibrate
    assert recalibrate_bn(nn.Linear(3, 2), [torch.zeros(1, 3)]) == 0


def test_recalibration_restores_modes_and_momentum(trained):
    model = copy.deepcopy(trained["model"]).train()
    n = recalibrate_bn(model, calibration_batches(trained["data"].train, 1, BATCH, 0))
    assert n == len(batchnorms(model)) > 0
    assert model.training and all(m.training and m.momentum == 0.1 for m in batchnorms(model))


def test_bad_settings_are_config_errors(trained):
    with pytest.raises(ConfigError, match="--bn-batches must be >= 0"):
        EnvConfig(bn_batches=-1)
    with pytest.raises(ConfigError, match="training split has 1000"):
        calibration_batches(trained["data"].train, 100, BATCH, 0)
    with pytest.raises(ConfigError, match="needs the training split"):
        AmcEnv(trained["spec"], trained["model"], FlopsCost(), Budget.parse("flops=0.5"), trained["data"].val,
               EnvConfig(bn_batches=1))
