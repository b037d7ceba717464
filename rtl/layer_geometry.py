"""A conv / depthwise / FC layer's geometry, checked once for every accelerator driver.

Padding is 'same' ((k-1)/2 zeros) when it gives the layer's output size, else none; groups must be 1
(a full conv) or C_in = C_out (depthwise). Anything else is refused with the layer's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.errors import ConfigError
from hil.workload import QuantLayer


@dataclass(frozen=True)
class ConvGeometry:
    batch: int
    h: int
    w: int
    cin: int
    ho: int
    wo: int
    cout: int
    k: int
    stride: int
    pad: int
    depthwise: bool

    @property
    def pixels(self) -> int:
        return self.batch * self.ho * self.wo


def geometry(layer: QuantLayer, batch: int) -> ConvGeometry:
    if batch < 1:
        raise ConfigError(f"layer {layer.name!r}: batch must be >= 1, got {batch}")
    if len(layer.input) != 3 or len(layer.output) != 3:
        raise ConfigError(f"layer {layer.name!r}: input and output must be H x W x C")
    h, w, cin = (int(v) for v in layer.input)
    ho, wo, cout = (int(v) for v in layer.output)
    k, s, g = int(layer.kernel), int(layer.stride), int(layer.groups)
    if min(h, w, cin, ho, wo, cout, k, s) < 1:
        raise ConfigError(f"layer {layer.name!r}: sizes must be positive")
    if g == 1:
        depthwise = False
    elif g == cin == cout:
        depthwise = True
    else:
        raise ConfigError(
            f"layer {layer.name!r}: groups={g} is neither a full conv (1) nor depthwise (= C_in = C_out)"
        )
    for pad in ((k - 1) // 2, 0):
        if (h + 2 * pad - k) // s + 1 == ho and (w + 2 * pad - k) // s + 1 == wo:
            return ConvGeometry(batch, h, w, cin, ho, wo, cout, k, s, pad, depthwise)
    raise ConfigError(
        f"layer {layer.name!r}: output {ho}x{wo} does not follow from input {h}x{w}, kernel {k}, stride {s}"
    )
