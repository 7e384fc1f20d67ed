"""Reading the imager's FITS products for display: sky plane, WCS, beam, catalog sources.

The store hands out only paths it registered; these functions take such a path and do the
file I/O so that views never open files themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ContimgError
from pipeline.fits_plane import FitsPlane, FitsPlaneError, read_fits_plane
from pipeline.instrument.sky import Sky

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


#: One plane of a FITS image, ready to display (the shared reader's record).
ImagePlane = FitsPlane


def read_plane(path: str | Path) -> ImagePlane:
    """The first Stokes/frequency plane of a FITS image with its celestial WCS and beam."""
    try:
        return read_fits_plane(path)
    except FitsPlaneError as exc:
        raise UnreadableImage(Path(path), exc.problem) from None


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

