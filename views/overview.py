"""Overview: observations per state, queues, running jobs with progress, recent jobs, alerts."""

from __future__ import annotations

import html

import pandas as pd
import panel as pn
import param

from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STAGES, STATES
from pipeline.operator_actions import OperatorActions, Refused
from views.base import StorePage, on_session_loop

_STATE_COLOURS = {
    "pending": "#6c757d", "converting": "#0d6efd", "converted": "#0d6efd",
    "calibrating": "#6610f2", "calibrated": "#6610f2", "imaging": "#d63384",
    "imaged": "#d63384", "measuring": "#fd7e14", "complete": "#198754", "failed": "#dc3545",
}
_CARD_CSS = """
.state-cards {display: flex; flex-wrap: wrap; gap: 8px;}
.state-card {border: 1px solid #dee2e6; border-left: 5px solid var(--c); border-radius: 6px;
  padding: 6px 12px; min-width: 92px; background: white;}
.state-card .count {font-size: 1.7em; font-weight: 600; display: block;}
.state-card .label {color: #495057; font-size: 0.9em;}
.stage-queue {display: flex; gap: 18px; flex-wrap: wrap; color: #343a40;}
.stage-queue span.off {color: #adb5bd;}
"""


def state_cards_html(counts: dict[str, int]) -> str:
    """One card per observation state with its count."""
    cards = "".join(
        f'<div class="state-card" data-state="{s}" style="--c:{_STATE_COLOURS[s]}">'
        f'<span class="count">{counts.get(s, 0)}</span><span class="label">{s}</span></div>'
        for s in STATES)
    return f'<div class="state-cards">{cards}</div>'


def stage_queue_html(depth: dict[str, int], registered: list[str]) -> str:
    """Observations waiting for each stage; stages with no function are greyed out."""
    parts = []
    for spec in STAGES:
        n = depth.get(spec.name, 0)
        if spec.name in registered:
            parts.append(f'<span data-stage="{spec.name}">{spec.name}: <b>{n}</b> waiting</span>')
        else:
            parts.append(f'<span class="off" data-stage="{spec.name}" title="stage not installed '
                         f'yet">{spec.name}: {n} waiting (not installed)</span>')
    return f'<div class="stage-queue">{"".join(parts)}</div>'


def running_frame(running: list[dict]) -> pd.DataFrame:
    """Running jobs as a table, progress 0–1."""
    cols = ["observation_id", "stage", "attempt", "progress", "started_utc"]
    return pd.DataFrame(running, columns=["job_id", *cols]).set_index("job_id")[cols]


def status_line(state: RunnerState) -> str:
    """Scheduler state and the last error, one line of Markdown."""
    if not state.scheduler_running:
        run = "**scheduler stopped**"
    else:
        run = "scheduler **paused**" if state.paused else "scheduler running"
    err = f" · last error: `{html.escape(state.last_error)}`" if state.last_error else ""
    return f"{run} · {len(state.running)} job(s) running{err}"


class OverviewPage(StorePage):
    """Health of the pipeline at a glance, live while jobs run."""

    recent = param.Integer(default=25, bounds=(1, 500), doc="How many recent jobs to list.")
    live_period_ms = 500

    def _build(self) -> pn.viewable.Viewable:
        self._cards = pn.pane.HTML(stylesheets=[_CARD_CSS], sizing_mode="stretch_width",
                                   css_classes=["overview-counts"])
        self._queues = pn.pane.HTML(stylesheets=[_CARD_CSS], sizing_mode="stretch_width")
        self._status = pn.pane.Markdown(css_classes=["runner-status"])
        self._running = pn.widgets.Tabulator(
            running_frame([]), disabled=True, show_index=False, sizing_mode="stretch_width",
            formatters={"progress": {"type": "progress", "max": 1, "legend": True,
                                     "legendColor": "#000"}},
            css_classes=["running-jobs"], height=160)
        self._jobs = pn.widgets.Tabulator(
            self.store.recent_jobs(limit=self.recent), disabled=True, show_index=False,
            pagination="local", page_size=10, sizing_mode="stretch_width",
            css_classes=["recent-jobs"])
        self._alerts = pn.widgets.Tabulator(
            self.store.recent_alerts(limit=10), disabled=True, show_index=False,
            sizing_mode="stretch_width", css_classes=["recent-alerts"])
        pause = self._pause_toggle()
        self._refresh_store()
        self._refresh_progress()
        return pn.Column(
            pn.pane.Markdown("## Observations by state"), self._cards,
            pn.pane.Markdown("### Waiting per stage"), self._queues,
            pn.Row(self._status, pause, self._pause_message),
            pn.pane.Markdown("### Running jobs"), self._running,
            pn.pane.Markdown("### Recent jobs"), self._jobs,
            pn.pane.Markdown("### Alerts"), self._alerts,
            sizing_mode="stretch_width")

    def _pause_toggle(self) -> pn.widgets.Toggle:
        # Hidden from viewers, and checked on the server either way: a forged toggle event
        # from a viewer's page is refused, audited and undone.
        toggle = pn.widgets.Toggle(label="Pause processing", width=160,
                                   css_classes=["pause-toggle"],
                                   visible=self.actor.may("operator"))
        self._pause_message = pn.pane.Markdown(css_classes=["pause-message"])
        actions = OperatorActions(self.store, self.state)

        def asked(event: param.parameterized.Event) -> None:
            if bool(event.new) == bool(self.state.paused):
                return  # the runner state's own change, mirrored into this widget
            try:
                actions.set_paused(self.actor, bool(event.new))
                self._pause_message.object = ""
            except Refused as exc:
                self._pause_message.object = f"Not allowed: {exc}"
                on_session_loop(lambda: setattr(toggle, "value", bool(self.state.paused)))
        return self._state_widget(toggle, "paused", on_change=asked)

    def _refresh_store(self) -> None:
        counts = self.state.counts or self.store.counts_by_state()
        self._cards.object = state_cards_html(counts)
        depth = self.state.queue_depth or self.store.queue_depth(STAGES)
        self._queues.object = stage_queue_html(depth, self.state.registered_stages)
        jobs = self.store.recent_jobs(limit=self.recent)
        if not jobs.equals(self._jobs.value):
            self._jobs.value = jobs
        alerts = self.store.recent_alerts(limit=10)
        if not alerts.equals(self._alerts.value):
            self._alerts.value = alerts
        self._refresh_progress()

    def _refresh_progress(self) -> None:
        # From the runner state alone: a progress step costs no store query.
        self._status.object = status_line(self.state)
        running = running_frame(self.state.running)
        if not running.equals(self._running.value):
            self._running.value = running
