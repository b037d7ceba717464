import json

import pytest

from hil.errors import ConfigError
from hil.workload import ConvLayer, Gemm, Logits, MBConv, Network, QuantLayer, workload_from_json


def test_mbconv_key_is_proxylessnas_format():
    w = MBConv((112, 112, 16), (56, 56, 24), expand=3, kernel=5, stride=2, idskip=0)
    assert w.key == "expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0"


def test_fixed_layer_keys():
    assert ConvLayer("Conv", (224, 224, 3), (112, 112, 32), 3, 2).key == "Conv-input:224x224x3-output:112x112x32"
    assert ConvLayer("Conv_1", (7, 7, 320), (7, 7, 1280), 1, 1).key == "Conv_1-input:7x7x320-output:7x7x1280"
    assert Logits((7, 7, 1280), 1000).key == "Logits-input:7x7x1280-output:1000"


def test_generic_conv_key_carries_kernel_stride_groups():
    a = ConvLayer("conv", (8, 8, 4), (8, 8, 4), 3, 1, groups=4)
    b = ConvLayer("conv", (8, 8, 4), (8, 8, 4), 3, 1, groups=1)
    assert a.key != b.key and "groups:4" in a.key


@pytest.mark.parametrize("w", [
    MBConv((14, 14, 80), (14, 14, 80), 6, 7, 1, 1),
    ConvLayer("Conv", (32, 32, 3), (16, 16, 32), 3, 2),
    Logits((7, 7, 1280), 10),
    QuantLayer("fc", (1, 1, 1024), (1, 1, 10), 1, 1, 1, 4, 8),
    Gemm(16, 64, 32, 2, 3, True, False),
    Network((ConvLayer("Conv", (32, 32, 3), (16, 16, 32), 3, 2), Logits((16, 16, 32), 10)), name="n"),
])
def test_json_round_trip_and_hash(w):
    back = workload_from_json(json.loads(json.dumps(w.to_json())))
    assert back == w and hash(back) == hash(w) and back.key == w.key


def test_workloads_are_immutable():
    w = MBConv((14, 14, 80), (14, 14, 80), 6, 7, 1, 1)
    with pytest.raises(AttributeError):
        w.kernel = 3  # type: ignore[misc]


def test_bad_json_names_the_problem():
    with pytest.raises(ConfigError, match="unknown workload kind 'bogus'"):
        workload_from_json({"kind": "bogus"})
    with pytest.raises(ConfigError, match="unknown field"):
        workload_from_json({"kind": "logits", "input": [1, 1, 2], "classes": 3, "colour": 1})


def test_bit_keys_distinguish_signedness():
    a = Gemm(8, 8, 8, 4, 4, True, False)
    b = Gemm(8, 8, 8, 4, 4, False, False)
    assert a.key != b.key
