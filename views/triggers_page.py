"""Triggers page: every trigger with its next fire time, and its history.

Operators edit, enable, fire and delete; each is checked on the server through
TriggerActions and audited.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import panel as pn
import param

from pipeline.operator_actions import Refused
from pipeline.triggers.operator import TriggerActions
from pipeline.triggers.spec import (
    ACTIONS,
    EVENT_KINDS,
    KINDS,
    MISSED_POLICIES,
    Trigger,
    TriggerError,
    TriggerSpec,
    next_fire_times,
)
from views.base import StorePage, on_session_loop


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def next_fire(trigger: Trigger, now: datetime) -> datetime | None:
    """When an enabled cron trigger fires next after ``now`` (None for the others)."""
    spec = trigger.spec
    if spec.kind != "cron" or not spec.enabled:
        return None
    return next_fire_times(spec.cron or "", spec.time_zone, now, 1)[0]


def cron_preview(expr: str, time_zone: str, now: datetime) -> str:
    """The next five fire times of ``expr`` as HTML, or the error naming the field."""
    try:
        times = next_fire_times(expr, time_zone, now, 5)
    except TriggerError as exc:
        return f"<span data-kind='problem'>{html.escape(str(exc))}</span>"
    items = "".join(f"<li>{t:%Y-%m-%d %H:%M} UTC</li>" for t in times)
    return f"<div data-kind='info'>next fire times:<ol>{items}</ol></div>"


def triggers_html(triggers: list[Trigger], now: datetime) -> str:
    """The trigger list as a table with each one's next fire time; escaped."""
    if not triggers:
        return "<p class='no-triggers'>No triggers yet.</p>"
    rows = []
    for t in triggers:
        s = t.spec
        when = (s.cron if s.kind == "cron" else s.event_kind if s.kind == "event"
                else "by hand") or ""
        nxt = next_fire(t, now)
        rows.append(
            f"<tr data-trigger-id='{t.id}' data-enabled='{str(s.enabled).lower()}'>"
            f"<td>{html.escape(s.name)}</td><td>{s.kind}</td>"
            f"<td>{html.escape(when)} {html.escape(s.time_zone) if s.kind == 'cron' else ''}"
            f"</td><td>{html.escape(s.action)}</td>"
            f"<td>{'enabled' if s.enabled else 'disabled'}</td>"
            f"<td>{f'{nxt:%Y-%m-%d %H:%M} UTC' if nxt else '—'}</td>"
            f"<td>{html.escape(t.owner)}</td></tr>")
    return ("<table class='triggers-table'><tr><th>name</th><th>kind</th><th>when</th>"
            "<th>action</th><th>state</th><th>next fire</th><th>owner</th></tr>"
            + "".join(rows) + "</table>")


def history_html(rows: pd.DataFrame) -> str:
    """Firings newest first as a table; escaped."""
    if not len(rows):
        return "<p class='no-history'>No firings yet.</p>"
    body = "".join(
        f"<tr data-outcome='{html.escape(str(r.outcome))}'><td>{r.fired_utc:%Y-%m-%d %H:%M:%S}"
        f"</td><td>{html.escape(str(r.trigger))}</td><td>{html.escape(str(r.fired_by))}</td>"
        f"<td>{html.escape(str(r.outcome))}</td><td>{html.escape(str(r.enqueued))}</td>"
        f"<td>{html.escape(str(r.detail))}</td></tr>" for r in rows.itertuples(index=False))
    return ("<table class='trigger-history'><tr><th>fired (UTC)</th><th>trigger</th>"
            "<th>by</th><th>outcome</th><th>enqueued</th><th>detail</th></tr>" + body
            + "</table>")


class TriggersPage(StorePage):
    """Triggers with their next fire time and history; operators edit, enable, fire, delete."""

    clock = param.Callable(default=_utc_now, doc="Now, naive UTC (tests pass a fixed clock).")
    live_period_ms = 3000

    def _build(self) -> pn.viewable.Viewable:
        self._actions = TriggerActions(self.store, clock=self.clock)
        self._triggers: list[Trigger] | None = None
        self._history_rows = pd.DataFrame()
        self._list = pn.pane.HTML("", css_classes=["triggers-list"], sizing_mode="stretch_width")
        self._history = pn.pane.HTML("", css_classes=["trigger-history-pane"],
                                     sizing_mode="stretch_width")
        self._message = pn.pane.HTML("", css_classes=["triggers-message"])
        self._pick = pn.widgets.Select(name="trigger", options={}, width=280,
                                       css_classes=["trigger-pick"])
        operator = self.actor.may("operator")
        # Hidden from viewers and checked on the server either way: a forged event from a
        # viewer's page is refused, audited and undone.
        self._enabled = pn.widgets.Toggle(name="Enabled", width=100, visible=operator,
                                          css_classes=["trigger-enabled"])
        self._fire = pn.widgets.Button(name="Fire now", width=100, visible=operator,
                                       css_classes=["trigger-fire"])
        self._delete = pn.widgets.Button(name="Delete", button_type="danger", width=90,
                                         visible=operator, css_classes=["trigger-delete"])
        self._pick.param.watch(lambda _: on_session_loop(self._picked), "value")
        self._enabled.param.watch(self._toggled, "value")
        self._fire.on_click(lambda _: self._do(lambda tid: self._actions.fire(
            self.actor, tid), "fired #{0}: history #{1}"))
        self._delete.on_click(lambda _: self._do(lambda tid: self._actions.delete(
            self.actor, tid), "deleted #{0}"))
        editor = self._editor(visible=operator)
        self._refresh_store()
        return pn.Column(
            pn.pane.Markdown("## Triggers"), self._list,
            pn.Row(self._pick, self._enabled, self._fire, self._delete), self._message,
            editor, pn.pane.Markdown("### History"), self._history,
            sizing_mode="stretch_width")

    # ---------------------------------------------------------- the editor
    def _editor(self, *, visible: bool) -> pn.viewable.Viewable:
        self._name = pn.widgets.TextInput(name="name", width=220, css_classes=["trigger-name"])
        self._kind = pn.widgets.Select(name="kind", options=list(KINDS), value="cron",
                                       width=110, css_classes=["trigger-kind"])
        self._cron = pn.widgets.TextInput(name="cron", value="0 * * * *", width=160,
                                          css_classes=["trigger-cron"])
        self._zone = pn.widgets.TextInput(name="time zone", value="UTC", width=170,
                                          css_classes=["trigger-zone"])
        self._event = pn.widgets.Select(name="event", options=list(EVENT_KINDS), width=200,
                                        css_classes=["trigger-event"])
        self._event_params = pn.widgets.TextInput(name="event parameters (JSON)", value="{}",
                                                  width=220)
        self._action = pn.widgets.Select(name="action", options=list(ACTIONS), width=200,
                                         css_classes=["trigger-action"])
        self._action_params = pn.widgets.TextInput(name="action parameters (JSON)",
                                                   value="{}", width=260,
                                                   css_classes=["trigger-action-params"])
        self._policy = pn.widgets.Select(name="missed fire times", width=130,
                                         options=list(MISSED_POLICIES))
        self._preview = pn.pane.HTML("", css_classes=["cron-preview"])
        self._save = pn.widgets.Button(name="Save as new", button_type="primary", width=120,
                                       css_classes=["trigger-save"])
        self._update = pn.widgets.Button(name="Save changes", width=120,
                                         css_classes=["trigger-update"])
        # as it is typed (value_input), and when set from a picked trigger (value)
        for w, which in ((self._cron, "expr"), (self._zone, "zone")):
            w.param.watch(lambda e, which=which: on_session_loop(
                lambda: self._show_preview(**{which: e.new})), ["value_input", "value"])
        self._save.on_click(lambda _: self._do_save(None))
        self._update.on_click(lambda _: self._do_save(self._pick.value))
        self._show_preview()
        return pn.Column(
            pn.pane.Markdown("### Make or edit a trigger"),
            pn.Row(self._name, self._kind, self._cron, self._zone, self._policy),
            self._preview,
            pn.Row(self._event, self._event_params),
            pn.Row(self._action, self._action_params),
            pn.Row(self._save, self._update), visible=visible, css_classes=["trigger-editor"])

    def _show_preview(self, *, expr: str | None = None, zone: str | None = None) -> None:
        expr = expr if expr is not None else (self._cron.value_input or self._cron.value)
        zone = zone if zone is not None else (self._zone.value_input or self._zone.value)
        self._preview.object = cron_preview(expr or "", zone or "UTC", self.clock())

    def _spec(self) -> TriggerSpec:
        params = {}
        for label, widget in (("event parameters", self._event_params),
                              ("action parameters", self._action_params)):
            try:
                params[label] = json.loads(widget.value_input or widget.value or "{}")
            except json.JSONDecodeError as exc:
                raise TriggerError(label, f"not JSON: {exc.msg}") from None
            if not isinstance(params[label], dict):
                raise TriggerError(label, 'a JSON object, e.g. {"stage": "image"}')
        kind = self._kind.value
        return TriggerSpec(
            name=(self._name.value_input or self._name.value or "").strip(), kind=kind,
            cron=(self._cron.value_input or self._cron.value) if kind == "cron" else None,
            time_zone=(self._zone.value_input or self._zone.value or "UTC").strip(),
            event_kind=self._event.value if kind == "event" else None,
            event_params=params["event parameters"] if kind == "event" else {},
            action=self._action.value, action_params=params["action parameters"],
            missed_policy=self._policy.value,
            enabled=True if self._picked_trigger() is None else
            self._picked_trigger().spec.enabled)

    def _do_save(self, trigger_id: int | None) -> None:
        try:
            spec = self._spec()
            saved = self._actions.save(self.actor, spec, trigger_id=trigger_id)
        except (TriggerError, Refused) as exc:
            self._say(str(exc), problem=True)
            return
        self._say(f"saved trigger #{saved} {spec.name}")
        self._triggers = None
        on_session_loop(lambda: (self._refresh_store(), setattr(self._pick, "value", saved)))

    # ---------------------------------------------------------- actions
    def _picked_trigger(self) -> Trigger | None:
        picked = self._pick.value
        return next((t for t in self._triggers or [] if t.id == picked), None)

    def _picked(self) -> None:
        trig = self._picked_trigger()
        self._enabled.value = bool(trig and trig.spec.enabled)
        if trig is not None and self._enabled.visible:
            s = trig.spec
            self._name.value, self._kind.value = s.name, s.kind
            self._cron.value, self._zone.value = s.cron or "", s.time_zone
            self._event.value = s.event_kind or self._event.value
            self._event_params.value = json.dumps(s.event_params)
            self._action.value, self._policy.value = s.action, s.missed_policy
            self._action_params.value = json.dumps(s.action_params)
            self._show_preview()
        self._refresh_history()

    def _toggled(self, event: param.parameterized.Event) -> None:
        trig = self._picked_trigger()
        if trig is None or bool(event.new) == trig.spec.enabled:
            return  # the page's own mirroring of the picked trigger
        try:
            self._actions.set_enabled(self.actor, trig.id, bool(event.new))
        except Refused as exc:
            self._say(f"Not allowed: {exc}", problem=True)
            on_session_loop(lambda: setattr(self._enabled, "value", trig.spec.enabled))
            return
        self._say(f"{'enabled' if event.new else 'disabled'} #{trig.id}")
        self._triggers = None
        on_session_loop(self._refresh_store)

    def _do(self, action: Callable[[int], object], done: str) -> None:
        picked = self._pick.value
        if picked is None:
            self._say("pick a trigger first", problem=True)
            return
        try:
            result = action(int(picked))
        except (TriggerError, Refused) as exc:
            self._say(f"Not allowed: {exc}" if isinstance(exc, Refused) else str(exc),
                      problem=True)
            return
        self._say(done.format(picked, result))
        self._triggers = None
        on_session_loop(self._refresh_store)

    def _say(self, text: str, *, problem: bool = False) -> None:
        kind = "problem" if problem else "info"
        obj = f"<span data-kind='{kind}'>{html.escape(text)}</span>"
        on_session_loop(lambda: setattr(self._message, "object", obj))

    # ---------------------------------------------------------- refreshes
    def _refresh_store(self) -> None:
        triggers = self.store.trigger_list()
        if triggers != self._triggers:
            self._triggers = triggers
            self._list.object = triggers_html(triggers, self.clock())
            options = {f"#{t.id} {t.spec.name}": t.id for t in triggers}
            keep = self._pick.value if self._pick.value in options.values() else None
            self._pick.options = {"— all triggers —": None, **options}
            self._pick.value = keep
        self._refresh_history()

    def _refresh_history(self) -> None:
        rows = self.store.trigger_history(trigger_id=self._pick.value, limit=100)
        if not rows.equals(self._history_rows):
            self._history_rows = rows
            self._history.object = history_html(rows)
