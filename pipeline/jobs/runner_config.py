"""The runner's settings (``[runner]``), importable without the scheduler or the store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """How the runner schedules, retries and recovers."""

    workers: int = 2
    poll_s: float = 2.0
    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    max_attempts: int = 3
    backoff_base_s: float = 60.0
    backoff_max_s: float = 3600.0

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"runner.workers must be at least 1, got {self.workers}")
        if self.max_attempts < 1:
            raise ValueError(f"runner.max_attempts must be at least 1, got {self.max_attempts}")
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError("runner.stale_after_s must exceed runner.heartbeat_s, got "
                             f"{self.stale_after_s} <= {self.heartbeat_s}")

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure."""
        return min(self.backoff_base_s * 2 ** (attempts - 1), self.backoff_max_s)
