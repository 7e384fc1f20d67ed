"""Small real UVH5 subband files shaped like the DSA-110 correlator's, for tests and benchmarks.

One chunk is 16 files ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5``; sb00 holds the highest frequencies
and each file lists its channels in descending order. The data are unprojected (drift scan)
with the pointing declination in ``extra_keywords['phase_center_dec']`` (radians), as the
DSA-110 writer records it. Seeded random visibilities; autocorrelations real and positive.
Antennas stand on their pads of ``data/antennas.csv`` and the band is the instrument's
(:mod:`pipeline.instrument.telescope`), so the files pass ingest's instrument check.

``uvdata`` builds the same kind of file for any instrument (site, band, channels,
polarizations, integration time, antennas, baseline order): the foreign files that
ingest must turn away.
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

from pipeline.instrument import telescope as inst
from pipeline.instrument.phasing import use_bundled_iers

OVRO = EarthLocation.from_geodetic(lon=-118.2825 * u.deg, lat=37.2339 * u.deg, height=1222 * u.m)
N_SUBBANDS = 16
BAND_LOW_HZ = inst.BAND_LOW_EDGE_HZ  # lower edge of the lowest correlator channel
BAND_WIDTH_HZ = N_SUBBANDS * inst.SUBBAND_WIDTH_HZ
INT_TIME_S = 12.884901888
NAME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def subband_freqs(sb: int, n_chan: int) -> np.ndarray:
    """Channel centres of subband ``sb`` in Hz, descending as the correlator writes them."""
    width = BAND_WIDTH_HZ / (N_SUBBANDS * n_chan)
    lo = BAND_LOW_HZ + (N_SUBBANDS - 1 - sb) * n_chan * width
    return (lo + (np.arange(n_chan) + 0.5) * width)[::-1]


def telescope(n_ant: int, *, seed: int = 0, names: Sequence[str] | None = None) -> Telescope:
    """A DSA-110 telescope at OVRO: antennas DSA-001… on their layout pads.

    Each antenna stands up to 2 cm (seeded) off its pad, as a fresh survey might place it.
    """
    layout = inst.load_layout()
    names = list(names) if names is not None else [f"DSA-{i + 1:03d}" for i in range(n_ant)]
    pads = [layout.names.index(n) for n in names]
    jitter = np.random.default_rng(seed).uniform(-0.02, 0.02, (len(names), 3)) / np.sqrt(3)
    return other_telescope(name="OVRO_DSA", location=OVRO,
                           ecef_m=layout.ecef_m[pads] + jitter, names=names)


def other_telescope(*, name: str, location: EarthLocation, names: Sequence[str],
                    ecef_m: np.ndarray | None = None, enu_m: np.ndarray | None = None,
                    diameter_m: float = 4.65) -> Telescope:
    """A pyuvdata Telescope at ``location``; antennas at absolute ECEF or ENU metres."""
    center = np.array([location.x.to_value(u.m), location.y.to_value(u.m),
                       location.z.to_value(u.m)])
    if ecef_m is None:
        ecef_m = ECEF_from_ENU(np.asarray(enu_m, float), latitude=location.lat.rad,
                               longitude=location.lon.rad,
                               altitude=location.height.to_value(u.m))
    n = len(names)
    return Telescope.new(name=name, location=location, antenna_positions=ecef_m - center,
                         antenna_names=list(names), antenna_numbers=list(range(1, n + 1)),
                         instrument=name, x_orientation="east", antenna_diameters=[diameter_m] * n,
                         feeds=["x", "y"], mount_type="fixed", update_from_known=False)


def subband_uvdata(start: datetime, sb: int, *, n_ant: int = 6, n_chan: int = 2, n_times: int = 4,
                   dec_deg: float = 33.0, seed: int = 0, autos: bool = True,
                   ant_names: Sequence[str] | None = None) -> UVData:
    """One subband of one chunk as a UVData; times start at ``start`` (the chunk's start)."""
    return uvdata(start, telescope=telescope(n_ant, seed=seed, names=ant_names),
                  freqs_hz=subband_freqs(sb, n_chan),
                  channel_width_hz=BAND_WIDTH_HZ / (N_SUBBANDS * n_chan), n_times=n_times,
                  dec_deg=dec_deg, seed=[seed, sb], autos=autos)


def uvdata(start: datetime, *, telescope: Telescope, freqs_hz: np.ndarray,
           channel_width_hz: float, polarizations: Sequence[str] = ("xx", "yy"),
           integration_s: float = INT_TIME_S, n_times: int = 4, dec_deg: float = 33.0,
           seed: int | Sequence[int] = 0, autos: bool = True,
           ant2_first: bool = False) -> UVData:
    """A drift-scan UVData of any instrument; times start at ``start``.

    ``ant2_first`` lists each cross baseline as (ant_2, ant_1), as some writers do.
    """
    use_bundled_iers()
    t0 = Time(start, scale="utc")
    times = t0.jd + (np.arange(n_times) + 0.5) * integration_s / 86400.0
    ants = telescope.antenna_numbers
    antpairs = [(a, b) for i, a in enumerate(ants) for b in ants[i + (0 if autos else 1):]]
    if ant2_first:
        antpairs = [(b, a) for a, b in antpairs]
    n_bl = len(antpairs)
    rng = np.random.default_rng([*np.atleast_1d(seed), int(t0.unix)])
    shape = (n_times * n_bl, len(freqs_hz), len(polarizations))
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ant1 = np.tile([p[0] for p in antpairs], n_times)
    ant2 = np.tile([p[1] for p in antpairs], n_times)
    auto = ant1 == ant2
    data[auto] = np.abs(data[auto]) + 10.0
    uvd = UVData.new(
        freq_array=np.asarray(freqs_hz, float), polarization_array=list(polarizations),
        times=times, telescope=telescope,
        antpairs=antpairs, do_blt_outer=True, time_axis_faster_than_bls=False,
        integration_time=integration_s, channel_width=channel_width_hz,
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
