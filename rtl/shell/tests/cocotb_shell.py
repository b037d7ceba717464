"""cocotb tests of the AXI shell's register block (rtl/shell/sv/hil_axil_regs.sv) around BISMO,
driven by cocotbext-axi's AXI-Lite master: every register the table (rtl/regmap.py) names, at its
AXI byte offset, as PYNQ's MMIO would reach it."""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from hil.rtl.regmap import BISMO, SHELL


async def _setup(dut) -> AxiLiteMaster:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for sig in (dut.mem_rd_req_ready, dut.mem_rd_rsp_valid, dut.mem_wr_ready):
        sig.value = 0
    dut.mem_rd_rsp_data.value = 0
    dut.mem_rd_rsp_id.value = 0
    dut.rst.value = 1
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return master


async def _read(m: AxiLiteMaster, index: int) -> int:
    return await m.read_dword(4 * index)


@cocotb.test()
async def registers_over_axi_lite(dut) -> None:
    m = await _setup(dut)
    params = {"dm": int(dut.DM.value), "dn": int(dut.DN.value), "dk": int(dut.DK.value), "bm": int(dut.BM.value),
              "bn": int(dut.BN.value), "dram_bits": int(dut.DW.value)}
    for r in BISMO.registers:
        if r.access == "ro" and r.value is not None:
            want = r.value if isinstance(r.value, int) else params[r.value]
            assert await _read(m, r.index) == want, r.name
        elif r.access == "rw":
            await m.write_dword(r.offset, 0xC0DE0000 + r.index)
            assert await _read(m, r.index) == 0xC0DE0000 + r.index, r.name
    lo, hi = SHELL
    await m.write_dword(lo.offset, 0x1F000000)
    await m.write_dword(hi.offset, 0x2)
    assert await _read(m, lo.index) == 0x1F000000 and await _read(m, hi.index) == 0x2
    assert int(dut.dram_base.value) == 0x2_1F000000
    assert int(dut.u_core.reg_wr_en.value) == 0  # the shell's writes never reach the core


@cocotb.test()
async def start_and_done_with_concurrent_traffic(dut) -> None:
    """Empty instruction streams: start makes the core run and finish; reads and writes issued at once
    share the core's one register port without losing either."""
    m = await _setup(dut)
    for name in ("FETCH_COUNT", "EXEC_COUNT", "RESULT_COUNT"):
        await m.write_dword(BISMO.reg(name).offset, 0)
    ctrl = BISMO.reg("CTRL").offset
    w = cocotb.start_soon(m.write_dword(ctrl, 1))
    r = cocotb.start_soon(m.read_dword(BISMO.reg("ID").offset))
    await w
    assert await r == BISMO.ident
    for _ in range(50):
        if await _read(m, BISMO.status_reg) >> BISMO.done_bit & 1:
            break
    else:
        raise AssertionError("done never rose")
    total = BISMO.counter("total").index
    assert 0 < await _read(m, total) < 50 and await _read(m, total + 1) == 0


@cocotb.test()
async def gemm_through_axi(dut) -> None:
    """The whole board top (bismo_axi): operands and instructions in cocotbext-axi's AxiRam at a
    window that does not start at 0, registers over AxiLiteMaster, exactly as PynqBus drives a
    board; the product read back from the RAM equals numpy's."""
    import numpy as np
    from cocotbext.axi import AxiBus, AxiRam

    from hil.rtl.bismo.config import BismoConfig
    from hil.rtl.bismo.driver import GemmOperands, plan_run

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    base, size = 0x40000, 1 << 20
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=base + size)
    m = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    hw = {r.value: await _read(m, r.index) for r in BISMO.registers if isinstance(r.value, str)}
    cfg = BismoConfig(name="cocotb-axi", clock_mhz=100.0, dram_bytes_per_cycle=hw["dram_bits"] / 8,
                      dram_latency=8, dram_size=size, **hw)
    rng = np.random.default_rng(7)
    w, a = rng.integers(-2, 2, (5, 150)), rng.integers(0, 4, (150, 3))
    plan = plan_run(cfg, [GemmOperands(5, 150, 3, w, a.T)], 2, 2, True, False, with_data=True)
    for addr, img in plan.images:
        ram.write(base + addr, img.tobytes())
    lo, hi = SHELL
    await m.write_dword(lo.offset, base)
    await m.write_dword(hi.offset, 0)
    for reg, value in plan.register_writes():
        await m.write_dword(4 * reg, value)
    for _ in range(20_000):
        if await _read(m, BISMO.status_reg) >> BISMO.done_bit & 1:
            break
    else:
        raise AssertionError("done never rose")
    (out,) = plan.outputs(lambda addr, n: np.frombuffer(ram.read(base + addr, n), dtype=np.uint8))
    np.testing.assert_array_equal(out, w @ a)
    total = BISMO.counter("total").index
    assert await _read(m, total) > 0
