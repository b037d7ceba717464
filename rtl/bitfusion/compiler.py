"""Map a convolution / depthwise convolution / GEMM onto the Bit Fusion RTL.

Everything the array runs is a direct convolution (a GEMM is a 1x1 convolution over a 1x1 image
whose batch is the GEMM's N): the compute controller walks

    outer (tiles):  oc-tile, image-tile, out-row-tile, out-col-tile, kernel-row-tile, in-channel-tile
    inner (cycles): image, out-row, out-col, kernel-row, kernel-col, in-channel-group

(or with the oc-tile loop inside the pixel tiles, whichever moves fewer DRAM bytes), one array
cycle per inner iteration, so the compute cycles are exactly
B * ceil(C_out/M) * H_out * W_out * k^2 * ceil(C_in/(N*pf)). Depthwise layers run per group of M
channels with block-diagonal weights (docs/RTL_BITFUSION.md); first layers whose im2col form is
cheaper are im2col'd on the host.

DRAM layouts (all byte-packed at the operand's lane width):
  activations  NHWC, spatially padded, channels padded to the array's channel groups;
  weights      pre-tiled in the order the WBUF consumes them (one contiguous read per tile);
  outputs      NHWC, channels padded to a multiple of M, at the output width (int32 unless
               requantized).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hil.errors import ConfigError
from hil.rtl.bitfusion.config import BitFusionConfig
from hil.rtl.bitfusion.isa import MAX_BLOCKS, NI, NO, Block, Loop, Transfer


class UnsupportedBitwidthError(ConfigError):
    """An operand width the Bit Fusion array cannot run (it runs 1..8 bits)."""


class LayerFitError(ConfigError):
    """A layer that no tiling fits into the buffers."""


SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
OUT_BITS = (2, 4, 8, 16, 32)


def lane_bits(bits: int, what: str) -> int:
    """The fused operand width a `bits`-wide operand runs at: 1-2 -> 2, 3-4 -> 4, 5-8 -> 8."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 8:
        raise UnsupportedBitwidthError(
            f"Bit Fusion runs {what} of 1..8 bits, not {bits!r} (16-bit four-pass mode is not built)"
        )
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


@dataclass(frozen=True)
class Precision:
    abits: int
    wbits: int
    asigned: bool = False
    wsigned: bool = True

    def __post_init__(self) -> None:
        lane_bits(self.abits, "activations")
        lane_bits(self.wbits, "weights")

    @property
    def a_lane(self) -> int:
        return lane_bits(self.abits, "activations")

    @property
    def w_lane(self) -> int:
        return lane_bits(self.wbits, "weights")

    @property
    def a_sel(self) -> int:
        return {2: 0, 4: 1, 8: 2}[self.a_lane]

    @property
    def w_sel(self) -> int:
        return {2: 0, 4: 1, 8: 2}[self.w_lane]

    @property
    def pf(self) -> int:
        """Multiply-adds per fusion unit per cycle: floor(8/max(a,2)) * floor(8/max(w,2)) on lanes."""
        return (8 // self.a_lane) * (8 // self.w_lane)

    @property
    def act_word(self) -> int:
        """Bytes of one row's activation word (pf activations)."""
        return self.pf * self.a_lane // 8

    @property
    def wgt_word(self) -> int:
        """Bytes of one fusion unit's weight word (pf weights)."""
        return self.pf * self.w_lane // 8


@dataclass(frozen=True)
class ConvProblem:
    """What the array runs. h_in / w_in are the input as stored (already zero-padded)."""

    batch: int
    h_in: int
    w_in: int
    c_in: int
    h_out: int
    w_out: int
    kernel: int
    stride: int
    c_out: int
    depthwise: bool = False

    def __post_init__(self) -> None:
        vals = (
            self.batch,
            self.h_in,
            self.w_in,
            self.c_in,
            self.h_out,
            self.w_out,
            self.kernel,
            self.stride,
            self.c_out,
        )
        if any(int(v) < 1 for v in vals):
            raise ConfigError(f"layer dimensions must be positive: {self}")
        if (
            self.h_in < (self.h_out - 1) * self.stride + self.kernel
            or self.w_in < (self.w_out - 1) * self.stride + self.kernel
        ):
            raise ConfigError(f"input {self.h_in}x{self.w_in} too small for the output of {self}")
        if self.depthwise and self.c_in != self.c_out:
            raise ConfigError(f"a depthwise layer has as many output as input channels: {self}")


@dataclass(frozen=True)
class Geometry:
    """How a problem's channels map onto rows, columns and DRAM bytes."""

    n_oc: int  # output-channel tiles of M
    rows_used: int  # R: rows an activation word spans (N, or fewer for few channels)
    cg: int  # in-channel groups of R * pf per oc tile (= ceil(C_in / (N * pf)))
    c_pad: int  # input channels per pixel in DRAM
    tile_ch: int  # input-channel offset between oc tiles (depthwise: M; dense: 0)
    pix_in: int  # bytes per input pixel
    obits: int
    eb: int  # bytes per output pixel and oc tile
    pix_out: int  # bytes per output pixel


def geometry(cfg: BitFusionConfig, prec: Precision, p: ConvProblem, obits: int) -> Geometry:
    n, m, pf = cfg.rows, cfg.cols, prec.pf
    n_oc = math.ceil(p.c_out / m)
    cr = min(p.c_in, m) if p.depthwise else p.c_in
    rows = min(n, 1 << max(0, math.ceil(math.log2(math.ceil(cr / pf)))))
    cg = math.ceil(cr / (rows * pf))
    grp = cg * rows * pf
    if p.depthwise:
        c_pad, tile_ch = (n_oc - 1) * m + grp, m
    else:
        c_pad, tile_ch = grp, 0
    if obits not in OUT_BITS or (m * obits) % 8:
        raise ConfigError(f"output width {obits} not in {OUT_BITS} (or M * bits not whole bytes)")
    eb = m * obits // 8
    return Geometry(n_oc, rows, cg, c_pad, tile_ch, c_pad * prec.a_lane // 8, obits, eb, n_oc * eb)


@dataclass(frozen=True)
class OutLayout:
    """Where a layer's output pixels go: NHWC at `base` with these byte strides per pixel, row and
    image (each oc tile's slice at +oc * M * obits / 8 within a pixel). The default layout is dense
    (`Geometry.pix_out` bytes per pixel); a network run with data points it into the interior of the
    next layer's (spatially padded, channel padded) input image instead."""

    base: int
    pix: int
    row: int
    image: int


# ------------------------------------------------------------------------------------------------
# formulas (ACCELERATORS.md) -- the tests check the RTL's compute counter against these


def conv_compute_cycles(b: int, h: int, w: int, k: int, c_in: int, c_out: int, n: int, m: int, pf: int) -> int:
    return b * math.ceil(c_out / m) * h * w * k * k * math.ceil(c_in / (n * pf))


def im2col_compute_cycles(b: int, h: int, w: int, k: int, c_in: int, c_out: int, n: int, m: int, pf: int) -> int:
    return b * h * w * math.ceil(c_out / m) * math.ceil(c_in * k * k / (n * pf))


def depthwise_compute_cycles(b: int, h: int, w: int, k: int, c: int, n: int, m: int, pf: int) -> int:
    """Ours (block-diagonal weights per group of M channels)."""
    return b * math.ceil(c / m) * h * w * k * k * math.ceil(min(c, m) / (n * pf))


# ------------------------------------------------------------------------------------------------
# tiling

LEVELS = ("oc", "b", "oh", "ow", "kh", "ic")
ORDERS = {
    "oc_outer": ("oc", "b", "oh", "ow", "kh", "ic"),  # weights stay for all pixels of an oc tile
    "px_outer": ("b", "oh", "ow", "oc", "kh", "ic"),  # activations stay for all oc tiles
}


@dataclass(frozen=True)
class Tiling:
    bt: int  # images per tile
    oht: int  # output rows per tile
    owt: int  # output columns per tile
    kht: int  # kernel rows per step
    cgt: int  # channel groups per step
    resident: bool  # all weights of an oc tile stay in WBUF across kernel-row / channel tiles
    order: str


def _divisors(x: int) -> list[int]:
    return [d for d in range(1, x + 1) if x % d == 0]


def _splits(total: int, t: int) -> list[tuple[int, int, int]]:
    """(start, tiles, size) of the full tiles and the tail."""
    out = [(0, total // t, t)] if total // t else []
    if total % t:
        out.append((total // t * t, 1, total % t))
    return out


def _merge(elem: int, dims: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Burst length and up to 3 (count, stride) levels; contiguous inner levels fold into bursts."""
    length, out = elem, []
    for count, stride in dims:
        if count == 1:
            continue
        if not out and stride == length:
            length *= count
        else:
            out.append((count, stride))
    if len(out) > 3:
        raise AssertionError("transfer pattern deeper than 3 levels")
    out += [(1, 0)] * (3 - len(out))
    return length, out


def _level(order: tuple[str, ...], deps: set[str], bounds: dict[str, int]) -> int:
    """LD level: fire when a level before the innermost dependency that actually iterates advances."""
    pos = [order.index(d) for d in deps if bounds[d] > 1]
    return max(pos) + 1 if pos else 0


@dataclass
class Plan:
    cfg: BitFusionConfig
    problem: ConvProblem
    precision: Precision
    geometry: Geometry
    tiling: Tiling
    blocks: list[Block]
    w_base: int
    i_base: int
    o_base: int
    w_bytes: int
    i_bytes: int
    o_bytes: int
    estimate: dict[str, float] = field(default_factory=dict)

    @property
    def compute_cycles(self) -> int:
        return sum(b.compute_cycles() for b in self.blocks)

    @property
    def dram_end(self) -> int:
        """End of the plan's own regions (weights, activations, outputs unless sent elsewhere)."""
        return max(self.o_base + self.o_bytes, self.i_base + self.i_bytes)


def transfer_beats(xf: Transfer, beat: int, outer_index: tuple[int, ...] | None = None) -> int:
    """Exact DRAM beats of one firing of a transfer (at the given outer loop indices, default all 0)."""
    base = xf.base + sum(i * d for i, d in zip(outer_index or (), xf.dstrides, strict=False))
    n = 0
    for i3 in range(xf.n3):
        for i2 in range(xf.n2):
            for i1 in range(xf.n1):
                a = base + i3 * xf.s3 + i2 * xf.s2 + i1 * xf.s1
                n += (a + xf.length - 1) // beat - a // beat + 1
    return n


def formula_terms(plan: Plan) -> dict[str, int]:
    """First-tile load and last-tile store of the program, in DRAM beats (ACCELERATORS.md's total)."""
    db = plan.cfg.beat_bytes
    first, last = plan.blocks[0], plan.blocks[-1]
    last_index = tuple(lp.bound - 1 for lp in last.outer)
    return {
        "first_tile_load": transfer_beats(first.ld_w, db) + transfer_beats(first.ld_i, db),
        "last_tile_store": transfer_beats(last.st, db, last_index),
    }


def _align(x: int, a: int = 4096) -> int:
    return (x + a - 1) // a * a


class _Builder:
    """Blocks and an analytic cost estimate for one tiling (the estimate only picks the tiling)."""

    def __init__(
        self,
        cfg: BitFusionConfig,
        prec: Precision,
        p: ConvProblem,
        g: Geometry,
        o_shift: int,
        o_signed: bool,
        o_strides: tuple[int, int, int] | None = None,
    ) -> None:
        self.cfg, self.prec, self.p, self.g = cfg, prec, p, g
        self.o_shift, self.o_signed = o_shift, o_signed
        # output bytes per pixel, row and image
        self.o_strides = o_strides or (g.pix_out, p.w_out * g.pix_out, p.h_out * p.w_out * g.pix_out)

    def fits(self, t: Tiling) -> bool:
        c, p, pr = self.cfg, self.p, self.prec
        rows_in = (t.oht - 1) * p.stride + t.kht
        cols_in = (t.owt - 1) * p.stride + p.kernel
        a_words = (p.kernel * p.kernel * self.g.cg) if t.resident else (t.kht * p.kernel * t.cgt)
        return (
            t.bt * t.oht * t.owt <= c.ob_entries
            and t.bt * rows_in * cols_in * t.cgt * pr.act_word <= c.ib_half
            and a_words * pr.wgt_word <= c.wb_half
        )

    def weight_tile_bytes(self, t: Tiling) -> int:
        a_words = (self.p.kernel * self.p.kernel * self.g.cg) if t.resident else (t.kht * self.p.kernel * t.cgt)
        return a_words * self.cfg.rows * self.cfg.cols * self.prec.wgt_word

    def blocks(self, t: Tiling, w_base: int, i_base: int, o_base: int) -> list[Block]:
        p, pr, g = self.p, self.prec, self.g
        s, k = p.stride, p.kernel
        nkh, nic = k // t.kht, g.cg // t.cgt
        order = ORDERS[t.order]
        wt = self.weight_tile_bytes(t)
        cgw = g.cg if t.resident else t.cgt
        chunk = t.cgt * g.rows_used * pr.act_word
        out = []
        for (b0, nb, btv), (oh0, noh, ohv), (ow0, now, owv) in itertools.product(
            _splits(p.batch, t.bt), _splits(p.h_out, t.oht), _splits(p.w_out, t.owt)
        ):
            rows_in = (ohv - 1) * s + t.kht
            cols_in = (owv - 1) * s + k
            bounds = {"oc": g.n_oc, "b": nb, "oh": noh, "ow": now, "kh": nkh, "ic": nic}
            outer_wbuf = {"kh": t.kht * k * g.cg, "ic": t.cgt} if t.resident else {}
            outer = tuple(Loop(bounds[lv], reduction=lv in ("kh", "ic"), wbuf=outer_wbuf.get(lv, 0)) for lv in order)
            inner = (
                Loop(btv, ibuf=rows_in * cols_in * t.cgt, obuf=ohv * owv),
                Loop(ohv, ibuf=s * cols_in * t.cgt, obuf=owv),
                Loop(owv, ibuf=s * t.cgt, obuf=1),
                Loop(t.kht, reduction=True, ibuf=cols_in * t.cgt, wbuf=k * cgw),
                Loop(k, reduction=True, ibuf=t.cgt, wbuf=cgw),
                Loop(t.cgt, reduction=True, ibuf=1, wbuf=1),
            )
            # LD WBUF: one contiguous tile per (oc, kernel-row tile, channel tile)
            w_ds = {"oc": wt if t.resident else nkh * nic * wt}
            if not t.resident:
                w_ds.update(kh=nic * wt, ic=wt)
            w_deps = {"oc"} if t.resident else {"oc", "kh", "ic"}
            ld_w = Transfer(
                base=w_base,
                length=wt,
                level=_level(order, w_deps, bounds),
                dstrides=tuple(w_ds.get(lv, 0) for lv in order),
            )
            # LD IBUF: the input window of the tile, one channel chunk per pixel
            pix = g.pix_in
            length, lv3 = _merge(chunk, [(cols_in, pix), (rows_in, p.w_in * pix), (btv, p.h_in * p.w_in * pix)])
            i_ds = {
                "oc": g.tile_ch * pr.a_lane // 8,
                "b": t.bt * p.h_in * p.w_in * pix,
                "oh": t.oht * s * p.w_in * pix,
                "ow": t.owt * s * pix,
                "kh": t.kht * p.w_in * pix,
                "ic": chunk,
            }
            i_deps = {"b", "oh", "ow", "kh", "ic"} | ({"oc"} if p.depthwise else set())
            ld_i = Transfer(
                base=i_base + ((b0 * p.h_in + oh0 * s) * p.w_in + ow0 * s) * pix,
                length=length,
                n1=lv3[0][0],
                s1=lv3[0][1],
                n2=lv3[1][0],
                s2=lv3[1][1],
                n3=lv3[2][0],
                s3=lv3[2][1],
                level=_level(order, i_deps, bounds),
                dstrides=tuple(i_ds[lv] for lv in order),
            )
            # ST OBUF: the tile's output pixels, this oc tile's channel slice of each
            po, prow, pimg = self.o_strides
            length, lv3 = _merge(g.eb, [(owv, po), (ohv, prow), (btv, pimg)])
            o_ds = {
                "oc": g.eb,
                "b": t.bt * pimg,
                "oh": t.oht * prow,
                "ow": t.owt * po,
                "kh": 0,
                "ic": 0,
            }
            st = Transfer(
                base=o_base + b0 * pimg + oh0 * prow + ow0 * po,
                length=length,
                n1=lv3[0][0],
                s1=lv3[0][1],
                n2=lv3[1][0],
                s2=lv3[1][1],
                n3=lv3[2][0],
                s3=lv3[2][1],
                level=order.index("kh"),
                dstrides=tuple(o_ds[lv] for lv in order),
                entries=btv * ohv * owv,
            )
            out.append(
                Block(
                    a_sel=pr.a_sel,
                    w_sel=pr.w_sel,
                    a_signed=pr.asigned,
                    w_signed=pr.wsigned,
                    o_sel=OUT_BITS.index(g.obits),
                    o_signed=self.o_signed,
                    o_shift=self.o_shift,
                    irows_log2=int(math.log2(g.rows_used)),
                    outer=outer,
                    inner=inner,
                    ld_w=ld_w,
                    ld_i=ld_i,
                    st=st,
                    note=f"b[{b0}:+{nb}x{btv}] oh[{oh0}:+{noh}x{ohv}] ow[{ow0}:+{now}x{owv}]",
                )
            )
        return out

    def estimate(self, blocks: list[Block]) -> dict[str, float]:
        """Cycles ~ sum over steps of max(compute, DRAM beats + latency) + first load + last store.

        With double buffering a step's loads must finish, latency included, while the previous
        step computes, so small tiles pay the DRAM latency on every step.
        """
        db, lat = self.cfg.beat_bytes, self.cfg.dram_latency
        compute = beats = total = 0.0
        first = last = 0.0
        for blk in blocks:
            steps = blk.steps()
            per_step = blk.cycles_per_step()
            compute += steps * per_step
            bounds = [lp.bound for lp in blk.outer]
            blk_beats = 0.0
            fires_total = 0
            for xf in (blk.ld_w, blk.ld_i, blk.st):
                fires = math.prod(bounds[: xf.level]) if xf.level else 1
                per = xf.bursts * (math.ceil(xf.length / db) + (0.5 if xf.length % db else 0.0)) + 2
                blk_beats += fires * per
                fires_total += fires
                if xf is blk.st:
                    last = per
                elif blk is blocks[0]:
                    first += per
            beats += blk_beats
            mem_step = blk_beats / steps + lat * min(1.0, fires_total / steps)
            total += steps * max(per_step, mem_step)
        return {"compute": compute, "beats": beats, "total": total + first + lat + last}


def plan_conv(
    cfg: BitFusionConfig,
    prec: Precision,
    p: ConvProblem,
    obits: int = 32,
    o_shift: int = 0,
    o_signed: bool = True,
    tiling: Tiling | None = None,
    base: int = 0,
    out: OutLayout | None = None,
) -> Plan:
    """Choose the tiling with the lowest estimated total and build the block program.

    Weights, activations and outputs get consecutive 4 KiB-aligned DRAM regions from `base`; `out`
    sends the outputs elsewhere (they then take no region here).
    """
    g = geometry(cfg, prec, p, obits)
    if out is not None and g.n_oc * g.eb > out.pix:
        raise ConfigError(
            f"its {g.n_oc * cfg.cols} output channels (padded to M) take {g.n_oc * g.eb} bytes per pixel, "
            f"the output layout has {out.pix} (the next layer pads its input channels less)"
        )
    bld = _Builder(cfg, prec, p, g, o_shift, o_signed, (out.pix, out.row, out.image) if out else None)
    w_base = base
    candidates = [tiling] if tiling else list(_candidates(cfg, p, g))
    best: tuple[tuple[float, float], Tiling, list[Block], dict[str, float]] | None = None
    for t in candidates:
        if not bld.fits(t):
            continue
        blocks = bld.blocks(t, 0, 0, 0)
        if len(blocks) > MAX_BLOCKS:
            continue
        est = bld.estimate(blocks)
        key = (est["total"], est["beats"])
        if best is None or key < best[0]:
            best = (key, t, blocks, est)
    if best is None:
        raise LayerFitError(
            f"no tiling of {p} at {prec.abits}/{prec.wbits} bit fits the buffers of {cfg.name} "
            f"(WBUF {cfg.wb_half} B per unit and half, IBUF {cfg.ib_half} B per row and half, "
            f"OBUF {cfg.ob_entries} entries per column and half)"
        )
    _, t, _, est = best
    wt = bld.weight_tile_bytes(t)
    nkh, nic = p.kernel // t.kht, g.cg // t.cgt
    w_bytes = g.n_oc * wt * (1 if t.resident else nkh * nic)
    i_base = _align(w_base + w_bytes)
    i_bytes = p.batch * p.h_in * p.w_in * g.pix_in
    if out is None:
        o_base = _align(i_base + i_bytes)
        o_bytes = p.batch * p.h_out * p.w_out * g.pix_out
    else:
        o_base, o_bytes = out.base, 0
    end = max(o_base + o_bytes, i_base + i_bytes)
    if end > cfg.mem_bytes:
        raise LayerFitError(f"{p} needs {end:,} bytes of DRAM; the model of {cfg.name} has {cfg.mem_bytes:,}")
    blocks = bld.blocks(t, w_base, i_base, o_base)
    assert len(blocks[0].outer) == NO and len(blocks[0].inner) == NI
    return Plan(cfg, p, prec, g, t, blocks, w_base, i_base, o_base, w_bytes, i_bytes, o_bytes, est)


@dataclass
class NetworkPlan:
    """A whole network as one program: the layers' plans and their blocks, in order."""

    plans: list[Plan]
    blocks: list[Block]
    first_block: list[int]  # index of each layer's first block in `blocks`


def network_regions(cfg: BitFusionConfig, sizes: list[int], reuse: bool) -> list[int]:
    """DRAM base of each layer's regions: consecutive, aligned to 4 KiB and to the DRAM beat (so each
    layer's transfers split into beats exactly as in a run of the layer alone).

    With `reuse` (timing runs: the values in DRAM do not matter) a layer that no longer fits starts
    again at 0; otherwise the network must fit the DRAM model.
    """
    align = math.lcm(4096, cfg.beat_bytes)
    bases, cur = [], 0
    for i, size in enumerate(sizes):
        base = (cur + align - 1) // align * align
        if base + size > cfg.mem_bytes and reuse:
            base = 0
        if base + size > cfg.mem_bytes:
            raise LayerFitError(
                f"network: layer {i} needs DRAM up to {base + size:,} bytes; the model of {cfg.name} has "
                f"{cfg.mem_bytes:,} (a run with data keeps every layer's regions)"
            )
        bases.append(base)
        cur = base + size
    return bases


def link_network(plans: list[Plan]) -> NetworkPlan:
    """One program of every layer's blocks; the first block of each layer after the first gets the
    `sync` barrier (its activations are what the layer before it stores)."""
    blocks: list[Block] = []
    first: list[int] = []
    for i, plan in enumerate(plans):
        first.append(len(blocks))
        for j, b in enumerate(plan.blocks):
            blocks.append(replace(b, sync=True) if i > 0 and j == 0 else b)
    if len(blocks) > MAX_BLOCKS:
        raise LayerFitError(
            f"network: {len(plans)} layers need {len(blocks)} blocks; the Bit Fusion block table holds {MAX_BLOCKS}"
        )
    return NetworkPlan(plans, blocks, first)


def _candidates(cfg: BitFusionConfig, p: ConvProblem, g: Geometry):
    ob = cfg.ob_entries
    pix_tiles: set[tuple[int, int, int]] = set()
    img = p.h_out * p.w_out
    if img <= ob:
        for bt in range(1, min(p.batch, ob // img) + 1):
            pix_tiles.add((bt, p.h_out, p.w_out))
    if p.w_out <= ob:
        for oht in range(1, min(p.h_out, ob // p.w_out) + 1):
            pix_tiles.add((1, oht, p.w_out))
    for owt in range(1, min(p.w_out, ob) + 1):
        pix_tiles.add((1, 1, owt))
    orders = ["oc_outer", "px_outer"] if g.n_oc > 1 else ["oc_outer"]
    for bt, oht, owt in sorted(pix_tiles):
        for kht in _divisors(p.kernel):
            for cgt in _divisors(g.cg):
                whole = kht == p.kernel and cgt == g.cg
                for resident in [False] if whole else [True, False]:
                    for order in orders:
                        yield Tiling(bt, oht, owt, kht, cgt, resident, order)


# ------------------------------------------------------------------------------------------------
# operand images


def pack_lanes(vals: np.ndarray, bits: int) -> np.ndarray:
    """Pack the last axis of integer `vals` at `bits` per value (two's complement), little-endian."""
    v = (np.asarray(vals, dtype=np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    per = 8 // bits
    if v.shape[-1] % per:
        raise ValueError(f"{v.shape[-1]} values do not fill whole bytes at {bits} bits")
    v = v.reshape(*v.shape[:-1], v.shape[-1] // per, per)
    out = np.zeros(v.shape[:-1], dtype=np.uint8)
    for j in range(per):
        out |= v[..., j] << (j * bits)
    return out


def unpack_lanes(raw: np.ndarray, bits: int, signed: bool, count: int) -> np.ndarray:
    if bits == 32:
        v = raw.view("<u4").astype(np.int64)
        return np.where(v >= 1 << 31, v - (1 << 32), v)[..., :count] if signed else v[..., :count]
    if bits == 16:
        v = raw.view("<u2").astype(np.int64)
    else:
        per = 8 // bits
        v = np.stack([(raw >> (j * bits)) & ((1 << bits) - 1) for j in range(per)], axis=-1)
        v = v.reshape(*raw.shape[:-1], raw.shape[-1] * per).astype(np.int64)
    if signed:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return v[..., :count]


def activation_image(plan: Plan, x: np.ndarray) -> np.ndarray:
    """x: [B, h_in, w_in, C_in] integers (already spatially padded) -> DRAM bytes."""
    p, g, pr = plan.problem, plan.geometry, plan.precision
    if x.shape != (p.batch, p.h_in, p.w_in, p.c_in):
        raise ValueError(f"activations of shape {x.shape}, expected {(p.batch, p.h_in, p.w_in, p.c_in)}")
    xp = np.zeros((p.batch, p.h_in, p.w_in, g.c_pad), dtype=np.int64)
    xp[..., : p.c_in] = x
    return pack_lanes(xp, pr.a_lane).reshape(-1)


def weight_image(plan: Plan, w: np.ndarray) -> np.ndarray:
    """w: dense [C_out, C_in, k, k] or depthwise [C, k, k] integers -> the pre-tiled WBUF stream.

    Fusion unit (r, c) of oc tile T at channel group gi holds weights for output channel T*M + c and
    input channels (gi*R + r)*pf + j, j < pf (rows r >= R hold zeros). Depthwise: the same, with the
    input channels offset by T*M and only the diagonal (input channel == output channel) nonzero.
    """
    p, g, pr, t = plan.problem, plan.geometry, plan.precision, plan.tiling
    n_rows, m = plan.cfg.rows, plan.cfg.cols
    k, pf, r_used = p.kernel, pr.pf, g.rows_used
    want = (p.c_out, k, k) if p.depthwise else (p.c_out, p.c_in, k, k)
    if w.shape != want:
        raise ValueError(f"weights of shape {w.shape}, expected {want}")
    oc = np.arange(g.n_oc)[:, None] * m + np.arange(m)[None, :]  # [T, M]
    rr = np.arange(n_rows)
    chl = (np.arange(g.cg)[:, None, None] * r_used + rr[None, :, None]) * pf + np.arange(pf)  # [Cg, N, pf]
    row_ok = (rr < r_used)[None, :, None]  # [1, N, 1]
    if p.depthwise:
        wpad = np.zeros((g.n_oc * m, k, k), dtype=np.int64)
        wpad[: p.c_out] = w
        hit = (chl[None, None] == np.arange(m)[None, :, None, None, None]) & row_ok[None, None]
        hit = hit & (oc < p.c_out)[:, :, None, None, None]  # [T, M, Cg, N, pf]
        wf = np.where(hit[..., None, None], wpad[oc][:, :, None, None, None], 0)
    else:
        wpad = np.zeros((g.n_oc * m, g.c_pad, k, k), dtype=np.int64)
        wpad[: p.c_out, : p.c_in] = w
        gathered = wpad[oc][:, :, np.where(row_ok, chl, 0)]  # [T, M, Cg, N, pf, k, k]
        wf = np.where(row_ok[None, None, ..., None, None], gathered, 0)
    if t.resident:
        arr = wf.transpose(0, 5, 6, 2, 3, 1, 4)  # [T, kh, kw, Cg, N, M, pf]
    else:
        nkh, nic = k // t.kht, g.cg // t.cgt
        arr = wf.reshape(g.n_oc, m, nic, t.cgt, n_rows, pf, nkh, t.kht, k)
        arr = arr.transpose(0, 6, 2, 7, 8, 3, 4, 1, 5)  # [T, nkh, nic, kht, kw, cgt, N, M, pf]
    return pack_lanes(np.ascontiguousarray(arr), pr.w_lane).reshape(-1)


def decode_output(plan: Plan, raw: np.ndarray, signed: bool = True) -> np.ndarray:
    """DRAM bytes of the output -> [B, h_out, w_out, C_out] integers."""
    p, g = plan.problem, plan.geometry
    arr = np.asarray(raw, dtype=np.uint8).reshape(p.batch, p.h_out, p.w_out, g.pix_out)
    return unpack_lanes(np.ascontiguousarray(arr), g.obits, signed, g.n_oc * plan.cfg.cols)[..., : p.c_out]


# ------------------------------------------------------------------------------------------------
# numpy references


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, h_out: int, w_out: int, depthwise: bool) -> np.ndarray:
    """Integer convolution of padded NHWC `x` with [C_out, C_in, k, k] (or depthwise [C, k, k]) `w`."""
    k = w.shape[-1]
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    b = x.shape[0]
    cols = np.empty((b, h_out, w_out, k, k, x.shape[3]), dtype=np.int64)
    for kh in range(k):
        for kw in range(k):
            cols[:, :, :, kh, kw, :] = x[
                :, kh : kh + (h_out - 1) * stride + 1 : stride, kw : kw + (w_out - 1) * stride + 1 : stride, :
            ]
    if depthwise:
        return np.einsum("bhwijc,cij->bhwc", cols, w)
    return np.einsum("bhwijc,ocij->bhwo", cols, w)


def requant_reference(acc: np.ndarray, shift: int, bits: int, signed: bool) -> np.ndarray:
    y = np.asarray(acc, dtype=np.int64) >> shift
    if bits >= 32:
        return y
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return np.clip(y, lo, hi)


def describe_plan(plan: Plan) -> dict[str, Any]:
    t = plan.tiling
    return {
        "tiling": {
            "images": t.bt,
            "out_rows": t.oht,
            "out_cols": t.owt,
            "kernel_rows": t.kht,
            "channel_groups": t.cgt,
            "weights_resident": t.resident,
            "order": t.order,
        },
        "blocks": len(plan.blocks),
        "rows_used": plan.geometry.rows_used,
        "estimate": plan.estimate,
    }
