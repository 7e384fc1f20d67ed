"""Where a drift-scan chunk points and where it is phased: the meridian at mid-time.

The correlator writes unprojected data (baselines in ENU, no phase tracking). Conversion
phases each chunk to the meridian at its mid-time: the apparent position (RA = the local
apparent sidereal time at OVRO, Dec = the pointing declination) carried to ICRS, so the
phase centre is where the primary beam points at mid-time (precession since J2000 moves
it ~0.4° from "ICRS RA = apparent LST").
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.coordinates import EarthLocation
from astropy.utils import iers

#: Keys under which a writer records the pointing declination in ``extra_keywords``,
#: with the unit each uses. DSA-110's writer uses ``phase_center_dec`` in radians.
DEC_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("phase_center_dec", "rad"), ("pointing_dec", "rad"), ("dec_deg", "deg"),
    ("pointing_dec_deg", "deg"))


def use_bundled_iers() -> None:
    """Make astropy use the IERS tables shipped with astropy-iers-data, never download.

    The observatory network is closed; without this, any UT1/LST computation tries to
    fetch IERS-A and fails. Idempotent; sets astropy's process-wide configuration.
    """
    iers.conf.auto_download = False
    iers.conf.auto_max_age = None


def pointing_dec_deg(uvd, *, source: str = "") -> float:
    """Pointing declination of a drift scan, in degrees, from a UVData's metadata.

    Tried in order: a declination recorded in ``extra_keywords`` (DEC_KEYWORDS); a
    sidereal phase centre's latitude; an unprojected phase centre given in alt/az on the
    meridian (el ≠ 90°). ``source`` names the file in error messages.
    """
    for key, unit in DEC_KEYWORDS:
        if key in uvd.extra_keywords:
            value = float(uvd.extra_keywords[key])
            return float(np.rad2deg(value)) if unit == "rad" else value
    entries = list(uvd.phase_center_catalog.values())
    if len(entries) != 1:
        raise ValueError(f"{source}: {len(entries)} phase centres; a drift scan has one")
    entry = entries[0]
    if entry["cat_type"] == "sidereal":
        return float(np.rad2deg(entry["cat_lat"]))
    if entry["cat_type"] in ("unprojected", "driftscan") and entry.get("cat_frame") == "altaz":
        az, el = float(entry["cat_lon"]), float(entry["cat_lat"])
        lat = np.deg2rad(uvd.telescope.location.lat.deg)
        if abs(el - np.pi / 2) > 1e-9:
            return float(np.rad2deg(np.arcsin(np.sin(el) * np.sin(lat)
                                              + np.cos(el) * np.cos(lat) * np.cos(az))))
        warnings.warn(f"{source}: no pointing declination recorded and the phase centre is "
                      "the zenith; using the telescope latitude", stacklevel=2)
        return float(uvd.telescope.location.lat.deg)
    raise ValueError(f"{source}: cannot tell the pointing declination from a "
                     f"{entry['cat_type']} phase centre; record it in "
                     "extra_keywords['phase_center_dec'] (radians)")


def meridian_icrs_deg(times_jd: np.ndarray | float, dec_deg: float,
                      location: EarthLocation) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra_deg, dec_deg) of the meridian at apparent declination ``dec_deg``.

    ``times_jd`` UTC Julian dates, scalar or array; returns arrays of the same size.
    """
    from pyuvdata.utils.phasing import transform_app_to_icrs
    from pyuvdata.utils.times import get_lst_for_time

    use_bundled_iers()
    t = np.atleast_1d(np.asarray(times_jd, float))
    lst = get_lst_for_time(t, telescope_loc=location)
    ra, dec = transform_app_to_icrs(time_array=t, app_ra=lst,
                                    app_dec=np.full(t.shape, np.radians(dec_deg)),
                                    telescope_loc=location)
    return np.degrees(ra), np.degrees(dec)


def mid_jd(time_array: np.ndarray) -> float:
    """Mid-time of a chunk (centre between its first and last integration), JD."""
    unique = np.unique(time_array)
    return float((unique[0] + unique[-1]) / 2)
