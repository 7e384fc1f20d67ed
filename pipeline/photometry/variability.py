"""The VAST pipeline's variability metrics as pure NumPy functions.

The store computes the same quantities in SQL over the photometry table
(``pipeline.store_photometry``); these functions are the slow, obvious reference the tests
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
                   eta=eta(flux, err), v=v_index(flux), vs_max=vs_max, m_max=m_max)


def is_variable(m: Metrics, thresholds: VariabilityThresholds | None = None) -> bool:
    """Whether η and V both exceed their thresholds, or a pair has |Vs| ≥ vs with |m| > m."""
    t = thresholds or VariabilityThresholds()
    both = bool(np.isfinite(m.eta) and np.isfinite(m.v) and m.eta > t.eta and m.v > t.v)
    return both or (m.vs_max >= t.vs and m.m_max > t.m)
