"""Bring runner state changes onto a browser session's IO loop."""

from __future__ import annotations

from collections.abc import Callable

import panel as pn

from pipeline.jobs.runner_state import RunnerState


class LiveLink:
    """Watch a RunnerState from any thread; call ``refresh`` on the session's own loop.

    Workers only flip a flag (cheap, thread-safe); a periodic callback on the session's
    IO loop refreshes at most every ``period_ms``, so a burst of progress updates from
    many jobs costs each browser one redraw.
    """

    def __init__(self, state: RunnerState, refresh: Callable[[], None], *, period_ms: int = 500):
        self._state = state
        self._refresh = refresh
        self._dirty = False
        self._watcher = state.param.watch(self._mark, ["revision", "paused"])
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self._callback = pn.state.add_periodic_callback(self._flush, period=period_ms)
            pn.state.on_session_destroyed(self._close)
        else:
            self._callback = None  # a notebook without a server: refresh on demand

    def _mark(self, *_: object) -> None:
        self._dirty = True

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._refresh()

    def _close(self, *_: object) -> None:
        self._state.param.unwatch(self._watcher)
        if self._callback is not None:
            self._callback.stop()
