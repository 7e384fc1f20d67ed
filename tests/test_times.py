"""MJD ↔ UTC: the one helper agrees with astropy and round-trips to the millisecond."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time

from pipeline.instrument.times import MJD_UNIX_EPOCH, mjd_to_unix_ms, mjd_to_utc, utc_to_mjd

DATES = [datetime(1970, 1, 1), datetime(2026, 11, 23, 5, 19, 18, 123000),
         datetime(2017, 1, 1, 0, 0, 1), datetime(2024, 6, 30, 12)]


@pytest.mark.parametrize("t", DATES)
def test_utc_to_mjd_is_astropys_utc_mjd(t):
    # 1e-9 d = 86 µs: far below the millisecond the store keeps, far above rounding
    assert utc_to_mjd(t) == pytest.approx(Time(t, scale="utc").mjd, abs=1e-9, rel=0)
    assert mjd_to_utc(utc_to_mjd(t)) == pd.Timestamp(t)


def test_aware_times_are_converted_to_utc_and_series_round_trip():
    aware = datetime(2026, 11, 23, 7, 19, 18, tzinfo=timezone(timedelta(hours=2)))
    assert utc_to_mjd(aware) == pytest.approx(utc_to_mjd(datetime(2026, 11, 23, 5, 19, 18)),
                                              abs=1e-9, rel=0)
    mjd = pd.Series([utc_to_mjd(t) for t in DATES])
    assert list(mjd_to_utc(mjd)) == [pd.Timestamp(t) for t in DATES]
    # a millisecond is what is kept: 0.4 ms rounds away, 0.6 ms to the next
    t0 = utc_to_mjd(DATES[1])
    assert mjd_to_utc(t0 + 0.4e-3 / 86400) == pd.Timestamp(DATES[1])
    assert mjd_to_utc(t0 + 0.6e-3 / 86400) == pd.Timestamp(DATES[1]) + pd.Timedelta("1ms")


def test_unix_milliseconds_for_plots():
    got = mjd_to_unix_ms(np.array([MJD_UNIX_EPOCH, MJD_UNIX_EPOCH + 1.5]))
    np.testing.assert_allclose(got, [0.0, 1.5 * 86_400_000.0], rtol=0, atol=1e-3)
    t = DATES[1]
    ms = pd.Timestamp(t).value / 1e6
    assert float(mjd_to_unix_ms(utc_to_mjd(t))) == pytest.approx(ms, abs=0.05, rel=0)


def test_a_leap_second_day_is_off_by_at_most_that_second():
    # astropy's UTC MJD stretches 2016-12-31 to 86 401 s; Unix time, pandas and this
    # helper keep 86 400, so late that day they differ by up to the leap second
    t = datetime(2016, 12, 31, 23, 59, 59)
    off_s = (utc_to_mjd(t) - Time(t, scale="utc").mjd) * 86400
    assert 0.99 < off_s <= 1.0 + 1e-4
