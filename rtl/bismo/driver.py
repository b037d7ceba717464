"""Register-level driver of the BISMO overlay: the `Accelerator` for bismo-* configurations.

It talks only to a `RegisterInterface` (register writes/reads, DRAM image writes/reads, run until
done), so the same code drives the native Verilator harness and, given a PYNQ MMIO + buffer
implementation of the interface, a board. Every number in a SimResult comes from the RTL's own
counters, except energy, which is a model over those counters (hil.rtl.bismo.energy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.errors import ConfigError, DeviceError, HilError
from hil.rtl.accelerator import SimResult
from hil.rtl.bismo import layers as L
from hil.rtl.bismo.config import BismoConfig
from hil.rtl.bismo.energy import BismoEnergyModel
from hil.rtl.bismo.isa import INSTR_BYTES
from hil.rtl.bismo.pack import ceil_div, operand_bytes, pack_operand
from hil.rtl.bismo.schedule import GemmJob, Program, schedule
from hil.rtl.common import HarnessDriver, check_range
from hil.rtl.interface import RegisterInterface
from hil.rtl.verilator_build import HarnessSpec
from hil.workload import QuantLayer

# registers (rtl/bismo/sv/bismo_top.sv)
REG_ID, REG_CTRL, REG_STATUS, REG_CONFIG = 0, 1, 2, 3
CONFIG_DP_EN = 1  # CONFIG bit 0: the datapath (operand buffers, DPA) is enabled
REG_HW = {"dm": 4, "dn": 5, "dk": 6, "bm": 7, "bn": 8, "dram_bits": 9}
REG_STREAMS = 16  # base/count pairs: fetch, execute, result
REG_COUNTERS = 32
BISMO_ID = 0x42534D4F
COUNTERS = (
    "total",
    "fetch_busy",
    "fetch_token_stall",
    "exec_busy",
    "exec_token_stall",
    "exec_starved",
    "result_busy",
    "result_token_stall",
    "result_write_stall",
    "dram_read_beats",
    "dram_write_bytes",
    "instruction_read_beats",
    "lhs_words_written",
    "rhs_words_written",
    "fetch_waiting_dram",
    "result_tiles",
)
# the counters that count cycles (the others count beats, bytes, words, tiles)
CYCLE_COUNTERS = frozenset(
    {
        "total",
        "fetch_busy",
        "fetch_token_stall",
        "fetch_waiting_dram",
        "exec_busy",
        "exec_token_stall",
        "exec_starved",
        "result_busy",
        "result_token_stall",
        "result_write_stall",
    }
)
ALIGN = 4096


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def _check_dram(cfg: BismoConfig, needed: int) -> None:
    if needed > cfg.dram_size:
        raise ConfigError(
            f"{cfg.name}: this work needs at least {needed:,} bytes of accelerator DRAM, the model has "
            f"{cfg.dram_size:,}; split the batch"
        )


@dataclass(frozen=True)
class GemmOperands:
    m: int
    k: int
    n: int
    lhs: np.ndarray | None = None  # M x K
    rhs_t: np.ndarray | None = None  # N x K (A transposed)


@dataclass
class RunPlan:
    """One run: what to write where, which registers to set, where the results land."""

    gemms: list[GemmOperands]
    wbits: int
    abits: int
    jobs: list[GemmJob]
    prog: Program
    images: list[tuple[int, np.ndarray]]  # (DRAM byte address, uint8 image)
    streams: list[tuple[int, int]]  # (base, instruction count): fetch, execute, result
    results: list[tuple[int, int, int, int, int]]  # (address, padded rows, padded cols, M, N)
    with_data: bool = True

    def register_writes(self) -> list[tuple[int, int]]:
        """Stream descriptors, the datapath enable, then start. A timing run (no operands) clears
        DP_EN: its cycles are those of the same program on data (tested), and the simulator skips the
        buffers and the DPA, most of its work on compute-bound programs."""
        writes = []
        for i, (base, count) in enumerate(self.streams):
            writes += [(REG_STREAMS + 2 * i, base), (REG_STREAMS + 2 * i + 1, count)]
        return [*writes, (REG_CONFIG, CONFIG_DP_EN if self.with_data else 0), (REG_CTRL, 1)]

    def outputs(self, read_mem: Callable[[int, int], np.ndarray]) -> list[np.ndarray]:
        """The M x N int products, read back with `read_mem(address, nbytes)`."""
        outs = []
        for addr, mpad, npad, m, n in self.results:
            raw = np.asarray(read_mem(addr, mpad * npad * 4), dtype=np.uint8)
            outs.append(raw.view("<i4").reshape(mpad, npad)[:m, :n].astype(np.int64))
        return outs


class BismoAccelerator(HarnessDriver):
    """`hil.rtl.accelerator.Accelerator` on the BISMO RTL."""

    cfg: BismoConfig

    def __init__(self, cfg: BismoConfig, regs: RegisterInterface | None = None, max_cycles: int | None = None):
        self.supported_bits = tuple(range(1, cfg.max_bits + 1))
        self.energy_model = BismoEnergyModel.for_array(cfg.dm, cfg.dn, cfg.dk)
        super().__init__(cfg, regs, max_cycles)

    # ------------------------------------------------------------------ setup
    def _harness_spec(self) -> HarnessSpec:
        return self.cfg.harness_spec()

    def _check_hardware(self) -> None:
        self._expect_registers(
            "BISMO", (REG_ID, BISMO_ID), {f: (reg, getattr(self.cfg, f)) for f, reg in REG_HW.items()}
        )

    def describe(self) -> dict[str, Any]:
        return {
            "accelerator": "bismo",
            **self.cfg.to_json(),
            "schedule": "per GEMM: outer operand streamed once, inner resident or re-fetched; "
            "fewer DRAM bytes wins (weights outer = weight-stationary LHS reuse); split-K when a stripe "
            "exceeds half a buffer",
            "energy_model": self.energy_model.label,
            **self._describe,
        }

    # ------------------------------------------------------------------ public API
    def gemm(
        self, w: np.ndarray, a: np.ndarray, wbits: int, abits: int, wsigned: bool, asigned: bool
    ) -> tuple[np.ndarray, SimResult]:
        w, a = np.asarray(w), np.asarray(a)
        if w.ndim != 2 or a.ndim != 2 or w.shape[1] != a.shape[0]:
            raise ConfigError(f"gemm: W {w.shape} and A {a.shape} are not an M x K times K x N product")
        self._check_bits(wbits, abits)
        check_range(w, wbits, wsigned, "weights")
        check_range(a, abits, asigned, "activations")
        g = GemmOperands(w.shape[0], w.shape[1], a.shape[1], w.astype(np.int64), a.T.astype(np.int64))
        outs, res = self._run([g], wbits, abits, wsigned, asigned, with_data=True)
        return outs[0], res

    def time_gemm(
        self, m: int, k: int, n: int, wbits: int, abits: int, wsigned: bool = True, asigned: bool = False,
        out_bits: int | None = None,
    ) -> SimResult:
        """Counters of an M x K x N GEMM. The result stage writes int32 (BISMO's DPUs hand over 32-bit
        accumulators; requantization is the host's), so `out_bits` may only be 32 (the default)."""
        if min(m, k, n) < 1:
            raise ConfigError(f"gemm shape M={m} K={k} N={n} must be positive")
        if out_bits not in (None, 32):
            raise ConfigError(f"{self.name}: BISMO writes 32-bit results; out_bits={out_bits} is not supported")
        self._check_bits(wbits, abits)
        _, res = self._run([GemmOperands(m, k, n)], wbits, abits, wsigned, asigned, with_data=False)
        return res

    def layer(self, layer: QuantLayer, batch: int) -> SimResult:
        """Counters of one layer (operands are not loaded: cycle counts don't depend on values)."""
        self._check_bits(layer.wbits, layer.abits, f"layer {layer.key}")
        geo = L.geometry(layer, batch)
        gemms = [GemmOperands(m, k, n) for m, k, n in L.gemm_shapes(geo, self.cfg.dm, self.cfg.dk)]
        _, res = self._run(gemms, layer.wbits, layer.abits, layer.wsigned, layer.asigned, with_data=False)
        res.extra["layer"] = layer.key
        res.extra["batch"] = batch
        return res

    def network(self, layers: list[QuantLayer], batch: int) -> SimResult:
        """A whole network as one continuous run: every layer's GEMMs, each at its own bitwidths, in
        one instruction stream, so the decoupled stages overlap the fetch of a layer with the execution
        of the one before (what a per-layer LUT sum cannot see)."""
        gemms: list[GemmOperands] = []
        bits: list[tuple[int, int, bool, bool]] = []
        for layer in layers:
            self._check_bits(layer.wbits, layer.abits, f"layer {layer.key}")
            geo = L.geometry(layer, batch)
            shapes = L.gemm_shapes(geo, self.cfg.dm, self.cfg.dk)
            gemms += [GemmOperands(m, k, n) for m, k, n in shapes]
            bits += [(layer.wbits, layer.abits, layer.wsigned, layer.asigned)] * len(shapes)
        first = bits[0]
        _, res = self._run(gemms, *first, with_data=False, per_gemm_bits=bits)
        res.extra["layers"] = len(layers)
        res.extra["batch"] = batch
        return res

    def run_layer(self, layer: QuantLayer, x: np.ndarray, wt: np.ndarray) -> tuple[np.ndarray, SimResult]:
        """A layer on real data: activations (B, H, W, Cin), weights (Cout, k, k, Cin/groups)."""
        self._check_bits(layer.wbits, layer.abits, f"layer {layer.key}")
        geo = L.geometry(layer, int(np.asarray(x).shape[0]))
        check_range(np.asarray(wt), layer.wbits, layer.wsigned, f"layer {layer.name!r} weights")
        check_range(np.asarray(x), layer.abits, layer.asigned, f"layer {layer.name!r} activations")
        ops = L.gemm_operands(np.asarray(x), np.asarray(wt), geo, self.cfg.dm, self.cfg.dk)
        gemms = [GemmOperands(lhs.shape[0], lhs.shape[1], rhs.shape[0], lhs, rhs) for lhs, rhs in ops]
        outs, res = self._run(gemms, layer.wbits, layer.abits, layer.wsigned, layer.asigned, with_data=True)
        res.extra["layer"] = layer.key
        return L.assemble_output(outs, geo), res

    # ------------------------------------------------------------------ internals
    def _check_bits(self, wbits: int, abits: int, what: str = "gemm") -> None:
        for name, b in (("wbits", wbits), ("abits", abits)):
            if b not in self.supported_bits:
                raise ConfigError(
                    f"{self.name}: {what}: {name}={b} is not supported (1..{self.supported_bits[-1]} bits)"
                )

    def _run(
        self, gemms: list[GemmOperands], wbits: int, abits: int, wsigned: bool, asigned: bool, *, with_data: bool,
        per_gemm_bits: list[tuple[int, int, bool, bool]] | None = None,
    ) -> tuple[list[np.ndarray], SimResult]:
        plan = plan_run(self.cfg, gemms, wbits, abits, wsigned, asigned, with_data=with_data,
                        per_gemm_bits=per_gemm_bits)
        for a, img in plan.images:
            self.regs.write_mem(a, img)
        batch = getattr(self.regs, "write_regs", None)  # one round trip on the simulator
        if batch:
            batch(plan.register_writes())
        else:
            for reg, value in plan.register_writes():
                self.regs.write_reg(reg, value)
        try:
            self.regs.run_until_done(self.max_cycles or self._cycle_bound(plan.jobs, plan.prog))
        except HilError:
            reset = getattr(self.regs, "reset", None)  # leave the simulator usable for the next run
            if reset:
                reset()
            raise
        status = self.regs.read_reg(REG_STATUS)
        if not status & 1:
            raise DeviceError(self.name, f"run ended without done (status 0x{status:x})")
        counters = self._counters()
        outs = plan.outputs(self.regs.read_mem) if with_data else []
        return outs, run_result(self.cfg, counters, plan)

    def _cycle_bound(self, jobs: list[GemmJob], prog: Program) -> int:
        cfg = self.cfg
        compute = sum(j.mt * j.nt * j.kw * j.wbits * j.abits for j in jobs)
        moved = prog.planned_read_bytes + sum(j.mt * cfg.dm * j.res_stride for j in jobs)
        moved += (len(prog.fetch) + len(prog.execute) + len(prog.result)) * INSTR_BYTES
        per_instr = len(prog.fetch) * cfg.dram_latency + len(prog.result) * cfg.dm * 4
        return 8 * (compute + int(moved / cfg.dram_bytes_per_cycle) + per_instr) + 100_000

    def _counters(self) -> dict[str, int]:
        idx = list(range(REG_COUNTERS, REG_COUNTERS + 2 * len(COUNTERS)))
        batch = getattr(self.regs, "read_regs", None)  # one round trip on the simulator
        vals = batch(idx) if batch else [self.regs.read_reg(i) for i in idx]
        return {name: vals[2 * i] | (vals[2 * i + 1] << 32) for i, name in enumerate(COUNTERS)}


def plan_run(
    cfg: BismoConfig,
    gemms: list[GemmOperands],
    wbits: int,
    abits: int,
    wsigned: bool,
    asigned: bool,
    *,
    with_data: bool,
    per_gemm_bits: list[tuple[int, int, bool, bool]] | None = None,
) -> RunPlan:
    """DRAM images, instruction streams and result locations of one run (no hardware access).

    `per_gemm_bits` gives each GEMM its own (wbits, abits, wsigned, asigned), as the layers of a
    mixed-precision network have; otherwise all share the arguments'.
    """
    jobs: list[GemmJob] = []
    images: list[tuple[int, np.ndarray]] = []
    results: list[tuple[int, int, int, int, int]] = []
    addr = 0
    bits = per_gemm_bits or [(wbits, abits, wsigned, asigned)] * len(gemms)
    if len(bits) != len(gemms):
        raise ValueError("per_gemm_bits needs one entry per GEMM")
    for g, (wbits, abits, wsigned, asigned) in zip(gemms, bits, strict=True):
        mt, nt, kw = ceil_div(g.m, cfg.dm), ceil_div(g.n, cfg.dn), ceil_div(g.k, cfg.dk)
        lhs_addr = addr
        addr = _align(addr + operand_bytes(g.m, g.k, wbits, cfg.dm, cfg.dk))
        rhs_addr = addr
        addr = _align(addr + operand_bytes(g.n, g.k, abits, cfg.dn, cfg.dk))
        res_addr, npad = addr, nt * cfg.dn
        addr = _align(addr + mt * cfg.dm * npad * 4)
        jobs.append(GemmJob(mt, nt, kw, wbits, abits, wsigned, asigned, lhs_addr, rhs_addr, res_addr, npad * 4))
        results.append((res_addr, mt * cfg.dm, npad, g.m, g.n))
        if with_data:
            if g.lhs is None or g.rhs_t is None:
                raise ValueError("plan(with_data=True) needs operand values")
            images.append((lhs_addr, pack_operand(g.lhs, wbits, cfg.dm, cfg.dk)))
            images.append((rhs_addr, pack_operand(g.rhs_t, abits, cfg.dn, cfg.dk)))
    _check_dram(cfg, addr)  # before scheduling, which costs time on huge work
    prog = schedule(cfg, jobs)
    streams = []
    for arr in (prog.fetch, prog.execute, prog.result):
        streams.append((addr, len(arr)))
        images.append((addr, arr.reshape(-1).view(np.uint8)))
        addr = _align(addr + len(arr) * INSTR_BYTES)
    _check_dram(cfg, addr)
    return RunPlan(gemms, wbits, abits, jobs, prog, images, streams, results, with_data)


def run_result(cfg: BismoConfig, c: dict[str, int], plan: RunPlan) -> SimResult:
    """SimResult of a finished run from its counters (energy from the model over them)."""
    jobs, prog, gemms, wbits, abits = plan.jobs, plan.prog, plan.gemms, plan.wbits, plan.abits
    energy_model = BismoEnergyModel.for_array(cfg.dm, cfg.dn, cfg.dk)
    total = max(c["total"], 1)
    rd_bytes = c["dram_read_beats"] * cfg.beat_bytes
    wr_bytes = c["dram_write_bytes"]
    parts = energy_model.breakdown_pj(
        dm=cfg.dm, dn=cfg.dn, dk=cfg.dk, array_cycles=c["exec_busy"],
        lhs_words_written=c["lhs_words_written"], rhs_words_written=c["rhs_words_written"],
        result_tiles=c["result_tiles"], dram_read_bytes=rd_bytes, dram_write_bytes=wr_bytes,
    )
    formula = sum(j.mt * j.nt * j.kw * j.wbits * j.abits for j in jobs)
    return SimResult(
        cycles=c["total"],
        compute_cycles=c["exec_busy"],
        latency_ms=c["total"] / (cfg.clock_mhz * 1e3),
        energy_uj=sum(parts.values()) * 1e-6,
        dram_bytes=rd_bytes + wr_bytes,
        stage_cycles={k: v for k, v in c.items() if k in CYCLE_COUNTERS},
        utilization={
            "array": c["exec_busy"] / total,
            "fetch": c["fetch_busy"] / total,
            "execute": c["exec_busy"] / total,
            "result": c["result_busy"] / total,
            "dram": (rd_bytes + wr_bytes) / (total * cfg.dram_bytes_per_cycle),
        },
        extra={
            "config": cfg.name,
            "counters": dict(c),
            "gemms": [[g.m, g.k, g.n] for g in gemms],
            "bits": [wbits, abits],
            "formula_compute_cycles": formula,
            "binary_ops": 2 * sum(g.m * g.k * g.n * j.wbits * j.abits for g, j in zip(gemms, jobs, strict=True)),
            "dram_read_bytes": rd_bytes,
            "dram_write_bytes": wr_bytes,
            "instruction_read_bytes": c["instruction_read_beats"] * cfg.beat_bytes,
            "energy_breakdown_uj": {k: v * 1e-6 for k, v in parts.items()},
            "energy_model": energy_model.label,
            **prog.info(),
        },
    )
