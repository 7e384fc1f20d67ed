"""Tornado handlers mounted beside the Panel pages: /metrics, /api/health, / redirect."""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado.web import RequestHandler

from pipeline import __version__
from pipeline.runner_state import RunnerState
from pipeline.store import Store


class MetricsHandler(RequestHandler):
    """Prometheus text exposition of the store's figures."""

    def initialize(self, registry: CollectorRegistry) -> None:
        """Tornado passes the route's arguments here."""
        self.registry = registry

    def get(self) -> None:
        """Scrape: collect from the store now."""
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


class HealthHandler(RequestHandler):
    """JSON: ok, version, observations per state, scheduler running."""

    def initialize(self, store: Store, state: RunnerState) -> None:
        """Tornado passes the route's arguments here."""
        self.store = store
        self.state = state

    def get(self) -> None:
        """Health as JSON; 503 when the scheduler is not running."""
        counts = self.store.counts_by_state()
        body = {
            "ok": bool(self.state.scheduler_running),
            "version": __version__,
            "counts": counts,
            "jobs": self.store.jobs_by_state(),
            "scheduler_running": bool(self.state.scheduler_running),
            "paused": bool(self.state.paused),
            "schema_version": self.store.schema_version,
        }
        self.set_header("Content-Type", "application/json")
        self.set_status(200 if body["ok"] else 503)
        self.write(json.dumps(body))
