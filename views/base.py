"""What every page shares: the store and runner-state parameters, one layout, one event rule.

A page builds its widgets once, on first display, and returns that same layout every
time it is displayed (a notebook showing it twice keeps both copies live: Panel mirrors
each widget into every document it is shown in). Served, the first render is a light
placeholder and the page (widgets and their store queries) is built once the browser
has loaded, in Panel's thread pool: the server's IO loop only sends documents, so one
user's page build never stalls another's (issue 13).

The rule for browser events: a handler that changes the page goes through ``on_event``,
which runs it on the session's IO loop holding the document lock (Panel delivers some
client events outside that lock, and a plain Bokeh model changed there breaks the
session); without a server session (a notebook, a test) it runs at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import panel as pn
import param

from pipeline.actor import Actor
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store
from views.live import LiveLink


def _served() -> bool:
    """True inside a server session that has Panel's thread pool to build pages in."""
    doc = pn.state.curdoc
    return (doc is not None and doc.session_context is not None
            and pn.state._thread_pool is not None)


def _session_gone() -> bool:
    """True when the current document's server session has been destroyed."""
    doc = pn.state.curdoc
    ctx = doc.session_context if doc is not None else None
    return bool(ctx is not None and getattr(ctx, "destroyed", False))


def on_session_loop(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the session's loop with the document lock held (now, without one)."""
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(fn)
    else:
        fn()


def on_event(handler: Callable[..., None]) -> Callable[..., None]:
    """Wrap a browser-event handler (watcher, on_change, on_click) by the page rule."""
    @wraps(handler)
    def deliver(*args: Any) -> None:
        on_session_loop(lambda: handler(*args))
    return deliver


class StorePage(pn.viewable.Viewer):
    """Base of the pages: store and runner state, a layout built once, live refreshes.

    Subclasses implement ``_build`` (the layout, widgets created there once) and may
    implement ``_refresh_store`` (store-backed parts; runs only when the store may have
    changed) and ``_refresh_progress`` (from the runner state alone, no store query).
    """

    store = param.ClassSelector(class_=Store, doc="Query methods over the catalog.")
    state = param.ClassSelector(class_=RunnerState, doc="The job runner's live state.")
    actor = param.ClassSelector(class_=Actor, doc=(
        "Who this page is shown to; the server sets it from the sign-in, a notebook's "
        "default is the person running it."))

    #: how often a session looks at the runner state, ms
    live_period_ms: int = 1000

    def __init__(self, **params):
        params.setdefault("state", RunnerState())  # a notebook may have no runner
        params.setdefault("actor", Actor.notebook())
        super().__init__(**params)
        self._layout: pn.viewable.Viewable | None = None
        self._shell: pn.Column | None = None
        self._live: LiveLink | None = None
        self._built = False

    def __panel__(self) -> pn.viewable.Viewable:
        if self._shell is not None:
            return self._shell
        if self._layout is None:
            if _served():
                # A light first render; the page fills in after load, off the IO loop.
                self._shell = pn.Column(
                    pn.indicators.LoadingSpinner(value=True, size=40, label="Loading…"),
                    sizing_mode="stretch_width", css_classes=["page-loading"])
                pn.state.onload(self._fill, threaded=True)
                self._start_live()
                return self._shell
            self._layout = self._build()
            self._built = True
            self._start_live()
        return self._layout

    def _fill(self) -> None:
        # In the thread pool: the new models join the document only through the shell
        # (a Panel layout, which hands the change to the session's loop).
        if _session_gone():
            return  # its browser left while the build waited in the pool: nobody to show
        layout = self._build()
        if self._shell is not None:
            self._shell.css_classes = []
            self._shell.objects = [layout]
        self._layout = layout
        self._built = True

    def _start_live(self) -> None:
        self._live = LiveLink(self.state, on_store=self._live_store,
                              on_progress=self._live_progress, period_ms=self.live_period_ms)

    def _state_widget(self, widget: pn.widgets.Widget, name: str, *,
                      on_change: Callable[[Any], None]) -> pn.widgets.Widget:
        """Show the runner state's ``name`` in ``widget``; its changes go to ``on_change``.

        ``on_change`` decides (and checks the actor's role) before the shared state
        changes. ``Widget.from_param`` on the shared runner state would leave a watcher on
        it after the session ends (keeping the session's page in memory); this one is
        dropped when the session is destroyed.
        """
        widget.value = getattr(self.state, name)
        widget.param.watch(on_change, "value")
        follow = self.state.param.watch(lambda e: setattr(widget, "value", e.new), name)
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: self.state.param.unwatch(follow))
        return widget

    def _live_store(self) -> None:
        if self._built:  # before the deferred build there is nothing to refresh
            self._refresh_store()

    def _live_progress(self) -> None:
        if self._built:
            self._refresh_progress()

    def refresh(self) -> None:
        """Re-read everything now (a notebook's refresh; a served page refreshes itself)."""
        self._refresh_store()
        self._refresh_progress()

    def _build(self) -> pn.viewable.Viewable:
        raise NotImplementedError

    def _refresh_store(self) -> None:
        """Re-read the store-backed parts (default: nothing)."""

    def _refresh_progress(self) -> None:
        """Redraw what the runner state alone shows (default: nothing)."""
