"""MJD ↔ UTC in one place: plain arithmetic on the Unix epoch, no IERS table needed.

UTC MJDs as astropy writes them (``Time(t, scale="utc").mjd``): the day fraction is the UTC
time of day, a day 86 400 seconds as in Unix time and numpy/pandas datetimes. Only on a
leap-second day (astropy stretches it to 86 401 s; the last was 2016-12-31) do the two
differ, by up to that second.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

#: MJD of 1970-01-01T00:00 UTC
MJD_UNIX_EPOCH = 40587.0
#: JD − MJD
JD_MINUS_MJD = 2400000.5
MS_PER_DAY = 86_400_000.0


def utc_to_mjd(t: datetime | pd.Timestamp) -> float:
    """UTC (naive, taken as UTC, or aware) → MJD."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return MJD_UNIX_EPOCH + (ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)


def mjd_to_utc(mjd: float | pd.Series) -> pd.Timestamp | pd.Series:
    """MJD → naive UTC timestamp(s), rounded to the millisecond."""
    ms = (pd.to_numeric(mjd) - MJD_UNIX_EPOCH) * MS_PER_DAY
    if isinstance(ms, pd.Series):
        return pd.to_datetime(ms.round(), unit="ms")
    return pd.Timestamp(round(float(ms)), unit="ms")


def mjd_to_unix_ms(mjd: float | np.ndarray | pd.Series) -> np.ndarray:
    """MJD (UTC) → float milliseconds since 1970, what a Bokeh datetime axis plots."""
    return (np.asarray(mjd, dtype=float) - MJD_UNIX_EPOCH) * MS_PER_DAY
