"""Saved queries page: every query the actor may see, over every page that saves them.

Each has a link that opens it on its page; fork any, delete one's own.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import panel as pn
import param

from pipeline.store.saved_queries import SavedQueryError
from views.base import StorePage, on_event
from views.saved_queries_panel import query_labels


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def open_link(page: str, query_id: int) -> str:
    """The link that opens a saved query on its page (relative, like the other page links)."""
    return f"./{page}?query={int(query_id)}"


def queries_html(rows: pd.DataFrame, reader: str | None) -> str:
    """The list of queries as a table, each with its open link; escaped throughout."""
    if not len(rows):
        return "<p class='no-queries'>No saved queries you may see yet.</p>"
    # vectorised string building: the list can hold thousands of queries
    ids = rows["id"].astype(int).astype(str)
    esc = {c: rows[c].astype(str).map(html.escape) for c in ("name", "page", "visibility",
                                                            "description")}
    owner = rows["owner"].astype(str).map(html.escape).where(rows["owner"] != reader, "you")
    body = ("<tr data-query-id='" + ids + "'><td><a class='open-query' href='./" + esc["page"]
            + "?query=" + ids + "'>" + esc["name"] + "</a></td><td>" + esc["page"]
            + "</td><td>" + owner + "</td><td>" + esc["visibility"] + "</td><td>"
            + esc["description"] + "</td><td>#" + ids + "</td></tr>")
    return ("<table class='saved-queries-table'><tr><th>name</th><th>page</th><th>owner</th>"
            "<th>visibility</th><th>description</th><th>id</th></tr>" + "".join(body)
            + "</table>")


class QueriesPage(StorePage):
    """Every saved query the actor may see, opened by link; fork any, delete one's own."""

    clock = param.Callable(default=_utc_now, doc="Now, naive UTC (tests pass a fixed clock).")
    live_period_ms = 5000

    def _build(self) -> pn.viewable.Viewable:
        self._rows = pd.DataFrame()
        self._table = pn.pane.HTML("", css_classes=["saved-queries-list"],
                                   sizing_mode="stretch_width")
        self._pick = pn.widgets.Select(label="query", options={}, width=320,
                                       css_classes=["queries-pick"])
        self._fork = pn.widgets.Button(label="Fork", width=80, css_classes=["queries-fork"])
        self._delete = pn.widgets.Button(label="Delete", color="danger", width=80,
                                         css_classes=["queries-delete"])
        self._message = pn.pane.HTML("", css_classes=["queries-message"])
        self._fork.on_click(on_event(lambda _: self.fork()))
        self._delete.on_click(on_event(lambda _: self.delete()))
        self._pick.param.watch(on_event(lambda _: self._enable()), "value")
        self._refresh_store()
        return pn.Column(pn.pane.Markdown("## Saved queries"), self._table,
                         pn.Row(self._pick, self._fork, self._delete), self._message,
                         sizing_mode="stretch_width")

    def _refresh_store(self) -> None:
        rows = self.store.saved_queries(reader=self.actor.reader)
        if self._rows.equals(rows):
            return  # the runner ticks often; resend only a changed list
        self._rows = rows
        self._table.object = queries_html(rows, self.actor.reader)
        labels = [f"{label} · {page}" for label, page in
                  zip(query_labels(rows, self.actor.reader), rows["page"], strict=True)]
        options = dict(zip(labels, rows["id"].astype(int).tolist(), strict=True))
        keep = self._pick.value if self._pick.value in options.values() else None
        self._pick.options = {"— pick a query —": None, **options}
        self._pick.value = keep
        self._enable()

    def listed(self) -> list[int]:
        """The ids listed, in order."""
        return [int(i) for i in self._rows["id"]] if len(self._rows) else []

    def _enable(self) -> None:
        picked = self._pick.value
        owner = (self._rows.loc[self._rows["id"] == picked, "owner"]
                 if picked is not None and len(self._rows) else pd.Series([], dtype=object))
        self._fork.disabled = picked is None or self.actor.reader is None
        self._delete.disabled = not (len(owner) and owner.iloc[0] == self.actor.reader)

    def _act(self, action: Callable[[int, str], object], done: str) -> None:
        picked, reader = self._pick.value, self.actor.reader
        if picked is None or reader is None:
            return
        try:
            result = action(int(picked), reader)
        except SavedQueryError as exc:
            self._message.object = f"<span data-kind='problem'>{html.escape(str(exc))}</span>"
            return
        self._rows = pd.DataFrame()  # force the list to be re-sent
        self._refresh_store()
        self._message.object = f"<span data-kind='info'>{done.format(picked, result)}</span>"

    def fork(self) -> None:
        """A private copy, owned by the actor, of the picked query."""
        self._act(lambda qid, by: self.store.fork_query(qid, by=by, now=self.clock()),
                  "forked #{0} as #{1}")

    def delete(self) -> None:
        """Delete the picked query (the store refuses anyone but its owner)."""
        self._act(lambda qid, by: self.store.delete_query(qid, by=by), "deleted #{0}")
