"""Layer-wise quantization spaces (HAQ): every conv / depthwise / FC layer of a network at every
(weight bits, activation bits) pair of a range, as `QuantLayer` workloads for the accelerators.

`mobilenet-v1-layers` and `mobilenet-v2-layers` default to the ImageNet shapes HAQ used (224x224x3,
1000 classes). `sample()` draws per-layer bit policies, whole networks for validating the per-layer
sum against one continuous simulation of the network.
"""

from __future__ import annotations

import random
from typing import Any

from hil.errors import ConfigError
from hil.nets.models import make_model
from hil.workload import Network, QuantLayer, Workload


def parse_bits(spec: str | int | None, default: str = "2..8") -> tuple[int, ...]:
    """'2..8' -> (2, ..., 8); '4,8' -> (4, 8); '8' -> (8,). Bits must be within 1..8."""
    text = str(default if spec is None else spec).strip()
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            bits = tuple(range(lo, hi + 1))
        else:
            bits = tuple(sorted({int(x) for x in text.split(",")}))
    except ValueError:
        raise ConfigError(f"--bits must look like 2..8 or 4,8 or 8, got {text!r}") from None
    if not bits or min(bits) < 1 or max(bits) > 8:
        raise ConfigError(f"--bits {text!r}: bitwidths must be within 1..8")
    return bits


class QuantLayerSpace:
    def __init__(self, model: str, bits: str | None = None, resolution: int = 224, width: float = 1.0,
                 classes: int = 1000, channels: int = 3) -> None:
        self.name = f"{model}-layers"
        self.bits = parse_bits(bits)
        self.spec = make_model(model, width=width, input_size=resolution, in_channels=channels, classes=classes)
        self._opts = {"model": model, "bits": f"{min(self.bits)}..{max(self.bits)}" if len(self.bits) > 1
                      else str(self.bits[0]), "resolution": resolution, "width": float(width),
                      "classes": classes, "channels": channels}
        self.units = self.spec.convs()

    def options(self) -> dict[str, Any]:
        return dict(self._opts)

    def layers(self, wbits: list[int], abits: list[int]) -> list[QuantLayer]:
        return self.spec.qlayers(wbits, abits)

    def workloads(self) -> list[Workload]:
        seen: dict[str, Workload] = {}
        n = len(self.units)
        for w in self.bits:
            for a in self.bits:
                for q in self.spec.qlayers([w] * n, [a] * n):
                    seen.setdefault(q.key, q)
        return sorted(seen.values(), key=lambda q: q.key)

    def sample(self, n: int, seed: int) -> list[Network]:
        rng = random.Random(seed)
        nets: dict[str, Network] = {}
        while len(nets) < n:
            ws = [rng.choice(self.bits) for _ in self.units]
            as_ = [rng.choice(self.bits) for _ in self.units]
            net = Network(tuple(self.layers(ws, as_)), name=self.name)
            nets.setdefault(net.key, net)
        return list(nets.values())


def mobilenet_v1_layers(bits: str | None = None, resolution: int = 224, width: float = 1.0) -> QuantLayerSpace:
    return QuantLayerSpace("mobilenet-v1", bits, resolution, width)


def mobilenet_v2_layers(bits: str | None = None, resolution: int = 224, width: float = 1.0) -> QuantLayerSpace:
    return QuantLayerSpace("mobilenet-v2", bits, resolution, width)
