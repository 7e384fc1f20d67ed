"""The VAST pipeline's variability metrics as pure NumPy functions.

The store keeps them as per-source running aggregates updated by each image's rows
(:func:`apply_rows`, O(rows of the image)) and recomputes them in SQL over the photometry
table when it must (``pipeline.store.photometry``); the per-lightcurve functions are the
slow, obvious reference the tests hold both to, and what a notebook uses on a lightcurve
it already has.

Definitions (Murphy et al. 2021; VAST pipeline):

- weights w_i = 1 / σ_i², weighted mean ξ = Σ w S / Σ w
- η = Σ w (S − ξ)² / (N − 1), the weighted reduced χ² about ξ
- V = std(S, ddof=1) / mean(S)
- per pair of epochs (a, b): Vs = (S_a − S_b) / sqrt(σ_a² + σ_b²),
  m = 2 (S_a − S_b) / (S_a + S_b)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.photometry.thresholds import VariabilityThresholds


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """One lightcurve's metrics; ``vs_max``/``m_max`` are |Vs| and |m| of the chosen pair."""

    n_meas: int
    wmean_jy: float
    eta: float
    v: float
    vs_max: float
    m_max: float
    max_snr: float = float("inf")


def weighted_mean(flux: np.ndarray, err: np.ndarray) -> float:
    """Inverse-variance weighted mean of ``flux`` (Jy) with 1σ errors ``err`` (Jy)."""
    w = 1.0 / np.asarray(err, float) ** 2
    return float(np.sum(w * flux) / np.sum(w))


def eta(flux: np.ndarray, err: np.ndarray) -> float:
    """η, the weighted reduced χ² of ``flux`` about its weighted mean; NaN for N < 2."""
    flux = np.asarray(flux, float)
    if flux.size < 2:
        return float("nan")
    w = 1.0 / np.asarray(err, float) ** 2
    return float(np.sum(w * (flux - weighted_mean(flux, err)) ** 2) / (flux.size - 1))


def v_index(flux: np.ndarray) -> float:
    """V, the sample standard deviation over the mean; NaN for N < 2."""
    flux = np.asarray(flux, float)
    if flux.size < 2:
        return float("nan")
    return float(np.std(flux, ddof=1) / np.mean(flux))


def pair_metrics(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Vs, m) for every pair a < b of epochs, each of shape (N (N − 1) / 2,)."""
    flux, err = np.asarray(flux, float), np.asarray(err, float)
    a, b = np.triu_indices(flux.size, k=1)
    vs = (flux[a] - flux[b]) / np.sqrt(err[a] ** 2 + err[b] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = 2.0 * (flux[a] - flux[b]) / (flux[a] + flux[b])
    return vs, m


def max_pair(flux: np.ndarray, err: np.ndarray, *, m_threshold: float) -> tuple[float, float]:
    """(|Vs|, |m|) of the pair with the largest |Vs| among pairs with |m| > ``m_threshold``.

    (0, 0) when no pair passes, as the VAST pipeline reports it.
    """
    vs, m = pair_metrics(flux, err)
    keep = np.abs(m) > m_threshold
    if not keep.any():
        return 0.0, 0.0
    i = np.flatnonzero(keep)[np.argmax(np.abs(vs[keep]))]
    return float(abs(vs[i])), float(abs(m[i]))


def metrics(flux: np.ndarray, err: np.ndarray, *,
            thresholds: VariabilityThresholds | None = None) -> Metrics:
    """Every metric of one lightcurve (fluxes and 1σ errors in Jy)."""
    thresholds = thresholds or VariabilityThresholds()
    vs_max, m_max = max_pair(flux, err, m_threshold=thresholds.m)
    return Metrics(n_meas=int(np.size(flux)), wmean_jy=weighted_mean(flux, err),
                   eta=eta(flux, err), v=v_index(flux), vs_max=vs_max, m_max=m_max,
                   max_snr=float(np.max(np.asarray(flux, float) / np.asarray(err, float))))


def flag_variable(n_meas, eta_, v, vs_max, m_max, max_snr=None, *,
                  thresholds: VariabilityThresholds | None = None) -> np.ndarray:
    """(n,) bool: which lightcurves are variable, from their metrics (arrays of (n,)).

    η (above the threshold for its N, see ``VariabilityThresholds.eta_threshold``) with V,
    or a pair with |Vs| ≥ vs and |m| > m; fewer than ``min_meas`` points, or none reaching
    ``min_snr`` (``max_snr``: the best SNR of each lightcurve; None: not checked), are not
    judged.
    The store applies this same function to the metrics its SQL computes.
    """
    t = thresholds or VariabilityThresholds()
    n = np.asarray(n_meas, float)
    e, vv = np.asarray(eta_, float), np.asarray(v, float)
    vs, m = np.nan_to_num(np.asarray(vs_max, float)), np.nan_to_num(np.asarray(m_max, float))
    # One χ² quantile per distinct N (an image's 10 k sources share a few N).
    uniq, inverse = np.unique(n, return_inverse=True)
    eta_thr = t.eta_threshold(uniq)[inverse.reshape(n.shape)] if n.size else n
    with np.errstate(invalid="ignore"):
        both = np.isfinite(e) & np.isfinite(vv) & (e > eta_thr) & (vv > t.v)
        pair = (vs >= t.vs) & (m > t.m)
    judged = n >= t.min_meas
    if max_snr is not None:
        judged &= np.nan_to_num(np.asarray(max_snr, float), nan=-np.inf) >= t.min_snr
    return judged & (both | pair)


def is_variable(m: Metrics, thresholds: VariabilityThresholds | None = None) -> bool:
    """Whether one lightcurve's metrics flag it (see :func:`flag_variable`)."""
    return bool(flag_variable([m.n_meas], [m.eta], [m.v], [m.vs_max], [m.m_max], [m.max_snr],
                              thresholds=thresholds)[0])


# ------------------------------------------------------------ running aggregates
#: A source's running aggregates as the store keeps them (variability table, 0007).
#: Sums are about ``ref_jy``: d = flux − ref_jy, w = 1 / σ².
AGGREGATE_COLUMNS = ("n_meas", "ref_jy", "sum_w", "sum_wd", "sum_wdd", "sum_d", "sum_dd",
                     "max_jy", "min_jy", "max_snr", "min_err_jy", "n_detected", "first_mjd",
                     "last_mjd", "vs_max", "m_max", "pair_image_a", "pair_image_b")
#: SNR at which a measurement counts as a detection (``n_detected``).
DETECTION_SNR = 5.0


@dataclass(frozen=True, kw_only=True)
class AggregateUpdate:
    """What :func:`apply_rows` did to the touched sources.

    ``state``: AGGREGATE_COLUMNS plus wmean_jy, eta, v, mean_jy, indexed by source_id, for
    the sources it updated from the rows alone (those left with no rows are absent and
    listed in ``emptied``). ``recompute``: sources whose removed row held an extreme or
    the stored pair, to be recomputed from all their rows. ``pairs``: sources whose
    new row might beat the stored pair maximum, or whose removed row held an extreme,
    to be read from their rows keeping the stored pair (merged with this image's pairs).
    """

    state: pd.DataFrame
    recompute: np.ndarray
    pairs: np.ndarray
    emptied: np.ndarray


def pair_bound(flux: np.ndarray, err: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               min_err: np.ndarray, *, m_threshold: float) -> np.ndarray:
    """An upper bound on |Vs| of a new point (flux, err) against points in [lo, hi].

    The stored points have fluxes in [lo, hi] and errors ≥ ``min_err``; only pairs with
    |m| > ``m_threshold`` count. For S + S_b > 0, |m| grows towards either end of the
    interval, as does |S − S_b|, so the ends bound both; otherwise m is not monotonic and
    the bound ignores it. Exact maxima need every point; the bound lets most sources skip
    reading them (0 when no stored point can pass the |m| cut).
    """
    den = np.sqrt(err ** 2 + min_err ** 2)
    out = np.zeros(np.shape(flux))
    with np.errstate(divide="ignore", invalid="ignore"):
        for end in (lo, hi):
            dist = np.abs(flux - end)
            m = np.abs(2.0 * (flux - end) / (flux + end))
            counts = (flux + lo <= 0) | ~np.isfinite(m) | (m > m_threshold)
            out = np.fmax(out, np.where(counts, dist / den, 0.0))
    # A NaN anywhere (no bound known) is treated as a bound that is never beaten.
    return np.where(np.isfinite(out), out, np.inf)


def metrics_from_aggregates(state: pd.DataFrame) -> pd.DataFrame:
    """wmean_jy, eta, v, mean_jy of each row of ``state`` (AGGREGATE_COLUMNS), from its sums.

    η = (Σ w d² − (Σ w d)² / Σ w) / (N − 1) and s² = (Σ d² − (Σ d)² / N) / (N − 1): the
    shift by ref_jy leaves both unchanged and keeps the subtraction well conditioned.
    """
    n = state["n_meas"].to_numpy(float)
    ref = state["ref_jy"].to_numpy(float)
    sw, swd, swdd = (state[c].to_numpy(float) for c in ("sum_w", "sum_wd", "sum_wdd"))
    sd, sdd = state["sum_d"].to_numpy(float), state["sum_dd"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        wmean = ref + swd / sw
        mean = ref + sd / n
        many = n > 1
        eta_ = np.where(many, np.maximum(swdd - swd * swd / sw, 0.0) / (n - 1), np.nan)
        sdev = np.sqrt(np.maximum(sdd - sd * sd / n, 0.0) / (n - 1))
        v = np.where(many & (mean != 0), sdev / mean, np.nan)
    return pd.DataFrame({"wmean_jy": wmean, "eta": eta_, "v": v, "mean_jy": mean},
                        index=state.index)


def apply_rows(old: pd.DataFrame, *, add: pd.DataFrame, remove: pd.DataFrame | None = None,
               image_id: int, m_threshold: float) -> AggregateUpdate:
    """Update running aggregates with one image's rows (``add``), less its earlier ones.

    ``old``: the stored aggregates (AGGREGATE_COLUMNS, indexed by source_id; a source
    absent has no rows yet). ``add``/``remove``: rows of image ``image_id`` (source_id,
    flux_jy, flux_err_jy, snr, mjd; one per source), ``remove`` the ones it replaces.
    Costs O(rows of this image), never the sources' histories.
    """
    remove = remove if remove is not None else add.iloc[:0]
    if add["source_id"].duplicated().any() or remove["source_id"].duplicated().any():
        raise ValueError(f"image {image_id}: more than one row of a source")
    ids = np.union1d(add["source_id"].to_numpy(np.int64), remove["source_id"].to_numpy(np.int64))
    st = old.reindex(ids).loc[:, list(AGGREGATE_COLUMNS)].copy()
    fresh = st["n_meas"].isna().to_numpy()
    st.loc[fresh, ["n_meas", "sum_w", "sum_wd", "sum_wdd", "sum_d", "sum_dd", "n_detected",
                   "vs_max", "m_max"]] = 0.0
    st = st.astype({c: float for c in AGGREGATE_COLUMNS})
    # A row stored before 0007 filled its sums, or sums lost: recompute from the rows.
    recompute = (~fresh) & st["sum_w"].isna().to_numpy()

    rem = remove.set_index("source_id").reindex(ids)
    had = rem["flux_jy"].notna().to_numpy() & ~recompute
    if had.any():
        r_s, r_e = rem["flux_jy"].to_numpy(float), rem["flux_err_jy"].to_numpy(float)
        r_snr, r_mjd = rem["snr"].to_numpy(float), rem["mjd"].to_numpy(float)
        pa, pb_ = st["pair_image_a"].to_numpy(float), st["pair_image_b"].to_numpy(float)
        # A removed row that was one end of the stored pair (or an unknown pair) takes the
        # pair with it: those sources recompute every pair from their rows.
        recompute |= had & ((pa == image_id) | (pb_ == image_id)
                            | (np.isnan(pa) & (st["vs_max"].to_numpy() > 0)))
        # A removed row that held an extreme the replacing row does not reach leaves a
        # value the aggregates cannot give back: those sources are read again, keeping
        # the stored pair (this image's pairs come from the rows). min_err_jy may stay
        # too small: it only loosens pair_bound.
        a_s, a_snr = (add.set_index("source_id").reindex(ids)[c].to_numpy(float)
                      for c in ("flux_jy", "snr"))
        a_mjd = add.set_index("source_id").reindex(ids)["mjd"].to_numpy(float)
        with np.errstate(invalid="ignore"):
            extreme = (((r_s >= st["max_jy"].to_numpy()) & ~(a_s >= r_s))
                       | ((r_s <= st["min_jy"].to_numpy()) & ~(a_s <= r_s))
                       | ((r_snr >= st["max_snr"].to_numpy()) & ~(a_snr >= r_snr))
                       | ((r_mjd <= st["first_mjd"].to_numpy()) & ~(a_mjd <= r_mjd))
                       | ((r_mjd >= st["last_mjd"].to_numpy()) & ~(a_mjd >= r_mjd)))
        reread = had & extreme & ~recompute
        sub = had & ~recompute
        d, w = r_s - st["ref_jy"].to_numpy(), 1.0 / r_e ** 2
        for col, val in (("n_meas", 1.0), ("sum_w", w), ("sum_wd", w * d),
                         ("sum_wdd", w * d * d), ("sum_d", d), ("sum_dd", d * d),
                         ("n_detected", (r_snr >= DETECTION_SNR).astype(float))):
            st[col] = st[col].to_numpy() - np.where(sub, val, 0.0)

    else:
        reread = np.zeros(ids.size, bool)
    new = add.set_index("source_id").reindex(ids)
    has = new["flux_jy"].notna().to_numpy() & ~recompute
    s, e = new["flux_jy"].to_numpy(float), new["flux_err_jy"].to_numpy(float)
    snr, mjd = new["snr"].to_numpy(float), new["mjd"].to_numpy(float)
    empty_before = st["n_meas"].to_numpy() == 0
    bound = pair_bound(s, e, st["min_jy"].to_numpy(), st["max_jy"].to_numpy(),
                       st["min_err_jy"].to_numpy(), m_threshold=m_threshold)
    pairs = reread | (has & ~empty_before & (bound > np.nan_to_num(st["vs_max"].to_numpy())))
    st["ref_jy"] = np.where(has & np.isnan(st["ref_jy"].to_numpy()), s, st["ref_jy"])
    d, w = s - st["ref_jy"].to_numpy(), 1.0 / e ** 2
    for col, val in (("n_meas", 1.0), ("sum_w", w), ("sum_wd", w * d), ("sum_wdd", w * d * d),
                     ("sum_d", d), ("sum_dd", d * d),
                     ("n_detected", (snr >= DETECTION_SNR).astype(float))):
        st[col] = st[col].to_numpy() + np.where(has, val, 0.0)
    for col, val, op in (("max_jy", s, np.fmax), ("min_jy", s, np.fmin),
                         ("max_snr", snr, np.fmax), ("min_err_jy", e, np.fmin),
                         ("first_mjd", mjd, np.fmin), ("last_mjd", mjd, np.fmax)):
        st[col] = np.where(has, op(st[col].to_numpy(), val), st[col].to_numpy())
    first_point = has & empty_before
    st.loc[first_point, ["vs_max", "m_max"]] = 0.0
    st.loc[first_point, ["pair_image_a", "pair_image_b"]] = np.nan

    emptied = (st["n_meas"].to_numpy() <= 0) & ~recompute
    done = ~recompute & ~emptied
    state = st[done]
    state = state.join(metrics_from_aggregates(state))
    return AggregateUpdate(state=state, recompute=ids[recompute], pairs=ids[pairs & done],
                           emptied=ids[emptied])
