"""Small real FITS images for photometry tests and benchmarks.

Gaussian sources of the restoring beam's shape at given sky positions, attenuated by the
4.65 m Airy primary beam, plus noise correlated over the beam (white noise convolved with
a Gaussian of half the beam's covariance, so its autocorrelation is the beam), written as
the imager writes them: SIN projection, (STOKES, FREQ, DEC, RA) axes, BMAJ/BMIN/BPA in
degrees, BUNIT JY/BEAM; optionally the PB-corrected and residual images beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pipeline.instrument.sky import airy_power
from pipeline.photometry.forced import beam_precision_px


@dataclass(frozen=True, kw_only=True)
class FakeField:
    """Geometry of a fake image."""

    npix: int = 256
    cell_arcsec: float = 4.0
    ra_deg: float = 150.0
    dec_deg: float = 33.0
    freq_hz: float = 1.405e9
    bmaj_arcsec: float = 20.0
    bmin_arcsec: float = 14.0
    bpa_deg: float = 30.0
    mjd: float = 61000.5

    def header(self) -> fits.Header:
        """The FITS header the imager writes for this field."""
        h = fits.Header()
        for i, (ctype, crval, cdelt, crpix, unit) in enumerate((
                ("RA---SIN", self.ra_deg, -self.cell_arcsec / 3600, self.npix / 2 + 1, "deg"),
                ("DEC--SIN", self.dec_deg, self.cell_arcsec / 3600, self.npix / 2 + 1, "deg"),
                ("FREQ", self.freq_hz, 1.9e8, 1.0, "Hz"),
                ("STOKES", 1.0, 1.0, 1.0, "")), start=1):
            h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"] = ctype, crval, cdelt
            h[f"CRPIX{i}"], h[f"CUNIT{i}"] = crpix, unit
        h["BMAJ"], h["BMIN"] = self.bmaj_arcsec / 3600, self.bmin_arcsec / 3600
        h["BPA"], h["BUNIT"] = self.bpa_deg, "JY/BEAM"
        h["MJD-OBS"] = self.mjd
        h["DATE-OBS"] = Time(self.mjd, format="mjd", scale="utc").isot
        return h

    def wcs(self) -> WCS:
        """Celestial WCS of the field."""
        return WCS(self.header()).celestial

    def precision(self) -> np.ndarray:
        """Beam precision matrix in pixels."""
        return beam_precision_px(np.asarray(self.wcs().pixel_scale_matrix),
                                 self.bmaj_arcsec / 3600, self.bmin_arcsec / 3600, self.bpa_deg)

    def pb_map(self) -> np.ndarray:
        """(npix, npix) Airy power about the centre (SIN: sin θ = |l, m|)."""
        c = np.arange(self.npix) - self.npix / 2
        ll, mm = np.meshgrid(c, c)
        r = np.radians(np.hypot(ll, mm) * self.cell_arcsec / 3600)
        return airy_power(np.arcsin(np.clip(r, 0, 1)), self.freq_hz)

    def pb_at(self, ra_deg, dec_deg) -> np.ndarray:
        """Airy power at sky positions."""
        x, y = self.wcs().all_world2pix(ra_deg, dec_deg, 0)
        r = np.radians(np.hypot(x - self.npix / 2, y - self.npix / 2) * self.cell_arcsec / 3600)
        return airy_power(np.arcsin(np.clip(r, 0, 1)), self.freq_hz)

    def positions_in(self, n: int, *, margin_px: int = 12, seed: int = 0,
                     min_sep_px: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random sky positions inside the image, at least ``min_sep_px`` apart."""
        rng = np.random.default_rng(seed)
        pts: list[tuple[float, float]] = []
        while len(pts) < n:
            p = rng.uniform(margin_px, self.npix - margin_px, 2)
            if all(math.hypot(p[0] - q[0], p[1] - q[1]) >= min_sep_px for q in pts):
                pts.append((float(p[0]), float(p[1])))
        xy = np.array(pts)
        ra, dec = self.wcs().all_pix2world(xy[:, 0], xy[:, 1], 0)
        return np.asarray(ra), np.asarray(dec)


def correlated_noise(field: FakeField, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(npix, npix) noise of rms ``sigma`` whose autocorrelation is the restoring beam."""
    n = field.npix
    white = rng.standard_normal((n, n))
    p = field.precision()
    c = np.fft.fftfreq(n) * n
    dx, dy = np.meshgrid(c, c)
    # Kernel with covariance Σ/2 (precision 2P): its autocorrelation has covariance Σ.
    kern = np.exp(-(p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy))
    noise = np.fft.irfft2(np.fft.rfft2(white) * np.fft.rfft2(kern), s=(n, n))
    return noise * (sigma / noise.std())


def sky_model(field: FakeField, ra_deg, dec_deg, flux_jy) -> np.ndarray:
    """(npix, npix) apparent sky in Jy/beam: beam-shaped point sources times the PB."""
    n = field.npix
    img = np.zeros((n, n))
    x, y = field.wcs().all_world2pix(np.atleast_1d(ra_deg), np.atleast_1d(dec_deg), 0)
    apparent = np.atleast_1d(flux_jy) * field.pb_at(ra_deg, dec_deg)
    p, half = field.precision(), 24
    for xi, yi, s in zip(x, y, np.atleast_1d(apparent), strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, n), max(iy - half, 0), \
            min(iy + half + 1, n)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx - xi, yy - yi
        img[y0:y1, x0:x1] += s * np.exp(-0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy
                                                + p[1, 1] * dy * dy))
    return img


def write_image(path: Path, field: FakeField, ra_deg, dec_deg, flux_jy, *, sigma: float,
                seed: int = 0, pbcor: bool = True, residual: bool = True,
                extra: np.ndarray | None = None) -> dict[str, Path]:
    """Write restored (and PB-corrected, residual) FITS; returns their paths by kind."""
    rng = np.random.default_rng(seed)
    noise = correlated_noise(field, sigma, rng)
    restored = sky_model(field, ra_deg, dec_deg, flux_jy) + noise
    if extra is not None:
        restored = restored + extra
    h = field.header()
    path = Path(path)
    out = {"path": path}

    def _write(p: Path, plane: np.ndarray) -> None:
        fits.PrimaryHDU(plane.astype(np.float32)[None, None], header=h).writeto(
            p, overwrite=True)

    _write(path, restored)
    if pbcor:
        pb = field.pb_map()
        out["pbcor_path"] = path.with_name(path.stem + "-pbcor.fits")
        _write(out["pbcor_path"], np.where(pb >= 0.05, restored / pb, np.nan))
    if residual:
        out["residual_path"] = path.with_name(path.stem + "-residual.fits")
        _write(out["residual_path"], noise)
    return out
