"""Slices of an interleaved build leveled by workloads timed in every slice (MeasureSettings.level_keys),
and the LUT read at the build's typical host speed (hil.latency.lut_latencies)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest

from hil.latency import LatencyModel, lut_latencies, slice_levels
from hil.measure import MIN_SLICE, Measurement, MeasureSettings, summarize
from hil.store import SqliteStore

FP = {"class": {"device": "d", "batch": 1}, "state": {}}


def test_level_workloads_are_timed_in_every_slice_and_reported_once():
    # real torch-cpu work, tiny; slice_s=0 asks for slices of the minimum size
    from hil.devices.agent.backend import run_backend
    from hil.devices.agent.torch_cpu import TorchCpuBackend
    from hil.workload import Linear

    work = [Linear(8, 8 + i) for i in range(2 * MIN_SLICE + 2)]
    levels = (work[3].key, work[11].key)
    s = replace(MeasureSettings(), warmup_runs=1, warmup_s=0.0, min_repeats=3, min_time_s=0.0, slice_s=0.0,
                level_keys=levels)
    recs = list(run_backend(TorchCpuBackend(cold_cache=False), "local-cpu", {}, work, s))
    assert all(m.ok for m in recs)
    # every workload once: the level workloads' own records come with the first slice
    assert sorted(m.key for m in recs) == sorted(w.key for w in work)
    slices = {m.metrics["slice"]["id"] for m in recs}
    assert len(slices) == 2  # 16 others: two slices of 8, each with the 2 level workloads
    for m in recs:
        assert set(m.metrics["slice"]["level_ms"]) == set(levels)
        assert m.metrics["slice_size"] == MIN_SLICE + len(levels)
    first = next(m.metrics["slice"]["id"] for m in recs)
    assert {m.metrics["slice"]["id"] for m in recs if m.key in levels} == {first}
    # the sequential schedule and a request of level workloads only are timed plainly
    plain = list(run_backend(TorchCpuBackend(cold_cache=False), "local-cpu", {}, work[:4],
                             replace(s, schedule="sequential")))
    alone = list(run_backend(TorchCpuBackend(cold_cache=False), "local-cpu", {}, [work[3], work[11]], s))
    assert all("slice" not in m.metrics for m in plain + alone) and len(plain + alone) == 6


def _rec(key: str, ms: float, slice_id: str | None, level_ms: dict[str, float] | None) -> Measurement:
    metrics = {"slice": {"id": slice_id, "level_ms": level_ms}} if slice_id else {}
    return Measurement("d", key, {"kind": "x"}, FP, "measured", summarize([ms] * 3), metrics, noisy=True,
                       created_at=time.time())


def test_a_slow_slice_is_read_at_the_builds_typical_speed(tmp_path):
    # three slices; in the middle one the host was 1.2x slow for everything, the level workloads too
    levels = {"fast": {"L1": 1.0, "L2": 2.0}, "slow": {"L1": 1.2, "L2": 2.4}, "also-fast": {"L1": 1.0, "L2": 2.0}}
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        store.add_all([
            _rec("a", 3.0, "fast", levels["fast"]), _rec("b", 6.0, "slow", levels["slow"]),
            _rec("c", 5.0, "also-fast", levels["also-fast"]),
            # c measured again, in the slow slice: its leveled attempts agree
            _rec("c", 6.0, "slow", levels["slow"]),
            # an entry from before leveling keeps its stored median
            _rec("old", 7.0, None, None),
        ])
        cls = store.classes("d")[0].fp_class
        assert slice_levels(store.attempts(cls)) == pytest.approx({"fast": 1.0, "slow": 1.2, "also-fast": 1.0})
        lat = lut_latencies(store, cls)
        assert lat == pytest.approx({"a": 3.0, "b": 5.0, "c": 5.0, "old": 7.0})
        # what an optimizer receives reads the same table
        assert LatencyModel.from_store(store, "d", cls).table == pytest.approx(lat)
        # the accepted attempt is still the stored one (the latest, as recorded)
        assert store.lut(cls)["b"].latency_ms == pytest.approx(6.0)
    finally:
        store.close()


def test_a_key_with_an_unleveled_attempt_is_not_leveled(tmp_path):
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        store.add_all([_rec("a", 3.0, "s1", {"L": 1.0}), _rec("b", 6.0, "s2", {"L": 1.5}),
                       _rec("b", 4.5, None, None)])
        cls = store.classes("d")[0].fp_class
        lat = lut_latencies(store, cls)
        # two slices 1.5x apart: the typical speed is their geometric middle, so a's slice ran 1/sqrt(1.5)
        # of it; b mixes both kinds of attempt: as stored
        assert lat["a"] == pytest.approx(3.0 * math.sqrt(1.5))
        assert lat["b"] == pytest.approx(store.lut(cls)["b"].latency_ms)
    finally:
        store.close()


def test_builds_that_share_no_level_workload_are_each_read_at_their_own_typical_speed(tmp_path):
    # two builds into one class (another space, or AMC's incremental entries) levelled by different
    # workloads: nothing ties their slices together, so neither may shift the other's entries
    store = SqliteStore(str(tmp_path / "s.db"))
    try:
        store.add_all([
            _rec("a", 3.0, "fast", {"L": 1.0}), _rec("b", 6.0, "slow", {"L": 1.2}),
            _rec("c", 5.0, "also-fast", {"L": 1.0}),
            _rec("d", 2.0, "t1", {"M": 5.0}), _rec("e", 4.0, "t2", {"M": 5.0}),
        ])
        cls = store.classes("d")[0].fp_class
        assert lut_latencies(store, cls) == pytest.approx({"a": 3.0, "b": 5.0, "c": 5.0, "d": 2.0, "e": 4.0})
    finally:
        store.close()
