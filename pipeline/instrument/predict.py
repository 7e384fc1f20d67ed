"""Visibilities from a sky model: one operation for the simulator, calibration models and CLEAN.

Convention (pyuvdata's; tests/test_predict.py checks it against ``UVData.phase``)::

    V(u, v, w; nu) = sum_s S_s(nu) exp(+2 pi i (u l_s + v m_s + w c_s) nu / c)

with ``uvw = x[ant2] - x[ant1]`` in metres and ``c_s = n_s - 1`` for data phased to
(l, m) = (0, 0) (the default), or ``c_s = n_s`` for pyuvdata's *unprojected* data, where
no w-term has been removed (pass ``w_coeff=n``). Gains then act as
``V_obs[ant1, ant2] = g[ant1] conj(g[ant2]) V``.

Three ways in, one entry point (:func:`predict`):

- :class:`PointSources` and per-row uvw: exact DFT, chunked over rows so memory stays
  bounded (a few bright sources, CLEAN components).
- :class:`PointSources` and per-antenna coordinates (``antennas=``): the same exact DFT
  factorised per antenna, ``V = conj(A) diag(S) A^T`` with ``A[a, s] = exp(2 pi i x_a.s nu/c)``.
  It costs n_ant x n_src exponentials instead of n_bl x n_src, and the sum is a matrix
  product: the simulator uses it for hundreds of sources.
- :class:`ModelImage`: ducc0's wgridder degridder for a whole model image.

Array work is written against an array namespace (NumPy now; CuPy arrays go through the
DFT paths unchanged). ducc0 is CPU only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

C_M_S = 299_792_458.0


def array_namespace(*arrays: Any):
    """CuPy if any argument is a CuPy array, else NumPy."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy  # noqa: PLC0415 — only when handed CuPy arrays
            return cupy
    return np


@dataclass(frozen=True, kw_only=True)
class PointSources:
    """Point sources: direction cosines and flux densities.

    l, m : (nsrc,) float, direction cosines relative to the phase centre.
    flux : (nsrc,) or (nsrc, nchan) float, Jy (per channel when 2-D).
    w_coeff : (nsrc,) float or None; coefficient of w (None: n - 1, for phased data).
    """

    l: Any  # noqa: E741 (the direction cosine, as the literature writes it)
    m: Any
    flux: Any
    w_coeff: Any = None

    def __post_init__(self):
        if np.shape(self.l) != np.shape(self.m) or np.ndim(self.l) != 1:
            raise ValueError(f"point sources: l and m must be equal 1-D arrays, got "
                             f"{np.shape(self.l)} and {np.shape(self.m)}")
        if np.shape(self.flux)[:1] != np.shape(self.l):
            raise ValueError(f"point sources: flux has shape {np.shape(self.flux)}, expected "
                             f"({len(self.l)},) or ({len(self.l)}, nchan)")
        if self.w_coeff is not None and np.shape(self.w_coeff) != np.shape(self.l):
            raise ValueError("point sources: w_coeff must match l in shape")

    def coefficients(self, xp=np):
        """(nsrc, 3) float64: the (l, m, w) coefficients multiplying (u, v, w)."""
        l, m = xp.asarray(self.l, dtype=xp.float64), xp.asarray(self.m, dtype=xp.float64)  # noqa: E741
        if self.w_coeff is None:
            # n - 1 written so that it stays accurate near the phase centre
            r2 = l * l + m * m
            wc = -r2 / (xp.sqrt(1.0 - r2) + 1.0)
        else:
            wc = xp.asarray(self.w_coeff, dtype=xp.float64)
        return xp.stack([l, m, wc], axis=1)

    def flux_per_channel(self, nchan: int, xp=np):
        """(nsrc, nchan) float64 flux densities."""
        f = xp.asarray(self.flux, dtype=xp.float64)
        if f.ndim == 1:
            return xp.broadcast_to(f[:, None], (f.shape[0], nchan))
        if f.shape[1] != nchan:
            raise ValueError(f"point sources: flux has {f.shape[1]} channels, data have {nchan}")
        return f


@dataclass(frozen=True, kw_only=True)
class ModelImage:
    """A model image in Jy/pixel on a regular (l, m) grid (SIN projection about the centre).

    image : (nx, ny) float; pixel (i, j) is at l = (i - nx/2) dl + l0, m = (j - ny/2) dm + m0.
    """

    image: Any
    pixsize_l: float
    pixsize_m: float
    center_l: float = 0.0
    center_m: float = 0.0

    def __post_init__(self):
        if np.ndim(self.image) != 2:
            raise ValueError(f"model image must be 2-D, got shape {np.shape(self.image)}")
        if self.pixsize_l <= 0 or self.pixsize_m <= 0:
            raise ValueError("model image: pixel sizes must be positive")


def predict_points(uvw_m, freqs_hz, sources: PointSources, *, chunk_elems: int = 1 << 24,
                   dtype=np.complex64):
    """Exact DFT per row.

    uvw_m : (nrow, 3) float, metres; freqs_hz : (nchan,) float.
    Returns (nrow, nchan) complex ``dtype``. Rows are taken in chunks of about
    ``chunk_elems / (nsrc nchan)`` to bound memory.
    """
    xp = array_namespace(uvw_m, freqs_hz, sources.l)
    uvw = xp.asarray(uvw_m, dtype=xp.float64)
    freqs = xp.asarray(freqs_hz, dtype=xp.float64)
    coeff = sources.coefficients(xp)
    flux = sources.flux_per_channel(freqs.shape[0], xp)
    nrow, nchan, nsrc = uvw.shape[0], freqs.shape[0], coeff.shape[0]
    out = xp.zeros((nrow, nchan), dtype=dtype)
    if nsrc == 0:
        return out
    step = max(1, chunk_elems // max(1, nsrc * nchan))
    scale = (2 * np.pi / C_M_S) * freqs
    for r0 in range(0, nrow, step):
        delay = uvw[r0:r0 + step] @ coeff.T                       # (rows, nsrc) metres
        phase = delay[:, :, None] * scale[None, None, :]          # (rows, nsrc, nchan)
        out[r0:r0 + step] = xp.einsum("rsc,sc->rc", xp.exp(1j * phase), flux).astype(dtype)
    return out


def predict_points_antenna(ant_xyz_m, freqs_hz, sources: PointSources, ant1, ant2, *,
                           chan_block: int = 16, dtype=np.complex64, out=None):
    """Exact DFT factorised per antenna, for baselines ``x[ant2] - x[ant1]``.

    ant_xyz_m : (nant, 3) float, metres, in the frame of the uvw (rows are then
    ``uvw = ant_xyz_m[ant2] - ant_xyz_m[ant1]``); ant1, ant2 : (nbl,) int indices.
    out : optional (nbl, nchan) ``dtype`` array to write into (e.g. a caller's rows).
    Returns (nbl, nchan) complex ``dtype``.
    """
    xp = array_namespace(ant_xyz_m, freqs_hz, sources.l)
    xyz = xp.asarray(ant_xyz_m, dtype=xp.float64)
    freqs = xp.asarray(freqs_hz, dtype=xp.float64)
    coeff = sources.coefficients(xp)
    flux = sources.flux_per_channel(freqs.shape[0], xp)
    a1, a2 = xp.asarray(ant1), xp.asarray(ant2)
    nchan = freqs.shape[0]
    if out is None:
        out = xp.empty((a1.shape[0], nchan), dtype=dtype)
    if coeff.shape[0] == 0:
        out[...] = 0
        return out
    # metres of path per antenna and source; the phases are formed in float64 because
    # they reach 1e4 rad on 2.5 km baselines, then rounded to complex64 for the product
    delay = xyz @ coeff.T                                          # (nant, nsrc)
    scale = (2 * np.pi / C_M_S) * freqs
    nant = xyz.shape[0]
    pair = a1 * nant + a2                          # flat (ant1, ant2) index: one take
    for c0 in range(0, nchan, chan_block):
        a = _antenna_phasors(delay, scale[c0:c0 + chan_block], xp)
        weighted = a * flux[:, c0:c0 + chan_block].T[:, None, :].astype(np.float32)
        full = xp.matmul(a.conj(), xp.swapaxes(weighted, 1, 2))   # (chan, nant, nant)
        out[:, c0:c0 + chan_block] = xp.take(full.reshape(full.shape[0], -1), pair, axis=1).T
    return out


def _antenna_phasors(delay, scale, xp):
    """(nchan, nant, nsrc) complex64 exp(i delay scale).

    For evenly spaced channels the phasors follow by recurrence, a_k = a_0 s^k (complex128
    products, exact to ~1e-15 per step), which costs one multiply per element instead of
    a complex exponential: the simulator's hot loop.
    """
    n = scale.shape[0]
    d = scale[1:] - scale[:-1] if n > 1 else scale[:0]
    if n < 3 or not bool(xp.all(xp.abs(d - d[0]) <= 1e-9 * xp.abs(d[0]))):
        return xp.exp(1j * (delay[None, :, :] * scale[:, None, None])).astype(np.complex64)
    out = xp.empty((n,) + delay.shape, dtype=np.complex64)
    cur = xp.exp(1j * (delay * scale[0]))
    step = xp.exp(1j * (delay * d[0]))
    out[0] = cur
    for k in range(1, n):
        cur = cur * step
        out[k] = cur
    return out


def predict_image(uvw_m, freqs_hz, model: ModelImage, *, epsilon: float = 1e-6,
                  nthreads: int = 0, dtype=np.complex64):
    """Degrid a model image with ducc0's wgridder (w-stacking on).

    uvw_m : (nrow, 3) float, metres (host arrays); freqs_hz : (nchan,).
    Returns (nrow, nchan) complex ``dtype``: the DFT of the pixels, accurate to ``epsilon``.
    """
    from ducc0.wgridder.experimental import dirty2vis  # noqa: PLC0415 — heavy, optional

    uvw = np.asarray(uvw_m, dtype=np.float64)
    # ducc0's kernel is exp(-2 pi i (u l + v m - w (n - 1))) (measured in
    # tests/test_predict.py); (-u, -v, w) turns it into ours.
    vis = dirty2vis(uvw=uvw * np.array([-1.0, -1.0, 1.0]),
                    freq=np.asarray(freqs_hz, dtype=np.float64),
                    dirty=np.asarray(model.image, dtype=np.float64),
                    pixsize_x=model.pixsize_l, pixsize_y=model.pixsize_m,
                    center_x=model.center_l, center_y=model.center_m,
                    epsilon=epsilon, do_wgridding=True, divide_by_n=False,
                    nthreads=nthreads)
    return vis.astype(dtype)


def predict(uvw_m, freqs_hz, sky: PointSources | ModelImage | Sequence[PointSources | ModelImage],
            *, antennas: tuple[Any, Any, Any] | None = None, dtype=np.complex64, **kwargs):
    """Visibilities of a sky model: the one prediction the simulator, calibration and CLEAN use.

    uvw_m : (nrow, 3) float, metres (may be None when ``antennas`` is given);
    freqs_hz : (nchan,) float; sky : point sources, a model image, or a list of both.
    antennas : optional ``(ant_xyz_m, ant1, ant2)``: point sources then use the per-antenna
    factorisation (same result, far fewer exponentials). Returns (nrow, nchan) complex.
    """
    parts = [sky] if isinstance(sky, PointSources | ModelImage) else list(sky)
    total = None
    for part in parts:
        if isinstance(part, PointSources):
            if antennas is not None:
                xyz, a1, a2 = antennas
                vis = predict_points_antenna(xyz, freqs_hz, part, a1, a2, dtype=dtype, **kwargs)
            else:
                vis = predict_points(uvw_m, freqs_hz, part, dtype=dtype, **kwargs)
        elif isinstance(part, ModelImage):
            if uvw_m is None:
                xyz, a1, a2 = antennas
                uvw_m = np.asarray(xyz)[np.asarray(a2)] - np.asarray(xyz)[np.asarray(a1)]
            vis = predict_image(uvw_m, freqs_hz, part, dtype=dtype, **kwargs)
        else:
            raise TypeError(f"predict: cannot predict from {type(part).__name__}")
        total = vis if total is None else total + vis
    if total is None:
        raise ValueError("predict: empty sky model")
    return total
