"""CLEAN: Clark minor cycles inside Cotton–Schwab major cycles, on either backend.

Each major cycle degrids the model with ``gridding.dirty2vis``, subtracts it from the
visibilities and grids the residual again, so the residual image is exact whatever the
minor cycles approximated. Minor cycles (Clark) work on the pixels that can still be
picked this cycle (|residual| above the cycle's stop level), subtracting a PSF patch.

Thresholds follow WSClean's automatic ones: the robust (MAD) rms σ of the residual is
measured at every major cycle; CLEAN runs unmasked down to ``auto_mask_sigma`` σ, then the
pixels holding components become the mask and CLEAN goes on inside it down to
``auto_threshold_sigma`` σ, stopping early at ``niter`` components or ``max_major`` cycles.

Images are in the gridder's layout (pipeline/imaging/gridding.py); the model is in
Jy/pixel, the residual and PSF are normalised by the sum of weights (Jy/beam, peak 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.backend import Backend
from pipeline.errors import ContimgError
from pipeline.imaging import gridding
from pipeline.imaging.config import ImagingConfig

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.482602218505602
#: pixels the minor cycle tracks at most (beyond this, the cycle's stop level rises)
MAX_ACTIVE = 1 << 19
#: robust_rms samples at most this many pixels (a strided subset of a large image)
RMS_SAMPLE = 1 << 22


class NothingToImage(ContimgError):
    """Every visibility has zero weight."""

    def __init__(self, what: str):
        super().__init__(f"{what}: every visibility is flagged or has zero weight; "
                         "check the flags and the calibration")


@dataclass(frozen=True, kw_only=True)
class CleanResult:
    """What CLEAN returns: arrays of the backend, (npix, npix) float32, and its counts."""

    model: Any
    residual: Any
    psf: Any
    dirty_peak_jy: float
    dirty_rms_jy: float
    n_components: int
    n_major: int
    threshold_jy: float
    rms_jy: float
    timings: dict[str, float] = field(default_factory=dict)


def robust_rms(image: Any, *, backend: Backend, mask: Any | None = None) -> float:
    """1.4826 × median absolute deviation of an image's pixels (outside ``mask`` if given)."""
    xp = backend.xp
    flat = image.ravel()
    if mask is not None:
        flat = flat[~mask.ravel()]
    if flat.size > RMS_SAMPLE:
        # a strided subset: the median of 4 M pixels is as good and 4–10× cheaper
        flat = flat[:: flat.size // RMS_SAMPLE + 1]
    if flat.size == 0:
        return 0.0
    med = xp.median(flat)
    return float(MAD_TO_SIGMA * xp.median(xp.abs(flat - med)))


def _grid(vis: Any, weight: Any, *, uvw: Any, freq: Any, npix: int, cell_rad: float,
          config: ImagingConfig, backend: Backend, wsum: float, w_term: bool = True) -> Any:
    img = gridding.vis2dirty(uvw=uvw, freq=freq, vis=vis, wgt=weight, npix=npix,
                             pixsize_rad=cell_rad, do_wgridding=config.do_wgridding and w_term,
                             backend=backend, epsilon=config.epsilon)
    return backend.xp.asarray(img, dtype=backend.xp.float32) / backend.xp.float32(wsum)


def _degrid(model: Any, *, uvw: Any, freq: Any, cell_rad: float, config: ImagingConfig,
            backend: Backend, out: Any | None = None) -> Any:
    return gridding.dirty2vis(uvw=uvw, freq=freq, dirty=model, wgt=None, pixsize_rad=cell_rad,
                              do_wgridding=config.do_wgridding, backend=backend,
                              epsilon=config.epsilon, out=out)


def minor_cycle(residual: Any, psf_patch: Any, *, stop: float, gain: float,
                max_components: int, backend: Backend, mask: Any | None = None
                ) -> tuple[Any, Any, Any, int]:
    """Clark minor cycle: Högbom iterations over the pixels above ``stop``.

    residual : (npix, npix) float32; psf_patch : (2P+1, 2P+1) float32, peak 1 at its
    centre; mask : optional (npix, npix) bool, where components may go.
    Returns (x, y, flux, n): component pixel indices and Jy/pixel (one entry per distinct
    pixel, summed) and the number of iterations. ``residual`` is not modified.
    """
    xp = backend.xp
    half = psf_patch.shape[0] // 2
    mag = xp.abs(residual)
    active = mag > stop
    if mask is not None:
        active &= mask
    n_active = int(active.sum())
    if n_active == 0 or max_components <= 0:
        empty = xp.zeros(0, dtype=xp.int64)
        return empty, empty, xp.zeros(0, dtype=xp.float32), 0
    if n_active > MAX_ACTIVE:
        # keep the brightest MAX_ACTIVE pixels; the rest wait for the next major cycle
        level = xp.partition(mag[active], n_active - MAX_ACTIVE)[n_active - MAX_ACTIVE]
        active &= mag >= level
    px, py = xp.nonzero(active)
    vals = residual[px, py].astype(xp.float32)
    comp = xp.zeros(vals.shape, dtype=xp.float32)
    # nonzero() lists pixels row by row (px ascending): the pixels a PSF patch centred on
    # row x can touch are one slice, rows x - half .. x + half, found from the row starts
    # (host ints) instead of testing every active pixel at every iteration
    npix = residual.shape[0]
    row_start = backend.to_host(xp.searchsorted(px, xp.arange(npix + 1)))
    px_host = backend.to_host(px)
    n = 0
    while n < max_components:
        i = int(xp.argmax(xp.abs(vals)))
        peak = float(vals[i])
        if abs(peak) <= stop:
            break
        amp = gain * peak
        comp[i] += amp
        x0 = int(px_host[i])
        lo = int(row_start[max(0, x0 - half)])
        hi = int(row_start[min(npix, x0 + half + 1)])
        dy = py[lo:hi] - py[i] + half
        inside = (dy >= 0) & (dy <= 2 * half)
        hit = xp.nonzero(inside)[0]
        dx = px[lo:hi][hit] - x0 + half
        vals[lo:hi][hit] -= xp.float32(amp) * psf_patch[dx, dy[hit]]
        n += 1
    keep = xp.nonzero(comp)[0]
    return px[keep], py[keep], comp[keep], n


def clean(*, uvw: Any, freq: Any, vis: Any, weight: Any, npix: int, cell_rad: float,
          config: ImagingConfig, backend: Backend,
          progress: Callable[[float], None] | None = None) -> CleanResult:
    """Cotton–Schwab CLEAN of weighted visibilities.

    uvw (nrow, 3) float64 m (gridder convention); freq (nchan,) Hz; vis (nrow, nchan)
    complex64 Jy; weight (nrow, nchan) float32 imaging weights (0 = flagged). Arrays may
    be NumPy or of ``backend``; they are moved to the backend once.
    """
    xp = backend.xp
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    uvw = backend.asarray(uvw, xp.float64)
    freq = backend.asarray(freq, xp.float64)
    vis = backend.asarray(vis, xp.complex64)
    weight = backend.asarray(weight, xp.float32)
    wsum = float(weight.sum(dtype=xp.float64))
    if not wsum > 0:
        raise NothingToImage("imaging data")
    kw = dict(uvw=uvw, freq=freq, npix=npix, cell_rad=cell_rad, config=config,
              backend=backend, wsum=wsum)
    # The minor cycles take the PSF as shift-invariant anyway (the major cycles are exact),
    # so it is gridded without w-correction: 4–5× cheaper on the CPU.
    psf = _grid(xp.ones(vis.shape, dtype=xp.complex64), weight, w_term=False, **kw)
    psf = psf / psf[npix // 2, npix // 2]
    residual = _grid(vis, weight, **kw)
    timings["dirty_s"] = time.perf_counter() - t0
    dirty_peak = float(xp.abs(residual).max())
    half = max(2, min(config.psf_patch, npix // 2 - 1))
    c = npix // 2
    patch = xp.ascontiguousarray(psf[c - half:c + half + 1, c - half:c + half + 1])
    outside = xp.abs(psf).copy()
    outside[c - half:c + half + 1, c - half:c + half + 1] = 0
    # a PSF whose far sidelobes rival its peak (two or three antennas) still gets cleaned
    exterior = min(float(outside.max()), 0.9)
    del outside
    model = xp.zeros((npix, npix), dtype=xp.float32)
    mask = None
    n_comp = n_major = 0
    dirty_rms = robust_rms(residual, backend=backend)
    threshold = config.auto_mask_sigma * dirty_rms
    t_minor = t_major = 0.0
    buffer = xp.empty(vis.shape, dtype=xp.complex64) if backend.name == "cpu" else None
    while n_major < config.max_major and n_comp < config.niter:
        rms = robust_rms(residual, backend=backend)
        if mask is None:
            stop = config.auto_mask_sigma * rms
            peak = float(xp.abs(residual).max())
        else:
            stop = config.auto_threshold_sigma * rms
            peak = float(xp.abs(xp.where(mask, residual, 0)).max())
        threshold = stop
        if peak <= stop:
            if mask is None and n_comp > 0:
                mask = model != 0       # auto-mask reached: deeper, where components are
                continue
            break
        cycle_stop = max(stop, (1.0 - config.mgain) * peak, exterior * peak)
        t1 = time.perf_counter()
        x, y, f, n = minor_cycle(residual, patch, stop=cycle_stop, gain=config.gain,
                                 max_components=config.niter - n_comp, backend=backend,
                                 mask=mask)
        t_minor += time.perf_counter() - t1
        log.debug("major cycle %d: peak %.4g, rms %.3g, stop %.3g (cycle %.3g), %s, "
                  "%d components", n_major + 1, peak, rms, stop, cycle_stop,
                  "masked" if mask is not None else "unmasked", n)
        if n == 0:
            break
        model[x, y] += f
        n_comp += n
        t1 = time.perf_counter()
        # one visibility buffer for every cycle: the model's visibilities, then in place
        # the residual ones (vis - model) that are gridded
        buffer = _degrid(model, uvw=uvw, freq=freq, cell_rad=cell_rad, config=config,
                         backend=backend, out=buffer)
        buffer = xp.asarray(buffer, dtype=xp.complex64)
        xp.subtract(vis, buffer, out=buffer)
        residual = _grid(buffer, weight, **kw)
        t_major += time.perf_counter() - t1
        n_major += 1
        if progress is not None:
            progress(min(1.0, max(n_comp / max(config.niter, 1), n_major / config.max_major)))
        if cycle_stop <= stop:
            # the minor cycles went down to this phase's level (as WSClean, not chasing an
            # rms that falls as sources are removed): mask next, or done
            if mask is not None:
                break
            mask = model != 0
    del buffer
    rms = robust_rms(residual, backend=backend)
    timings.update(minor_s=t_minor, major_s=t_major, clean_s=time.perf_counter() - t0)
    return CleanResult(model=model, residual=residual, psf=psf, dirty_peak_jy=dirty_peak,
                       dirty_rms_jy=dirty_rms, n_components=n_comp, n_major=n_major,
                       threshold_jy=float(threshold), rms_jy=rms, timings=timings)
