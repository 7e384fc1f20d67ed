"""Pipeline & jobs: one row per observation with its stage, progress, attempts and errors."""

from __future__ import annotations

import pandas as pd
import panel as pn
import param

from pipeline.jobs.states import STAGES, STATES
from pipeline.operator_actions import OperatorActions, Refused
from views.base import StorePage, on_event
from views.reprocess_panel import ReprocessPanel
from views.saved_queries_panel import SavedQueriesPanel

ALL = "all"
_DONE_STAGES = {spec.to_state: i + 1 for i, spec in enumerate(STAGES)}
_RUNNING_STAGES = {spec.running_state: i for i, spec in enumerate(STAGES)}
_WAITING_STAGES = {spec.from_state: i for i, spec in enumerate(STAGES)}
COLUMNS = ["id", "state", "stage", "pipeline", "attempts", "error", "quarantine_reason",
           "next_try_utc", "start_utc", "dec_deg", "n_subbands", "partial"]
TITLES = {"id": "observation", "pipeline": "progress %", "quarantine_reason": "quarantined",
          "next_try_utc": "next try (UTC)", "start_utc": "start (UTC)", "dec_deg": "dec (°)",
          "n_subbands": "subbands"}


def pipeline_fraction(state: str, job_progress: float) -> float:
    """How far through the four stages an observation is, 0–1."""
    n = len(STAGES)
    if state in _DONE_STAGES:
        return _DONE_STAGES[state] / n
    if state in _RUNNING_STAGES:
        return (_RUNNING_STAGES[state] + min(max(job_progress, 0.0), 1.0)) / n
    if state in _WAITING_STAGES:
        return _WAITING_STAGES[state] / n
    return 0.0  # failed: the row's error says where


def shape_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Store rows → the table's columns, with overall pipeline progress."""
    out = rows.copy()
    out["pipeline"] = [round(100 * pipeline_fraction(s, p)) for s, p in
                       zip(out.state, out.progress, strict=True)]
    return out.reindex(columns=COLUMNS)


class PipelinePage(StorePage):
    """Every observation's place in the pipeline; failed ones can be sent back."""

    state_filter = param.Selector(default=ALL, objects=[ALL, *STATES], label="State")
    search = param.String(default="", label="Observation id contains")

    def rows(self) -> pd.DataFrame:
        """The table's rows under the current filters."""
        state = None if self.state_filter == ALL else self.state_filter
        return shape_rows(self.store.pipeline_rows(state=state, search=self.search))

    def _build(self) -> pn.viewable.Viewable:
        self._stored = self.rows()
        self._table = pn.widgets.Tabulator(
            self._stored, show_index=False, disabled=True, selectable="checkbox",
            pagination="remote", page_size=25, sizing_mode="stretch_width",
            formatters={"pipeline": {"type": "progress", "max": 100, "legend": True,
                                     "legendColor": "#000"}},
            titles=TITLES, widths={"pipeline": 120, "error": 280, "quarantine_reason": 280},
            css_classes=["pipeline-table"])
        # A viewer's page has no retry button to see; the click is still checked on the
        # server (OperatorActions), so a forged event is refused like any other.
        self._retry = pn.widgets.Button(label="Retry selected failed", disabled=True,
                                        css_classes=["retry-button"],
                                        visible=self.actor.may("operator"))
        self._message = pn.pane.Markdown(css_classes=["pipeline-message"])
        self._retry.on_click(on_event(self._on_retry))
        self._table.param.watch(on_event(self._on_select), "selection")
        self.param.watch(on_event(lambda *_: self._refresh_store()), ["state_filter", "search"])
        filters = pn.Row(
            pn.widgets.Select.from_param(self.param.state_filter, width=160),
            pn.widgets.TextInput.from_param(self.param.search, width=240,
                                            placeholder="e.g. 2026-11-23T12"),
            pn.Column(pn.Spacer(height=18), self._retry), self._message)
        self._quarantine = pn.widgets.Tabulator(
            self.store.quarantined_files(limit=200), show_index=False, disabled=True,
            pagination="local", page_size=10, sizing_mode="stretch_width",
            css_classes=["quarantine-table"])
        self._refresh_progress()
        filters.append(self._build_queries())
        # Built for operators only; its actions are checked on the server all the same.
        self._reprocess = (ReprocessPanel(store=self.store, state=self.state, actor=self.actor)
                           if self.actor.may("operator") else None)
        return pn.Column(pn.pane.Markdown("## Pipeline & jobs"), filters,
                         *([self._reprocess] if self._reprocess else []), self._table,
                         pn.pane.Markdown("### Quarantined input"), self._quarantine,
                         sizing_mode="stretch_width")

    def _build_queries(self) -> SavedQueriesPanel:
        """The saved-queries panel over the state and search filters; opens the URL's."""
        panel = SavedQueriesPanel(store=self.store, actor=self.actor, page="pipeline",
                                  current_spec=self._query_spec,
                                  apply_spec=self._apply_query_spec)
        panel.open_from_url()
        panel.follow(self, ["state_filter", "search"])
        self._queries = panel
        return panel

    def _query_spec(self) -> dict:
        """The filters as a saved query keeps them (only those set)."""
        spec = {"state": None if self.state_filter == ALL else self.state_filter,
                "search": self.search or None}
        return {k: v for k, v in spec.items() if v is not None}

    def _apply_query_spec(self, spec: dict) -> None:
        """Filter by a saved spec (a state no longer known is refused by the selector)."""
        self.param.update(state_filter=spec.get("state") or ALL, search=spec.get("search") or "")

    def _selected_failed(self) -> list[str]:
        value = self._table.value
        return [value.iloc[i].id for i in self._table.selection
                if i < len(value) and value.iloc[i].state == "failed"]

    def _on_select(self, *_: object) -> None:
        failed = self._selected_failed()
        self._retry.disabled = not failed
        self._retry.label = f"Retry {len(failed)} failed" if failed else "Retry selected failed"

    def _on_retry(self, *_: object) -> None:
        try:
            done = OperatorActions(self.store, self.state).retry(self.actor,
                                                                 self._selected_failed())
        except Refused as exc:
            self._message.object = f"Not allowed: {exc}"
            return
        self._message.object = (f"Sent back to the queue: {', '.join(done)}" if done
                                else "Nothing to retry")
        self._refresh_store()

    def _refresh_store(self) -> None:
        self._stored = self.rows()
        self._show(self._stored)
        quarantined = self.store.quarantined_files(limit=200)
        if not quarantined.equals(self._quarantine.value):
            self._quarantine.value = quarantined
        reprocess = getattr(self, "_reprocess", None)  # None until built, and for viewers
        if reprocess is not None:
            reprocess.refresh()

    def _refresh_progress(self) -> None:
        # Progress of running jobs from the runner state: no store query per step.
        live = {r["observation_id"]: r["progress"] for r in self.state.running}
        rows = self._stored
        if live and len(rows):
            stage_progress = [100 * pipeline_fraction(s, live[o]) if o in live else p
                              for o, s, p in zip(rows.id, rows.state, rows.pipeline,
                                                 strict=True)]
            rows = rows.assign(pipeline=[round(p) for p in stage_progress])
        self._show(rows)

    def _show(self, rows: pd.DataFrame) -> None:
        old = self._table.value
        if rows.equals(old):
            return
        # Keep what the operator ticked: rows move as new observations arrive.
        chosen = {old.iloc[i].id for i in self._table.selection if i < len(old)}
        self._table.value = rows
        self._table.selection = [i for i, obs in enumerate(rows.id) if obs in chosen]
