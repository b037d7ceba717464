"""Build orchestration: measure what a search space needs on a device, resumably.

For each device: describe the target (its fingerprint class names the LUT), ask the store which keys
are missing, measure them in randomized order, commit each record as it arrives, then re-measure the
noisy ones later in the build (again in random order) until they are clean or out of attempts. A
reference workload is re-timed at the start and end of every round to expose drift (thermal
throttling, frequency changes, a neighbour's load); those records are stored under a `drift:` key.

Several devices build concurrently, one worker thread per device.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hil.calibration import SampledSpace, calibrate
from hil.errors import ConfigError, DeviceError, HilError
from hil.lease import LeaseBusyError, hold
from hil.lut_builder.spaces import SearchSpace
from hil.measure import Measurement, MeasureSettings
from hil.store import Store
from hil.target import Target, fingerprint_class
from hil.workload import Workload

Progress = Callable[[str, Measurement], None]  # (device, record) after each commit


@dataclass
class DeviceBuild:
    """What happened on one device."""

    device: str
    status: str = "pending"  # ok | incomplete | failed | quarantined | busy | interrupted
    fingerprint_class: str = ""
    entries: int = 0  # keys with an accepted measurement now
    total: int = 0  # keys the space needs
    measured: int = 0  # attempts made in this run (successful)
    reused: int = 0  # keys already in the store before this run
    failed: int = 0  # failed attempts in this run
    noisy: int = 0  # accepted entries still above the CV threshold
    retries: int = 0  # device-level retries (reconnects)
    wall_s: float = 0.0
    median_cv: float | None = None
    drift: float | None = None  # reference latency last / first in this run
    calibration: dict[str, Any] | None = None  # per-network calibration fitted after the blocks
    substituted_by: str | None = None  # the device that stood in for an absent one
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Workloads timed in every slice of an interleaved build as its level: their geometric mean carries
# the per-slice error of one workload's median (~1%) down to ~0.5%, against a host speed that moves
# ~4% (sd) between slices; each costs ~0.7 s a slice, about a fifth more build time for three.
LEVELS = 3


def _reference(workloads: Sequence[Workload]) -> Workload:
    """A mid-sized workload of the space, re-timed to detect drift."""
    return sorted(workloads, key=lambda w: w.key)[len(workloads) // 2]


def build_on_target(
    store: Store,
    target: Target,
    space: SearchSpace,
    settings: MeasureSettings,
    progress: Progress | None = None,
    seed: int | None = None,
    result: DeviceBuild | None = None,
    calibration_nets: int = 0,
) -> DeviceBuild:
    """Measure every missing workload of `space` on `target`. Raises DeviceError if the device fails.

    With `calibration_nets` > 0 and a complete LUT, that many whole networks sampled from the space
    are measured too and the per-network calibration (hil.latency.NetworkCalibration) is fitted.
    """
    res = result or DeviceBuild(target.name)
    t0 = time.perf_counter()
    workloads = {w.key: w for w in space.workloads()}
    res.total = len(workloads)
    if getattr(target, "substitute_for", None) == res.device:
        res.substituted_by = target.name
    first_try = not res.fingerprint_class
    fp = target.describe(settings)
    cls = fingerprint_class(fp)
    res.fingerprint_class = cls
    todo = store.missing(cls, workloads, settings.max_attempts)
    if first_try:  # a retry after a device failure must not count this run's own work as reused
        res.reused = len(workloads) - len(todo)
    rng = random.Random(seed)
    ref = _reference(list(workloads.values()))
    levels = level_workloads(list(workloads.values())) if _interleaved(fp) else []
    # the blocks' requests only: the calibration's session of whole networks is not leveled
    leveled = replace(settings, level_keys=tuple(w.key for w in levels))
    ref_times: list[float] = []
    attempts_left = settings.max_attempts
    # Keys that fail again in this run are not retried forever: each key gets max_attempts tries.
    tried: dict[str, int] = {}
    try:
        while todo and attempts_left > 0:
            attempts_left -= 1
            rng.shuffle(todo)
            batch = [workloads[k] for k in todo if tried.get(k, 0) < settings.max_attempts]
            if not batch:
                break
            # the level workloads are timed in every slice whether or not they are still missing; the
            # record of one that is not missing is dropped (its medians are in every other record)
            wanted = {b.key for b in batch}
            batch += [w for w in levels if w.key not in wanted]
            ref_times += _time_reference(store, target, ref, settings, cls)
            for m in target.measure(batch, leveled):
                if fingerprint_class(m.fingerprint) != cls:
                    raise DeviceError(target.name, "fingerprint changed during the build (runtime or host changed)")
                if m.key not in wanted:
                    continue
                tried[m.key] = tried.get(m.key, 0) + 1
                m.attempt = store.attempt_count(cls, m.key) + 1
                store.add(m)
                if m.ok:
                    res.measured += 1
                else:
                    res.failed += 1
                    res.errors.append(f"{m.key}: {m.error_kind}: {m.error}")
                if progress:
                    progress(target.name, m)
            ref_times += _time_reference(store, target, ref, settings, cls)
            todo = [k for k in store.missing(cls, workloads, settings.max_attempts)
                    if tried.get(k, 0) < settings.max_attempts]
    finally:
        res.wall_s += time.perf_counter() - t0
        lut = store.lut(cls)
        have = [lut[k] for k in workloads if k in lut]
        res.entries = len(have)
        res.noisy = sum(1 for m in have if m.noisy)
        cvs = [m.stats.cv for m in have if m.stats]
        res.median_cv = statistics.median(cvs) if cvs else None
        if len(ref_times) >= 2 and ref_times[0] > 0:
            res.drift = ref_times[-1] / ref_times[0]
    res.status = "ok" if res.entries == res.total else "incomplete"
    if res.status == "ok" and calibration_nets > 1 and isinstance(space, SampledSpace):
        t_cal = time.perf_counter()
        cal = calibrate(store, target, space, settings, calibration_nets, seed or 0)
        res.calibration = cal.to_json()
        res.wall_s += time.perf_counter() - t_cal
    return res


def level_workloads(workloads: Sequence[Workload], n: int = LEVELS) -> list[Workload]:
    """The workloads a build times in every slice as its level (MeasureSettings.level_keys): n fixed
    workloads of the space, spread over its keys, so every build of the space levels with the same."""
    ordered = sorted(workloads, key=lambda w: w.key)
    if len(ordered) <= 2 * n:  # a space this small is a slice or two: nothing to level
        return []
    return [ordered[(i + 1) * len(ordered) // (n + 1)] for i in range(n)]


def _interleaved(fp: dict[str, Any]) -> bool:
    """Whether the target really times interleaved (what its fingerprint class records)."""
    return (fp.get("class", {}).get("protocol") or {}).get("schedule") == "interleaved"


def _time_reference(
    store: Store, target: Target, ref: Workload, settings: MeasureSettings, cls: str
) -> list[float]:
    quick = replace(settings, min_repeats=10, min_time_s=0.1, level_keys=())
    out = []
    for m in target.measure([ref], quick):
        m.key = f"drift:{m.key}"
        m.fingerprint = dict(m.fingerprint)
        # the quick protocol is a different class on purpose: drift records never enter the LUT
        store.add(m)
        if m.ok:
            out.append(m.latency_ms)
    return out


TargetFactory = Callable[[], Target]


def build_devices(
    store: Store,
    factories: dict[str, TargetFactory],
    space: SearchSpace,
    settings_for: Callable[[str], MeasureSettings],
    progress: Progress | None = None,
    retries: int = 2,
    backoff_s: float = 1.0,
    seed: int | None = None,
    calibration_nets: int = 0,
    lease_timeout_for: Callable[[str], float] | None = None,
) -> list[DeviceBuild]:
    """Build on several devices at once, one worker per device, each holding its device's lease.

    A device that fails (DeviceError: unreachable, agent died) is retried with exponential backoff;
    the rerun measures only what is still missing. After `retries` failures it is quarantined and
    the others go on. A device leased by someone else is waited for (`lease_timeout_for(name)`
    seconds, default 600) and then reported `busy`, not retried: it is healthy, just taken.
    """
    results = {name: DeviceBuild(name) for name in factories}

    def work(name: str) -> None:
        res = results[name]
        lease_timeout = lease_timeout_for(name) if lease_timeout_for else 600.0
        for attempt in range(retries + 1):
            target: Target | None = None
            try:
                target = factories[name]()
                with hold(target, lease_timeout, lease=store.lease(target.name)):
                    build_on_target(store, target, space, settings_for(name), progress, seed, res, calibration_nets)
                return
            except (LeaseBusyError, ConfigError) as e:  # neither is cured by trying again
                res.errors.append(str(e))
                res.status = "busy" if isinstance(e, LeaseBusyError) else "failed"
                return
            except HilError as e:
                res.errors.append(str(e))
                res.status = "failed"
                if attempt < retries:
                    res.retries += 1
                    time.sleep(backoff_s * 2**attempt)
            finally:
                if target is not None:
                    try:
                        target.close()
                    except Exception as e:  # closing a dead connection must not hide the real error
                        res.errors.append(f"close: {e}")
        res.status = "quarantined"

    if len(factories) == 1:
        work(next(iter(factories)))
        return list(results.values())
    threads = [threading.Thread(target=work, args=(n,), name=f"build-{n}", daemon=True) for n in factories]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins keep Ctrl-C responsive
    return list(results.values())
