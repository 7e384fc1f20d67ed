"""The one FITS image reader: the first sky plane of an image, its celestial WCS and beam.

The imager writes (RA, Dec, FREQ, STOKES) images (CASA's axis order); the viewer, the
cutouts and forced photometry all read them through ``read_fits_plane``, each adding only
what it alone checks (photometry: a restoring beam, finite pixels, Jy/beam).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ContimgError


class FitsPlaneError(ContimgError):
    """A FITS file that holds no readable sky plane; ``problem`` and ``remedy`` apart."""

    def __init__(self, path: Path | str, problem: str,
                 remedy: str = "re-image the observation"):
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path = Path(path)
        self.problem = problem
        self.remedy = remedy


@dataclass(frozen=True, kw_only=True, eq=False)
class FitsPlane:
    """One Stokes/frequency plane of a FITS image.

    data : (ny, nx) float32, in ``bunit``; row 0 is the bottom of the image (FITS order).
    wcs : astropy.wcs.WCS, celestial only (two axes).
    bmaj_deg, bmin_deg, bpa_deg : restoring beam (None when the header has none).
    freq_hz : the FREQ axis' value, else RESTFRQ, else None.
    """

    path: Path
    data: np.ndarray
    wcs: Any
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


def read_fits_plane(path: str | Path) -> FitsPlane:
    """The first sky plane of a FITS image (index 0 of any FREQ/STOKES axes); FitsPlaneError."""
    from astropy.io import fits  # noqa: PLC0415
    from astropy.wcs import WCS, FITSFixedWarning  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FitsPlaneError(path, "no such file", "it was moved or deleted; re-image the "
                             "observation")
    # astropy warns about a damaged file before failing on it: keep those warnings for a
    # file that then reads, drop them when the error says it all.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=True) as hdul:
                header, data = hdul[0].header.copy(), hdul[0].data
                if data is None or data.ndim < 2:
                    raise FitsPlaneError(path, "primary HDU holds no image",
                                         "point the images table at the restored image")
                # a copy in native byte order: only this plane leaves the (mapped) file
                plane = np.array(data[(0,) * (data.ndim - 2)], dtype=np.float32)
        except (OSError, ValueError, TypeError) as exc:
            raise FitsPlaneError(path, f"not a readable FITS file ({exc})") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        with warnings.catch_warnings():
            # astropy's 'datfix'/'unitfix' notes (DATE-OBS → MJD-OBS) are not our problem
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except Exception as exc:  # astropy raises several types for a broken WCS
        raise FitsPlaneError(path, f"unusable WCS ({exc})") from None
    if not wcs.has_celestial or wcs.celestial.naxis != 2:
        raise FitsPlaneError(path, "no celestial (RA/Dec) axes in the WCS")
    if sorted((wcs.wcs.lng, wcs.wcs.lat)) != [0, 1]:
        raise FitsPlaneError(path, "the first two axes are not RA/Dec",
                             "write images with RA, Dec as axes 1 and 2 (CASA order)")
    return FitsPlane(path=path, data=plane, wcs=wcs.celestial,
                     bunit=str(header.get("BUNIT", "")), bmaj_deg=_card(header, "BMAJ"),
                     bmin_deg=_card(header, "BMIN"), bpa_deg=_card(header, "BPA"),
                     freq_hz=_freq_of(header), date_obs=header.get("DATE-OBS"))


def _card(header: Any, key: str) -> float | None:
    value = header.get(key)
    return None if value is None else float(value)


def _freq_of(header: Any) -> float | None:
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            return float(header[f"CRVAL{i}"])
    return _card(header, "RESTFRQ")
