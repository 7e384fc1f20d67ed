"""Saved queries on a page: save its filter; list, run, edit, delete and fork queries.

The page's URL keeps the filter (``?filter=<json>``; ``?query=<id>`` opens a saved one).

The component never decides who sees what: the store's queries do (a private query of
someone else is, for this reader, a query that does not exist). It knows the page only by
two callables: one returns the page's filter as a spec dict, one applies a spec dict.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import panel as pn
import param

from pipeline.actor import Actor
from pipeline.store import Store
from pipeline.store.query_specs import SpecProblem, filter_from_spec
from pipeline.store.saved_queries import PAGES, VISIBILITIES, SavedQuery, SavedQueryError
from views.base import on_event, on_session_loop

Spec = dict[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def query_labels(rows: pd.DataFrame, reader: str | None) -> list[str]:
    """How queries are listed: name, whose (``mine`` for the reader's), visibility, id."""
    if not len(rows):
        return []
    # vectorised: a list of thousands is rebuilt on every refresh
    whose = rows["owner"].where(rows["owner"] != reader, "mine")
    return list(rows["name"] + " (" + whose + ", " + rows["visibility"] + ") #"
                + rows["id"].astype(int).astype(str))


def not_found(query_id: object) -> str:
    """The one answer for a query that does not exist and for one the reader may not see."""
    return f"saved query #{html.escape(str(query_id))}: not found"


class SavedQueriesPanel(pn.viewable.Viewer):
    """Save, list, run, edit, delete and fork the saved queries of one page."""

    store = param.ClassSelector(class_=Store, doc="Where queries are kept (and visibility "
                                                  "enforced).")
    actor = param.ClassSelector(class_=Actor, doc="Who the page is shown to.")
    page = param.Selector(objects=list(PAGES), doc="The page whose filters are saved.")
    current_spec = param.Callable(doc="Returns the page's current filter as a spec dict.")
    apply_spec = param.Callable(doc="Applies a (checked) spec dict to the page.")
    clock = param.Callable(default=_utc_now, doc="Now, naive UTC (tests pass a fixed clock).")
    selected = param.Integer(default=None, allow_None=True, doc="The query picked in the list.")

    def __init__(self, **params):
        super().__init__(**params)
        self._rows = pd.DataFrame()
        self._name = pn.widgets.TextInput(label="name", width=230,
                                          css_classes=["saved-query-name"])
        self._description = pn.widgets.TextInput(label="description", width=230,
                                                 css_classes=["saved-query-description"])
        self._visibility = pn.widgets.RadioButtonGroup(
            options=list(VISIBILITIES), value="private", css_classes=["saved-query-visibility"])
        self._save = pn.widgets.Button(label="Save as new", color="primary", width=110,
                                       css_classes=["saved-query-save"])
        self._update = pn.widgets.Button(label="Update", width=110,
                                         css_classes=["saved-query-update"])
        self._list = pn.widgets.Select(label="saved queries", options={}, width=230,
                                       css_classes=["saved-query-list"])
        self._run = pn.widgets.Button(label="Run", width=70, css_classes=["saved-query-run"])
        self._fork = pn.widgets.Button(label="Fork", width=70, css_classes=["saved-query-fork"])
        self._delete = pn.widgets.Button(label="Delete", color="danger", width=70,
                                         css_classes=["saved-query-delete"])
        self._message = pn.pane.HTML("", css_classes=["saved-query-message"], width=230)
        self._save.on_click(on_event(lambda _: self.save()))
        self._update.on_click(on_event(lambda _: self.update()))
        self._run.on_click(on_event(lambda _: self.run()))
        self._fork.on_click(on_event(lambda _: self.fork()))
        self._delete.on_click(on_event(lambda _: self.delete()))
        self._list.param.watch(on_event(self._on_pick), "value")
        signed_out = self.actor.reader is None
        for w in (self._name, self._description, self._visibility, self._save, self._update):
            w.visible = not signed_out
        self.refresh()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Card(self._name, self._description, self._visibility,
                       pn.Row(self._save, self._update), self._list,
                       pn.Row(self._run, self._fork, self._delete), self._message,
                       title="Saved queries", collapsed=False, width=260,
                       css_classes=["saved-queries"])

    # ------------------------------------------------------------------ list
    def refresh(self) -> None:
        """Re-read the queries this actor may see on this page into the list."""
        self._rows = self.store.saved_queries(reader=self.actor.reader, page=self.page)
        options = dict(zip(query_labels(self._rows, self.actor.reader),
                           self._rows["id"].astype(int).tolist(), strict=True))
        keep = self.selected if self.selected in options.values() else None
        self._list.options = {"— pick a query —": None, **options}
        self._list.value = keep
        self.selected = keep
        self._enable()

    def listed(self) -> list[int]:
        """The ids in the list, in its order."""
        return [int(i) for i in self._rows["id"]] if len(self._rows) else []

    def _enable(self) -> None:
        self._run.disabled = self.selected is None
        self._fork.disabled = self.selected is None or self.actor.reader is None
        self._delete.disabled = self._update.disabled = not self._selected_query_is_mine()

    def _selected_query_is_mine(self) -> bool:
        if self.selected is None or not len(self._rows):
            return False
        owner = self._rows.loc[self._rows["id"] == self.selected, "owner"]
        return bool(len(owner)) and owner.iloc[0] == self.actor.reader

    def _on_pick(self, event) -> None:
        self.selected = event.new
        query = self._open(event.new) if event.new is not None else None
        if query is not None and query.owner == self.actor.reader:
            # an own query's fields come up for editing
            self._name.value, self._description.value = query.name, query.description
            self._visibility.value = query.visibility
        self._enable()

    # --------------------------------------------------------------- actions
    def _say(self, text: str, *, kind: str = "info") -> None:
        colour = {"info": "#198754", "problem": "#dc3545"}[kind]
        self._message.object = (f"<span data-kind='{kind}' style='color: {colour}'>"
                                f"{text}</span>")

    def message(self) -> str:
        """The message shown now (HTML)."""
        return self._message.object

    def save(self) -> int | None:
        """Save the page's current filter under the name typed; the new id, or None."""
        if self.actor.reader is None:
            self._say("sign in to save queries", kind="problem")
            return None
        try:
            qid = self.store.save_query(owner=self.actor.reader, page=self.page,
                                        name=self._name.value.strip(), spec=self.current_spec(),
                                        visibility=self._visibility.value,
                                        description=self._description.value.strip(),
                                        now=self.clock())
        except SavedQueryError as exc:
            self._say(html.escape(str(exc)), kind="problem")
            return None
        self.selected = qid
        self.refresh()
        self._say(f"saved {html.escape(self._name.value.strip())!s} as #{qid}")
        return qid

    def update(self) -> None:
        """Put the typed name, description, visibility and current filter into the own query."""
        if self.selected is None or self.actor.reader is None:
            return
        try:
            self.store.update_query(self.selected, by=self.actor.reader, now=self.clock(),
                                    name=self._name.value.strip(),
                                    description=self._description.value.strip(),
                                    visibility=self._visibility.value, spec=self.current_spec())
        except SavedQueryError as exc:
            self._say(html.escape(str(exc)), kind="problem")
            return
        self.refresh()
        self._say(f"updated #{self.selected}")

    def run(self, query_id: int | None = None) -> bool:
        """Apply a saved query (default: the one picked) to the page; True when applied."""
        query_id = self.selected if query_id is None else query_id
        if query_id is None:
            return False
        query = self._open(query_id)
        if query is None:
            return False
        try:
            filter_from_spec(self.page, query.spec)
            self.apply_spec(dict(query.spec))
        except (SpecProblem, ValueError, TypeError) as exc:
            # the page keeps its own filter: a stale query must not break it
            self._say(f"{html.escape(query.name)}: {html.escape(str(exc))}", kind="problem")
            return False
        self._say(f"running {html.escape(query.name)} (#{query.id})")
        return True

    def fork(self) -> int | None:
        """A private copy of the picked query, owned by the actor; its id, or None."""
        if self.selected is None:
            return None
        if self.actor.reader is None:
            self._say("sign in to fork queries", kind="problem")
            return None
        try:
            qid = self.store.fork_query(self.selected, by=self.actor.reader, now=self.clock())
        except SavedQueryError as exc:
            self._say(html.escape(str(exc)), kind="problem")
            return None
        self.selected = qid
        self.refresh()
        self._say(f"forked as #{qid}, yours to edit")
        return qid

    def delete(self) -> None:
        """Delete the picked query (one's own only; the store refuses others)."""
        if self.selected is None or self.actor.reader is None:
            return
        try:
            self.store.delete_query(self.selected, by=self.actor.reader)
        except SavedQueryError as exc:
            self._say(html.escape(str(exc)), kind="problem")
            return
        gone, self.selected = self.selected, None
        self.refresh()
        self._say(f"deleted #{gone}")

    def _open(self, query_id: object) -> SavedQuery | None:
        try:
            query = self.store.saved_query(int(query_id), reader=self.actor.reader)
        except (TypeError, ValueError):
            query = None
        if query is None or query.page != self.page:
            self._say(not_found(query_id), kind="problem")
            return None
        return query

    # ------------------------------------------------------------------- URL
    def open_from_url(self, params: dict[str, Any] | None = None) -> None:
        """Open what the URL names: ``?query=<id>`` a saved query, ``?filter=<json>`` a filter."""
        if params is None:
            loc = pn.state.location
            params = dict(loc.query_params) if loc is not None else {}
        if params.get("query") not in (None, ""):
            if self.run(params["query"]):
                self.selected = int(params["query"])
                self._list.value = self.selected if self.selected in self.listed() else None
            return
        raw = params.get("filter")
        if raw in (None, ""):
            return
        try:
            spec = raw if isinstance(raw, dict) else json.loads(raw)
            if not isinstance(spec, dict):
                raise SpecProblem("the link's filter is not a mapping")
            filter_from_spec(self.page, spec)
            self.apply_spec(spec)
        except (SpecProblem, ValueError, TypeError) as exc:
            self._say(f"the link's filter: {html.escape(str(exc))}", kind="problem")

    def url_query(self) -> str:
        """The page's current filter as a URL query (``?filter=...``)."""
        return "?" + urlencode({"filter": json.dumps(self.current_spec(), sort_keys=True,
                                                     separators=(",", ":"))})

    def follow(self, target: param.Parameterized, names: list[str]) -> None:
        """Keep the URL carrying the filter whenever ``target``'s ``names`` change."""
        target.param.watch(lambda *_: on_session_loop(self.sync_url), names)

    def sync_url(self) -> None:
        """Write the current filter into the browser's URL (served sessions only)."""
        loc = pn.state.location
        if loc is None or pn.state.curdoc is None or pn.state.curdoc.session_context is None:
            return
        search = self.url_query()
        if loc.search != search:
            loc.search = search
