"""Image products on disk: FITS files DS9, CARTA and astropy read, and a PNG thumbnail.

Arrays come in the gridder's layout (axis 0 along l, east positive; axis 1 along m; pixel
(npix/2, npix/2) at the phase centre). FITS wants data[y, x] with x along RA and RA
increasing to the left (CDELT1 < 0), so the l axis is reversed and moved last:
``fits[j, i] = image[npix - 1 - i, j]``, which puts the phase centre on FITS pixel
(CRPIX1, CRPIX2) = (npix/2, npix/2 + 1) (1-based).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.imaging.beam import Beam
from pipeline.jobs.scratch import attempt_path

#: BUNIT of each product
UNITS = {"image": "JY/BEAM", "residual": "JY/BEAM", "model": "JY/PIXEL", "psf": "JY/BEAM",
         "pbcor": "JY/BEAM"}


@dataclass(frozen=True, kw_only=True)
class ImageGeometry:
    """Where an image sits: phase centre, pixels, frequency and time."""

    ra_deg: float
    dec_deg: float
    npix: int
    cell_rad: float
    freq_hz: float
    bandwidth_hz: float
    start_mjd: float
    mid_mjd: float
    object_name: str = ""

    @property
    def cell_deg(self) -> float:
        """Pixel size, degrees."""
        return math.degrees(self.cell_rad)


def to_fits_array(image: np.ndarray) -> np.ndarray:
    """(npix, npix) gridder layout → FITS data[y (Dec), x (RA, increasing left)]."""
    return np.ascontiguousarray(np.asarray(image)[::-1, :].T)


def from_fits_array(data: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_fits_array` for the last two axes of ``data``."""
    plane = np.asarray(data).reshape(data.shape[-2:])
    return np.ascontiguousarray(plane.T[::-1, :])


def fits_header(geom: ImageGeometry, *, kind: str, beam: Beam | None,
                extra: dict[str, Any] | None = None):
    """An astropy Header for product ``kind`` (image, residual, model, psf or pbcor)."""
    from astropy.io import fits  # noqa: PLC0415
    from astropy.time import Time  # noqa: PLC0415

    if kind not in UNITS:
        raise ValueError(f"unknown image product {kind!r}; one of {', '.join(UNITS)}")
    h = fits.Header()
    n = geom.npix
    cards = [
        ("BUNIT", UNITS[kind], "brightness unit"),
        ("BTYPE", "Intensity", ""),
        ("CTYPE1", "RA---SIN", ""), ("CRVAL1", float(geom.ra_deg), "[deg] phase centre RA"),
        ("CDELT1", -geom.cell_deg, "[deg]"),
        ("CRPIX1", n / 2, ""), ("CUNIT1", "deg", ""),
        ("CTYPE2", "DEC--SIN", ""), ("CRVAL2", float(geom.dec_deg), "[deg] phase centre Dec"),
        ("CDELT2", geom.cell_deg, "[deg]"), ("CRPIX2", n / 2 + 1, ""), ("CUNIT2", "deg", ""),
        ("CTYPE3", "FREQ", ""), ("CRVAL3", float(geom.freq_hz), "[Hz] mean frequency"),
        ("CDELT3", float(geom.bandwidth_hz), "[Hz] bandwidth imaged"), ("CRPIX3", 1.0, ""),
        ("CUNIT3", "Hz", ""),
        ("CTYPE4", "STOKES", ""), ("CRVAL4", 1.0, "Stokes I"), ("CDELT4", 1.0, ""),
        ("CRPIX4", 1.0, ""), ("CUNIT4", "", ""),
        ("RADESYS", "ICRS", ""), ("LONPOLE", 180.0, ""), ("LATPOLE", float(geom.dec_deg), ""),
        ("SPECSYS", "TOPOCENT", ""),
        ("DATE-OBS", Time(geom.start_mjd, format="mjd", scale="utc").isot, "start (UTC)"),
        ("MJD-OBS", float(geom.start_mjd), "[d] start (UTC)"),
        ("DATE-AVG", Time(geom.mid_mjd, format="mjd", scale="utc").isot, "mid-time (UTC)"),
        ("MJD-AVG", float(geom.mid_mjd), "[d] mid-time (UTC)"),
        ("TIMESYS", "UTC", ""),
        ("TELESCOP", "DSA-110", ""), ("INSTRUME", "DSA-110", ""), ("ORIGIN", "contimg", ""),
        ("OBJECT", geom.object_name, ""),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment) if comment else value
    if beam is not None:
        h["BMAJ"] = (beam.bmaj_deg, "[deg] beam FWHM major")
        h["BMIN"] = (beam.bmin_deg, "[deg] beam FWHM minor")
        h["BPA"] = (beam.bpa_deg, "[deg] beam PA, N through E")
    for key, value in (extra or {}).items():
        h[key] = value
    return h


def write_fits(path: Path, image: np.ndarray, geom: ImageGeometry, *, kind: str,
               beam: Beam | None, extra: dict[str, Any] | None = None) -> Path:
    """Write one product as (1, 1, npix, npix) float32 FITS, atomically (tmp then rename)."""
    from astropy.io import fits  # noqa: PLC0415

    path = Path(path)
    data = to_fits_array(np.asarray(image, np.float32))[None, None]
    hdu = fits.PrimaryHDU(data=data, header=fits_header(geom, kind=kind, beam=beam, extra=extra))
    with attempt_path(path) as tmp:  # another attempt may be writing this product too
        hdu.writeto(tmp)
        os.replace(tmp, path)
    return path


def thumbnail(path: Path, image: np.ndarray, *, size: int = 512) -> Path:
    """A north-up, east-left greyscale PNG of an image, asinh-stretched, ≤ ``size`` px wide."""
    from PIL import Image  # noqa: PLC0415

    data = to_fits_array(np.asarray(image, np.float32))
    k = max(1, math.ceil(data.shape[0] / size))
    n = (data.shape[0] // k) * k
    # block mean, NaN-aware so blanked (PB-cut) regions stay blank
    blocks = data[:n, :n].reshape(n // k, k, n // k, k)
    with np.errstate(invalid="ignore"):
        small = np.nanmean(blocks, axis=(1, 3)) if np.isnan(blocks).any() else blocks.mean((1, 3))
    finite = small[np.isfinite(small)]
    lo, hi = (np.percentile(finite, [0.5, 99.9]) if finite.size else (0.0, 1.0))
    span = max(float(hi - lo), 1e-12)
    scaled = np.clip((np.nan_to_num(small, nan=float(lo)) - lo) / span, 0, 1)
    scaled = np.arcsinh(10 * scaled) / np.arcsinh(10)
    pixels = (255 * scaled[::-1]).astype(np.uint8)       # FITS row 0 is the bottom
    path = Path(path)
    with attempt_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, path)
    return path
