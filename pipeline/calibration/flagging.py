"""RFI flagging: robust (median/MAD) outliers on visibility amplitudes, OR-ed into FLAG.

The kernel (:func:`robust_flags`) works on amplitudes arranged (ntime, nbl, nchan, npol)
of cross-correlations. Three passes, each a median/MAD test at ``n_sigma``:

1. in time: each sample against a quadratic trend in time of its baseline, channel and
   polarization, fitted twice, the second time without what the first found (catches
   bursts: one integration, many channels);
2. in frequency: each baseline's time-mean spectrum (of the samples pass 1 kept)
   above a running median of its 4 neighbouring channels (catches narrow-band RFI that
   is there all the time; the running median follows the smooth bandpass ripple; only
   excess counts, so the clean channels beside a transmitter stay unflagged);
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

from pipeline.calibration.ms_columns import read_column
from pipeline.calibration.registry import Flagger
from pipeline.errors import ContimgError

MAD_TO_SIGMA = 1.4826
MIN_RELATIVE = 0.05
_RUNNING = 5   # channels in the running median of pass 2
_BLOCK_SAMPLES = 1 << 21   # samples per block of baselines (8 MB of float32)
_MAD_SAMPLES = 4096        # pass 1's MAD is taken from at least this many samples
_PARTITION_MIN = 256       # a masked median partitions rows at least this long, else sorts


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


def robust_flags(amp, flags, *, n_sigma: float = 5.0, bad_channel_fraction: float = 0.5,
                 min_relative: float = MIN_RELATIVE, skip=None, xp=np):
    """Outlier flags from amplitudes; returns new flags OR-ed with ``flags``.

    Parameters
    ----------
    amp : (ntime, nbl, nchan, npol) float or complex
        Visibility amplitudes of cross-correlations (Jy or uncalibrated units), or the
        complex visibilities themselves (their modulus is taken a block at a time).
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
    skip : (nbl,) bool, optional
        Baselines left alone (their flags come back unchanged, and they count neither
        way in pass 3): the autocorrelations, when the caller's grid holds every row.
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
                             min_relative=min_relative, skip=skip, xp=xp)


def _robust_flags(amp, flags, *, n_sigma, bad_channel_fraction, min_relative, skip, xp):
    ntime, nbl, nchan, npol = amp.shape
    out = xp.empty(amp.shape, dtype=bool)
    skip = None if skip is None or not bool(xp.any(xp.asarray(skip))) else xp.asarray(skip)
    # passes 1 and 2 judge each baseline by itself: blocks of baselines keep the
    # temporaries in cache and the memory bounded whatever the size of the chunk; one
    # thread, as the other core is busy meanwhile (a solve's calibrator model, or the
    # runner's other stages)
    step = max(1, _BLOCK_SAMPLES // max(1, ntime * nchan * npol))
    per_chan = xp.zeros(nchan, dtype=xp.int64)
    for b0 in range(0, nbl, step):
        part = amp[:, b0:b0 + step]
        part = xp.abs(part) if part.dtype.kind == "c" else xp.asarray(part, dtype=xp.float32)
        blk = _baseline_flags(part,
                              xp.asarray(flags[:, b0:b0 + step], dtype=bool),
                              n_sigma=n_sigma, min_relative=min_relative, xp=xp)
        if skip is not None and bool(skip[b0:b0 + step].any()):
            left = xp.flatnonzero(skip[b0:b0 + step])
            blk[:, left] = xp.asarray(flags[:, b0:b0 + step][:, left], dtype=bool)
            blk_counted = blk[:, xp.flatnonzero(~skip[b0:b0 + step])]
        else:
            blk_counted = blk
        out[:, b0:b0 + step] = blk
        # over the leading axes first: a reduction along the short last axis is slow
        per_chan += xp.count_nonzero(blk_counted, axis=(0, 1)).sum(axis=-1)
    # pass 3: whole channels
    n_counted = nbl - (int(xp.count_nonzero(skip)) if skip is not None else 0)
    bad = per_chan > bad_channel_fraction * (ntime * n_counted * npol)
    if bool(bad.any()):
        if skip is None:
            out[:, :, bad, :] = True
        else:
            keep = xp.flatnonzero(~skip)
            sub = out[:, keep]
            sub[:, :, bad, :] = True
            out[:, keep] = sub
    return out


def _baseline_flags(amp, flags, *, n_sigma, min_relative, xp):
    """Passes 1 and 2 on a block of baselines: (ntime, nb, nchan, npol) float32 in."""
    out = flags.copy()
    # pass 1: time outliers against a smooth (quadratic) trend per baseline, channel and
    # polarization: the calibrator drifts through the beam, so a plain time median would
    # call the ends of a chunk outliers. Two rounds: the second fit ignores what the
    # first flagged, so a burst cannot drag the trend towards itself, and only the
    # second's verdict stands (the first's, against a trend a burst dragged, also
    # catches good samples beside the burst)
    for last in (False, True):
        trend = _quadratic_trend(amp, out, xp=xp)
        dev = xp.subtract(amp, trend)
        xp.abs(dev, out=dev)
        scale = n_sigma * xp.nan_to_num(_mad_scale(dev, out, xp=xp), nan=0.0)  # (1, nb, 1, p)
        # the trend is finite: _threshold's NaN guards, in place (full-size temporaries)
        limit = xp.abs(trend, out=trend)
        limit *= min_relative
        limit += 1e-30
        # per polarization: a (1, nb, 1, p) operand broadcast over a length-2 innermost
        # axis runs NumPy's inner loop two elements at a time (3x slower, measured)
        for j in range(limit.shape[-1]):
            xp.maximum(limit[..., j], scale[..., j], out=limit[..., j])
        if last:
            out = flags | (dev > limit)
        else:
            out |= dev > limit
        del trend, dev, limit
    # pass 2: channel outliers of the time-mean spectrum of what pass 1 kept against its
    # running median (pass 1 took the bursts out, so a mean is as robust here as a
    # median, and a sort of every time series costs more than the rest of the pass)
    spec = _masked_mean(amp, out, xp=xp)                                 # (nb, ch, p)
    if amp.shape[2] >= _RUNNING:
        smooth = _neighbour_median(spec, xp=xp)
        dev = spec - smooth
        mad = _masked_median(xp.abs(dev), xp.isnan(dev), axis=1, xp=xp)  # (nb, p)
        scale = mad[:, None, :] * MAD_TO_SIGMA
        with warnings.catch_warnings():
            # NaN (all-flagged) spectra compare False: nothing new there
            warnings.simplefilter("ignore", RuntimeWarning)
            # one-sided: a transmitter adds power; a channel below its neighbours is
            # next to RFI (their median is raised) or in a bandpass dip, not RFI itself
            bad = dev > _threshold(scale, smooth, n_sigma, min_relative, xp)
        out |= bad[None]
    return out


def _masked_mean(x, mask, *, xp):
    """Mean over axis 0 of ``x`` where ``mask`` is False; NaN where all of it is masked."""
    kept = ~mask
    n = xp.count_nonzero(kept, axis=0)
    total = xp.sum(xp.where(kept, x, x.dtype.type(0)), axis=0)
    return xp.where(n > 0, total / xp.maximum(n, 1), xp.nan).astype(x.dtype)


def _masked_median(x, mask, *, axis: int, xp):
    """Median of ``x`` over ``axis`` where ``mask`` is False; NaN where all of it is masked.

    Exact (the mean of the two middle values for an even count), like ``nanmedian``,
    but through one sort of the rows with the masked values pushed to the end: NumPy's
    SIMD sort of short float32 rows is linear in practice, where ``nanmedian`` loops in
    Python-level chunks and copies.
    """
    # counted along the original axis: vectorised across rows, unlike a last-axis count
    n = (x.shape[axis] - xp.count_nonzero(mask, axis=axis))[..., None]
    mask = xp.moveaxis(mask, axis, -1)
    s = xp.moveaxis(x, axis, -1).copy(order="C")
    xp.copyto(s, xp.asarray(xp.inf, dtype=s.dtype), where=mask)
    lo_i = xp.maximum((n - 1) // 2, 0)
    hi_i = xp.minimum(n // 2, s.shape[-1] - 1)
    n0 = int(n.reshape(-1)[0]) if n.size else 0
    if s.shape[-1] >= _PARTITION_MIN and n.size and bool(xp.all(n == n0)):
        # long rows, none masked differently: one partition at the upper middle and the
        # largest value below it, linear time (2.5x faster than NumPy's SIMD sort at
        # 4608 values; for short rows the sort is faster)
        k = n0 // 2
        if k == 0:
            s.sort(axis=-1)
            lo = xp.take_along_axis(s, lo_i, axis=-1)
            hi = xp.take_along_axis(s, hi_i, axis=-1)
        else:
            s.partition(k, axis=-1)
            hi = s[..., k:k + 1]
            lo = s[..., :k].max(axis=-1, keepdims=True) if n0 % 2 == 0 else hi
    else:
        s.sort(axis=-1)
        lo = xp.take_along_axis(s, lo_i, axis=-1)
        hi = xp.take_along_axis(s, hi_i, axis=-1)
    med = (0.5 * (lo + hi))[..., 0]
    return xp.where(n[..., 0] > 0, med, xp.nan).astype(s.dtype)


def _mad_scale(dev, flags, *, xp):
    """Robust sigma (1.4826 median) of ``dev`` (ntime, nb, nchan, npol) per baseline and pol.

    Taken from every ``k``-th channel when time x channel holds more than
    ``_MAD_SAMPLES`` samples. That is statistically the same estimate: the sample
    median of n draws has a relative standard error of ~1.17 / sqrt(n) for |Gaussian|
    noise, 1.7 % at the >= 4096 samples kept (5 sigma judged as 5 +- 0.09), while the
    full 18 k-sample sort of a 768-channel chunk costs four times as much. The stride
    is over channels, so every integration and the whole band still take part; an
    outlier channel weighs in the median as much as it would in the full set.
    """
    ntime, nb, nchan, npol = dev.shape
    k = max(1, (ntime * nchan) // _MAD_SAMPLES)
    # (nb, p, ntime * nchan/k): one row per baseline and polarization
    d = xp.transpose(dev[:, :, ::k, :], (1, 3, 0, 2)).reshape(nb, npol, -1)
    f = xp.transpose(flags[:, :, ::k, :], (1, 3, 0, 2)).reshape(nb, npol, -1)
    return (_masked_median(d, f, axis=-1, xp=xp) * MAD_TO_SIGMA)[None, :, None, :]


def _neighbour_median(spec, *, xp):
    """Median of the 4 neighbours (2 each side, edges repeated) of every channel.

    spec : (nb, nchan, npol) float32, NaN where a channel has no data. The median of
    four is the mean of max(min pairs) and min(max pairs); a window holding NaN falls
    back to nanmedian (rare: only fully flagged time-channel columns are NaN).
    """
    nchan = spec.shape[1]
    half = _RUNNING // 2
    padded = xp.concatenate([spec[:, :1].repeat(half, axis=1), spec,
                             spec[:, -1:].repeat(half, axis=1)], axis=1)
    # neighbours only: a median that includes the sample itself shrinks its deviation
    a, b, c, d = (padded[:, k:k + nchan] for k in range(_RUNNING) if k != half)
    lo = xp.maximum(xp.minimum(a, b), xp.minimum(c, d))
    hi = xp.minimum(xp.maximum(a, b), xp.maximum(c, d))
    smooth = 0.5 * (lo + hi)
    holes = xp.isnan(smooth)
    if bool(holes.any()):
        window = xp.stack([w[holes] for w in (a, b, c, d)], axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN windows stay NaN
            smooth[holes] = xp.nanmedian(window, axis=-1)
    return smooth


def _quadratic_trend(amp, flags, *, xp):
    """Weighted least-squares quadratic in time per (baseline, channel, pol), evaluated.

    The normal equations' sums over time are matrix products with the powers of t, and
    the 3 x 3 systems are solved in closed form (adjugate, float64): no per-sample
    ``linalg.solve`` call and no (ntime, ...)-sized temporaries beyond the weights.
    """
    ntime = amp.shape[0]
    if ntime < 4:
        w = (~flags).astype(xp.float32)
        return xp.sum(w * amp, axis=0) / xp.maximum(xp.sum(w, axis=0), 1)
    shape = amp.shape
    t = np.linspace(-1.0, 1.0, ntime)
    powers = np.stack([t ** k for k in range(5)])                        # (5, T)
    amp2 = amp.reshape(ntime, -1)
    # every column without flags has the same normal matrix: one (3, T) projection
    a00, a01, a02, a11, a12, a22 = (float(v) for v in _normal_matrix(powers.sum(axis=1)))
    full = np.array([[a00, a01, a02], [a01, a11, a12], [a02, a12, a22]])
    proj = np.linalg.solve(full, powers[:3])                             # (3, T)
    coef = xp.asarray(proj, dtype=xp.float32) @ amp2                     # (3, n)
    flags2 = flags.reshape(ntime, -1)
    part = xp.flatnonzero(xp.any(flags2, axis=0))
    if part.size:
        w = (~flags2[:, part]).astype(xp.float64)
        pw = xp.asarray(powers)
        s = pw @ w                                                       # (5, npart)
        b = pw[:3] @ (w * amp2[:, part])                                 # (3, npart)
        coef[:, part] = xp.stack(_solve3(_normal_matrix(s, xp=xp), b)).astype(xp.float32)
    return (xp.asarray(powers[:3].T, dtype=xp.float32) @ coef).reshape(shape)


def _normal_matrix(s, xp=np):
    """Entries (a00, a01, a02, a11, a12, a22) of the ridged symmetric normal matrices.

    s : (5, ...) sums over time of w t^k. A column with too few unflagged times falls
    back to a constant (ridge on c1, c2).
    """
    r = xp.maximum(s[0], 1.0)
    return s[0] + 1e-6 * r, s[1], s[2], s[2] + 1e-3 * r, s[3], s[4] + 1e-3 * r


def _solve3(a, b):
    """Solve symmetric 3 x 3 systems in closed form (adjugate): a from _normal_matrix, b (3, n)."""
    a00, a01, a02, a11, a12, a22 = a
    c00, c01, c02 = a11 * a22 - a12 * a12, a02 * a12 - a01 * a22, a01 * a12 - a02 * a11
    c11, c12, c22 = a00 * a22 - a02 * a02, a01 * a02 - a00 * a12, a00 * a11 - a01 * a01
    inv_det = 1.0 / (a00 * c00 + a01 * c01 + a02 * c02)
    return [(c00 * b[0] + c01 * b[1] + c02 * b[2]) * inv_det,
            (c01 * b[0] + c11 * b[1] + c12 * b[2]) * inv_det,
            (c02 * b[0] + c12 * b[1] + c22 * b[2]) * inv_det]


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


def flag_ms(ms: Path, *, n_sigma: float = 5.0, bad_channel_fraction: float = 0.5,
            column: str = "DATA", method: Flagger = "robust", backend=None) -> FlagStats:
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
        data, flag = read_column(t, column, np.complex64), read_column(t, "FLAG", bool)
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
    regular = regular_grid(time, a1, a2)
    if regular is not None:
        return _flag_regular(data, flag, regular, a1, a2, n_sigma=n_sigma,
                             bad_channel_fraction=bad_channel_fraction, be=be)
    cross = np.flatnonzero(a1 != a2)
    index, _, _, _ = grid_rows(time[cross], a1[cross], a2[cross])
    have = index >= 0
    shape = index.shape + data.shape[1:]
    amp = np.zeros(shape, np.float32)
    old = np.ones(shape, bool)                 # missing rows count as flagged
    for k in range(index.shape[0]):
        # one integration at a time: data[rows] whole would be a second copy of DATA
        h = have[k]
        src = cross[index[k, h]]
        amp[k, h] = np.abs(data[src])
        old[k, h] = flag[src]
    new = be.to_host(robust_flags(be.asarray(amp), be.asarray(old), n_sigma=n_sigma,
                                  bad_channel_fraction=bad_channel_fraction, xp=be.xp))
    out = flag.copy()
    for k in range(index.shape[0]):
        h = have[k]
        out[cross[index[k, h]]] = new[k, h]
    per_sample = int(np.prod(data.shape[1:]))
    n = max(int(have.sum()) * per_sample, 1)
    # missing rows are flagged in both grids: count them out
    missing = int((~have).sum()) * per_sample
    before = int(np.count_nonzero(old)) - missing
    after = int(np.count_nonzero(new)) - missing
    per_chan = np.count_nonzero(new, axis=(0, 1)).sum(axis=-1)   # leading axes first: fast
    chans = int((per_chan == new.shape[0] * new.shape[1] * new.shape[3]).sum())
    return out, FlagStats(flagged_fraction_before=before / n, flagged_fraction_after=after / n,
                          channels_flagged=chans, n_new=after - before)


def regular_grid(time, ant1, ant2) -> tuple[int, int] | None:
    """(ntime, nbl) when MS rows are a full time-major grid of baselines, else None.

    The same baselines in the same order at every integration, as the converter writes
    them. Then (nrow, ...) columns reshape to (ntime, nbl, ...) views: no gathered copies.
    """
    time, ant1, ant2 = (np.asarray(x) for x in (time, ant1, ant2))
    if time.size == 0:
        return None
    nbl = int(np.count_nonzero(time == time[0]))
    if nbl == 0 or time.size % nbl:
        return None
    ntime = time.size // nbl
    t = time.reshape(ntime, nbl)
    if not (t == t[:, :1]).all() or (ntime > 1 and not (np.diff(t[:, 0]) > 0).all()):
        return None
    for a in (ant1, ant2):
        g = a.reshape(ntime, nbl)
        if not (g == g[:1]).all():
            return None
    key = ant1[:nbl].astype(np.int64) * (int(max(ant1.max(), ant2.max())) + 1) + ant2[:nbl]
    if np.unique(key).size != nbl:
        return None
    return ntime, nbl


def _flag_regular(data, flag, grid, a1, a2, *, n_sigma, bad_channel_fraction, be):
    """flag_rows on a regular grid: every row at once, autocorrelations skipped."""
    ntime, nbl = grid
    shape = (ntime, nbl) + data.shape[1:]
    auto = (a1[:nbl] == a2[:nbl])
    # the visibilities as they are: robust_flags takes |V| a block of baselines at a
    # time (a whole-chunk amplitude array is 670 MB of fresh pages)
    vis = data.reshape(shape)
    old = flag.reshape(shape)
    new = be.to_host(robust_flags(be.asarray(vis), be.asarray(old), n_sigma=n_sigma,
                                  bad_channel_fraction=bad_channel_fraction,
                                  skip=be.asarray(auto), xp=be.xp))
    cross = np.flatnonzero(~auto)
    per_row = int(np.prod(data.shape[1:]))
    n = max(ntime * cross.size * per_row, 1)

    def count_cross(f):
        return int(np.count_nonzero(f)) - int(np.count_nonzero(f[:, auto]))

    before, after = count_cross(old), count_cross(new)
    per_chan = (np.count_nonzero(new, axis=(0, 1)).sum(axis=-1)
                - np.count_nonzero(new[:, auto], axis=(0, 1)).sum(axis=-1))
    chans = int((per_chan == ntime * cross.size * new.shape[3]).sum())
    return new.reshape(flag.shape), FlagStats(
        flagged_fraction_before=before / n, flagged_fraction_after=after / n,
        channels_flagged=chans, n_new=after - before)


def _aoflagger(ms: Path, *, column: str) -> FlagStats:
    exe = shutil.which("aoflagger")
    if exe is None:
        raise FlaggingError(ms, "aoflagger is not installed (no 'aoflagger' on PATH); "
                            "install Debian's aoflagger package, or flag with the robust "
                            "flagger ([calibration] flagger = \"robust\" in contimg.toml)")

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
