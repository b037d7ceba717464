import itertools

import numpy as np
import pytest

from hil.measure import Measurement, MeasureSettings, host_normalize, summarize, time_host, time_interleaved


def test_summary_matches_numpy():
    rng = np.random.default_rng(0)
    xs = list(rng.gamma(4.0, 0.5, size=101))
    s = summarize(xs)
    assert s.n == 101
    assert s.median_ms == pytest.approx(np.median(xs))
    assert s.mean_ms == pytest.approx(np.mean(xs))
    assert s.std_ms == pytest.approx(np.std(xs, ddof=1))
    assert s.p10_ms == pytest.approx(np.percentile(xs, 10))
    assert s.p90_ms == pytest.approx(np.percentile(xs, 90))
    assert s.iqr_ms == pytest.approx(np.percentile(xs, 75) - np.percentile(xs, 25))
    assert s.cv == pytest.approx(np.std(xs, ddof=1) / np.mean(xs))
    assert s.min_ms == min(xs)


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        summarize([])


class FakeClock:
    """A deterministic clock: each call of the timed function advances it by `step_ns`.

    The protocol's logic (warm-up, grouping, stopping rules) is what is under test here, not time.
    """

    def __init__(self, step_ns: int) -> None:
        self.t = 0
        self.step = step_ns
        self.calls = 0

    def now(self) -> int:
        return self.t

    def run(self) -> None:
        self.calls += 1
        self.t += self.step


def test_protocol_groups_fast_calls_and_reaches_minimums():
    c = FakeClock(step_ns=100_000)  # 0.1 ms per call: below min_run_ms, so calls are grouped
    s = MeasureSettings(warmup_runs=10, warmup_s=0.01, min_repeats=30, min_time_s=0.05, min_run_ms=1.0)
    st = time_host(c.run, s, clock=c.now)
    assert st.number == 10  # 1 ms / 0.1 ms
    assert st.n >= 30
    assert st.n * st.number * 0.1e-3 >= 0.05  # min total time reached
    assert st.median_ms == pytest.approx(0.1)
    assert st.cv == pytest.approx(0.0)


def test_protocol_stops_at_max_time_for_slow_work():
    c = FakeClock(step_ns=2_000_000_000)  # 2 s per call
    s = MeasureSettings(min_repeats=30, min_time_s=0.5, max_time_s=10.0)
    st = time_host(c.run, s, clock=c.now)
    assert st.number == 1
    assert 3 <= st.n < 30


def test_measurement_json_round_trip():
    st = summarize([1.0, 2.0, 3.0])
    m = Measurement("d", "k", {"kind": "x"}, {"class": {}, "state": {}}, "measured", st, {"cycles": 5})
    assert Measurement.from_json(m.to_json()) == m


def test_clock_is_chosen_by_settings_and_unknown_clock_is_refused():
    import time as _time


    def spin() -> None:  # burns CPU for ~0.2 ms: the thread clock must see it
        end = _time.perf_counter() + 0.0002
        while _time.perf_counter() < end:
            pass

    def sleep() -> None:  # sleeps ~0.2 ms: the wall clock sees it, the thread clock hardly
        _time.sleep(0.0002)

    fast = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=5, min_time_s=0.0, min_run_ms=0.0)
    from dataclasses import replace

    thread = replace(fast, clock="thread")
    assert time_host(spin, thread).median_ms > 0.1
    assert time_host(sleep, thread).median_ms < 0.5 * time_host(sleep, fast).median_ms
    with pytest.raises(ValueError, match="unknown clock"):
        time_host(spin, replace(fast, clock="sundial"))


class SwitchingHost:
    """A simulated host whose speed switches between two states every `period_ns` of its clock (as
    the shared VM's does), running workloads that each cost a fixed amount of work."""

    def __init__(self, period_ns: int, slow: float) -> None:
        self.t = 0
        self.period_ns = period_ns
        self.slow = slow
        self.order: list[int] = []

    def now(self) -> int:
        return self.t

    def workload(self, i: int, work_ns: int):
        def run() -> None:
            self.order.append(i)
            factor = self.slow if (self.t // self.period_ns) % 2 else 1.0
            self.t += int(work_ns * factor)
        return run


def test_interleaved_rounds_share_the_host_states_and_keep_the_true_ratios():
    s = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=40, min_time_s=0.0, min_run_ms=0.0)
    work = [1_000_000, 1_100_000, 1_200_000, 1_300_000]  # true ratios 1 : 1.1 : 1.2 : 1.3
    # the host is 1.6x slower in every other 50 ms: about as long as one whole sequential measurement
    seq_host = SwitchingHost(period_ns=50_000_000, slow=1.6)
    seq = [time_host(seq_host.workload(i, w), s, clock=seq_host.now).median_ms for i, w in enumerate(work)]
    host = SwitchingHost(period_ns=50_000_000, slow=1.6)
    stats = time_interleaved([host.workload(i, w) for i, w in enumerate(work)], s, clock=host.now)
    inter = [st.stats.median_ms for st in stats]
    # sequentially each workload meets one host state: the ranking breaks
    assert sorted(range(4), key=lambda i: seq[i]) != [0, 1, 2, 3]
    # interleaved, each sees both states alike: the ranking and (here) the ratios survive
    assert sorted(range(4), key=lambda i: inter[i]) == [0, 1, 2, 3]
    for i in range(1, 4):
        assert inter[i] / inter[0] == pytest.approx(work[i] / work[0], rel=0.1)
    # and the timed runs really alternate: after warm-up no workload runs many times in a row
    timed = host.order[2 * 4:]
    longest = max(len(list(g)) for _, g in itertools.groupby(timed))
    assert longest <= 2
    assert all(st.stats.n >= 40 and st.normalized for st in stats)


def test_interleaved_drops_a_failing_workload_and_times_the_rest():
    c = FakeClock(step_ns=1_000_000)
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("device lost")
        c.run()

    errors = {}
    s = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_repeats=10, min_time_s=0.0)
    stats = time_interleaved([c.run, flaky, c.run], s, clock=c.now, on_error=errors.__setitem__)
    assert stats[1] is None and isinstance(errors[1], RuntimeError)
    assert stats[0].stats.n >= 10 and stats[2].stats.n >= 10
    assert not stats[0].normalized and stats[0].stats == stats[0].raw  # too few workloads to normalize
    with pytest.raises(RuntimeError):
        calls["n"] = 0
        time_interleaved([flaky], s, clock=c.now)


def test_host_normalization_takes_out_the_hosts_speed_changes():
    # five workloads of true cost 1..5 ms in rounds; the host is 1.5x slow for one stretch of rounds
    # and 1.2x slow in another: the raw samples spread, the normalized ones are back to the truth
    timeline = []
    for r in range(60):
        slow = 1.5 if 20 <= r < 35 else 1.2 if 45 <= r < 50 else 1.0
        for i in ((r * 3 + j) % 5 for j in range(5)):
            timeline.append((i, (i + 1) * slow))
    out = host_normalize(timeline)
    assert [w for w, _ in out] == [w for w, _ in timeline]
    for i in range(5):
        raw = summarize([x for w, x in timeline if w == i])
        norm = summarize([x for w, x in out if w == i])
        # only samples right at a change of speed (their neighbours straddle it) keep some error
        assert norm.median_ms == pytest.approx(i + 1)
        assert norm.p10_ms == pytest.approx(i + 1) and norm.p90_ms == pytest.approx(i + 1)
        assert raw.cv > 0.15 and norm.cv < raw.cv / 3


def test_interleaved_request_is_timed_in_slices_unless_asked_whole():
    # real torch-cpu work, tiny; slice_s=0 asks for slices of the minimum size, None for one slice
    from dataclasses import replace

    from hil.devices.agent.backend import run_backend
    from hil.devices.agent.torch_cpu import TorchCpuBackend
    from hil.measure import MIN_SLICE
    from hil.workload import Linear

    work = [Linear(8, 8 + i) for i in range(2 * MIN_SLICE + 3)]
    fast = replace(MeasureSettings(), warmup_runs=1, warmup_s=0.0, min_repeats=3, min_time_s=0.0)

    def slice_sizes(slice_s: float | None) -> list[int]:
        recs = list(run_backend(TorchCpuBackend(cold_cache=False), "local-cpu", {},
                                work, replace(fast, slice_s=slice_s)))
        assert all(m.ok for m in recs) and [m.key for m in recs] == [w.key for w in work]
        return [m.metrics["slice_size"] for m in recs]

    # the tail of 3 joins the second slice rather than being timed without neighbours
    assert slice_sizes(0.0) == [MIN_SLICE] * MIN_SLICE + [MIN_SLICE + 3] * (MIN_SLICE + 3)
    assert slice_sizes(None) == [len(work)] * len(work)
