import pytest

from hil.errors import ConfigError
from hil.lut_builder.spaces import make_space
from hil.lut_builder.spaces.quant_layers import parse_bits
from hil.workload import QuantLayer


def test_parse_bits():
    assert parse_bits("2..8") == (2, 3, 4, 5, 6, 7, 8)
    assert parse_bits("8,4") == (4, 8)
    assert parse_bits("8") == (8,)
    for bad in ("0..4", "2..9", "two", ""):
        with pytest.raises(ConfigError, match="bits"):
            parse_bits(bad)


def test_mobilenet_v1_layer_space_covers_every_layer_and_pair():
    s = make_space("mobilenet-v1-layers", bits="2..8")
    ws = s.workloads()
    assert all(isinstance(w, QuantLayer) for w in ws)
    assert len(s.units) == 28  # stem + 13 x (dw + pw) + fc
    pairs = {(w.wbits, w.abits) for w in ws}
    assert len(pairs) == 49
    # identical layers (MobileNet-V1's five 512-channel blocks) share a key
    assert len(ws) < 28 * 49
    kinds = {w.groups == w.input[2] and w.groups > 1 for w in ws}
    assert kinds == {True, False}  # depthwise and dense layers both present
    for net in s.sample(3, seed=1):
        keys = {w.key for w in ws}
        assert len(net.layers) == 28 and all(layer.key in keys for layer in net.layers)


def test_layer_space_rejects_proxyless_options():
    with pytest.raises(ConfigError, match="stem_stride"):
        make_space("mobilenet-v2-layers", stem_stride=1)
