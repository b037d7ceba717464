"""Validation scores the stored model; calibration versions, anchoring, sessions, migration, export.

The device here is a deterministic test double of a Target (a real implementation of the seam whose
latencies are a fixed function of the workload, times a host speed the test sets), so every figure
can be computed exactly; the code under test (build, calibration, validation, store) is the real one.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import statistics
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hil.calibration import SampledSpace, anchor, measure_session
from hil.errors import ConfigError, StoreError
from hil.latency import CALIBRATION_MODEL, NOT_LUT_PREFIXES, LatencyModel
from hil.lut_builder.build import build_on_target
from hil.lut_builder.export import export_lut, offset_key
from hil.lut_builder.spaces import make_space
from hil.measure import MIN_SLICE, Measurement, MeasureSettings, summarize
from hil.store import SCHEMA_VERSION, SqliteStore
from hil.target import Target
from hil.validate import compare_luts, lut_class, metrics, speedup_metrics, validate
from hil.workload import Network, Workload
from tests.hilcli import assert_user_error, hil

DATA = Path(__file__).parent / "data"
SETTINGS = MeasureSettings(min_repeats=3, min_time_s=0.0, warmup_runs=1, warmup_s=0.0)


def block_ms(w: Workload) -> float:
    return 0.1 + (zlib.crc32(w.key.encode()) % 1000) / 1000


def block_weight_bytes(w: Workload) -> float:
    return 1000.0 + zlib.crc32(w.key[::-1].encode()) % 100_000


class FakeDevice:
    """Block latency: a fixed function of the key. A network: `net_scale` x its blocks' sum +
    `net_offset_ms` (what a whole network adds). Everything times `speed` (the host's drift)."""

    provenance = "measured"

    def __init__(self, name: str = "fake", speed: float = 1.0, net_scale: float = 1.2, net_offset_ms: float = 0.5,
                 interrupt_after: int | None = None, per_weight_byte_ms: float | None = None) -> None:
        self.name = name
        self.speed = speed
        self.net_scale = net_scale
        self.net_offset_ms = net_offset_ms
        # set: blocks report their weight bytes, and a network costs that much per byte more
        self.per_weight_byte_ms = per_weight_byte_ms
        self.interrupt_after = interrupt_after
        self.requests: list[list[str]] = []

    def latency(self, w: Workload) -> float:
        if isinstance(w, Network):
            extra = (self.per_weight_byte_ms or 0.0) * sum(block_weight_bytes(x) for x in w.layers)
            return self.speed * (self.net_scale * sum(block_ms(x) for x in w.layers) + extra + self.net_offset_ms)
        return self.speed * block_ms(w)

    def describe(self, settings: MeasureSettings) -> dict[str, Any]:
        return {"class": {"device": self.name, "protocol": settings.shaping_json()}, "state": {"speed": self.speed}}

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        self.requests.append([w.key for w in workloads])
        fp = self.describe(settings)
        for i, w in enumerate(workloads):
            if self.interrupt_after is not None and i >= self.interrupt_after:
                raise KeyboardInterrupt
            metrics = {"weight_bytes": block_weight_bytes(w)} \
                if self.per_weight_byte_ms is not None and not isinstance(w, Network) else {}
            yield Measurement(self.name, w.key, w.to_json(), fp, self.provenance, summarize([self.latency(w)] * 3),
                              metrics)

    def close(self) -> None:
        pass


def built(tmp_path: Path, name: str = "db", nets: int = 4, **device: Any) -> tuple[SqliteStore, FakeDevice, Any, str]:
    store = SqliteStore(tmp_path / f"{name}.db")
    dev = FakeDevice(**device)
    space = make_space("proxyless-mobile", resolution=32)
    res = build_on_target(store, dev, space, SETTINGS, seed=0, calibration_nets=nets)
    assert res.status == "ok" and res.calibration is not None
    return store, dev, space, lut_class(store, dev, SETTINGS)


def test_fake_device_is_a_target_and_spaces_are_sampled_spaces():
    assert isinstance(FakeDevice(), Target)
    for name, opts in (("proxyless-mobile", {}), ("mobilenet-v1-layers", {"bits": "4,8", "resolution": 32})):
        assert isinstance(make_space(name, **opts), SampledSpace)


def test_headline_is_the_stored_model_and_no_validation_measurement_reaches_a_prediction(tmp_path):
    # two stores built alike; the second validates on a host 2x slower and with networks that
    # cost more than the calibration said: the measurements differ, the predictions must not
    a, dev_a, space, cls = built(tmp_path, "a")
    b, _, _, cls_b = built(tmp_path, "b")
    assert cls == cls_b
    before = LatencyModel.from_store(a, dev_a.name, cls)
    ra = validate(a, dev_a, space, SETTINGS, samples=6, seed=1)
    rb = validate(b, FakeDevice(speed=2.0, net_scale=1.5), space, SETTINGS, samples=6, seed=1)
    after = LatencyModel.from_store(a, dev_a.name, cls)
    assert after.table == before.table and after.calibration == before.calibration
    nets = {n.key: n for n in space.sample(40, 1)}
    for pa, pb in zip(ra.points, rb.points, strict=True):
        assert pa["network"] == pb["network"]
        assert pa["predicted_ms"] == pb["predicted_ms"] == before.network(nets[pa["network"]].layers)
        assert pb["measured_ms"] > 1.9 * pa["measured_ms"]
    # the headline metrics (and --json's top level) are those of from_store's predictions
    expect = metrics([before.network(nets[p["network"]].layers) for p in ra.points],
                     [p["measured_ms"] for p in ra.points])
    assert ra.stored == expect
    top = ra.to_json()
    assert top["model"] == "stored" and top["within_10pct"] == expect.within_10pct and top["mape"] == expect.mape
    # the device is exactly the calibration's model: the stored model is exact on a; on b it is off
    # by what the host and the networks changed, while the in-session refit hides it
    assert ra.stored.mape == pytest.approx(0, abs=1e-6)
    assert rb.stored.mean_bias == pytest.approx(100 * (1.2 / (2.0 * 1.5) - 1), abs=3)  # predicted low
    assert rb.reanchored is not None and rb.reanchored.mape < 1
    # no calibration network is scored; each pass is one session with the reference and drift reference
    held_out = set(a.load_model(cls, CALIBRATION_MODEL)["networks"])
    assert not held_out & {p["network"] for p in ra.points}
    ref = space.reference_network().key
    assert ra.speedup["reference"] == ref
    val_requests = [r for r in dev_a.requests if ref in r]
    assert len(val_requests) == 3 and all(held_out <= set(r) for r in val_requests)
    # a drift of the host's speed cancels in a ratio: the speedups stay close on b
    assert ra.speedup["median_abs_err"] == pytest.approx(0, abs=1e-6)
    assert rb.speedup["median_abs_err"] < 1 < 50 < rb.stored.mape


def test_speedup_metrics():
    s = speedup_metrics([1.0, 2.0, 1.5, 1.3], [1.0, 2.1, 1.5, 1.1])
    assert s.n == 4 and s.within_5pct == 0.75 and s.within_10pct == 0.75
    assert s.median_abs_err == pytest.approx(100 * (0.0 + 0.1 / 2.1) / 2)
    assert s.kendall_tau == pytest.approx(1.0)


def test_an_interrupted_pass_is_remeasured_whole_never_paired_with_another_session(tmp_path):
    store, dev, space, cls = built(tmp_path)
    validate(store, dev, space, SETTINGS, samples=4, seed=3)  # every pass complete
    # a new calibration version: earlier validation sessions no longer count for a rerun
    anchor(store, dev, space, SETTINGS, cls)
    cut = FakeDevice(speed=1.3, interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        validate(store, cut, space, SETTINGS, samples=4, seed=3)
    # a session's records are committed in one transaction: the interrupted one left none
    assert not [m for m in store.attempts(cls) if m.fingerprint["state"]["speed"] == 1.3]
    # the rerun on a faster host: if the interrupted records were reused, pass 0 would mix speeds
    r = validate(store, FakeDevice(speed=1.0), space, SETTINGS, samples=4, seed=3)
    assert len(r.sessions) == 3
    for sid in r.sessions:
        speeds = {m.fingerprint["state"]["speed"] for m in store.attempts(cls) if m.metrics.get("session") == sid}
        assert speeds == {1.0}
    assert r.reanchored is not None and r.reanchored.mape < 1e-6
    # a plain rerun resumes: every session reused whole, nothing measured
    again = validate(store, FakeDevice(speed=5.0), space, SETTINGS, samples=4, seed=3)
    assert again.sessions == r.sessions and again.points == r.points


class CutAfter(FakeDevice):
    """Interrupted (as by Ctrl-C) in the middle of its `requests_before_cut`+1-th request."""

    def __init__(self, requests_before_cut: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.cut = requests_before_cut

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        for i, m in enumerate(super().measure(workloads, settings)):
            if len(self.requests) > self.cut and i == len(workloads) // 2:
                raise KeyboardInterrupt
            yield m


@pytest.mark.parametrize("cut", [0, 1, 3, 6])
def test_a_pass_is_cut_into_bounded_sessions_and_a_rerun_measures_only_the_part_in_flight(tmp_path, cut):
    store, _, space, cls = built(tmp_path)
    held_out = store.load_model(cls, CALIBRATION_MODEL)["networks"]
    ref = space.reference_network().key
    fine = replace(SETTINGS, slice_s=0.0)  # parts of the minimum size
    with pytest.raises(KeyboardInterrupt):
        validate(store, CutAfter(cut), space, fine, samples=20, seed=7)
    first = FakeDevice()
    r = validate(store, first, space, fine, samples=20, seed=7)
    parts = len(r.sessions) // 3
    assert parts >= 3 and len(first.requests) == 3 * parts - cut  # the whole parts were reused
    for req in first.requests:
        assert ref in req and len(req) >= MIN_SLICE  # each part: the reference, the drift reference
    # the calibration networks sit together in the first part of each pass
    firsts = [[m.key for m in store.attempts(cls) if m.metrics.get("session") == sid] for sid in r.sessions]
    assert sum(set(held_out) <= set(keys) for keys in firsts) == 3
    # every (pass, network) was measured exactly once: nothing in flight was kept, nothing done redone
    scored = {p["network"] for p in r.points}
    counts = Counter((m.metrics["validation_pass"], m.key) for m in store.attempts(cls)
                     if m.key in scored and "validation_pass" in m.metrics)
    assert len(scored) == 20 and set(counts) == {(p, k) for p in range(3) for k in scored}
    assert set(counts.values()) == {1}
    # the deterministic device: the cut changes no figure
    assert r.stored.mape == pytest.approx(0, abs=1e-6) and r.speedup["median_abs_err"] == pytest.approx(0, abs=1e-6)
    assert r.reanchored is not None and r.reanchored.mape < 1e-6


class DriftingDevice(FakeDevice):
    """The host's speed changes from one request (session) to the next, as a VM's does."""

    def __init__(self, speeds: Sequence[float], **kw: Any) -> None:
        super().__init__(**kw)
        self.speeds = list(speeds)

    def measure(self, workloads: Sequence[Workload], settings: MeasureSettings) -> Iterator[Measurement]:
        self.speed = self.speeds[len(self.requests) % len(self.speeds)]
        yield from super().measure(workloads, settings)


def median_speed(speeds: Sequence[float]) -> float:
    """The validation's typical speed: its median session, taken in log space as the fit centres it."""
    logs = sorted(math.log(x) for x in speeds)
    return math.exp((logs[(len(logs) - 1) // 2] + logs[len(logs) // 2]) / 2)


def test_each_network_is_leveled_to_the_validations_typical_speed_by_its_sessions_fitted_level(tmp_path):
    store, _, space, _ = built(tmp_path)
    fine = replace(SETTINGS, slice_s=0.0)  # several sessions a pass
    speeds = [1.0, 1.5, 1.4, 0.8]  # the second part slower in pass 0, faster in pass 1
    drifting = DriftingDevice(speeds)
    r = validate(store, drifting, space, fine, samples=12, seed=3)
    val = [q for q in drifting.requests if space.reference_network().key in q]
    assert len(val) >= 6  # three passes of two sessions or more, on different speeds
    typical = median_speed([speeds[i % len(speeds)] for i in range(len(val))])
    nets = {n.key: n for n in space.sample(40, 3)}
    for p in r.points:
        truth = FakeDevice().latency(nets[p["network"]])
        # leveled: exactly the network at the typical speed; as timed: each session's own
        assert p["measured_ms"] == pytest.approx(typical * truth)
        assert sorted(x / truth for x in p["attempts_ms"]) != pytest.approx([typical] * 2)
    # the stored model is exact up to that speed, so it ranks perfectly; as timed it does not
    assert r.stored.kendall_tau == pytest.approx(1.0)
    assert r.stored.mean_bias == pytest.approx(100 * (1 / typical - 1))
    assert r.unleveled is not None and r.unleveled.kendall_tau < 0.99
    assert r.repeatability["mape"] == pytest.approx(0, abs=1e-9)
    assert r.repeatability["kendall_tau"] == pytest.approx(1.0)
    assert r.repeatability["kendall_tau_unleveled"] < 0.95


class SlipDevice(DriftingDevice):
    """As DriftingDevice, and in every other session the reference network alone runs 10% slow (a
    moment of the host that fell on it): a leveling through the reference alone carries that to every
    network of those sessions, and a network timed in two of them in three passes keeps it."""

    def __init__(self, speeds: Sequence[float], ref: str) -> None:
        super().__init__(speeds)
        self.ref = ref

    def latency(self, w: Workload) -> float:
        slip = 1.1 if w.key == self.ref and len(self.requests) % 2 == 1 else 1.0
        return slip * super().latency(w)


def test_the_passes_cut_different_sessions_and_their_levels_come_from_every_network(tmp_path):
    store, _, space, _ = built(tmp_path)
    fine = replace(SETTINGS, slice_s=0.0)
    ref = space.reference_network().key
    slip = SlipDevice([1.0, 1.5, 1.4, 0.8, 1.2], ref)
    r = validate(store, slip, space, fine, samples=16, seed=3)
    val = [set(q) - {ref} for q in slip.requests if ref in q]
    third = len(val) // 3
    # the passes group the networks differently, so sessions overlap across passes
    cuts = [{frozenset(q) for q in val[i * third:(i + 1) * third]} for i in range(3)]
    assert cuts[0].isdisjoint(cuts[1]) and cuts[0].isdisjoint(cuts[2]) and cuts[1].isdisjoint(cuts[2])
    nets = {n.key: n for n in space.sample(40, 3)}
    truth = {p["network"]: FakeDevice().latency(nets[p["network"]]) for p in r.points}
    ref_typical = statistics.median(x for p in r.points for x in p["reference_ms"])

    def spread(ratios: list[float]) -> float:  # how far the networks' levels disagree
        return max(ratios) / min(ratios) - 1

    fitted = spread([p["measured_ms"] / truth[p["network"]] for p in r.points])
    through_ref = spread([statistics.median(x * ref_typical / y for x, y in zip(p["attempts_ms"], p["reference_ms"],
                                                                               strict=True)) / truth[p["network"]]
                          for p in r.points])
    assert through_ref > 0.04  # the slipped reference mislevels its whole session
    # the fit takes the session's level from all its networks: the slip moves it a little, not by 10%
    assert fitted < through_ref / 3
    assert r.stored.kendall_tau > r.leveling["reference_only"]["kendall_tau"]
    assert set(r.leveling["session_levels"]) == set(r.sessions)


def test_one_pass_on_a_measured_device_is_refused_before_anything_is_measured(tmp_path):
    store, _, space, cls = built(tmp_path)
    before = len(list(store.attempts(cls)))
    dev = FakeDevice()
    with pytest.raises(ConfigError, match="at least 2 passes"):
        validate(store, dev, space, SETTINGS, samples=4, seed=3, passes=1)
    assert dev.requests == [] and len(list(store.attempts(cls))) == before
    # two passes are allowed, and the repeatability says how many it compared
    assert validate(store, dev, space, SETTINGS, samples=4, seed=3, passes=2).repeatability["passes"] == 2


def test_anchor_stores_a_new_version_keeps_the_old_and_the_newest_is_used(tmp_path):
    store, dev, space, cls = built(tmp_path)
    v1 = store.model_versions(cls, CALIBRATION_MODEL)
    assert [v.params["kind"] for v in v1] == ["build"]
    assert v1[0].params["drift_reference"]["latency_ms"] > 0
    # the host is now 1.25x slower: without an anchor the stored model is off by that
    slow = FakeDevice(speed=1.25)
    no_anchor = validate(store, slow, space, SETTINGS, samples=4, seed=5)
    assert no_anchor.stored.mean_bias == pytest.approx(-20, abs=0.5)
    prev, new = anchor(store, slow, space, SETTINGS, cls)
    assert prev.version == 1 and new.version == 2 and new.params["kind"] == "anchor"
    assert new.params["drift_reference"]["latency_ms"] == pytest.approx(
        1.25 * v1[0].params["drift_reference"]["latency_ms"])
    versions = store.model_versions(cls, CALIBRATION_MODEL)
    assert versions[0] == v1[0] and len(versions) == 2
    model = LatencyModel.from_store(store, dev.name, cls)
    assert model.calibration.scale == pytest.approx(1.25 * 1.2)
    with_anchor = validate(store, slow, space, SETTINGS, samples=4, seed=5)
    assert with_anchor.stored.mape == pytest.approx(0, abs=1e-6)
    assert with_anchor.calibration["version"] == 2 and with_anchor.calibration["kind"] == "anchor"
    assert with_anchor.drift_reference["validation_vs_calibration"] == pytest.approx(1.0)


def test_a_build_rerun_adds_no_calibration_version(tmp_path):
    store, dev, space, cls = built(tmp_path)
    build_on_target(store, dev, space, SETTINGS, seed=0, calibration_nets=4)
    assert len(store.model_versions(cls, CALIBRATION_MODEL)) == 1


def test_session_records_carry_one_id_and_drift_stays_out_of_the_lut(tmp_path):
    store, dev, space, cls = built(tmp_path)
    nets = space.sample(2, 9)
    drift = space.workloads()[0]
    lut_before = {k: m.latency_ms for k, m in store.lut(cls).items()}
    s = measure_session(store, FakeDevice(speed=3.0), nets, SETTINGS, "probe", drift=drift)
    assert set(s.latency_ms) == {n.key for n in nets} | {"drift:" + drift.key}
    assert {k: m.latency_ms for k, m in store.lut(cls).items() if not k.startswith(NOT_LUT_PREFIXES)} == \
        {k: v for k, v in lut_before.items() if not k.startswith(NOT_LUT_PREFIXES)}
    assert LatencyModel.from_store(store, dev.name, cls).latency(drift) == block_ms(drift)


def test_a_store_written_by_schema_1_is_migrated_keeping_everything(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(DATA / "store-v1.db", db)
    con = sqlite3.connect(db)
    n_before = con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    (cls, params), = con.execute("SELECT class, params FROM models").fetchall()
    con.close()
    with SqliteStore(db) as store:
        versions = store.model_versions(cls, CALIBRATION_MODEL)
        assert len(versions) == 1 and versions[0].params == json.loads(params)
        model = LatencyModel.from_store(store, "local-cpu", cls)
        assert model.calibration.scale == json.loads(params)["scale"] and len(model.table) == 70
        store.save_model(cls, CALIBRATION_MODEL, {**json.loads(params), "scale": 2.0}, 0.0)
    with SqliteStore(db) as store:  # opens again as schema 2, both versions there
        assert [v.params["scale"] for v in store.model_versions(cls, CALIBRATION_MODEL)][1] == 2.0
        assert sum(1 for c in store.classes() for _ in store.attempts(c.fp_class)) == n_before
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    con.execute("UPDATE meta SET value='99'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=r"schema version 99.*newer hil"):
        SqliteStore(db)


def test_proxyless_yaml_folds_the_calibration_so_a_plain_sum_of_means_is_the_stored_prediction(tmp_path):
    import yaml

    store, dev, space, cls = built(tmp_path)
    model = LatencyModel.from_store(store, dev.name, cls)
    lut = store.lut(cls)
    rows = [{"key": k, "latency_ms": m.latency_ms, "n": m.stats.n, "std_ms": m.stats.std_ms}
            for k, m in lut.items() if not k.startswith("drift:")]
    cal = store.load_model(cls, CALIBRATION_MODEL)
    assert offset_key([r["key"] for r in rows]) == space.logits.key
    out = tmp_path / "lut.yaml"
    written, note = export_lut(rows, {"device": dev.name}, "proxyless-yaml", str(out), cal)
    assert "folded in" in note
    table = yaml.safe_load(out.read_text())
    side = json.loads(Path(written[1]).read_text())
    assert side["calibration"]["folded"] is True and side["calibration"]["offset_key"] == space.logits.key
    for net in space.sample(5, 11):
        # what ProxylessNAS's LatencyEstimator does: the sum of `mean` over the network's layers
        assert sum(table[w.key]["mean"] for w in net.layers) == pytest.approx(model.network(net.layers))
    export_lut(rows, {"device": dev.name}, "proxyless-yaml", str(out), cal, fold=False)
    raw = yaml.safe_load(out.read_text())
    assert all(raw[r["key"]]["mean"] == r["latency_ms"] for r in rows)
    assert json.loads(Path(written[1]).read_text())["calibration"]["folded"] is False


def test_the_calibrations_weight_term_is_fitted_stored_predicted_exported_and_validated(tmp_path):
    import yaml

    from hil.latency import NetworkCalibration

    beta = 2e-6  # ms per weight byte a network costs beyond its blocks timed alone
    store, dev, space, cls = built(tmp_path, nets=8, per_weight_byte_ms=beta)
    model = LatencyModel.from_store(store, dev.name, cls)
    assert model.calibration.per_weight_byte_ms == pytest.approx(beta, rel=1e-6)
    assert model.calibration.scale == pytest.approx(dev.net_scale, rel=1e-6)
    net = space.sample(1, 21)[0]
    assert model.network(net.layers) == pytest.approx(dev.latency(net), rel=1e-9)
    assert model.network(net.layers) == pytest.approx(
        model.calibration.apply(model.block_sum(net.layers), model.weight_sum(net.layers)))
    # E[LAT] at a one-hot choice is that network's prediction (ProxylessNAS's expectation)
    one_hot = model.expected(net.layers[:2], [[None, w] for w in net.layers[2:]], [[0.0, 1.0]] * (len(net.layers) - 2))
    assert one_hot == pytest.approx(model.network(net.layers))
    # validation scores it: the stored model is exact on this device
    r = validate(store, dev, space, SETTINGS, samples=6, seed=1)
    assert r.stored.mape == pytest.approx(0, abs=1e-6)
    # the folded proxyless-yaml carries the term in every mean
    lut = store.lut(cls)
    rows = [{"key": k, "latency_ms": m.latency_ms, "n": m.stats.n, "std_ms": m.stats.std_ms,
             "metric_weight_bytes": m.metrics["weight_bytes"]}
            for k, m in lut.items() if not k.startswith(NOT_LUT_PREFIXES)]
    out = tmp_path / "lut.yaml"
    export_lut(rows, {"device": dev.name}, "proxyless-yaml", str(out), store.load_model(cls, CALIBRATION_MODEL))
    table = yaml.safe_load(out.read_text())
    assert sum(table[w.key]["mean"] for w in net.layers) == pytest.approx(model.network(net.layers))
    # without the device's term the fit keeps none; a version stored before the term reads as 0
    plain, _, _, cls_p = built(tmp_path, "plain", nets=8)
    assert LatencyModel.from_store(plain, "fake", cls_p).calibration.per_weight_byte_ms == 0.0
    assert NetworkCalibration.from_json({"scale": 1.1, "offset_ms": 0.2, "fitted_on": 5}).per_weight_byte_ms == 0.0
    # a fit whose weight coefficient comes out negative falls back to scale and offset
    cal = NetworkCalibration.fit([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
                                 [6.0, 5.0, 4.0, 3.0, 2.0, 1.1])
    assert cal.per_weight_byte_ms == 0.0 and cal.scale == pytest.approx(1.0) and cal.offset_ms == pytest.approx(0.5)


def test_speedup_arch_from_a_train_checkpoint_is_its_architecture_in_the_space(tmp_path):
    from hil.commands.speedup import resolve_arch
    from hil.errors import ConfigError
    from hil.lut_builder.spaces.proxyless import PROXYLESS_MOBILE
    from hil.nets.models import mobilenet_v1, proxyless_net
    from hil.optimizers.train import model_meta, save_checkpoint

    ops = [*PROXYLESS_MOBILE[:-1], "3x3_MBConv6"]
    spec = proxyless_net(",".join(ops), 0.25)  # a small trained network: 32x32 input, 10 classes
    ck = tmp_path / "net.safetensors"
    save_checkpoint(ck, spec.build(), model_meta(spec))
    space = make_space("proxyless-mobile", resolution=224)
    net, how = resolve_arch(space, str(ck), "--candidate")
    assert net == space.network(ops) and how == f"checkpoint {ck}"  # the ops, at the space's resolution
    v1 = mobilenet_v1(0.25)
    save_checkpoint(tmp_path / "v1.safetensors", v1.build(), model_meta(v1))
    with pytest.raises(ConfigError, match=r"--base: checkpoint .*v1\.safetensors holds a 'mobilenet-v1' model"):
        resolve_arch(space, str(tmp_path / "v1.safetensors"), "--base")


def test_against_scores_one_lut_entry_by_entry_against_another_of_the_same_accelerator(tmp_path):
    # two LUTs in one store: "board" and "sim", the simulation 20 % fast on every block
    db = tmp_path / "hil.db"
    space = make_space("proxyless-mobile", resolution=32)
    with SqliteStore(db) as store:
        for dev in (FakeDevice("board"), FakeDevice("sim", speed=0.8)):
            assert build_on_target(store, dev, space, SETTINGS, seed=0, calibration_nets=0).status == "ok"
        keys = [w.key for w in space.workloads()]
        c = compare_luts(store, "board", "sim", keys)
    assert c.metrics.n == len(set(keys)) and not c.only_device and not c.only_against
    assert c.metrics.mean_bias == pytest.approx(-20) and c.metrics.kendall_tau == pytest.approx(1.0)
    assert c.metrics.within_10pct == 0
    for p in c.points:
        assert p["predicted_ms"] == pytest.approx(0.8 * p["measured_ms"])

    # the CLI: reads the store only (these devices could not even be opened: the names are the test's)
    inv = tmp_path / "inventory.yaml"
    inv.write_text("devices:\n"
                   "  board: {backend: rtl-sim, rtl: {accelerator: bismo-edge}}\n"
                   "  sim: {backend: rtl-sim, rtl: {accelerator: bismo-edge}}\n"
                   "  other: {backend: rtl-sim, rtl: {accelerator: bitfusion-spatial}}\n"
                   "  cpu: {backend: torch-cpu}\n")
    args = ["validate", "--space", "proxyless-mobile", "--resolution", "32", "--db", str(db), "--inventory", str(inv)]
    p = hil(*args, "-d", "board", "--against", "sim", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["accelerator"] == "bismo-edge" and out["n"] == c.metrics.n
    assert out["mean_bias"] == pytest.approx(-20)
    assert_user_error(hil(*args, "-d", "board", "--against", "other"), "one accelerator", "bitfusion-spatial")
    assert_user_error(hil(*args, "-d", "cpu", "--against", "sim"), "'cpu'", "no 'rtl:' section")
    with SqliteStore(tmp_path / "empty.db"):
        pass
    assert_user_error(hil(*args[:-4], "--db", str(tmp_path / "empty.db"), "--inventory", str(inv),
                          "-d", "board", "--against", "sim"), "no LUT for device 'board'")
