"""CASA calibration tables (bandpass "B Jones", gains "G Jones") with python-casacore.

Layout as CASA's NewCalTable writes it (casacore Fortran order in brackets; Python sees
the axes reversed):

MAIN, one row per antenna per solution time:
    TIME (s, MJD, UTC epoch measure), FIELD_ID, SPECTRAL_WINDOW_ID, ANTENNA1,
    ANTENNA2 (= reference antenna), INTERVAL (s), SCAN_NUMBER, OBSERVATION_ID,
    CPARAM complex (nchan, npol) [npol, nchan], PARAMERR float, FLAG bool, SNR float,
    WEIGHT float, all (nchan, npol).
keywords: ParType "Complex", MSName, VisCal ("B Jones" / "G Jones"), PolBasis
    "unknown", and the subtables ANTENNA, FIELD, SPECTRAL_WINDOW, OBSERVATION, HISTORY.
table info: type "Calibration", subType = VisCal.

Subtables are copies of the MS's; a gain table's SPECTRAL_WINDOW holds ONE channel (the
band centre, the whole bandwidth), as CASA's gaincal writes it. Flagged solutions are
written as CPARAM 1 with FLAG true, as CASA does.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from casacore.tables import makearrcoldesc, makescacoldesc, maketabdesc, table, tableexists

from pipeline.errors import ContimgError

VISCAL = {"B": "B Jones", "G": "G Jones"}
SUBTABLES = ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "OBSERVATION", "HISTORY")


class CaltableError(ContimgError):
    """A calibration table cannot be written or read."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True, kw_only=True, eq=False)
class CalSolutions:
    """Antenna-based complex solutions, host arrays, as a table holds them.

    gains : (ntime, n_ant, nchan, npol) complex64; 1 where flagged.
    flags, snr, paramerr : same shape (bool, float32, float32).
    times : (ntime,) float64, MJD seconds (UTC), centre of each solution interval.
    interval : (ntime,) float64, s. antenna_names : n_ant names (the MS's ANTENNA rows).
    freqs : (nchan,) float64 Hz (one channel, the band centre, for "G").
    kind : "B" (nchan channels, ntime 1) or "G" (nchan 1).
    refant : ANTENNA row whose phase is 0. ms_name : the MS it was solved on.
    """

    kind: Literal["B", "G"]
    gains: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    paramerr: np.ndarray
    times: np.ndarray
    interval: np.ndarray
    antenna_names: tuple[str, ...]
    freqs: np.ndarray
    refant: int
    ms_name: str = ""
    scan_number: int = 1

    def __post_init__(self):
        if self.kind not in VISCAL:
            raise ValueError(f"calibration solutions: kind must be B or G, got {self.kind!r}")
        shape = np.shape(self.gains)
        if len(shape) != 4:
            raise ValueError(f"calibration solutions: gains must be (ntime, n_ant, nchan, "
                             f"npol), got {shape}")
        for name in ("flags", "snr", "paramerr"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"calibration solutions: {name} has shape "
                                 f"{np.shape(getattr(self, name))}, expected {shape}")
        if shape[0] != len(self.times) or shape[1] != len(self.antenna_names) \
                or shape[2] != len(self.freqs):
            raise ValueError(f"calibration solutions: gains {shape} do not match "
                             f"{len(self.times)} times, {len(self.antenna_names)} antennas, "
                             f"{len(self.freqs)} frequencies")

    @property
    def viscal(self) -> str:
        """CASA's name for the Jones type."""
        return VISCAL[self.kind]

    def masked(self) -> np.ndarray:
        """Gains with flagged solutions as NaN (complex128)."""
        return np.where(self.flags, np.nan + 0j, self.gains.astype(np.complex128))


def _main_desc():
    cols = [
        makescacoldesc("TIME", 0.0, keywords={"QuantumUnits": ["s"],
                                              "MEASINFO": {"type": "epoch", "Ref": "UTC"}}),
        makescacoldesc("FIELD_ID", 0),
        makescacoldesc("SPECTRAL_WINDOW_ID", 0),
        makescacoldesc("ANTENNA1", 0),
        makescacoldesc("ANTENNA2", 0),
        makescacoldesc("INTERVAL", 0.0, keywords={"QuantumUnits": ["s"]}),
        makescacoldesc("SCAN_NUMBER", 0),
        makescacoldesc("OBSERVATION_ID", 0),
        makearrcoldesc("CPARAM", 0j, ndim=2, valuetype="complex"),
        makearrcoldesc("PARAMERR", 0.0, ndim=2, valuetype="float"),
        makearrcoldesc("FLAG", False, ndim=2),
        makearrcoldesc("SNR", 0.0, ndim=2, valuetype="float"),
        makearrcoldesc("WEIGHT", 0.0, ndim=2, valuetype="float"),
    ]
    return maketabdesc(cols)


def write_caltable(path: Path, sol: CalSolutions, *, ms: Path, overwrite: bool = False) -> Path:
    """Write ``sol`` as a CASA calibration table at ``path``, subtables from ``ms``.

    Written to ``path.tmp`` and renamed, so a table at ``path`` is always complete.
    """
    path, ms = Path(path), Path(ms)
    if not tableexists(str(ms)):
        raise CaltableError(ms, "no such Measurement Set to take subtables from")
    if path.exists():
        if not overwrite:
            raise CaltableError(path, "already exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    ntime, n_ant, nchan, npol = sol.gains.shape
    nrow = ntime * n_ant
    with table(str(tmp), tabledesc=_main_desc(), nrow=nrow, readonly=False, ack=False) as t:
        t.putcol("TIME", np.repeat(sol.times, n_ant))
        t.putcol("INTERVAL", np.repeat(sol.interval, n_ant))
        t.putcol("FIELD_ID", np.zeros(nrow, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.zeros(nrow, np.int32))
        t.putcol("ANTENNA1", np.tile(np.arange(n_ant, dtype=np.int32), ntime))
        t.putcol("ANTENNA2", np.full(nrow, sol.refant, np.int32))
        t.putcol("SCAN_NUMBER", np.full(nrow, sol.scan_number, np.int32))
        t.putcol("OBSERVATION_ID", np.zeros(nrow, np.int32))
        shape = (nrow, nchan, npol)
        t.putcol("CPARAM", np.where(sol.flags, 1, sol.gains).astype(np.complex64).reshape(shape))
        t.putcol("PARAMERR", sol.paramerr.astype(np.float32).reshape(shape))
        t.putcol("FLAG", sol.flags.reshape(shape))
        t.putcol("SNR", np.nan_to_num(sol.snr, nan=0.0).astype(np.float32).reshape(shape))
        t.putcol("WEIGHT", np.ones(shape, np.float32))
        t.putinfo({"type": "Calibration", "subType": sol.viscal,
                   "readme": "written by contimg"})
        t.putkeyword("ParType", "Complex")
        t.putkeyword("MSName", sol.ms_name or ms.name)
        t.putkeyword("VisCal", sol.viscal)
        t.putkeyword("PolBasis", "unknown")
        t.putkeyword("CASA_Version", "6.7.0")
        for name in SUBTABLES:
            src = ms / name
            if not tableexists(str(src)):
                raise CaltableError(ms, f"no {name} subtable to copy into {path}")
            with table(str(src), ack=False) as sub:
                sub.copy(str(tmp / name), deep=True, valuecopy=True).close()
            t.putkeyword(name, f"Table: {tmp / name}")
    if sol.kind == "G":
        _one_channel_spw(tmp / "SPECTRAL_WINDOW", sol.freqs)
    # keywords name the subtables by absolute path; rename keeps them relative inside
    tmp.rename(path)
    return path


def _one_channel_spw(spw_path: Path, freqs: np.ndarray) -> None:
    """Reduce a copied SPECTRAL_WINDOW to one channel spanning the band."""
    with table(str(spw_path), readonly=False, ack=False) as spw:
        f = spw.getcol("CHAN_FREQ")[0]
        w = np.abs(spw.getcol("CHAN_WIDTH")[0])
        bw = float(f.max() - f.min() + 0.5 * (w[0] + w[-1]))
        centre = float(freqs[0]) if len(freqs) == 1 else float(0.5 * (f.min() + f.max()))
        sign = 1.0 if spw.getcol("CHAN_WIDTH")[0][0] >= 0 else -1.0
        for col, value in (("CHAN_FREQ", centre), ("CHAN_WIDTH", sign * bw),
                           ("EFFECTIVE_BW", bw), ("RESOLUTION", bw)):
            spw.putcell(col, 0, np.array([value]))
        spw.putcell("NUM_CHAN", 0, 1)
        spw.putcell("TOTAL_BANDWIDTH", 0, bw)
        spw.putcell("REF_FREQUENCY", 0, centre)


def read_caltable(path: Path) -> CalSolutions:
    """Read a B or G Jones table written by :func:`write_caltable` (or by CASA)."""
    path = Path(path)
    if not tableexists(str(path)):
        raise CaltableError(path, "no such calibration table")
    with table(str(path), ack=False) as t:
        kw = t.getkeywords()
        viscal = kw.get("VisCal", "")
        kinds = {v: k for k, v in VISCAL.items()}
        if viscal not in kinds:
            raise CaltableError(path, f"VisCal is {viscal!r}; expected B Jones or G Jones")
        time, a1 = t.getcol("TIME"), t.getcol("ANTENNA1")
        interval, refant = t.getcol("INTERVAL"), t.getcol("ANTENNA2")
        cparam, flag = t.getcol("CPARAM"), t.getcol("FLAG")
        snr, err = t.getcol("SNR"), t.getcol("PARAMERR")
        scan = t.getcol("SCAN_NUMBER")
    with table(str(path / "ANTENNA"), ack=False) as ant:
        names = tuple(str(n) for n in ant.getcol("NAME"))
    with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = np.asarray(spw.getcol("CHAN_FREQ")[0], float)
    times, t_idx = np.unique(time, return_inverse=True)
    n_ant, (nchan, npol) = len(names), cparam.shape[1:]
    shape = (times.size, n_ant, nchan, npol)
    gains = np.ones(shape, np.complex64)
    flags = np.ones(shape, bool)
    snr_a, err_a = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for dst, src in ((gains, cparam), (flags, flag), (snr_a, snr), (err_a, err)):
        dst[t_idx, a1] = src
    ivl = np.zeros(times.size)
    ivl[t_idx] = interval
    return CalSolutions(kind=kinds[viscal], gains=gains, flags=flags, snr=snr_a,
                        paramerr=err_a, times=times, interval=ivl, antenna_names=names,
                        freqs=freqs, refant=int(np.bincount(refant).argmax()),
                        ms_name=str(kw.get("MSName", "")), scan_number=int(scan[0]))
