"""HAQ's quantizers: integer-exact against numpy, and the very codes a model uses run on the
bismo-edge RTL (real Verilator simulation) give the same integers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.models import ConvUnit, make_model
from hil.optimizers.data import Batches, fashion_mnist
from hil.optimizers.haq.quantize import QuantConv, QuantOptions, act_codes, quantize, weight_codes

torch.set_num_threads(1)


def _ref_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Direct integer convolution, NCHW / OIHW, by shifted windows (independent of torch)."""
    b, _, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((b, o, ho, wo), dtype=np.int64)
    opg = o // groups
    for ky in range(k):
        for kx in range(k):
            win = xp[:, :, ky: ky + stride * (ho - 1) + 1: stride, kx: kx + stride * (wo - 1) + 1: stride]
            for g in range(groups):
                xs = win[:, g * cg:(g + 1) * cg]
                ws = w[g * opg:(g + 1) * opg, :, ky, kx]
                out[:, g * opg:(g + 1) * opg] += np.einsum("bchw,oc->bohw", xs, ws)
    return out


def _unit(kind: str, cin: int, cout: int, k: int, stride: int, groups: int, signed: bool) -> ConvUnit:
    return ConvUnit("t", kind, (8, 8, cin), (8 // stride, 8 // stride, cout), k, stride, groups, "t", None, signed)


@pytest.mark.parametrize(("wbits", "abits", "signed", "depthwise"),
                         [(8, 8, False, False), (4, 3, True, False), (2, 5, False, True), (1, 1, False, False),
                          (1, 2, True, True), (3, 1, True, False)])
def test_quantized_layer_equals_integer_reference(wbits, abits, signed, depthwise):
    torch.manual_seed(wbits * 10 + abits)
    cin, cout, groups = (6, 6, 6) if depthwise else (5, 7, 1)
    conv = nn.Conv2d(cin, cout, 3, 2, 1, groups=groups, bias=False)
    q = QuantConv(conv, _unit("dwconv" if depthwise else "conv", cin, cout, 3, 2, groups, signed), wbits, abits)
    q.clip.fill_(1.5)
    q.calibrated.fill_(True)
    x = torch.randn(2, cin, 8, 8) * (1.0 if signed else 0.8)
    if not signed:
        x = x.clamp_min(0)
    out = q(x).detach().double().numpy()
    c = q.codes(x)
    qx, qw = c["x"].numpy().astype(np.int64), c["w"].numpy().astype(np.int64)
    assert np.array_equal(qx, c["x"].numpy()) and np.array_equal(qw, c["w"].numpy())  # integers
    if wbits == 1:
        assert set(np.unique(qw)) <= {-1, 1}
    else:
        assert np.abs(qw).max() <= 2 ** (wbits - 1) - 1
    if signed:
        assert np.abs(qx).max() <= max(1, 2 ** (abits - 1) - 1)
    else:
        assert qx.min() >= 0 and qx.max() <= 2**abits - 1
    ref = _ref_conv(qx, qw, 2, 1, groups) * float(c["x_scale"]) * c["w_scale"].double().numpy()[None, :, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_one_bit_never_divides_by_zero():
    w = torch.zeros(3, 2, 3, 3)
    w[1] = torch.randn(2, 3, 3)
    for bits in (1, 2):
        q, s = weight_codes(w, bits)
        assert torch.isfinite(q).all() and torch.isfinite(s).all() and (s > 0).all()
    for signed in (False, True):
        q, s = act_codes(torch.randn(100), 1, torch.tensor(0.0), signed)
        assert torch.isfinite(q).all() and torch.isfinite(s)


def test_straight_through_gradient():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    q = QuantConv(conv, _unit("conv", 2, 2, 1, 1, 1, False), 4, 4)
    q.clip.fill_(1.0)
    q.calibrated.fill_(True)
    x = torch.tensor([0.3, 2.0]).reshape(1, 2, 1, 1).repeat(1, 1, 2, 2).requires_grad_(True)
    q(x).sum().backward()
    g = x.grad[0, :, 0, 0]
    assert float(g[0]) == pytest.approx(float(q.quant_weight()[0].detach().sum(0)[0, 0, 0]), rel=1e-6)
    assert float(g[1]) == 0.0  # clipped: no gradient
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_bits_outside_1_to_8_and_pins():
    spec = make_model("mobilenet-v1", width=0.25)
    qm = quantize(spec, spec.build())
    pol = qm.uniform(3, 2)
    assert pol["stem"] == (8, 8) and pol["classifier"] == (8, 8) and pol["block3.dw"] == (3, 2)
    with pytest.raises(ConfigError, match=r"1\.\.8"):
        qm.uniform(9, 4)
    with pytest.raises(ConfigError, match=r"block3\.dw"):
        qm.set_policy({**pol, "block3.dw": (0, 4)})
    open_opts = quantize(spec, spec.build(), QuantOptions(first_weight_bits=None, quantize_first_input=True,
                                                          classifier_bits=None))
    assert open_opts.fixed() == {} and open_opts.uniform(3, 2)["stem"] == (3, 2)


# ------------------------------------------------------------------------------ the RTL, bit-exact
@pytest.fixture(scope="module")
def calibrated() -> tuple:
    torch.manual_seed(0)
    spec = make_model("mobilenet-v1", width=0.25, input_size=32)
    model = spec.build()
    qm = quantize(spec, model)
    data = fashion_mnist(val_size=100, train_limit=64, val_limit=64, test_limit=8)
    batches = [x for x, _ in Batches(data.train, 32).epoch()]
    qm.calibrate(batches)
    return spec, qm, batches[0][:1]


@pytest.fixture(scope="module")
def edge():
    from hil.rtl.presets import make_accelerator

    acc = make_accelerator("bismo-edge")
    yield acc
    acc.close()


def _layer_input(qm, name: str, x: torch.Tensor) -> torch.Tensor:
    got = {}
    h = qm.layers[name].register_forward_pre_hook(lambda m, a: got.setdefault("x", a[0].detach()))
    with torch.no_grad():
        qm.model.eval()(x)
    h.remove()
    return got["x"]


@pytest.mark.parametrize(("name", "wbits", "abits"), [("block2.pw", 4, 3), ("block2.dw", 3, 2),
                                                      ("block4.pw", 8, 5), ("block4.dw", 1, 4)])
def test_model_codes_run_bit_exact_on_bismo_edge(calibrated, edge, name, wbits, abits):
    _, qm, image = calibrated
    qm.set_policy({**qm.uniform(6, 6), name: (wbits, abits)})
    layer = qm.layers[name]
    unit = qm.units[name]
    x = _layer_input(qm, name, image)
    c = layer.codes(x)
    with torch.no_grad():
        out = layer(x).double().numpy()  # what the model computes, float
    qx = c["x"].permute(0, 2, 3, 1).numpy().astype(np.int64)  # NHWC for the accelerator
    qw = c["w"].permute(0, 2, 3, 1).numpy().astype(np.int64)  # Cout, k, k, Cin/groups
    ql = unit.qlayer(wbits, abits)
    if wbits == 1:  # binary +-1 runs as offset binary u = (q + 1) / 2, unsigned 1-bit
        import dataclasses

        u = (qw + 1) // 2
        rtl_u, _ = edge.run_layer(dataclasses.replace(ql, wsigned=False), qx, u)
        ones, _ = edge.run_layer(dataclasses.replace(ql, wsigned=False), qx, np.ones_like(u))
        rtl = 2 * rtl_u - ones  # sum over each window of x, by the same hardware
    else:
        rtl, res = edge.run_layer(ql, qx, qw)
        assert res.compute_cycles > 0
    rtl = rtl.transpose(0, 3, 1, 2)  # NCHW
    ref = _ref_conv(c["x"].numpy().astype(np.int64), c["w"].numpy().astype(np.int64), unit.stride,
                    unit.kernel // 2, unit.groups)
    assert np.array_equal(rtl, ref)
    # and the model's float output is exactly those integers, scaled
    scaled = rtl * float(c["x_scale"]) * c["w_scale"].double().numpy()[None, :, None, None]
    np.testing.assert_allclose(out, scaled, rtol=1e-5, atol=1e-5)
