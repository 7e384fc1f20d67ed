"""The array backend picks NumPy here and CuPy where a GPU answers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.backend import GpuUnavailable, choose_backend, get_backend, gpu_status

HAVE_GPU = gpu_status()[0]
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no GPU: {gpu_status()[1]}")


def test_cpu_is_numpy(monkeypatch):
    monkeypatch.setenv("CONTIMG_BACKEND", "cpu")
    b = get_backend()
    assert b.name == "cpu" and b.xp is np
    a = b.asarray([1, 2, 3], dtype=np.float32)
    assert b.to_host(a * 2).tolist() == [2, 4, 6]


def test_auto_follows_the_machine(monkeypatch):
    monkeypatch.delenv("CONTIMG_BACKEND", raising=False)
    assert get_backend().name == ("gpu" if HAVE_GPU else "cpu")


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a GPU: the refusal cannot happen")
def test_forcing_gpu_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CONTIMG_BACKEND", "gpu")
    with pytest.raises(GpuUnavailable, match="GPU backend requested but unavailable"):
        get_backend()


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be cpu, gpu or auto, got 'tpu'"):
        get_backend("tpu")


@pytest.mark.gpu
@needs_gpu
def test_gpu_round_trip():
    b = get_backend("gpu")
    a = b.asarray(np.arange(4, dtype=np.float32))
    assert type(b.to_host(a)) is np.ndarray
    # cuFFT's round trip is exact only to rounding (float32: ~1e-7 of the largest value)
    np.testing.assert_allclose(b.to_host(b.xp.fft.ifft(b.xp.fft.fft(a)).real), np.arange(4),
                               rtol=0, atol=1e-5)


def test_process_settings_leave_one_blas_thread_and_keep_freed_blocks():
    """configure_process (run by the suite's configure hook, as by contimg's main)."""
    import platform

    from threadpoolctl import threadpool_info

    from pipeline.process_tuning import configure_process, keep_freed_memory

    configure_process()
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)
    if platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True


@pytest.mark.parametrize("setting", ["auto", "cpu", "gpu"])
@pytest.mark.parametrize("env", ["", "cpu", "gpu"])
def test_one_rule_picks_the_backend_for_image_ms_the_stage_and_the_gpu_page(monkeypatch,
                                                                            setting, env):
    """An explicit setting wins, else CONTIMG_BACKEND, else the machine; all callers agree."""
    from pipeline.gpu_devices import imaging_backend
    from pipeline.imaging.config import ImagingConfig

    monkeypatch.setenv("CONTIMG_BACKEND", env)
    asked = setting if setting != "auto" else (env or "auto")
    want = {"cpu": "cpu", "gpu": "gpu" if HAVE_GPU else "unavailable",
            "auto": "gpu" if HAVE_GPU else "cpu"}[asked]
    choice = choose_backend(setting)
    assert choice.name == want
    # the GPU page reports what imaging with that [imaging] backend will do
    assert imaging_backend(ImagingConfig(backend=setting).backend) == choice
    if want == "unavailable":
        with pytest.raises(GpuUnavailable, match="GPU backend requested but unavailable"):
            get_backend(setting)
        assert "imaging jobs will fail" in choice.reason
    else:
        assert get_backend(setting).name == want
    if asked == "cpu":
        source = f"CONTIMG_BACKEND={env}" if setting == "auto" else "backend = 'cpu'"
        assert source in choice.reason and "forces the CPU" in choice.reason


@pytest.mark.parametrize("setting, env, problem", [
    ("tpu", "", "backend must be cpu, gpu or auto, got 'tpu'"),
    ("auto", "tpu", "CONTIMG_BACKEND must be cpu, gpu or auto, got 'tpu'"),
])
def test_unknown_backend_names_are_refused(monkeypatch, setting, env, problem):
    monkeypatch.setenv("CONTIMG_BACKEND", env)
    with pytest.raises(ValueError, match=re.escape(problem)):
        choose_backend(setting)


def test_blas_stays_on_one_thread_when_the_stages_are_imported_after_configuring():
    """As `contimg process` does: configure first, import the stages (SciPy's BLAS) later."""
    import json
    import subprocess
    import sys

    code = ("import json; from pipeline.process_tuning import configure_process; "
            "configure_process(); import pipeline.jobs.default_stages; "
            "from threadpoolctl import threadpool_info; "
            "print(json.dumps([p['num_threads'] for p in threadpool_info() "
            "if p['user_api'] == 'blas']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(threads) >= 2  # NumPy's and SciPy's OpenBLAS
    assert threads == [1] * len(threads)
