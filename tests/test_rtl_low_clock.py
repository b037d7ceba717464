"""The harness's one model evaluation per cycle (hil_harness.h, RiseEval) against the two it replaced.

BISMO's and Bit Fusion's harnesses skip the evaluation at the clock's falling edge and Verilator's
trigger loop, which is exact only while the rising clock edge is the design's one trigger and none of
the DRAM-side outputs depends combinationally on an input. An RTL change that broke that would shift
cycles silently; HIL_HARNESS_EVAL_LOW=1 evaluates twice per cycle through eval() as before, and every
result here must be the same both ways: timing runs at mixed bits with batch > 1 (read latency,
bandwidth stalls, result writes) and a run on data (the outputs too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hil.rtl.presets import make_accelerator
from hil.workload import QuantLayer

LAYERS = [
    QuantLayer("pw", (14, 14, 64), (14, 14, 96), 1, 1, 1, 4, 3, True, False),
    QuantLayer("dw", (14, 14, 32), (7, 7, 32), 3, 2, 32, 8, 8, True, False),
    QuantLayer("conv", (8, 8, 16), (8, 8, 40), 3, 1, 1, 2, 6, True, False),
    QuantLayer("fc", (1, 1, 256), (1, 1, 100), 1, 1, 1, 5, 5, True, False),
]
DATA = QuantLayer("data", (6, 6, 8), (6, 6, 12), 3, 1, 1, 3, 4, True, False)


def _runs(config: str) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    acc = make_accelerator(config)
    try:
        timing = [acc.layer(q, 4).to_json() for q in LAYERS]
        rng = np.random.default_rng(3)
        x, w = rng.integers(0, 16, (2, 6, 6, 8)), rng.integers(-4, 4, (12, 3, 3, 8))
        out, r = acc.run_layer(DATA, x, w)
        return timing, out, r.to_json()
    finally:
        acc.close()


@pytest.mark.parametrize("config", ["bismo-edge", "bismo-cloud", "bitfusion-spatial"])
def test_one_evaluation_per_cycle_gives_the_same_counters(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIL_HARNESS_EVAL_LOW", raising=False)
    timing, out, data = _runs(config)
    monkeypatch.setenv("HIL_HARNESS_EVAL_LOW", "1")
    timing2, out2, data2 = _runs(config)
    for q, a, b in zip(LAYERS, timing, timing2, strict=True):
        assert a["cycles"] > a["compute_cycles"] > 0, q.key  # memory-side cycles were exercised
        assert a == b, q.key
    assert np.array_equal(out, out2)
    assert data == data2
