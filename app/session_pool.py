"""Panel's thread pool, with each browser session's work run in the order it arrived.

Panel hands a session's property changes, its Bokeh events (clicks), its page build
after load and its threaded callbacks to the pool one by one. A plain pool runs them
side by side, so a value typed into a box and the button pressed right after it can be
handled the other way round: the button acts on the old value. This pool keeps one
queue per session (its Bokeh document): a session's items run one after another, in
order, on any free thread, while different sessions still run side by side, so one
user's slow page build never holds up another's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any

from bokeh.document import Document

_Item = tuple[Future, Callable[..., Any], tuple, dict]


def session_document(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Document | None:
    """The Bokeh document a submitted Panel callable works on, if it names one."""
    candidates = [*args, *kwargs.values()]
    if isinstance(fn, partial):
        candidates += [*fn.args, *fn.keywords.values()]
    owner = getattr(fn, "__self__", None)  # a periodic callback's bound method
    candidates.append(getattr(owner, "_doc", None))
    return next((c for c in candidates if isinstance(c, Document)), None)


class SessionOrderedPool(Executor):
    """Run each session's submissions in order, different sessions concurrently."""

    def __init__(self, pool: Executor):
        self._pool = pool
        self._lock = threading.Lock()
        # a session's queue exists only while it has work: nothing is kept once it drains
        self._queues: dict[Document, deque[_Item]] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)`` behind its session's earlier work."""
        doc = session_document(fn, args, kwargs)
        if doc is None:
            return self._pool.submit(fn, *args, **kwargs)
        future: Future = Future()
        with self._lock:
            queue = self._queues.get(doc)
            if queue is not None:  # a drain is running for this session: it takes this too
                queue.append((future, fn, args, kwargs))
                return future
            self._queues[doc] = deque([(future, fn, args, kwargs)])
        self._pool.submit(self._drain, doc)
        return future

    def _drain(self, doc: Document) -> None:
        while True:
            with self._lock:
                queue = self._queues[doc]
                if not queue:
                    del self._queues[doc]
                    return
                future, fn, args, kwargs = queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the future, as a pool does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def pending(self) -> int:
        """How many sessions have work queued or running."""
        with self._lock:
            return len(self._queues)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the underlying pool down (Panel does at server stop)."""
        if cancel_futures:
            with self._lock:
                for queue in self._queues.values():
                    for future, *_ in queue:
                        future.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
