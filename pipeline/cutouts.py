"""Postage stamps: the pixels of a FITS image around a sky position, as an array or a PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D, NoOverlapError
from astropy.wcs import WCS
from PIL import Image, ImageDraw

from pipeline.errors import ContimgError
from pipeline.fits_plane import FitsPlaneError, read_fits_plane


class CutoutError(ContimgError):
    """A cutout that cannot be made from an image."""

    def __init__(self, path: str | Path, problem: str, remedy: str):
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path = Path(path)


@dataclass(frozen=True, kw_only=True)
class Cutout:
    """Pixels (ny, nx) float32 around a position, NaN where the image ends, and their WCS."""

    data: np.ndarray
    wcs: WCS
    position_pix: tuple[float, float]  # (x, y) of the requested position in ``data``
    bunit: str


def _celestial_plane(path: Path) -> tuple[np.ndarray, WCS, str]:
    """The first 2-D sky plane of a FITS image (any FREQ/STOKES axes take index 0)."""
    try:
        plane = read_fits_plane(path)
    except FitsPlaneError as exc:
        problem = "image file not found" if exc.problem == "no such file" else exc.problem
        raise CutoutError(path, problem, exc.remedy) from None
    return plane.data, plane.wcs, plane.bunit


def cutout(path: str | Path, ra_deg: float, dec_deg: float, *, size_arcsec: float = 300.0
           ) -> Cutout:
    """A square ``size_arcsec`` cutout centred on (ra_deg, dec_deg), ICRS degrees."""
    path = Path(path)
    plane, wcs, bunit = _celestial_plane(path)
    centre = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    if not np.all(np.isfinite(wcs.world_to_pixel(centre))):
        # Beyond the projection's horizon (SIN): no pixel at all.
        raise CutoutError(path, f"position RA {ra_deg:.5f}° Dec {dec_deg:.5f}° lies outside "
                          "the image", "choose an image that covers the source")
    try:
        cut = Cutout2D(plane, centre, size_arcsec * u.arcsec, wcs=wcs, mode="partial",
                       fill_value=np.nan, copy=True)
    except NoOverlapError:
        raise CutoutError(path, f"position RA {ra_deg:.5f}° Dec {dec_deg:.5f}° lies outside "
                          "the image", "choose an image that covers the source") from None
    x, y = cut.to_cutout_position(wcs.world_to_pixel(centre))
    return Cutout(data=cut.data, wcs=cut.wcs, position_pix=(float(x), float(y)), bunit=bunit)


def render_png(cut: Cutout, *, size_px: int = 240, marker: bool = True) -> bytes:
    """A greyscale PNG of a cutout (1–99.5 % stretch, north up), the position marked."""
    data = cut.data
    finite = np.isfinite(data)
    if finite.any():
        lo, hi = np.percentile(data[finite], [1.0, 99.5])
    else:
        lo, hi = 0.0, 1.0
    scaled = np.clip((np.where(finite, data, lo) - lo) / max(hi - lo, 1e-30), 0, 1)
    # Row 0 is the bottom of a FITS image (south), the top of a PNG: flip.
    grey = (255 * scaled[::-1]).astype(np.uint8)
    img = Image.fromarray(grey, mode="L").convert("RGB")
    ny, nx = grey.shape
    scale = size_px / max(nx, ny)
    img = img.resize((max(1, round(nx * scale)), max(1, round(ny * scale))),
                     Image.Resampling.NEAREST)
    if marker:
        x, y = cut.position_pix
        cx, cy = (x + 0.5) * scale, (ny - 0.5 - y) * scale
        draw, gap, arm = ImageDraw.Draw(img), 6 * size_px / 240, 16 * size_px / 240
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            draw.line([(cx + dx * gap, cy + dy * gap), (cx + dx * arm, cy + dy * arm)],
                      fill=(230, 97, 0), width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def cutout_png(path: str | Path, ra_deg: float, dec_deg: float, *, size_arcsec: float = 300.0,
               size_px: int = 240) -> bytes:
    """``cutout`` then ``render_png``: a PNG of the image around the position."""
    return render_png(cutout(path, ra_deg, dec_deg, size_arcsec=size_arcsec), size_px=size_px)
