"""Small real image products for tests: SIN-projected FITS with Gaussian sources at
reference-catalog positions, noise and a restoring beam, plus a PNG thumbnail, registered
in a real store the way the image stage registers them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from pipeline.instrument.sky import Sky
from pipeline.store import Store
from pipeline.store.image_files import read_plane, sources_in_plane

T_IMG = datetime(2026, 11, 23, 6, 0, 0)
FREQ_HZ = 1.405e9
BEAM_DEG = (40 / 3600, 25 / 3600, 30.0)


@dataclass(frozen=True, kw_only=True)
class ImageSpec:
    """What one fabricated image looks like and what the store is told about it."""

    ra_deg: float
    dec_deg: float
    rms_jy: float
    qa_passed: bool
    minutes: int           # mid-time after T_IMG
    backend: str = "cpu"
    npix: int = 128
    cell_arcsec: float = 30.0
    thumbnail: bool = True


def header_for(spec: ImageSpec, mid: datetime) -> fits.Header:
    """A 4-axis (RA, Dec, FREQ, STOKES) SIN header as the imager writes it."""
    w = WCS(naxis=4)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    w.wcs.crval = [spec.ra_deg, spec.dec_deg, FREQ_HZ, 1.0]
    w.wcs.crpix = [spec.npix / 2 + 1, spec.npix / 2 + 1, 1, 1]
    w.wcs.cdelt = [-spec.cell_arcsec / 3600, spec.cell_arcsec / 3600, 1.9e8, 1.0]
    w.wcs.cunit = ["deg", "deg", "Hz", ""]
    h = w.to_header()
    h["BMAJ"], h["BMIN"], h["BPA"] = BEAM_DEG
    h["BUNIT"] = "JY/BEAM"
    h["DATE-OBS"] = mid.strftime("%Y-%m-%dT%H:%M:%S")
    h["TELESCOP"] = "DSA-110"
    return h


def sky_image(spec: ImageSpec, header: fits.Header, seed: int, catalog: Sky) -> np.ndarray:
    """(1, 1, npix, npix) float32: catalog sources as beam-shaped Gaussians plus noise."""
    rng = np.random.default_rng(seed)
    n = spec.npix
    data = rng.normal(0.0, spec.rms_jy, (n, n))
    w = WCS(header).celestial
    x, y = w.wcs_world2pix(catalog.ra_deg, catalog.dec_deg, 0)
    on = np.isfinite(x) & (x > 2) & (x < n - 3) & (y > 2) & (y < n - 3)
    yy, xx = np.mgrid[0:n, 0:n]
    sig = BEAM_DEG[0] * 3600 / spec.cell_arcsec / 2.355
    for xi, yi, s in zip(x[on], y[on], catalog.flux_jy[on], strict=True):
        data += s * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sig ** 2))
    return data[None, None].astype(np.float32)


def write_png(path: Path, plane: np.ndarray) -> None:
    """A greyscale PNG thumbnail, north up."""
    lo, hi = np.percentile(plane, [1, 99.5])
    scaled = np.clip((plane - lo) / (hi - lo + 1e-12), 0, 1)
    Image.fromarray((scaled[::-1] * 255).astype(np.uint8)).save(path)


def make_images(store: Store, root: Path, specs: list[ImageSpec]) -> list[int]:
    """Write every product of each spec under ``root`` and register it; returns image ids."""
    ids = []
    catalog = store.reference_catalog()
    for k, spec in enumerate(specs):
        mid = T_IMG + timedelta(minutes=spec.minutes)
        obs_id = (mid - timedelta(seconds=150)).strftime("%Y-%m-%dT%H:%M:%S")
        d = root / obs_id
        d.mkdir(parents=True, exist_ok=True)
        h = header_for(spec, mid)
        data = sky_image(spec, h, seed=k, catalog=catalog)
        paths = {}
        for product, arr in (("image", data), ("residual", data * 0.1),
                             ("model", np.maximum(data - 5 * spec.rms_jy, 0)),
                             ("pbcor", data * 1.2)):
            paths[product] = d / f"{obs_id}-{product}.fits"
            fits.PrimaryHDU(arr, h).writeto(paths[product], overwrite=True)
        fields = {}
        if spec.thumbnail:
            fields["thumbnail_path"] = str(d / f"{obs_id}.png")
            write_png(d / f"{obs_id}.png", data[0, 0])
        plane = read_plane(paths["image"])
        n_ref = len(sources_in_plane(catalog, plane, min_flux_jy=0.05))
        mjd = 40587.0 + (mid - datetime(1970, 1, 1)).total_seconds() / 86400
        ids.append(store.add_image(
            observation_id=obs_id, path=str(paths["image"]), mid_mjd=mjd, now=mid,
            ra_deg=spec.ra_deg, dec_deg=spec.dec_deg, freq_hz=FREQ_HZ, rms_jy=spec.rms_jy,
            peak_jy=float(data.max()), dynamic_range=float(data.max() / spec.rms_jy),
            bmaj_deg=BEAM_DEG[0], bmin_deg=BEAM_DEG[1], bpa_deg=BEAM_DEG[2],
            n_ref_matched=n_ref if spec.qa_passed else 0, n_ref_expected=n_ref,
            backend=spec.backend, duration_s=1.5 + k, residual_path=str(paths["residual"]),
            model_path=str(paths["model"]), pbcor_path=str(paths["pbcor"]), npix=spec.npix,
            cell_arcsec=spec.cell_arcsec, weighting="briggs(0)", n_iter=100 * k, n_major=3,
            qa_passed=spec.qa_passed, qa_reason=None if spec.qa_passed else "rms too high",
            **fields))
    return ids


#: six images: three declinations, rms 1–8 mJy, two failing QA, one without a thumbnail
SPECS = [
    ImageSpec(ra_deg=30.0, dec_deg=30.0, rms_jy=0.001, qa_passed=True, minutes=0),
    ImageSpec(ra_deg=31.25, dec_deg=30.0, rms_jy=0.002, qa_passed=True, minutes=5,
              backend="gpu"),
    ImageSpec(ra_deg=32.5, dec_deg=33.0, rms_jy=0.004, qa_passed=False, minutes=10),
    ImageSpec(ra_deg=33.75, dec_deg=33.0, rms_jy=0.0015, qa_passed=True, minutes=15),
    ImageSpec(ra_deg=35.0, dec_deg=36.0, rms_jy=0.008, qa_passed=False, minutes=20,
              thumbnail=False),
    ImageSpec(ra_deg=36.25, dec_deg=36.0, rms_jy=0.003, qa_passed=True, minutes=25),
]
