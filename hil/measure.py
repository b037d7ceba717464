"""The measurement protocol of MEASUREMENT.md: settings, statistics, records, and the host-clock timer.

This module is imported by the remote agent too (it is pushed to targets), so it depends only on
the standard library: no numpy, no hil imports beyond itself.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}

# "interleaved": the workloads of one request are timed together in rounds, one timed run of each
# per round in a shuffled order, so every workload samples the same mix of host states (a shared
# VM's speed can switch by 1.5x for seconds at a time; docs/MEASUREMENT.md). "sequential": each
# workload is timed to completion before the next one starts.
SCHEDULES = ("interleaved", "sequential")


class ErrorKind(str, Enum):
    """Why an attempt failed, as TVM's measurement reports it: a failed workload is a record, not a
    crash. `unsupported` is final (the device cannot run it); the others are retried on a rerun.
    A hung workload is not a kind of its own: a device that stops answering fails its whole request
    (SSH timeouts, the RTL harness's cycle limit) and the build retries or quarantines it."""

    BUILD_ERROR = "build_error"  # the workload could not be built for the device (conversion, compile)
    RUN_ERROR = "run_error"  # it was built but failed while running
    UNSUPPORTED = "unsupported"  # the device or its runtime cannot run this workload at all

    def __str__(self) -> str:  # messages and the store show the plain name
        return self.value


# Settings that decide what is re-measured (noise policy) and when results are kept (slices), not
# how one measurement is taken: kept out of the fingerprint class.
POLICY_FIELDS = ("cv_threshold", "max_attempts", "max_time_s", "slice_s")
# Which workloads level the slices (`MeasureSettings.level_keys`) is chosen by the build from the
# space; the records say whether they were leveled (`metrics.slice`), so it names no class of its own
# and validation, anchors and speedups find the build's LUT with their own settings.
NOT_IN_CLASS = (*POLICY_FIELDS, "level_keys")
# An interleaved request is timed in slices of about `MeasureSettings.slice_s` seconds and at least
# MIN_SLICE workloads (host normalization needs neighbours); each slice's records are sent as it
# ends, so a kill loses at most the slice being timed. Validation cuts its passes the same way.
MIN_SLICE = 8


@dataclass(frozen=True)
class MeasureSettings:
    """Parameters of the timing protocol. They are part of the fingerprint class of every record."""

    warmup_runs: int = 10
    warmup_s: float = 0.2
    min_repeats: int = 30
    min_time_s: float = 0.5
    max_time_s: float = 10.0
    # A timed run groups invocations until it lasts at least this long (TVM's min_repeat_ms).
    min_run_ms: float = 1.0
    cv_threshold: float = 0.05
    max_attempts: int = 3
    threads: int = 1
    batch: int = 1
    # Numeric precision the backend builds the workload in (the inventory's `precision:`); backends
    # that build only one (torch-cpu) ignore it and record the one they use.
    precision: str = "float32"
    # "wall": a monotonic host clock (the default). "thread": CPU time of the calling thread, which
    # with one runtime thread is the invocation's own work without the time the OS gave to other
    # processes: the clock for shared, noisy hosts (docs/MEASUREMENT.md). Recorded in the class.
    clock: str = "wall"
    # How the workloads of one request share the time: one of SCHEDULES. Backends that can only time
    # one workload at a time record "sequential" in the fingerprint whatever was asked.
    schedule: str = "interleaved"
    # The interleaved schedule times a request in *slices* of about this many seconds (and at least
    # 8 workloads), committing each slice's records as it ends: a kill loses at most one slice.
    # None times the request as one slice (a validation pass, whose networks must share the host's
    # conditions). Like the noise policy it says when results are kept, not how one is taken: not in
    # the class.
    slice_s: float | None = 10.0
    # Keys of workloads of a request that are timed in *every* slice of the interleaved schedule, as
    # the slice's level: slices ~10 s apart meet host speeds ~4% apart (sd, docs/MEASUREMENT.md), so
    # every record also carries its slice's level medians (`metrics.slice`) and a LUT entry is read
    # at the build's typical level (hil.latency.lut_latencies). Empty: no leveling.
    level_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_keys", tuple(self.level_keys))  # a list when read from JSON

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def shaping_json(self) -> dict[str, Any]:
        """The parameters that shape a measurement, for the fingerprint class: without the noise
        policy and the slice length, which decide what is re-measured and when results are kept, and
        without the level keys, which the records carry (NOT_IN_CLASS)."""
        return {k: v for k, v in self.to_json().items() if k not in NOT_IN_CLASS}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MeasureSettings:
        return cls(**d)


def expected_timing_s(once_s: float, settings: MeasureSettings) -> float:
    """How long the interleaved protocol spends on a workload whose one run takes `once_s`."""
    once = max(once_s, settings.min_run_ms / 1e3)
    return settings.warmup_s + min(settings.max_time_s, max(settings.min_time_s, settings.min_repeats * once))


@dataclass(frozen=True)
class Stats:
    """Summary of per-invocation times, in milliseconds."""

    n: int
    number: int  # invocations grouped into one timed run
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on a sorted list."""
    if not sorted_xs:
        raise ValueError("quantile of no samples")
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples_ms: list[float], number: int = 1) -> Stats:
    """Statistics of per-invocation latencies (each sample already divided by `number`)."""
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples to summarize")
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Stats(
        n=n,
        number=number,
        median_ms=_quantile(xs, 0.5),
        mean_ms=mean,
        std_ms=std,
        min_ms=xs[0],
        p10_ms=_quantile(xs, 0.1),
        p90_ms=_quantile(xs, 0.9),
        iqr_ms=_quantile(xs, 0.75) - _quantile(xs, 0.25),
        cv=std / mean if mean > 0 else 0.0,
    )


def _clock(settings: MeasureSettings, clock: Callable[[], int] | None) -> Callable[[], int]:
    if clock is not None:
        return clock
    try:
        return CLOCKS[settings.clock]
    except KeyError:
        raise ValueError(f"unknown clock {settings.clock!r} (known: {', '.join(CLOCKS)})") from None


def _warm_up(run: Callable[[], Any], settings: MeasureSettings, clock: Callable[[], int],
             wait: Callable[[], None]) -> int:
    """Warm up (at least warmup_runs and warmup_s) and return how many calls make one timed run."""
    t_start = clock()
    runs = 0
    while True:
        run()
        runs += 1
        wait()
        elapsed = (clock() - t_start) / 1e9
        if runs >= settings.warmup_runs and elapsed >= settings.warmup_s:
            break
        if elapsed > settings.max_time_s:
            break
    per_call_ms = max(elapsed * 1e3 / runs, 1e-6)
    return max(1, math.ceil(settings.min_run_ms / per_call_ms))


def _timed_run(run: Callable[[], Any], number: int, clock: Callable[[], int], wait: Callable[[], None]) -> int:
    wait()
    t0 = clock()
    for _ in range(number):
        run()
    wait()
    return clock() - t0


def _done(n: int, total_s: float, settings: MeasureSettings) -> bool:
    if n == 0:
        return False
    enough = n >= settings.min_repeats and total_s >= settings.min_time_s
    return enough or (total_s >= settings.max_time_s and n >= 3)


def time_host(
    run: Callable[[], Any],
    settings: MeasureSettings,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], int] | None = None,
) -> Stats:
    """Time `run` with a host clock following the protocol: warm up, group, repeat, summarize.

    `sync` is called before each clock read where the work is asynchronous (e.g. a GPU stream).
    """
    wait = sync or (lambda: None)
    clock = _clock(settings, clock)
    number = _warm_up(run, settings, clock, wait)
    samples: list[float] = []
    total_ns = 0
    while not _done(len(samples), total_ns / 1e9, settings):
        dt = _timed_run(run, number, clock, wait)
        samples.append(dt / 1e6 / number)
        total_ns += dt
    return summarize(samples, number)


# Host-speed normalization of an interleaved session: each sample is divided by the host's speed at
# that moment, estimated from the samples of other workloads timed just before and after it.
NEIGHBOURS = 8  # samples on each side
MIN_WORKLOADS_TO_NORMALIZE = 4


@dataclass(frozen=True)
class SessionStats:
    """One workload's result from an interleaved session."""

    stats: Stats  # of the host-normalized samples: the latency (== raw when not normalized)
    raw: Stats  # of the samples as timed
    normalized: bool


def time_interleaved(
    runs: Sequence[Callable[[], Any]],
    settings: MeasureSettings,
    seed: int = 0,
    clock: Callable[[], int] | None = None,
    on_error: Callable[[int, Exception], None] | None = None,
) -> list[SessionStats | None]:
    """Time several workloads together: each is warmed up and grouped as `time_host` does, then the
    timed runs go in rounds, one run of every unfinished workload per round in a shuffled order,
    until each has its repeats and time. A workload whose call raises is dropped from the rounds
    (`on_error(index, exception)`) and gets None.

    Slow changes of the host's speed then fall on all workloads alike instead of on whichever was
    being timed, so the workloads of one request rank consistently against each other. With at
    least MIN_WORKLOADS_TO_NORMALIZE workloads, the faster changes are taken out too: a sample's
    time relative to its workload's median, taken over the NEIGHBOURS samples of other workloads
    on each side of it, says how slow the host was just then, and the sample is divided by that
    (`host_normalize`).
    """
    clock = _clock(settings, clock)
    wait: Callable[[], None] = lambda: None  # noqa: E731
    rng = random.Random(seed)
    number: dict[int, int] = {}
    for i, run in enumerate(runs):
        try:
            number[i] = _warm_up(run, settings, clock, wait)
        except Exception as e:  # the runtime's own error, reported per workload
            if on_error is None:
                raise
            on_error(i, e)
    samples: dict[int, list[float]] = {i: [] for i in number}
    total_ns = dict.fromkeys(number, 0)
    timeline: list[tuple[int, float]] = []  # (workload, per-call ms) in the order timed
    while True:
        todo = [i for i in samples if not _done(len(samples[i]), total_ns[i] / 1e9, settings)]
        if not todo:
            break
        rng.shuffle(todo)
        for i in todo:
            try:
                dt = _timed_run(runs[i], number[i], clock, wait)
            except Exception as e:
                if on_error is None:
                    raise
                on_error(i, e)
                del samples[i]
                continue
            samples[i].append(dt / 1e6 / number[i])
            timeline.append((i, dt / 1e6 / number[i]))
            total_ns[i] += dt
    timeline = [(i, x) for i, x in timeline if i in samples]
    normalize = len(samples) >= MIN_WORKLOADS_TO_NORMALIZE
    scaled = host_normalize(timeline) if normalize else timeline
    by_workload: dict[int, list[float]] = {i: [] for i in samples}
    for i, x in scaled:
        by_workload[i].append(x)
    out: list[SessionStats | None] = []
    for i in range(len(runs)):
        if i not in samples:
            out.append(None)
            continue
        raw = summarize(samples[i], number[i])
        out.append(SessionStats(summarize(by_workload[i], number[i]), raw, normalize))
    return out


def host_normalize(timeline: Sequence[tuple[int, float]], k: int = NEIGHBOURS) -> list[tuple[int, float]]:
    """Divide each sample by the host's slowness at its moment: the median, over the k samples of
    other workloads on each side of it in time, of their time relative to their workload's median."""
    per: dict[int, list[float]] = {}
    for i, x in timeline:
        per.setdefault(i, []).append(x)
    med = {i: _quantile(sorted(xs), 0.5) for i, xs in per.items()}
    rel = [x / med[i] if med[i] > 0 else 1.0 for i, x in timeline]
    out = []
    for n, (i, x) in enumerate(timeline):
        lo, hi = max(0, n - k), min(len(timeline), n + k + 1)
        neighbours = sorted(rel[m] for m in range(lo, hi) if timeline[m][0] != i)
        f = _quantile(neighbours, 0.5) if neighbours else 1.0
        out.append((i, x / f if f > 0 else x))
    return out


@dataclass
class Measurement:
    """One attempt at timing one workload on one device: the raw record the store keeps forever.

    `ok` is False for a failed attempt; then `error_kind` says why and `stats` is None (make one with
    `Measurement.failure`).
    `metrics` holds what a target reports beyond time (cycles, energy_uj, dram_bytes, ...).
    """

    device: str
    key: str
    workload: dict[str, Any]
    fingerprint: dict[str, Any]
    provenance: str  # "measured" on hardware, "simulated" on RTL
    stats: Stats | None
    metrics: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    ok: bool = True
    noisy: bool = False  # CV above the protocol's threshold
    error_kind: ErrorKind | None = None
    error: str = ""
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.ok:
            if self.error_kind:
                raise ValueError(f"measurement of {self.key}: a successful record has no error kind")
            self.error_kind = None
            return
        try:
            self.error_kind = ErrorKind(self.error_kind)
        except ValueError:
            known = ", ".join(k.value for k in ErrorKind)
            raise ValueError(f"measurement of {self.key}: unknown error kind {self.error_kind!r} "
                             f"(known: {known})") from None

    @classmethod
    def failure(cls, device: str, key: str, workload: dict[str, Any], fingerprint: dict[str, Any],
                provenance: str, kind: ErrorKind | str, error: str) -> Measurement:
        """The record of an attempt that failed: no statistics, an explicit kind and a message."""
        return cls(device, key, workload, fingerprint, provenance, None, ok=False, error_kind=ErrorKind(kind),
                   error=error)

    @property
    def latency_ms(self) -> float:
        if self.stats is None:
            raise ValueError(f"failed measurement of {self.key} has no latency")
        return self.stats.median_ms

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_json() if self.stats else None
        d["error_kind"] = self.error_kind.value if self.error_kind else ""
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Measurement:
        d = dict(d)
        st = d.get("stats")
        d["stats"] = Stats(**st) if st else None
        return cls(**d)
