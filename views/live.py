"""Bring runner state changes onto a browser session's IO loop, sorted by what changed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import panel as pn

from pipeline.jobs.runner_state import RunnerState


def store_key(state: RunnerState) -> Hashable:
    """What changes exactly when the store's rows a page shows may have changed.

    Observations move state (counts, queues), jobs finish or fail (jobs, last error), a
    job starts or ends (the running ids); a progress step changes none of these.
    """
    return (tuple(sorted(state.counts.items())), tuple(sorted(state.jobs.items())),
            tuple(sorted(state.queue_depth.items())), state.last_error,
            tuple(sorted(r["job_id"] for r in state.running)))


def progress_key(state: RunnerState) -> Hashable:
    """What the runner state alone shows: each running job's progress, paused, running."""
    return (tuple((r["job_id"], r["progress"]) for r in state.running), state.paused,
            state.scheduler_running)


class LiveLink:
    """Watch a RunnerState from any thread; call back on the session's own loop.

    Workers only flip a flag (cheap, thread-safe); a periodic callback on the session's
    IO loop looks at most every ``period_ms``. ``on_store`` runs only when the store's
    rows may have changed (``store_key``), so a progress step costs a session no store
    query; ``on_progress`` runs when only the runner state's own figures changed.
    """

    def __init__(self, state: RunnerState, *, on_store: Callable[[], None] | None = None,
                 on_progress: Callable[[], None] | None = None, period_ms: int = 500):
        self._state = state
        self._on_store = on_store
        self._on_progress = on_progress
        self._dirty = False
        # A notebook's refresh and a tick may call flush() at once: one runs, the other
        # returns and the link stays dirty for the next tick.
        self._flushing = threading.Lock()
        self._store_key = store_key(state)
        self._progress_key = progress_key(state)
        self._watcher = state.param.watch(self._mark, ["revision", "paused"])
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            # A coroutine, so Panel runs it on the session's loop under the document lock
            # even with its thread pool on: pages' refreshes set plain Bokeh models.
            self._callback = pn.state.add_periodic_callback(self._tick, period=period_ms)
            pn.state.on_session_destroyed(self._close)
        else:
            self._callback = None  # a notebook without a server: flush() on demand

    def _mark(self, *_: object) -> None:
        self._dirty = True

    async def _tick(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Call back for what changed since the last flush (nothing if nothing did)."""
        if not self._dirty or not self._flushing.acquire(blocking=False):
            return
        try:
            self._flush()
        finally:
            self._flushing.release()

    def _flush(self) -> None:
        self._dirty = False
        skey, pkey = store_key(self._state), progress_key(self._state)
        if skey != self._store_key:
            self._store_key = skey
            if self._on_store is not None:
                self._on_store()
        if pkey != self._progress_key:
            self._progress_key = pkey
            if self._on_progress is not None:
                self._on_progress()

    @property
    def running(self) -> bool:
        """True while the periodic callback runs (False without a server session)."""
        return self._callback is not None and self._callback.running

    def _close(self, *_: object) -> None:
        # The runner state outlives every session: its watcher and these callbacks are
        # what would keep a closed session's page (and its documents) in memory.
        self._state.param.unwatch(self._watcher)
        if self._callback is not None:
            self._callback.stop()
        self._on_store = self._on_progress = None
