"""MobileNet-V1, MobileNet-V2 and ProxylessNAS networks, built from the workloads a LUT times.

A `ModelSpec` is the list of a network's layers, each a `Workload` with a stable name ('stem',
'block3', 'block3.dw', 'classifier'); `build()` makes the torch module whose submodule at each name
is `build_module(workload)`, so a model's latency can be predicted layer by layer from a LUT and
its layers mapped onto the accelerators (`qlayers`). Layers are found by name, never by index.

Small inputs: the ImageNet networks divide 224 by 32. For 32x32 inputs the first conv runs at
`stem_stride=1` (the default below 64 pixels), so the last feature map is 2x2 instead of 1x1;
the ProxylessNAS space takes the same option, so its LUT keys and these models agree.

FLOPs are counted as multiply-accumulates (MACs) of the convolutions and the classifier, the
usual convention for mobile networks (BN, activations, residual adds and pooling are left out).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hil.errors import ConfigError
from hil.nets.proxyless import OPS, ProxylessMobile
from hil.nets.shapes import conv_out, make_divisible
from hil.nets.torch_build import build_module, conv_paths
from hil.workload import ConvLayer, Linear, Logits, MBConv, Network, QuantLayer, Workload

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Layer:
    """One layer of a model: its stable name and the workload that describes (and builds) it."""

    name: str
    workload: Workload


@dataclass(frozen=True)
class ConvUnit:
    """One convolution or fully connected layer: what AMC prunes, HAQ quantizes, an accelerator runs.

    `name` is stable ('block3.expand', 'block3.dw', 'block3.project', 'stem', 'classifier');
    `module` is the path of its nn.Conv2d / nn.Linear in the built model, `bn` that of its BatchNorm.
    `signed_input` says whether the layer's input can be negative (the normalized image, a linear
    bottleneck or residual sum) rather than the output of a ReLU6.
    """

    name: str
    kind: str  # 'conv', 'dwconv' or 'fc'
    input: Shape  # H, W, C
    output: Shape
    kernel: int
    stride: int
    groups: int
    module: str
    bn: str | None
    signed_input: bool

    @property
    def cin(self) -> int:
        return self.input[2]

    @property
    def cout(self) -> int:
        return self.output[2]

    @property
    def weights(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel

    @property
    def params(self) -> int:
        """Trainable parameters: weights, plus the BN scale and shift (convs) or the bias (fc)."""
        return self.weights + (self.cout if self.kind == "fc" else 2 * self.cout)

    @property
    def macs(self) -> int:
        return self.output[0] * self.output[1] * self.weights

    def qlayer(self, wbits: int, abits: int) -> QuantLayer:
        """The accelerator workload; named by kind so equal shapes share one LUT entry."""
        return QuantLayer(self.kind, self.input, self.output, self.kernel, self.stride, self.groups,
                          wbits, abits, wsigned=True, asigned=self.signed_input)


def _conv_units(layer: Layer, signed_input: bool) -> list[ConvUnit]:
    w = layer.workload
    if not isinstance(w, (ConvLayer, MBConv, Logits, Linear)):
        raise ConfigError(f"layer {layer.name!r}: no conv decomposition for workload kind {w.kind!r}")
    # Where the builder put each conv (and its BN) inside this layer's module.
    paths = [(_join(layer.name, conv), None if bn is None else _join(layer.name, bn))
             for conv, bn in conv_paths(w)]
    if isinstance(w, ConvLayer):
        kind = "dwconv" if w.groups > 1 and w.groups == w.input[2] else "conv"
        return [ConvUnit(layer.name, kind, w.input, w.output, w.kernel, w.stride, w.groups, *paths[0], signed_input)]
    if isinstance(w, MBConv):
        h, wd, _ = w.input
        ho, wo, _ = w.output
        mid = w.width
        units = []
        if w.expand != 1:
            units.append(ConvUnit(f"{layer.name}.expand", "conv", w.input, (h, wd, mid), 1, 1, 1,
                                  *paths[len(units)], signed_input))
            signed_input = False
        units.append(ConvUnit(f"{layer.name}.dw", "dwconv", (h, wd, mid), (ho, wo, mid), w.kernel, w.stride,
                              mid, *paths[len(units)], signed_input))
        units.append(ConvUnit(f"{layer.name}.project", "conv", (ho, wo, mid), w.output, 1, 1, 1,
                              *paths[len(units)], False))
        return units
    if isinstance(w, Logits):
        c = w.input[2]
        return [ConvUnit(layer.name, "fc", (1, 1, c), (1, 1, w.classes), 1, 1, 1, *paths[0], signed_input)]
    return [ConvUnit(layer.name, "fc", (1, 1, w.in_features), (1, 1, w.out_features), 1, 1, 1, *paths[0],
                     signed_input)]


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if path else prefix


def _output_signed(w: Workload) -> bool:
    """Whether a layer's output can be negative."""
    if isinstance(w, ConvLayer):
        return w.act == "none"
    return isinstance(w, (MBConv, Logits, Linear))  # linear bottleneck (+ residual), logits


class SpecNet(nn.Module):
    """The torch module of a ModelSpec: each layer's module sits at the layer's (dotted) name."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.order = [layer.name for layer in spec.layers]
        for layer in spec.layers:
            parent: nn.Module = self
            *path, leaf = layer.name.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module(leaf, build_module(layer.workload))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Looked up on every call: pruning may replace a layer's module in place.
        for name in self.order:
            x = self.get_submodule(name)(x)
        return x


@dataclass(frozen=True)
class ModelSpec:
    """A network as named workloads. `options` rebuild it: `make_model(name, **options)`."""

    name: str
    layers: tuple[Layer, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"model {self.name!r} has duplicate layer names")

    def build(self) -> SpecNet:
        return SpecNet(self)

    def network(self) -> Network:
        """The whole model as one workload (timed end to end to validate LUT predictions)."""
        return Network(tuple(layer.workload for layer in self.layers), name=self.name)

    def workloads(self) -> list[Workload]:
        return [layer.workload for layer in self.layers]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"model {self.name!r} has no layer {name!r}")

    def convs(self) -> list[ConvUnit]:
        """Every conv / depthwise conv / fc in execution order."""
        units: list[ConvUnit] = []
        signed = True  # the normalized image
        for layer in self.layers:
            units.extend(_conv_units(layer, signed))
            signed = _output_signed(layer.workload)
        return units

    def qlayers(self, wbits: int | Sequence[int], abits: int | Sequence[int]) -> list[QuantLayer]:
        """The accelerator workloads of `convs()`, at one bitwidth pair or one pair per conv."""
        units = self.convs()
        ws = [wbits] * len(units) if isinstance(wbits, int) else list(wbits)
        as_ = [abits] * len(units) if isinstance(abits, int) else list(abits)
        if len(ws) != len(units) or len(as_) != len(units):
            raise ConfigError(f"model {self.name!r} has {len(units)} conv/fc layers; got {len(ws)} weight "
                              f"and {len(as_)} activation bitwidths")
        return [u.qlayer(w, a) for u, w, a in zip(units, ws, as_, strict=True)]

    def layer_macs(self) -> dict[str, int]:
        """MACs per model layer (an MBConv block counts its three convs)."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.name] = sum(u.macs for u in _conv_units(layer, False))
        return out

    def layer_params(self) -> dict[str, int]:
        return {layer.name: sum(u.params for u in _conv_units(layer, False)) for layer in self.layers}

    @property
    def macs(self) -> int:
        return sum(self.layer_macs().values())

    @property
    def params(self) -> int:
        return sum(self.layer_params().values())

    def summary(self) -> dict[str, Any]:
        return {"model": self.name, **self.options, "macs": self.macs, "params": self.params,
                "layers": len(self.layers), "convs": len(self.convs())}


def _input_signed(w: Workload) -> bool:
    """Whether `w`'s input can be negative where `w` sits in every network built here (MobileNet-V1,
    V2, the ProxylessNAS family): the stem ('Conv') takes the normalized image; an MBConv that expands
    and the head ('Conv_1') follow an MBConv's linear bottleneck; the rest (the expand-1 first block
    after the stem, depthwise-separable convs, the classifier after 'Conv_1') follow a ReLU6. A LUT key
    does not carry its neighbour, so a lone workload is lowered in this context;
    tests/test_rtl_proxyless.py checks that it agrees with `ModelSpec.convs()`'s chain on every model."""
    if isinstance(w, ConvLayer):
        return w.name in ("Conv", "Conv_1")
    if isinstance(w, MBConv):
        return w.expand != 1
    return False


def lower(w: Workload, wbits: int, abits: int) -> list[QuantLayer]:
    """A workload of the float spaces as the quantized layers an accelerator runs, all at (wbits, abits):
    an MBConv is its 1x1 expand (absent at expand 1), kxk depthwise and 1x1 project; a ConvLayer one
    conv; Logits and Linear one FC. A `Network` is its layers chained as `ModelSpec.qlayers` chains
    them. The same decomposition as a model's `convs()` (one mapping, `_conv_units`), so the MACs are
    the workload's. Residual adds, BN, activations and pooling are not layers here: the accelerators
    run none of them (docs/NAS.md, "On the simulated accelerators")."""
    if isinstance(w, Network):
        spec = ModelSpec(w.name or "network", tuple(Layer(f"layer{i}", x) for i, x in enumerate(w.layers)))
        return spec.qlayers(wbits, abits)
    return [u.qlayer(wbits, abits) for u in _conv_units(Layer(w.kind, w), _input_signed(w))]


def qlayer_macs(q: QuantLayer) -> int:
    """Multiply-accumulates of one quantized layer per sample."""
    ho, wo, cout = q.output
    return ho * wo * cout * (q.input[2] // q.groups) * q.kernel * q.kernel


def _check_common(width: float, input_size: int, in_channels: int, classes: int, stem_stride: int) -> None:
    if not isinstance(width, (int, float)) or not 0.1 <= float(width) <= 4.0:
        raise ConfigError(f"width multiplier must be within 0.1..4.0, got {width!r}")
    if not isinstance(input_size, int) or not 16 <= input_size <= 1024:
        raise ConfigError(f"input size must be an integer from 16 to 1024, got {input_size!r}")
    if in_channels < 1 or classes < 2:
        raise ConfigError(f"need at least 1 input channel and 2 classes, got {in_channels} and {classes}")
    if stem_stride not in (1, 2):
        raise ConfigError(f"stem_stride must be 1 or 2, got {stem_stride!r}")


def _default_stem_stride(input_size: int) -> int:
    return 1 if input_size < 64 else 2


# MobileNet-V1 (Howard et al. 2017): depthwise-separable blocks as (output channels, stride).
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
             (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1(width: float = 1.0, *, input_size: int = 32, in_channels: int = 1, classes: int = 10,
                 stem_stride: int | None = None) -> ModelSpec:
    """Conv 3x3/32 then 13 depthwise-separable blocks ('blockN.dw' 3x3 + 'blockN.pw' 1x1), pool, FC."""
    stem_stride = _default_stem_stride(input_size) if stem_stride is None else stem_stride
    _check_common(width, input_size, in_channels, classes, stem_stride)
    s = conv_out(input_size, stem_stride)
    c = make_divisible(32 * width)
    stem = ConvLayer("Conv", (input_size, input_size, in_channels), (s, s, c), 3, stem_stride)
    layers = [Layer("stem", stem)]
    for i, (ch, stride) in enumerate(V1_BLOCKS, start=1):
        so, co = conv_out(s, stride), make_divisible(ch * width)
        layers.append(Layer(f"block{i}.dw", ConvLayer("conv", (s, s, c), (so, so, c), 3, stride, groups=c)))
        layers.append(Layer(f"block{i}.pw", ConvLayer("conv", (so, so, c), (so, so, co), 1, 1)))
        s, c = so, co
    layers.append(Layer("classifier", Logits((s, s, c), classes)))
    opts = {"width": float(width), "input_size": input_size, "in_channels": in_channels, "classes": classes,
            "stem_stride": stem_stride}
    return ModelSpec("mobilenet-v1", tuple(layers), opts)


# MobileNet-V2 (Sandler et al. 2018) after the first block: (expand, channels, blocks, stride).
V2_STAGES = ((6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(width: float = 1.0, *, input_size: int = 32, in_channels: int = 1, classes: int = 10,
                 stem_stride: int | None = None) -> ModelSpec:
    """ProxylessNAS's skeleton ('Conv', first MBConv, 'Conv_1', Logits) with MobileNet-V2's 16 blocks."""
    stem_stride = _default_stem_stride(input_size) if stem_stride is None else stem_stride
    _check_common(width, input_size, in_channels, classes, stem_stride)
    s = conv_out(input_size, stem_stride)
    c0, c1 = make_divisible(32 * width), make_divisible(16 * width)
    layers = [
        Layer("stem", ConvLayer("Conv", (input_size, input_size, in_channels), (s, s, c0), 3, stem_stride)),
        Layer("block0", MBConv((s, s, c0), (s, s, c1), 1, 3, 1, 0)),
    ]
    cin, n = c1, 1
    for expand, ch, blocks, stride in V2_STAGES:
        cout = make_divisible(ch * width)
        for b in range(blocks):
            st = stride if b == 0 else 1
            so = conv_out(s, st)
            idskip = int(st == 1 and cin == cout)
            layers.append(Layer(f"block{n}", MBConv((s, s, cin), (so, so, cout), expand, 3, st, idskip)))
            s, cin, n = so, cout, n + 1
    last = make_divisible(1280 * width) if width > 1.0 else 1280
    layers.append(Layer("head", ConvLayer("Conv_1", (s, s, cin), (s, s, last), 1, 1)))
    layers.append(Layer("classifier", Logits((s, s, last), classes)))
    opts = {"width": float(width), "input_size": input_size, "in_channels": in_channels, "classes": classes,
            "stem_stride": stem_stride}
    return ModelSpec("mobilenet-v2", tuple(layers), opts)


def proxyless_family(width: float = 1.0, *, input_size: int = 32, in_channels: int = 1, classes: int = 10,
                    stem_stride: int | None = None) -> ProxylessMobile:
    stem_stride = _default_stem_stride(input_size) if stem_stride is None else stem_stride
    _check_common(width, input_size, in_channels, classes, stem_stride)
    return ProxylessMobile(resolution=input_size, width=width, channels=in_channels, classes=classes,
                                stem_stride=stem_stride)


def parse_arch(arch: str | Sequence[str]) -> tuple[str, ...]:
    """'3x3_MBConv6,zero,...' (or a sequence of op names) -> a tuple of op names."""
    ops = [a.strip() for a in arch.split(",")] if isinstance(arch, str) else [str(a) for a in arch]
    return tuple(ops)


def proxyless_net(arch: str | Sequence[str], width: float = 1.0, *, input_size: int = 32,
                  in_channels: int = 1, classes: int = 10, stem_stride: int | None = None) -> ModelSpec:
    """One network of the ProxylessNAS space; block names keep the space's positions ('block7' is
    always the 7th searchable block), so a name means the same slot in every architecture."""
    space = proxyless_family(width, input_size=input_size, in_channels=in_channels, classes=classes,
                            stem_stride=stem_stride)
    ops = space.check_arch(parse_arch(arch))
    layers = [Layer("stem", space.first_conv), Layer("block0", space.first_block)]
    for slot, op in zip(space.slots, ops, strict=True):
        w = slot.workload(op)
        if w is not None:
            layers.append(Layer(f"block{slot.index + 1}", w))
    layers += [Layer("head", space.last_conv), Layer("classifier", space.logits)]
    opts = {"arch": ",".join(ops), "width": float(width), "input_size": input_size,
            "in_channels": in_channels, "classes": classes, "stem_stride": space.stem_stride}
    return ModelSpec("proxyless", tuple(layers), opts)


def sample_arch(seed: int, width: float = 1.0, **space_options: Any) -> tuple[str, ...]:
    """A uniformly random architecture of the space, from `seed`."""
    return proxyless_family(width, **space_options).random_arch(random.Random(seed))


MODELS: dict[str, Callable[..., ModelSpec]] = {
    "mobilenet-v1": mobilenet_v1,
    "mobilenet-v2": mobilenet_v2,
    "proxyless": proxyless_net,
}
__all__ = ["MODELS", "OPS", "ConvUnit", "Layer", "ModelSpec", "SpecNet", "lower", "make_model", "mobilenet_v1",
           "mobilenet_v2", "parse_arch", "proxyless_net", "qlayer_macs", "sample_arch"]


def make_model(name: str, **options: Any) -> ModelSpec:
    """A model by its CLI name; `options` as recorded in `ModelSpec.options` (and in checkpoints)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None
    if name == "proxyless" and not options.get("arch"):
        raise ConfigError("model 'proxyless' needs an architecture: 21 comma-separated ops from "
                          f"{', '.join(OPS)}")
    try:
        return factory(**options)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None
