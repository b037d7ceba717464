"""How much memory timing a workload takes at least, so a request that cannot fit is refused
before anything is allocated (a huge batch or resolution on the local CPU)."""

from __future__ import annotations

from math import prod

from hil.workload import ConvLayer, Gemm, Linear, Logits, MBConv, Network, QuantLayer, Workload


def values_held(w: Workload, batch: int) -> int:
    """A lower bound on the values (activations and weights) alive at once while `w` runs on `batch`
    samples: its input, its largest intermediate, its output, and its weights."""
    if isinstance(w, Network):
        return max((values_held(x, batch) for x in w.layers), default=0)
    if isinstance(w, ConvLayer | QuantLayer):
        cin, cout = w.input[2], w.output[2]
        weights = cout * (cin // w.groups) * w.kernel * w.kernel
        return batch * (prod(w.input) + prod(w.output)) + weights
    if isinstance(w, MBConv):
        (h, wd, cin), (ho, wo, cout) = w.input, w.output
        mid = cin * w.expand
        acts = prod(w.input) + h * wd * mid + ho * wo * mid + prod(w.output)
        weights = cin * mid + mid * w.kernel * w.kernel + mid * cout
        return batch * acts + weights
    if isinstance(w, Logits):
        return batch * (prod(w.input) + w.classes) + w.input[2] * w.classes
    if isinstance(w, Linear):
        return batch * (w.in_features + w.out_features) + w.in_features * w.out_features
    if isinstance(w, Gemm):
        return w.m * w.k + batch * (w.k * w.n + w.m * w.n)
    return 0
