"""Meridian transits against astropy's own hour angle."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from astropy import units as u
from astropy.coordinates import TETE, SkyCoord
from astropy.time import Time

from pipeline.instrument.telescope import OVRO
from pipeline.instrument.transits import hour_angle_deg, next_transit, previous_transit

RA_3C48, DEC_3C48 = 24.422083, 33.15975


@pytest.mark.parametrize("before", [datetime(2026, 11, 23, 12), datetime(2026, 3, 1, 5, 21)])
def test_previous_transit_is_on_the_meridian_and_within_a_day(before):
    t = previous_transit(RA_3C48, DEC_3C48, before)
    assert timedelta(0) <= before - t < timedelta(hours=24)
    ha = hour_angle_deg(RA_3C48, DEC_3C48, t)
    assert min(ha, 360 - ha) < 15 / 3600  # within one second of time
    # independently: astropy's apparent place (true equator) of 3C48 against the LST
    when = Time(t, scale="utc")
    app = SkyCoord(RA_3C48 * u.deg, DEC_3C48 * u.deg).transform_to(TETE(obstime=when))
    lst = when.sidereal_time("apparent", longitude=OVRO.lon_deg * u.deg).deg
    assert abs((lst - app.ra.deg + 180) % 360 - 180) < 2 / 3600 * 15
    assert abs(app.ra.deg - RA_3C48) > 0.1  # precession: apparent is not ICRS


def test_next_transit_follows_by_a_sidereal_day():
    t0 = previous_transit(RA_3C48, DEC_3C48, datetime(2026, 11, 23, 12))
    t1 = next_transit(RA_3C48, DEC_3C48, t0 + timedelta(minutes=1))
    assert abs((t1 - t0).total_seconds() - 86164.09) < 2
