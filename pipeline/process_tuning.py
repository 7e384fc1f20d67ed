"""Process-wide settings made once, when a process starts: BLAS threads and malloc's trimming.

BLAS on one thread. The pipeline's BLAS work is many small products (the calibrator
model's per-channel GEMMs, the solver's batched normal equations); threaded OpenBLAS
spins up and synchronises its threads for each one, which cost 10-20x on a 2-core
machine where another stage runs beside (measured: 0.08 s per integration on one
thread, 1.4-2 s threaded). The parallelism is the runner's stage threads, the backend's
block threads and ducc0's own pool instead. It is set once and never switched back:
OpenBLAS's thread count is process-wide, and changing it while another thread is inside
a BLAS call is not safe (threadpoolctl's ``threadpool_limits`` entered and left per
call from pipeline threads is joblib/threadpoolctl#205; the suite once aborted in CI
while it was used that way).

Freed memory kept. The array kernels work through chunks in cache-sized blocks whose
temporaries (a few MB each) are freed and allocated again thousands of times. glibc's
default trims the heap top back to the kernel once 2x the largest recent block is free,
so every block pays its page faults again; on a virtual machine that hands freed pages
back to its host, a fault costs as much as the arithmetic (measured on the 2-core VM:
full-size flagging 4.2 -> 3.3 s, its system time 1.2 -> 0.4 s). Blocks below 32 MB come
from the heap, and up to 256 MB of free heap is kept; arrays of 32 MB and more are
mmapped and returned whole, as before.

Entry points call :func:`configure_process` before starting threads: contimg's main,
the test suite, the benchmarks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20     # glibc's ceiling for this parameter on 64-bit
TRIM_THRESHOLD_BYTES = 256 << 20


@cache
def configure_process() -> None:
    """One BLAS thread and malloc keeping freed blocks, process-wide; later calls do nothing."""
    # threadpoolctl limits only the BLAS libraries already loaded: load every one the
    # pipeline calls (NumPy's, and SciPy's own OpenBLAS) first, or one that a stage
    # imports later keeps its default threads
    import numpy  # noqa: F401, PLC0415
    import scipy.linalg  # noqa: F401, PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(limits=1, user_api="blas")
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); False off glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False     # not glibc (musl, macOS): their allocators decide for themselves
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
