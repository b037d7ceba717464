"""Mapping conv, depthwise conv and FC layers onto GEMMs for the BISMO overlay.

- conv (groups = 1): im2col. LHS = weights, Cout x (k*k*Cin); RHS rows = output pixels of the
  whole batch, each the (ky, kx, c)-ordered input patch; C = Cout x (B*Ho*Wo).
- FC: a 1x1 conv on a 1x1 input; N = batch.
- depthwise (groups = Cin = Cout): channels are processed in groups of g <= DM. One GEMM per group
  with a block-diagonal LHS: row i holds channel i's k*k weights in columns i*k*k .. (i+1)*k*k - 1,
  zeros elsewhere; RHS row = pixel, the concatenated k*k patches of the group's g channels. Every
  DPU row then sees only its own channel's patch, so each output row is one channel. g is chosen
  to minimise ceil(C/g) * ceil(g*k*k/DK) (DPA passes per pixel tile), e.g. 8 channels x 3x3 = 72
  bits fit one 256-bit word: a 3x3 depthwise layer costs ceil(C/8) x ceil(N/DN) x wbits x abits
  cycles on 8x8x256 instead of C x ceil(N/DN) x wbits x abits with one channel per GEMM.

Padding is "same" ((k-1)/2, zeros) when that reproduces the layer's output size, else none.
Activations are channels last: (batch, H, W, C); weights (Cout, k, k, Cin/groups).
"""

from __future__ import annotations

import numpy as np

from hil.errors import ConfigError
from hil.rtl.bismo.pack import ceil_div
from hil.rtl.layer_geometry import ConvGeometry, geometry  # noqa: F401  (re-exported: L.geometry)


def depthwise_group(channels: int, k: int, dm: int, dk: int) -> int:
    """Channels per depthwise GEMM: fewest DPA passes, then the largest group."""
    best = min(range(1, min(dm, channels) + 1), key=lambda g: (ceil_div(channels, g) * ceil_div(g * k * k, dk), -g))
    return best


def gemm_shapes(geo: ConvGeometry, dm: int, dk: int) -> list[tuple[int, int, int]]:
    """The (M, K, N) of each GEMM a layer becomes."""
    if not geo.depthwise:
        return [(geo.cout, geo.k * geo.k * geo.cin, geo.pixels)]
    g = depthwise_group(geo.cin, geo.k, dm, dk)
    return [(min(g, geo.cin - c0), min(g, geo.cin - c0) * geo.k * geo.k, geo.pixels) for c0 in range(0, geo.cin, g)]


def patches(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """(B*Ho*Wo, k, k, C) input windows, zero padded."""
    b = x.shape[0]
    p = geo.pad
    xp = np.zeros((b, geo.h + 2 * p, geo.w + 2 * p, geo.cin), dtype=np.int64)
    xp[:, p : p + geo.h, p : p + geo.w, :] = x
    out = np.empty((b, geo.ho, geo.wo, geo.k, geo.k, geo.cin), dtype=np.int64)
    s = geo.stride
    for ky in range(geo.k):
        for kx in range(geo.k):
            out[:, :, :, ky, kx, :] = xp[:, ky : ky + s * (geo.ho - 1) + 1 : s, kx : kx + s * (geo.wo - 1) + 1 : s, :]
    return out.reshape(b * geo.ho * geo.wo, geo.k, geo.k, geo.cin)


def gemm_operands(
    x: np.ndarray, wt: np.ndarray, geo: ConvGeometry, dm: int, dk: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LHS M x K, RHS-transposed N x K) of each GEMM of the layer, matching `gemm_shapes`."""
    expect_w = (geo.cout, geo.k, geo.k, 1 if geo.depthwise else geo.cin)
    if tuple(x.shape) != (geo.batch, geo.h, geo.w, geo.cin):
        raise ConfigError(f"activations have shape {tuple(x.shape)}, expected {(geo.batch, geo.h, geo.w, geo.cin)}")
    if tuple(wt.shape) != expect_w:
        raise ConfigError(f"weights have shape {tuple(wt.shape)}, expected {expect_w}")
    pt = patches(x, geo)
    k2 = geo.k * geo.k
    if not geo.depthwise:
        return [(wt.reshape(geo.cout, -1).astype(np.int64), pt.reshape(geo.pixels, -1))]
    out = []
    c0 = 0
    for m, _, _ in gemm_shapes(geo, dm, dk):
        lhs = np.zeros((m, m * k2), dtype=np.int64)
        rhs = np.empty((geo.pixels, m * k2), dtype=np.int64)
        for i in range(m):
            lhs[i, i * k2 : (i + 1) * k2] = wt[c0 + i, :, :, 0].reshape(-1)
            rhs[:, i * k2 : (i + 1) * k2] = pt[:, :, :, c0 + i].reshape(geo.pixels, k2)
        out.append((lhs, rhs))
        c0 += m
    return out


def assemble_output(results: list[np.ndarray], geo: ConvGeometry) -> np.ndarray:
    """(batch, Ho, Wo, Cout) from the GEMM results (each M x N)."""
    c = np.concatenate(results, axis=0)  # Cout x N (depthwise groups stack in channel order)
    return c.T.reshape(geo.batch, geo.ho, geo.wo, geo.cout)
