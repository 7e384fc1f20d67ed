"""Read a chunk's 16 subband UVH5 files as one frequency-concatenated, phased UVData.

pyuvdata reads the metadata of one file (antennas, times, baselines, phase centre);
the other files' headers are only checked to agree with it. The visibilities, flags and
sample counts of every file go straight from h5py into one preallocated full-band array
in ascending frequency — no per-file UVData, no concatenation copy. Phasing lets
pyuvdata compute the new uvw on the metadata and applies the w-term phasor in float32
blocks here (``apply_w_phasor``). Tests hold the result equal to pyuvdata's own
read → phase within float32 tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
from pyuvdata import UVData

#: Header datasets that must be identical in every subband file of a chunk.
SAME_IN_EVERY_FILE = ("ant_1_array", "ant_2_array", "time_array", "polarization_array")
SPEED_OF_LIGHT = 299_792_458.0
_PHASOR_BLOCK_ROWS = 4096


def _header(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        head = f["Header"]
        out = {k: head[k][()] for k in (*SAME_IN_EVERY_FILE, "freq_array", "channel_width")}
        out["shape"] = np.array(f["Data/visdata"].shape)
    out["freq_array"] = np.ravel(out["freq_array"])
    out["channel_width"] = np.broadcast_to(np.ravel(out["channel_width"]),
                                           out["freq_array"].shape).copy()
    return out


def _read_into(dset: h5py.Dataset, buf: np.ndarray) -> None:
    if dset.dtype == buf.dtype:
        dset.read_direct(buf)
    elif dset.dtype.names:  # integer or float (r, i) compound from another writer
        raw = dset[()]
        buf.real, buf.imag = raw[dset.dtype.names[0]], raw[dset.dtype.names[1]]
    else:
        buf[...] = dset[()]


def read_group(files: Sequence[str | Path], *, progress: Callable[[float], None] = lambda f: None
               ) -> UVData:
    """One UVData over all ``files``: channels ascending, one spectral window, unprojected.

    Raises ValueError naming the file whose baselines, times, polarizations or channels
    disagree with the others, or that cannot be read.
    """
    paths = [Path(f) for f in files]
    headers = []
    for path in paths:
        try:
            headers.append(_header(path))
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path}: cannot read as UVH5 ({exc})") from exc
    order = np.argsort([h["freq_array"].min() for h in headers])  # subbands arrive high first
    paths = [paths[i] for i in order]
    headers = [headers[i] for i in order]
    ref = headers[0]
    for path, head in zip(paths[1:], headers[1:], strict=True):
        for key in SAME_IN_EVERY_FILE:
            if not np.array_equal(head[key], ref[key]):
                raise ValueError(f"{path}: {key} differs from {paths[0].name}'s; "
                                 "the subbands of one chunk must share it")
    freqs = np.concatenate([np.sort(h["freq_array"]) for h in headers])
    widths = np.concatenate([h["channel_width"][np.argsort(h["freq_array"])] for h in headers])
    if np.any(np.diff(freqs) <= 0):
        raise ValueError(f"{paths[0]}…{paths[-1].name}: subband frequencies overlap or repeat")

    uvd = UVData()
    try:
        uvd.read(str(paths[0]), file_type="uvh5", read_data=False, run_check=False,
                 check_extra=False, run_check_acceptability=False, fix_old_proj=False,
                 background_lsts=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{paths[0]}: cannot read as UVH5 ({exc})") from exc
    n_blt, n_pol = int(ref["shape"][0]), int(ref["shape"][2])
    data = np.empty((n_blt, freqs.size, n_pol), np.complex64)
    flags = np.empty(data.shape, bool)
    nsamples = np.empty(data.shape, np.float32)
    start = 0
    for i, (path, head) in enumerate(zip(paths, headers, strict=True)):
        n = head["freq_array"].size
        # Channels within a file may descend: read in file order, place ascending.
        flip = slice(None, None, -1) if n > 1 and head["freq_array"][0] > head["freq_array"][-1] \
            else slice(None)
        try:
            with h5py.File(path, "r") as f:
                for name, out in (("visdata", data), ("flags", flags), ("nsamples", nsamples)):
                    buf = np.empty((n_blt, n, n_pol), out.dtype)
                    _read_into(f["Data"][name], buf)
                    out[:, start:start + n, :] = buf[:, flip, :]
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path}: cannot read its visibilities ({exc})") from exc
        start += n
        progress((i + 1) / len(paths))

    uvd.Nfreqs = freqs.size
    uvd.freq_array = freqs
    uvd.channel_width = widths
    uvd.Nspws = 1
    uvd.spw_array = np.array([0])
    uvd.flex_spw_id_array = np.zeros(freqs.size, dtype=int)
    uvd.data_array, uvd.flag_array, uvd.nsample_array = data, flags, nsamples
    return uvd


def apply_w_phasor_inplace(data: np.ndarray, delta_w_m: np.ndarray, freqs_hz: np.ndarray, *,
                           block_rows: int = _PHASOR_BLOCK_ROWS) -> None:
    """Multiply ``data`` (nblt, nchan, npol) by exp(-2πi Δw f / c), in place.

    The phase is formed in float64 and reduced to one turn before it becomes a float32
    phasor, so precision does not depend on the size of w·f/c.
    """
    scale = freqs_hz.astype(np.float64)[None, :] / SPEED_OF_LIGHT
    for start in range(0, data.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        turns = delta_w_m[rows, None].astype(np.float64) * scale
        turns -= np.round(turns)
        angle = (-2 * np.pi * turns).astype(np.float32)
        phasor = np.empty(angle.shape, np.complex64)
        np.cos(angle, out=phasor.real)
        np.sin(angle, out=phasor.imag)
        data[rows] *= phasor[:, :, None]


def phase_inplace(uvd: UVData, *, ra_deg: float, dec_deg: float, name: str) -> None:
    """Phase unprojected ``uvd`` to (ra, dec) ICRS: pyuvdata's uvw, our float32 phasor."""
    if not uvd._check_for_cat_type("unprojected").all():
        raise ValueError(f"{name}: expected unprojected (drift-scan) data to phase")
    arrays = uvd.data_array, uvd.flag_array, uvd.nsample_array
    # Without data, pyuvdata's phase() only recomputes uvw and the phase-centre metadata.
    uvd.data_array = uvd.flag_array = uvd.nsample_array = None
    try:
        uvd.phase(lon=np.deg2rad(ra_deg), lat=np.deg2rad(dec_deg), epoch="J2000",
                  phase_frame="icrs", cat_type="sidereal", cat_name=name)
    finally:
        uvd.data_array, uvd.flag_array, uvd.nsample_array = arrays
    # Unprojected data carry no w-term (old w = 0): the whole new w is applied.
    apply_w_phasor_inplace(uvd.data_array, uvd.uvw_array[:, 2], uvd.freq_array)
