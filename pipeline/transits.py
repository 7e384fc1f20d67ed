"""When a position crosses the meridian at the array: transits of calibrators and sources."""

from __future__ import annotations

from datetime import datetime, timedelta

from astropy import units as u
from astropy.time import Time

from pipeline.phasing import use_bundled_iers
from pipeline.simulate.instrument import OVRO, Site

SIDEREAL_PER_SOLAR = 1.002737909350795


def hour_angle_deg(ra_deg: float, when: datetime, *, site: Site = OVRO) -> float:
    """Hour angle of ``ra_deg`` at ``when`` (naive UTC), in [0, 360) degrees."""
    use_bundled_iers()
    lst = Time(when, scale="utc").sidereal_time("apparent", longitude=site.lon_deg * u.deg)
    return float((lst.deg - ra_deg) % 360.0)


def previous_transit(ra_deg: float, before: datetime, *, site: Site = OVRO) -> datetime:
    """The last meridian transit of ``ra_deg`` at or before ``before`` (naive UTC)."""
    when = before
    for _ in range(3):  # converges to well under a second in two steps
        ha = hour_angle_deg(ra_deg, when, site=site)
        if ha > 359.99:  # just before transit: step back a whole day, not a few seconds
            ha -= 360.0
        when -= timedelta(hours=ha / 15.0 / SIDEREAL_PER_SOLAR)
        if abs(ha) < 1e-4:
            break
    return when


def next_transit(ra_deg: float, after: datetime, *, site: Site = OVRO) -> datetime:
    """The first meridian transit of ``ra_deg`` after ``after`` (naive UTC)."""
    return previous_transit(ra_deg, after + timedelta(hours=24 / SIDEREAL_PER_SOLAR),
                            site=site)


def seconds_from_transit(ra_deg: float, when: datetime, *, site: Site = OVRO) -> float:
    """Signed solar seconds from the nearest meridian transit of ``ra_deg`` to ``when``.

    Positive after the transit (hour angle east of the meridian is negative), in
    (-half a sidereal day, +half a sidereal day].
    """
    ha = hour_angle_deg(ra_deg, when, site=site)
    if ha > 180.0:
        ha -= 360.0
    return ha / 15.0 * 3600.0 / SIDEREAL_PER_SOLAR
