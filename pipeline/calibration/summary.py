"""What the calibration page plots of a solve: gains per antenna, bandpass per channel.

Reads the CASA calibration tables directly (main table CPARAM/FLAG/ANTENNA1,
SPECTRAL_WINDOW CHAN_FREQ: the layout CASA's applycal reads), so the page depends only on
the file format. Views call this; they never open files themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True, kw_only=True)
class SolutionsSummary:
    """Per-antenna gains and per-channel bandpass of one solve, for plotting.

    gains : antenna, pol, amp, phase_deg (median over solution intervals, unflagged;
        antennas with every solution flagged are left out).
    bandpass : channel, freq_hz, pol, amp_median, amp_lo, amp_hi (over antennas, 10–90 %).
    missing : the table paths that were not found or not readable, with the reason.
    """

    gains: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["antenna", "pol", "amp", "phase_deg"]))
    bandpass: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["channel", "freq_hz", "pol", "amp_median", "amp_lo", "amp_hi"]))
    missing: tuple[str, ...] = ()


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cparam (nrow, nchan, npol), flag, antenna1 (nrow,), chan_freq (nchan,)) of a table."""
    from casacore.tables import table  # noqa: PLC0415

    with table(str(path), ack=False) as t:
        cparam = np.asarray(t.getcol("CPARAM"))
        flag = np.asarray(t.getcol("FLAG"), dtype=bool)
        ant = np.asarray(t.getcol("ANTENNA1"))
    with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
        freq = np.asarray(spw.getcol("CHAN_FREQ"))[0]
    return cparam, flag, ant, freq


def _gains(cparam: np.ndarray, flag: np.ndarray, ant: np.ndarray) -> pd.DataFrame:
    g = np.where(flag, np.nan, cparam).mean(axis=1)  # one channel in a gain table
    rows = []
    for a in np.unique(ant):
        sel = g[ant == a]
        for p in range(g.shape[1]):
            vals = sel[:, p]
            rows.append({"antenna": int(a), "pol": p,
                         "amp": float(np.nanmedian(np.abs(vals))) if np.isfinite(vals).any()
                         else np.nan,
                         "phase_deg": float(np.degrees(np.angle(np.nanmean(vals))))
                         if np.isfinite(vals).any() else np.nan})
    out = pd.DataFrame(rows, columns=["antenna", "pol", "amp", "phase_deg"])
    # Pads in the ANTENNA table but not in the array have every solution flagged.
    return out[out.amp.notna()].reset_index(drop=True)


def _bandpass(cparam: np.ndarray, flag: np.ndarray, freq: np.ndarray) -> pd.DataFrame:
    amp = np.where(flag, np.nan, np.abs(cparam))  # (nrow, nchan, npol)
    frames = []
    for p in range(amp.shape[2]):
        a = amp[:, :, p]
        ok = np.isfinite(a).any(axis=0)
        lo, med, hi = (np.full(a.shape[1], np.nan) for _ in range(3))
        if ok.any():
            lo[ok], med[ok], hi[ok] = np.nanpercentile(a[:, ok], [10, 50, 90], axis=0)
        frames.append(pd.DataFrame({"channel": np.arange(a.shape[1]), "freq_hz": freq,
                                    "pol": p, "amp_median": med, "amp_lo": lo,
                                    "amp_hi": hi}))
    return pd.concat(frames, ignore_index=True)


def solutions_summary(b_path: str | Path, g_path: str | Path) -> SolutionsSummary:
    """Gains and bandpass of one solve; a table that is missing is named in ``missing``."""
    missing = []
    gains = bandpass = None
    for kind, path in (("B", Path(b_path)), ("G", Path(g_path))):
        if not path.is_dir():
            missing.append(f"{path}: solutions file not found")
            continue
        try:
            cparam, flag, ant, freq = _read(path)
        except Exception as exc:  # a damaged table must not break the page
            missing.append(f"{path}: not a readable calibration table ({exc})")
            continue
        if kind == "B":
            bandpass = _bandpass(cparam, flag, freq)
        else:
            gains = _gains(cparam, flag, ant)
    empty = SolutionsSummary()
    return SolutionsSummary(gains=empty.gains if gains is None else gains,
                            bandpass=empty.bandpass if bandpass is None else bandpass,
                            missing=tuple(missing))
