"""Prometheus metrics read from the store at scrape time, so they equal what it holds."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from app.sessions import SessionFigures
from pipeline import __version__
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Histogram, Store

STAGE_DURATION_BOUNDS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
IMAGE_NOISE_BOUNDS_JY = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)


def _histogram_family(name: str, doc: str, hists: dict[str, Histogram],
                      label: str | None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for key, h in sorted(hists.items()):
        buckets = [(_le(b), c) for b, c in zip(h.bounds, h.cumulative, strict=True)]
        family.add_metric([key] if label else [], buckets, h.total)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class StoreCollector:
    """A prometheus_client collector over the store and the runner state."""

    def __init__(self, store: Store, state: RunnerState,
                 sessions: SessionFigures | None = None):
        self.store = store
        self.state = state
        self.sessions = sessions or SessionFigures()

    def collect(self) -> Iterator[Metric]:
        """Yield every contimg metric."""
        obs = GaugeMetricFamily("contimg_observations", "Observations per pipeline state.",
                                labels=["state"])
        for state, n in self.store.counts_by_state().items():
            obs.add_metric([state], n)
        yield obs
        jobs = GaugeMetricFamily("contimg_jobs", "Stage jobs per job state.", labels=["state"])
        for state, n in self.store.jobs_by_state().items():
            jobs.add_metric([state], n)
        yield jobs
        yield _histogram_family(
            "contimg_stage_duration_seconds", "Wall time of finished stage jobs.",
            self.store.stage_duration_histogram(STAGE_DURATION_BOUNDS_S), "stage")
        yield _histogram_family(
            "contimg_image_noise_jy", "Robust rms noise of images, Jy/beam.",
            {"": self.store.image_noise_histogram(IMAGE_NOISE_BOUNDS_JY)}, None)
        counts = self.store.table_counts()
        for key, doc in (("images", "Images in the store."),
                         ("sources", "Sources in the catalog."),
                         ("photometry", "Photometry rows (lightcurve points).")):
            name = "contimg_photometry_rows" if key == "photometry" else f"contimg_{key}"
            yield GaugeMetricFamily(name, doc, value=counts[key])
        alerts = GaugeMetricFamily("contimg_alerts_open", "Unacknowledged alerts.",
                                   labels=["severity"])
        for sev, n in self.store.open_alerts_by_severity().items():
            alerts.add_metric([sev], n)
        yield alerts
        yield GaugeMetricFamily("contimg_scheduler_running",
                                "1 while the job runner's scheduler runs.",
                                value=int(self.state.scheduler_running))
        yield GaugeMetricFamily("contimg_sessions", "Browser sessions the server holds.",
                                value=self.sessions.sessions())
        yield GaugeMetricFamily("contimg_session_callbacks",
                                "Periodic callbacks running in browser sessions.",
                                value=self.sessions.periodic_callbacks())
        info = GaugeMetricFamily("contimg_info", "Version of the running contimg.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def metrics_registry(store: Store, state: RunnerState, *,
                     sessions: SessionFigures | None = None) -> CollectorRegistry:
    """A registry of our own (not the process-global one) holding the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, state, sessions))
    return registry

