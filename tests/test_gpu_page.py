"""GPU status: NVML readings (or the reason there are none) and the page in Chromium."""

from __future__ import annotations

import pytest
from conftest import ServedHome
from image_factory import SPECS, make_images
from playwright.sync_api import expect

from pipeline.backend import gpu_status
from pipeline.gpu_devices import GpuDevice, GpuReading, imaging_backend, read_gpus
from pipeline.home import Home
from pipeline.store import Store
from views.gpu_page import backend_summary, devices_html

READING = read_gpus()
needs_nvml_device = pytest.mark.skipif(not READING.ok,
                                       reason=f"no NVIDIA device: {READING.nvml_error}")


def test_reading_is_devices_or_a_reason():
    reading = read_gpus()
    assert isinstance(reading, GpuReading)
    if reading.devices:
        assert reading.nvml_error is None
    else:
        assert reading.nvml_error and "NVML" in reading.nvml_error
        assert not reading.ok


@pytest.mark.gpu
@needs_nvml_device
def test_nvml_records_are_well_formed():
    for i, d in enumerate(READING.devices):
        assert d.index == i and d.name
        assert 0 < d.memory_total_bytes and 0 <= d.memory_used_bytes <= d.memory_total_bytes
        assert 0 <= d.utilization_pct <= 100
        assert d.temperature_c is None or 0 < d.temperature_c < 120
        assert d.power_w is None or 0 < d.power_w < 2000
    assert READING.driver_version


@pytest.mark.skipif(READING.ok, reason="this machine has an NVIDIA device")
def test_without_gpu_the_message_says_cpu_and_why():
    text = devices_html(READING, imaging_backend())
    assert "No GPU: imaging runs on the CPU" in text
    assert READING.nvml_error in text
    assert gpu_status()[1] in text


def test_device_cards_show_every_figure():
    reading = GpuReading(driver_version="550.54", nvml_error=None, devices=(
        GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-1",
                  memory_used_bytes=3 * 2**30, memory_total_bytes=80 * 2**30,
                  utilization_pct=42.0, memory_utilization_pct=10.0, temperature_c=51.0,
                  power_w=180.4, power_limit_w=700.0),
        GpuDevice(index=1, name="Board <without> power", uuid=None, memory_used_bytes=None,
                  memory_total_bytes=None, utilization_pct=None, memory_utilization_pct=None,
                  temperature_c=None, power_w=None, power_limit_w=None)))
    text = devices_html(reading, imaging_backend())
    assert 'data-gpus="2"' in text
    for figure in ("3.0 GiB / 80.0 GiB", "42 %", "51 °C", "180 W / 700 W", "driver 550.54",
                   "Board &lt;without&gt; power"):
        assert figure in text, figure
    assert text.count("—") >= 4  # the second board's unsupported figures


@pytest.mark.parametrize("env, name, words", [
    ("cpu", "cpu", "CONTIMG_BACKEND=cpu forces the CPU"),
    ("", "gpu" if gpu_status()[0] else "cpu", gpu_status()[1].split(" (")[0]),
    ("gpu", "gpu" if gpu_status()[0] else "unavailable",
     "CuPy sees" if gpu_status()[0] else "imaging jobs will fail"),
])
def test_imaging_backend_follows_the_environment(monkeypatch, env, name, words):
    monkeypatch.setenv("CONTIMG_BACKEND", env)
    chosen = imaging_backend()
    assert chosen.name == name and words in chosen.reason


def test_backend_summary_counts_and_medians(tmp_path):
    with Store.open(tmp_path / "home") as store:
        assert backend_summary(store.recent_images()) == "No images yet."
        make_images(store, tmp_path / "img", SPECS[:3])
        text = backend_summary(store.recent_images())
    assert "**cpu**: 2 image(s), median 2.5 s" in text      # 1.5 s and 3.5 s
    assert "**gpu**: 1 image(s), median 2.5 s" in text


@pytest.mark.ui
def test_page_says_cpu_without_gpu_and_lists_recent_images(tmp_path, page):
    home = Home.resolve(tmp_path / "home")
    with Store.open(home) as store:
        make_images(store, home.images, SPECS)
    server = ServedHome(home, "--paused")
    try:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        server.sign_in(page)
        page.goto(server.url + "/gpu")
        devices = page.locator(".gpu-devices")
        if READING.ok:
            expect(devices.locator(".gpu-card")).to_have_count(len(READING.devices))
        else:
            expect(devices).to_contain_text("No GPU: imaging runs on the CPU")
            expect(devices).to_contain_text(READING.nvml_error)
        rows = page.locator(".recent-images .tabulator-row")
        expect(rows).to_have_count(len(SPECS))
        backends = rows.locator('[tabulator-field="backend"]').all_inner_texts()
        assert backends == [s.backend for s in reversed(SPECS)]
        expect(page.locator(".backend-summary")).to_contain_text("gpu: 1 image(s)")
        outside = [u for u in requests if not u.startswith((server.url, "data:", "blob:"))]
        assert outside == []
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(("setting", "words"), [
    ("cpu", "forces the CPU"),
    ("gpu", "asks for the GPU"),
])
def test_the_served_page_follows_the_imaging_setting(tmp_path, monkeypatch, setting, words):
    from pipeline.imaging.config import ImagingConfig
    from pipeline.jobs.runner_state import RunnerState
    from pipeline.settings import Settings
    from views.pages import PAGES

    if setting == "gpu" and gpu_status()[0]:
        words = "CuPy sees"
    monkeypatch.delenv("CONTIMG_BACKEND", raising=False)
    spec = next(p for p in PAGES if p.slug == "gpu")
    with Store.open(Home.resolve(tmp_path / "home")) as store:
        view = spec.build(store, RunnerState(),
                          Settings(imaging=ImagingConfig(backend=setting)))
        view.__panel__()
        assert view.backend_setting == setting
        assert words in view._devices.object
        default = spec.build(store, RunnerState(), Settings())
        default.__panel__()
        assert "the setting backend" not in default._devices.object
