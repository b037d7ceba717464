"""The Bit Fusion RTL's register map and its block-structured ISA (encoding in sv/bf_pkg.sv).

A program is a list of blocks. Each block is one loop nest: SETUP (operand widths), LOOP (bounds of
up to 6 outer tile levels and 6 inner compute levels), buffer-address strides per level, and three
transfers (LD WBUF, LD IBUF, ST OBUF) with their DRAM pattern, DRAM strides per outer level and the
level at which they fire, closed by BLOCK_END. Instructions are 64 bits, pushed as two register
writes (INSTR_LO, then INSTR_HI).

A buffer address is sum(index * stride) over the block's levels (outer first, then inner). The
hardware's address generators add, when a level advances, that level's *increment*: its stride minus
what the levels inside it accumulated before wrapping to 0. `Loop` holds plain strides;
`encode_block` sends the increments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

NO = 6  # outer (tile) loop levels
NI = 6  # inner (compute) loop levels
MAX_BLOCKS = 256  # the RTL's block table (bf_pkg::MAXB): room for a whole network's layers

OP_SETUP, OP_LOOP, OP_BSTRIDE, OP_XFER, OP_END = 1, 2, 3, 4, 15

# buffers (BSTRIDE) and transfers (XFER)
BUF_IBUF, BUF_WBUF, BUF_OBUF = 0, 1, 2
XF_LD_W, XF_LD_I, XF_ST_O = 0, 1, 2
XF_BASE, XF_LEN, XF_N1, XF_S1, XF_N2, XF_S2, XF_N3, XF_S3, XF_LEVEL, XF_ENTRIES = range(10)
XF_DSTRIDE = 16

# registers (32-bit word index)
REG_ID, REG_CTRL, REG_CONFIG, REG_STATUS = 0, 1, 2, 3
REG_INSTR_LO, REG_INSTR_HI = 4, 5
REG_NM, REG_BEAT, REG_WBUF, REG_IBUF, REG_OBUF, REG_VERSION = 6, 7, 8, 9, 10, 11
REG_COUNTERS = 16
ID_VALUE = 0x42465553  # 'BFUS'
CTRL_START, CTRL_CLEAR, CTRL_ABORT = 1, 2, 4

COUNTERS = (
    "total",  # start to done
    "compute",  # array cycles issued (busy, non-stalled)
    "stall_in",  # array waited for a WBUF / IBUF load
    "stall_out",  # array waited for an OBUF half (store behind)
    "tail",  # after the last array cycle: pipeline drain + last store
    "load_busy",  # load engine issuing reads or reads in flight
    "load_wait",  # load engine waited for a free buffer half
    "store_busy",
    "rd_beats",
    "wr_beats",
    "rd_bytes",  # useful bytes read
    "wr_bytes",  # bytes written (strobed)
    "wbuf_rd_bits",
    "wbuf_wr_bits",
    "ibuf_rd_bits",
    "ibuf_wr_bits",
    "obuf_rd_bits",
    "obuf_wr_bits",
    "tiles",  # output tiles stored
    "sync_wait",  # load engine waited at a layer barrier (a block with sync) with a free half
)

ERRORS = {
    1: f"program error (no blocks, more than {MAX_BLOCKS} blocks, or instructions pushed while running)",
    2: "a loop bound of 0",
    3: "IBUF address or transfer outside the buffer half",
    4: "WBUF address or transfer outside the buffer half",
    5: "OBUF address outside the buffer half",
    6: "store transfer inconsistent with the OBUF tile",
    7: "unknown opcode",
}


@dataclass(frozen=True)
class Loop:
    bound: int
    reduction: bool = False
    ibuf: int = 0  # buffer address strides (IBUF / WBUF in operand words, OBUF in entries)
    wbuf: int = 0
    obuf: int = 0


@dataclass(frozen=True)
class Transfer:
    """n3 x n2 x n1 bursts of `length` bytes at base + sum(outer index * dstrides) + i3*s3 + i2*s2 + i1*s1.

    `level` L: fires when an outer level < L advances (LD: also at the start of a block; ST: also at
    its end). L = 0 fires once per block.
    """

    base: int
    length: int
    n1: int = 1
    s1: int = 0
    n2: int = 1
    s2: int = 0
    n3: int = 1
    s3: int = 0
    level: int = 0
    dstrides: tuple[int, ...] = ()
    entries: int = 0  # ST only: OBUF entries per tile

    @property
    def bursts(self) -> int:
        return self.n1 * self.n2 * self.n3

    @property
    def nbytes(self) -> int:
        return self.length * self.bursts


@dataclass(frozen=True)
class Block:
    a_sel: int  # 0: 2-bit, 1: 4-bit, 2: 8-bit activation lanes
    w_sel: int
    a_signed: bool
    w_signed: bool
    o_sel: int  # output width: 0..4 -> 2, 4, 8, 16, 32 bits
    o_signed: bool
    o_shift: int
    irows_log2: int  # log2 of the IBUF rows one activation word spans
    outer: tuple[Loop, ...]
    inner: tuple[Loop, ...]
    ld_w: Transfer
    ld_i: Transfer
    st: Transfer
    # layer barrier: the block's first IBUF load waits until every earlier block's outputs are in
    # DRAM (set on the first block of each network layer after the first)
    sync: bool = False
    note: str = field(default="", compare=False)

    def steps(self) -> int:
        n = 1
        for lp in self.outer:
            n *= lp.bound
        return n

    def cycles_per_step(self) -> int:
        n = 1
        for lp in self.inner:
            n *= lp.bound
        return n

    def compute_cycles(self) -> int:
        return self.steps() * self.cycles_per_step()


def _word(op: int, hi_fields: int, value: int) -> int:
    return (op << 60) | hi_fields | (value & 0xFFFFFFFF)


def address_increments(loops: Sequence[Loop], buf: str) -> list[int]:
    """Per level (outermost first): stride - sum over the levels inside of (bound - 1) * stride."""
    out, inside = [0] * len(loops), 0
    for i in range(len(loops) - 1, -1, -1):
        stride = getattr(loops[i], buf)
        out[i] = stride - inside
        inside += (loops[i].bound - 1) * stride
    return out


def encode_block(b: Block) -> list[int]:
    """The 64-bit instruction words of one block, BLOCK_END last."""
    if len(b.outer) > NO or len(b.inner) > NI:
        raise ValueError(f"a block has at most {NO} outer and {NI} inner loops")
    # the RTL walks all NO outer levels then all NI inner levels; absent levels have bound 1
    outer = tuple(b.outer) + (Loop(1),) * (NO - len(b.outer))
    inner = tuple(b.inner) + (Loop(1),) * (NI - len(b.inner))
    levels = outer + inner
    incr = {buf: address_increments(levels, buf) for buf in ("ibuf", "wbuf", "obuf")}
    words = [
        _word(
            OP_SETUP,
            0,
            (b.a_sel & 3)
            | (b.w_sel & 3) << 2
            | int(b.a_signed) << 4
            | int(b.w_signed) << 5
            | (b.o_sel & 7) << 6
            | int(b.o_signed) << 9
            | (b.o_shift & 31) << 10
            | (b.irows_log2 & 15) << 15
            | int(b.sync) << 19,
        )
    ]
    for pos, lp in enumerate(levels):
        inner, lvl = (0, pos) if pos < NO else (1, pos - NO)
        if not 1 <= lp.bound <= 0xFFFF:
            raise ValueError(f"loop bound {lp.bound} outside 1..65535")
        if lp.bound > 1 or lp.reduction:
            words.append(_word(OP_LOOP, inner << 59 | lvl << 56 | int(lp.reduction) << 55, lp.bound))
        for buf, code in (("ibuf", BUF_IBUF), ("wbuf", BUF_WBUF), ("obuf", BUF_OBUF)):
            if incr[buf][pos]:
                words.append(_word(OP_BSTRIDE, inner << 59 | lvl << 56 | code << 54, incr[buf][pos]))
    for xf, t in ((XF_LD_W, b.ld_w), (XF_LD_I, b.ld_i), (XF_ST_O, b.st)):
        fields = [
            (XF_BASE, t.base),
            (XF_LEN, t.length),
            (XF_N1, t.n1),
            (XF_S1, t.s1),
            (XF_N2, t.n2),
            (XF_S2, t.s2),
            (XF_N3, t.n3),
            (XF_S3, t.s3),
            (XF_LEVEL, t.level),
        ]
        if xf == XF_ST_O:
            fields.append((XF_ENTRIES, t.entries))
        fields += [(XF_DSTRIDE + lvl, s) for lvl, s in enumerate(t.dstrides) if s]
        for f, v in fields:
            if not -(1 << 31) <= v < (1 << 32):
                raise ValueError(f"transfer field {f} = {v} does not fit 32 bits")
            words.append(_word(OP_XFER, xf << 56 | f << 50, v))
    words.append(_word(OP_END, 0, 0))
    return words


def encode_program(blocks: Sequence[Block]) -> list[int]:
    if not 1 <= len(blocks) <= MAX_BLOCKS:
        raise ValueError(f"a program holds 1..{MAX_BLOCKS} blocks, not {len(blocks)}")
    return [w for b in blocks for w in encode_block(b)]


def program_register_writes(blocks: Sequence[Block]) -> list[tuple[int, int]]:
    """Register writes that clear the block table and push the program."""
    writes = [(REG_CTRL, CTRL_CLEAR)]
    for w in encode_program(blocks):
        writes.append((REG_INSTR_LO, w & 0xFFFFFFFF))
        writes.append((REG_INSTR_HI, w >> 32))
    return writes
