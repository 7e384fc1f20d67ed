"""The VAST pipeline's variability metrics as pure NumPy functions.

The store computes the same quantities in SQL over the photometry table
(``pipeline.store.photometry``); these functions are the slow, obvious reference the tests
hold the SQL to, and what a notebook uses on a lightcurve it already has.

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
    with np.errstate(invalid="ignore"):
        both = np.isfinite(e) & np.isfinite(vv) & (e > t.eta_threshold(n)) & (vv > t.v)
        pair = (vs >= t.vs) & (m > t.m)
    judged = n >= t.min_meas
    if max_snr is not None:
        judged &= np.nan_to_num(np.asarray(max_snr, float), nan=-np.inf) >= t.min_snr
    return judged & (both | pair)


def is_variable(m: Metrics, thresholds: VariabilityThresholds | None = None) -> bool:
    """Whether one lightcurve's metrics flag it (see :func:`flag_variable`)."""
    return bool(flag_variable([m.n_meas], [m.eta], [m.v], [m.vs_max], [m.m_max], [m.max_snr],
                              thresholds=thresholds)[0])
