"""UVH5 subband files as the correlator writes them: one per subband, written atomically."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.instrument.telescope import DISH_DIAMETER_M, INTEGRATION_S, Layout

TELESCOPE_NAME = "DSA-110"
POLARIZATIONS = ("xx", "yy")


@contextlib.contextmanager
def offline_iers() -> Iterator[None]:
    """Astropy uses its bundled IERS tables and never downloads, for this block only.

    Observatory networks are closed; without this any LST/UT1 computation tries to fetch
    IERS-A and fails.
    """
    from astropy.utils import iers  # noqa: PLC0415

    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None):
        yield


def make_telescope(layout: Layout, ant_idx: np.ndarray):
    """A pyuvdata Telescope with the chosen pads (numbered by pad: DSA-007 is number 7)."""
    from astropy import units as u  # noqa: PLC0415
    from pyuvdata import Telescope  # noqa: PLC0415

    loc = layout.site.earth_location()
    xyz0 = np.array([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)])
    return Telescope.new(
        name=TELESCOPE_NAME, location=loc, instrument=TELESCOPE_NAME,
        antenna_positions=layout.ecef_m[ant_idx] - xyz0,
        antenna_names=[layout.names[i] for i in ant_idx],
        antenna_numbers=[int(i) + 1 for i in ant_idx],
        antenna_diameters=np.full(len(ant_idx), DISH_DIAMETER_M),
        feeds=["x", "y"], x_orientation="east", mount_type="alt-az",
        update_from_known=False)


def baseline_pairs(n_ant: int, *, autos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Antenna index pairs (i <= j), in the correlator's order: by i, then j."""
    a1, a2 = np.triu_indices(n_ant, k=0 if autos else 1)
    return a1, a2


def build_uvdata(*, telescope, ant_numbers: np.ndarray, a1: np.ndarray, a2: np.ndarray,
                 times_jd: np.ndarray, freqs_hz: np.ndarray, channel_width_hz: float,
                 data: np.ndarray, dec_deg: float, extra: dict | None = None,
                 history: str = ""):
    """A UVData for one subband, unprojected, rows ordered time-major then baseline.

    data : (ntime, nbl, nchan, npol) complex64, Jy (uncalibrated).
    """
    from pyuvdata import UVData  # noqa: PLC0415

    nt, nbl, nchan, npol = data.shape
    antpairs = [(int(ant_numbers[i]), int(ant_numbers[j])) for i, j in zip(a1, a2, strict=True)]
    uvd = UVData.new(
        freq_array=np.asarray(freqs_hz, float), polarization_array=list(POLARIZATIONS),
        times=np.asarray(times_jd, float), telescope=telescope, antpairs=antpairs,
        do_blt_outer=True, time_axis_faster_than_bls=False,
        integration_time=INTEGRATION_S, channel_width=channel_width_hz, empty=True,
        vis_units="uncalib", history=history)
    uvd.data_array = np.ascontiguousarray(data.reshape(nt * nbl, nchan, npol))
    uvd.flag_array = np.zeros(uvd.data_array.shape, dtype=bool)
    uvd.nsample_array = np.ones(uvd.data_array.shape, dtype=np.float32)
    # DSA-110 convention: the pointing declination in radians; ingest/convert read it
    uvd.extra_keywords = {"phase_center_dec": float(np.radians(dec_deg)),
                          "pointing_dec_deg": float(dec_deg), "ha_phase_center": 0.0,
                          **(extra or {})}
    return uvd


def write_atomic(uvd, path: Path) -> int:
    """Write ``uvd`` to ``path`` through a hidden temporary name; returns the size in bytes.

    The rename is atomic on one filesystem, so a watcher never sees half a file; the
    temporary name (``.NAME.tmp``) matches no ``*.hdf5`` glob.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # As the DSA-110 correlator writes: nothing compressed, one integration per chunk
        # (pyuvdata's default tiny chunks make every reader copy element by element).
        chunks = (uvd.Nbls, uvd.Nfreqs, uvd.Npols)
        uvd.write_uvh5(str(tmp), clobber=True, run_check=False, data_compression=None,
                       flags_compression=None, nsample_compression=None, chunks=chunks)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size
