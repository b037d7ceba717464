"""Build any workload as a torch module, the same way on every torch backend (CPU, CUDA).

A `Network` is the `nn.Sequential` of its layers' modules, so a whole network and the sum of its
parts are built from the very same code. `conv_paths` says where the convolutions sit inside what
this module builds, so code that must find them (models' conv units, pruning, quantization) asks the
builder instead of repeating its layout.
"""

from __future__ import annotations

import torch
from torch import nn

from hil.workload import ConvLayer, Linear, Logits, MBConv, Network, Workload


def _act(name: str) -> nn.Module:
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def conv_bn_act(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: str = "relu6") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        _act(act),
    )


class MBConvBlock(nn.Module):
    """Inverted residual block (MobileNetV2 / ProxylessNAS)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, idskip: bool,
                 mid: int | None = None) -> None:
        super().__init__()
        mid = cin * expand if mid is None else mid  # a pruned block's middle width
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, mid, 1, 1))
        layers.append(conv_bn_act(mid, mid, kernel, stride, groups=mid))
        layers.append(conv_bn_act(mid, cout, 1, 1, act="none"))
        self.body = nn.Sequential(*layers)
        self.idskip = idskip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.idskip else y


class LogitsHead(nn.Module):
    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build_module(w: Workload) -> nn.Module:
    if isinstance(w, ConvLayer):
        return conv_bn_act(w.input[2], w.output[2], w.kernel, w.stride, w.groups, w.act)
    if isinstance(w, MBConv):
        return MBConvBlock(w.input[2], w.output[2], w.expand, w.kernel, w.stride, bool(w.idskip), w.width)
    if isinstance(w, Logits):
        return LogitsHead(w.input[2], w.classes)
    if isinstance(w, Linear):
        return nn.Linear(w.in_features, w.out_features)
    if isinstance(w, Network):
        return nn.Sequential(*(build_module(x) for x in w.layers))
    raise TypeError(f"torch backends cannot build workload kind {w.kind!r}")


def conv_paths(w: Workload) -> list[tuple[str, str | None]]:
    """(conv or linear, batch norm) submodule paths inside `build_module(w)`, in execution order;
    '' is the module itself."""
    if isinstance(w, ConvLayer):
        return [("0", "1")]  # conv_bn_act: Sequential(conv, bn, act)
    if isinstance(w, MBConv):
        convs = 3 if w.expand != 1 else 2
        return [(f"body.{i}.0", f"body.{i}.1") for i in range(convs)]
    if isinstance(w, Logits):
        return [("fc", None)]
    if isinstance(w, Linear):
        return [("", None)]
    raise TypeError(f"workload kind {w.kind!r} has no conv layout")


def input_shape(w: Workload, batch: int) -> tuple[int, ...]:
    """NCHW shape of the input a workload consumes."""
    if isinstance(w, Network):
        return input_shape(w.layers[0], batch)
    if isinstance(w, Linear):
        return (batch, w.in_features)
    h, wd, c = w.input  # type: ignore[attr-defined]
    return (batch, c, h, wd)
