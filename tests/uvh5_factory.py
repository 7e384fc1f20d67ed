"""Small real UVH5 subband files shaped like the DSA-110 correlator's, for tests and benchmarks.

One chunk is 16 files ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5``; sb00 holds the highest frequencies
and each file lists its channels in descending order. The data are unprojected (drift scan)
with the pointing declination in ``extra_keywords['phase_center_dec']`` (radians), as the
DSA-110 writer records it. Seeded random visibilities; autocorrelations real and positive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.time import Time
from pyuvdata import Telescope, UVData
from pyuvdata.utils import ECEF_from_ENU

from pipeline.instrument.phasing import use_bundled_iers

OVRO = EarthLocation.from_geodetic(lon=-118.2825 * u.deg, lat=37.2339 * u.deg, height=1222 * u.m)
N_SUBBANDS = 16
BAND_LOW_HZ = 1311.25e6 - 244140.625 / 2  # lower edge of the lowest full-size channel
BAND_WIDTH_HZ = 768 * 244140.625
INT_TIME_S = 12.884901888
NAME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def subband_freqs(sb: int, n_chan: int) -> np.ndarray:
    """Channel centres of subband ``sb`` in Hz, descending as the correlator writes them."""
    width = BAND_WIDTH_HZ / (N_SUBBANDS * n_chan)
    lo = BAND_LOW_HZ + (N_SUBBANDS - 1 - sb) * n_chan * width
    return (lo + (np.arange(n_chan) + 0.5) * width)[::-1]


def telescope(n_ant: int, *, seed: int = 0, names: Sequence[str] | None = None) -> Telescope:
    """A DSA-110-like telescope: antennas DSA-001… scattered over ~1 km at OVRO."""
    rng = np.random.default_rng(seed)
    enu = np.column_stack([rng.uniform(-600, 600, n_ant), rng.uniform(-300, 300, n_ant),
                           rng.uniform(-1, 1, n_ant)])
    lat, lon, alt = OVRO.lat.rad, OVRO.lon.rad, OVRO.height.to_value(u.m)
    ecef = ECEF_from_ENU(enu, latitude=lat, longitude=lon, altitude=alt)
    center = np.array([OVRO.x.to_value(u.m), OVRO.y.to_value(u.m), OVRO.z.to_value(u.m)])
    names = list(names) if names is not None else [f"DSA-{i + 1:03d}" for i in range(n_ant)]
    return Telescope.new(name="OVRO_DSA", location=OVRO, antenna_positions=ecef - center,
                         antenna_names=names, antenna_numbers=list(range(1, n_ant + 1)),
                         instrument="DSA", x_orientation="east", antenna_diameters=[4.65] * n_ant,
                         feeds=["x", "y"], mount_type="fixed", update_from_known=False)


def subband_uvdata(start: datetime, sb: int, *, n_ant: int = 6, n_chan: int = 2, n_times: int = 4,
                   dec_deg: float = 33.0, seed: int = 0, autos: bool = True,
                   ant_names: Sequence[str] | None = None) -> UVData:
    """One subband of one chunk as a UVData; times start at ``start`` (the chunk's start)."""
    use_bundled_iers()
    tel = telescope(n_ant, seed=seed, names=ant_names)
    t0 = Time(start, scale="utc")
    times = t0.jd + (np.arange(n_times) + 0.5) * INT_TIME_S / 86400.0
    ants = tel.antenna_numbers
    antpairs = [(a, b) for i, a in enumerate(ants) for b in ants[i + (0 if autos else 1):]]
    n_bl = len(antpairs)
    rng = np.random.default_rng([seed, sb, int(t0.unix)])
    shape = (n_times * n_bl, n_chan, 2)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ant1 = np.tile([p[0] for p in antpairs], n_times)
    ant2 = np.tile([p[1] for p in antpairs], n_times)
    auto = ant1 == ant2
    data[auto] = np.abs(data[auto]) + 10.0
    freqs = subband_freqs(sb, n_chan)
    width = BAND_WIDTH_HZ / (N_SUBBANDS * n_chan)
    uvd = UVData.new(
        freq_array=freqs, polarization_array=["xx", "yy"], times=times, telescope=tel,
        antpairs=antpairs, do_blt_outer=True, time_axis_faster_than_bls=False,
        integration_time=INT_TIME_S, channel_width=width,
        data_array=data, flag_array=np.zeros(shape, bool),
        nsample_array=np.ones(shape, np.float32), vis_units="uncalib",
        phase_center_catalog={0: {"cat_name": "drift", "cat_type": "unprojected"}},
        phase_center_id_array=np.zeros(n_times * n_bl, int),
        history="tests/uvh5_factory.py")
    uvd.extra_keywords["phase_center_dec"] = float(np.deg2rad(dec_deg))
    return uvd


def write_chunk(directory: Path, start: datetime, *, subbands: Iterable[int] = range(N_SUBBANDS),
                jitter_s: Sequence[float] | None = None, **kw) -> list[Path]:
    """Write one chunk's subband files into ``directory``; returns their paths (sb order).

    ``jitter_s[sb]`` shifts that file's name timestamp, as the correlator's clocks do.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for sb in subbands:
        shift = timedelta(seconds=jitter_s[sb] if jitter_s is not None else 0)
        path = directory / f"{(start + shift).strftime(NAME_FORMAT)}_sb{sb:02d}.hdf5"
        subband_uvdata(start, sb, **kw).write_uvh5(str(path), clobber=True)
        paths.append(path)
    return paths
