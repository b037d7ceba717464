"""Linear quantization for training, with per-layer bitwidths (1..8) that change between episodes.

Every conv / depthwise conv / FC of a `ModelSpec` (`spec.convs()`, found by name) is wrapped in a
`QuantConv`, which quantizes its weights and its input before the float convolution:

- Weights, per output channel, symmetric: at b >= 2 bits the codes are integers in
  [-(2^(b-1) - 1), 2^(b-1) - 1] with scale max|w_c| / (2^(b-1) - 1). At 1 bit that scale would be
  max|w| / 0 (the public HAQ code divides by zero there); 1 bit is binary instead, codes +-1 with scale
  mean|w_c| (the L2-optimal binary scale, XNOR-Net), so no division by (2^0 - 1) ever happens.
- Activations, per layer, clipped at `clip`: an input that follows a ReLU/ReLU6 is unsigned, codes
  0..2^b - 1 with scale clip / (2^b - 1) (1 bit: {0, 1}); a signed input (linear bottleneck, residual
  sum) is symmetric like the weights, binary +-1 at 1 bit.
- The clip is calibrated once on training images (`calibrate`): the 99.99th percentile of the
  layer's input (|x| when signed). Percentile rather than KL: the KL-optimal clip depends on the
  bitwidth, which changes every episode, so it would mean a histogram search per layer per episode;
  a percentile is one pass, drops the rare outliers that would waste levels at low bits, and the
  fine-tune after each policy adapts the weights to it.
- Straight-through estimator: rounding passes the gradient unchanged (inside the clip; clamped
  values get none).

The codes are what the RTL computes with: `QuantConv.codes()` gives the integer input and weights
and the scales, and `output = scale_x * scale_w[c] * (codes_x (*) codes_w)` (+ float bias). For an
accelerator taking two's-complement operands, b-bit codes fit b bits. The +-1 binary codes at 1 bit
are run as u = (q + 1) / 2 in {0, 1} (offset binary): q (*) x = 2 (u (*) x) - sum(x), one extra add per
output that the host applies; tests/test_quantize.py checks both forms against the bismo-edge RTL.

Defaults follow HAQ: the first layer's weights stay at 8 bits and its input (the image) is not
quantized; the classifier stays at 8/8. Both are options (`QuantOptions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.models import ConvUnit, ModelSpec

BITS = range(1, 9)
Policy = dict[str, tuple[int, int]]  # layer name -> (weight bits, activation bits)


def check_bits(bits: int, what: str) -> int:
    if not isinstance(bits, int) or bits not in BITS:
        raise ConfigError(f"{what}: bits must be within 1..8, got {bits!r}")
    return bits


@dataclass(frozen=True)
class QuantOptions:
    first_weight_bits: int | None = 8  # None: the first layer's weights are searched like the others
    quantize_first_input: bool = False
    classifier_bits: tuple[int, int] | None = (8, 8)  # None: the classifier is searched
    percentile: float = 99.99  # activation clip calibration

    def __post_init__(self) -> None:
        if self.first_weight_bits is not None:
            check_bits(self.first_weight_bits, "first layer weights")
        if self.classifier_bits is not None:
            for b in self.classifier_bits:
                check_bits(b, "classifier")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"clip percentile must be within 50..100, got {self.percentile}")


# ------------------------------------------------------------------------- the quantizers
def weight_codes(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer codes as float, per-output-channel scale shaped to broadcast) of weights `w`."""
    flat = w.detach().reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bits == 1:
        scale = flat.abs().mean(1).clamp_min(1e-12).reshape(shape)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype), scale
    qmax = 2 ** (bits - 1) - 1
    scale = (flat.abs().amax(1) / qmax).clamp_min(1e-12).reshape(shape)
    return torch.clamp(torch.round(w / scale), -qmax, qmax), scale


def act_codes(x: torch.Tensor, bits: int, clip: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer codes as float, scalar scale) of activations `x` clipped at `clip`."""
    clip = clip.clamp_min(1e-8)
    if signed:
        if bits == 1:
            return torch.where(x >= 0, 1.0, -1.0).to(x.dtype), clip / 2  # levels +-clip/2
        qmax = 2 ** (bits - 1) - 1
        scale = clip / qmax
        return torch.clamp(torch.round(x / scale), -qmax, qmax), scale
    qmax = 2**bits - 1
    scale = clip / qmax
    return torch.clamp(torch.round(x / scale), 0, qmax), scale


def _ste(x: torch.Tensor, q: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """q forward, the identity gradient backward inside [lo, hi] (zero outside: clipped values)."""
    xc = torch.maximum(torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype)), torch.as_tensor(lo, dtype=x.dtype))
    return xc + (q - xc).detach()


class QuantConv(nn.Module):
    """A conv or linear layer with quantized weights and input; `wbits`/`abits` are plain ints,
    set per episode (`abits = None`: the input is not quantized)."""

    def __init__(self, inner: nn.Conv2d | nn.Linear, unit: ConvUnit, wbits: int, abits: int | None) -> None:
        super().__init__()
        self.inner = inner
        self.unit_name = unit.name
        self.kind = unit.kind
        self.signed_input = unit.signed_input
        self.wbits = wbits
        self.abits = abits
        self.register_buffer("clip", torch.tensor(1.0))
        self.register_buffer("calibrated", torch.tensor(False))

    def quant_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights as used, codes, per-channel scale)."""
        w = self.inner.weight
        q, s = weight_codes(w, self.wbits)
        bound = (s * (1 if self.wbits == 1 else 2 ** (self.wbits - 1) - 1))
        return _ste(w, q * s, -bound, bound), q, s

    def quant_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.abits is None:
            return x, None, None
        if not bool(self.calibrated):
            raise ConfigError(f"layer {self.unit_name!r}: activation clip not calibrated (run calibrate())")
        q, s = act_codes(x, self.abits, self.clip, self.signed_input)
        lo = -self.clip if self.signed_input else 0.0
        return _ste(x, q * s, lo, self.clip), q, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, _, _ = self.quant_input(x)
        wq, _, _ = self.quant_weight()
        if isinstance(self.inner, nn.Linear):
            return nn.functional.linear(xq, wq, self.inner.bias)
        c = self.inner
        return nn.functional.conv2d(xq, wq, c.bias, c.stride, c.padding, c.dilation, c.groups)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The integers and scales this layer computes with on input `x` (what an accelerator runs)."""
        _, qx, sx = self.quant_input(x)
        _, qw, sw = self.quant_weight()
        if qx is None:
            raise ConfigError(f"layer {self.unit_name!r} does not quantize its input")
        return {"x": qx, "x_scale": sx, "w": qw, "w_scale": sw.reshape(-1)}


# ------------------------------------------------------------------------- the model
class QuantizedModel:
    """A built model whose convs are QuantConvs, addressed by layer name; `policy` sets all bits."""

    def __init__(self, spec: ModelSpec, model: nn.Module, options: QuantOptions | None = None) -> None:
        self.spec = spec
        self.model = model
        self.options = options or QuantOptions()
        self.units = {u.name: u for u in spec.convs()}
        names = list(self.units)
        self.first, self.last = names[0], names[-1]
        self.layers: dict[str, QuantConv] = {}
        for name, u in self.units.items():
            inner = model.get_submodule(u.module)
            if not isinstance(inner, (nn.Conv2d, nn.Linear)):
                raise ConfigError(f"layer {name!r}: {u.module} is a {type(inner).__name__}, not a conv or linear")
            abits: int | None = 8
            if name == self.first and not self.options.quantize_first_input:
                abits = None
            q = QuantConv(inner, u, 8, abits)
            parent_name, _, leaf = u.module.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, q)
            self.layers[name] = q
        self.set_policy(self.full_precision_policy())

    def fixed(self) -> dict[str, tuple[int | None, int | None]]:
        """Bits the options pin: (weights, activations), None where the agent decides."""
        out: dict[str, tuple[int | None, int | None]] = {}
        o = self.options
        first_a = None if o.quantize_first_input else 8  # the 8-bit image: what the accelerator is fed
        if o.first_weight_bits is not None or first_a is not None:
            out[self.first] = (o.first_weight_bits, first_a)
        if o.classifier_bits is not None:
            out[self.last] = o.classifier_bits
        return out

    def full_precision_policy(self) -> Policy:
        return self.uniform(8, 8)

    def uniform(self, wbits: int, abits: int) -> Policy:
        """Every searched layer at (wbits, abits), the pinned ones at their pins."""
        check_bits(wbits, "weights")
        check_bits(abits, "activations")
        pol: Policy = {}
        fixed = self.fixed()
        for name in self.units:
            fw, fa = fixed.get(name, (None, None))
            pol[name] = (fw if fw is not None else wbits, fa if fa is not None else abits)
        return pol

    def set_policy(self, policy: Mapping[str, tuple[int, int]]) -> None:
        missing = [n for n in self.units if n not in policy]
        unknown = [n for n in policy if n not in self.units]
        if missing or unknown:
            what = f"no bits for layer {missing[0]!r}" if missing else f"unknown layer {unknown[0]!r}"
            raise ConfigError(f"policy for {self.spec.name}: {what}")
        for name, (w, a) in policy.items():
            q = self.layers[name]
            q.wbits = check_bits(int(w), f"layer {name!r} weights")
            check_bits(int(a), f"layer {name!r} activations")
            if q.abits is not None:
                q.abits = int(a)

    def policy(self) -> Policy:
        fixed = self.fixed()
        return {n: (q.wbits, q.abits if q.abits is not None else fixed[n][1] or 8) for n, q in self.layers.items()}

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor], percentile: float | None = None,
                  samples: int = 200_000) -> dict[str, float]:
        """Set every layer's activation clip from the float model's inputs on `batches`."""
        pct = (percentile if percentile is not None else self.options.percentile) / 100.0
        seen: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        gen = torch.Generator().manual_seed(0)
        saved = {n: (q.wbits, q.abits) for n, q in self.layers.items()}
        hooks = []

        def hook(name: str) -> Any:
            def f(mod: QuantConv, args: tuple[torch.Tensor, ...]) -> None:
                x = args[0].detach().float().reshape(-1)
                x = x.abs() if mod.signed_input else x.clamp_min(0)
                if x.numel() > samples:
                    x = x[torch.randint(0, x.numel(), (samples,), generator=gen)]
                seen[name].append(x.cpu())
            return f

        for name, q in self.layers.items():
            q.abits = None  # observe the float activations, as calibration must
            q.wbits = 8
            hooks.append(q.register_forward_pre_hook(hook(name)))
        was = self.model.training
        self.model.eval()
        try:
            for x in batches:
                self.model(x)
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was)
            for name, q in self.layers.items():
                q.wbits, q.abits = saved[name]
        clips = {}
        for name, q in self.layers.items():
            if not seen[name]:
                raise ConfigError("calibration saw no data")
            v = torch.cat(seen[name])
            if v.numel() > 4_000_000:
                v = v[torch.randint(0, v.numel(), (4_000_000,), generator=gen)]
            clip = float(torch.quantile(v, pct)) if pct < 1.0 else float(v.max())
            q.clip.fill_(max(clip, 1e-6))
            q.calibrated.fill_(True)
            clips[name] = float(q.clip)
        return clips


def quantize(spec: ModelSpec, model: nn.Module, options: QuantOptions | None = None) -> QuantizedModel:
    """Wrap the convs of a built `model` of `spec` in place (8/8 until a policy is set)."""
    return QuantizedModel(spec, model, options)
