"""Timing helpers the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def p50_p95_ms(fn: Callable[..., object], repeat: int, *, indexed: bool = False,
               before: Callable[[int], object] | None = None,
               after: Callable[[int], object] | None = None) -> tuple[float, float]:
    """Median and 95th percentile of ``repeat`` calls of ``fn``, in ms, after a warm call.

    ``indexed`` passes each call its number (0, 1, ...), for work that must differ per
    call (a clock moved on); the warm call then gets none. ``before`` and ``after`` run
    around every call (the warm one's number is -1), outside the time: what sets a call
    up or waits for what it started.
    """
    ms = []
    for i in range(-1, repeat):  # -1: the warm call, which plans the queries
        if before is not None:
            before(i)
        t0 = time.perf_counter()
        fn(i) if indexed and i >= 0 else fn()
        if i >= 0:
            ms.append((time.perf_counter() - t0) * 1e3)
        if after is not None:
            after(i)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
