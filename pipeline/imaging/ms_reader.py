"""Read what imaging needs from a (calibrated) Measurement Set.

One pass over the MAIN table in row blocks (a full-size chunk's DATA is ~1.3 GB for two
polarizations; a block keeps the copies small), returning Stokes I = (XX + YY) / 2 as
complex64 with float32 weights that are 0 wherever either polarization is flagged.
Autocorrelations are dropped.

Sign convention: our Measurement Sets hold ``V = sum S exp(+2 pi i (u l + v m + w (n-1)))``
in their UVW frame (pyuvdata's ``write_ms`` flips both UVW and the visibilities). ducc0's
gridder (and its GPU twin) uses ``exp(-2 pi i (u l + v m - w (n-1)))`` for the degridder;
``ImagingData.uvw`` is therefore the MS's UVW with u and v negated, so that
``gridding.vis2dirty(uvw=d.uvw, ...)`` puts a source at (l, m) on pixel
(npix/2 + l/dl, npix/2 + m/dm) and ``dirty2vis`` predicts the MS's own visibilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore.tables import table

from pipeline.errors import ContimgError

#: rows read per getcol call
ROW_BLOCK = 16384

#: CASA's Stokes codes (casacore's Stokes::StokesTypes) for the correlations used
_XX, _YY, _RR, _LL, _I = 9, 12, 5, 8, 1

#: (-1, -1, 1): the MS's UVW → the gridder's (see the module docstring)
UVW_TO_GRIDDER = np.array([-1.0, -1.0, 1.0])


class ImagingDataError(ContimgError):
    """A Measurement Set cannot be read for imaging."""

    def __init__(self, ms: Path | str, problem: str):
        super().__init__(f"{ms}: {problem}")
        self.ms = ms


@dataclass(frozen=True, kw_only=True)
class ImagingData:
    """Stokes I visibilities of one Measurement Set, ready for the gridder.

    uvw : (nrow, 3) float64, metres, in the gridder's convention (MS UVW × (-1, -1, 1)).
    freq : (nchan,) float64, Hz.
    vis : (nrow, nchan) complex64, Jy, Stokes I = (XX + YY) / 2 (0 where flagged).
    weight : (nrow, nchan) float32, inverse variance of I; 0 where flagged.
    ra_deg, dec_deg : phase centre (FIELD 0 PHASE_DIR), ICRS degrees.
    pointing_dec_deg : the drift scan's apparent (pointing) declination, degrees, from the
        converter's ``pointing_dec_deg`` keyword (else the phase centre's).
    mid_mjd : midpoint of the first and last TIME, MJD (UTC).
    n_antennas : antennas appearing in the cross-correlation rows read.
    integration_s : median INTERVAL, seconds.
    channel_width_hz : median |CHAN_WIDTH|, Hz.
    column : the data column actually read (CORRECTED_DATA falls back to DATA).
    """

    uvw: np.ndarray
    freq: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    ra_deg: float
    dec_deg: float
    mid_mjd: float
    n_antennas: int
    integration_s: float
    channel_width_hz: float
    column: str = "DATA"
    pointing_dec_deg: float | None = None

    @property
    def n_vis(self) -> int:
        """Visibilities with a non-zero weight."""
        return int(np.count_nonzero(self.weight))


def _pol_indices(ms: Path) -> tuple[int, int]:
    """Indices of the two parallel-hand correlations (XX, YY or RR, LL) in the data."""
    with table(str(ms / "POLARIZATION"), ack=False) as pol:
        corr = [int(c) for c in pol.getcol("CORR_TYPE")[0]]
    for a, b in ((_XX, _YY), (_RR, _LL)):
        if a in corr and b in corr:
            return corr.index(a), corr.index(b)
    if _I in corr:
        i = corr.index(_I)
        return i, i
    raise ImagingDataError(ms, f"correlations {corr} hold neither XX/YY nor RR/LL nor I; "
                           "write the MS with parallel-hand polarizations")


def _spectral(ms: Path) -> tuple[np.ndarray, float]:
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        if spw.nrows() != 1:
            raise ImagingDataError(ms, f"SPECTRAL_WINDOW has {spw.nrows()} rows, expected 1; "
                                   "image one spectral window at a time")
        freq = np.asarray(spw.getcol("CHAN_FREQ")[0], np.float64)
        width = float(np.median(np.abs(spw.getcol("CHAN_WIDTH")[0])))
    return freq, width


def _stokes_i(data: np.ndarray, flag: np.ndarray, weight: np.ndarray, ip: int, iq: int,
              *, vis_out: np.ndarray, weight_out: np.ndarray, scratch: np.ndarray) -> None:
    """I = (V_p + V_q) / 2 and its weight 4 w_p w_q / (w_p + w_q), both 0 where flagged.

    Written into ``vis_out`` (n, nchan) complex64 and ``weight_out`` (n, nchan) float32;
    ``scratch`` is a float32 buffer of that shape; ``weight`` is overwritten (flagged
    entries zeroed). Every step writes into a buffer the caller reuses: fresh 100 MB
    temporaries per block cost more in page faults than the arithmetic.
    """
    np.copyto(weight, 0.0, where=flag)
    wp, wq = weight[:, :, ip], weight[:, :, iq]
    if ip == iq:
        np.copyto(weight_out, wp)
    else:
        # weights are ≥ 0: where both are 0 the product is 0 too, and 0 / tiny = 0
        np.multiply(wp, wq, out=weight_out)
        weight_out *= np.float32(4.0)
        np.add(wp, wq, out=scratch)
        np.maximum(scratch, np.float32(1e-30), out=scratch)
        np.divide(weight_out, scratch, out=weight_out)
    np.add(data[:, :, ip], data[:, :, iq], out=vis_out)
    vis_out *= np.float32(0.5)
    np.copyto(vis_out, 0, where=weight_out <= 0)


def read_imaging_data(ms_path: Path, *, column: str = "CORRECTED_DATA") -> ImagingData:
    """Stokes I visibilities, weights and metadata of a Measurement Set.

    ``column`` is read when present, else DATA (an uncalibrated MS images too).
    Weights are WEIGHT_SPECTRUM when present, else WEIGHT per row, combined for
    I = (XX + YY) / 2 as ``4 w_xx w_yy / (w_xx + w_yy)`` and zeroed by FLAG and FLAG_ROW.
    """
    ms = Path(ms_path)
    if not (ms / "table.dat").is_file():
        raise ImagingDataError(ms, "no such Measurement Set; check the path")
    ip, iq = _pol_indices(ms)
    freq, width = _spectral(ms)
    with table(str(ms / "FIELD"), ack=False) as f:
        ra, dec = (float(np.degrees(x)) for x in f.getcol("PHASE_DIR")[0, 0])
    with table(str(ms), ack=False) as t:
        extra = t.getkeywords().get("pyuvdata_extra", {}) or {}
        pointing_dec = float(extra.get("pointing_dec_deg", dec))
        names = t.colnames()
        col = column if column in names else "DATA"
        if col not in names:
            raise ImagingDataError(ms, f"neither {column} nor DATA present; "
                                   "convert the observation again")
        nrow = t.nrows()
        if nrow == 0:
            raise ImagingDataError(ms, "the MAIN table has no rows")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        cross = np.flatnonzero(a1 != a2)
        if cross.size == 0:
            raise ImagingDataError(ms, "no cross-correlation rows; nothing to image")
        time_s = t.getcol("TIME")
        interval = float(np.median(t.getcol("INTERVAL")))
        has_spectrum = "WEIGHT_SPECTRUM" in names and t.iscelldefined("WEIGHT_SPECTRUM", 0)
        npol = int(t.getcell(col, int(cross[0])).shape[-1])
        # rows are read in blocks into reused buffers (getcolnp: no fresh pages per
        # block) and compacted to the cross-correlations
        keep = np.zeros(nrow, bool)
        keep[cross] = True
        nchan = freq.size
        vis = np.empty((cross.size, nchan), np.complex64)
        wgt = np.empty((cross.size, nchan), np.float32)
        uvw = np.empty((cross.size, 3), np.float64)
        block = min(ROW_BLOCK, nrow)
        data = np.empty((block, nchan, npol), np.complex64)
        flag = np.empty((block, nchan, npol), bool)
        weight = np.empty((block, nchan, npol), np.float32)
        vi = np.empty((block, nchan), np.complex64)
        wi = np.empty((block, nchan), np.float32)
        scratch = np.empty((block, nchan), np.float32)
        out = 0
        for r0 in range(0, nrow, block):
            n = min(block, nrow - r0)
            sel = keep[r0:r0 + n]
            k = int(sel.sum())
            if k == 0:
                continue
            t.getcolnp(col, data[:n], r0, n)
            t.getcolnp("FLAG", flag[:n], r0, n)
            flag[:n] |= t.getcol("FLAG_ROW", r0, n)[:, None, None]
            if has_spectrum:
                t.getcolnp("WEIGHT_SPECTRUM", weight[:n], r0, n)
            else:
                weight[:n] = t.getcol("WEIGHT", r0, n)[:, None, :]
            _stokes_i(data[:n], flag[:n], weight[:n], ip, iq, vis_out=vi[:n],
                      weight_out=wi[:n], scratch=scratch[:n])
            if k == n:
                vis[out:out + k] = vi[:n]
                wgt[out:out + k] = wi[:n]
            else:
                vis[out:out + k] = vi[:n][sel]
                wgt[out:out + k] = wi[:n][sel]
            uvw[out:out + k] = t.getcol("UVW", r0, n)[sel] * UVW_TO_GRIDDER
            out += k
    used = np.union1d(a1[cross], a2[cross])
    return ImagingData(
        uvw=uvw, freq=freq, vis=vis, weight=wgt, ra_deg=ra % 360.0, dec_deg=dec,
        mid_mjd=float(0.5 * (time_s.min() + time_s.max()) / 86400.0),
        n_antennas=int(used.size), integration_s=interval, channel_width_hz=width,
        column=col, pointing_dec_deg=pointing_dec)
