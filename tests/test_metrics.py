"""/metrics and /api/health equal what the store holds."""

from __future__ import annotations

import json
import urllib.request

import pytest
from conftest import T0, ServedHome, add_observations
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import STAGE_DURATION_BOUNDS_S, metrics_registry
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store


def fill(store: Store, home, clock) -> None:
    """Known rows in every metric's table, jobs made by the real runner."""
    add_observations(store, 5)
    add_observations(store, 2, state="imaged", prefix="i-")
    add_observations(store, 1, state="complete", prefix="c-")

    def convert(ctx):
        clock.advance(7)  # a 7 s conversion as the store will time it
        if ctx.observation.id.endswith("05:00"):
            raise RuntimeError("truncated subband file")

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    Runner(store, home, reg, clock=clock, config=RunnerConfig(max_attempts=1, workers=1)).run_once()
    for i, rms in enumerate([3e-4, 8e-4, 4e-3]):
        store.add_image(observation_id=f"c-{i}", path=f"/img/{i}.fits", mid_mjd=61000.0,
                        now=T0, rms_jy=rms)
    store.add_alert(severity="critical", kind="test", message="disk full", now=T0)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def expected(store: Store) -> dict[tuple[str, tuple], float]:
    exp = {}
    for state, n in store.counts_by_state().items():
        exp[("contimg_observations", (("state", state),))] = n
    for state, n in store.jobs_by_state().items():
        exp[("contimg_jobs", (("state", state),))] = n
    counts = store.table_counts()
    exp[("contimg_images", ())] = counts["images"]
    exp[("contimg_sources", ())] = counts["sources"]
    exp[("contimg_photometry_rows", ())] = counts["photometry"]
    for stage, h in store.stage_duration_histogram(STAGE_DURATION_BOUNDS_S).items():
        exp[("contimg_stage_duration_seconds_count", (("stage", stage),))] = h.count
        exp[("contimg_stage_duration_seconds_sum", (("stage", stage),))] = h.total
    noise = store.image_noise_histogram([1e-3])
    exp[("contimg_image_noise_jy_count", ())] = noise.count
    exp[("contimg_image_noise_jy_sum", ())] = pytest.approx(noise.total)
    exp[("contimg_alerts_open", (("severity", "critical"),))] = 1
    return exp


def test_collector_figures_equal_the_store(store, home, clock):
    fill(store, home, clock)
    got = samples(generate_latest(metrics_registry(store, RunnerState())).decode())
    for key, value in expected(store).items():
        assert got[key] == value, key
    # The known rows, spelled out, so a store bug cannot hide behind itself.
    assert got[("contimg_observations", (("state", "converted"),))] == 4
    assert got[("contimg_observations", (("state", "failed"),))] == 1
    assert got[("contimg_jobs", (("state", "quarantined"),))] == 1
    assert got[("contimg_stage_duration_seconds_count", (("stage", "convert"),))] == 4
    assert got[("contimg_stage_duration_seconds_sum", (("stage", "convert"),))] == 28
    assert got[("contimg_stage_duration_seconds_bucket", (("le", "5.0"), ("stage", "convert")))] == 0
    assert got[("contimg_stage_duration_seconds_bucket", (("le", "10.0"), ("stage", "convert")))] == 4
    assert got[("contimg_image_noise_jy_bucket", (("le", "0.001"),))] == 2
    assert got[("contimg_image_noise_jy_bucket", (("le", "+Inf"),))] == 3
    assert got[("contimg_images", ())] == 3


def test_served_metrics_and_health_equal_the_store(home, clock):
    with Store.open(home) as store:
        fill(store, home, clock)
        exp = expected(store)
        counts = store.counts_by_state()
    served = ServedHome(home, "--paused")
    try:
        text = urllib.request.urlopen(served.url + "/metrics", timeout=10).read().decode()
        health = json.loads(urllib.request.urlopen(served.url + "/api/health", timeout=10).read())
    finally:
        assert served.stop() == 0
    got = samples(text)
    for key, value in exp.items():
        assert got[key] == value, key
    assert got[("contimg_scheduler_running", ())] == 1
    assert health["ok"] is True and health["scheduler_running"] is True
    assert health["counts"] == counts
    assert health["paused"] is True
