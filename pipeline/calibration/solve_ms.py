"""Solve a calibrator transit: flag, model, bandpass, gains, tables, apply, QA.

The I/O wrapper around the kernels: it reads the MS once, runs every step on the
in-memory arrays (through the array backend), writes FLAG, the two CASA tables and
CORRECTED_DATA, and measures what the calibration achieved on the calibrator itself.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from casacore.tables import table

from pipeline.calibration.apply import _ensure_corrected, corrected_arrays
from pipeline.calibration.caltables import CalSolutions, write_caltable
from pipeline.calibration.flagging import flag_rows, grid_rows
from pipeline.calibration.model import (
    CalibratorNotFound,
    _require_ms,
    calibrator_in_beam,
    calibrator_model,
)
from pipeline.calibration.solver import data_count_order, solve_bandpass, solve_gains
from pipeline.errors import ContimgError

#: the calibrator must be this close to the pointing at mid-time to be solved on
MAX_OFFSET_DEG = 1.0


class CalibrationError(ContimgError):
    """A calibrator Measurement Set cannot be calibrated."""

    def __init__(self, ms: Path | str, problem: str):
        super().__init__(f"{ms}: {problem}")
        self.ms = ms


@dataclass(frozen=True, kw_only=True)
class CalQA:
    """Quality of a solve.

    snr : median over antennas, channels and polarizations of the bandpass solution SNR.
    flagged_fraction : of the cross-correlation data after flagging.
    antennas_lost : antennas with data in the MS but no unflagged bandpass solution.
    flux_ratio : calibrated calibrator amplitude / model, median over baselines,
        channels and polarizations of |sum_t C conj(M)| / sum_t |M|^2 (noise-unbiased).
    """

    snr: float
    flagged_fraction: float
    antennas_lost: int
    flux_ratio: float


@dataclass(frozen=True, kw_only=True)
class SolveResult:
    """What :func:`solve_calibrator_ms` wrote and measured."""

    b_table: Path
    g_table: Path
    calibrator: str
    transit_mjd: float
    qa: CalQA
    refant: str
    timings: dict[str, float] = field(default_factory=dict)


def solve_calibrator_ms(ms: Path, *, calibrator: str, out_dir: Path, refant: str | None = None,
                        progress: Callable[[float], None] | None = None, backend=None,
                        n_sigma: float = 5.0, field_catalog: Path | None = None,
                        use_field: bool = True, overwrite: bool = True) -> SolveResult:
    """Calibrate a calibrator transit chunk and write ``<ms stem>.B`` / ``.G`` tables.

    Parameters
    ----------
    ms : Path
        A converted chunk with the calibrator within 1 deg of the pointing at mid-time.
        Changed in place: FLAG (OR-ed), CORRECTED_DATA (written).
    calibrator : str
        Name in data/calibrators.csv.
    out_dir : Path
        Where the tables go (created).
    refant : str, optional
        Antenna name to fix the phase of (default: the one with most unflagged data).
    progress : callable, optional
        Called with 0..1 as steps finish.
    backend : pipeline.backend.Backend, optional
        Array backend for the kernels (default: ``get_backend()``).
    field_catalog, use_field
        Catalog of field sources for the model (default data/catalog.csv); use_field
        False models the calibrator alone.
    """
    from pipeline.backend import get_backend  # noqa: PLC0415
    from pipeline.calibration.model import DEFAULT_CATALOG  # noqa: PLC0415

    report = progress or (lambda f: None)
    be = backend or get_backend()
    xp = be.xp
    ms = Path(ms)
    try:
        _require_ms(ms)
    except FileNotFoundError as exc:
        raise CalibrationError(ms, "no such Measurement Set") from exc
    timings: dict[str, float] = {}
    clock = _time.perf_counter()

    def lap(name: str, frac: float) -> None:
        nonlocal clock
        now = _time.perf_counter()
        timings[name] = now - clock
        clock = now
        report(frac)

    found = calibrator_in_beam(ms, max_offset_deg=MAX_OFFSET_DEG)
    if found is None or found.upper() != calibrator.upper():
        raise CalibratorNotFound(ms, f"calibrator {calibrator} is not within "
                                 f"{MAX_OFFSET_DEG} deg of the pointing at mid-time"
                                 + (f" ({found} is)" if found else "")
                                 + "; this chunk is not its transit")
    with table(str(ms), ack=False) as t:
        time_s, a1, a2 = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        data, flags = t.getcol("DATA"), t.getcol("FLAG")
        interval = float(np.median(t.getcol("INTERVAL")))
        scan = int(t.getcell("SCAN_NUMBER", 0))
    with table(str(ms / "ANTENNA"), ack=False) as ant:
        names = tuple(str(n) for n in ant.getcol("NAME"))
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
    lap("read", 0.1)

    flags, fstats = flag_rows(data, flags, time_s, a1, a2, n_sigma=n_sigma, backend=be)
    cross_rows = a1 != a2
    if flags[cross_rows].all():
        raise CalibrationError(ms, "every cross-correlation is flagged; nothing to solve on")
    lap("flag", 0.25)

    model = calibrator_model(ms, calibrator, field_catalog=(
        (field_catalog or DEFAULT_CATALOG) if use_field else None))
    lap("model", 0.45)

    # gridded (time, baseline) cross correlations on compressed antenna indices
    cross = np.flatnonzero(cross_rows)
    index, times, b1, b2 = grid_rows(time_s[cross], a1[cross], a2[cross])
    if (index < 0).any():
        raise CalibrationError(ms, "some baselines are missing at some times; the solver "
                               "needs every baseline at every integration")
    rows = cross[index]
    used = np.unique(np.concatenate([b1, b2]))
    comp = np.full(len(names), -1)
    comp[used] = np.arange(used.size)
    c1, c2 = comp[b1], comp[b2]
    V, M, F = (be.asarray(x[rows]) for x in (data, model, flags))
    order = data_count_order(F, n_ant=used.size, ant1=c1, ant2=c2, xp=xp)
    if refant is not None:
        if refant not in names or comp[names.index(refant)] < 0:
            raise CalibrationError(ms, f"reference antenna {refant!r} has no data here")
        first = comp[names.index(refant)]
        host = be.to_host(order)
        order = be.asarray(np.concatenate([[first], host[host != first]]))
    bp = solve_bandpass(V, M, F, c1, c2, n_ant=used.size, refant_order=order, xp=xp)
    lap("bandpass", 0.6)
    gs = solve_gains(V, M, F, c1, c2, n_ant=used.size, bandpass=bp.gains,
                     refant_order=order, xp=xp)
    lap("gains", 0.7)
    del V, M, F

    ref_row = int(used[be.to_host(order)[0]])
    n_ant, nchan, npol = len(names), freqs.size, data.shape[2]
    mid = 0.5 * (times[0] + times[-1])
    b_sol = _solutions("B", be.to_host(bp.gains), be.to_host(bp.snr), used, n_ant,
                       times=np.array([mid]), interval=np.array([times[-1] - times[0]
                                                                 + interval]),
                       names=names, freqs=freqs, refant=ref_row, ms=ms, scan=scan)
    g_host = be.to_host(gs.gains)[:, :, None, :]                          # (t, a, 1, p)
    g_sol = _solutions("G", g_host, be.to_host(gs.snr)[:, :, None, :], used, n_ant,
                       times=times, interval=np.full(times.size, interval), names=names,
                       freqs=np.array([0.5 * (freqs.min() + freqs.max())]), refant=ref_row,
                       ms=ms, scan=scan)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    b_path = write_caltable(out_dir / f"{ms.stem}.B", b_sol, ms=ms, overwrite=overwrite)
    g_path = write_caltable(out_dir / f"{ms.stem}.G", g_sol, ms=ms, overwrite=overwrite)
    lap("tables", 0.75)

    with table(str(ms), readonly=False, ack=False) as t:
        corrected, new_flags, _ = corrected_arrays(ms, t, bandpass=b_sol, gains=g_sol,
                                                   backend=be, data=data, flags=flags)
        _ensure_corrected(t, t.getcoldesc("DATA"), nchan, npol)
        t.putcol("CORRECTED_DATA", corrected)
        t.putcol("FLAG", new_flags)
    lap("apply", 0.95)

    qa = CalQA(snr=_median_finite(b_sol.snr[~b_sol.flags]),
               flagged_fraction=float(new_flags[cross].mean()),
               antennas_lost=int(np.all(b_sol.flags[0, used], axis=(1, 2)).sum()),
               flux_ratio=flux_ratio(corrected[rows], model[rows], new_flags[rows]))
    lap("qa", 1.0)
    return SolveResult(b_table=b_path, g_table=g_path, calibrator=calibrator,
                       transit_mjd=float(mid / 86400.0), qa=qa, refant=names[ref_row],
                       timings=timings)


def _solutions(kind, gains, snr, used, n_ant, *, times, interval, names, freqs, refant,
               ms, scan) -> CalSolutions:
    """Scatter compressed-antenna solutions to every ANTENNA row; flags from NaN."""
    if kind == "B":
        gains, snr = gains[None], snr[None]                 # (1, a_used, c, p)
    shape = (gains.shape[0], n_ant) + gains.shape[2:]
    full = np.full(shape, np.nan + 0j)
    full_snr = np.zeros(shape, np.float32)
    full[:, used] = gains
    full_snr[:, used] = np.nan_to_num(snr, nan=0.0)
    flags = ~np.isfinite(full)
    err = np.where(flags | (full_snr <= 0), 0.0, np.abs(full) / np.maximum(full_snr, 1e-30))
    return CalSolutions(kind=kind, gains=np.where(flags, 1, full).astype(np.complex64),
                        flags=flags, snr=full_snr, paramerr=err.astype(np.float32),
                        times=np.asarray(times, float), interval=np.asarray(interval, float),
                        antenna_names=names, freqs=np.asarray(freqs, float), refant=refant,
                        ms_name=ms.name, scan_number=scan)


def flux_ratio(corrected: np.ndarray, model: np.ndarray, flags: np.ndarray) -> float:
    """Median over (baseline, channel, pol) of |sum_t C conj(M)| / sum_t |M|^2.

    corrected, model, flags : (ntime, nbl, nchan, npol). The time sum of C conj(M) is
    free of the noise bias that |C| alone carries.
    """
    w = (~flags).astype(np.float32)
    num = np.abs(np.sum(corrected * np.conj(model) * w, axis=0, dtype=np.complex128))
    den = np.sum(np.abs(model) ** 2 * w, axis=0, dtype=np.float64)
    good = den > 0
    if not good.any():
        return float("nan")
    return float(np.median(num[good] / den[good]))


def _median_finite(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else 0.0
