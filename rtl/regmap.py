"""The control registers of each accelerator, as one table.

The SystemVerilog top levels (`rtl/bismo/sv/bismo_top.sv`, `rtl/bitfusion/sv/bitfusion_top.sv`),
the drivers (through either bus: the Verilator harness or PYNQ's MMIO), and the documentation all
follow this table. What keeps them in step:

- `sv_include(name)` renders the table as SystemVerilog localparams; the committed
  `rtl/<acc>/sv/<top>_regs.svh` must equal it (tests/test_regmap.py), so SV code written against the
  table (the AXI-Lite shell of docs/PYNQ.md) cannot drift from it;
- the counter block of each top level is already a `localparam int CNT_<NAME> = <i>;` block: the
  test reads those lines and checks every counter sits where the table says;
- the drivers' register constants and counter names are compared with the table, and the read-only
  registers are read back from the Verilated RTL (their values) and the read-write ones written and
  read back;
- `markdown(name)` renders docs/REGMAP.md, also checked to be current.

Indices are 32-bit word indices, as the harness's register port takes them; on AXI-Lite (and so in
PYNQ's `MMIO.read/write`) the byte offset is 4 x index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Access = Literal["ro", "wo", "rw"]


@dataclass(frozen=True)
class Register:
    name: str  # upper case, as in the SV localparam (prefixed with the map's prefix there)
    index: int  # 32-bit word index; byte offset 4 * index
    access: Access
    doc: str
    width: int = 32  # bits the hardware decodes; the bus word is always 32 bits
    value: int | str | None = None  # ro: a constant, or the configuration field it reports

    @property
    def offset(self) -> int:
        """Byte offset on AXI-Lite / PYNQ MMIO."""
        return 4 * self.index


@dataclass(frozen=True)
class Counter:
    """A 64-bit counter: low word at `index`, high word at `index + 1` (read-only, cleared by start)."""

    name: str  # the driver's name (SimResult counters)
    sv: str  # the SV localparam suffix: CNT_<sv>
    index: int
    doc: str = ""
    cycles: bool = False  # counts clock cycles (the others count beats, bytes, bits, tiles)


@dataclass(frozen=True)
class RegisterMap:
    accelerator: str  # family: "bismo", "bitfusion"
    top: str  # SV module
    sv_file: str  # the top level, relative to rtl/
    prefix: str  # SV localparam prefix
    ident: int  # value of the ID register
    status_reg: int
    done_bit: int
    counters_base: int
    registers: tuple[Register, ...]
    counters: tuple[Counter, ...] = field(default_factory=tuple)
    total_counter: str = "total"  # the counter of cycles from start to done: the latency

    def reg(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"{self.accelerator}: no register {name!r}")

    def counter(self, name: str) -> Counter:
        for c in self.counters:
            if c.name == name:
                return c
        raise KeyError(f"{self.accelerator}: no counter {name!r}")

    def counter_words(self) -> list[int]:
        """Every counter word index in table order (low, high, low, high, ...)."""
        return [w for c in self.counters for w in (c.index, c.index + 1)]

    @property
    def include_path(self) -> str:
        """The generated SV include, relative to rtl/."""
        return self.sv_file.rsplit("/", 1)[0] + f"/{self.top}_regs.svh"


def _counters(base: int, rows: list[tuple[str, str, str, bool]]) -> tuple[Counter, ...]:
    return tuple(Counter(name, sv, base + 2 * i, doc, cyc) for i, (name, sv, doc, cyc) in enumerate(rows))


BISMO = RegisterMap(
    accelerator="bismo",
    top="bismo_top",
    sv_file="bismo/sv/bismo_top.sv",
    prefix="BISMO_REG_",
    ident=0x42534D4F,  # "BSMO"
    status_reg=2,
    done_bit=0,
    counters_base=32,
    registers=(
        Register("ID", 0, "ro", "identifies the overlay: 'BSMO'", value=0x42534D4F),
        Register("CTRL", 1, "wo", "bit0: start (clears the counters)", width=1),
        Register("STATUS", 2, "ro", "bit0 done, bit1 busy", width=2),
        Register("DM", 4, "ro", "rows of the dot-product array", value="dm"),
        Register("DN", 5, "ro", "columns of the dot-product array", value="dn"),
        Register("DK", 6, "ro", "bits per dot-product unit", value="dk"),
        Register("BM", 7, "ro", "LHS buffer words", value="bm"),
        Register("BN", 8, "ro", "RHS buffer words", value="bn"),
        Register("DW", 9, "ro", "DRAM beat bits", value="dram_bits"),
        Register("FETCH_BASE", 16, "rw", "fetch instruction stream: DRAM byte address"),
        Register("FETCH_COUNT", 17, "rw", "fetch instruction stream: instructions"),
        Register("EXEC_BASE", 18, "rw", "execute instruction stream: DRAM byte address"),
        Register("EXEC_COUNT", 19, "rw", "execute instruction stream: instructions"),
        Register("RESULT_BASE", 20, "rw", "result instruction stream: DRAM byte address"),
        Register("RESULT_COUNT", 21, "rw", "result instruction stream: instructions"),
    ),
    counters=_counters(32, [
        ("total", "TOTAL", "cycles from start to done", True),
        ("fetch_busy", "FETCH_BUSY", "fetch has requests to issue or data in flight", True),
        ("fetch_token_stall", "FETCH_TOK", "fetch instruction waiting for a free token", True),
        ("exec_busy", "EXEC_BUSY", "array busy: a word pair issued to the DPA", True),
        ("exec_token_stall", "EXEC_TOK", "exec instruction waiting for tokens", True),
        ("exec_starved", "EXEC_STARVED", "exec idle with instructions still to come", True),
        ("result_busy", "RES_BUSY", "result stage writing a tile", True),
        ("result_token_stall", "RES_TOK", "result instruction waiting for its tile", True),
        ("result_write_stall", "RES_WSTALL", "result beat offered but not accepted", True),
        ("dram_read_beats", "RD_BEATS", "DRAM read beats (operands + instructions)", False),
        ("dram_write_bytes", "WR_BYTES", "DRAM bytes written", False),
        ("instruction_read_beats", "INS_BEATS", "of the read beats: instruction beats", False),
        ("lhs_words_written", "LHS_WORDS", "LHS buffer words written", False),
        ("rhs_words_written", "RHS_WORDS", "RHS buffer words written", False),
        ("fetch_waiting_dram", "FETCH_WAIT", "fetch busy but no data beat arrived", True),
        ("result_tiles", "RES_TILES", "result tiles written", False),
    ]),
)

BITFUSION = RegisterMap(
    accelerator="bitfusion",
    top="bitfusion_top",
    sv_file="bitfusion/sv/bitfusion_top.sv",
    prefix="BF_REG_",
    ident=0x42465553,  # "BFUS"
    status_reg=3,
    done_bit=0,
    counters_base=16,
    registers=(
        Register("ID", 0, "ro", "identifies the accelerator: 'BFUS'", value=0x42465553),
        Register("CTRL", 1, "wo", "bit0 start, bit1 clear program, bit2 abort", width=3),
        Register("CONFIG", 2, "rw", "bit0 DP_EN: datapath enable (reset 1)", width=1),
        Register("STATUS", 3, "ro", "bit0 done, bit1 busy, bit2 error, [15:8] error code, [24:16] blocks loaded",
                 width=25),
        Register("INSTR_LO", 4, "wo", "low word of the next 64-bit instruction"),
        Register("INSTR_HI", 5, "wo", "high word; writing it pushes the instruction {HI, LO}"),
        Register("DIMS", 6, "ro", "{M (columns), N (rows)}, 16 bits each", value="dims"),
        Register("BEAT_BYTES", 7, "ro", "DRAM beat bytes", value="beat_bytes"),
        Register("WBUF_BYTES", 8, "ro", "weight buffer bytes (both halves)", value="wbuf_bytes"),
        Register("IBUF_BYTES", 9, "ro", "input buffer bytes (both halves)", value="ibuf_bytes"),
        Register("OBUF_BYTES", 10, "ro", "output buffer bytes (both halves)", value="obuf_bytes"),
        Register("VERSION", 11, "ro", "register map version", value=1),
    ),
    counters=_counters(16, [
        ("total", "TOTAL", "start to done", True),
        ("compute", "COMPUTE", "array cycles issued (busy, non-stalled)", True),
        ("stall_in", "STALL_IN", "array waits for a WBUF / IBUF load", True),
        ("stall_out", "STALL_OUT", "array waits for an OBUF half", True),
        ("tail", "TAIL", "after the last array cycle: drain + last store", True),
        ("load_busy", "LOAD_BUSY", "load engine issuing reads or reads in flight", True),
        ("load_wait", "LOAD_WAIT", "load engine waits for a free buffer half", True),
        ("store_busy", "STORE_BUSY", "store engine busy with a tile", True),
        ("rd_beats", "RD_BEATS", "DRAM read beats", False),
        ("wr_beats", "WR_BEATS", "DRAM write beats", False),
        ("rd_bytes", "RD_BYTES", "useful bytes read", False),
        ("wr_bytes", "WR_BYTES", "bytes written (strobed)", False),
        ("wbuf_rd_bits", "WBUF_RD", "weight buffer bits read", False),
        ("wbuf_wr_bits", "WBUF_WR", "weight buffer bits written", False),
        ("ibuf_rd_bits", "IBUF_RD", "input buffer bits read", False),
        ("ibuf_wr_bits", "IBUF_WR", "input buffer bits written", False),
        ("obuf_rd_bits", "OBUF_RD", "output buffer bits read", False),
        ("obuf_wr_bits", "OBUF_WR", "output buffer bits written", False),
        ("tiles", "TILES", "output tiles stored", False),
        ("sync_wait", "SYNC_WAIT", "load engine waits at a layer barrier", True),
    ]),
)

MAPS: dict[str, RegisterMap] = {m.accelerator: m for m in (BISMO, BITFUSION)}

# The AXI shell of docs/PYNQ.md (not the cores): its own registers above every core's, so the same
# address window carries both. The core addresses DRAM from 0; the shell adds DRAM_BASE (the
# physical address of the `pynq.allocate` buffer) to every master address. On the Verilator bus the
# window starts at 0 and there is no shell.
SHELL_BASE = 0x3F0
SHELL = (
    Register("DRAM_BASE_LO", SHELL_BASE, "rw", "AXI shell: physical address of the DRAM window, low word"),
    Register("DRAM_BASE_HI", SHELL_BASE + 1, "rw", "AXI shell: physical address of the DRAM window, high word"),
)


def family(accelerator: str) -> RegisterMap:
    """The register map of a configuration name ("bismo-edge" -> BISMO)."""
    fam = "bitfusion" if accelerator.startswith("bitfusion") else accelerator.split("-")[0]
    try:
        return MAPS[fam]
    except KeyError:
        raise KeyError(f"no register map for accelerator {accelerator!r} (known: {', '.join(MAPS)})") from None


def sv_include(m: RegisterMap) -> str:
    """The SystemVerilog localparams of map `m` (the committed <top>_regs.svh)."""
    guard = f"{m.top.upper()}_REGS_SVH"
    lines = [
        f"// {m.top}: control registers (32-bit word indices; AXI-Lite byte offset = 4 x index).",
        "// GENERATED from rtl/regmap.py by `python -m hil.rtl.regmap`; do not edit.",
        "// tests/test_regmap.py checks this file is current.",
        f"`ifndef {guard}",
        f"`define {guard}",
        f"localparam int {m.prefix}ID_VALUE = 32'h{m.ident:08X};",
    ]
    for r in m.registers:
        lines.append(f"localparam int {m.prefix}{r.name} = {r.index};  // {r.access}, {r.width} bits: {r.doc}")
    lines.append(f"localparam int {m.prefix}COUNTERS = {m.counters_base};  // 64-bit counters: low word, high word")
    lines.append(f"localparam int {m.prefix}NCNT = {len(m.counters)};")
    for r in SHELL:
        lines.append(f"localparam int {m.prefix}SHELL_{r.name} = {r.index};  // {r.access}: {r.doc}")
    lines.append("`endif")
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """docs/REGMAP.md: every map as tables."""
    out = ["# Register maps", "",
           "GENERATED from `rtl/regmap.py` by `python -m hil.rtl.regmap`; do not edit. Index: 32-bit word",
           "index (the harness's register port); offset: the AXI-Lite byte offset (PYNQ `MMIO.read/write`).", ""]
    for m in MAPS.values():
        out += [f"## {m.accelerator} (`{m.top}`, rtl/{m.sv_file})", "",
                f"ID value 0x{m.ident:08X}; done: STATUS bit {m.done_bit}.", "",
                "| index | offset | name | access | bits | meaning |", "|---|---|---|---|---|---|"]
        out += [f"| {r.index} | 0x{r.offset:03X} | {r.name} | {r.access} | {r.width} | {r.doc} |" for r in m.registers]
        out += ["", "64-bit counters (ro, cleared by start, frozen at done), low word at the index, high at +1:", "",
                "| index | offset | counter | cycles | meaning |", "|---|---|---|---|---|"]
        out += [f"| {c.index} | 0x{4 * c.index:03X} | {c.name} | {'yes' if c.cycles else 'no'} | {c.doc} |"
                for c in m.counters]
        out.append("")
    out += ["## AXI shell (docs/PYNQ.md; on a board only)", "", "| index | offset | name | access | meaning |",
            "|---|---|---|---|---|"]
    out += [f"| {r.index} | 0x{r.offset:03X} | {r.name} | {r.access} | {r.doc} |" for r in SHELL]
    return "\n".join(out) + "\n"


def main() -> None:
    """Regenerate the SV includes and docs/REGMAP.md from the table."""
    from pathlib import Path

    rtl = Path(__file__).resolve().parent
    for m in MAPS.values():
        (rtl / m.include_path).write_text(sv_include(m))
    (rtl.parent / "docs" / "REGMAP.md").write_text(markdown())


if __name__ == "__main__":
    main()
