"""The accelerator drivers' PGO training (rtl/pgo.py, used by harness builds under HIL_RTL_PGO=1).

The build mechanics (instrumented binary trained once, profile written, objects rebuilt, same results)
are tested on the small copy engine in test_rtl_harness.py; a PGO build of every preset is too slow
for CI. Here: every preset's driver attaches the workload and a key for it, that leaves the plain
build's cache key alone, and the workload really drives each preset's harness to the end.
"""

from __future__ import annotations

import pytest

from hil.rtl import pgo
from hil.rtl.common import _train
from hil.rtl.presets import make_accelerator
from hil.rtl.verilator_build import build_harness

PRESETS = ["bismo-edge", "bismo-cloud", "bitfusion-spatial"]


@pytest.mark.parametrize("config", PRESETS)
def test_each_preset_trains_its_pgo_build_on_the_fixed_workload(config: str, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.delenv("HIL_RTL_PGO", raising=False)
    acc = make_accelerator(config)
    acc.close()
    plain = acc._harness_spec()
    spec = acc._trained(plain)
    assert spec.train is not None and spec.train_key.startswith(f"{plain.name}:")
    assert spec.digest() == plain.digest() and not spec.pgo()  # plain builds keep their cached key
    monkeypatch.setenv("HIL_RTL_PGO", "1")
    assert spec.pgo() and spec.digest() != plain.digest()

    calls: list[tuple[str, int]] = []

    class Counting(type(acc)):  # type: ignore[misc]
        def time_gemm(self, *a, **k):  # type: ignore[no-untyped-def]
            calls.append(("gemm", 0))
            return super().time_gemm(*a, **k)

        def layer(self, q, batch):  # type: ignore[no-untyped-def]
            r = super().layer(q, batch)
            assert r.cycles > 0, q.key
            calls.append((q.key, batch))
            return r

    monkeypatch.delenv("HIL_RTL_PGO", raising=False)
    _train(Counting, acc.cfg, build_harness(plain))  # the workload on the plain binary: same driver path
    assert len(calls) == len(pgo.GEMMS) + len(pgo.LAYERS) * len(pgo.LAYER_BITS)
    assert {b for _, b in calls[len(pgo.GEMMS):]} == set(pgo.BATCHES)
