"""Apply a bandpass and gains to a Measurement Set: CORRECTED_DATA = DATA / (g_i conj g_j).

g_i(t, nu) = B_i(nu) G_i(t) per polarization, CASA's convention (``V_ij = g_i conj(g_j)
M_ij``). Antennas are matched to the tables by name, channels by frequency.

Time interpolation of G (amplitude and phase separately, phase along the shorter arc):
inside the table's time span, linear between the bracketing solutions (flagged if either
is flagged); outside it (a calibrator table applied hours later), the table's time
average: the mean amplitude and the phase of the mean phasor of its unflagged
solutions, the best single estimate from a transit.

Several gain tables, given as ``[(solutions, weight), ...]`` by whoever chose them (the
registry, e.g. two tables bracketing the observation), combine per antenna, time and
polarization as the weighted mean amplitude and the phase of the weighted mean phasor
over the tables whose solution there is unflagged (weights renormalised); the result
is flagged only where every table is flagged.

Gains are applied in float32 (DESIGN: float32 for applying gains); a flagged solution
flags the visibility (OR-ed into the flags it starts from: the converter's, when it
RFI-flags, see ``converter_flags``) and zeroes its CORRECTED_DATA.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore.tables import makecoldesc, maketabdesc, table

from pipeline.calibration.caltables import CalSolutions, CaltableError
from pipeline.calibration.converter_flags import (
    converter_flags,
    keep_converter_flags,
    restore_converter_flags,
)
from pipeline.calibration.flagging import flag_ms, flag_rows
from pipeline.calibration.ms_columns import read_column
from pipeline.calibration.registry import Flagger

#: bytes of visibilities per row block of an application: its temporaries stay in cache
ROW_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True, kw_only=True)
class ApplyStats:
    """What an application did (fractions over all visibilities of the MS)."""

    n_rows: int
    flagged_fraction_before: float
    flagged_fraction_after: float
    seconds: float


def apply_gains(vis, g1, g2, *, xp=np):
    """Corrected visibilities ``vis / (g1 conj(g2))`` in complex64; 0 where a gain is bad.

    vis : (..., ) complex; g1, g2 : broadcastable to vis, complex (NaN or 0 = flagged).
    Returns (corrected complex64, bad bool) of vis's shape.
    """
    vis = xp.asarray(vis).astype(xp.complex64, copy=False)
    gg = (xp.asarray(g1).astype(xp.complex64, copy=False)
          * xp.conj(xp.asarray(g2).astype(xp.complex64, copy=False)))
    bad = ~xp.isfinite(gg) | (gg == 0)
    gg = xp.where(bad, xp.complex64(1), gg)
    out = vis / gg
    out = xp.where(bad, xp.complex64(0), out)
    return out.astype(xp.complex64, copy=False), xp.broadcast_to(bad, out.shape)


def _antenna_map(ms_names: list[str], sol: CalSolutions, what: str) -> np.ndarray:
    """(n_ms_ant,) index into sol's antennas, -1 where the table lacks that antenna."""
    lookup = {n: i for i, n in enumerate(sol.antenna_names) if n}
    return np.array([lookup.get(n, -1) if n else -1 for n in ms_names])


def _take_antennas(arr: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """Arr's antenna axis re-indexed by idx; NaN for -1."""
    out = np.take(arr, np.maximum(idx, 0), axis=axis)
    shape = [1] * out.ndim
    shape[axis] = idx.size
    return np.where((idx < 0).reshape(shape), np.nan + 0j, out)


def interpolate_gains(sol: CalSolutions, times: np.ndarray) -> np.ndarray:
    """(ntime_out, n_ant, npol) complex128 gains of a G table at ``times`` (MJD s).

    NaN where flagged. See the module docstring for the rules.
    """
    g = sol.masked()[:, :, 0, :]                                         # (nt, a, p)
    ts = np.asarray(sol.times, float)
    amp, ph = np.abs(g), np.angle(g)
    ok = np.isfinite(g)
    # the table's time average, for times outside its span
    cnt = ok.sum(axis=0)
    mean_amp = np.where(cnt > 0, np.nansum(np.where(ok, amp, 0), axis=0) / np.maximum(cnt, 1),
                        np.nan)
    mean_ph = np.angle(np.sum(np.where(ok, np.exp(1j * np.where(ok, ph, 0)), 0), axis=0))
    mean = np.where(cnt > 0, mean_amp * np.exp(1j * mean_ph), np.nan + 0j)
    t = np.asarray(times, float)
    if ts.size == 1:
        return np.broadcast_to(mean, (t.size,) + mean.shape).copy()
    i1 = np.clip(np.searchsorted(ts, t), 1, ts.size - 1)
    i0 = i1 - 1
    f = ((t - ts[i0]) / (ts[i1] - ts[i0]))[:, None, None]
    dph = (ph[i1] - ph[i0] + np.pi) % (2 * np.pi) - np.pi
    a = amp[i0] + f * (amp[i1] - amp[i0])
    p = ph[i0] + f * dph
    inside = np.where(f <= 0, ok[i0], np.where(f >= 1, ok[i1], ok[i0] & ok[i1]))
    out = np.where(inside, a * np.exp(1j * p), np.nan + 0j)
    # half an integration of slack: solutions are at interval centres
    half = 0.5 * float(np.median(sol.interval)) if sol.interval.size else 0.0
    outside = (t < ts[0] - half) | (t > ts[-1] + half)
    out[outside] = mean
    return out


def combine_gains(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted combination of interpolated gains (amplitude mean, phasor-mean phase)."""
    if not parts:
        raise ValueError("combine_gains: no gain tables given")
    wsum = amp = 0.0
    phasor = 0.0
    for g, w in parts:
        if w < 0:
            raise ValueError(f"combine_gains: weights must not be negative, got {w}")
        ok = np.isfinite(g)
        ww = np.where(ok, w, 0.0)
        wsum = wsum + ww
        amp = amp + ww * np.where(ok, np.abs(g), 0.0)
        phasor = phasor + ww * np.where(ok, np.exp(1j * np.angle(np.where(ok, g, 0))), 0)
    good = wsum > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (amp / wsum) * np.exp(1j * np.angle(phasor))
    return np.where(good, out, np.nan + 0j)


def _bandpass_for(ms: Path, bandpass: CalSolutions, freqs: np.ndarray,
                  ant_map: np.ndarray) -> np.ndarray:
    """(n_ms_ant, nchan, npol) bandpass on the MS's channels and antennas."""
    b = bandpass.masked()[0]                                              # (a, c, p)
    if bandpass.freqs.size != freqs.size:
        raise CaltableError(ms, f"bandpass has {bandpass.freqs.size} channels, the MS "
                            f"{freqs.size}; solve a bandpass at this resolution")
    width = np.median(np.abs(np.diff(freqs))) if freqs.size > 1 else 1.0
    if np.max(np.abs(bandpass.freqs - freqs)) > 0.5 * width:
        raise CaltableError(ms, "bandpass channel frequencies differ from the MS's by more "
                            "than half a channel")
    return _take_antennas(b, ant_map, axis=0)


def _ensure_corrected(t, data_desc: dict, nchan: int, npol: int) -> None:
    if "CORRECTED_DATA" in t.colnames():
        return
    desc = makecoldesc("CORRECTED_DATA", data_desc)
    desc["desc"]["comment"] = "The calibrated data column"
    rows = max(1, 2**20 // (8 * nchan * npol))
    dminfo = {"TYPE": "TiledShapeStMan", "NAME": "CorrectedTiled",
              "SPEC": {"DEFAULTTILESHAPE": np.array([npol, nchan, rows], dtype=np.int32)}}
    t.addcols(maketabdesc(desc), dminfo)


def apply_calibration(ms: Path, *, bandpass: CalSolutions,
                      gains: list[tuple[CalSolutions, float]] | CalSolutions,
                      backend=None, flagger: Flagger | None = None,
                      progress: Callable[[float], None] | None = None) -> ApplyStats:
    """Write CORRECTED_DATA (created if missing, DATA's shape and type) and FLAG.

    ms : Measurement Set, changed in place (CORRECTED_DATA, FLAG; DATA untouched).
    bandpass : a "B" table's solutions on the MS's channels. gains : a "G" table's
    solutions, or ``[(solutions, weight), ...]`` to combine (see module docstring).
    backend : :class:`pipeline.backend.Backend` for the arithmetic (default CPU).
    flagger : RFI-flag DATA first, starting from the converter's flags (so a rerun
    writes the FLAG of one run): ``"robust"`` on the data read for the application
    (one read of the MS for both), ``"aoflagger"`` by running it on the MS before;
    None flags nothing and starts from FLAG as it is (a solve of the same attempt
    flagged it). progress : called with 0..1 as steps finish.
    """
    report = progress or (lambda f: None)
    ms = Path(ms)
    if not (ms / "table.dat").is_file():
        raise FileNotFoundError(f"{ms}: no such Measurement Set")
    t0 = _time.perf_counter()
    before = None
    if flagger is not None:
        keep_converter_flags(ms)
    if flagger == "aoflagger":
        # aoflagger adds to FLAG in place: it starts from the converter's flags too
        restore_converter_flags(ms)
        with table(str(ms), ack=False) as t:
            before = int(np.count_nonzero(read_column(t, "FLAG", bool)))
        flag_ms(ms, method="aoflagger")
        report(0.5)
    with table(str(ms), readonly=False, ack=False) as t:
        data = read_column(t, "DATA", np.complex64)
        flags = converter_flags(t) if flagger == "robust" else read_column(t, "FLAG", bool)
        time_s, a1, a2 = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        before = int(np.count_nonzero(flags)) if before is None else before
        if flagger == "robust":
            flags, _ = flag_rows(data, flags, time_s, a1, a2, backend=backend)
            report(0.5)
        # the corrected data take DATA's memory: a fresh 1.4 GB array costs seconds of
        # page faults on a VM
        correct_rows(ms, data, flags, time_s, a1, a2, bandpass=bandpass, gains=gains,
                     backend=backend)
        report(0.7)
        _ensure_corrected(t, t.getcoldesc("DATA"), data.shape[1], data.shape[2])
        t.putcol("CORRECTED_DATA", data)
        t.putcol("FLAG", flags)
    report(1.0)
    n = max(flags.size, 1)
    return ApplyStats(n_rows=int(flags.shape[0]), flagged_fraction_before=before / n,
                      flagged_fraction_after=float(flags.sum()) / n,
                      seconds=_time.perf_counter() - t0)


def correct_rows(ms: Path, data: np.ndarray, flags: np.ndarray, time_s, ant1, ant2, *,
                 bandpass: CalSolutions,
                 gains: list[tuple[CalSolutions, float]] | CalSolutions,
                 backend=None) -> None:
    """Calibrate MS rows in place: ``data`` /= g_i conj(g_j), bad gains OR-ed into ``flags``.

    data (nrow, nchan, npol) complex64 and flags (same shape, bool) as read from ``ms``;
    time_s, ant1, ant2 : (nrow,) its TIME, ANTENNA1 and ANTENNA2. Row blocks of
    ``ROW_BLOCK_BYTES`` keep the temporaries in cache; each is read before it is written.
    """
    from pipeline.backend import cpu_backend  # noqa: PLC0415

    be = backend or cpu_backend()
    if bandpass.kind != "B":
        raise CaltableError(ms, f"bandpass= got a {bandpass.viscal} table")
    parts = [(gains, 1.0)] if isinstance(gains, CalSolutions) else list(gains)
    for sol, _ in parts:
        if sol.kind != "G":
            raise CaltableError(ms, f"gains= got a {sol.viscal} table")
    with table(str(ms / "ANTENNA"), ack=False) as ant:
        names = [str(n) for n in ant.getcol("NAME")]
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
    B = _bandpass_for(ms, bandpass, freqs, _antenna_map(names, bandpass, "bandpass"))
    times, t_idx = np.unique(time_s, return_inverse=True)
    G = combine_gains([(_take_antennas(interpolate_gains(sol, times),
                                       _antenna_map(names, sol, "gains"), axis=1), w)
                       for sol, w in parts])                              # (t, a, p)
    xp = be.xp
    Bx = be.asarray(B.astype(np.complex64))
    Gx = be.asarray(G.astype(np.complex64))
    step = max(1, ROW_BLOCK_BYTES // (8 * int(np.prod(data.shape[1:]))))
    for r0 in range(0, data.shape[0], step):
        rows = slice(r0, min(r0 + step, data.shape[0]))
        i, j, k = (be.asarray(x[rows]) for x in (ant1, ant2, t_idx))
        g1 = Bx[i] * Gx[k, i][:, None, :]
        g2 = Bx[j] * Gx[k, j][:, None, :]
        corr, bad = apply_gains(be.asarray(data[rows]), g1, g2, xp=xp)
        data[rows] = be.to_host(corr)
        flags[rows] |= be.to_host(bad)
