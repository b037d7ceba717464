"""A pruned MBConv (its middle width cut by AMC) is a workload like any other, while every existing
key and JSON form stays byte-identical."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from hil.errors import ConfigError
from hil.lut_builder.spaces import make_space
from hil.nets.models import Layer, ModelSpec, mobilenet_v1, mobilenet_v2
from hil.nets.torch_build import build_module
from hil.workload import MBConv, canonical_json, workload_from_json


def test_existing_keys_and_json_are_byte_identical():
    # Digests taken on the tree before the `mid` field existed (commit 35b2278).
    ws = (make_space("proxyless-mobile").workloads() + mobilenet_v2().workloads() + mobilenet_v1().workloads()
          + mobilenet_v2(0.5, input_size=64).workloads())
    keys = hashlib.sha256("|".join(w.key for w in ws).encode()).hexdigest()[:16]
    js = hashlib.sha256("|".join(canonical_json(w.to_json()) for w in ws).encode()).hexdigest()[:16]
    assert (len(ws), keys, js) == (138, "88be3f9a462d7905", "976326683f2cd10c")


def test_mid_enters_the_key_only_when_it_differs():
    base = MBConv((8, 8, 16), (8, 8, 16), 6, 3, 1, 1)
    same = MBConv((8, 8, 16), (8, 8, 16), 6, 3, 1, 1, mid=96)
    assert same == base and hash(same) == hash(base) and same.key == base.key and "mid" not in same.to_json()
    pruned = MBConv((8, 8, 16), (8, 8, 16), 6, 3, 1, 1, mid=40)
    assert pruned.key == base.key + "-mid:40" and pruned.width == 40
    back = workload_from_json(json.loads(json.dumps(pruned.to_json())))
    assert back == pruned and back.key == pruned.key


def test_bad_mid_is_a_config_error():
    with pytest.raises(ConfigError, match="expand 1"):
        MBConv((8, 8, 16), (8, 8, 16), 1, 3, 1, 1, mid=8)
    with pytest.raises(ConfigError, match="positive integer"):
        MBConv((8, 8, 16), (8, 8, 16), 6, 3, 1, 1, mid=0)


def test_pruned_block_builds_and_its_conv_units_have_the_middle_width():
    w = MBConv((8, 8, 16), (4, 4, 24), 6, 5, 2, 0, mid=40)
    m = build_module(w).eval()
    assert m(torch.randn(2, 16, 8, 8)).shape == (2, 24, 4, 4)
    spec = ModelSpec("t", (Layer("b", w),))
    units = {u.name: u for u in spec.convs()}
    assert units["b.expand"].cout == 40 and units["b.dw"].groups == 40 and units["b.project"].cin == 40
    conv = spec.build().get_submodule(units["b.dw"].module)
    assert isinstance(conv, torch.nn.Conv2d) and conv.groups == 40 and conv.out_channels == 40
