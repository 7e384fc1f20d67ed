"""The GPU gridder and degridder, written with ``backend.xp`` only (CuPy, or NumPy in tests).

Same numbers as ducc0's ``wgridder.experimental`` (see gridding.py for the conventions),
by the same method: convolutional gridding with an exponential-of-semicircle (ES) kernel
on a 2× oversampled uv grid, w-stacking with the ES kernel along w too (the "improved
w-stacking" of Ye et al. 2021 and Arras et al. 2021, which ducc0 uses), FFTs through
``xp.fft``, and a gridding correction that divides by the kernels' Fourier transforms.

    vis2dirty:  I(l, m) = Re sum_k wgt_k V_k exp(+2 pi i (u l + v m - w (n - 1))) / n
    dirty2vis:  V_k = wgt_k sum_lm I(l, m) / n exp(-2 pi i (u l + v m - w (n - 1)))

(u, v, w in wavelengths; without w-gridding, w and the 1/n are left out, as in ducc0).
With n - 1 = x_c + x' (x_c the middle of its range over the image) the factor
exp(-2 pi i w x_c) is applied per visibility, and exp(-2 pi i w x') is split over w planes
w_p = w_0 + p dw as ``sum_p psi((w - w_p)/dw) exp(-2 pi i w_p x') / psi_hat(dw x')``,
exact to the kernel's accuracy while dw |x'| <= 1/(2 sigma_w). The w planes are
oversampled more (sigma_w = 6) than the uv grid (sigma = 2) so that the w kernel is
narrower (5 planes per visibility instead of 7 at epsilon 1e-5): each visibility costs
W² adds on every plane it touches, a plane one FFT, and for a full-size chunk (84 M
visibilities, ~10 planes of 8192²) the adds should outweigh the FFTs (an estimate: no
GPU was at hand to measure it when this was written).

Grids and FFTs are complex64 (DESIGN: float32 for gridding and FFTs); uv positions and
phases are formed in float64 because they reach thousands of cells and radians.
Scatter-add is ``cupyx.scatter_add`` on the GPU and ``numpy.add.at`` on the host, into
a float32 view of the complex grid (real and imaginary parts as separate adds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import Backend
from pipeline.errors import ContimgError

C_M_S = 299_792_458.0

#: uv-grid oversampling: grid side = OVERSAMPLING × image side
OVERSAMPLING = 2.0

#: w-plane oversampling: more, closer planes let the w kernel be narrower, and every
#: visibility is gridded once per plane its w kernel covers (the gridder's main cost)
W_OVERSAMPLING = 6.0

#: visibilities per scatter/gather chunk: chunk × support² complex entries in flight
#: (2^18 × 64 × (8 + 8) B ≈ 270 MB at support 8)
CHUNK = 1 << 18


class GriddingError(ContimgError):
    """Visibilities or an image that the GPU gridder cannot handle as asked."""

    def __init__(self, problem: str, remedy: str):
        super().__init__(f"GPU gridder: {problem}; {remedy}")


@dataclass(frozen=True, kw_only=True)
class ESKernel:
    """Exponential of semicircle, ``exp(beta (sqrt(1 - (2t/W)^2) - 1))`` for |t| < W/2.

    support : W, in grid cells; beta : shape parameter (2.3 W suits 2× oversampling).
    """

    support: int
    beta: float

    @classmethod
    def for_epsilon(cls, epsilon: float, oversampling: float = 2.0) -> ESKernel:
        """The kernel reaching relative accuracy ``epsilon`` at this oversampling.

        One cell is added to the rule's support: alone, it falls short at sigma = 2
        (measured: support 6 errs by 2e-5, 7 by 3e-6) and, for the w kernel at sigma = 6,
        at ε 1e-3 and 1e-4 (2.2e-3 and 1.5e-4 L2 against ducc0 at 1e-6; with the extra
        cell 1.6e-4, 7e-6 and, at 1e-5, 1.3e-6).
        """
        # ES error falls as exp(-pi W sqrt(1 - 1/sigma)) (Barnett et al. 2019)
        digits = math.pi * math.sqrt(1.0 - 1.0 / oversampling) / math.log(10.0)
        rule = math.ceil(math.log10(1.0 / epsilon) / digits)
        support = int(min(16, max(3, rule + 1)))
        # beta as FINUFFT chooses it: 2.30 W at sigma = 2
        beta = 0.97 * math.pi * support * (1.0 - 0.5 / oversampling)
        return cls(support=support, beta=beta)

    def evaluate(self, xp: Any, t: Any) -> Any:
        """Kernel values at offsets ``t`` (cells, any shape) as float32."""
        z = xp.asarray(t, dtype=xp.float32) * xp.float32(2.0 / self.support)
        arg = xp.maximum(xp.float32(1.0) - z * z, xp.float32(0.0))
        val = xp.exp(xp.float32(self.beta) * (xp.sqrt(arg) - xp.float32(1.0)))
        return xp.where(xp.abs(z) < 1.0, val, xp.float32(0.0)).astype(xp.float32, copy=False)

    def fourier(self, s: np.ndarray) -> np.ndarray:
        """``int psi(t) cos(2 pi t s) dt`` at frequencies ``s`` (cycles per cell), float64."""
        s = np.abs(np.asarray(s, np.float64))
        grid, table = self.fourier_table(float(s.max()) if s.size else 0.0)
        return np.interp(s, grid, table)

    def fourier_table(self, smax: float, n: int = 8193) -> tuple[np.ndarray, np.ndarray]:
        """The transform on ``n`` points of [0, smax], for linear interpolation.

        Gauss–Legendre quadrature; the transform is smooth, so interpolating the table
        errs by ~1e-10, far below the kernel's own error.
        """
        grid = np.linspace(0.0, max(smax, 1e-12), n)
        nodes, weights = np.polynomial.legendre.leggauss(256)
        t = 0.5 * self.support * nodes
        psi = np.exp(self.beta * (np.sqrt(np.maximum(1.0 - nodes * nodes, 0.0)) - 1.0))
        table = (0.5 * self.support) * (np.cos(2 * np.pi * np.outer(grid, t)) @ (weights * psi))
        return grid, table


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """Geometry of one gridding: grid size, kernel and w planes."""

    npix: int
    nu: int
    pixsize: float
    kernel: ESKernel
    do_w: bool
    w_kernel: ESKernel | None = None
    x_c: float = 0.0      # middle of n - 1 over the image
    dw: float = 1.0       # w-plane spacing, wavelengths
    w0: float = 0.0       # w of plane 0
    nw: int = 1


def _n_minus_1(xp: Any, npix: int, pixsize: float) -> Any:
    """(npix, npix) float64 n - 1 over the image, on the backend."""
    ell = (xp.arange(npix, dtype=xp.float64) - npix // 2) * pixsize
    r2 = ell[:, None] ** 2 + ell[None, :] ** 2
    # written so that it stays accurate near the phase centre
    return -r2 / (xp.sqrt(1.0 - r2) + 1.0)


def _plan(*, npix: int, pixsize: float, w: Any, do_w: bool, epsilon: float,
          backend: Backend) -> _Plan:
    if npix < 16 or npix % 2:
        raise GriddingError(f"npix = {npix}", "use an even image size of at least 16")
    kernel = ESKernel.for_epsilon(epsilon)
    nu = 2 * int(math.ceil(OVERSAMPLING * npix / 2))
    if not do_w:
        return _Plan(npix=npix, nu=nu, pixsize=pixsize, kernel=kernel, do_w=False)
    # n - 1 is 0 at the centre pixel and least at the corner (-npix/2, -npix/2)
    r2 = 2.0 * (npix // 2 * pixsize) ** 2
    if r2 >= 1.0:
        raise GriddingError(f"a {npix}² image of {pixsize:.3g} rad pixels reaches beyond "
                            "the horizon", "use fewer or smaller pixels")
    xmin, xmax = -r2 / (math.sqrt(1.0 - r2) + 1.0), 0.0
    x_c = 0.5 * (xmin + xmax)
    half = 0.5 * (xmax - xmin)
    wmin = float(backend.xp.min(w)) if w.size else 0.0
    wmax = float(backend.xp.max(w)) if w.size else 0.0
    # planes dw apart keep dw |x'| <= 1 / (2 sigma), the band the kernel is built for
    w_kernel = ESKernel.for_epsilon(epsilon, W_OVERSAMPLING)
    dw = 1.0 / (2.0 * W_OVERSAMPLING * max(half, 1e-12))
    half_support = 0.5 * w_kernel.support
    w0 = wmin - half_support * dw
    nw = int(math.ceil((wmax - w0) / dw + half_support)) + 1
    return _Plan(npix=npix, nu=nu, pixsize=pixsize, kernel=kernel, do_w=True,
                 w_kernel=w_kernel, x_c=x_c, dw=dw, w0=w0, nw=nw)


def _coords(backend: Backend, uvw: Any, freq: Any, plan: _Plan, keep: Any
            ) -> tuple[Any, Any, Any]:
    """Flat (u, v, w) of the kept visibilities: u, v in grid cells, w in wavelengths."""
    xp = backend.xp
    uvw = xp.asarray(uvw, dtype=xp.float64)
    scale = xp.asarray(freq, dtype=xp.float64) / C_M_S                      # (nchan,)
    rows, chans = keep
    cell = plan.nu * plan.pixsize
    u = uvw[rows, 0] * scale[chans] * cell
    v = uvw[rows, 1] * scale[chans] * cell
    w = uvw[rows, 2] * scale[chans]
    limit = 0.5 * plan.nu - 0.5 * plan.kernel.support - 1
    if u.size:
        reach = float(xp.max(xp.maximum(xp.abs(u), xp.abs(v))))
        if reach > limit:
            raise GriddingError(
                f"a visibility lies {reach:.0f} cells from the uv origin, beyond the "
                f"{plan.nu}² grid's {limit:.0f}", "use smaller pixels (a finer cell)")
    return u, v, w


def _support_offsets(xp: Any, pos: Any, kernel: ESKernel) -> tuple[Any, Any]:
    """First cell index (int64) and (N, W) kernel weights for positions ``pos`` (cells)."""
    first = xp.ceil(pos - 0.5 * kernel.support).astype(xp.int64)
    steps = xp.arange(kernel.support, dtype=xp.int64)
    # the offset is formed in float64 (pos reaches thousands of cells), then the kernel
    # is evaluated in float32: its values err by ~1e-6, well inside the tolerance
    offsets = ((first[:, None] + steps[None, :]).astype(xp.float64)
               - pos[:, None]).astype(xp.float32)
    return first, kernel.evaluate(xp, offsets)


def scatter_add(backend: Backend, target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices summed, on either backend."""
    if backend.name == "gpu":
        import cupyx  # noqa: PLC0415 — only on the GPU backend
        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def _cell_index(xp: Any, first_u: Any, first_v: Any, nu: int, support: int) -> Any:
    """(N, W, W) flat indices into an (nu, nu) grid, wrapped periodically.

    int32 while twice the grid's cells fit (grids up to 32768²): half the memory traffic
    of int64 in the scatter, which is the gridder's cost.
    """
    itype = xp.int32 if 2 * nu * nu < 2**31 else xp.int64
    steps = xp.arange(support, dtype=xp.int64)
    iu = ((first_u[:, None] + steps[None, :]) % nu).astype(itype)
    iv = ((first_v[:, None] + steps[None, :]) % nu).astype(itype)
    return iu[:, :, None] * itype(nu) + iv[:, None, :]


def _grid(backend: Backend, plan: _Plan, u: Any, v: Any, vals: Any) -> Any:
    """(nu, nu) complex64 grid of complex64 ``vals`` at cells (u, v)."""
    xp = backend.xp
    nu, support = plan.nu, plan.kernel.support
    flat = xp.zeros(2 * nu * nu, dtype=xp.float32)  # interleaved re, im: a complex64 view
    for c0 in range(0, u.shape[0], CHUNK):
        cu, cv, cval = u[c0:c0 + CHUNK], v[c0:c0 + CHUNK], vals[c0:c0 + CHUNK]
        fu, ku = _support_offsets(xp, cu, plan.kernel)
        fv, kv = _support_offsets(xp, cv, plan.kernel)
        idx = 2 * _cell_index(xp, fu, fv, nu, support).ravel()
        contrib = (cval[:, None, None] * (ku[:, :, None] * kv[:, None, :])).ravel()
        scatter_add(backend, flat, idx, xp.ascontiguousarray(contrib.real))
        scatter_add(backend, flat, idx + 1, xp.ascontiguousarray(contrib.imag))
    return flat.view(xp.complex64).reshape(nu, nu)


def _degrid(backend: Backend, plan: _Plan, grid: Any, u: Any, v: Any) -> Any:
    """(N,) complex64: the grid interpolated at cells (u, v) with the kernel (adjoint of _grid)."""
    xp = backend.xp
    nu, support = plan.nu, plan.kernel.support
    flat = grid.ravel()
    out = xp.empty(u.shape[0], dtype=xp.complex64)
    for c0 in range(0, u.shape[0], CHUNK):
        cu, cv = u[c0:c0 + CHUNK], v[c0:c0 + CHUNK]
        fu, ku = _support_offsets(xp, cu, plan.kernel)
        fv, kv = _support_offsets(xp, cv, plan.kernel)
        cells = flat[_cell_index(xp, fu, fv, nu, support)]               # (n, W, W)
        out[c0:c0 + CHUNK] = ((cells * kv[:, None, :]).sum(axis=2) * ku).sum(axis=1)
    return out


def _crop_index(npix: int, nu: int) -> np.ndarray:
    """Grid-side indices of the image's pixels: pixel i is at offset i - npix/2, mod nu."""
    return (np.arange(npix) - npix // 2) % nu


def _correction(backend: Backend, plan: _Plan) -> tuple[Any, Any | None]:
    """(npix, npix) float32 divisor of the gridding correction, and x' (float64) if w.

    The divisor is the uv kernel's transform along l and m, and with w-gridding also the
    w kernel's transform at dw x' and n (ducc0's divide_by_n).
    """
    xp = backend.xp
    s = (np.arange(plan.npix) - plan.npix // 2) / plan.nu
    cx = xp.asarray(plan.kernel.fourier(s))
    corr = cx[:, None] * cx[None, :]
    if not plan.do_w:
        return corr.astype(xp.float32), None
    x = _n_minus_1(xp, plan.npix, plan.pixsize)
    xprime = x - plan.x_c
    grid, table = plan.w_kernel.fourier_table(plan.dw * abs(plan.x_c))
    cw = xp.interp(xp.abs(plan.dw * xprime), xp.asarray(grid), xp.asarray(table))
    return (corr * cw * (x + 1.0)).astype(xp.float32), xprime


def _w_planes(backend: Backend, plan: _Plan, w: Any) -> tuple[Any, Any]:
    """Visibility order sorted by w and, per plane, the [lo, hi) range whose support covers it."""
    xp = backend.xp
    order = xp.argsort(w)
    ws = w[order]
    centres = plan.w0 + plan.dw * xp.arange(plan.nw, dtype=xp.float64)
    half = 0.5 * plan.w_kernel.support * plan.dw
    lo = backend.to_host(xp.searchsorted(ws, centres - half, side="left"))
    hi = backend.to_host(xp.searchsorted(ws, centres + half, side="right"))
    return order, np.stack([lo, hi], axis=1)


def _keep(backend: Backend, wgt: Any, vis: Any | None, shape: tuple[int, int]) -> tuple[Any, Any]:
    """(rows, chans) of the visibilities that contribute: weight and value not zero."""
    xp = backend.xp
    if wgt is None:
        mask = xp.ones(shape, dtype=bool)
    else:
        mask = xp.asarray(wgt) != 0
    if vis is not None:
        mask = mask & (xp.asarray(vis) != 0)
    return xp.nonzero(mask)


def vis2dirty(*, uvw: Any, freq: Any, vis: Any, wgt: Any, npix: int, pixsize_rad: float,
              do_wgridding: bool, backend: Backend, epsilon: float = 1e-5) -> Any:
    """Weighted visibilities → unnormalised dirty image, as ducc0's vis2dirty.

    uvw (nrow, 3) float64 metres; freq (nchan,) float64 Hz; vis (nrow, nchan) complex64;
    wgt (nrow, nchan) float32 or None. Returns (npix, npix) float32 of the backend.
    """
    xp = backend.xp
    vis = xp.asarray(vis)
    keep = _keep(backend, wgt, vis, vis.shape)
    values = vis[keep].astype(xp.complex64)
    if wgt is not None:
        values = values * xp.asarray(wgt, dtype=xp.float32)[keep]
    # w is needed for the plan before the cell coordinates can be checked
    w_all = (xp.asarray(uvw, dtype=xp.float64)[keep[0], 2]
             * (xp.asarray(freq, dtype=xp.float64)[keep[1]] / C_M_S))
    plan = _plan(npix=npix, pixsize=pixsize_rad, w=w_all, do_w=do_wgridding,
                 epsilon=epsilon, backend=backend)
    u, v, w = _coords(backend, uvw, freq, plan, keep)
    corr, xprime = _correction(backend, plan)
    crop = xp.asarray(_crop_index(npix, plan.nu))
    if not plan.do_w:
        image = _plane_image(backend, plan, _grid(backend, plan, u, v, values), crop)
        return (image.real / corr).astype(xp.float32)
    values = values * xp.exp(-2j * np.pi * plan.x_c * w).astype(xp.complex64)
    order, ranges = _w_planes(backend, plan, w)
    acc = xp.zeros((npix, npix), dtype=xp.complex64)
    for p, (lo, hi) in enumerate(ranges):
        if hi <= lo:
            continue
        sel = order[lo:hi]
        w_p = plan.w0 + p * plan.dw
        kw = plan.w_kernel.evaluate(xp, (w[sel] - w_p) / plan.dw)
        grid = _grid(backend, plan, u[sel], v[sel], values[sel] * kw)
        screen = xp.exp(-2j * np.pi * w_p * xprime).astype(xp.complex64)
        acc += _plane_image(backend, plan, grid, crop) * screen
    return (acc.real / corr).astype(xp.float32)


def _plane_image(backend: Backend, plan: _Plan, grid: Any, crop: Any) -> Any:
    """(npix, npix) complex64: sum_a G[a] exp(+2 pi i a i'/nu) at the image's pixels."""
    xp = backend.xp
    img = xp.fft.ifft2(grid, norm="forward").astype(xp.complex64, copy=False)
    return img[crop[:, None], crop[None, :]]


def dirty2vis(*, uvw: Any, freq: Any, dirty: Any, wgt: Any | None, pixsize_rad: float,
              do_wgridding: bool, backend: Backend, epsilon: float = 1e-5) -> Any:
    """Image (npix, npix) float32 → visibilities (nrow, nchan) complex64, the adjoint of vis2dirty.

    uvw (nrow, 3) float64 metres; freq (nchan,) float64 Hz; wgt (nrow, nchan) float32 or
    None (multiplies the result; 0 leaves a visibility 0). Returns arrays of the backend.
    """
    xp = backend.xp
    dirty = xp.asarray(dirty, dtype=xp.float32)
    npix = int(dirty.shape[0])
    if dirty.ndim != 2 or dirty.shape[1] != npix:
        raise GriddingError(f"image shape {tuple(dirty.shape)}", "pass a square 2-D image")
    nrow, nchan = int(xp.asarray(uvw).shape[0]), int(xp.asarray(freq).shape[0])
    keep = _keep(backend, wgt, None, (nrow, nchan))
    w_all = (xp.asarray(uvw, dtype=xp.float64)[keep[0], 2]
             * (xp.asarray(freq, dtype=xp.float64)[keep[1]] / C_M_S))
    plan = _plan(npix=npix, pixsize=pixsize_rad, w=w_all, do_w=do_wgridding,
                 epsilon=epsilon, backend=backend)
    u, v, w = _coords(backend, uvw, freq, plan, keep)
    corr, xprime = _correction(backend, plan)
    crop = xp.asarray(_crop_index(npix, plan.nu))
    scaled = (dirty / corr).astype(xp.complex64)
    if not plan.do_w:
        values = _degrid(backend, plan, _plane_grid(backend, plan, scaled, crop), u, v)
    else:
        values = xp.zeros(u.shape[0], dtype=xp.complex64)
        order, ranges = _w_planes(backend, plan, w)
        for p, (lo, hi) in enumerate(ranges):
            if hi <= lo:
                continue
            sel = order[lo:hi]
            w_p = plan.w0 + p * plan.dw
            screen = xp.exp(2j * np.pi * w_p * xprime).astype(xp.complex64)
            grid = _plane_grid(backend, plan, scaled * screen, crop)
            kw = plan.w_kernel.evaluate(xp, (w[sel] - w_p) / plan.dw)
            values[sel] += _degrid(backend, plan, grid, u[sel], v[sel]) * kw
        values = values * xp.exp(2j * np.pi * plan.x_c * w).astype(xp.complex64)
    if wgt is not None:
        values = values * xp.asarray(wgt, dtype=xp.float32)[keep]
    out = xp.zeros((nrow, nchan), dtype=xp.complex64)
    out[keep] = values
    return out


def _plane_grid(backend: Backend, plan: _Plan, image: Any, crop: Any) -> Any:
    """(nu, nu) complex64: the image zero-padded and transformed, sum_i I exp(-2 pi i a i'/nu)."""
    xp = backend.xp
    padded = xp.zeros((plan.nu, plan.nu), dtype=xp.complex64)
    padded[crop[:, None], crop[None, :]] = image
    return xp.fft.fft2(padded).astype(xp.complex64, copy=False)
