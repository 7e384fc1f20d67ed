"""Audit (admins): who did what and when, and every action a role check refused."""

from __future__ import annotations

import panel as pn
import param

from views.base import StorePage, on_event


class AuditPage(StorePage):
    """The audit trail, newest first, filterable by user and to refusals."""

    username = param.String(default="", label="User")
    refused_only = param.Boolean(default=False, label="Refused only")
    limit = param.Integer(default=500, bounds=(10, 10_000))

    def _build(self) -> pn.viewable.Viewable:
        self._table = pn.widgets.Tabulator(
            self._rows(), disabled=True, show_index=False, pagination="local", page_size=25,
            sizing_mode="stretch_width", css_classes=["audit-table"],
            titles={"utc": "time (UTC)", "allowed": "allowed"})
        self.param.watch(on_event(lambda *_: self._refresh_store()),
                         ["username", "refused_only", "limit"])
        return pn.Column(
            pn.pane.Markdown("## Audit\nEvery operator and admin action, and every action "
                             "or page a role check refused."),
            pn.Row(pn.widgets.TextInput.from_param(self.param.username, width=200,
                                                   placeholder="any user"),
                   pn.Column(pn.Spacer(height=22),
                             pn.widgets.Checkbox.from_param(self.param.refused_only))),
            self._table, sizing_mode="stretch_width")

    def _rows(self):
        return self.store.audit_rows(limit=self.limit, username=self.username.strip() or None,
                                     refused_only=self.refused_only)

    def _refresh_store(self) -> None:
        rows = self._rows()
        if not rows.equals(self._table.value):
            self._table.value = rows
