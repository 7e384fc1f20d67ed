"""A Measurement Set that no longer opens is rebuilt from its observation's UVH5 files.

A worker killed while casacore writes (a new column added, a table file being flushed)
can leave an MS whose table files are missing or cut short: it no longer opens, or a
column's last rows cannot be read. Every later attempt would fail the same way and the
observation be quarantined although its subband files are intact. The MS is derived
data, so the calibrate stage checks it first and, when it is damaged, converts the
observation's files again with the convert stage's own code.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from casacore.tables import table

from pipeline.errors import ObservationError
from pipeline.jobs.contract import StageContext

log = logging.getLogger(__name__)

#: subtables calibration reads
SUBTABLES = ("ANTENNA", "SPECTRAL_WINDOW", "FIELD", "POLARIZATION", "DATA_DESCRIPTION")


class DamagedMeasurementSet(ObservationError):
    """An observation's MS is damaged and cannot be rebuilt."""


def ms_problem(ms: Path) -> str | None:
    """Why ``ms`` cannot be calibrated as it is (None: it opens and reads).

    Opens the main table and the subtables calibration uses, and reads the first and
    last cell of every main-table column: a table file that is missing or cut short
    fails one of these, at a cost independent of the MS's size.
    """
    ms = Path(ms)
    if not (ms / "table.dat").is_file():
        return "no such Measurement Set" if not ms.exists() else "its table.dat is missing"
    try:
        with table(str(ms), ack=False) as t:
            if t.nrows() == 0:
                return "its main table has no rows"
            last = t.nrows() - 1
            for column in t.colnames():
                for row in (0, last):
                    if t.iscelldefined(column, row):
                        t.getcell(column, row)
        for name in SUBTABLES:
            with table(str(ms / name), ack=False) as sub:
                for column in sub.colnames():
                    if sub.nrows() and sub.iscelldefined(column, 0):
                        sub.getcol(column)
    except RuntimeError as exc:     # casacore's error for a table it cannot read
        return f"it cannot be read ({str(exc).strip()[:300]})"
    return None


def rebuild_if_damaged(ctx: StageContext, ms: Path, *,
                       progress: Callable[[float], None] = lambda f: None) -> Path | None:
    """Reconvert the observation of ``ctx`` when ``ms`` is damaged; the new MS's path.

    None when ``ms`` is fine (nothing is done). The damaged MS is removed once the
    observation's files are known to be there; the new one is written where the
    convert stage writes (``home/ms/<id>.ms``). ``progress`` gets 0..1 as it converts.
    Raises :class:`DamagedMeasurementSet` when the files are gone.
    """
    from pipeline.convert.stage import convert_stage  # noqa: PLC0415 — pulls in pyuvdata

    ms = Path(ms)
    problem = ms_problem(ms)
    if problem is None:
        return None
    obs = ctx.observation
    missing = [f for f in obs.files if not Path(f).is_file()]
    if not obs.files or missing:
        raise DamagedMeasurementSet(
            obs.id, f"{ms}: {problem}, and it cannot be rebuilt: "
            + (f"subband files missing: {', '.join(missing)}" if missing
               else "no subband files recorded")
            + "; restore the files to reconvert it, or discard the observation")
    log.warning("observation %s: %s: %s; rebuilding it from its %d subband files", obs.id,
                ms, problem, len(obs.files))
    if ms.exists():
        shutil.rmtree(ms)
    result = convert_stage(replace(ctx, progress=progress))
    rebuilt = Path(result.ms_path)
    log.warning("observation %s: rebuilt %s from its subband files", obs.id, rebuilt)
    return rebuilt
