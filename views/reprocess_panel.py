"""The pipeline page's Reprocess panel: select, choose a stage and overrides, preview, launch.

Operators see it; a viewer's page does not build it, and every action is checked again on
the server (pipeline.reprocess.Reprocessor through OperatorActions), so a forged event
meets the same refusal, audited. Progress shows per observation of the chosen run.

In a notebook: ``ReprocessPanel(store=Store.open(home), actor=Actor.notebook())``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import panel as pn
import param

from pipeline.actor import Actor
from pipeline.errors import ContimgError
from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STAGES, STATES
from pipeline.operator_actions import OperatorActions, Refused
from pipeline.reprocess import Reprocessor, selection_from_saved_query
from pipeline.store import Store
from pipeline.store.reprocess import Selection
from views.base import on_event
from views.calibration_page import mjd_to_iso

ANY = "any"
NO_QUERY = "(none)"
#: the caltable picker's first choice: no override, the pipeline picks as it always does
AS_SELECTED = "as the pipeline selects"
#: the override key a picked caltable sets (pipeline.reprocess.overrides)
CALTABLE_KEY = "calibration.caltable_id"
PROGRESS_COLUMNS = ["observation_id", "status", "state", "stage", "job_state", "progress",
                    "error"]


class PanelInputError(ContimgError):
    """A field of the panel that cannot be read; names the field."""


def parse_overrides(text: str) -> dict[str, Any]:
    """``section.key = value`` lines → ``{"section.key": value}`` (bare words are text)."""
    out: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            raise PanelInputError(f"overrides line {n}: {line!r} is not section.key = value")
        raw = raw.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # weighting = natural: a word is meant as text
        out[key.strip()] = value
    return out


def parse_time(text: str, name: str) -> datetime | None:
    """An ISO time typed in a field (UTC), or None when empty."""
    if not text.strip():
        return None
    try:
        stamp = pd.Timestamp(text.strip())
    except ValueError:
        raise PanelInputError(f"{name}: {text!r} is not a time (e.g. 2026-11-23T12:00)") from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def progress_frame(progress: pd.DataFrame) -> pd.DataFrame:
    """A run's per-observation progress with progress in %."""
    out = progress.reindex(columns=PROGRESS_COLUMNS).copy()
    out["progress"] = (out["progress"].astype(float) * 100).round()
    return out


class ReprocessPanel(pn.viewable.Viewer):
    """Selection, from-stage, overrides, preview, launch, per-observation progress, cancel."""

    store = param.ClassSelector(class_=Store, doc="Query methods over the catalog.")
    state = param.ClassSelector(class_=RunnerState, doc="The job runner's live state.")
    actor = param.ClassSelector(class_=Actor, doc="Who acts; checked on the server.")

    def __init__(self, **params):
        params.setdefault("state", RunnerState())
        super().__init__(**params)
        self._from_utc = pn.widgets.TextInput(label="From (UTC)", placeholder="2026-11-23T12:00",
                                              width=170, css_classes=["rp-from"])
        self._to_utc = pn.widgets.TextInput(label="To (UTC)", placeholder="2026-11-23T18:00",
                                            width=170, css_classes=["rp-to"])
        self._dec_min = pn.widgets.FloatInput(label="Dec min (°)", value=None, width=100,
                                              css_classes=["rp-dec-min"])
        self._dec_max = pn.widgets.FloatInput(label="Dec max (°)", value=None, width=100,
                                              css_classes=["rp-dec-max"])
        self._state = pn.widgets.Select(label="State", options=[ANY, *STATES], width=130,
                                        css_classes=["rp-state"])
        self._query = pn.widgets.Select(label="Saved query", width=200, css_classes=["rp-query"])
        self._stage = pn.widgets.Select(label="From stage", options=[s.name for s in STAGES],
                                        value="image", width=120, css_classes=["rp-stage"])
        self._overrides = pn.widgets.TextAreaInput(
            label="Overrides (section.key = value, one a line)", height=80, width=320,
            placeholder="imaging.niter = 500\nimaging.weighting = natural",
            css_classes=["rp-overrides"])
        self._caltable = pn.widgets.Select(
            label="Caltable (from convert or calibrate)", width=330,
            options={AS_SELECTED: None}, css_classes=["rp-caltable"])
        self._preview_b = pn.widgets.Button(label="Preview", css_classes=["rp-preview-button"])
        self._launch_b = pn.widgets.Button(label="Launch", color="primary",
                                           css_classes=["rp-launch-button"])
        self._preview = pn.pane.Markdown(css_classes=["rp-preview"])
        self._message = pn.pane.Markdown(css_classes=["rp-message"])
        self._run = pn.widgets.Select(label="Run", width=260, css_classes=["rp-run"])
        self._cancel_b = pn.widgets.Button(label="Cancel run", color="danger",
                                           css_classes=["rp-cancel-button"])
        self._retry_b = pn.widgets.Button(label="Retry failed", css_classes=["rp-retry-button"])
        self._progress = pn.widgets.Tabulator(
            pd.DataFrame(columns=PROGRESS_COLUMNS), show_index=False, disabled=True,
            pagination="local", page_size=10, sizing_mode="stretch_width",
            formatters={"progress": {"type": "progress", "max": 100}},
            css_classes=["rp-progress"])
        self._preview_b.on_click(on_event(self._on_preview))
        self._launch_b.on_click(on_event(self._on_launch))
        self._cancel_b.on_click(on_event(self._on_cancel))
        self._retry_b.on_click(on_event(self._on_retry))
        self._run.param.watch(on_event(lambda *_: self._show_progress()), "value")
        self._layout = pn.Card(
            pn.Row(self._from_utc, self._to_utc, self._dec_min, self._dec_max, self._state,
                   self._query),
            pn.Row(self._stage, self._overrides, self._caltable,
                   pn.Column(pn.Spacer(height=18), pn.Row(self._preview_b, self._launch_b))),
            self._preview, self._message,
            pn.Row(self._run, pn.Column(pn.Spacer(height=18),
                                        pn.Row(self._cancel_b, self._retry_b))),
            self._progress, title="Reprocess", collapsed=False, sizing_mode="stretch_width",
            css_classes=["reprocess-panel"])
        self.refresh()

    # ----------------------------------------------------------------- inputs
    def selection(self) -> Selection:
        """The widgets' selection; a saved query's observations narrowed by the fields."""
        base = Selection()
        if self._query.value not in (None, NO_QUERY):
            base = selection_from_saved_query(self.store, int(self._query.value),
                                              reader=self.actor.reader)
        state = self._state.value
        states = base.states if state == ANY else (state,)
        return Selection(from_utc=parse_time(self._from_utc.value, "From (UTC)"),
                         to_utc=parse_time(self._to_utc.value, "To (UTC)"),
                         dec_min=self._dec_min.value, dec_max=self._dec_max.value,
                         states=states, ids=base.ids, search=base.search)

    def _reprocessor(self) -> Reprocessor:
        return Reprocessor(self.store, OperatorActions(self.store, self.state))

    def overrides(self) -> dict[str, Any]:
        """The typed overrides with the picked caltable's key (a different typed one refused)."""
        out = parse_overrides(self._overrides.value)
        picked = self._caltable.value
        if picked is not None:
            typed = out.get(CALTABLE_KEY)
            if typed is not None and typed != picked:
                raise PanelInputError(f"overrides: {CALTABLE_KEY} = {typed} differs from the "
                                      f"caltable picked (#{picked}); keep one of them")
            out[CALTABLE_KEY] = picked
        return out

    def _inputs(self) -> tuple[Selection, str, Mapping[str, Any]]:
        return self.selection(), self._stage.value, self.overrides()

    # --------------------------------------------------------------- handlers
    def _on_preview(self, *_: object) -> None:
        try:
            plan = self._reprocessor().plan(*self._inputs())
        except ContimgError as exc:
            self._preview.object = f"**Cannot plan:** {exc}"
            return
        self._preview.object = f"Preview: {plan.summary()}"

    def _on_launch(self, *_: object) -> None:
        try:
            run_id, n = self._reprocessor().launch(self.actor, *self._inputs())
        except Refused as exc:
            self._message.object = f"Not allowed: {exc}"
            return
        except ContimgError as exc:
            self._message.object = f"**Not launched:** {exc}"
            return
        self._message.object = f"Launched run {run_id}: {n} observation(s) sent back"
        self.refresh(select=run_id)

    def _on_cancel(self, *_: object) -> None:
        if self._run.value is None:
            return
        try:
            dropped = self._reprocessor().cancel(self.actor, int(self._run.value))
        except Refused as exc:
            self._message.object = f"Not allowed: {exc}"
            return
        self._message.object = (f"Run {self._run.value} cancelled: {dropped} pending "
                                "observation(s) dropped; running ones finish")
        self.refresh()

    def _on_retry(self, *_: object) -> None:
        if self._run.value is None:
            return
        try:
            sent = self._reprocessor().retry_failed(self.actor, int(self._run.value))
        except Refused as exc:
            self._message.object = f"Not allowed: {exc}"
            return
        self._message.object = f"Retried: {', '.join(sent)}" if sent else "No failed ones"
        self.refresh()

    # ---------------------------------------------------------------- refresh
    def refresh(self, *, select: int | None = None) -> None:
        """Re-read saved queries, runs and the chosen run's progress."""
        queries = self.store.saved_queries(reader=self.actor.reader) if self.actor else None
        options = {NO_QUERY: NO_QUERY}
        if queries is not None and len(queries):
            for row in queries.itertuples():
                if row.page in ("pipeline", "images"):
                    options[f"{row.name} ({row.page}, #{row.id})"] = str(row.id)
        if options != self._query.options:
            self._query.options = options
        tables = {AS_SELECTED: None}
        for row in self.store.caltables().tail(200).iloc[::-1].itertuples():  # newest first
            if row.qa_passed:  # the plan refuses a failed one anyway
                tables[f"#{row.id} {row.calibrator}, transit {mjd_to_iso(row.transit_mjd)} UTC"
                       ] = int(row.id)
        if tables != self._caltable.options:
            self._caltable.options = tables
        runs = self.store.reprocess_runs(limit=50)
        labels = {f"run {r.id}: {r.from_stage}, {r.n_done}/{r.n} done"
                  f"{' (cancelled)' if r.state == 'cancelled' else ''}": int(r.id)
                  for r in runs.itertuples()}
        current = select if select is not None else self._run.value
        if labels != self._run.options:
            self._run.options = labels
        if labels:
            self._run.value = current if current in labels.values() else next(
                iter(labels.values()))
        self._show_progress()

    def _show_progress(self) -> None:
        if self._run.value is None:
            return
        frame = progress_frame(self.store.reprocess_progress(int(self._run.value)))
        if not frame.equals(self._progress.value):
            self._progress.value = frame

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
