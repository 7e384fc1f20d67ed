"""Tornado handlers beside the Panel pages: /metrics, /api/health, image files, exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler

from app.sessions import SessionFigures
from pipeline import __version__
from pipeline.exports import csv_bytes, votable_bytes
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store
from pipeline.store.sources import FilterSpec, InvalidFilter


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
    """JSON: ok, version, observations per state, scheduler running, open sessions."""

    def initialize(self, store: Store, state: RunnerState,
                   sessions: SessionFigures | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store = store
        self.state = state
        self.sessions = sessions or SessionFigures()

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
            **self.sessions.as_dict(),
        }
        self.set_header("Content-Type", "application/json")
        self.set_status(200 if body["ok"] else 503)
        self.write(json.dumps(body))


#: content type per product of GET /api/images/<id>/<product>
IMAGE_CONTENT_TYPES = {"fits": "application/fits", "residual": "application/fits",
                       "model": "application/fits", "psf": "application/fits",
                       "pbcor": "application/fits", "thumbnail": "image/png"}
_CHUNK = 1 << 20


class ImageFileHandler(RequestHandler):
    """GET /api/images/<id>/<product>: a file the store registered for that image, else 404.

    The path always comes from the store's row; nothing the client sends becomes part of
    a path, so no request can reach a file the store does not know.
    """

    def initialize(self, store: Store) -> None:
        """Tornado passes the route's arguments here."""
        self.store = store

    async def get(self, image_id: str, product: str) -> None:
        """Stream the file in 1 MiB chunks (a 4096² image is 64 MB)."""
        if product not in IMAGE_CONTENT_TYPES:
            raise HTTPError(404)
        path = self.store.image_file(image_id, product)
        try:
            f = open(path, "rb") if path is not None else None  # noqa: SIM115 — closed below
        except OSError:  # removed since the store looked
            f = None
        if f is None:
            raise HTTPError(404)
        self.set_header("Content-Type", IMAGE_CONTENT_TYPES[product])
        self.set_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        if product == "thumbnail":
            self.set_header("Cache-Control", "max-age=60")
        else:
            self.set_header("Content-Disposition",
                            f'attachment; filename="{_download_name(path, product)}"')
        with f:
            while chunk := f.read(_CHUNK):
                self.write(chunk)
                try:
                    await self.flush()
                except StreamClosedError:
                    return


#: content type and file name per format of GET /api/sources.<format>
EXPORT_FORMATS = {"vot": ("application/x-votable+xml", "sources.vot"),
                  "csv": ("text/csv; charset=utf-8", "sources.csv")}


class SourcesExportHandler(RequestHandler):
    """GET /api/sources.<vot|csv>?filter=<FilterSpec JSON>: every source the filter matches.

    The table is read and formatted in a worker thread (a whole catalog takes seconds)
    and sent in 1 MiB chunks, so the IO loop keeps serving every page and /api/health
    meanwhile; nothing goes through a page's websocket.
    """

    def initialize(self, store: Store) -> None:
        """Tornado passes the route's arguments here."""
        self.store = store

    async def get(self, fmt: str) -> None:
        """Build the export off the loop, then stream it."""
        if fmt not in EXPORT_FORMATS:
            raise HTTPError(404)
        try:
            spec = FilterSpec.from_json(self.get_argument("filter", "{}"))
        except InvalidFilter as exc:
            self.set_status(400)
            self.write({"error": f"filter: {exc}"})
            return
        body = await IOLoop.current().run_in_executor(None, self._build, fmt, spec)
        content_type, filename = EXPORT_FORMATS[fmt]
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Length", str(len(body)))
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        view = memoryview(body)
        for start in range(0, len(body), _CHUNK):
            self.write(bytes(view[start:start + _CHUNK]))
            try:
                await self.flush()
            except StreamClosedError:
                return

    def _build(self, fmt: str, spec: FilterSpec) -> bytes:
        chunks = self.store.iter_sources(spec)
        if fmt == "csv":
            return csv_bytes(chunks)
        return votable_bytes(chunks, name="sources",
                             description=f"contimg filter {spec.to_json()}")


def _download_name(path: Path, product: str) -> str:
    """The registered file's name, made safe for a quoted header value."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in path.name)
    return name if name.lower().endswith(".fits") else f"{name or product}.fits"
