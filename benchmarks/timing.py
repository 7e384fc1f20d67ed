"""Timing helpers the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def p50_p95_ms(fn: Callable[..., object], repeat: int, *, indexed: bool = False
               ) -> tuple[float, float]:
    """Median and 95th percentile of ``repeat`` calls of ``fn``, in ms, after a warm call.

    ``indexed`` passes each call its number (0, 1, ...), for work that must differ per
    call (a clock moved on); the warm call then gets none.
    """
    fn()  # warm: the first call plans the queries
    ms = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i) if indexed else fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
