"""What the GPUs are doing, read through NVML (nvidia-ml-py), and which backend imaging uses.

``read_gpus`` never raises for a missing driver or library: a host without a GPU is a
normal state that the status page reports, with NVML's own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pipeline.backend import BackendChoice, choose_backend

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class GpuDevice:
    """One device as NVML reports it; a figure the device does not support is None."""

    index: int
    name: str
    uuid: str | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_pct: float | None      # GPU (SM) busy over NVML's last sample period
    memory_utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None


@dataclass(frozen=True, kw_only=True)
class GpuReading:
    """Every device NVML sees, or the reason it sees none."""

    devices: tuple[GpuDevice, ...]
    driver_version: str | None
    nvml_error: str | None    # None when NVML initialised

    @property
    def ok(self) -> bool:
        """True when NVML answered and reported at least one device."""
        return self.nvml_error is None and bool(self.devices)


#: Which array backend imaging will use here, and why ("unavailable": GPU forced, unusable).
ImagingBackend = BackendChoice


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _maybe(fn: Callable[[], T]) -> T | None:
    """A figure some devices do not support (power on some boards, NVML_ERROR_NOT_SUPPORTED)."""
    import pynvml  # noqa: PLC0415
    try:
        return fn()
    except pynvml.NVMLError:
        return None


def _device(pynvml, index: int) -> GpuDevice:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    mem = _maybe(lambda: pynvml.nvmlDeviceGetMemoryInfo(h))
    util = _maybe(lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
    power_mw = _maybe(lambda: pynvml.nvmlDeviceGetPowerUsage(h))
    limit_mw = _maybe(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h))
    temp = _maybe(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
    uuid = _maybe(lambda: pynvml.nvmlDeviceGetUUID(h))
    return GpuDevice(
        index=index, name=_text(pynvml.nvmlDeviceGetName(h)),
        uuid=None if uuid is None else _text(uuid),
        memory_used_bytes=None if mem is None else int(mem.used),
        memory_total_bytes=None if mem is None else int(mem.total),
        utilization_pct=None if util is None else float(util.gpu),
        memory_utilization_pct=None if util is None else float(util.memory),
        temperature_c=None if temp is None else float(temp),
        power_w=None if power_mw is None else power_mw / 1000.0,
        power_limit_w=None if limit_mw is None else limit_mw / 1000.0)


def read_gpus() -> GpuReading:
    """Read every NVIDIA device through NVML; NVML's error as text when it cannot."""
    try:
        import pynvml  # noqa: PLC0415
    except ImportError as exc:
        return GpuReading(devices=(), driver_version=None,
                          nvml_error=f"nvidia-ml-py is not installed ({exc.name})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuReading(devices=(), driver_version=None,
                          nvml_error=f"NVML could not start: {exc}")
    try:
        driver = _maybe(lambda: _text(pynvml.nvmlSystemGetDriverVersion()))
        n = pynvml.nvmlDeviceGetCount()
        devices = tuple(_device(pynvml, i) for i in range(n))
    except pynvml.NVMLError as exc:
        return GpuReading(devices=(), driver_version=None,
                          nvml_error=f"NVML failed while reading devices: {exc}")
    finally:
        pynvml.nvmlShutdown()  # NVML counts init/shutdown pairs; each reading is one
    return GpuReading(devices=devices, driver_version=driver,
                      nvml_error=None if devices else "NVML reports no devices")


def imaging_backend(setting: str = "auto") -> ImagingBackend:
    """The backend imaging with ``[imaging] backend = setting`` uses on this host, and why.

    The same rule as ``image_ms`` (``pipeline.backend.choose_backend``).
    """
    return choose_backend(setting)
