"""Pipeline & jobs: one row per observation with its stage, progress, attempts and errors."""

from __future__ import annotations

import pandas as pd
import panel as pn
import param

from pipeline.jobs.runner import utcnow
from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STAGES, STATES
from pipeline.store import Store
from views.live import LiveLink

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


class PipelinePage(pn.viewable.Viewer):
    """Every observation's place in the pipeline; failed ones can be sent back."""

    store = param.ClassSelector(class_=Store, doc="Query methods over the catalog.")
    state = param.ClassSelector(class_=RunnerState, doc="The job runner's live state.")
    state_filter = param.Selector(default=ALL, objects=[ALL, *STATES], label="State")
    search = param.String(default="", label="Observation id contains")

    def __init__(self, **params):
        params.setdefault("state", RunnerState())
        super().__init__(**params)

    def rows(self) -> pd.DataFrame:
        """The table's rows under the current filters."""
        state = None if self.state_filter == ALL else self.state_filter
        return shape_rows(self.store.pipeline_rows(state=state, search=self.search))

    def __panel__(self) -> pn.viewable.Viewable:
        self._table = pn.widgets.Tabulator(
            self.rows(), show_index=False, disabled=True, selectable="checkbox",
            pagination="remote", page_size=25, sizing_mode="stretch_width",
            formatters={"pipeline": {"type": "progress", "max": 100, "legend": True,
                                     "legendColor": "#000"}},
            titles=TITLES, widths={"pipeline": 120, "error": 280, "quarantine_reason": 280},
            css_classes=["pipeline-table"])
        self._retry = pn.widgets.Button(name="Retry selected failed", disabled=True,
                                        css_classes=["retry-button"])
        self._message = pn.pane.Markdown(css_classes=["pipeline-message"])
        self._retry.on_click(self._on_retry)
        self._table.param.watch(self._on_select, "selection")
        self.param.watch(lambda *_: self._refresh(), ["state_filter", "search"])
        LiveLink(self.state, self._refresh, period_ms=1000)
        filters = pn.Row(
            pn.widgets.Select.from_param(self.param.state_filter, width=160),
            pn.widgets.TextInput.from_param(self.param.search, width=240,
                                            placeholder="e.g. 2026-11-23T12"),
            pn.Column(pn.Spacer(height=18), self._retry), self._message)
        self._quarantine = pn.widgets.Tabulator(
            self.store.quarantined_files(limit=200), show_index=False, disabled=True,
            pagination="local", page_size=10, sizing_mode="stretch_width",
            css_classes=["quarantine-table"])
        return pn.Column(pn.pane.Markdown("## Pipeline & jobs"), filters, self._table,
                         pn.pane.Markdown("### Quarantined input"), self._quarantine,
                         sizing_mode="stretch_width")

    def _selected_failed(self) -> list[str]:
        value = self._table.value
        return [value.iloc[i].id for i in self._table.selection
                if i < len(value) and value.iloc[i].state == "failed"]

    def _on_select(self, *_: object) -> None:
        failed = self._selected_failed()
        self._retry.disabled = not failed
        self._retry.name = f"Retry {len(failed)} failed" if failed else "Retry selected failed"

    def _on_retry(self, *_: object) -> None:
        done = [obs for obs in self._selected_failed()
                if self.store.retry_observation(obs, now=utcnow())]
        self._message.object = (f"Sent back to the queue: {', '.join(done)}" if done
                                else "Nothing to retry")
        self._refresh()

    def _refresh(self) -> None:
        # Keep what the operator ticked: rows move as new observations arrive.
        old = self._table.value
        chosen = {old.iloc[i].id for i in self._table.selection if i < len(old)}
        rows = self.rows()
        self._table.value = rows
        self._table.selection = [i for i, obs in enumerate(rows.id) if obs in chosen]
        self._quarantine.value = self.store.quarantined_files(limit=200)
