"""GPU status: devices live through NVML, recent images' backend and time, or why no GPU.

Each device's memory, utilization, temperature and power; which backend recent images used
and how long they took; without a GPU, plainly that imaging runs on the CPU, and why.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import pandas as pd
import panel as pn
import param

from pipeline.gpu_devices import GpuReading, ImagingBackend, imaging_backend, read_gpus
from views.base import StorePage

_CSS = """
.gpu-cards {display: flex; flex-wrap: wrap; gap: 10px;}
.gpu-card {border: 1px solid #dee2e6; border-left: 5px solid #76b900; border-radius: 6px;
  padding: 8px 14px; min-width: 260px; background: white;}
.gpu-card h4 {margin: 0 0 4px 0; font-size: 1.05em;}
.gpu-card .bar {height: 8px; background: #e9ecef; border-radius: 4px; margin: 2px 0 6px 0;}
.gpu-card .bar span {display: block; height: 8px; background: #76b900; border-radius: 4px;}
.gpu-card td {padding: 1px 8px 1px 0;}
.no-gpu {border-left: 5px solid #fd7e14; padding: 8px 14px; background: #fff8f0;}
"""


def _gib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**30:.1f} GiB"


def _fmt(v: float | None, spec: str, unit: str) -> str:
    return "—" if v is None else f"{format(v, spec)} {unit}"


def devices_html(reading: GpuReading, backend: ImagingBackend) -> str:
    """One card per device, or the plain no-GPU message with both reasons."""
    if not reading.devices:
        return (
            '<div class="no-gpu" data-gpus="0"><b>No GPU: imaging runs on the CPU '
            "(ducc0's wgridder).</b><br>"
            f"Imaging backend: <code>{html.escape(backend.name)}</code> — "
            f"{html.escape(backend.reason)}.<br>"
            f"NVML: {html.escape(reading.nvml_error or 'no devices')}.</div>")
    cards = []
    for d in reading.devices:
        used, total = d.memory_used_bytes, d.memory_total_bytes
        mem_pct = 100.0 * used / total if used is not None and total else 0.0
        util = d.utilization_pct or 0.0
        power = _fmt(d.power_w, ".0f", "W")
        if d.power_limit_w is not None:
            power += f" / {d.power_limit_w:.0f} W"
        cards.append(
            f'<div class="gpu-card" data-gpu="{d.index}"><h4>GPU {d.index}: '
            f"{html.escape(d.name)}</h4>"
            f"memory {_gib(used)} / {_gib(total)}"
            f'<div class="bar"><span style="width:{mem_pct:.0f}%"></span></div>'
            f"utilization {_fmt(d.utilization_pct, '.0f', '%')}"
            f'<div class="bar"><span style="width:{util:.0f}%"></span></div>'
            f"<table><tr><td>temperature</td><td>{_fmt(d.temperature_c, '.0f', '°C')}</td></tr>"
            f"<tr><td>power</td><td>{power}</td></tr></table></div>")
    head = (f"Imaging backend: <code>{html.escape(backend.name)}</code> — "
            f"{html.escape(backend.reason)} · driver {html.escape(reading.driver_version or '?')}")
    return (f'<div data-gpus="{len(reading.devices)}"><p>{head}</p>'
            f'<div class="gpu-cards">{"".join(cards)}</div></div>')


def recent_frame(recent: pd.DataFrame) -> pd.DataFrame:
    """Recent images as the page lists them."""
    return pd.DataFrame({
        "image": recent["id"], "observation": recent["observation_id"],
        "made (UTC)": recent["created_utc"], "backend": recent["backend"].fillna("?"),
        "time (s)": recent["duration_s"].round(2), "pixels": recent["npix"],
        "visibilities": recent["n_vis"]})


def backend_summary(recent: pd.DataFrame) -> str:
    """Images per backend among the recent ones and their median time."""
    if recent.empty:
        return "No images yet."
    parts = []
    for name, group in recent.groupby(recent["backend"].fillna("?"), sort=True):
        med = group["duration_s"].median()
        timing = "" if pd.isna(med) else f", median {med:.1f} s"
        parts.append(f"**{name}**: {len(group)} image(s){timing}")
    return f"Last {len(recent)} images — " + " · ".join(parts)


class GpuPage(StorePage):
    """Devices read live through NVML and the backend each recent image used."""

    period_ms = param.Integer(default=2000, bounds=(250, None), doc="Device refresh period.")
    recent = param.Integer(default=50, bounds=(1, 1000), doc="How many recent images.")
    reader = param.Callable(default=read_gpus, doc="Reads the devices (NVML by default).")
    backend_setting = param.Selector(default="auto", objects=["auto", "cpu", "gpu"],
                                     doc="[imaging] backend, which the page's answer follows.")
    live_period_ms = 2000

    def _build(self) -> pn.viewable.Viewable:
        self._devices = pn.pane.HTML(stylesheets=[_CSS], sizing_mode="stretch_width",
                                     css_classes=["gpu-devices"])
        self._summary = pn.pane.Markdown(css_classes=["backend-summary"])
        self._table = pn.widgets.Tabulator(
            recent_frame(self.store.recent_images(limit=0)), disabled=True, show_index=False,
            pagination="local", page_size=15, sizing_mode="stretch_width",
            css_classes=["recent-images"])
        self._refresh_devices()
        self._refresh_store()
        self._start_polling(self._refresh_devices)
        return pn.Column(
            pn.pane.Markdown("## GPU status"), self._devices,
            pn.pane.Markdown("### Recent images: backend and time"), self._summary,
            self._table, sizing_mode="stretch_width")

    def _start_polling(self, refresh: Callable[[], None]) -> None:
        # NVML is polled per session on its own IO loop: a figure that nobody watches is
        # never read, and a closed tab stops its callback.
        if pn.state.curdoc is None or pn.state.curdoc.session_context is None:
            return  # a notebook without a server: refresh on demand
        cb = pn.state.add_periodic_callback(refresh, period=self.period_ms)
        pn.state.on_session_destroyed(lambda *_: cb.stop())

    def _refresh_devices(self) -> None:
        text = devices_html(self.reader(), imaging_backend(self.backend_setting))
        if text != self._devices.object:
            self._devices.object = text

    def _refresh_store(self) -> None:
        recent = self.store.recent_images(limit=self.recent)
        self._summary.object = backend_summary(recent)
        frame = recent_frame(recent)
        if not frame.equals(self._table.value):
            self._table.value = frame
