"""Operand layout in DRAM: bit-plane major, DK-bit words, rows padded to DM (LHS) or DN (RHS).

An operand matrix X (R rows x K) at `bits` bits becomes blocks of D rows (D = DM for the LHS, DN
for the RHS, rows padded with zeros to a multiple of D): block b holds, for bit plane p (0 = least
significant), word w (K padded to a multiple of DK) and row r, the DK bits X[b*D + r, w*DK : (w+1)*DK]
of plane p, least significant bit first. Byte order in DRAM is [block][plane][word][row][DK/8], so
the fetch stage deals consecutive words round-robin to consecutive row buffers, and a block's planes
are equally strided (one 2-D strided fetch per block or K chunk).

Signed operands are stored in two's complement; the execute stage gives the top plane weight -2^(b-1).
"""

from __future__ import annotations

import numpy as np


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pack_operand(x: np.ndarray, bits: int, d: int, dk: int) -> np.ndarray:
    """uint8 image of an (R x K) integer matrix, laid out as described above."""
    r, k = x.shape
    rt, kw = ceil_div(r, d), ceil_div(k, dk)
    u = np.zeros((rt * d, kw * dk), dtype=np.uint16)
    u[:r, :k] = (x.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint16)
    planes = ((u[None, :, :] >> np.arange(bits, dtype=np.uint16)[:, None, None]) & 1).astype(np.uint8)
    planes = planes.reshape(bits, rt, d, kw, dk).transpose(1, 0, 3, 2, 4)
    return np.packbits(planes, axis=-1, bitorder="little").reshape(-1)


def operand_bytes(rows: int, k: int, bits: int, d: int, dk: int) -> int:
    return ceil_div(rows, d) * d * bits * ceil_div(k, dk) * dk // 8
