"""The converter's flags, kept in the MS so that every calibration starts from them.

Calibration ORs its RFI and bad-gain flags into FLAG. Were the next attempt (a retry
after a crash, a second worker's rerun) to start from that FLAG, it would flag on top of
the last attempt's flags, and a table's bad solutions would stay in FLAG after the data
were calibrated with another. So the first calibration of a Measurement Set copies FLAG,
which then still holds what conversion wrote, into ``FLAG_CONVERTER`` (its own storage
manager, so that a write to FLAG or CORRECTED_DATA cannot touch it), and every
calibration starts from that copy.

The copy counts only once its column keyword ``complete`` is set, which happens after
the data are flushed; a copy interrupted on the way is made again from FLAG, which no
calibration writes before the copy is complete. (An MS calibrated by a contimg older
than this column keeps the flags it had when first calibrated by this one.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from casacore.tables import makecoldesc, maketabdesc, table

from pipeline.calibration.ms_columns import read_column

#: the column holding the converter's FLAG
CONVERTER_FLAG = "FLAG_CONVERTER"
_COMPLETE = "complete"


def has_converter_flags(t) -> bool:
    """Whether the open table ``t`` holds a complete copy of the converter's flags."""
    return (CONVERTER_FLAG in t.colnames()
            and bool(t.getcolkeywords(CONVERTER_FLAG).get(_COMPLETE, False)))


def keep_converter_flags(ms: Path) -> bool:
    """Copy FLAG into ``FLAG_CONVERTER`` unless a complete copy is there; True if copied.

    ms : a Measurement Set whose FLAG is still the converter's when this first runs
    (calibration calls it before it writes FLAG).
    """
    with table(str(ms), ack=False) as t:
        if has_converter_flags(t):
            return False
    with table(str(ms), readonly=False, ack=False) as t:
        flags = read_column(t, "FLAG", bool)
        if CONVERTER_FLAG not in t.colnames():
            _add_column(t, t.getcoldesc("FLAG"), flags.shape[1:])
        t.putcol(CONVERTER_FLAG, flags)
        # the data reach the disk before the keyword that says they are whole
        t.flush()
        t.putcolkeyword(CONVERTER_FLAG, _COMPLETE, True)
    return True


def converter_flags(t) -> np.ndarray:
    """The converter's (nrow, nchan, npol) flags from the open table ``t``.

    Raises KeyError naming the table when no complete copy is there (call
    :func:`keep_converter_flags` first).
    """
    if not has_converter_flags(t):
        raise KeyError(f"{t.name()}: no complete {CONVERTER_FLAG} column; call "
                       "keep_converter_flags on the Measurement Set first")
    return read_column(t, CONVERTER_FLAG, bool)


def restore_converter_flags(ms: Path) -> None:
    """Set FLAG to the converter's flags (before a flagger that works on FLAG in place)."""
    keep_converter_flags(ms)
    with table(str(ms), readonly=False, ack=False) as t:
        t.putcol("FLAG", converter_flags(t))


def _add_column(t, flag_desc: dict, cell_shape: tuple[int, ...]) -> None:
    desc = makecoldesc(CONVERTER_FLAG, flag_desc)
    desc["desc"]["comment"] = "FLAG as the converter wrote it; calibration starts from it"
    nchan, npol = cell_shape
    rows = max(1, 2**20 // (nchan * npol))
    dminfo = {"TYPE": "TiledShapeStMan", "NAME": "TiledFlagConverter",
              "SPEC": {"DEFAULTTILESHAPE": np.array([npol, nchan, rows], dtype=np.int32)}}
    t.addcols(maketabdesc(desc), dminfo)
