"""Tiling and scheduling GEMMs onto the BISMO overlay: the three instruction streams.

A job is one GEMM C (M x N) = W (M x K) * A (K x N) whose operands lie in DRAM bit-plane major
(rtl/bismo/pack.py): the LHS (weights) in stripes of DM rows, the RHS (A transposed) in tiles of DN
rows, each a block of wbits (abits) planes x Kw words x D rows of DK bits. One exec instruction
computes one DM x DN output tile over all bit pairs (or one K chunk of it).

Schedule (docs/RTL_BISMO.md): per job the driver picks which operand is the *outer*, streamed
once (double-buffered in halves of its buffer), and keeps the *inner* one resident in its buffer if
all of it fits there (fetched once), else re-fetches it for every outer block (double-buffered).
It picks the order with less DRAM traffic; with weights outer that is the weight-stationary
schedule with LHS reuse. If one stripe does not fit half a buffer, K is split into chunks and each
output tile accumulates over its chunks (the stock schedule, both operands re-fetched).

Synchronisation is by counting tokens. A fetch that overwrites buffer words still needed waits for
as many "free" tokens as it takes for the last user of those words to have signalled (extra
zero-length fetches carry extra waits); an exec instruction waits for the "filled" token of every
operand block it is the first to use; result slots alternate and are handed over likewise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.errors import ConfigError
from hil.rtl.bismo import isa
from hil.rtl.bismo.config import BismoConfig


@dataclass(frozen=True)
class GemmJob:
    mt: int  # LHS stripes (ceil(M / DM))
    nt: int  # RHS tiles (ceil(N / DN))
    kw: int  # DK-bit words per row and bit plane (ceil(K / DK))
    wbits: int
    abits: int
    wsigned: bool
    asigned: bool
    lhs_addr: int  # DRAM byte addresses
    rhs_addr: int
    res_addr: int
    res_stride: int  # bytes per C row (Npad * 4)


@dataclass
class Program:
    fetch: np.ndarray  # (n, 4) uint32 each
    execute: np.ndarray
    result: np.ndarray
    modes: list[str] = field(default_factory=list)
    planned_read_bytes: int = 0  # operand bytes the schedule fetches

    def info(self) -> dict[str, Any]:
        return {
            "modes": sorted(set(self.modes)),
            "instructions": {"fetch": len(self.fetch), "execute": len(self.execute), "result": len(self.result)},
            "planned_operand_read_bytes": self.planned_read_bytes,
        }


class _Grow:
    """An int64 array appended to in pieces (capacity doubles), read as one array."""

    def __init__(self) -> None:
        self._a = np.zeros(256, dtype=np.int64)
        self.n = 0

    def extend(self, x: np.ndarray) -> None:
        m = self.n + len(x)
        if m > len(self._a):
            a = np.zeros(max(m, 2 * len(self._a)), dtype=np.int64)
            a[: self.n] = self._a[: self.n]
            self._a = a
        self._a[self.n : m] = x
        self.n = m

    @property
    def array(self) -> np.ndarray:
        return self._a[: self.n]


class _Side:
    """Buffer bookkeeping for one operand side across the whole program."""

    def __init__(self, words: int) -> None:
        self.words = words
        self.ring = 0  # next half for streamed blocks
        # per buffer word: the free event of the block that occupies it (-1: none yet); a block that
        # overwrites words waits for the last of these events among them
        self.occupant_event = np.full(words + 1, -1, dtype=np.int64)  # + 1: a sentinel for reduceat
        self.consumed = 0  # free tokens the fetch stream has waited for so far
        self.freed = 0  # free events the exec stream has sent so far
        self.event_steps = _Grow()  # global exec step of every free event

    def needs(self, lo: np.ndarray, hi: np.ndarray, event: np.ndarray) -> np.ndarray:
        """Occupy words [lo, hi) with blocks freed at `event`, in order (the blocks of one job on this
        side, in creation order); the last free event among the words each block overwrites (-1: none).

        Most blocks of a job are the regular case of a streamed operand: the same words as this side's
        block two before, with the one between in the other half (disjoint). Such a block overwrites
        exactly that one, so its answer is that block's event and the words need no update until a
        block that is not regular comes (then the two before it are written) or the job ends. The
        others (the first blocks of a job, resident blocks, a K chunk of another size) are looked up
        in the words; a run of consecutive such blocks that do not overlap each other (the resident
        blocks) all at once.
        """
        n = len(lo)
        occ = self.occupant_event
        regular = np.zeros(n, dtype=bool)
        if n > 2:
            regular[2:] = (lo[2:] == lo[:-2]) & (hi[2:] == hi[:-2]) & ((hi[1:-1] <= lo[2:]) | (lo[1:-1] >= hi[2:]))
        need = np.full(n, -1, dtype=np.int64)
        need[2:][regular[2:]] = event[:-2][regular[2:]]

        def write(j: int) -> None:  # a regular block's words, before the next irregular one reads them
            if j >= 0 and regular[j]:
                occ[lo[j] : hi[j]] = event[j]

        others = np.flatnonzero(~regular)
        # runs of consecutive irregular blocks
        cuts = np.flatnonzero(np.diff(others) != 1) + 1
        for run in np.split(others, cuts):
            a, b = int(run[0]), int(run[-1]) + 1
            write(a - 2)
            write(a - 1)
            order = np.argsort(lo[a:b], kind="stable")
            rlo, rhi = lo[a:b][order], hi[a:b][order]
            if b - a > 1 and np.all(rhi[:-1] <= rlo[1:]):  # disjoint: each sees only what was before
                bounds = np.empty(2 * (b - a), dtype=np.int64)
                bounds[0::2], bounds[1::2] = rlo, rhi
                got = np.maximum.reduceat(occ, bounds)[0::2]
                need[a + order] = got
                words = rhi - rlo
                at = np.repeat(rlo - np.concatenate(([0], np.cumsum(words)[:-1])), words)
                occ[at + np.arange(int(words.sum()))] = np.repeat(event[a:b][order], words)
            else:
                for g in range(a, b):
                    need[g] = occ[lo[g] : hi[g]].max()
                    occ[lo[g] : hi[g]] = event[g]
        write(n - 2)
        write(n - 1)
        return need


class _Contents:
    """The operand blocks of one job, in creation order (= order of first use): one array per field."""

    def __init__(self, n: int) -> None:
        self.side = np.zeros(n, dtype=np.int64)
        self.dram = np.zeros(n, dtype=np.int64)  # relative to the job's operand base while a template
        self.bpb = np.zeros(n, dtype=np.int64)  # beats per block
        self.blocks = np.zeros(n, dtype=np.int64)
        self.stride = np.zeros(n, dtype=np.int64)
        self.buf = np.zeros(n, dtype=np.int64)  # buffer word address (resident blocks while a template)
        self.words = np.zeros(n, dtype=np.int64)
        self.streamed = np.full(n, -1, dtype=np.int64)  # streamed blocks: number among the job's of its side

    def put(self, pos: np.ndarray, side: int, dram: np.ndarray, bpb: np.ndarray | int, blocks: int,
            stride: int, words: np.ndarray | int, buf: np.ndarray | None) -> None:
        """Blocks at `pos`; `buf` None: streamed, through the side's two halves in turn."""
        self.side[pos] = side
        self.dram[pos] = dram
        self.bpb[pos] = bpb
        self.blocks[pos] = blocks
        self.stride[pos] = stride
        self.words[pos] = words
        if buf is None:
            self.streamed[pos] = np.arange(len(pos), dtype=np.int64)
        else:
            self.buf[pos] = buf


@dataclass
class _Template:
    """The blocks and steps of one job shape, without its addresses (DRAM bases, halves in use)."""

    mode: str
    c: _Contents
    sl: np.ndarray  # per exec step: its LHS / RHS block (position in c)
    sr: np.ndarray
    k: np.ndarray
    clear: np.ndarray
    write: np.ndarray
    res: np.ndarray  # row 0 of the step's output tile, relative to the job's result base
    nstreamed: tuple[int, int]  # streamed blocks per side


def _template(cfg: BismoConfig, job: GemmJob) -> _Template:
    lw, rw = job.wbits * job.kw, job.abits * job.kw
    lrow_bytes, rrow_bytes = cfg.dm * cfg.dk // 8, cfg.dn * cfg.dk // 8
    lstripe, rtile = lw * lrow_bytes, rw * rrow_bytes
    beat = cfg.beat_bytes
    # per side: (bytes per block index, bytes per word row, planes, words per block)
    geom = ((lstripe, lrow_bytes, job.wbits, lw), (rtile, rrow_bytes, job.abits, rw))

    def put(c: _Contents, pos: np.ndarray, side: int, block: np.ndarray, k0: np.ndarray | int,
            ck: np.ndarray | int, buf: np.ndarray | None) -> None:
        per_block, row, planes, _ = geom[side]
        c.put(pos, side, block * per_block + k0 * row, ck * row // beat, planes, job.kw * row, planes * ck, buf)

    mt, nt = job.mt, job.nt
    tile_res = np.arange(mt, dtype=np.int64)[:, None] * (cfg.dm * job.res_stride) \
        + np.arange(nt, dtype=np.int64)[None, :] * (cfg.dn * 4)  # [s, t]: row 0 of output tile (s, t)

    if lw <= cfg.bm // 2 and rw <= cfg.bn // 2:
        res_r = nt * rw <= cfg.bn
        res_l = mt * lw <= cfg.bm
        traffic_a = mt * lstripe + (nt if res_r else mt * nt) * rtile
        traffic_b = nt * rtile + (mt if res_l else mt * nt) * lstripe
        if traffic_a <= traffic_b:
            mode = "lhs-outer" + ("/rhs-resident" if res_r else "")
            outer, no, ni, resident = 0, mt, nt, res_r
        else:
            mode = "rhs-outer" + ("/lhs-resident" if res_l else "")
            outer, no, ni, resident = 1, nt, mt, res_l
        inner = 1 - outer
        b_o = np.arange(no, dtype=np.int64)
        b_i = np.arange(ni, dtype=np.int64)
        # creation order: per outer block, the outer block, then the inner blocks it is the first
        # to use (all of them when streamed, only in the first outer block when resident)
        if resident:
            pos_o = np.where(b_o == 0, 0, ni + b_o)
            pos_i = 1 + b_i
            c = _Contents(no + ni)
            put(c, pos_o, outer, b_o, 0, job.kw, None)
            put(c, pos_i, inner, b_i, 0, job.kw, b_i * geom[inner][3])
            steps_o = np.repeat(pos_o, ni)
            steps_i = np.tile(pos_i, no)
            streamed = (no, 0)
        else:
            pos_o = b_o * (1 + ni)
            pos_i = (pos_o[:, None] + 1 + b_i[None, :]).reshape(-1)
            c = _Contents(no * (1 + ni))
            put(c, pos_o, outer, b_o, 0, job.kw, None)
            put(c, pos_i, inner, np.tile(b_i, no), 0, job.kw, None)
            steps_o = np.repeat(pos_o, ni)
            steps_i = pos_i
            streamed = (no, no * ni)
        n = no * ni
        return _Template(
            mode, c, *((steps_o, steps_i) if outer == 0 else (steps_i, steps_o)),
            np.full(n, job.kw, dtype=np.int64), np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64),
            tile_res.reshape(-1) if outer == 0 else tile_res.T.reshape(-1),
            streamed if outer == 0 else streamed[::-1],
        )
    cw = min(cfg.bm // 2 // job.wbits, cfg.bn // 2 // job.abits)
    if cw < 1:
        raise ConfigError(
            f"{cfg.name}: one {job.wbits}/{job.abits}-bit word row needs more than half an operand "
            f"buffer (bm={cfg.bm}, bn={cfg.bn}); this GEMM cannot be tiled"
        )
    k0s = np.arange(0, job.kw, cw, dtype=np.int64)
    cks = np.minimum(cw, job.kw - k0s)
    nch = len(k0s)
    n = mt * nt * nch
    i = np.arange(n, dtype=np.int64)  # steps in (s, t, chunk) order, each an LHS and an RHS block
    s_of, t_of, ci = i // (nt * nch), (i // nch) % nt, i % nch
    c = _Contents(2 * n)
    put(c, 2 * i, 0, s_of, k0s[ci], cks[ci], None)
    put(c, 2 * i + 1, 1, t_of, k0s[ci], cks[ci], None)
    return _Template(
        "split-k", c, 2 * i, 2 * i + 1, cks[ci], (ci == 0).astype(np.int64), (ci == nch - 1).astype(np.int64),
        tile_res[s_of, t_of], (n, n),
    )


def _shape(job: GemmJob) -> tuple[int, ...]:
    """What a job's template depends on (everything but its addresses)."""
    return (job.mt, job.nt, job.kw, job.wbits, job.abits, job.wsigned, job.asigned, job.res_stride)


class _Builder:
    """The three streams of a program, built with numpy: one array operation per field for a run of
    jobs of one shape (the groups of a depthwise layer), instead of Python per block (the schedules of a
    cloud LUT have millions of blocks) or per job (an edge LUT has ~18,000 jobs)."""

    def __init__(self, cfg: BismoConfig) -> None:
        self.cfg = cfg
        self.sides = (_Side(cfg.bm), _Side(cfg.bn))
        self.ncontents = 0  # blocks of the jobs before the current ones
        self.f_parts: list[np.ndarray] = []  # (n, 8) fetch fields
        self.exec_parts: list[np.ndarray] = []
        self.res_parts: list[np.ndarray] = []  # (n, 2): dram addr, row stride
        self.modes: list[str] = []
        self.read_bytes = 0
        self.nsteps = 0  # exec steps emitted before the current jobs

    def add(self, jobs: list[GemmJob]) -> None:
        """Jobs of one `_shape`, in order: the template, repeated at each job's addresses."""
        cfg, job = self.cfg, jobs[0]
        tp = _template(cfg, job)
        g = len(jobs)
        t = tp.c
        nc, n = len(t.side), len(tp.sl)
        jc = np.repeat(np.arange(g, dtype=np.int64), nc)  # job of every block
        c = _Contents(g * nc)
        for f in ("side", "bpb", "blocks", "stride", "words"):
            setattr(c, f, np.tile(getattr(t, f), g))
        bases = np.array([[j.lhs_addr, j.rhs_addr] for j in jobs], dtype=np.int64)
        c.dram = np.tile(t.dram, g) + bases[jc, c.side]
        # streamed blocks take the side's halves in turn, continuing from the jobs before
        streamed = np.tile(t.streamed, g)
        ring = np.array([s.ring for s in self.sides], dtype=np.int64)[c.side]
        per_job = np.array(tp.nstreamed, dtype=np.int64)[c.side]
        half = np.array([cfg.bm // 2, cfg.bn // 2], dtype=np.int64)[c.side]
        c.buf = np.where(streamed >= 0, (ring + jc * per_job + streamed) % 2 * half, np.tile(t.buf, g))
        for side, count in zip(self.sides, tp.nstreamed, strict=True):
            side.ring += g * count
        js = np.repeat(np.arange(g, dtype=np.int64), n)  # job of every step
        res_base = np.array([j.res_addr for j in jobs], dtype=np.int64)
        self.modes += [tp.mode] * g
        self.read_bytes += g * int((t.bpb * t.blocks).sum()) * cfg.beat_bytes
        self._emit(
            job, c, np.tile(tp.sl, g) + js * nc, np.tile(tp.sr, g) + js * nc, np.tile(tp.k, g),
            np.tile(tp.clear, g), np.tile(tp.write, g), np.tile(tp.res, g) + res_base[js],
        )

    def _emit(
        self,
        job: GemmJob,
        c: _Contents,
        sl: np.ndarray,
        sr: np.ndarray,
        steps_k: np.ndarray,
        steps_clear: np.ndarray,
        writes: np.ndarray,
        steps_res: np.ndarray,
    ) -> None:
        """Tokens and streams of one job; `sl`/`sr` name each step's blocks by position in `c`."""
        n = len(sl)
        nc = len(c.side)
        first_content = self.ncontents
        self.ncontents += nc
        # first and last use of every block of this job (each block is used on one side only)
        idx = np.arange(n, dtype=np.int64)
        first = np.full(nc, n, dtype=np.int64)
        last = np.full(nc, -1, dtype=np.int64)
        for s_arr in (sl, sr):
            u, at = np.unique(s_arr, return_index=True)
            first[u] = np.minimum(first[u], at)
            u, at = np.unique(s_arr[::-1], return_index=True)
            last[u] = np.maximum(last[u], n - 1 - at)
        wait_l, wait_r = first[sl] == idx, first[sr] == idx
        free_l, free_r = last[sl] == idx, last[sr] == idx
        # free events are numbered per side in exec order; each block learns the one it ends with
        free_event = np.full(nc, -1, dtype=np.int64)
        for side, free, steps_c in ((0, free_l, sl), (1, free_r, sr)):
            st = self.sides[side]
            free_event[steps_c[free]] = np.cumsum(free)[free] - 1 + st.freed
            st.freed += int(free.sum())
            st.event_steps.extend(self.nsteps + idx[free])

        # fetch stream: blocks in creation order (= order of first use, per side and overall), each
        # waiting for the frees of what it overwrites
        cids = first_content + np.arange(nc, dtype=np.int64)
        zeros = np.zeros(nc, dtype=np.int64)  # zero-length fetches before a block that only wait
        wait = np.zeros(nc, dtype=np.int64)
        lo, hi = c.buf, c.buf + c.words
        for side in (0, 1):
            st = self.sides[side]
            pos = np.flatnonzero(c.side == side)
            if not len(pos):
                continue
            need = st.needs(lo[pos], hi[pos], free_event[pos])
            waits = need >= 0
            if np.any(st.event_steps.array[need[waits]] >= self.nsteps + first[pos[waits]]):
                bad = int(cids[pos[waits]][np.argmax(st.event_steps.array[need[waits]] >= self.nsteps
                                                     + first[pos[waits]])])
                raise RuntimeError(f"BISMO scheduler bug: block {bad} overwrites words still needed (deadlock)")
            # the fetch stream has waited for `consumed` free tokens; a block needing event e waits for
            # the e + 1 - consumed more (one per fetch: the extra ones on zero-length fetches before it)
            reach = np.maximum.accumulate(np.maximum(need + 1, st.consumed))
            before = np.concatenate(([st.consumed], reach[:-1]))
            extra = need + 1 - before
            zeros[pos] = np.maximum(0, extra - 1)
            wait[pos] = extra > 0
            st.consumed = int(reach[-1])
        rows = np.zeros((nc + int(zeros.sum()), 8), dtype=np.int64)
        rows[:, 5] = np.repeat(c.side, zeros + 1)
        rows[:, 6] = 1
        at = np.arange(nc, dtype=np.int64) + np.cumsum(zeros)
        rows[at] = np.stack([c.dram, c.stride, c.bpb, c.blocks, lo, c.side, wait, np.ones(nc, dtype=np.int64)], 1)
        self.f_parts.append(rows)

        # exec and result streams
        r0 = sum(len(p) for p in self.res_parts)
        res_no = r0 + np.cumsum(writes) - 1  # result number of a writing step
        self.exec_parts.append(
            isa.execute(
                c.buf[sl], c.buf[sr], steps_k,
                job.wbits, job.abits, job.wsigned, job.asigned,
                steps_clear, writes,
                np.where(writes == 1, res_no % 2, 0),
                wait_l.astype(np.int64), wait_r.astype(np.int64),
                free_l.astype(np.int64), free_r.astype(np.int64),
                ((writes == 1) & (res_no >= 2)).astype(np.int64),
                writes,
            )
        )
        res_addr = steps_res[writes == 1]
        self.res_parts.append(np.stack([res_addr, np.full(len(res_addr), job.res_stride, dtype=np.int64)], 1))
        self.nsteps += n

    def program(self) -> Program:
        if self.f_parts:
            f = np.concatenate(self.f_parts)
            fetch = isa.fetch(*(f[:, i] for i in range(8)))
        else:
            fetch = np.zeros((0, 4), dtype="<u4")
        execute = np.concatenate(self.exec_parts) if self.exec_parts else np.zeros((0, 4), dtype="<u4")
        rr = np.concatenate(self.res_parts) if self.res_parts else np.zeros((0, 2), dtype=np.int64)
        n = len(rr)
        slots = np.arange(n, dtype=np.int64) % 2
        ones = np.ones(n, dtype=np.int64)
        result = isa.result(rr[:, 0], rr[:, 1], slots, ones, ones)
        return Program(fetch, execute, result, self.modes, self.read_bytes)


def schedule(cfg: BismoConfig, jobs: list[GemmJob]) -> Program:
    """The fetch, execute and result instruction streams that run `jobs` in order."""
    b = _Builder(cfg)
    i = 0
    while i < len(jobs):
        j = i + 1
        while j < len(jobs) and _shape(jobs[j]) == _shape(jobs[i]):
            j += 1
        b.add(jobs[i:j])
        i = j
    return b.program()
