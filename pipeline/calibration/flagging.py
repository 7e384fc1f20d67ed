"""RFI flagging: robust (median/MAD) outliers on visibility amplitudes, OR-ed into FLAG.

The kernel (:func:`robust_flags`) works on amplitudes arranged (ntime, nbl, nchan, npol)
of cross-correlations. Three passes, each a median/MAD test at ``n_sigma``:

1. in time: each sample against the median over time of its baseline, channel and
   polarization (catches bursts: one integration, many channels);
2. in frequency: each baseline's time-median spectrum against a 5-channel running
   median of itself (catches narrow-band RFI that is there all the time; the running
   median follows the smooth bandpass ripple);
3. whole channels: flagged where more than ``bad_channel_fraction`` of the samples
   (baselines x times x polarizations) are flagged.

The MAD scale is estimated per baseline and polarization, so baselines of different
gain and source structure are judged by their own scatter. Autocorrelations are left
alone (neither read into the statistics nor flagged): calibration uses only the cross
correlations, and the autos' total-power level would dominate any shared statistic.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore.tables import table

from pipeline.errors import ContimgError

MAD_TO_SIGMA = 1.4826
MIN_RELATIVE = 0.05
_RUNNING = 5   # channels in the running median of pass 2


class FlaggingError(ContimgError):
    """A Measurement Set cannot be flagged as asked."""

    def __init__(self, ms: Path | str, problem: str):
        super().__init__(f"{ms}: {problem}")
        self.ms = ms


@dataclass(frozen=True, kw_only=True)
class FlagStats:
    """What one flagging run did (fractions over cross-correlation samples)."""

    flagged_fraction_before: float
    flagged_fraction_after: float
    channels_flagged: int
    n_new: int


def _median(x, *, axis, xp, keepdims=False):
    """Median ignoring NaN; NumPy's nanmedian is ~10x slower, so only when NaN is there."""
    if bool(xp.isnan(x).any()):
        return xp.nanmedian(x, axis=axis, keepdims=keepdims)
    return xp.median(x, axis=axis, keepdims=keepdims)


def robust_flags(amp, flags, *, n_sigma: float = 5.0, bad_channel_fraction: float = 0.5,
                 min_relative: float = MIN_RELATIVE, xp=np):
    """Outlier flags from amplitudes; returns new flags OR-ed with ``flags``.

    Parameters
    ----------
    amp : (ntime, nbl, nchan, npol) float
        Visibility amplitudes of cross-correlations (Jy or uncalibrated units).
    flags : same shape, bool
        Existing flags (never cleared).
    n_sigma : float
        Threshold in robust sigmas (1.4826 MAD).
    bad_channel_fraction : float
        A channel with more than this fraction of its samples flagged is flagged whole.
    min_relative : float
        Deviations below this fraction of the local level are never outliers: on a
        calibrator the field sources beating against it move amplitudes by a few per
        cent, which is sky, not RFI (on noise-dominated data the level is the noise
        and this floor does not bind).
    xp : module
        NumPy or CuPy.

    Returns
    -------
    (ntime, nbl, nchan, npol) bool
    """
    with warnings.catch_warnings():
        # fully flagged slices give NaN medians, which compare False: nothing new there
        warnings.simplefilter("ignore", RuntimeWarning)
        return _robust_flags(amp, flags, n_sigma=n_sigma,
                             bad_channel_fraction=bad_channel_fraction,
                             min_relative=min_relative, xp=xp)


def _robust_flags(amp, flags, *, n_sigma, bad_channel_fraction, min_relative, xp):
    amp = xp.asarray(amp, dtype=xp.float32)
    out = xp.asarray(flags, dtype=bool).copy()
    ntime, nbl, nchan, npol = amp.shape
    # pass 1: time outliers against a smooth (quadratic) trend per baseline, channel and
    # polarization: the calibrator drifts through the beam, so a plain time median would
    # call the ends of a chunk outliers. Two rounds: the second fit ignores what the
    # first flagged, so a burst cannot drag the trend towards itself.
    for _ in range(2):
        trend = _quadratic_trend(amp, out, xp=xp)
        dev = xp.where(out, xp.nan, amp - trend)
        scale = _median(xp.abs(dev), axis=(0, 2), keepdims=True, xp=xp) * MAD_TO_SIGMA
        out |= xp.abs(amp - trend) > _threshold(scale, trend, n_sigma, min_relative, xp)
    # pass 2: channel outliers of the time-median spectrum against its running median
    a = xp.where(out, xp.nan, amp)
    spec = _median(a, axis=0, xp=xp)                                        # (bl, ch, p)
    if nchan >= _RUNNING:
        half = _RUNNING // 2
        padded = xp.concatenate([spec[:, :1].repeat(half, axis=1), spec,
                                 spec[:, -1:].repeat(half, axis=1)], axis=1)
        # neighbours only: a median that includes the sample itself shrinks its deviation
        window = xp.stack([padded[:, k:k + nchan] for k in range(_RUNNING) if k != half],
                          axis=-1)
        smooth = _median(window, axis=-1, xp=xp)
        dev = spec - smooth
        scale = _median(xp.abs(dev), axis=1, keepdims=True, xp=xp) * MAD_TO_SIGMA
        bad = xp.abs(dev) > _threshold(scale, smooth, n_sigma, min_relative, xp)           # (bl, ch, p)
        out |= bad[None]
    # pass 3: whole channels
    frac = xp.mean(out, axis=(0, 1, 3))                                   # (ch,)
    out |= (frac > bad_channel_fraction)[None, None, :, None]
    return out


def _quadratic_trend(amp, flags, *, xp):
    """Weighted least-squares quadratic in time per (baseline, channel, pol), evaluated."""
    ntime = amp.shape[0]
    t = xp.linspace(-1.0, 1.0, ntime, dtype=xp.float32)[:, None, None, None]
    w = (~flags).astype(xp.float32)
    if ntime < 4:
        return xp.sum(w * amp, axis=0) / xp.maximum(xp.sum(w, axis=0), 1)
    s = [xp.sum(w * t ** k, axis=0) for k in range(5)]                    # (bl, ch, p)
    b = [xp.sum(w * amp * t ** k, axis=0) for k in range(3)]
    a = xp.stack([xp.stack([s[i + j] for j in range(3)], axis=-1) for i in range(3)], axis=-2)
    rhs = xp.stack(b, axis=-1)[..., None]
    # samples with too few unflagged times fall back to a constant (ridge on c1, c2)
    a = a + xp.asarray(np.diag([1e-6, 1e-3, 1e-3]), dtype=a.dtype) * xp.maximum(s[0], 1)[..., None, None]
    coef = xp.linalg.solve(a.astype(xp.float64), rhs.astype(xp.float64))[..., 0]
    coef = coef.astype(xp.float32)
    return coef[..., 0] + coef[..., 1] * t + coef[..., 2] * t * t


def _threshold(scale, level, n_sigma, min_relative, xp):
    """n_sigma robust sigmas, but never below min_relative of the local level."""
    return xp.maximum(n_sigma * xp.nan_to_num(scale, nan=0.0),
                      min_relative * xp.abs(xp.nan_to_num(level, nan=0.0)) + 1e-30)


def grid_rows(time, ant1, ant2):
    """Index rows of an MS main table onto a (time, baseline) grid.

    time, ant1, ant2 : (nrow,) from the MS. Returns (index (ntime, nbl) int, -1 where a
    baseline is missing at a time; times (ntime,) s; bl_ant1, bl_ant2 (nbl,) int).
    Baselines are sorted by (ant1, ant2) as the MS gives them (ant1 <= ant2).
    """
    times, t_idx = np.unique(time, return_inverse=True)
    n_ant = int(max(ant1.max(), ant2.max())) + 1
    key = ant1.astype(np.int64) * n_ant + ant2
    bls, b_idx = np.unique(key, return_inverse=True)
    index = np.full((times.size, bls.size), -1, dtype=np.int64)
    index[t_idx, b_idx] = np.arange(time.size)
    return index, times, (bls // n_ant).astype(int), (bls % n_ant).astype(int)


def read_gridded(ms: Path, column: str, index: np.ndarray, *, what: str = "data"):
    """A (ntime, nbl, nchan, npol) array of ``column`` (missing rows: zeros)."""
    with table(str(ms), ack=False) as t:
        if column not in t.colnames():
            raise FlaggingError(ms, f"no {column} column")
        raw = t.getcol(column)
    out = np.zeros(index.shape + raw.shape[1:], dtype=raw.dtype)
    have = index >= 0
    out[have] = raw[index[have]]
    return out


def flag_ms(ms: Path, *, n_sigma: float = 5.0, bad_channel_fraction: float = 0.5,
            column: str = "DATA", method: str = "robust", backend=None) -> FlagStats:
    """Flag outliers in ``ms`` and OR them into its FLAG column (in place).

    method : ``robust`` (this module's median/MAD kernel) or ``aoflagger`` (runs the
    ``aoflagger`` program on the MS when it is on PATH). backend : a
    :class:`pipeline.backend.Backend` (default: the CPU).
    """
    ms = Path(ms)
    if not ms.is_dir():
        raise FlaggingError(ms, "no such Measurement Set")
    if method == "aoflagger":
        return _aoflagger(ms, column=column)
    if method != "robust":
        raise ValueError(f"flag_ms: method must be robust or aoflagger, got {method!r}")
    with table(str(ms), ack=False) as t:
        time, a1, a2 = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        if column not in t.colnames():
            raise FlaggingError(ms, f"no {column} column to flag on")
        data, flag = t.getcol(column), t.getcol("FLAG")
    new_flag, stats = flag_rows(data, flag, time, a1, a2, n_sigma=n_sigma,
                                bad_channel_fraction=bad_channel_fraction, backend=backend)
    with table(str(ms), readonly=False, ack=False) as t:
        t.putcol("FLAG", new_flag)
    return stats


def flag_rows(data: np.ndarray, flag: np.ndarray, time, a1, a2, *, n_sigma: float = 5.0,
              bad_channel_fraction: float = 0.5, backend=None) -> tuple[np.ndarray, FlagStats]:
    """Flags for MS rows (nrow, nchan, npol): the kernel on the cross correlations.

    Returns the new (nrow, nchan, npol) FLAG and the statistics; ``flag`` is not changed.
    """
    from pipeline.backend import cpu_backend  # noqa: PLC0415

    be = backend or cpu_backend()
    cross = np.flatnonzero(a1 != a2)
    index, _, _, _ = grid_rows(time[cross], a1[cross], a2[cross])
    have = index >= 0
    rows = cross[index[have]]
    shape = index.shape + data.shape[1:]
    amp = np.zeros(shape, np.float32)
    old = np.ones(shape, bool)                 # missing rows count as flagged
    amp[have] = np.abs(data[rows])
    old[have] = flag[rows]
    new = be.to_host(robust_flags(be.asarray(amp), be.asarray(old), n_sigma=n_sigma,
                                  bad_channel_fraction=bad_channel_fraction, xp=be.xp))
    out = flag.copy()
    out[rows] = new[have]
    n = max(int(have.sum()) * int(np.prod(data.shape[1:])), 1)
    before, after = int(flag[rows].sum()), int(out[rows].sum())
    chans = int(np.all(new, axis=(0, 1, 3)).sum())
    return out, FlagStats(flagged_fraction_before=before / n, flagged_fraction_after=after / n,
                          channels_flagged=chans, n_new=after - before)


def _aoflagger(ms: Path, *, column: str) -> FlagStats:
    exe = shutil.which("aoflagger")
    if exe is None:
        raise FlaggingError(ms, "aoflagger is not installed (no 'aoflagger' on PATH); "
                            "install Debian's aoflagger package or use method='robust'")

    def fraction() -> tuple[float, np.ndarray]:
        with table(str(ms), ack=False) as t:
            f = t.getcol("FLAG")[t.getcol("ANTENNA1") != t.getcol("ANTENNA2")]
        return float(f.mean()) if f.size else 0.0, f

    before, fb = fraction()
    run = subprocess.run([exe, "-column", column, str(ms)], capture_output=True, text=True)
    if run.returncode != 0:
        raise FlaggingError(ms, f"aoflagger failed ({run.returncode}): "
                            f"{run.stderr.strip()[-300:]}")
    after, fa = fraction()
    chans = int(np.all(fa, axis=(0, 2)).sum()) if fa.size else 0
    return FlagStats(flagged_fraction_before=before, flagged_fraction_after=after,
                     channels_flagged=chans, n_new=int(fa.sum() - fb.sum()))
