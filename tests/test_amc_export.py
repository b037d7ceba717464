"""Exporting a pruned checkpoint: the JSON config rebuilds it, and the TFLite file (built through the
project's Keras layers and converter, with the trained weights) computes what torch computes."""

from __future__ import annotations

import json

import pytest
import torch

from hil.nets.models import Layer, mobilenet_v2
from hil.optimizers.amc.export import export
from hil.optimizers.amc.prune import ChannelGraph
from hil.optimizers.amc.search import load_pruned, save_pruned
from hil.workload import workload_from_json

torch.set_num_threads(1)


def test_export_rebuilds_and_tflite_matches_torch(tmp_path):
    pytest.importorskip("tensorflow")
    spec = mobilenet_v2(0.25)
    g = ChannelGraph(spec)
    torch.manual_seed(0)
    model = spec.build()
    for m in model.modules():  # BN statistics that are not the identity, so folding them is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    keep = {"block1.expand": 16, "block6.project": 8, "head": 640}
    pruned, pspec = g.prune(model.eval(), keep)
    ckpt = tmp_path / "p.safetensors"
    save_pruned(ckpt, pruned, pspec, {"keep": keep}, {})
    rep = export(ckpt, tmp_path / "out", tflite="float32")
    config = json.loads((tmp_path / "out" / "model.json").read_text())
    layers = tuple(Layer(x["name"], workload_from_json(x["workload"])) for x in config["layers"])
    assert layers == pspec.layers and config["options"]["channels"] == keep
    _, again, _ = load_pruned(tmp_path / "out" / "model.safetensors")
    assert again.layers == pspec.layers
    check = rep["tflite_check"]
    assert check["top1_agreement"] >= 0.99 and check["max_abs_logit_diff"] < 1e-3, check
    assert "DEPTHWISE_CONV_2D" in rep["tflite_ops"] and "ADD" in rep["tflite_ops"]


def test_lut_keras_builder_builds_a_pruned_block():
    pytest.importorskip("tensorflow")
    from keras import layers

    from hil.devices.host.tflite_convert import keras_model
    from hil.workload import MBConv

    w = MBConv((8, 8, 16), (4, 4, 24), 6, 3, 2, 0, mid=40)
    m = keras_model(w)
    dw = [x for x in m.layers if isinstance(x, layers.DepthwiseConv2D)]
    assert len(dw) == 1 and tuple(dw[0].kernel.shape) == (3, 3, 40, 1)
    assert tuple(m.output.shape) == (1, 4, 4, 24)
