"""Encoding of the three 128-bit instruction kinds (bit fields documented in rtl/bismo/sv/*.sv).

Each encoder takes equal-length integer arrays (one element per instruction) and returns an
(n, 4) little-endian uint32 array: word 0 holds bits 31..0.
"""

from __future__ import annotations

import numpy as np

INSTR_BYTES = 16


def _u32(x: np.ndarray | int) -> np.ndarray:
    return np.asarray(x, dtype=np.int64) & 0xFFFFFFFF


def _check(name: str, x: np.ndarray, bits: int) -> None:
    x = np.asarray(x)
    if x.size and (x.min() < 0 or x.max() >= (1 << bits)):
        raise ValueError(f"instruction field {name} out of range for {bits} bits: {x.min()}..{x.max()}")


def fetch(
    dram_addr: np.ndarray,
    stride: np.ndarray,
    beats_per_block: np.ndarray,
    blocks: np.ndarray,
    buf_addr: np.ndarray,
    side: np.ndarray,
    wait_free: np.ndarray,
    send_fill: np.ndarray,
) -> np.ndarray:
    for n, v, b in (("dram_addr", dram_addr, 32), ("stride", stride, 32), ("beats_per_block", beats_per_block, 16),
                    ("blocks", blocks, 16), ("buf_addr", buf_addr, 16)):
        _check(n, v, b)
    out = np.zeros((len(dram_addr), 4), dtype=np.int64)
    out[:, 0] = _u32(dram_addr)
    out[:, 1] = _u32(stride)
    out[:, 2] = _u32(beats_per_block) | (_u32(blocks) << 16)
    out[:, 3] = _u32(buf_addr) | (_u32(side) << 16) | (_u32(wait_free) << 17) | (_u32(send_fill) << 18)
    return out.astype("<u4")


def execute(
    lhs_addr: np.ndarray,
    rhs_addr: np.ndarray,
    num_k: np.ndarray,
    wbits: int,
    abits: int,
    wsigned: bool,
    asigned: bool,
    clear: np.ndarray,
    write: np.ndarray,
    slot: np.ndarray,
    wait_l: np.ndarray,
    wait_r: np.ndarray,
    free_l: np.ndarray,
    free_r: np.ndarray,
    wait_res: np.ndarray,
    send_res: np.ndarray,
) -> np.ndarray:
    for n, v, b in (("lhs_addr", lhs_addr, 16), ("rhs_addr", rhs_addr, 16), ("num_k", num_k, 16)):
        _check(n, v, b)
    if not (1 <= wbits <= 16 and 1 <= abits <= 16):
        raise ValueError("bit widths must be 1..16")
    out = np.zeros((len(lhs_addr), 4), dtype=np.int64)
    out[:, 0] = _u32(lhs_addr) | (_u32(rhs_addr) << 16)
    out[:, 1] = (
        _u32(num_k)
        | ((wbits - 1) << 16)
        | ((abits - 1) << 20)
        | (int(wsigned) << 24)
        | (int(asigned) << 25)
        | (_u32(clear) << 26)
        | (_u32(write) << 27)
        | (_u32(slot) << 28)
        | (_u32(wait_l) << 29)
        | (_u32(wait_r) << 30)
        | (_u32(free_l) << 31)
    )
    out[:, 2] = _u32(free_r) | (_u32(wait_res) << 1) | (_u32(send_res) << 2)
    return out.astype("<u4")


def result(
    dram_addr: np.ndarray, row_stride: np.ndarray, slot: np.ndarray, wait: np.ndarray, send: np.ndarray
) -> np.ndarray:
    _check("dram_addr", dram_addr, 32)
    _check("row_stride", row_stride, 32)
    out = np.zeros((len(dram_addr), 4), dtype=np.int64)
    out[:, 0] = _u32(dram_addr)
    out[:, 1] = _u32(row_stride)
    out[:, 2] = _u32(slot) | (_u32(wait) << 1) | (_u32(send) << 2)
    return out.astype("<u4")
