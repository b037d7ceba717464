"""Whole networks measured in one session, and the network calibration fitted on them.

A *session* is one request to the device: its workloads are timed together (interleaved rounds,
docs/MEASUREMENT.md), so they share the host's speed of that moment. Every record of a session
carries the same `session` id in its metrics; a session is reused only whole, so measurements taken
in different sessions are never paired (a ratio or a fit across sessions would carry the host's
drift between them).

The calibration (`measured ≈ scale · Σ blocks + offset`, hil.latency.NetworkCalibration) is fitted
on held-out networks measured in one session and stored as a new version: by the LUT build
(`kind: build`) and by `hil lut anchor` (`kind: anchor`). Each version records when it was fitted,
the host's fingerprint state and the latency of a fixed drift-reference workload timed in the same
session, so versions can be compared with each other and with a validation session.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from hil.errors import HilError, StoreError
from hil.latency import CALIBRATION_MODEL, LatencyModel, NetworkCalibration
from hil.measure import Measurement, MeasureSettings
from hil.store import ModelVersion, Store
from hil.target import Target, fingerprint_class
from hil.workload import Network, Workload

# Calibration networks come from a seed stream disjoint from any validation seed a user passes.
CALIBRATION_SEED_OFFSET = 1_000_003
# The reference network of a space without a named one is a sample from this seed stream.
REFERENCE_SEED_OFFSET = 2_000_003
DRIFT_PREFIX = "drift:"


@runtime_checkable
class SampledSpace(Protocol):
    """A search space that can draw whole networks (for calibration and validation)."""

    name: str

    def options(self) -> dict[str, Any]: ...

    def workloads(self) -> list[Workload]: ...

    def sample(self, n: int, seed: int) -> list[Network]: ...


@runtime_checkable
class ReferencedSpace(Protocol):
    """A space that names a fixed reference network (speedups are measured over it)."""

    def reference_network(self) -> Network: ...


@runtime_checkable
class ArchSpace(Protocol):
    """A space whose networks are named by an op list (`hil speedup --base/--candidate`)."""

    def network(self, arch: Sequence[str]) -> Network: ...


def reference_network(space: SampledSpace) -> tuple[Network, str]:
    """The space's fixed reference network and how it was chosen."""
    if isinstance(space, ReferencedSpace):
        return space.reference_network(), "named by the space"
    return space.sample(1, REFERENCE_SEED_OFFSET)[0], f"sampled with seed {REFERENCE_SEED_OFFSET}"


def drift_reference(space: SampledSpace) -> Workload:
    """A fixed, mid-sized workload of the space, timed in every calibration and validation session
    so their host speeds can be compared (the same choice as the build's drift reference)."""
    workloads = space.workloads()
    return sorted(workloads, key=lambda w: w.key)[len(workloads) // 2]


@dataclass
class Session:
    """What one session measured: latency by key (drift references under `drift:<key>`)."""

    id: str
    latency_ms: dict[str, float]
    state: dict[str, Any] = field(default_factory=dict)  # the host's fingerprint state at the time
    created_at: float = 0.0
    reused: bool = False


def _stored_sessions(store: Store, cls: str, tag: str, index: int) -> dict[str, Session]:
    field_ = f"{tag}_pass"
    out: dict[str, Session] = {}
    for m in store.attempts(cls):
        sid = m.metrics.get("session")
        if not m.ok or not isinstance(sid, str) or m.metrics.get(field_) != index:
            continue
        s = out.setdefault(sid, Session(sid, {}, m.fingerprint.get("state", {}), m.created_at, True))
        s.latency_ms[m.key] = m.latency_ms
        s.created_at = max(s.created_at, m.created_at)
    return out


def measure_session(
    store: Store,
    target: Target,
    workloads: Sequence[Workload],
    settings: MeasureSettings,
    tag: str,
    index: int = 0,
    drift: Workload | None = None,
    seed: int = 0,
    reuse_after: float | None = None,
    progress: Callable[[Measurement], None] | None = None,
) -> Session:
    """Time `workloads` (and the drift reference) as one request; store each record with the
    session's id and `{tag}_pass: index`.

    With `reuse_after` set, a stored session of the same tag and index that holds every key and
    ended after that time is returned instead (an interrupted validation resumes); a session that
    holds only some of them is never completed with another session's records.
    """
    cls = fingerprint_class(target.describe(settings))
    wanted = {w.key for w in workloads} | ({DRIFT_PREFIX + drift.key} if drift is not None else set())
    if reuse_after is not None:
        done = [s for s in _stored_sessions(store, cls, tag, index).values()
                if wanted <= set(s.latency_ms) and s.created_at >= reuse_after]
        if done:
            return max(done, key=lambda s: s.created_at)
    todo = list({w.key: w for w in workloads}.values())
    random.Random(seed).shuffle(todo)
    if drift is not None and drift.key not in {w.key for w in todo}:
        todo.append(drift)
    session = Session(uuid.uuid4().hex[:16], {}, created_at=time.time())
    drift_key = drift.key if drift is not None else None
    records: list[Measurement] = []
    # one slice: the session's networks are compared with each other, so they share the host's rounds
    for m in target.measure(todo, replace(settings, slice_s=None)):
        if m.key == drift_key:
            # stored under drift: so it never becomes a LUT entry (it was timed in a network
            # session, not as a block of the build)
            m.key = DRIFT_PREFIX + m.key
        m.attempt = store.attempt_count(cls, m.key) + 1
        m.metrics["session"] = session.id
        m.metrics[f"{tag}_pass"] = index
        records.append(m)
        if not m.ok:
            store.add_all(records)  # failed attempts are records too
            raise HilError(f"device {target.name!r}: {m.key} failed: {m.error_kind}: {m.error}")
        session.latency_ms[m.key] = m.latency_ms
        session.state = m.fingerprint.get("state", {})
        session.created_at = m.created_at
        if progress:
            progress(m)
    # in one transaction: a kill leaves the session whole or absent, never a part that a rerun
    # would measure again next to it
    store.add_all(records)
    return session


def calibration_networks(space: SampledSpace, params: dict[str, Any]) -> list[Network]:
    """The held-out networks a stored calibration was fitted on (none if they cannot be redrawn)."""
    keys = params.get("networks") or []
    seed = params.get("seed")
    if not keys or not isinstance(seed, int):
        return []
    nets = space.sample(len(keys), seed)
    return nets if [n.key for n in nets] == list(keys) else []


def fit_session(model: LatencyModel, nets: Sequence[Network], session: Session) -> NetworkCalibration:
    """The calibration that makes the LUT's block sums match this session's networks."""
    weights = [w for w in (model.weight_sum(n.layers) for n in nets) if w is not None]
    return NetworkCalibration.fit([model.block_sum(n.layers) for n in nets],
                                  [session.latency_ms[n.key] for n in nets],
                                  weights if len(weights) == len(nets) else None)


def _save(store: Store, cls: str, cal: NetworkCalibration, nets: Sequence[Network], seed: int, kind: str,
          session: Session, drift: Workload) -> ModelVersion:
    params = {
        **cal.to_json(), "networks": [n.key for n in nets], "seed": seed, "kind": kind,
        "session": session.id, "state": session.state,
        "drift_reference": {"key": drift.key, "latency_ms": session.latency_ms.get(DRIFT_PREFIX + drift.key)},
    }
    version = store.save_model(cls, CALIBRATION_MODEL, params, session.created_at or time.time())
    return store.model_versions(cls, CALIBRATION_MODEL)[version - 1]


def calibrate(
    store: Store,
    target: Target,
    space: SampledSpace,
    settings: MeasureSettings,
    count: int,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
) -> NetworkCalibration:
    """Fit the calibration on `count` networks sampled for it, measured in one session, and keep it
    as a new version (`kind: build`). A rerun of a finished build reuses its session and adds no
    version."""
    cls = fingerprint_class(target.describe(settings))
    model = LatencyModel.from_store(store, target.name, cls)
    cal_seed = seed + CALIBRATION_SEED_OFFSET
    nets = space.sample(count, cal_seed)
    drift = drift_reference(space)
    session = measure_session(store, target, [n for n in nets], settings, "calibration", 0, drift, seed,
                              reuse_after=0.0, progress=progress)
    cal = fit_session(model, nets, session)
    versions = store.model_versions(cls, CALIBRATION_MODEL)
    if not versions or versions[-1].params.get("session") != session.id:
        _save(store, cls, cal, nets, cal_seed, "build", session, drift)
    return cal


def anchor(
    store: Store,
    target: Target,
    space: SampledSpace,
    settings: MeasureSettings,
    cls: str,
    seed: int = 0,
    progress: Callable[[Measurement], None] | None = None,
) -> tuple[ModelVersion, ModelVersion]:
    """Re-anchor the stored calibration now: measure its held-out networks in one new session and
    store the refit as a new version (`kind: anchor`). Returns (the previous newest, the new)."""
    versions = store.model_versions(cls, CALIBRATION_MODEL)
    if not versions:
        raise StoreError(f"device {target.name!r}: the LUT in {store.path} has no calibration to anchor; "
                         "build it with --calibration-nets N (N >= 2)")
    prev = versions[-1]
    nets = calibration_networks(space, prev.params)
    if len(nets) < 2:
        raise StoreError(f"device {target.name!r}: the stored calibration's networks cannot be redrawn from "
                         f"space {space.name!r} {space.options()}; rebuild with --calibration-nets N")
    model = LatencyModel.from_store(store, target.name, cls)
    drift = drift_reference(space)
    session = measure_session(store, target, nets, settings, "anchor", 0, drift, seed, progress=progress)
    cal = fit_session(model, nets, session)
    return prev, _save(store, cls, cal, nets, int(prev.params["seed"]), "anchor", session, drift)
