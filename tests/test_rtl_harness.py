"""The shared native harness (rtl/harness) on real Verilated RTL: a small DMA copy engine.

Builds are cached by content hash (~/.cache/hil/rtl or $HIL_RTL_CACHE), so only the first run pays
for the Verilator build.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hil.rtl.sim_harness import DramConfig, SimError, SimHarness, SimTimeoutError, harness_spec
from hil.rtl.verilator_build import RtlBuildError, build_harness, runtime_key, runtime_library, verilator_command

HERE = Path(__file__).resolve().parents[1] / "rtl" / "harness" / "tests"
BEAT = 16  # DW = 128


@pytest.fixture(scope="module")
def memcopy_exe() -> Path:
    spec = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    return build_harness(spec)


def _copy(hw: SimHarness, src: int, dst: int, beats: int, limit: int = 1_000_000) -> int:
    hw.write_regs([(3, src), (4, dst), (5, beats), (1, 1)])
    return hw.run_until_done(limit)


def _assert_same_copy(a: Path, b: Path, dram: DramConfig, beats: int, seed: int) -> None:
    """Two harness binaries of the copy engine count the same cycles, move the same bytes and report
    the same DRAM statistics for one copy."""
    data = np.random.default_rng(seed).integers(0, 256, beats * BEAT, dtype=np.uint8)
    results = []
    for binary in (a, b):
        with SimHarness(binary, dram) as hw:
            hw.write_mem(0x100, data)
            results.append((_copy(hw, 0x100, 0x10000, beats), hw.read_mem(0x10000, data.size).tobytes(), hw.stats()))
    assert results[0] == results[1] and results[1][1] == data.tobytes()


def test_copy_moves_bytes_and_takes_latency_plus_one_beat_per_cycle(memcopy_exe: Path) -> None:
    with SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=64, latency=20, size=1 << 20)) as hw:
        assert hw.read_reg(0) == 0x4D435059 and hw.beat_bytes == BEAT
        data = np.random.default_rng(0).integers(0, 256, 256 * BEAT, dtype=np.uint8)
        hw.write_mem(0x100, data)
        cycles = _copy(hw, 0x100, 0x10000, 256)
        assert np.array_equal(hw.read_mem(0x10000, data.size), data)
        # reads issue one per cycle, the first answer comes `latency` later, its write one cycle on
        assert cycles == 256 + 20 + 1
        assert hw.read_reg(6) == cycles
        s = hw.stats()
        assert s["rd_beats"] == s["wr_beats"] == 256 and s["wr_bytes"] == data.size


def test_bandwidth_is_shared_by_reads_and_writes(memcopy_exe: Path) -> None:
    with SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=8, latency=5, size=1 << 20)) as hw:
        cycles = _copy(hw, 0, 0x8000, 128)
        # 128 beats read + 128 written at 16 bytes each, 8 bytes per cycle
        assert abs(cycles - 2 * 128 * BEAT / 8) <= 2
        assert hw.stats()["rd_bw_stall"] > 0
        hw.set_dram(bytes_per_cycle=32, latency=5)
        cycles = _copy(hw, 0, 0x8000, 128)
        assert abs(cycles - 128) <= 5 + 2


def test_outstanding_limit_throttles_reads(memcopy_exe: Path) -> None:
    with SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=64, latency=40, size=1 << 20, max_outstanding=4)) as hw:
        cycles = _copy(hw, 0, 0x8000, 64)
        # 4 reads per 40-cycle round trip
        assert cycles >= 64 // 4 * 40
        assert hw.stats()["rd_outstanding_stall"] > 0


def test_cycle_limit_raises_a_clear_error(memcopy_exe: Path) -> None:
    with (
        SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=16, latency=2, size=1 << 20)) as hw,
        pytest.raises(SimTimeoutError, match="did not raise done within 100 cycles"),
    ):
        _copy(hw, 0, 0x8000, 1000, limit=100)


def test_bad_accesses_are_reported_not_crashed(memcopy_exe: Path) -> None:
    with SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=16, latency=2, size=1 << 16)) as hw:
        with pytest.raises(SimError, match="outside the DRAM model"):
            hw.write_mem(1 << 16, np.zeros(4, np.uint8))
        with pytest.raises(SimError, match="outside the DRAM model"):
            hw.read_mem((1 << 16) - 2, 4)
        with pytest.raises(SimError, match="write at DRAM address 65536 is outside"):
            _copy(hw, 0, 1 << 16, 4)
        hw.reset()
        with pytest.raises(SimError, match="not aligned"):
            _copy(hw, 3, 0x100, 4)
        hw.reset()
        assert hw.read_reg(0) == 0x4D435059  # still serving after errors


def test_harness_death_is_a_clear_error(memcopy_exe: Path) -> None:
    hw = SimHarness(memcopy_exe, DramConfig(bytes_per_cycle=16, latency=2, size=1 << 16))
    hw._proc.kill()
    hw._proc.wait()
    with pytest.raises(SimError, match="harness memcopy"):
        hw.read_reg(0)
    hw.close()


def test_build_failure_shows_compiler_message_and_does_not_poison_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIL_RTL_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.sv"
    bad.write_text((HERE / "hil_memcopy.sv").read_text().replace("assign mem_wr_strb = '1;", "assign mem_wr_strb = ;"))
    spec = harness_spec("broken", "hil_memcopy", [bad], HERE / "memcopy_main.cpp", {"DW": 128})
    with pytest.raises(RtlBuildError, match=r"broken\.sv"):
        build_harness(spec)
    # nothing of the broken design; Verilator's runtime, compiled first, is every design's
    assert all(p.name.startswith("runtime-") for p in (tmp_path / "cache").iterdir())


def test_the_runtime_is_compiled_once_per_flag_set_and_linked_into_every_design(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memcopy_exe: Path
) -> None:
    monkeypatch.setenv("HIL_RTL_CACHE", str(tmp_path / "cache"))
    narrow = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    wide = replace(narrow, parameters={"DW": 256})
    other_flags = replace(narrow, cxx_flags=[*narrow.cxx_flags, "-CFLAGS", "-O1"])
    other_checkout = replace(narrow, headers=[tmp_path / "elsewhere" / Path(h).name for h in narrow.headers])
    env = verilator_command()[1]
    assert runtime_key(narrow, env) == runtime_key(wide, env) == runtime_key(other_checkout, env)
    assert runtime_key(narrow, env) != runtime_key(other_flags, env)

    exe = build_harness(narrow)
    assert exe != memcopy_exe
    _assert_same_copy(memcopy_exe, exe, DramConfig(bytes_per_cycle=8, latency=5, size=1 << 20), 64, seed=3)
    [runtime] = (tmp_path / "cache").glob("runtime-*/libverilated.a")
    assert runtime == runtime_library(narrow) == runtime_library(wide)
    # The next design links that archive rather than compiling the runtime: emptied, its link fails.
    subprocess.run(["ar", "rc", str(runtime.with_name("empty.a"))], check=True)
    runtime.with_name("empty.a").replace(runtime)
    with pytest.raises(RtlBuildError, match="undefined reference"):
        build_harness(wide)
    assert [p.parent for p in (tmp_path / "cache").glob("memcopy-*/harness")] == [exe.parent]


def test_simulation_slots_are_served_in_arrival_order() -> None:
    # The rtl-sim devices of one build share two slots per core; a worker that releases its slot and
    # asks again must queue behind one that was already waiting (no device starves the others).
    import threading
    import time

    from hil.devices.host.rtl_sim import Slots

    slots = Slots(1)
    order: list[str] = []
    stop = threading.Event()

    def greedy() -> None:
        for _ in range(300):  # bounded: a starved waiter fails the test instead of hanging it
            if stop.is_set():
                return
            with slots:
                order.append("greedy")
                time.sleep(0.001)

    def waiter() -> None:
        with slots:
            order.append("waiter")
        stop.set()

    t = threading.Thread(target=greedy)
    t.start()
    time.sleep(0.02)
    w = threading.Thread(target=waiter)
    w.start()
    # Once the waiter is in the queue, the greedy worker may finish the turn it holds, not take another:
    # judged from that moment, however late this thread wakes on a busy machine.
    while not slots._queue and "waiter" not in order and w.is_alive():
        time.sleep(0.0002)
    queued_at = len(order)
    w.join()
    stop.set()
    t.join()
    assert "waiter" in order and order.index("waiter") <= queued_at, (order.index("waiter"), queued_at)


def test_host_flags_and_pgo_change_the_binary_not_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            memcopy_exe: Path) -> None:
    """The cache key names the binary (host CPU flags, PGO); the model digest, which a harness's records
    carry as their fingerprint class's rtl_hash, names what is simulated. A binary built with other host
    flags is another build that simulates the same cycles; a change to the model changes both."""
    plain = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    assert "-march=native" in plain.cxx_flags or platform.machine() not in ("x86_64", "amd64")
    other = replace(plain, cxx_flags=[*plain.cxx_flags, "-CFLAGS", "-O1"])
    assert other.digest() != plain.digest() and other.model_digest() == plain.model_digest()
    monkeypatch.setenv("HIL_RTL_PGO", "1")
    trained = replace(plain, train=lambda exe: None, train_key="memcopy:1")
    assert trained.digest() != plain.digest() and trained.model_digest() == plain.model_digest()
    monkeypatch.delenv("HIL_RTL_PGO")
    assert replace(plain, parameters={"DW": 256}).model_digest() != plain.model_digest()
    assert replace(plain, extra_flags=["--x-initial", "unique"]).model_digest() != plain.model_digest()

    monkeypatch.setenv("HIL_RTL_CACHE", str(tmp_path / "cache"))
    exe = build_harness(other)
    assert exe.parent.name == f"memcopy-{other.digest()}" and exe != memcopy_exe
    _assert_same_copy(memcopy_exe, exe, DramConfig(bytes_per_cycle=8, latency=5, size=1 << 20), 96, seed=2)


def test_pgo_is_opt_in_and_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec with a training workload builds with PGO only under HIL_RTL_PGO=1; that build has its
    own cache key (flags + training key), and a plain build keeps the key it had without a workload."""
    plain = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    trained = replace(plain, train=lambda exe: None, train_key="memcopy:1")
    monkeypatch.delenv("HIL_RTL_PGO", raising=False)
    assert not trained.pgo() and trained.digest() == plain.digest()
    monkeypatch.setenv("HIL_RTL_PGO", "1")
    assert trained.pgo() and not plain.pgo()
    assert trained.digest() != plain.digest()
    assert replace(trained, train_key="memcopy:2").digest() != trained.digest()


def test_pgo_build_trains_rebuilds_and_simulates_the_same(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         memcopy_exe: Path) -> None:
    """The whole PGO path on the small copy engine: the instrumented binary runs the training
    workload, writes a profile, the objects are rebuilt with it, and the result counts the same
    cycles and moves the same bytes as the plain build."""
    monkeypatch.setenv("HIL_RTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HIL_RTL_PGO", "1")
    dram = DramConfig(bytes_per_cycle=8, latency=5, size=1 << 20)
    trained: list[Path] = []

    def train(exe: Path) -> None:
        trained.append(exe)
        with SimHarness(exe, dram) as hw:
            _copy(hw, 0, 0x8000, 64)

    plain = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    spec = replace(plain, train=train, train_key="memcopy-test:1")
    exe = build_harness(spec)
    assert len(trained) == 1 and exe != memcopy_exe
    _assert_same_copy(memcopy_exe, exe, dram, 128, seed=1)
    assert build_harness(spec) == exe and len(trained) == 1  # cached: no second training
