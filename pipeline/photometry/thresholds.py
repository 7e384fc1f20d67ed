"""When a source counts as variable: the VAST pipeline's metrics and their thresholds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class VariabilityThresholds:
    """η and V over the whole lightcurve; Vs and m for any pair of epochs (VAST)."""

    eta: float = 2.0     # weighted reduced χ² of the fluxes about their weighted mean
    v: float = 0.1       # standard deviation / mean flux
    vs: float = 4.3      # |Vs|, the two-epoch t-statistic
    m: float = 0.26      # |m|, the two-epoch modulation index

    def __post_init__(self):
        for name in ("eta", "v", "vs", "m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"variability threshold {name} must be positive, "
                                 f"got {getattr(self, name)}")
