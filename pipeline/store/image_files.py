"""Reading the imager's FITS products for display: sky plane, WCS, beam, catalog sources.

The store hands out only paths it registered; these functions take such a path and do the
file I/O so that views never open files themselves.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ContimgError
from pipeline.instrument.sky import DEFAULT_CATALOG, Sky, load_catalog

#: product name (as the download route spells it) → images column holding its path
PRODUCT_COLUMNS: dict[str, str] = {
    "fits": "path", "residual": "residual_path", "model": "model_path", "psf": "psf_path",
    "pbcor": "pbcor_path", "thumbnail": "thumbnail_path"}


class UnknownImage(ContimgError):
    """An image id the store does not hold."""

    def __init__(self, image_id: object):
        super().__init__(f"image {image_id}: not in the store; list images with "
                         "Store.images()")
        self.image_id = image_id


class ImageFileMissing(ContimgError):
    """The store knows no readable file for this image product."""

    def __init__(self, image_id: object, product: str, detail: str):
        super().__init__(f"image {image_id}, product {product}: {detail}; re-run imaging for "
                         "its observation (Store.retry_observation) or restore the file")
        self.image_id = image_id
        self.product = product


class UnreadableImage(ContimgError):
    """A registered FITS file that is not a 2-D sky image with a celestial WCS."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; the file is not an image contimg can show — "
                         "re-image the observation")
        self.path = path


@dataclass(frozen=True, kw_only=True, eq=False)
class ImagePlane:
    """One Stokes/frequency plane of a FITS image, ready to display.

    data : (ny, nx) float32, in ``bunit``; row 0 is the bottom of the image (FITS order).
    wcs : astropy.wcs.WCS, celestial only (two axes).
    bmaj_deg, bmin_deg, bpa_deg : restoring beam (None when the header has none).
    """

    path: Path
    data: np.ndarray
    wcs: object
    bunit: str
    bmaj_deg: float | None
    bmin_deg: float | None
    bpa_deg: float | None
    freq_hz: float | None
    date_obs: str | None

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return self.data.shape

    @property
    def cell_deg(self) -> tuple[float, float]:
        """Absolute pixel size along x and y, degrees."""
        from astropy.wcs.utils import proj_plane_pixel_scales  # noqa: PLC0415
        sx, sy = proj_plane_pixel_scales(self.wcs)
        return float(sx), float(sy)

    def world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec (degrees) at 0-based pixel coordinates ``x``, ``y`` (any shape)."""
        ra, dec = self.wcs.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.asarray(ra), np.asarray(dec)

    def pixel(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel coordinates of RA, Dec (degrees); NaN where the projection has none."""
        x, y = self.wcs.wcs_world2pix(np.asarray(ra_deg, float), np.asarray(dec_deg, float), 0)
        return np.asarray(x), np.asarray(y)


def read_plane(path: str | Path) -> ImagePlane:
    """The first Stokes/frequency plane of a FITS image with its celestial WCS and beam."""
    from astropy.io import fits  # noqa: PLC0415
    from astropy.wcs import WCS, FITSFixedWarning  # noqa: PLC0415

    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            data = hdul[0].data
    except OSError as exc:
        raise UnreadableImage(path, f"not a readable FITS file ({exc})") from None
    if data is None or data.ndim < 2:
        raise UnreadableImage(path, "primary HDU holds no image")
    # Degenerate FREQ/STOKES axes come first in numpy order; take the first plane of each.
    while data.ndim > 2:
        data = data[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DATE-OBS → MJD-OBS fix-ups
        wcs = WCS(header).celestial
    if wcs.naxis != 2:
        raise UnreadableImage(path, "header has no celestial (RA/Dec) axes")

    def card(key: str) -> float | None:
        value = header.get(key)
        return None if value is None else float(value)

    freq = None
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            freq = card(f"CRVAL{i}")
    return ImagePlane(path=path, data=np.ascontiguousarray(data, dtype=np.float32), wcs=wcs,
                      bunit=str(header.get("BUNIT", "")), bmaj_deg=card("BMAJ"),
                      bmin_deg=card("BMIN"), bpa_deg=card("BPA"), freq_hz=freq,
                      date_obs=header.get("DATE-OBS"))


def sources_in_plane(catalog: Sky, plane: ImagePlane, *, min_flux_jy: float = 0.0,
                     limit: int = 5000) -> pd.DataFrame:
    """Catalog sources whose position falls on the image, brightest first.

    Columns: name, ra_deg, dec_deg, flux_jy, x, y (0-based pixel coordinates).
    """
    ny, nx = plane.shape
    ra0, dec0 = plane.world(np.array([(nx - 1) / 2]), np.array([(ny - 1) / 2]))
    sx, sy = plane.cell_deg
    # A cheap cone around the centre first: the WCS transform of 54 k sources is the cost.
    radius = 0.5 * math.hypot(nx * sx, ny * sy) * 1.05
    d0, r0 = math.radians(float(dec0[0])), math.radians(float(ra0[0]))
    dec, ra = np.radians(catalog.dec_deg), np.radians(catalog.ra_deg)
    cos_sep = (np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - r0))
    near = np.flatnonzero((cos_sep >= math.cos(math.radians(radius)))
                          & (catalog.flux_jy >= min_flux_jy))
    x, y = plane.pixel(catalog.ra_deg[near], catalog.dec_deg[near])
    inside = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) \
        & (y <= ny - 0.5)
    idx = near[inside]
    frame = pd.DataFrame({
        "name": [catalog.names[i] for i in idx], "ra_deg": catalog.ra_deg[idx],
        "dec_deg": catalog.dec_deg[idx], "flux_jy": catalog.flux_jy[idx],
        "x": x[inside], "y": y[inside]})
    return frame.sort_values("flux_jy", ascending=False, kind="stable").head(limit) \
        .reset_index(drop=True)


def reference_catalog(path: str | Path = DEFAULT_CATALOG) -> Sky:
    """The reference catalog (our CSV, or an NVSS CSV/VOTable/FITS) as a Sky."""
    return load_catalog(path)
