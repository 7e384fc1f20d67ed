"""The array backend: CuPy when importable and a device answers, NumPy otherwise.

Algorithms take a Backend and use ``backend.xp`` as they would use ``numpy``; copies to
the host happen once, at the edge, through ``backend.to_host``. ``choose_backend`` is the
one rule (a ``cpu``/``gpu`` setting, else ``CONTIMG_BACKEND=cpu|gpu``, else the machine);
``gpu`` without a usable device is an error, not a silent fallback: an operator who asked
for the GPU wants to know.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from pipeline.errors import ContimgError

BackendName = Literal["cpu", "gpu"]


class GpuUnavailable(ContimgError):
    """The GPU backend was asked for and cannot be used."""

    def __init__(self, why: str):
        super().__init__(f"GPU backend requested but unavailable: {why}; "
                         "unset CONTIMG_BACKEND or set it to cpu")


@dataclass(frozen=True, kw_only=True)
class Backend:
    """An array module and what it runs on."""

    name: BackendName
    xp: ModuleType
    device: str

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as an array of this backend (a host→device copy on the GPU)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array (a device→host copy on the GPU)."""
        return a.get() if hasattr(a, "get") and self.name == "gpu" else np.asarray(a)


def cpu_threads() -> int:
    """Threads CPU work may use: the cores this process is allowed to run on."""
    return max(1, len(os.sched_getaffinity(0)))


def map_blocks(work: Callable[[Any], Any], blocks: Iterable, xp: Any) -> list:
    """``[work(b) for b in blocks]``: on the CPU's cores in threads, on a GPU in order.

    The blocks must write disjoint slices. NumPy releases the GIL in its loops, so the
    CPU backend's block loops (calibration's passes over a chunk) use every core; CuPy
    queues on one device, where threads gain nothing.
    """
    blocks = list(blocks)
    workers = cpu_threads() if xp is np else 1
    if workers == 1 or len(blocks) < 2:
        return [work(b) for b in blocks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blocks") as pool:
        return list(pool.map(work, blocks))


def gpu_status() -> tuple[bool, str]:
    """Whether CuPy imports and a CUDA device answers, and why not if not."""
    try:
        import cupy
    except ImportError as exc:
        return False, f"CuPy is not installed ({exc.name}); install contimg[gpu]"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver errors come in several types
        return False, f"CUDA runtime error: {exc}"
    if n < 1:
        return False, "no CUDA device found"
    return True, f"{n} CUDA device(s)"


def cpu_backend() -> Backend:
    """NumPy on the host."""
    return Backend(name="cpu", xp=np, device="cpu")


def gpu_backend() -> Backend:
    """CuPy on the current CUDA device; GpuUnavailable if there is none."""
    ok, why = gpu_status()
    if not ok:
        raise GpuUnavailable(why)
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Backend(name="gpu", xp=cupy, device=name)


@dataclass(frozen=True, kw_only=True)
class BackendChoice:
    """Which backend a caller gets here, and why (``unavailable``: GPU asked, none usable)."""

    name: Literal["cpu", "gpu", "unavailable"]
    reason: str


def choose_backend(setting: str | None = "auto") -> BackendChoice:
    """The one rule for picking a backend, without raising.

    ``setting`` (``[imaging] backend``, a stage's config, a caller's argument) wins when it
    is ``cpu`` or ``gpu``; with ``auto`` or None, ``$CONTIMG_BACKEND`` decides when set;
    otherwise the GPU if CuPy sees a device, else the CPU.
    """
    asked = (setting or "auto").lower()
    if asked not in ("auto", "cpu", "gpu"):
        raise ValueError(f"backend must be cpu, gpu or auto, got {asked!r}")
    env = (os.environ.get("CONTIMG_BACKEND") or "").lower()
    if asked == "auto" and env:
        if env not in ("auto", "cpu", "gpu"):
            raise ValueError(f"CONTIMG_BACKEND must be cpu, gpu or auto, got {env!r}")
        asked, source = env, f"CONTIMG_BACKEND={env}"
    else:
        source = f"the setting backend = {asked!r}"
    ok, why = gpu_status()
    if asked == "cpu":
        return BackendChoice(name="cpu", reason=f"{source} forces the CPU"
                             + (f" ({why} available)" if ok else ""))
    if ok:
        return BackendChoice(name="gpu", reason=f"CuPy sees {why}")
    if asked == "gpu":
        return BackendChoice(name="unavailable", reason=f"{source} asks for the GPU but it "
                             f"is unusable ({why}): imaging jobs will fail until it is fixed")
    return BackendChoice(name="cpu", reason=why)


def get_backend(name: str | None = None) -> Backend:
    """The backend ``choose_backend(name)`` picks; GpuUnavailable when that is a missing GPU."""
    choice = choose_backend(name)
    if choice.name == "unavailable":
        return gpu_backend()   # raises GpuUnavailable with CuPy's own reason
    return gpu_backend() if choice.name == "gpu" else cpu_backend()
