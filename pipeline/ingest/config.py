"""Ingest's settings (``[ingest]``).

Apart from the ingester, so that reading the settings does not import pyuvdata.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.instrument.telescope import N_SUBBANDS


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """How files are grouped and how long an incomplete group is waited for."""

    n_subbands: int = N_SUBBANDS
    group_window_s: float = 60.0
    partial_timeout_s: float = 600.0
    settle_s: float = 60.0

    def __post_init__(self):
        if self.n_subbands < 1:
            raise ValueError(f"ingest.n_subbands must be at least 1, got {self.n_subbands}")
        if self.group_window_s <= 0:
            raise ValueError(f"ingest.group_window_s must be positive, got {self.group_window_s}")
        if self.partial_timeout_s <= 0:
            raise ValueError("ingest.partial_timeout_s must be positive, got "
                             f"{self.partial_timeout_s}")
        if self.settle_s <= 0:
            raise ValueError(f"ingest.settle_s must be positive, got {self.settle_s}")
