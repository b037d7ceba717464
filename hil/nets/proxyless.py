"""The ProxylessNAS mobile network family (Cai et al., ICLR 2019).

First conv 3x3/32 stride 2, a fixed MBConv (expand 1, 3x3) to 16 channels, then six stages of widths
24, 40, 80, 96, 192, 320 with 4, 4, 4, 4, 4, 1 blocks and strides 2, 2, 2, 1, 2, 1. Each of the 21
searchable blocks picks an MBConv with kernel {3, 5, 7} x expand {3, 6}, or `zero` (skip) when it is
not the first block of its stage. Then a 1x1 conv to 1280 and pool + FC: 7^21 architectures.

An architecture is a tuple of 21 op names (`OPS`). `ProxylessMobile` holds the family's fixed shapes
and turns an architecture into its layers; the LUT's search space (`hil.lut_builder.spaces.proxyless`)
adds the unique workloads and network sampling on top.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hil.errors import ConfigError
from hil.nets.shapes import conv_out, make_divisible
from hil.workload import ConvLayer, Logits, MBConv, Network, Workload

# (width, blocks, stride of the first block)
STAGES: tuple[tuple[int, int, int], ...] = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
OPS: tuple[str, ...] = (
    "3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "5x5_MBConv6", "7x7_MBConv3", "7x7_MBConv6", "zero",
)
# The architecture ProxylessNAS found for mobile phones (Cai et al., Fig. 4; the released
# `proxyless_mobile` network), as ops of this family: the fixed reference of speedups.
PROXYLESS_MOBILE: tuple[str, ...] = (
    "5x5_MBConv3", "3x3_MBConv3", "zero", "zero",
    "7x7_MBConv3", "3x3_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
    "7x7_MBConv6", "5x5_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
    "5x5_MBConv6", "5x5_MBConv3", "5x5_MBConv3", "5x5_MBConv3",
    "7x7_MBConv6", "7x7_MBConv6", "7x7_MBConv3", "7x7_MBConv3",
    "7x7_MBConv6",
)
FIRST_CONV = 32
FIRST_BLOCK = 16
LAST_CONV = 1280


def parse_op(op: str) -> tuple[int, int] | None:
    """'5x5_MBConv6' -> (kernel 5, expand 6); 'zero' -> None."""
    if op == "zero":
        return None
    if op not in OPS:
        raise ConfigError(f"unknown ProxylessNAS op {op!r} (known: {', '.join(OPS)})")
    k = int(op[0])
    e = int(op.split("MBConv")[1])
    return k, e


@dataclass(frozen=True)
class BlockSlot:
    """One searchable block position: its shapes are fixed, its op is chosen."""

    index: int
    input: tuple[int, int, int]
    output: tuple[int, int, int]
    stride: int
    first_in_stage: bool

    def workload(self, op: str) -> MBConv | None:
        parsed = parse_op(op)
        if parsed is None:
            if self.first_in_stage:
                raise ConfigError(f"block {self.index} is the first of its stage and cannot be 'zero'")
            return None
        k, e = parsed
        idskip = int(self.stride == 1 and self.input[2] == self.output[2])
        return MBConv(self.input, self.output, e, k, self.stride, idskip)

    @property
    def choices(self) -> tuple[str, ...]:
        return OPS[:-1] if self.first_in_stage else OPS


class ProxylessMobile:
    """The family at one resolution, width, input channels, classes and stem stride."""

    def __init__(
        self,
        resolution: int = 224,
        width: float = 1.0,
        channels: int = 3,
        classes: int = 1000,
        stem_stride: int = 2,
    ) -> None:
        if not isinstance(resolution, int) or not 16 <= resolution <= 1024:
            raise ConfigError(f"resolution must be an integer from 16 to 1024, got {resolution!r}")
        if not 0.1 <= float(width) <= 4.0:
            raise ConfigError(f"width multiplier must be within 0.1..4.0, got {width!r}")
        if channels < 1 or classes < 1:
            raise ConfigError("channels and classes must be positive")
        if stem_stride not in (1, 2):
            raise ConfigError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        self.resolution = resolution
        self.width = float(width)
        self.channels = channels
        self.classes = classes
        self.stem_stride = stem_stride

        c = lambda n: make_divisible(n * self.width)  # noqa: E731
        s = conv_out(resolution, stem_stride)
        self.first_conv = ConvLayer("Conv", (resolution, resolution, channels), (s, s, c(FIRST_CONV)), 3, stem_stride)
        self.first_block = MBConv((s, s, c(FIRST_CONV)), (s, s, c(FIRST_BLOCK)), 1, 3, 1, 0)
        slots: list[BlockSlot] = []
        cin = c(FIRST_BLOCK)
        for width_, blocks, stride in STAGES:
            cout = c(width_)
            for b in range(blocks):
                st = stride if b == 0 else 1
                so = conv_out(s, st)
                slots.append(BlockSlot(len(slots), (s, s, cin), (so, so, cout), st, b == 0))
                s, cin = so, cout
        self.slots: tuple[BlockSlot, ...] = tuple(slots)
        last = c(LAST_CONV) if self.width > 1.0 else LAST_CONV
        self.last_conv = ConvLayer("Conv_1", (s, s, cin), (s, s, last), 1, 1)
        self.logits = Logits((s, s, last), classes)

    def options(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "width": self.width, "channels": self.channels,
                "classes": self.classes, "stem_stride": self.stem_stride}

    @property
    def fixed(self) -> list[Workload]:
        """Layers every architecture has."""
        return [self.first_conv, self.first_block, self.last_conv, self.logits]

    def check_arch(self, arch: Sequence[str]) -> tuple[str, ...]:
        if len(arch) != len(self.slots):
            raise ConfigError(f"an architecture has {len(self.slots)} block choices, got {len(arch)}")
        for slot, op in zip(self.slots, arch, strict=True):
            slot.workload(op)  # validates
        return tuple(arch)

    def layers(self, arch: Sequence[str]) -> list[Workload]:
        """The architecture's layers in order (zero blocks vanish)."""
        arch = self.check_arch(arch)
        blocks = [slot.workload(op) for slot, op in zip(self.slots, arch, strict=True)]
        return [self.first_conv, self.first_block, *[b for b in blocks if b is not None],
                self.last_conv, self.logits]

    def network(self, arch: Sequence[str]) -> Network:
        return Network(tuple(self.layers(arch)), name="proxyless")

    def reference_network(self) -> Network:
        """ProxylessNAS-Mobile's ops in this family (at its resolution and width)."""
        return self.network(PROXYLESS_MOBILE)

    def random_arch(self, rng: random.Random) -> tuple[str, ...]:
        return tuple(rng.choice(slot.choices) for slot in self.slots)
