"""Shape helpers every network family shares."""

from __future__ import annotations


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels the way MobileNetV2 and ProxylessNAS do (never more than 10% down)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def conv_out(size: int, stride: int) -> int:
    """Output size of a conv with padding k//2 and odd k: ceil(size / stride)."""
    return (size - 1) // stride + 1
