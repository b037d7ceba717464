"""The Backend seam: the code that runs where the hardware is and times one workload.

A backend is hosted in-process by the local target or inside the remote agent on an SSH host. It
builds the workload in its runtime once (outside the timing), then times it with the protocol of
MEASUREMENT.md. Failures are raised as `MeasureFailure` with an explicit kind, and become records.

Agent-side code: standard library + the runtime itself; no pydantic, no hil CLI.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hil.measure import (
    MIN_SLICE,
    ErrorKind,
    Measurement,
    MeasureSettings,
    Stats,
    expected_timing_s,
    time_host,
    time_interleaved,
)
from hil.workload import Workload


class MeasureFailure(Exception):
    """One workload could not be timed, for the reason `kind` says."""

    def __init__(self, kind: ErrorKind | str, message: str) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)


@dataclass
class Prepared:
    """A workload built in its runtime and ready to time: `run` is one invocation."""

    run: Callable[[], Any]
    metrics: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str  # "torch-cpu", "torch-cuda", "tflite", "pynq", ...

    def runtime_info(self, settings: MeasureSettings) -> dict[str, Any]:
        """Runtime name, versions and the settings it actually applied (threads, affinity, ...)."""
        ...

    def measure_one(self, workload: Workload, settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
        """Build, warm up and time one workload: its statistics and any extra metrics."""
        ...


@runtime_checkable
class PreparingBackend(Backend, Protocol):
    """A backend whose workloads can be built first and timed later, together: what the interleaved
    schedule needs. Its `measure_one` is `prepare` followed by `time_host`."""

    def prepare(self, workload: Workload, settings: MeasureSettings) -> Prepared:
        """Build one workload in the runtime (outside any timing) and run it once."""
        ...

    def timing_context(self) -> AbstractContextManager[Any]:
        """Entered around the timed runs (e.g. torch's inference mode)."""
        ...


@runtime_checkable
class HostBuiltModels(Protocol):
    """A backend that times models the host builds (converted .tflite files) instead of building
    them itself, so the target needs only the runtime. In-process the host hands it its builder
    (`use_model_source`); over SSH the host pushes the files and the agent passes their paths on
    (`use_artifacts`)."""

    def use_model_source(self, source: Any) -> None:
        """Read models from `source` (an object with `model_path(workload, precision, batch)`)."""
        ...

    def use_artifacts(self, workload: Workload, settings: MeasureSettings, paths: dict[str, str]) -> None:
        """The host pushed this workload's files (name -> path on this target)."""
        ...


def effective_schedule(backend: Backend, settings: MeasureSettings) -> str:
    """The schedule this backend really times with (recorded in the fingerprint class)."""
    return settings.schedule if isinstance(backend, PreparingBackend) else "sequential"


def measure_prepared(backend: PreparingBackend, workload: Workload,
                     settings: MeasureSettings) -> tuple[Stats, dict[str, Any]]:
    """`measure_one` of a preparing backend: build, then time on its own."""
    p = backend.prepare(workload, settings)
    with backend.timing_context():
        return time_host(p.run, settings), p.metrics


def run_backend(
    backend: Backend,
    device: str,
    fingerprint: dict[str, Any],
    workloads: Sequence[Workload],
    settings: MeasureSettings,
    provenance: str = "measured",
) -> Iterator[Measurement]:
    """Measure the workloads, turning failures into records instead of stopping.

    Sequential: one workload after the other, each record as soon as it is timed. Interleaved: the
    workloads are built, then timed together in rounds (hil.measure.time_interleaved), in slices of
    about `settings.slice_s` seconds (None: the whole request); a slice's records come when it ends,
    so an interruption loses at most the slice being timed.
    """
    def failed(w: Workload, kind: ErrorKind, error: str) -> Measurement:
        return Measurement.failure(device, w.key, w.to_json(), fingerprint, provenance, kind, error)

    def done(w: Workload, stats: Stats, metrics: dict[str, Any]) -> Measurement:
        return Measurement(device, w.key, w.to_json(), fingerprint, provenance, stats, metrics,
                           noisy=stats.cv > settings.cv_threshold, created_at=time.time())

    if effective_schedule(backend, settings) == "sequential":
        for w in workloads:
            try:
                stats, metrics = backend.measure_one(w, settings)
            except MeasureFailure as e:
                yield failed(w, e.kind, str(e))
                continue
            except Exception as e:  # a runtime's own exception: a failed run, not a crashed build
                yield failed(w, ErrorKind.RUN_ERROR, f"{type(e).__name__}: {e}")
                continue
            yield done(w, stats, metrics)
        return

    assert isinstance(backend, PreparingBackend)
    # The level workloads are built once and timed in every slice (MeasureSettings.level_keys); a
    # request of nothing else is timed as plain workloads.
    levels: list[tuple[Workload, Prepared]] = []
    if any(w.key not in settings.level_keys for w in workloads):
        for w in workloads:
            if w.key in settings.level_keys:
                try:
                    levels.append((w, backend.prepare(w, settings)))
                except MeasureFailure as e:
                    yield failed(w, e.kind, str(e))
                except Exception as e:
                    yield failed(w, ErrorKind.RUN_ERROR, f"{type(e).__name__}: {e}")
        workloads = [w for w in workloads if w.key not in settings.level_keys]
    batch: list[tuple[Workload, Prepared]] = []
    expected_s = 0.0
    first = True
    for n, w in enumerate(workloads):
        try:
            p = backend.prepare(w, settings)
            if settings.slice_s is not None:
                with backend.timing_context():
                    expected_s += _expected_timing_s(p, settings)
            batch.append((w, p))
        except MeasureFailure as e:
            yield failed(w, e.kind, str(e))
        except Exception as e:
            yield failed(w, ErrorKind.RUN_ERROR, f"{type(e).__name__}: {e}")
        left = len(workloads) - n - 1
        # a short tail joins this slice rather than being timed without neighbours
        full = (settings.slice_s is not None and expected_s >= settings.slice_s
                and len(batch) >= MIN_SLICE and left >= MIN_SLICE)
        if batch and (left == 0 or full):
            # the level workloads' own records come with the first slice only: one attempt each
            yield from _time_slice(backend, batch, settings, failed, done, levels, report_levels=first)
            batch, expected_s, first = [], 0.0, False


def _expected_timing_s(p: Prepared, settings: MeasureSettings) -> float:
    """How long `time_interleaved` will spend on this workload, from one more untimed-protocol run."""
    t0 = time.perf_counter()
    p.run()
    return expected_timing_s(time.perf_counter() - t0, settings)


def _time_slice(
    backend: PreparingBackend,
    ready: list[tuple[Workload, Prepared]],
    settings: MeasureSettings,
    failed: Callable[[Workload, ErrorKind, str], Measurement],
    done: Callable[[Workload, Stats, dict[str, Any]], Measurement],
    levels: Sequence[tuple[Workload, Prepared]] = (),
    report_levels: bool = False,
) -> Iterator[Measurement]:
    errors: dict[int, Exception] = {}
    timed = [*levels, *ready]
    with backend.timing_context():
        stats = time_interleaved([p.run for _, p in timed], settings, seed=len(ready),
                                 on_error=lambda i, e: errors.__setitem__(i, e))
    level_ms = {w.key: st.stats.median_ms for (w, _), st in zip(levels, stats, strict=False) if st is not None}
    slice_ = {"id": uuid.uuid4().hex[:16], "level_ms": level_ms} if level_ms else None
    for i, ((w, p), st) in enumerate(zip(timed, stats, strict=True)):
        if i < len(levels) and not report_levels:
            continue
        if st is None:
            e = errors[i]
            yield failed(w, ErrorKind.RUN_ERROR, f"{type(e).__name__}: {e}")
        else:
            yield done(w, st.stats, {**p.metrics, "schedule": "interleaved", "slice_size": len(timed),
                                     "host_normalized": st.normalized, "raw_stats": st.raw.to_json(),
                                     **({"slice": slice_} if slice_ else {})})
