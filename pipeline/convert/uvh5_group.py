"""Read a chunk's 16 subband UVH5 files as one frequency-concatenated, phased dataset.

pyuvdata reads the metadata of one file (antennas, times, baselines, phase centre);
the other files' headers are only checked to agree with it. The visibilities, flags and
sample counts go straight from h5py into their final place: each file's block is one
contiguous channel slice of a buffer kept in the files' own (storage) channel order —
for DSA-110 files, descending — and the ascending band is a reversed view of it
(``GroupLayout.to_ascending``), so nothing is read to a temporary and copied.

Two ways to use it:

- ``read_group`` gives one UVData holding the whole band (tests, small chunks);
- ``open_group`` + ``iter_phased_blocks`` stream row blocks, phased and ascending, through
  a few reused buffers: the ``convert`` stage writes each block to the Measurement Set
  as it comes, so a full-size chunk never sits in memory at once.

Phasing lets pyuvdata compute the new uvw on the metadata (``phase_metadata``) and
applies the w-term phasor in float32 here (``apply_w_phasor_inplace``,
``reorder_and_phase``). Tests hold the result equal to pyuvdata's own read → phase
within float32 tolerance.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from pyuvdata import UVData

#: Header datasets that must be identical in every subband file of a chunk.
SAME_IN_EVERY_FILE = ("ant_1_array", "ant_2_array", "time_array", "polarization_array")
SPEED_OF_LIGHT = 299_792_458.0
_PHASOR_BLOCK_ROWS = 1024
#: Rows per streamed block are sized to about this many bytes of visibilities, rounded
#: to whole HDF5 chunks so that no compressed chunk is decompressed twice.
BLOCK_BYTES = 64 * 2**20
_DATASETS = ("visdata", "flags", "nsamples")
_DTYPES = (np.complex64, np.bool_, np.float32)


@dataclass(frozen=True, kw_only=True)
class GroupLayout:
    """Where each subband file's channels go, and how to view the band ascending.

    ``paths`` are in storage order: file ``i`` fills channels ``chan_slices[i]`` of a
    storage-order buffer in its own channel order; ``buffer[:, to_ascending]`` is the
    band in ascending frequency (a reversed view, a plain view, or — for files that mix
    orders — an index array).
    """

    paths: tuple[Path, ...]
    chan_slices: tuple[slice, ...]
    to_ascending: slice | np.ndarray
    n_blt: int
    n_pol: int
    row_align: int  # a multiple of every dataset's HDF5 chunk length along rows

    @property
    def n_chan(self) -> int:
        """Channels in the whole band."""
        return self.chan_slices[-1].stop


def _header(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        head = f["Header"]
        out = {k: head[k][()] for k in (*SAME_IN_EVERY_FILE, "freq_array", "channel_width")}
        vis = f["Data/visdata"]
        out["shape"] = np.array(vis.shape)
        chunk_rows = [f["Data"][name].chunks for name in _DATASETS]
        out["chunk_rows"] = np.array([c[0] if c else 1 for c in chunk_rows])
    out["freq_array"] = np.ravel(out["freq_array"])
    out["channel_width"] = np.broadcast_to(np.ravel(out["channel_width"]),
                                           out["freq_array"].shape).copy()
    return out


def _ascending_index(freqs: np.ndarray) -> slice | np.ndarray:
    """Index taking storage-order channels to ascending frequency, a slice when it can."""
    order = np.argsort(freqs, kind="stable")
    if np.array_equal(order, np.arange(freqs.size)):
        return slice(None)
    if np.array_equal(order, np.arange(freqs.size)[::-1]):
        return slice(None, None, -1)
    return order


def open_group(files: Sequence[str | Path], *, progress: Callable[[float], None] = lambda f: None
               ) -> tuple[UVData, GroupLayout]:
    """Metadata of the whole band (no data arrays) and the layout to read it by.

    The UVData has channels ascending, one spectral window, and is unprojected; its
    ``data_array``, ``flag_array`` and ``nsample_array`` are None. ``progress`` gets
    0–1 as the files' headers are checked. Raises ValueError naming the file whose
    baselines, times, polarizations or channels disagree with the others, or that
    cannot be read.
    """
    paths = [Path(f) for f in files]
    headers = []
    for i, path in enumerate(paths):
        try:
            headers.append(_header(path))
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path}: cannot read as UVH5 ({exc})") from exc
        reversed_rows = int(np.count_nonzero(headers[-1]["ant_1_array"]
                                             > headers[-1]["ant_2_array"]))
        if reversed_rows:
            # The MS writer needs ant_1 <= ant_2 (CASA's order); say so here, per file.
            raise ValueError(
                f"{path}: {reversed_rows} of {headers[-1]['ant_1_array'].size} rows have "
                "ant_1 > ant_2, which DSA-110's correlator never writes; this file is not "
                "from this array, or conjugate those baselines (pyuvdata: "
                "conjugate_bls('ant1<ant2')) and write it again")
        progress((i + 1) / len(paths))
    # Storage order: the files side by side so that, when each lists its channels
    # descending (DSA-110: sb00 highest), the whole buffer descends and the ascending
    # band is one reversed view.
    first = headers[0]["freq_array"]
    descending = first.size > 1 and first[0] > first[-1]
    order = np.argsort([h["freq_array"].min() for h in headers])
    if descending:
        order = order[::-1]
    paths = [paths[i] for i in order]
    headers = [headers[i] for i in order]
    ref = headers[0]
    for path, head in zip(paths[1:], headers[1:], strict=True):
        for key in SAME_IN_EVERY_FILE:
            if not np.array_equal(head[key], ref[key]):
                raise ValueError(f"{path}: {key} differs from {paths[0].name}'s; "
                                 "the subbands of one chunk must share it")
    stored = np.concatenate([h["freq_array"] for h in headers])
    to_asc = _ascending_index(stored)
    freqs = stored[to_asc]
    widths = np.concatenate([h["channel_width"] for h in headers])[to_asc]
    if np.any(np.diff(freqs) <= 0):
        raise ValueError(f"{paths[0]}…{paths[-1].name}: subband frequencies overlap or repeat")
    bounds = np.cumsum([0] + [h["freq_array"].size for h in headers])
    align = math.lcm(*(int(r) for h in headers for r in h["chunk_rows"]))

    uvd = UVData()
    try:
        uvd.read(str(paths[0]), file_type="uvh5", read_data=False, run_check=False,
                 check_extra=False, run_check_acceptability=False, fix_old_proj=False,
                 background_lsts=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{paths[0]}: cannot read as UVH5 ({exc})") from exc
    uvd.Nfreqs = freqs.size
    uvd.freq_array = freqs
    uvd.channel_width = widths
    uvd.Nspws = 1
    uvd.spw_array = np.array([0])
    uvd.flex_spw_id_array = np.zeros(freqs.size, dtype=int)
    chans = tuple(slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    layout = GroupLayout(
        paths=tuple(paths), chan_slices=chans,
        to_ascending=to_asc, n_blt=int(ref["shape"][0]), n_pol=int(ref["shape"][-1]),
        row_align=align)
    return uvd, layout


def _read_rows(dset: h5py.Dataset, rows: slice, out: np.ndarray, chans: slice) -> None:
    """Read ``rows`` of one file's dataset into ``out[:n, chans]`` (n = rows' length)."""
    n = rows.stop - rows.start
    if dset.ndim == 4:  # (Nblts, 1, Nfreqs, Npols): the old UVH5 shape, DSA-110's writer
        dest, dest_sel = out[:, None], np.s_[:n, :, chans]
    else:
        dest, dest_sel = out, np.s_[:n, chans]
    if dset.dtype == out.dtype:
        dset.read_direct(dest, np.s_[rows], dest_sel)
    elif dset.dtype.names:  # integer or float (r, i) compound from another writer
        raw = dset[rows]
        dest[dest_sel].real, dest[dest_sel].imag = (raw[dset.dtype.names[0]],
                                                    raw[dset.dtype.names[1]])
    else:
        dest[dest_sel] = dset[rows]


@contextlib.contextmanager
def _opened(layout: GroupLayout) -> Iterator[list[h5py.File]]:
    with contextlib.ExitStack() as stack:
        handles = []
        for path in layout.paths:
            try:
                handles.append(stack.enter_context(h5py.File(path, "r")))
            except OSError as exc:
                raise ValueError(f"{path}: cannot read its visibilities ({exc})") from exc
        yield handles


def _read_file_rows(path: Path, f: h5py.File, chans: slice, rows: slice,
                    outs: Sequence[np.ndarray]) -> None:
    try:
        for name, out in zip(_DATASETS, outs, strict=True):
            _read_rows(f["Data"][name], rows, out, chans)
    except (OSError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read its visibilities ({exc})") from exc


def read_rows_into(handles: Sequence[h5py.File], layout: GroupLayout, rows: slice,
                   outs: Sequence[np.ndarray]) -> None:
    """Read ``rows`` of every file into storage-order (vis, flags, nsamples) buffers."""
    for path, f, chans in zip(layout.paths, handles, layout.chan_slices, strict=True):
        _read_file_rows(path, f, chans, rows, outs)


def block_rows(layout: GroupLayout, *, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows per streamed block: about ``block_bytes`` of visibilities, whole HDF5 chunks."""
    rows = max(1, block_bytes // (layout.n_chan * layout.n_pol * 8))
    align = layout.row_align
    if align <= layout.n_blt:
        rows = max(align, rows // align * align)
    return min(rows, layout.n_blt)


def read_group(files: Sequence[str | Path], *, progress: Callable[[float], None] = lambda f: None
               ) -> UVData:
    """One UVData over all ``files``: channels ascending, one spectral window, unprojected.

    Each file's datasets are read whole, straight into their channel slice of
    storage-order arrays; the arrays handed out are ascending views of those (for
    DSA-110's descending files, negative-stride views). Raises ValueError naming the
    file whose baselines, times, polarizations or channels disagree with the others,
    or that cannot be read.
    """
    uvd, layout = open_group(files)
    shape = (layout.n_blt, layout.n_chan, layout.n_pol)
    outs = [np.empty(shape, dtype) for dtype in _DTYPES]
    everything = slice(0, layout.n_blt)
    with _opened(layout) as handles:
        for i, (path, f, chans) in enumerate(zip(layout.paths, handles, layout.chan_slices,
                                                 strict=True)):
            _read_file_rows(path, f, chans, everything, outs)
            progress((i + 1) / len(layout.paths))
    uvd.data_array, uvd.flag_array, uvd.nsample_array = (a[:, layout.to_ascending]
                                                         for a in outs)
    return uvd


def w_phasor(delta_w_m: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
    """exp(-2πi Δw f / c) as (nrow, nchan) complex64.

    The phase is formed in float64 and reduced to one turn before it becomes a float32
    phasor, so precision does not depend on the size of w·f/c.
    """
    turns = delta_w_m[:, None].astype(np.float64) * (freqs_hz.astype(np.float64)[None, :]
                                                     / SPEED_OF_LIGHT)
    turns -= np.round(turns)
    angle = (-2 * np.pi * turns).astype(np.float32)
    phasor = np.empty(angle.shape, np.complex64)
    np.cos(angle, out=phasor.real)
    np.sin(angle, out=phasor.imag)
    return phasor


def apply_w_phasor_inplace(data: np.ndarray, delta_w_m: np.ndarray, freqs_hz: np.ndarray, *,
                           block_rows: int = _PHASOR_BLOCK_ROWS) -> None:
    """Multiply ``data`` (nblt, nchan, npol) by exp(-2πi Δw f / c), in place."""
    for start in range(0, data.shape[0], block_rows):
        rows = slice(start, start + block_rows)
        data[rows] *= w_phasor(delta_w_m[rows], freqs_hz)[:, :, None]


def reorder_and_phase(stored: np.ndarray, to_ascending: slice | np.ndarray,
                      delta_w_m: np.ndarray, freqs_hz: np.ndarray, *, out: np.ndarray,
                      block_rows: int = _PHASOR_BLOCK_ROWS) -> np.ndarray:
    """``out[:n] = stored[:n, to_ascending] · exp(-2πi Δw f / c)`` in one pass; returns it.

    stored : (≥n, nchan, npol) complex64 in storage channel order; delta_w_m : (n,) m;
    freqs_hz : (nchan,) ascending. Sub-blocks of ``block_rows`` keep the phasor in cache.
    """
    n = delta_w_m.shape[0]
    for start in range(0, n, block_rows):
        rows = slice(start, min(start + block_rows, n))
        np.multiply(stored[rows][:, to_ascending], w_phasor(delta_w_m[rows], freqs_hz)[:, :, None],
                    out=out[rows])
    return out[:n]


@dataclass(frozen=True, kw_only=True)
class Block:
    """Rows ``start:start+n`` of the band, ascending, phased; arrays (n, nchan, npol).

    The arrays are buffers that the next block overwrites: use them before advancing.
    """

    start: int
    data: np.ndarray
    flags: np.ndarray
    nsamples: np.ndarray


def iter_phased_blocks(layout: GroupLayout, *, delta_w_m: np.ndarray, freqs_hz: np.ndarray,
                       rows_per_block: int) -> Iterator[Block]:
    """Stream the band in row blocks, channels ascending, w-term phased.

    delta_w_m : (n_blt,) the w to phase by (the new w of unprojected data), m;
    freqs_hz : (nchan,) ascending. Two sets of buffers of ``rows_per_block`` rows are
    allocated once and reused, so memory stays at a few blocks whatever the chunk size.
    """
    shape = (rows_per_block, layout.n_chan, layout.n_pol)
    stored = [np.empty(shape, dtype) for dtype in _DTYPES]
    ascending = [np.empty(shape, dtype) for dtype in _DTYPES]
    with _opened(layout) as handles:
        for start in range(0, layout.n_blt, rows_per_block):
            rows = slice(start, min(start + rows_per_block, layout.n_blt))
            n = rows.stop - rows.start
            read_rows_into(handles, layout, rows, stored)
            data = reorder_and_phase(stored[0], layout.to_ascending, delta_w_m[rows], freqs_hz,
                                     out=ascending[0])
            for src, dst in zip(stored[1:], ascending[1:], strict=True):
                np.copyto(dst[:n], src[:n, layout.to_ascending])
            yield Block(start=start, data=data, flags=ascending[1][:n],
                        nsamples=ascending[2][:n])


def phase_metadata(uvd: UVData, *, ra_deg: float, dec_deg: float, name: str) -> None:
    """Phase unprojected ``uvd``'s metadata to (ra, dec) ICRS: pyuvdata's uvw, no data.

    The data arrays are set aside while pyuvdata phases, so it only recomputes uvw and
    the phase-centre metadata; the w-term phasor is then the caller's to apply (the
    whole new w, since unprojected data have w = 0).
    """
    if not uvd._check_for_cat_type("unprojected").all():
        raise ValueError(f"{name}: expected unprojected (drift-scan) data to phase")
    arrays = uvd.data_array, uvd.flag_array, uvd.nsample_array
    uvd.data_array = uvd.flag_array = uvd.nsample_array = None
    try:
        uvd.phase(lon=np.deg2rad(ra_deg), lat=np.deg2rad(dec_deg), epoch="J2000",
                  phase_frame="icrs", cat_type="sidereal", cat_name=name)
    finally:
        uvd.data_array, uvd.flag_array, uvd.nsample_array = arrays


def phase_inplace(uvd: UVData, *, ra_deg: float, dec_deg: float, name: str) -> None:
    """Phase unprojected ``uvd`` to (ra, dec) ICRS: pyuvdata's uvw, our float32 phasor."""
    phase_metadata(uvd, ra_deg=ra_deg, dec_deg=dec_deg, name=name)
    # Unprojected data carry no w-term (old w = 0): the whole new w is applied.
    apply_w_phasor_inplace(uvd.data_array, uvd.uvw_array[:, 2], uvd.freq_array)
