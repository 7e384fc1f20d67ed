"""Tornado routes beside the Panel pages; each checks who is asking (app.gate) first.

/metrics, /api/health, image files, catalog exports, saved queries, the audit trail, and
the operator actions of the JSON API.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler

from app.gate import Gate, NotSignedIn
from app.sessions import SessionFigures
from pipeline import __version__
from pipeline.actor import Actor
from pipeline.exports import csv_bytes, votable_bytes
from pipeline.jobs.runner_state import RunnerState
from pipeline.operator_actions import OperatorActions, Refused
from pipeline.reprocess import OverrideError, Reprocessor, selection_from_saved_query
from pipeline.reprocess.service import ReprocessError
from pipeline.store import Store
from pipeline.store.reprocess import Selection
from pipeline.store.sources import FilterSpec, InvalidFilter
from pipeline.triggers.operator import TriggerActions
from pipeline.triggers.spec import TriggerError


class GatedHandler(RequestHandler):
    """A route that answers only whom the gate lets in: 401 unknown, 403 not allowed.

    ``needed_role`` is the least role that may call it; ``probe`` routes (/metrics,
    /api/health) also answer the loopback scrape without a sign-in. Errors are JSON with
    the reason, never a traceback.
    """

    needed_role = "viewer"
    probe = False
    gate: Gate | None = None
    actor: Actor

    def prepare(self) -> None:
        """Identify the caller before any method runs."""
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self._same_origin()
        gate = self.gate
        if gate is None:  # a handler mounted without a gate (a test of the handler alone)
            self.actor = Actor.notebook()
            return
        if self.probe and gate.probe_open(self.request.remote_ip):
            self.actor = Actor(name="probe", role="viewer", via="read-only")
            return
        cookie = self.get_secure_cookie("user") if self.application.settings.get(
            "cookie_secret") else None
        try:
            self.actor = gate.actor_for_request(
                authorization=self.request.headers.get("Authorization", ""),
                cookie_user=cookie.decode() if cookie else None)
        except NotSignedIn as exc:
            raise HTTPError(401, reason="Not signed in", log_message=str(exc)) from None
        if not self.actor.may(self.needed_role):
            raise HTTPError(403, reason="Forbidden",
                            log_message=f"needs {self.needed_role}; {self.actor.name} is "
                                        f"{self.actor.role}")

    def _same_origin(self) -> None:
        # A state-changing call signed in by cookie must come from our own pages.
        origin = self.request.headers.get("Origin")
        if origin and "Authorization" not in self.request.headers:
            host = origin.split("://", 1)[-1].rstrip("/")
            if host != self.request.host:
                raise HTTPError(403, reason="Forbidden",
                                log_message=f"cross-site request from {origin}")

    def write_error(self, status_code: int, **kwargs) -> None:
        """JSON {"error": ...}: the reason and, for 401/403, why; no traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        detail = exc.log_message if isinstance(exc, HTTPError) and status_code in (
            401, 403) else None
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="contimg"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": self._reason, **({"detail": detail}
                                                            if detail else {})}))


class MetricsHandler(GatedHandler):
    """Prometheus text exposition of the store's figures."""

    probe = True

    def initialize(self, registry: CollectorRegistry, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.registry, self.gate = registry, gate

    def get(self) -> None:
        """Scrape: collect from the store now."""
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


class HealthHandler(GatedHandler):
    """JSON: ok, version, observations per state, scheduler running, open sessions."""

    probe = True

    def initialize(self, store: Store, state: RunnerState,
                   sessions: SessionFigures | None = None, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.gate = gate
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


class ImageFileHandler(GatedHandler):
    """GET /api/images/<id>/<product>: a file the store registered for that image, else 404.

    The path always comes from the store's row; nothing the client sends becomes part of
    a path, so no request can reach a file the store does not know.
    """

    def initialize(self, store: Store, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate

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


class SourcesExportHandler(GatedHandler):
    """GET /api/sources.<vot|csv>?filter=<FilterSpec JSON>: every source the filter matches.

    The table is read and formatted in a worker thread (a whole catalog takes seconds)
    and sent in 1 MiB chunks, so the IO loop keeps serving every page and /api/health
    meanwhile; nothing goes through a page's websocket.
    """

    def initialize(self, store: Store, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate

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


class WhoAmIHandler(GatedHandler):
    """GET /api/whoami: the caller's name, role and how the server knows them."""

    def initialize(self, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.gate = gate

    def get(self) -> None:
        """The actor as JSON."""
        self.write({"name": self.actor.name, "role": self.actor.role, "via": self.actor.via})


class ActionHandler(GatedHandler):
    """POST routes of operator actions; the role is checked (and audited) by the action.

    The route itself admits any signed-in caller so that a viewer's attempt reaches
    OperatorActions, which refuses it with 403 and writes the refusal to the audit trail.
    """

    def initialize(self, store: Store, state: RunnerState, action: str,
                   gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.actions = OperatorActions(store, state)
        self.action, self.gate = action, gate

    def post(self, target: str = "") -> None:
        """Run the action for the caller: pause, resume, or retry one observation."""
        if self.gate is not None and self.gate.read_only:
            raise HTTPError(403, reason="Forbidden",
                            log_message="this dashboard is read-only (auth.mode)")
        try:
            if self.action in ("pause", "resume"):
                changed = self.actions.set_paused(self.actor, self.action == "pause")
                self.write({"action": self.action, "changed": changed,
                            "paused": bool(self.actions.state.paused)})
            elif self.action == "retry":
                sent = self.actions.retry(self.actor, [target])
                if not sent:
                    raise HTTPError(409, reason=f"observation {target} is not failed")
                self.write({"action": "retry", "sent": sent})
            else:
                raise HTTPError(404)
        except Refused as exc:
            raise HTTPError(403, reason="Forbidden", log_message=str(exc)) from None


class SavedQueriesHandler(GatedHandler):
    """GET /api/saved-queries[?page=P] and /api/saved-queries/<id>: what the caller may see.

    Visibility is the store's (its SQL): another user's private query answers 404, the
    same as one that does not exist.
    """

    def initialize(self, store: Store, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate

    def get(self, query_id: str | None = None) -> None:
        """One query, or the list, as JSON."""
        reader = self.actor.reader
        if query_id is not None:
            query = self.store.saved_query(int(query_id), reader=reader) if (
                query_id.isdigit()) else None
            if query is None:
                raise HTTPError(404, reason=f"saved query {query_id} not found")
            self.write({**dataclasses.asdict(query),
                        "created_utc": query.created_utc.isoformat(),
                        "updated_utc": query.updated_utc.isoformat()})
            return
        page = self.get_argument("page", None)
        rows = self.store.saved_queries(reader=reader, page=page)
        self.set_header("Content-Type", "application/json")
        self.write(rows.to_json(orient="records", date_format="iso"))


def _json_body(handler: RequestHandler) -> dict:
    """The request's JSON object body; 400 naming the problem otherwise."""
    try:
        body = json.loads(handler.request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, reason=f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, reason="the body must be a JSON object")
    return body


def selection_from_json(store: Store, raw: object, reader: str | None) -> Selection:
    """A reprocess selection from its JSON form (or ``{"saved_query": id}``); 400 if bad."""
    if not isinstance(raw, dict):
        raise HTTPError(400, reason="selection must be a JSON object")
    if "saved_query" in raw:
        try:
            return selection_from_saved_query(store, int(raw["saved_query"]), reader=reader)
        except (TypeError, ValueError):
            raise HTTPError(400, reason="selection.saved_query must be a query id") from None
    known = {f.name for f in dataclasses.fields(Selection)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise HTTPError(400, reason=f"selection field {unknown[0]!r} is not one of "
                                    f"{', '.join(sorted(known | {'saved_query'}))}")
    values = dict(raw)
    try:
        for key in ("from_utc", "to_utc"):
            if values.get(key) is not None:
                values[key] = datetime.fromisoformat(str(values[key])).replace(tzinfo=None)
        for key in ("states", "ids"):
            values[key] = tuple(values.get(key) or ())
        return Selection(**values)
    except (TypeError, ValueError) as exc:
        raise HTTPError(400, reason=f"selection: {exc}") from None


class ReprocessHandler(GatedHandler):
    """Reprocess runs through the JSON API; who may act is checked by Reprocessor.

    GET /api/reprocess: the recent runs. GET /api/reprocess/<id>: one run's observations.
    POST /api/reprocess/plan {selection, from_stage, overrides}: the preview (viewers too).
    POST /api/reprocess {same}: launch (operators). POST /api/reprocess/<id>/cancel.
    """

    def initialize(self, store: Store, state: RunnerState, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate
        self.reprocessor = Reprocessor(store, OperatorActions(store, state))

    def get(self, run_id: str | None = None, _verb: str | None = None) -> None:
        """Runs, or one run's per-observation progress, as JSON records."""
        rows = (self.store.reprocess_runs() if run_id is None
                else self.store.reprocess_progress(int(run_id)))
        self.set_header("Content-Type", "application/json")
        self.write(rows.to_json(orient="records", date_format="iso"))

    def post(self, run_id: str | None = None, verb: str | None = None) -> None:
        """Plan, launch or cancel."""
        if self.gate is not None and self.gate.read_only:
            raise HTTPError(403, reason="Forbidden",
                            log_message="this dashboard is read-only (auth.mode)")
        try:
            if run_id is not None:
                if verb != "cancel":
                    raise HTTPError(404)
                self.write({"run_id": int(run_id),
                            "dropped": self.reprocessor.cancel(self.actor, int(run_id))})
                return
            body = _json_body(self)
            selection = selection_from_json(self.store, body.get("selection", {}),
                                            self.actor.reader)
            stage, overrides = body.get("from_stage", ""), body.get("overrides") or {}
            if verb == "plan":
                plan = self.reprocessor.plan(selection, stage, overrides)
                self.write({"selected": plan.selected, "eligible": plan.eligible,
                            "busy": plan.busy, "jobs": plan.jobs, "summary": plan.summary()})
                return
            run, n = self.reprocessor.launch(self.actor, selection, stage, overrides)
            self.write({"run_id": run, "observations": n})
        except Refused as exc:
            raise HTTPError(403, reason="Forbidden", log_message=str(exc)) from None
        except (ReprocessError, OverrideError) as exc:
            raise HTTPError(400, reason=str(exc)) from None


class ReprocessPlanRoute(ReprocessHandler):
    """/api/reprocess and /api/reprocess/plan: the runs, a preview, a launch."""

    def get(self, _verb: str | None = None) -> None:
        """The recent runs."""
        super().get(None)

    def post(self, verb: str | None = None) -> None:
        """Launch, or with /plan preview."""
        super().post(None, verb)


class TriggersHandler(GatedHandler):
    """GET /api/triggers: every trigger; POST /api/triggers/<id>/fire: fire one (operators)."""

    def initialize(self, store: Store, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate

    def get(self, _trigger_id: str | None = None) -> None:
        """The triggers with their kind, schedule or event, action and enabled flag."""
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps([
            {"id": t.id, "owner": t.owner, **dataclasses.asdict(t.spec),
             "last_fired_utc": t.last_fired_utc.isoformat() if t.last_fired_utc else None}
            for t in self.store.trigger_list()], default=str))

    def post(self, trigger_id: str | None = None) -> None:
        """Fire the trigger now as the caller; 409 when its previous run still goes."""
        if trigger_id is None:
            raise HTTPError(404)
        if self.gate is not None and self.gate.read_only:
            raise HTTPError(403, reason="Forbidden",
                            log_message="this dashboard is read-only (auth.mode)")
        try:
            history = TriggerActions(self.store).fire(self.actor, int(trigger_id))
        except Refused as exc:
            raise HTTPError(403, reason="Forbidden", log_message=str(exc)) from None
        except TriggerError as exc:
            raise HTTPError(404 if "does not exist" in str(exc) else 400, reason=str(exc)) from None
        self.write({"trigger_id": int(trigger_id), "history_id": history})


class AuditHandler(GatedHandler):
    """GET /api/audit?limit=N: the newest audit rows (admins)."""

    needed_role = "admin"

    def initialize(self, store: Store, gate: Gate | None = None) -> None:
        """Tornado passes the route's arguments here."""
        self.store, self.gate = store, gate

    def get(self) -> None:
        """Audit rows as JSON records."""
        try:
            limit = min(max(int(self.get_argument("limit", "200")), 1), 10_000)
        except ValueError:
            raise HTTPError(400, reason="limit must be a whole number") from None
        rows = self.store.audit_rows(limit=limit)
        self.set_header("Content-Type", "application/json")
        self.write(rows.to_json(orient="records", date_format="iso"))


def _download_name(path: Path, product: str) -> str:
    """The registered file's name, made safe for a quoted header value."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in path.name)
    return name if name.lower().endswith(".fits") else f"{name or product}.fits"
