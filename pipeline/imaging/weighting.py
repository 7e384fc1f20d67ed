"""Imaging weights: natural, uniform and Briggs, from the gridded weight density.

The density is the sum of the visibility weights in each cell of the image's own uv
grid (cell 1 / (npix · pixsize) wavelengths, npix² cells), with (u, v) and (-u, -v)
folded onto one cell as WSClean does (a visibility and its conjugate are one measurement).
Then, with w_i a visibility's weight and W_k its cell's density (WSClean's and CASA's
definitions):

    natural  w_i
    uniform  w_i / W_k
    Briggs   w_i / (1 + W_k f²),   f² = (5 · 10^-R)² / (sum_k W_k² / sum_i w_i)

Robust R = +2 is close to natural, R = -2 close to uniform. Runs on ``backend.xp``.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.backend import Backend
from pipeline.errors import ContimgError
from pipeline.imaging.gpu_gridding import C_M_S, scatter_add

Scheme = Literal["natural", "uniform", "briggs"]


class WeightingError(ContimgError):
    """Imaging weights cannot be formed as asked."""

    def __init__(self, problem: str, remedy: str):
        super().__init__(f"imaging weights: {problem}; {remedy}")


#: rows per block when forming cell indices (bounds the float64 temporaries)
ROW_BLOCK = 8192


def _cells(backend: Backend, uvw: Any, freq: Any, npix: int, pixsize_rad: float) -> Any:
    """(nrow, nchan) int32 flat cell index on the folded npix × npix uv grid."""
    xp = backend.xp
    uvw = xp.asarray(uvw, dtype=xp.float64)
    # fold (-u, -v) onto (u, v), a visibility and its conjugate filling one cell: per row,
    # since frequency does not change the sign of u; on the u = 0 line by |v| below
    flip = (uvw[:, 0] < 0) | ((uvw[:, 0] == 0) & (uvw[:, 1] < 0))
    sign = xp.where(flip, -1.0, 1.0)
    # cells in float32: |u| ≤ npix/2 cells is exact to 1e-3 of a cell, and half the
    # memory traffic of float64 over 84 M visibilities
    u_row = (uvw[:, 0] * sign).astype(xp.float32)[:, None]
    v_row = (uvw[:, 1] * sign).astype(xp.float32)[:, None]
    scale = (xp.asarray(freq, dtype=xp.float64) * (npix * pixsize_rad / C_M_S)
             ).astype(xp.float32)[None, :]
    nrow, half = uvw.shape[0], npix // 2
    # the largest |u|, |v| cell is at the largest |u|, |v| and frequency: one check
    if nrow and (float(xp.rint(xp.abs(u_row).max() * scale.max())) >= half
                 or float(xp.rint(xp.abs(v_row).max() * scale.max())) >= half):
        raise WeightingError(f"visibilities fall outside the {npix}² uv grid of "
                             f"{pixsize_rad:.3g} rad pixels", "use smaller pixels")
    cells = xp.empty((nrow, scale.shape[1]), dtype=xp.int32)
    for r0 in range(0, nrow, ROW_BLOCK):
        rows = slice(r0, r0 + ROW_BLOCK)
        u = xp.rint(u_row[rows] * scale).astype(xp.int32)
        v = xp.rint(v_row[rows] * scale).astype(xp.int32)
        v = xp.where(u == 0, xp.abs(v), v)
        v %= npix
        u *= npix
        u += v
        cells[rows] = u
    return cells


def weight_density(*, uvw: Any, freq: Any, weight: Any, npix: int, pixsize_rad: float,
                   backend: Backend) -> tuple[Any, Any]:
    """Gridded weights: (npix²,) float64 density W and (nrow, nchan) int32 cell per visibility."""
    xp = backend.xp
    cells = _cells(backend, uvw, freq, npix, pixsize_rad)
    density = xp.zeros(npix * npix, dtype=xp.float64)
    # float64 sums; the values converted a block of rows at a time (a whole float64 copy
    # is 670 MB on a full-size chunk, and scatter-adding float32 into float64 directly
    # is 6x slower in NumPy)
    weight = xp.asarray(weight, dtype=xp.float32)
    for r0 in range(0, weight.shape[0], 8 * ROW_BLOCK):
        rows = slice(r0, r0 + 8 * ROW_BLOCK)
        scatter_add(backend, density, cells[rows].ravel(),
                    weight[rows].astype(xp.float64).ravel())
    return density, cells


def imaging_weights(*, uvw: Any, freq: Any, weight: Any, npix: int, pixsize_rad: float,
                    scheme: Scheme = "briggs", robust: float = 0.0,
                    backend: Backend) -> Any:
    """Imaging weights (nrow, nchan) float32 of the backend.

    uvw (nrow, 3) float64 metres; freq (nchan,) float64 Hz; weight (nrow, nchan) float32
    visibility weights (0 = flagged, stays 0); npix, pixsize_rad: the image's size and
    pixel, which set the uv cell. ``scheme`` natural, uniform or briggs (``robust`` R).
    """
    xp = backend.xp
    w = xp.asarray(weight, dtype=xp.float32)
    if scheme == "natural":
        return w.copy()
    if scheme not in ("uniform", "briggs"):
        raise WeightingError(f"unknown scheme {scheme!r}", "use natural, uniform or briggs")
    density, cells = weight_density(uvw=uvw, freq=freq, weight=w, npix=npix,
                                    pixsize_rad=pixsize_rad, backend=backend)
    # the factor is formed per cell (npix², float32) and then gathered once per
    # visibility: one float32 lookup instead of float64 arithmetic per visibility
    occupied = density > 0
    if scheme == "uniform":
        factor = xp.where(occupied, 1.0 / xp.where(occupied, density, 1.0), 0.0)
    else:
        total = float(xp.sum(density))
        if total <= 0:
            return xp.zeros_like(w)
        f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (float(xp.sum(density * density)) / total)
        factor = 1.0 / (1.0 + density * f2)
    return w * factor.astype(xp.float32)[cells]
