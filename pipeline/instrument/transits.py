"""When a position crosses the meridian at the array: transits of calibrators and sources.

Positions are ICRS; the meridian is apparent (LST), so each is carried to its apparent
place at the time first (precession since J2000 moves it ~0.4° in RA by 2026).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from astropy import units as u
from astropy.time import Time

from pipeline.instrument.phasing import use_bundled_iers
from pipeline.instrument.telescope import OVRO, Site

SIDEREAL_PER_SOLAR = 1.002737909350795


def apparent_position(ra_deg: float, dec_deg: float, when: datetime, *,
                      site: Site = OVRO) -> tuple[float, float]:
    """Apparent (topocentric, true equator and equinox) RA and Dec of an ICRS position, deg."""
    from pyuvdata.utils.phasing import transform_icrs_to_app  # noqa: PLC0415

    use_bundled_iers()
    jd = np.array([Time(when, scale="utc").jd])
    ra, dec = transform_icrs_to_app(time_array=jd, ra=np.radians([ra_deg]),
                                    dec=np.radians([dec_deg]),
                                    telescope_loc=site.earth_location())
    return float(np.degrees(ra[0]) % 360.0), float(np.degrees(dec[0]))


def hour_angle_deg(ra_deg: float, dec_deg: float, when: datetime, *,
                   site: Site = OVRO) -> float:
    """Hour angle of the ICRS position at ``when`` (naive UTC), in [0, 360) degrees."""
    use_bundled_iers()
    lst = Time(when, scale="utc").sidereal_time("apparent", longitude=site.lon_deg * u.deg)
    ra_app, _ = apparent_position(ra_deg, dec_deg, when, site=site)
    return float((lst.deg - ra_app) % 360.0)


def previous_transit(ra_deg: float, dec_deg: float, before: datetime, *,
                     site: Site = OVRO) -> datetime:
    """The last meridian transit of the ICRS position at or before ``before`` (naive UTC)."""
    when = before
    for _ in range(3):  # converges to well under a second in two steps
        ha = hour_angle_deg(ra_deg, dec_deg, when, site=site)
        if ha > 359.99:  # just before transit: step back a whole day, not a few seconds
            ha -= 360.0
        when -= timedelta(hours=ha / 15.0 / SIDEREAL_PER_SOLAR)
        if abs(ha) < 1e-4:
            break
    return when


def next_transit(ra_deg: float, dec_deg: float, after: datetime, *,
                 site: Site = OVRO) -> datetime:
    """The first meridian transit of the ICRS position after ``after`` (naive UTC)."""
    return previous_transit(ra_deg, dec_deg,
                            after + timedelta(hours=24 / SIDEREAL_PER_SOLAR), site=site)


def seconds_from_transit(ra_deg: float, dec_deg: float, when: datetime, *,
                         site: Site = OVRO) -> float:
    """Signed solar seconds from the nearest meridian transit of the position to ``when``.

    Positive after the transit (hour angle east of the meridian is negative), in
    (-half a sidereal day, +half a sidereal day].
    """
    ha = hour_angle_deg(ra_deg, dec_deg, when, site=site)
    if ha > 180.0:
        ha -= 360.0
    return ha / 15.0 * 3600.0 / SIDEREAL_PER_SOLAR
