"""Solve a calibrator transit: flag, model, bandpass, gains, tables, apply, QA.

The I/O wrapper around the kernels: it reads the MS once (its flags as the converter
wrote them, see ``converter_flags``), runs every step on the in-memory arrays (through
the array backend), writes FLAG, the two CASA tables and CORRECTED_DATA, and measures
what the calibration achieved on the calibrator itself. :func:`solve_calibrator_ms`
reads as those steps; each is a function below it.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from casacore.tables import table

from pipeline.calibration.apply import _ensure_corrected
from pipeline.calibration.caltables import CalSolutions, write_caltable
from pipeline.calibration.chunk_sums import (
    apply_pass,
    bandpass_pass,
    flux_ratio_from,
    gain_sums,
    inverse_products,
)
from pipeline.calibration.converter_flags import (
    converter_flags,
    keep_converter_flags,
    restore_converter_flags,
)
from pipeline.calibration.flagging import flag_ms, flag_rows, grid_rows
from pipeline.calibration.model import (
    CalibratorNotFound,
    ModelInputs,
    _require_ms,
    calibrator_in_beam,
    compute_model,
    read_model_inputs,
)
from pipeline.calibration.ms_columns import read_column
from pipeline.calibration.registry import FLAGGERS, Flagger
from pipeline.calibration.solver import solve_slots
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
                        use_field: bool = True, overwrite: bool = True,
                        flagger: Flagger = "robust") -> SolveResult:
    """Calibrate a calibrator transit chunk and write ``<ms stem>.B`` / ``.G`` tables.

    Parameters
    ----------
    ms : Path
        A converted chunk with the calibrator within 1 deg of the pointing at mid-time.
        Changed in place: FLAG (the converter's flags, kept in FLAG_CONVERTER, OR the
        RFI and bad-solution flags of this solve: a rerun writes the same FLAG),
        CORRECTED_DATA (written).
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
    flagger : ``"robust"`` or ``"aoflagger"``
        The RFI flagger run before solving: this package's median/MAD flagger, or
        Debian's ``aoflagger`` program (a clear error when it is not installed).

    The BLAS work here is many small products: run it with pipeline.process_tuning's
    configure_process() in effect (contimg's entry points set it).
    """
    from pipeline.backend import get_backend  # noqa: PLC0415
    from pipeline.calibration.model import DEFAULT_CATALOG  # noqa: PLC0415

    ms = _checked_ms(ms, flagger)
    be = backend or get_backend()
    laps = _Laps(progress)
    _require_calibrator(ms, calibrator)
    catalog = (field_catalog or DEFAULT_CATALOG) if use_field else None
    data, flags, rows, model = _read_flag_and_model(ms, calibrator, catalog=catalog,
                                                    flagger=flagger, n_sigma=n_sigma,
                                                    be=be, laps=laps)
    # every row on a (time, baseline) grid, autocorrelations included (they are skipped
    # in the normal equations): on the converter's layout these are views, no copies
    lay = _Layout.of(ms, rows, be=be)
    V, F, M = (be.asarray(lay.grid.gridded(x)) for x in (data, flags, model))
    del model
    bp_pass = bandpass_pass(V, M, F, xp=be.xp)
    order = _antenna_order(bp_pass, lay, refant=refant)
    ref_row = int(lay.used[be.to_host(order)[0]])
    b_sol = _bandpass_solutions(bp_pass, order, lay, ref_row=ref_row)
    laps("bandpass", 0.6)

    # the gains against B_i conj(B_j) M, B as the table holds it (complex64), which is
    # what any later application reads back
    b_tab = be.asarray(b_sol.masked()[0])                                 # (ant, c, p)
    g_sol = _gain_solutions(bp_pass, V, M, F, b_tab, order, lay, ref_row=ref_row)
    laps("gains", 0.7)
    b_path, g_path = _write_tables(Path(out_dir), ms, b_sol, g_sol, overwrite=overwrite)
    laps("tables", 0.75)

    ap = _apply_in_place(V, M, F, bp_pass, b_tab, g_sol, lay)
    # freed just before the write, the model's and the sums' pages are what the page
    # cache takes for CORRECTED_DATA: pages the kernel has not handed back to the VM's
    # host (a 1.4 GB write of fresh pages: 3.4 s on the 2-core VM; of just freed: 0.7 s)
    del M, bp_pass
    corrected, new_flags = _back_to_rows(V, F, data, flags, lay)
    del V, F, data
    _write_corrected(ms, corrected, new_flags)
    laps("apply", 0.95)
    qa = _quality(b_sol, new_flags, ap, lay)
    laps("qa", 1.0)
    return SolveResult(b_table=b_path, g_table=g_path, calibrator=calibrator,
                       transit_mjd=float(lay.grid.mid_s / 86400.0), qa=qa,
                       refant=rows.names[ref_row], timings=laps.timings)


# ------------------------------------------------------------------ the solve's steps
class _Laps:
    """Seconds each step took (``timings``), and the progress reported after it."""

    def __init__(self, progress: Callable[[float], None] | None):
        self.timings: dict[str, float] = {}
        self._report = progress or (lambda f: None)
        self._clock = _time.perf_counter()

    def __call__(self, name: str, frac: float) -> None:
        now = _time.perf_counter()
        self.timings[name] = now - self._clock
        self._clock = now
        self._report(frac)


def _checked_ms(ms: Path, flagger: str) -> Path:
    """``ms`` as a Path, once it is a Measurement Set and ``flagger`` a known one."""
    if flagger not in FLAGGERS:
        raise ValueError(f"flagger must be one of {', '.join(FLAGGERS)}, got {flagger!r}")
    ms = Path(ms)
    try:
        return _require_ms(ms)
    except FileNotFoundError as exc:
        raise CalibrationError(ms, "no such Measurement Set") from exc


def _require_calibrator(ms: Path, calibrator: str) -> None:
    found = calibrator_in_beam(ms, max_offset_deg=MAX_OFFSET_DEG)
    if found is None or found.upper() != calibrator.upper():
        raise CalibratorNotFound(ms, f"calibrator {calibrator} is not within "
                                 f"{MAX_OFFSET_DEG} deg of the pointing at mid-time"
                                 + (f" ({found} is)" if found else "")
                                 + "; this chunk is not its transit")


@dataclass(frozen=True, kw_only=True, eq=False)
class _Rows:
    """What the solve uses of the MS besides DATA and FLAG."""

    time_s: np.ndarray         # (nrow,) TIME
    a1: np.ndarray             # (nrow,) ANTENNA1
    a2: np.ndarray
    nchan: int
    npol: int
    interval: float            # s, the median INTERVAL
    scan: int
    names: tuple[str, ...]     # ANTENNA NAME of every row
    freqs: np.ndarray          # (nchan,) Hz


def _read_flag_and_model(ms: Path, calibrator: str, *, catalog: Path | None, flagger: Flagger,
                         n_sigma: float, be, laps: _Laps):
    """(DATA, RFI-flagged converter flags, _Rows, model (nrow, nchan)) of the chunk."""
    # The model's arithmetic needs no data: it runs on a second thread while this one
    # reads and flags (both release the GIL in NumPy/BLAS). casacore stays on this thread.
    inputs = read_model_inputs(ms, calibrator, field_catalog=catalog)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cal-model") as pool:
        model_future = pool.submit(_timed, compute_model, inputs)
        data, flags, rows = _read_and_flag(ms, inputs, flagger=flagger, n_sigma=n_sigma,
                                           be=be, laps=laps)
        model, laps.timings["model_thread"] = model_future.result()
        del model_future    # it holds the result: the model's memory goes with M later
    laps("model", 0.45)
    return data, flags, rows, model


def _read_and_flag(ms: Path, inputs: ModelInputs, *, flagger: Flagger, n_sigma: float, be,
                   laps: _Laps) -> tuple[np.ndarray, np.ndarray, _Rows]:
    """DATA, its flags (the converter's, RFI-flagged) and the rest the solve reads."""
    if flagger == "aoflagger":
        # it flags FLAG in place: FLAG is set back to the converter's first, read next
        restore_converter_flags(ms)
        flag_ms(ms, method="aoflagger")
        laps("flag", 0.05)
    else:
        keep_converter_flags(ms)
    with table(str(ms), ack=False) as t:
        data = read_column(t, "DATA", np.complex64)
        flags = read_column(t, "FLAG", bool) if flagger == "aoflagger" else converter_flags(t)
        interval = float(np.median(t.getcol("INTERVAL")))
        scan = int(t.getcell("SCAN_NUMBER", 0))
    with table(str(ms / "ANTENNA"), ack=False) as ant:
        names = tuple(str(n) for n in ant.getcol("NAME"))
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
    rows = _Rows(time_s=inputs.time_s, a1=inputs.ant1, a2=inputs.ant2, nchan=data.shape[1],
                 npol=data.shape[2], interval=interval, scan=scan, names=names, freqs=freqs)
    laps("read", 0.1)
    if flagger == "robust":
        flags, _ = flag_rows(data, flags, rows.time_s, rows.a1, rows.a2, n_sigma=n_sigma,
                             backend=be)
        laps("flag", 0.25)
    if flags[rows.a1 != rows.a2].all():
        raise CalibrationError(ms, "every cross-correlation is flagged; nothing to solve on")
    return data, flags, rows


@dataclass(frozen=True, kw_only=True, eq=False)
class _Layout:
    """The chunk as every step sees it: its rows, their grid, the solver's antennas."""

    ms: Path
    rows: _Rows
    grid: _Grid
    be: Any
    used: np.ndarray     # ANTENNA rows with cross-correlations, in solver order
    comp: np.ndarray     # (n_names,) solver index of each ANTENNA row, -1 if unused
    c1: np.ndarray       # solver antennas of the grid's cross baselines
    c2: np.ndarray
    cross: Any           # the grid's cross-baseline indices, on the backend
    sel: Any             # the baselines that go into the normal equations ...
    s1: np.ndarray       # ... and their solver antennas
    s2: np.ndarray

    @classmethod
    def of(cls, ms: Path, rows: _Rows, *, be) -> _Layout:
        grid = _Grid.of(ms, rows.time_s, rows.a1, rows.a2)
        b1, b2 = grid.b1[grid.cross], grid.b2[grid.cross]
        used = np.unique(np.concatenate([b1, b2]))
        comp = np.full(len(rows.names), -1)
        comp[used] = np.arange(used.size)
        c1, c2 = comp[b1], comp[b2]
        cross = be.asarray(grid.cross)
        # the normal equations ignore autocorrelations: when every one of them belongs
        # to an antenna with cross data, all baselines go in as they are (no gathered
        # copies)
        if (comp[grid.b1] >= 0).all() and (comp[grid.b2] >= 0).all():
            sel, s1, s2 = slice(None), comp[grid.b1], comp[grid.b2]
        else:
            sel, s1, s2 = cross, c1, c2
        return cls(ms=ms, rows=rows, grid=grid, be=be, used=used, comp=comp, c1=c1, c2=c2,
                   cross=cross, sel=sel, s1=s1, s2=s2)


def _antenna_order(bp_pass, lay: _Layout, *, refant: str | None):
    """Solver antennas, the reference first: ``refant``, else most unflagged data first."""
    be, xp, names = lay.be, lay.be.xp, lay.rows.names
    per_bl = xp.sum(bp_pass.N.reshape(bp_pass.N.shape[0], -1), axis=1)[lay.cross]
    order = _count_order(per_bl, lay.c1, lay.c2, n_ant=lay.used.size, xp=xp)
    if refant is None:
        return order
    if refant not in names or lay.comp[names.index(refant)] < 0:
        raise CalibrationError(lay.ms, f"reference antenna {refant!r} has no data here")
    first = lay.comp[names.index(refant)]
    host = be.to_host(order)
    return be.asarray(np.concatenate([[first], host[host != first]]))


def _bandpass_solutions(bp_pass, order, lay: _Layout, *, ref_row: int) -> CalSolutions:
    """The bandpass: one solution per antenna, channel and polarization over the chunk."""
    be, rows, times = lay.be, lay.rows, lay.grid.times
    nchan, npol = rows.nchan, rows.npol
    sums = [x[lay.sel].reshape(lay.s1.size, nchan * npol)
            for x in (bp_pass.R, bp_pass.Q, bp_pass.P, bp_pass.N)]
    bp = solve_slots(sums, lay.s1, lay.s2, n_ant=lay.used.size, slots=(nchan, npol),
                     ant_axis=0, refant_order=order, xp=be.xp)
    return _solutions("B", be.to_host(bp.gains), be.to_host(bp.snr), lay.used,
                      len(rows.names), times=np.array([lay.grid.mid_s]),
                      interval=np.array([times[-1] - times[0] + rows.interval]),
                      names=rows.names, freqs=rows.freqs, refant=ref_row, ms=lay.ms,
                      scan=rows.scan)


def _gain_solutions(bp_pass, V, M, F, b_tab, order, lay: _Layout, *,
                    ref_row: int) -> CalSolutions:
    """The gains: one per integration, antenna and polarization, after the bandpass."""
    be, xp, rows, times = lay.be, lay.be.xp, lay.rows, lay.grid.times
    # every grid baseline (autos for the apply)
    i1, i2 = be.asarray(lay.grid.b1), be.asarray(lay.grid.b2)
    g_sums = gain_sums(bp_pass, V, M, F, b_tab, i1, i2, xp=xp)
    ntime = V.shape[0]
    sums = [xp.moveaxis(x[:, lay.sel], 1, 0).reshape(lay.s1.size, ntime * rows.npol)
            for x in g_sums]
    gs = solve_slots(sums, lay.s1, lay.s2, n_ant=lay.used.size, slots=(ntime, rows.npol),
                     ant_axis=1, refant_order=order, xp=xp)
    g_host = be.to_host(gs.gains)[:, :, None, :]                          # (t, a, 1, p)
    return _solutions("G", g_host, be.to_host(gs.snr)[:, :, None, :], lay.used,
                      len(rows.names), times=times,
                      interval=np.full(times.size, rows.interval), names=rows.names,
                      freqs=np.array([0.5 * (rows.freqs.min() + rows.freqs.max())]),
                      refant=ref_row, ms=lay.ms, scan=rows.scan)


def _write_tables(out_dir: Path, ms: Path, b_sol: CalSolutions, g_sol: CalSolutions, *,
                  overwrite: bool) -> tuple[Path, Path]:
    """``out_dir/<ms stem>.B`` and ``.G`` (the directory is created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return (write_caltable(out_dir / f"{ms.stem}.B", b_sol, ms=ms, overwrite=overwrite),
            write_caltable(out_dir / f"{ms.stem}.G", g_sol, ms=ms, overwrite=overwrite))


def _apply_in_place(V, M, F, bp_pass, b_tab, g_sol: CalSolutions, lay: _Layout):
    """Corrected data into V, bad-solution flags OR-ed into F; the pass QA measures.

    Applies what the tables hold (complex64, NaN where flagged), as apply_calibration
    would read them back.
    """
    be, xp = lay.be, lay.be.xp
    i1, i2 = be.asarray(lay.grid.b1), be.asarray(lay.grid.b2)
    g_tab = be.asarray(g_sol.masked()[:, :, 0, :])                       # (t, ant, p)
    hb, _ = inverse_products(b_tab[i1], b_tab[i2], xp=xp)
    hg, _ = inverse_products(g_tab[:, i1], g_tab[:, i2], xp=xp)
    # in place: the corrected data overwrite V, our own array (DATA as read, a gathered
    # copy, or the device's copy), and FLAG is ORed into F; no new chunk-sized array
    # (a fresh 1.4 GB costs 1-5 s of first-touch page faults on the 2-core VM)
    return apply_pass(V, M, F, bp_pass, hb, hg, out=V, out_flags=F, xp=xp)


def _back_to_rows(V, F, data: np.ndarray, flags: np.ndarray, lay: _Layout
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Gridded corrected data and flags as MS rows (the arrays V and F view, if they do)."""
    if lay.be.name == "cpu" and lay.grid.regular:
        return data, flags
    corrected = np.empty(data.shape, np.complex64)
    new_flags = np.empty_like(flags)
    lay.grid.scatter(lay.be.to_host(V), corrected)
    lay.grid.scatter(lay.be.to_host(F), new_flags)
    return corrected, new_flags


def _write_corrected(ms: Path, corrected: np.ndarray, flags: np.ndarray) -> None:
    """CORRECTED_DATA (created if missing) and FLAG of every row."""
    with table(str(ms), readonly=False, ack=False) as t:
        _ensure_corrected(t, t.getcoldesc("DATA"), corrected.shape[1], corrected.shape[2])
        t.putcol("CORRECTED_DATA", corrected)
        t.putcol("FLAG", flags)


def _quality(b_sol: CalSolutions, flags: np.ndarray, ap, lay: _Layout) -> CalQA:
    """The solve's QA from the bandpass, the flags written and the apply pass."""
    rows = lay.rows
    cross_rows = rows.a1 != rows.a2
    cross_flags = int(np.count_nonzero(flags[cross_rows]))
    n_cross = int(cross_rows.sum()) * rows.nchan * rows.npol
    return CalQA(snr=_median_finite(b_sol.snr[~b_sol.flags]),
                 flagged_fraction=cross_flags / max(n_cross, 1),
                 antennas_lost=int(np.all(b_sol.flags[0, lay.used], axis=(1, 2)).sum()),
                 flux_ratio=flux_ratio_from(ap, lay.cross, xp=lay.be.xp))


def _timed(fn, *args):
    t0 = _time.perf_counter()
    return fn(*args), _time.perf_counter() - t0


@dataclass(frozen=True, kw_only=True, eq=False)
class _Grid:
    """Every MS row on a (time, baseline) grid; ``regular``: the rows are that grid."""

    index: np.ndarray          # (ntime, nbl) row of each cell
    times: np.ndarray          # (ntime,) s
    b1: np.ndarray             # (nbl,) ANTENNA1 of each baseline
    b2: np.ndarray
    cross: np.ndarray          # indices of the baselines with b1 != b2
    regular: bool

    @classmethod
    def of(cls, ms: Path, time_s, a1, a2) -> _Grid:
        index, times, b1, b2 = grid_rows(time_s, a1, a2)
        if (index < 0).any():
            raise CalibrationError(ms, "some baselines are missing at some times; the solver "
                                   "needs every baseline at every integration")
        return cls(index=index, times=times, b1=b1, b2=b2, cross=np.flatnonzero(b1 != b2),
                   regular=bool(np.array_equal(index.ravel(), np.arange(time_s.size))))

    @property
    def mid_s(self) -> float:
        """The middle of the chunk's integrations (MJD s)."""
        return 0.5 * (self.times[0] + self.times[-1])

    def gridded(self, x: np.ndarray) -> np.ndarray:
        """(nrow, ...) → (ntime, nbl, ...): a view when regular, else a gathered copy."""
        if self.regular:
            return x.reshape(self.index.shape + x.shape[1:])
        return x[self.index]

    def scatter(self, g: np.ndarray, out: np.ndarray) -> None:
        """Write gridded ``g`` (ntime, nbl, ...) back to rows of ``out`` (nrow, ...)."""
        out[self.index.ravel()] = g.reshape((-1,) + g.shape[2:])


def _count_order(per_bl, c1, c2, *, n_ant: int, xp):
    """Antennas, most unflagged cross-correlation samples first (per_bl: (ncross,) counts)."""
    i1, i2 = xp.asarray(c1), xp.asarray(c2)
    count = (xp.bincount(i1, weights=per_bl, minlength=n_ant)
             + xp.bincount(i2, weights=per_bl, minlength=n_ant))
    # ties keep antenna order (CuPy's argsort is stable and takes no ``kind``)
    return xp.argsort(-count, kind="stable") if xp is np else xp.argsort(-count)


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
