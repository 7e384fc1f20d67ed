"""The primary beam of a drift-scan image and the PB-corrected image.

A 4.65 m dish's Airy power pattern (``pipeline.instrument.sky.airy_power``, the very
function the simulator attenuates its sources with). A drift scan's dishes stay on the
meridian while the sky moves ~1.2° through the beam in 5 minutes, and the image is a
multi-frequency synthesis over 1.31–1.50 GHz, so the response an image pixel carries is
the Airy pattern averaged over the chunk's integrations and its channels (weighted as
they were gridded). The pointing at each integration is the meridian at the pointing's
apparent declination, converted to ICRS exactly as the simulator does
(``pipeline.instrument.sky.meridian_icrs``); the phase centre (ICRS Dec = the pointing
declination) differs from it by precession, ~0.1°, which matters at the 1 % level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.backend import Backend
from pipeline.instrument.sky import airy_power, meridian_icrs
from pipeline.instrument.telescope import DISH_DIAMETER_M, OVRO, Site


@dataclass(frozen=True, kw_only=True, eq=False)
class PrimaryBeam:
    """The time- and frequency-averaged Airy response of one chunk.

    pointing_ra_deg, pointing_dec_deg : (ntime,) ICRS pointing at each sample time.
    freq_hz, freq_weight : (nfreq,) frequencies averaged over and their weights.
    """

    pointing_ra_deg: np.ndarray
    pointing_dec_deg: np.ndarray
    freq_hz: np.ndarray
    freq_weight: np.ndarray
    diameter_m: float = DISH_DIAMETER_M

    def __post_init__(self):
        if np.shape(self.pointing_ra_deg) != np.shape(self.pointing_dec_deg):
            raise ValueError("primary beam: pointing RA and Dec differ in shape")
        if np.shape(self.freq_hz) != np.shape(self.freq_weight) or not np.sum(self.freq_weight) > 0:
            raise ValueError("primary beam: freq_weight must match freq_hz and sum to > 0")

    @property
    def centre_deg(self) -> tuple[float, float]:
        """Mean ICRS pointing (RA, Dec), degrees."""
        ra = np.radians(self.pointing_ra_deg)
        return (float(np.degrees(np.arctan2(np.sin(ra).mean(), np.cos(ra).mean())) % 360),
                float(np.mean(self.pointing_dec_deg)))

    def response(self, ra_deg: Any, dec_deg: Any) -> np.ndarray:
        """Mean power response (0–1] at ICRS positions (any shape), float64."""
        ra = np.radians(np.asarray(ra_deg, np.float64))[..., None]
        dec = np.radians(np.asarray(dec_deg, np.float64))[..., None]
        pra, pdec = np.radians(self.pointing_ra_deg), np.radians(self.pointing_dec_deg)
        # haversine: accurate for the small angles that matter here
        h = (np.sin((dec - pdec) / 2) ** 2
             + np.cos(dec) * np.cos(pdec) * np.sin((ra - pra) / 2) ** 2)
        theta = 2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))              # (..., ntime)
        w = np.asarray(self.freq_weight, np.float64)
        power = airy_power(theta[..., None], np.asarray(self.freq_hz)[None, :],
                           diameter_m=self.diameter_m)                # (..., ntime, nfreq)
        return (power @ (w / w.sum())).mean(axis=-1)

    def image(self, *, npix: int, cell_rad: float, ra0_deg: float, dec0_deg: float,
              grid: int = 65) -> np.ndarray:
        """(npix, npix) float32 response in the gridder's layout about phase centre (ra0, dec0).

        Evaluated exactly on a ``grid`` × ``grid`` lattice spanning the image, then by a
        bicubic spline (the beam is smooth over many pixels; 16 M exact evaluations per
        time and channel would cost minutes).
        """
        from scipy.interpolate import RectBivariateSpline  # noqa: PLC0415

        half = npix // 2
        coarse = np.linspace(-half, npix - 1 - half, min(grid, npix))
        ra, dec = sin_to_radec(coarse[:, None] * cell_rad, coarse[None, :] * cell_rad,
                               ra0_deg=ra0_deg, dec0_deg=dec0_deg)
        values = self.response(ra, dec)
        if coarse.size < 4:
            return np.full((npix, npix), float(values.mean()), np.float32)
        spline = RectBivariateSpline(coarse, coarse, values, kx=3, ky=3)
        pix = np.arange(npix, dtype=np.float64) - half
        return np.clip(spline(pix, pix), 0.0, 1.0).astype(np.float32)


def sin_to_radec(l_east: Any, m_north: Any, *, ra0_deg: float, dec0_deg: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (RA, Dec) degrees of direction cosines (l east, m north) about (ra0, dec0)."""
    le, m = np.broadcast_arrays(np.asarray(l_east, np.float64), np.asarray(m_north, np.float64))
    d0 = np.radians(dec0_deg)
    n = np.sqrt(np.clip(1.0 - le * le - m * m, 0.0, 1.0))
    dec = np.arcsin(np.clip(m * np.cos(d0) + n * np.sin(d0), -1.0, 1.0))
    ra = np.radians(ra0_deg) + np.arctan2(le, n * np.cos(d0) - m * np.sin(d0))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def radec_to_sin(ra_deg: Any, dec_deg: Any, *, ra0_deg: float, dec0_deg: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Direction cosines (l east, m north) of ICRS positions about (ra0, dec0)."""
    ra = np.radians(np.asarray(ra_deg, np.float64))
    dec = np.radians(np.asarray(dec_deg, np.float64))
    d0, dra = np.radians(dec0_deg), ra - np.radians(ra0_deg)
    le = np.cos(dec) * np.sin(dra)
    m = np.sin(dec) * np.cos(d0) - np.cos(dec) * np.sin(d0) * np.cos(dra)
    return le, m


def drift_scan_beam(*, times_mjd: Any, dec_deg: float, freq_hz: Any,
                    freq_weight: Any | None = None, max_freqs: int = 16,
                    max_times: int = 24, site: Site = OVRO) -> PrimaryBeam:
    """The beam of a meridian drift scan at apparent declination ``dec_deg``.

    times_mjd : (ntime,) integration mid-times (UTC); freq_hz, freq_weight : (nchan,)
    channels and the imaging weight each carried. Channels are merged into at most
    ``max_freqs`` weighted groups and times thinned to ``max_times`` (the beam changes
    slowly along both).
    """
    from pipeline.instrument.phasing import use_bundled_iers  # noqa: PLC0415

    use_bundled_iers()
    times = np.sort(np.asarray(times_mjd, np.float64).ravel())
    if times.size > max_times:
        times = times[np.round(np.linspace(0, times.size - 1, max_times)).astype(int)]
    ra, dec = meridian_icrs(times + 2400000.5, dec_deg, site)
    f = np.asarray(freq_hz, np.float64).ravel()
    w = np.ones_like(f) if freq_weight is None else np.asarray(freq_weight, np.float64).ravel()
    if f.size > max_freqs:
        groups = np.array_split(np.argsort(f), max_freqs)
        wg = np.array([w[g].sum() for g in groups])
        fg = np.array([(f[g] * w[g]).sum() / w[g].sum() if w[g].sum() > 0 else f[g].mean()
                       for g in groups])
        f, w = fg, wg
    return PrimaryBeam(pointing_ra_deg=np.atleast_1d(ra), pointing_dec_deg=np.atleast_1d(dec),
                       freq_hz=f, freq_weight=w)


def pb_correct(image: Any, pb: Any, *, cutoff: float, backend: Backend) -> Any:
    """``image / pb`` where ``pb ≥ cutoff``, NaN (blank) elsewhere; float32 of the backend."""
    xp = backend.xp
    pb = backend.asarray(pb, xp.float32)
    ok = pb >= cutoff
    return xp.where(ok, image / xp.where(ok, pb, 1), xp.nan).astype(xp.float32)
