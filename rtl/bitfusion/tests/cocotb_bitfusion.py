"""cocotb tests of the Bit Fusion RTL on small configurations, stepped per cycle from Python.

Run by tests/test_rtl_bitfusion_cocotb.py (cocotb's runner + Verilator). The DRAM model here follows
the native harness's conventions (rtl/harness/README.md): beat-aligned single-beat reads answered in
order after a latency, posted strobed writes, one beat per cycle shared by reads and writes.
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from hil.rtl.bitfusion import compiler as bc
from hil.rtl.bitfusion.config import BitFusionConfig
from hil.rtl.bitfusion.isa import (
    COUNTERS,
    CTRL_START,
    REG_BEAT,
    REG_CONFIG,
    REG_COUNTERS,
    REG_CTRL,
    REG_IBUF,
    REG_NM,
    REG_OBUF,
    REG_STATUS,
    REG_WBUF,
    program_register_writes,
)

SEED = int(os.environ.get("BF_SEED", "1234"))


# ------------------------------------------------------------------------------------------------
# arithmetic models


def bitbrick_model(x: int, sx: int, y: int, sy: int) -> int:
    xv = x - 4 if (sx and x & 2) else x
    yv = y - 4 if (sy and y & 2) else y
    return xv * yv


def fusion_model(act: int, wgt: int, a_sel: int, w_sel: int, a_signed: bool, w_signed: bool) -> int:
    a_lane, w_lane = 2 << a_sel, 2 << w_sel
    pf = (8 // a_lane) * (8 // w_lane)
    total = 0
    for p in range(pf):
        a = (act >> (p * a_lane)) & ((1 << a_lane) - 1)
        w = (wgt >> (p * w_lane)) & ((1 << w_lane) - 1)
        if a_signed and a >> (a_lane - 1):
            a -= 1 << a_lane
        if w_signed and w >> (w_lane - 1):
            w -= 1 << w_lane
        total += a * w
    return total


@cocotb.test()
async def bitbrick_exhaustive(dut):
    for x in range(4):
        for y in range(4):
            for sx in (0, 1):
                for sy in (0, 1):
                    dut.x.value, dut.sx.value, dut.y.value, dut.sy.value = x, sx, y, sy
                    await Timer(1, "ns")
                    got = dut.p.value.to_signed()
                    assert got == bitbrick_model(x, sx, y, sy), (x, sx, y, sy, got)


@cocotb.test()
async def fusion_unit_all_modes(dut):
    rng = random.Random(SEED)
    for a_sel in range(3):
        for w_sel in range(3):
            for a_signed in (False, True):
                for w_signed in (False, True):
                    for _ in range(60):
                        act, wgt = rng.getrandbits(32), rng.getrandbits(32)
                        dut.act.value, dut.wgt.value = act, wgt
                        dut.a_sel.value, dut.w_sel.value = a_sel, w_sel
                        dut.a_signed.value, dut.w_signed.value = int(a_signed), int(w_signed)
                        await Timer(1, "ns")
                        want = fusion_model(act, wgt, a_sel, w_sel, a_signed, w_signed)
                        assert dut.psum.value.to_signed() == want, (a_sel, w_sel, a_signed, w_signed, hex(act))


# ------------------------------------------------------------------------------------------------
# the accelerator top, register bus + DRAM model


class Bench:
    def __init__(self, dut, latency: int = 6, mem_bytes: int = 1 << 20) -> None:
        self.dut = dut
        self.latency = latency
        self.mem = bytearray(mem_bytes)
        self.cycle = 0
        self.beat = len(dut.mem_wr_strb.value)
        self.prefer_write = False  # the arbiter's state; reset per run so runs are comparable

    async def start(self) -> None:
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        d.reg_wr_en.value = 0
        d.reg_addr.value = 0
        d.reg_wdata.value = 0
        d.mem_rd_req_ready.value = 0
        d.mem_wr_ready.value = 0
        d.mem_rd_rsp_valid.value = 0
        d.mem_rd_rsp_data.value = 0
        d.mem_rd_rsp_id.value = 0
        for _ in range(4):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        cocotb.start_soon(self._dram())

    async def _dram(self) -> None:
        d, beat = self.dut, self.beat
        pending: deque[tuple[int, bytes]] = deque()
        rsp_on = False
        while True:
            await FallingEdge(d.clk)
            rd = int(d.mem_rd_req_valid.value)
            wr = int(d.mem_wr_valid.value)
            if rd and wr:
                rd, wr = (0, 1) if self.prefer_write else (1, 0)
                self.prefer_write = not self.prefer_write
            elif rd:
                self.prefer_write = True
            elif wr:
                self.prefer_write = False
            d.mem_rd_req_ready.value = rd
            d.mem_wr_ready.value = wr
            if rd:
                addr = int(d.mem_rd_req_addr.value)
                assert addr % beat == 0, f"unaligned read {addr}"
                pending.append((self.cycle + self.latency, bytes(self.mem[addr : addr + beat])))
            if wr:
                addr = int(d.mem_wr_addr.value)
                assert addr % beat == 0, f"unaligned write {addr}"
                data = int(d.mem_wr_data.value).to_bytes(beat, "little")
                strb = int(d.mem_wr_strb.value)
                for i in range(beat):
                    if strb >> i & 1:
                        self.mem[addr + i] = data[i]
            if pending and pending[0][0] <= self.cycle:
                _, data = pending.popleft()
                d.mem_rd_rsp_data.value = int.from_bytes(data, "little")
                d.mem_rd_rsp_valid.value = 1
                rsp_on = True
            elif rsp_on:
                d.mem_rd_rsp_valid.value = 0
                rsp_on = False
            self.cycle += 1

    async def write_reg(self, index: int, value: int) -> None:
        d = self.dut
        await FallingEdge(d.clk)
        d.reg_addr.value = index
        d.reg_wdata.value = value & 0xFFFFFFFF
        d.reg_wr_en.value = 1
        await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.reg_wr_en.value = 0

    async def read_reg(self, index: int) -> int:
        d = self.dut
        d.reg_addr.value = index
        await Timer(1, "ns")
        return int(d.reg_rdata.value)

    async def run_until_done(self, max_cycles: int) -> int:
        d = self.dut
        for n in range(1, max_cycles + 1):
            await RisingEdge(d.clk)
            await Timer(1, "ns")
            if int(d.done.value):
                return n
        raise AssertionError(f"done not raised within {max_cycles} cycles")

    async def config(self) -> BitFusionConfig:
        nm = await self.read_reg(REG_NM)
        return BitFusionConfig(
            name="cocotb",
            rows=nm & 0xFFFF,
            cols=nm >> 16,
            wbuf_bytes=await self.read_reg(REG_WBUF),
            ibuf_bytes=await self.read_reg(REG_IBUF),
            obuf_bytes=await self.read_reg(REG_OBUF),
            dram_bits=8 * await self.read_reg(REG_BEAT),
            dram_latency=self.latency,
            mem_bytes=len(self.mem),
        )

    async def run_plan(self, plan: bc.Plan, x: np.ndarray | None, w: np.ndarray | None) -> dict[str, int]:
        for reg, val in program_register_writes(plan.blocks):
            await self.write_reg(reg, val)
        await self.write_reg(REG_CONFIG, 1 if x is not None else 0)
        if x is not None:
            wi = bc.weight_image(plan, w)
            ai = bc.activation_image(plan, x)
            self.mem[plan.w_base : plan.w_base + wi.size] = wi.tobytes()
            self.mem[plan.i_base : plan.i_base + ai.size] = ai.tobytes()
        self.prefer_write = False
        await self.write_reg(REG_CTRL, CTRL_START)
        await self.run_until_done(2_000_000)
        status = await self.read_reg(REG_STATUS)
        assert status & 1 and not status & 4, f"status {status:#x}"
        out = {}
        for i, name in enumerate(COUNTERS):
            lo = await self.read_reg(REG_COUNTERS + 2 * i)
            hi = await self.read_reg(REG_COUNTERS + 2 * i + 1)
            out[name] = lo | hi << 32
        return out

    def output(self, plan: bc.Plan) -> np.ndarray:
        raw = np.frombuffer(bytes(self.mem[plan.o_base : plan.o_base + plan.o_bytes]), dtype=np.uint8)
        return bc.decode_output(plan, raw, signed=True)


def _rand_operands(rng: np.random.Generator, shape, bits: int, signed: bool) -> np.ndarray:
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    return rng.integers(lo, hi, size=shape, dtype=np.int64)


async def _check_conv(bench: Bench, cfg, rng, prec: bc.Precision, prob: bc.ConvProblem, label: str) -> dict:
    plan = bc.plan_conv(cfg, prec, prob)
    x = _rand_operands(rng, (prob.batch, prob.h_in, prob.w_in, prob.c_in), prec.abits, prec.asigned)
    wshape = (
        (prob.c_out, prob.kernel, prob.kernel) if prob.depthwise else (prob.c_out, prob.c_in, prob.kernel, prob.kernel)
    )
    w = _rand_operands(rng, wshape, prec.wbits, prec.wsigned)
    cnt = await bench.run_plan(plan, x, w)
    got = bench.output(plan)
    want = bc.conv_reference(x, w, prob.stride, prob.h_out, prob.w_out, prob.depthwise)
    assert np.array_equal(got, want), f"{label}: RTL result differs from numpy ({plan.tiling})"
    if prob.depthwise:
        formula = bc.depthwise_compute_cycles(
            prob.batch, prob.h_out, prob.w_out, prob.kernel, prob.c_out, cfg.rows, cfg.cols, prec.pf
        )
    else:
        formula = bc.conv_compute_cycles(
            prob.batch, prob.h_out, prob.w_out, prob.kernel, prob.c_in, prob.c_out, cfg.rows, cfg.cols, prec.pf
        )
    assert cnt["compute"] == formula == plan.compute_cycles, (label, cnt["compute"], formula)
    assert cnt["total"] == cnt["compute"] + cnt["stall_in"] + cnt["stall_out"] + cnt["tail"], cnt
    cocotb.log.info(f"{label}: ok, {cnt['total']} cycles ({cnt['compute']} compute), tiling {plan.tiling}")
    return cnt


BIT_PAIRS = [(a, w) for a in (1, 2, 3, 4, 6, 8) for w in (1, 2, 4, 5, 8)]


@cocotb.test()
async def gemm_every_bit_pair(dut):
    """Random GEMMs (FC layers) at every lane pair, signed and unsigned, equal numpy exactly."""
    bench = Bench(dut)
    await bench.start()
    cfg = await bench.config()
    rng = np.random.default_rng(SEED)
    pairs = [(2, 2), (2, 4), (2, 8), (4, 2), (4, 4), (4, 8), (8, 2), (8, 4), (8, 8), (1, 3), (3, 5), (7, 1)]
    for i, (a, w) in enumerate(pairs):
        asg, wsg = bool(i % 2), bool((i // 2) % 2)
        prec = bc.Precision(a, w, asigned=asg, wsigned=wsg)
        m, k, n = int(rng.integers(3, 11)), int(rng.integers(5, 40)), int(rng.integers(2, 23))
        prob = bc.ConvProblem(n, 1, 1, k, 1, 1, 1, 1, m)
        await _check_conv(
            bench, cfg, rng, prec, prob, f"gemm {m}x{k}x{n} a{a}{'s' if asg else 'u'} w{w}{'s' if wsg else 'u'}"
        )


@cocotb.test()
async def conv_and_depthwise(dut):
    """Direct convolutions (stride 1 and 2, tails in every pixel dimension) and depthwise layers."""
    bench = Bench(dut)
    await bench.start()
    cfg = await bench.config()
    rng = np.random.default_rng(SEED + 1)
    cases = [
        (bc.Precision(8, 8, True, True), bc.ConvProblem(2, 7, 6, 5, 5, 4, 3, 1, 6)),
        (bc.Precision(4, 2, False, True), bc.ConvProblem(1, 9, 9, 12, 4, 4, 3, 2, 5)),
        (bc.Precision(2, 4, True, False), bc.ConvProblem(2, 5, 5, 3, 5, 5, 1, 1, 9)),
        (bc.Precision(8, 4, False, True), bc.ConvProblem(2, 6, 6, 10, 4, 4, 3, 1, 10, depthwise=True)),
        (bc.Precision(2, 2, True, True), bc.ConvProblem(1, 9, 9, 6, 4, 4, 3, 2, 6, depthwise=True)),
        (bc.Precision(4, 8, False, True), bc.ConvProblem(1, 8, 8, 3, 4, 4, 5, 1, 4)),
    ]
    for prec, prob in cases:
        await _check_conv(bench, cfg, rng, prec, prob, f"{prob} a{prec.abits} w{prec.wbits}")


@cocotb.test()
async def datapath_isolation_keeps_cycles(dut):
    """DP_EN=0 (timing runs) gives exactly the counters of the same program with the datapath on."""
    bench = Bench(dut)
    await bench.start()
    cfg = await bench.config()
    rng = np.random.default_rng(SEED + 2)
    prec = bc.Precision(4, 4, False, True)
    prob = bc.ConvProblem(2, 6, 6, 9, 4, 4, 3, 1, 7)
    on = await _check_conv(bench, cfg, rng, prec, prob, "dp_en=1")
    plan = bc.plan_conv(cfg, prec, prob)
    off = await bench.run_plan(plan, None, None)
    assert on == off, (on, off)
