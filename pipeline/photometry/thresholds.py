"""When a source counts as variable: the VAST pipeline's metrics and their thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class VariabilityThresholds:
    """η and V over the whole lightcurve; Vs and m for any pair of epochs (VAST)."""

    eta: float = 2.0     # weighted reduced χ² of the fluxes about their weighted mean
    #: ...and η must reach what a steady source with correct errors exceeds with this
    #: probability: η of N points is χ²(N − 1)/(N − 1), which passes 2 in 13.5 % of
    #: three-point lightcurves (a drift scan sees a source in 3–4 images a day)
    eta_false_alarm: float = 1e-3
    v: float = 0.1       # standard deviation / mean flux
    vs: float = 4.3      # |Vs|, the two-epoch t-statistic
    m: float = 0.26      # |m|, the two-epoch modulation index
    #: a lightcurve with fewer measurements is not judged: two noisy epochs of a steady
    #: source pass η and V as often as not, and one lone pair says nothing of a trend
    min_meas: int = 3
    #: ...nor one no measurement of which reaches this SNR: forced fits of a source that
    #: was never detected scatter on the image's artefacts, whose rms the local noise
    #: map underestimates, and "variable" would only describe the noise
    min_snr: float = 5.0

    def __post_init__(self):
        for name in ("eta", "v", "vs", "m", "min_snr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"variability threshold {name} must be positive, "
                                 f"got {getattr(self, name)}")
        if not 0 < self.eta_false_alarm < 1:
            raise ValueError("variability threshold eta_false_alarm must be within (0, 1), "
                             f"got {self.eta_false_alarm}")
        if isinstance(self.min_meas, bool) or not isinstance(self.min_meas, int) \
                or self.min_meas < 2:
            raise ValueError("variability threshold min_meas must be an integer of at least 2, "
                             f"got {self.min_meas!r}")

    def eta_threshold(self, n_meas) -> np.ndarray:
        """η threshold for lightcurves of ``n_meas`` points: max(eta, χ² quantile / dof)."""
        from scipy.stats import chi2  # noqa: PLC0415

        dof = np.maximum(np.asarray(n_meas, float) - 1.0, 1.0)
        return np.maximum(self.eta, chi2.isf(self.eta_false_alarm, dof) / dof)
