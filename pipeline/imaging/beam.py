"""The restoring beam: a 2-D Gaussian fitted to the PSF's main lobe, and restoring with it.

Images here are in the gridder's layout (see pipeline/imaging/gridding.py): axis 0 along
l (east positive), axis 1 along m (north positive), pixel (npix/2, npix/2) at the centre.
A position angle is measured from north through east, as FITS's BPA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import Backend
from pipeline.errors import ContimgError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


class BeamFitError(ContimgError):
    """The PSF has no main lobe a Gaussian can be fitted to."""

    def __init__(self, problem: str):
        super().__init__(f"PSF: {problem}; check the weights (all flagged?) and the cell size")


@dataclass(frozen=True, kw_only=True)
class Beam:
    """An elliptical Gaussian: FWHM major/minor axes and position angle, degrees."""

    bmaj_deg: float
    bmin_deg: float
    bpa_deg: float

    def pixels(self, cell_rad: float) -> tuple[float, float]:
        """(major, minor) FWHM in pixels of ``cell_rad``."""
        cell_deg = math.degrees(cell_rad)
        return self.bmaj_deg / cell_deg, self.bmin_deg / cell_deg

    def area_pixels(self, cell_rad: float) -> float:
        """Beam solid angle in pixels: π bmaj bmin / (4 ln 2)."""
        a, b = self.pixels(cell_rad)
        return math.pi * a * b / (4.0 * math.log(2.0))


def _main_lobe(patch: np.ndarray, level: float) -> np.ndarray:
    """Boolean mask of the pixels above ``level`` connected to the patch centre."""
    from scipy import ndimage  # noqa: PLC0415

    labels, _ = ndimage.label(patch > level)
    c = patch.shape[0] // 2
    return labels == labels[c, c]


def fit_beam(psf: Any, cell_rad: float, *, backend: Backend, level: float = 0.35,
             half_width: int = 64) -> Beam:
    """Fit a Gaussian of peak 1 to the main lobe of a peak-normalised PSF.

    psf : (npix, npix) float of the backend, peak 1 at (npix/2, npix/2).
    Least squares on log(psf) over the main-lobe pixels above ``level``, weighted by
    psf² so the core counts most (as CASA's and WSClean's fits favour the core).
    """
    npix = psf.shape[0]
    c = npix // 2
    h = min(half_width, c - 1)
    patch = backend.to_host(psf[c - h:c + h + 1, c - h:c + h + 1]).astype(np.float64)
    if not np.isfinite(patch).all() or patch[h, h] <= 0:
        raise BeamFitError("the centre pixel is not positive")
    patch = patch / patch[h, h]
    lobe = _main_lobe(patch, level)
    if lobe.sum() < 5:
        raise BeamFitError(f"only {int(lobe.sum())} pixel(s) in the main lobe, the beam is "
                           "narrower than the cell")
    if lobe[0].any() or lobe[-1].any() or lobe[:, 0].any() or lobe[:, -1].any():
        raise BeamFitError(f"the main lobe reaches beyond ±{h} pixels; the cell is too "
                           "small for this array")
    x, y = np.nonzero(lobe)
    val = patch[x, y]
    x, y = x - h, y - h                       # x along l (east), y along m (north)
    # log p = -(A x² + 2B xy + C y²), a linear problem in (A, B, C)
    design = np.stack([x * x, 2 * x * y, y * y], axis=1).astype(np.float64)
    w = val * val
    coef, *_ = np.linalg.lstsq(design * w[:, None], -np.log(val) * w, rcond=None)
    quad = np.array([[coef[0], coef[1]], [coef[1], coef[2]]])
    evals, evecs = np.linalg.eigh(quad)
    if evals[0] <= 0:
        raise BeamFitError("the main lobe is not a peak (the fitted Gaussian does not decay)")
    # smallest eigenvalue: the widest direction, i.e. the major axis
    fwhm = 2.0 * np.sqrt(math.log(2.0) / evals)            # pixels, (major, minor)
    east, north = evecs[:, 0]
    pa = math.degrees(math.atan2(east, north))
    pa = (pa + 90.0) % 180.0 - 90.0                        # (-90, 90]
    cell_deg = math.degrees(cell_rad)
    return Beam(bmaj_deg=float(fwhm[0] * cell_deg), bmin_deg=float(fwhm[1] * cell_deg),
                bpa_deg=float(pa))


def gaussian_image(beam: Beam, npix: int, cell_rad: float, *, backend: Backend) -> Any:
    """(npix, npix) float32: the beam, peak 1 at (npix/2, npix/2), in the gridder's layout."""
    xp = backend.xp
    maj, mnr = beam.pixels(cell_rad)
    s_maj, s_min = maj / FWHM_PER_SIGMA, mnr / FWHM_PER_SIGMA
    pa = math.radians(beam.bpa_deg)
    # unit vector of the major axis in (east, north) = (x, y)
    ux, uy = math.sin(pa), math.cos(pa)
    coord = xp.arange(npix, dtype=xp.float32) - npix // 2
    x, y = coord[:, None], coord[None, :]
    along = x * ux + y * uy
    across = -x * uy + y * ux
    return xp.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2)).astype(xp.float32)


def convolve(image: Any, kernel: Any, *, backend: Backend) -> Any:
    """Circular convolution of two (npix, npix) images, ``kernel`` centred at (npix/2, npix/2)."""
    xp = backend.xp
    if backend.name == "cpu":
        import scipy.fft as fft  # noqa: PLC0415 — threaded and float32-native, unlike numpy's

        from pipeline.backend import cpu_threads  # noqa: PLC0415
        kw = {"workers": cpu_threads()}
    else:
        fft, kw = xp.fft, {}
    k = xp.fft.ifftshift(kernel)
    out = fft.irfft2(fft.rfft2(image, **kw) * fft.rfft2(k, **kw), s=image.shape, **kw)
    return out.astype(xp.float32)


def restore(model: Any, residual: Any, beam: Beam, cell_rad: float, *,
            backend: Backend) -> Any:
    """Restored image, Jy/beam: model (Jy/pixel) ⊗ beam (peak 1) + residual (Jy/beam)."""
    if not bool(backend.xp.any(model != 0)):
        return residual.astype(backend.xp.float32, copy=True)
    kernel = gaussian_image(beam, model.shape[0], cell_rad, backend=backend)
    return convolve(model, kernel, backend=backend) + residual
