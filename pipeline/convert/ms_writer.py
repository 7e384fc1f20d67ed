"""Write a phased, single-spectral-window UVData to a Measurement Set in row blocks.

The MAIN table is laid out exactly as pyuvdata's ``UVData.write_ms`` lays it out (its own
skeleton and subtable writers are used), but the visibility columns are written in blocks
of rows so that a caller sees progress and peak memory stays at one block of copies. The
blocks come from the UVData's own arrays or, streamed, from the reader
(``uvh5_group.iter_phased_blocks``), in which case the UVData holds only metadata and
the full band is never in memory at once. A test holds the result equal to
``write_ms``'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from astropy.time import Time
from casacore.tables import table
from pyuvdata import utils as uvutils
from pyuvdata.utils.io import ms as ms_utils

from pipeline.convert.uvh5_group import Block

#: Rows per putcol block: 64 k rows × 768 channels × 2 pols × 8 B ≈ 0.8 GB of DATA would be
#: too much; the block is sized from the channel count to about this many bytes of DATA.
BLOCK_BYTES = 128 * 2**20


#: The telescope name CASA knows at the array's site (see write_ms_blocks).
CASA_TELESCOPE_NAME = "OVRO_MMA"


def row_weights(nsample: np.ndarray) -> np.ndarray:
    """Median over channels of (nrow, nchan, npol) sample counts, as write_ms computes it.

    Rows whose channels all agree (nearly every row) skip the sort a median needs. The
    test runs along memory (each value against the one a channel earlier), not across
    the channel axis, which numpy reduces slowly.
    """
    nrow, _, npol = nsample.shape
    flat = nsample.reshape(nrow, -1)
    same = (flat[:, npol:] == flat[:, :-npol]).all(axis=1)
    weights = nsample[:, 0, :].astype(np.float64)
    mixed = np.flatnonzero(~same)
    if mixed.size:
        weights[mixed] = np.median(nsample[mixed], axis=1)
    return weights


def _array_blocks(uvd, rows_per_block: int) -> Iterator[Block]:
    for start in range(0, uvd.Nblts, rows_per_block):
        rows = slice(start, start + rows_per_block)
        yield Block(start=start, data=uvd.data_array[rows], flags=uvd.flag_array[rows],
                    nsamples=uvd.nsample_array[rows])


def write_ms_blocks(uvd, path: Path, *, progress: Callable[[float], None] = lambda f: None,
                    block_bytes: int = BLOCK_BYTES, blocks: Iterable[Block] | None = None
                    ) -> None:
    """Write ``uvd`` (phased, one spw) as a new Measurement Set at ``path``.

    Same columns, subtables and conventions as pyuvdata's ``write_ms`` (data conjugated,
    UVW negated: ``flip_conj``); ``progress`` gets 0–1 as row blocks are written.
    ``blocks``, when given, supply the visibilities, flags and sample counts (in UVData's
    conventions, channels ascending) in place of ``uvd``'s arrays, which may then be
    None; together they must cover every row once.
    """
    if uvd.Nspws != 1:
        raise ValueError(f"{path}: {uvd.Nspws} spectral windows; this writer takes one")
    if uvd._check_for_cat_type("unprojected").any():
        raise ValueError(f"{path}: the data are unprojected; phase them before writing")
    if Path(path).exists():
        raise FileExistsError(f"{path}: already exists; write to a new path")
    pol_order = uvutils.tools.slicify(
        uvutils.pol.determine_pol_order(uvd.polarization_array, order="CASA"),
        allow_empty=True)
    if uvd.scan_number_array is None:
        uvd._set_scan_numbers()
    if np.any(uvd.ant_1_array > uvd.ant_2_array):
        raise ValueError(f"{path}: baselines must be conjugated ant1<=ant2 for CASA")

    nrow = uvd.Nblts
    if blocks is None:
        bytes_per_row = uvd.Nfreqs * uvd.Npols * 8
        blocks = _array_blocks(uvd, max(1, min(nrow, block_bytes // max(bytes_per_row, 1))))
    weights = np.empty((nrow, uvd.Npols))
    written = 0
    casa = None  # one reused buffer for the conjugated block
    ms = ms_utils.init_ms_file(str(path))
    try:
        ms.addrows(nrow)
        for block in blocks:
            n = block.data.shape[0]
            if casa is None or casa.shape[0] < n or casa.dtype != block.data.dtype:
                casa = np.empty(block.data.shape, block.data.dtype)
            # CASA's convention is the conjugate of UVData's (pyuvdata's flip_conj=True).
            np.conjugate(block.data[:, :, pol_order], out=casa[:n])
            nsamples = block.nsamples[:, :, pol_order]
            ms.putcol("DATA", casa[:n], block.start, n)
            ms.putcol("WEIGHT_SPECTRUM", np.ascontiguousarray(nsamples), block.start, n)
            ms.putcol("FLAG", np.ascontiguousarray(block.flags[:, :, pol_order]),
                      block.start, n)
            weights[block.start:block.start + n] = row_weights(nsamples)
            written += n
            progress(0.9 * min(written, nrow) / nrow)
        if written != nrow:
            raise ValueError(f"{path}: the blocks held {written} rows, expected {nrow}")

        times, inverse = np.unique(uvd.time_array, return_inverse=True)
        times = (Time(times, format="jd", scale="utc").mjd * 86400.0)[inverse]
        field_ids = np.empty_like(uvd.phase_center_id_array)
        for idx, cat_id in enumerate(uvd.phase_center_catalog):
            field_ids[uvd.phase_center_id_array == cat_id] = idx
        columns = {
            "WEIGHT": weights,
            "SIGMA": np.power(weights, -0.5, where=weights != 0, out=np.zeros_like(weights)),
            "ANTENNA1": uvd.ant_1_array, "ANTENNA2": uvd.ant_2_array,
            "INTERVAL": uvd.integration_time, "EXPOSURE": uvd.integration_time,
            "DATA_DESC_ID": np.zeros(nrow, dtype=int), "SCAN_NUMBER": uvd.scan_number_array,
            "TIME": times, "TIME_CENTROID": times, "UVW": -uvd.uvw_array,
            "FIELD_ID": field_ids}
        for name, values in columns.items():
            ms.putcol(name, values)
        ms.putcolkeyword("DATA", "QuantumUnits", uvd.vis_units)
        if uvd.extra_keywords:
            ms.putkeyword("pyuvdata_extra", dict(uvd.extra_keywords))
        if uvd.pol_convention is not None:
            ms.putkeyword("pyuvdata_polconv", uvd.pol_convention)
        ms.putkeyword("pyuvdata_flip_conj", True)
    finally:
        ms.done()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyuvdata notes on units and history we know about
        ms_utils.write_ms_antenna(str(path), uvobj=uvd)
        ms_utils.write_ms_data_description(str(path), uvobj=uvd)
        ms_utils.write_ms_feed(str(path), uvobj=uvd)
        ms_utils.write_ms_field(str(path), uvobj=uvd)
        ms_utils.write_ms_history(str(path), uvobj=uvd)
        ms_utils.write_ms_observation(str(path), uvobj=uvd)
        ms_utils.write_ms_pointing(str(path), uvobj=uvd)
        ms_utils.write_ms_polarization(str(path), pol_order=pol_order, uvobj=uvd)
        ms_utils.write_ms_source(str(path), uvobj=uvd)
        ms_utils.write_ms_spectral_window(str(path), uvobj=uvd)
    # The antenna number is the ANTENNA row (pyuvdata's convention); rows of numbers no
    # antenna has are empty fillers: flag them so CASA and WSClean skip them.
    with table(str(path / "ANTENNA"), readonly=False, ack=False) as ant:
        used = np.zeros(ant.nrows(), dtype=bool)
        used[uvd.telescope.antenna_numbers] = True
        ant.putcol("FLAG_ROW", ~used)
    # CASA looks the telescope up in its Observatories table, which has no DSA-110, and
    # then refuses listobs/plotms; DSA-110's own tools name OVRO_MMA (the same site).
    with table(str(path / "OBSERVATION"), readonly=False, ack=False) as obs:
        obs.putcol("TELESCOPE_NAME", np.array([CASA_TELESCOPE_NAME] * obs.nrows()))
    progress(1.0)
