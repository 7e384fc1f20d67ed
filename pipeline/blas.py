"""BLAS on one thread for the whole process, set once when the process starts.

The pipeline's BLAS work is many small products (the calibrator model's per-channel
GEMMs, the solver's batched normal equations); threaded OpenBLAS spins up and
synchronises its threads for each one, which cost 10-20x on a 2-core machine where
another stage runs beside (measured: 0.08 s per integration on one thread, 1.4-2 s
threaded). The parallelism is the runner's stage threads and ducc0's own pool instead.

It is set once and never switched back: OpenBLAS's thread count is process-wide, and
changing it while another thread is inside a BLAS call is not safe (threadpoolctl's
``threadpool_limits`` entered and left per call from pipeline threads is
joblib/threadpoolctl#205; the suite once aborted in CI while it was used that way).
Entry points call this before starting threads: contimg's main, the test suite, the
benchmarks.
"""

from __future__ import annotations

from functools import cache


@cache
def single_threaded_blas() -> None:
    """Limit every loaded BLAS to one thread, process-wide; later calls do nothing."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(limits=1, user_api="blas")
