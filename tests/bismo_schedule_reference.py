"""The BISMO scheduler as first written: Python per operand block (tests/test_rtl_bismo_schedule.py).

hil.rtl.bismo.schedule builds the same three instruction streams with numpy (issue 19: this form cost
~50 CPU-seconds of a bismo-cloud LUT build); this one is the plain statement of the rules it must
match, instruction for instruction. Copied from hil/rtl/bismo/schedule.py at commit 4e4596e.
"""

from __future__ import annotations

import bisect

import numpy as np

from hil.errors import ConfigError
from hil.rtl.bismo import isa
from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bismo.schedule import GemmJob, Program


class _Side:
    """Buffer bookkeeping for one operand side across the whole program."""

    def __init__(self, words: int) -> None:
        self.words = words
        self.ring = 0  # next half for streamed blocks
        # disjoint occupied word ranges, sorted by start: (start, end, content id)
        self.starts: list[int] = []
        self.occupants: list[tuple[int, int, int]] = []
        self.consumed = 0  # free tokens the fetch stream has waited for so far
        self.freed = 0  # free events the exec stream has sent so far
        self.event_steps: list[int] = []  # global exec step of every free event

    def occupy(self, lo: int, hi: int, cid: int, free_event: list[int]) -> int:
        """Put content `cid` at words [lo, hi); the last free event among what it overwrites (-1: none)."""
        i = max(bisect.bisect_right(self.starts, lo) - 1, 0)
        j = i
        need = -1
        kept = []
        while j < len(self.occupants) and self.occupants[j][0] < hi:
            o = self.occupants[j]
            if o[1] > lo:
                need = max(need, free_event[o[2]])
                if o[0] < lo:  # the part of an occupant not overwritten stays occupied
                    kept.append((o[0], lo, o[2]))
                if hi < o[1]:
                    kept.append((hi, o[1], o[2]))
            else:
                kept.append(o)
            j += 1
        new = sorted([*kept, (lo, hi, cid)])
        self.occupants[i:j] = new
        self.starts[i:j] = [o[0] for o in new]
        return need


class _Builder:
    def __init__(self, cfg: BismoConfig) -> None:
        self.cfg = cfg
        self.sides = (_Side(cfg.bm), _Side(cfg.bn))
        # contents: side, dram addr, beats per block, blocks, stride, buffer addr, words, free event
        self.c_side: list[int] = []
        self.c_dram: list[int] = []
        self.c_bpb: list[int] = []
        self.c_blocks: list[int] = []
        self.c_stride: list[int] = []
        self.c_buf: list[int] = []
        self.c_words: list[int] = []
        self.c_free_event: list[int] = []
        self.f_rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        self.exec_parts: list[np.ndarray] = []
        self.res_rows: list[tuple[int, int]] = []  # (dram addr, stride)
        self.modes: list[str] = []
        self.read_bytes = 0
        self.nsteps = 0  # exec steps emitted before the current job

    # --- contents ---
    def content(self, side: int, dram: int, bpb: int, blocks: int, stride: int, buf: int, words: int) -> int:
        cid = len(self.c_side)
        self.c_side.append(side)
        self.c_dram.append(dram)
        self.c_bpb.append(bpb)
        self.c_blocks.append(blocks)
        self.c_stride.append(stride)
        self.c_buf.append(buf)
        self.c_words.append(words)
        self.c_free_event.append(-1)
        self.read_bytes += bpb * blocks * self.cfg.beat_bytes
        return cid

    def streamed_addr(self, side: int) -> int:
        s = self.sides[side]
        addr = (s.ring % 2) * (s.words // 2)
        s.ring += 1
        return addr

    # --- one job ---
    def add(self, job: GemmJob) -> None:
        cfg = self.cfg
        lw, rw = job.wbits * job.kw, job.abits * job.kw
        lrow_bytes, rrow_bytes = cfg.dm * cfg.dk // 8, cfg.dn * cfg.dk // 8
        lstripe, rtile = lw * lrow_bytes, rw * rrow_bytes
        beat = cfg.beat_bytes

        def lhs(s: int, k0: int, c: int, buf: int) -> int:
            return self.content(
                0, job.lhs_addr + s * lstripe + k0 * lrow_bytes, c * lrow_bytes // beat, job.wbits,
                job.kw * lrow_bytes, buf, job.wbits * c,
            )

        def rhs(t: int, k0: int, c: int, buf: int) -> int:
            return self.content(
                1, job.rhs_addr + t * rtile + k0 * rrow_bytes, c * rrow_bytes // beat, job.abits,
                job.kw * rrow_bytes, buf, job.abits * c,
            )

        first_content = len(self.c_side)
        # steps: (lhs content, rhs content, num_k, clear, write, result row-0 address)
        steps_l: list[int] = []
        steps_r: list[int] = []
        steps_k: list[int] = []
        steps_clear: list[int] = []
        steps_write: list[int] = []
        steps_res: list[int] = []
        tile_res = [
            [job.res_addr + s * cfg.dm * job.res_stride + t * cfg.dn * 4 for t in range(job.nt)]
            for s in range(job.mt)
        ]

        if lw <= cfg.bm // 2 and rw <= cfg.bn // 2:
            res_r = job.nt * rw <= cfg.bn
            res_l = job.mt * lw <= cfg.bm
            traffic_a = job.mt * lstripe + (job.nt if res_r else job.mt * job.nt) * rtile
            traffic_b = job.nt * rtile + (job.mt if res_l else job.mt * job.nt) * lstripe
            if traffic_a <= traffic_b:
                self.modes.append("lhs-outer" + ("/rhs-resident" if res_r else ""))
                resident: list[int] = []  # filled during the first outer block, in order of use
                for s in range(job.mt):
                    lc = lhs(s, 0, job.kw, self.streamed_addr(0))
                    for t in range(job.nt):
                        if not res_r:
                            rc = rhs(t, 0, job.kw, self.streamed_addr(1))
                        elif s == 0:
                            rc = rhs(t, 0, job.kw, t * rw)
                            resident.append(rc)
                        else:
                            rc = resident[t]
                        steps_l.append(lc)
                        steps_r.append(rc)
                        steps_res.append(tile_res[s][t])
            else:
                self.modes.append("rhs-outer" + ("/lhs-resident" if res_l else ""))
                resident = []
                for t in range(job.nt):
                    rc = rhs(t, 0, job.kw, self.streamed_addr(1))
                    for s in range(job.mt):
                        if not res_l:
                            lc = lhs(s, 0, job.kw, self.streamed_addr(0))
                        elif t == 0:
                            lc = lhs(s, 0, job.kw, s * lw)
                            resident.append(lc)
                        else:
                            lc = resident[s]
                        steps_l.append(lc)
                        steps_r.append(rc)
                        steps_res.append(tile_res[s][t])
            n = len(steps_l)
            steps_k = [job.kw] * n
            steps_clear = [1] * n
            steps_write = [1] * n
        else:
            c = min(cfg.bm // 2 // job.wbits, cfg.bn // 2 // job.abits)
            if c < 1:
                raise ConfigError(
                    f"{cfg.name}: one {job.wbits}/{job.abits}-bit word row needs more than half an operand "
                    f"buffer (bm={cfg.bm}, bn={cfg.bn}); this GEMM cannot be tiled"
                )
            self.modes.append("split-k")
            chunks = [(k0, min(c, job.kw - k0)) for k0 in range(0, job.kw, c)]
            for s in range(job.mt):
                for t in range(job.nt):
                    for ci, (k0, ck) in enumerate(chunks):
                        steps_l.append(lhs(s, k0, ck, self.streamed_addr(0)))
                        steps_r.append(rhs(t, k0, ck, self.streamed_addr(1)))
                        steps_k.append(ck)
                        steps_clear.append(int(ci == 0))
                        steps_write.append(int(ci == len(chunks) - 1))
                        steps_res.append(tile_res[s][t])

        self._emit(job, first_content, steps_l, steps_r, steps_k, steps_clear, steps_write, steps_res)

    def _emit(
        self,
        job: GemmJob,
        first_content: int,
        steps_l: list[int],
        steps_r: list[int],
        steps_k: list[int],
        steps_clear: list[int],
        steps_write: list[int],
        steps_res: list[int],
    ) -> None:
        n = len(steps_l)
        sl = np.asarray(steps_l, dtype=np.int64)
        sr = np.asarray(steps_r, dtype=np.int64)
        ncont = len(self.c_side) - first_content
        # first and last use of every content of this job (contents are numbered in creation order)
        idx = np.arange(n, dtype=np.int64)
        first = np.full(ncont, n, dtype=np.int64)
        last = np.full(ncont, -1, dtype=np.int64)
        for s_arr in (sl, sr):
            np.minimum.at(first, s_arr - first_content, idx)
            np.maximum.at(last, s_arr - first_content, idx)
        wait_l = first[sl - first_content] == idx
        wait_r = first[sr - first_content] == idx
        free_l = last[sl - first_content] == idx
        free_r = last[sr - first_content] == idx
        # free events are numbered per side in exec order; each content learns the one it ends with
        for side, free in ((0, free_l), (1, free_r)):
            st = self.sides[side]
            steps_c = sl if side == 0 else sr
            events = np.cumsum(free) - 1 + st.freed  # event number of a freeing step
            cids = steps_c[free]
            ev = events[free]
            for cid, e in zip(cids.tolist(), ev.tolist(), strict=True):
                self.c_free_event[cid] = e
            st.freed += int(free.sum())
            st.event_steps.extend((self.nsteps + idx[free]).tolist())

        # fetch stream: contents in creation order (= order of first use, per side and overall),
        # each waiting for the frees of what it overwrites
        for cid in range(first_content, len(self.c_side)):
            side = self.c_side[cid]
            st = self.sides[side]
            lo, hi = self.c_buf[cid], self.c_buf[cid] + self.c_words[cid]
            need = st.occupy(lo, hi, cid, self.c_free_event)
            if need >= 0 and st.event_steps[need] >= self.nsteps + first[cid - first_content]:
                raise RuntimeError(f"BISMO scheduler bug: block {cid} overwrites words still needed (deadlock)")
            extra = need + 1 - st.consumed
            for _ in range(max(0, extra - 1)):  # zero-length fetches that only wait
                self.f_rows.append((0, 0, 0, 0, 0, side, 1, 0))
            self.f_rows.append(
                (self.c_dram[cid], self.c_stride[cid], self.c_bpb[cid], self.c_blocks[cid], lo, side,
                 int(extra > 0), 1)
            )
            st.consumed += max(0, extra)

        # exec and result streams
        writes = np.asarray(steps_write, dtype=np.int64)
        r0 = len(self.res_rows)
        res_no = r0 + np.cumsum(writes) - 1  # result number of a writing step
        self.exec_parts.append(
            isa.execute(
                np.asarray(self.c_buf, dtype=np.int64)[sl],
                np.asarray(self.c_buf, dtype=np.int64)[sr],
                np.asarray(steps_k, dtype=np.int64),
                job.wbits, job.abits, job.wsigned, job.asigned,
                np.asarray(steps_clear, dtype=np.int64),
                writes,
                np.where(writes == 1, res_no % 2, 0),
                wait_l.astype(np.int64), wait_r.astype(np.int64),
                free_l.astype(np.int64), free_r.astype(np.int64),
                ((writes == 1) & (res_no >= 2)).astype(np.int64),
                writes,
            )
        )
        res_addr = np.asarray(steps_res, dtype=np.int64)[writes == 1]
        self.res_rows.extend((int(a), job.res_stride) for a in res_addr)
        self.nsteps += n

    def program(self) -> Program:
        if self.f_rows:
            f = np.asarray(self.f_rows, dtype=np.int64)
            fetch = isa.fetch(*(f[:, i] for i in range(8)))
        else:
            fetch = np.zeros((0, 4), dtype="<u4")
        execute = np.concatenate(self.exec_parts) if self.exec_parts else np.zeros((0, 4), dtype="<u4")
        n = len(self.res_rows)
        rr = np.asarray(self.res_rows, dtype=np.int64).reshape(n, 2)
        slots = np.arange(n, dtype=np.int64) % 2
        ones = np.ones(n, dtype=np.int64)
        result = isa.result(rr[:, 0], rr[:, 1], slots, ones, ones)
        return Program(fetch, execute, result, self.modes, self.read_bytes)


def schedule(cfg: BismoConfig, jobs: list[GemmJob]) -> Program:
    """The fetch, execute and result instruction streams that run `jobs` in order."""
    b = _Builder(cfg)
    for job in jobs:
        b.add(job)
    return b.program()
