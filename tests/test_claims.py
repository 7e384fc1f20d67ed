"""Claims held to the end: a lost claim records nothing, a live job keeps beating.

A job is requeued when its heartbeat stops; the attempt that lost it may still be running
and must neither write its result nor share temporary files with the attempt that took
over. Real store, real runner, real Measurement Sets.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from casacore.tables import table
from conftest import add_observations
from uvh5_factory import NAME_FORMAT, write_chunk

from pipeline.convert.stage import convert_group, ms_paths
from pipeline.jobs.contract import StageResult, StageWait
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.jobs.scratch import attempt_path, sweep_dead, temp_paths
from pipeline.jobs.states import STAGES, stage_spec
from pipeline.photometry.stage import MeasureOutcome, record_measure
from pipeline.store.photometry import NEW_SOURCE_COLUMNS, PHOTOMETRY_FRAME_COLUMNS

MEASURE = stage_spec("measure")
CONVERT = stage_spec("convert")
LEASE = RunnerConfig(stale_after_s=120, heartbeat_s=10)


def wait_for(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.02)


def detections(attempt: int, n: int = 3) -> pd.DataFrame:
    """``n`` new-source candidates, named after the attempt that found them."""
    return pd.DataFrame({"name": [f"CTG test a{attempt}-{i}" for i in range(n)],
                         "ra_deg": [150.0 + 0.1 * i for i in range(n)], "dec_deg": 33.0,
                         "flux_jy": 0.05, "flux_err_jy": 0.002, "snr": 25.0,
                         "local_rms_jy": 0.002, "pb": 0.9}, columns=list(NEW_SOURCE_COLUMNS))


def measured(attempt: int) -> StageResult:
    rows = pd.DataFrame({c: [] for c in PHOTOMETRY_FRAME_COLUMNS})
    return StageResult(payload=MeasureOutcome(image_id=7, mjd=61000.0, rows=rows,
                                              new_sources=detections(attempt), n_islands=3))


def product_rows(store) -> dict[str, int]:
    return store._cur.execute(
        "SELECT (SELECT count(*) FROM sources WHERE origin = 'detected'), "
        "(SELECT count(*) FROM photometry), (SELECT count(*) FROM photometry_runs), "
        "(SELECT count(*) FROM alerts)").fetchone()


# ------------------------------------------------------------ a claim lost mid-attempt
def test_a_claim_taken_over_by_another_worker_records_nothing(store, home, clock):
    [obs] = add_observations(store, 1, state="imaged")
    reg = StageRegistry()
    first = Runner(store, home, reg, clock=clock, config=LEASE, worker_id="w1")
    other = Runner(store, home, reg, clock=clock, config=LEASE, worker_id="w2")
    taken_over = []

    def measure(ctx):
        if ctx.attempt == 1:
            clock.advance(121)  # this attempt stalls past its lease; w2 requeues and measures
            taken_over.append(other.run_once())
        return measured(ctx.attempt)

    reg.register_stage("measure", measure, record=record_measure)
    assert first.run_once() == {"lost": 1}
    assert taken_over == [{"done": 1}]
    # Only the second attempt's detections: the first's would have been added again as new.
    names = store._df("SELECT name FROM sources WHERE origin = 'detected' ORDER BY name").name
    assert list(names) == list(detections(2).name)
    assert product_rows(store) == (3, 3, 1, 3)
    [job] = store.recent_jobs().itertuples()
    assert (job.state, job.attempts, job.claimed_by) == ("done", 2, "w2")
    assert store.observation(obs).state == "complete"


def test_a_claim_taken_by_a_later_attempt_of_the_same_worker_records_nothing(store, home,
                                                                               clock):
    [obs] = add_observations(store, 1, state="imaged")
    reg = StageRegistry()
    runner = Runner(store, home, reg, clock=clock, config=LEASE, worker_id="w1")
    later = []

    def measure(ctx):
        clock.advance(121)  # starved of heartbeats, requeued by its own worker's tick
        [job_id] = runner.recover_stale()
        later.append(store.claim(job_id, MEASURE, worker="w1", now=clock()))
        return measured(ctx.attempt)

    reg.register_stage("measure", measure, record=record_measure)
    assert runner.run_once() == {"lost": 1}
    assert later[0] is not None and later[0].attempts == 2
    assert product_rows(store) == (0, 0, 0, 0)
    job = store.job(later[0].job_id)
    assert (job["state"], job["attempts"], job["claimed_by"]) == ("running", 2, "w1")
    assert store.observation(obs).state == "measuring"
    # The old attempt's report is refused even though the worker id matches.
    stale = type(later[0])(**{**later[0].__dict__, "attempts": 1})
    assert not store.finish(stale, MEASURE, now=clock())
    assert store.fail(stale, MEASURE, error="x", now=clock(), retry_at=None) is None


def test_a_job_being_recorded_is_not_requeued(store, home, clock):
    [obs] = add_observations(store, 1)
    requeued = []

    def record(store_, observation, result, now):
        store_.add_alert(severity="info", kind="recorded", message="rows", now=now)
        # Another thread's tick sees the lease expired while the record is being written.
        t = threading.Thread(target=lambda: requeued.append(store.requeue_stale(
            STAGES, stale_before=now + timedelta(days=1), now=now)))
        t.start()
        t.join()

    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: StageResult(ms_path="/ms/a.ms"), record=record)
    assert Runner(store, home, reg, clock=clock).run_once() == {"done": 1}
    assert requeued == [[]]
    assert store.observation(obs).state == "converted"
    assert list(store.recent_alerts().kind) == ["recorded"]


def test_a_record_that_fails_leaves_nothing_and_one_that_waits_keeps_its_rows(store, home,
                                                                                clock):
    [failing, waiting] = add_observations(store, 2)

    def record(store_, observation, result, now):
        store_.add_alert(severity="info", kind="solve", subject=observation.id, message="m",
                         now=now)
        if observation.id == failing:
            raise ValueError("caltable QA figures are NaN")
        raise StageWait("no calibration", retry_after_s=300)

    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: None, record=record)
    runner = Runner(store, home, reg, clock=clock)
    assert runner.run_once() == {"retry": 1, "waiting": 1}
    alerts = store.recent_alerts()
    assert list(alerts.subject) == [waiting]  # the failed record's alert was rolled back
    assert "caltable QA figures are NaN" in store.observation(failing).error
    assert store.observation(waiting).error == "no calibration"


# ------------------------------------------------------------ the heartbeat's own thread
def test_heartbeat_keeps_beating_while_the_default_pool_is_saturated(store, home):
    [obs] = add_observations(store, 1)
    running, release_job, release_tasks = threading.Event(), threading.Event(), threading.Event()
    hogging: set[str] = set()
    lock = threading.Lock()

    def convert(ctx):
        running.set()
        release_job.wait(60)

    def hog(name):
        def task(ctx):  # an ingest reading whole files, the nightly re-sort
            if running.is_set() and not release_tasks.is_set():
                with lock:
                    hogging.add(name)
                release_tasks.wait(60)
        return task

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    for name in ("ingest", "resort"):  # as many as the default pool has threads
        reg.register_task(name, hog(name), every_s=0.05)
    config = RunnerConfig(poll_s=0.05, heartbeat_s=0.05, stale_after_s=2.0, workers=1)
    lease = timedelta(seconds=config.stale_after_s)
    runner = Runner(store, home, reg, config=config)
    runner.start()
    try:
        assert running.wait(30)
        wait_for(lambda: len(hogging) == 2)
        [job_id] = store.recent_jobs().id
        saturated_beat = store.job(job_id)["heartbeat_utc"]
        # Beats go on for longer than a lease while the pool is held by the two tasks.
        wait_for(lambda: store.job(job_id)["heartbeat_utc"] > saturated_beat + 1.5 * lease,
                 timeout=20)
        ticks = runner.ticks
        release_tasks.set()
        wait_for(lambda: runner.ticks >= ticks + 3)  # ticks that would requeue a starved job
        job = store.job(job_id)
        assert (job["state"], job["attempts"], job["claimed_by"]) == (
            "running", 1, runner.worker_id)
        release_job.set()
        wait_for(lambda: store.observation(obs).state == "converted")
        assert store.job(job_id)["attempts"] == 1
    finally:
        release_tasks.set()
        release_job.set()
        runner.stop()
    assert runner._heartbeat_thread is None


# -------------------------------------------------------- temporary paths per attempt
def test_two_attempts_get_their_own_temporary_paths_and_a_sweep_keeps_both(tmp_path):
    final = tmp_path / "obs.ms"
    with attempt_path(final) as a, attempt_path(final) as b:
        assert a != b and a.name.startswith(".tmp-obs.ms.") and b.name.startswith(".tmp-obs.ms.")
        a.mkdir()
        b.write_bytes(b"half")
        assert sweep_dead(final) == [] and a.exists() and b.exists()
        assert temp_paths(final) == sorted([a, b])
        a.rename(final)
    assert final.is_dir() and list(tmp_path.iterdir()) == [final]  # b and both locks gone


def test_a_sweep_removes_what_a_killed_attempt_left(tmp_path):
    final = tmp_path / "obs.ms"
    legacy = tmp_path / ".tmp-obs.ms"  # the shared name of earlier versions
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from pipeline.jobs.scratch import attempt_path\n"
         f"with attempt_path(Path({str(final)!r})) as t:\n"
         "    t.mkdir(); (t / 'table.f0').write_bytes(b'x'); print(t, flush=True); "
         "time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        held = Path(child.stdout.readline().strip())
        legacy.mkdir()
        assert held.exists()
        assert sweep_dead(final) == [legacy]  # the live writer's path is kept
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert sweep_dead(final) == [held]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def chunk_master(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("claims-chunk")
    start = datetime(2026, 11, 23, 12, 0, 0)
    write_chunk(root, start, n_ant=6, n_chan=3, n_times=4, dec_deg=33.0, seed=4)
    return root, start.strftime(NAME_FORMAT)


def test_a_requeued_conversion_leaves_the_first_attempts_files_alone(chunk_master, tmp_path):
    master, obs_id = chunk_master
    files = sorted(Path(p) for p in shutil.copytree(master, tmp_path / "in").glob("*.hdf5"))
    ms_dir = tmp_path / "ms"
    ms_dir.mkdir()
    final, _ = ms_paths(ms_dir, obs_id)
    writing, resume = threading.Event(), threading.Event()
    first: dict[str, object] = {}

    def stalls_mid_write(fraction):
        if 0.1 < fraction < 1.0 and not writing.is_set():
            writing.set()
            resume.wait(60)

    def first_attempt():
        try:
            first["result"] = convert_group(files, ms_dir=ms_dir, obs_id=obs_id,
                                            progress=stalls_mid_write)
        except Exception as exc:  # noqa: BLE001 — the test inspects it
            first["error"] = exc

    thread = threading.Thread(target=first_attempt)
    thread.start()
    try:
        assert writing.wait(60)
        [first_tmp] = [p for p in ms_dir.glob(".tmp-*") if not p.name.endswith(".lock")]
        second = convert_group(files, ms_dir=ms_dir, obs_id=obs_id)  # the requeued attempt
        assert first_tmp.exists()  # still the first attempt's, half-written
        assert not second.reused and final.is_dir()
    finally:
        resume.set()
        thread.join(60)
    # The first attempt finds a complete MS in place: its rename is refused, its files go.
    assert isinstance(first.get("error"), OSError), first
    assert sorted(p.name for p in ms_dir.iterdir()) == [final.name]
    with table(str(final), ack=False) as ms:
        assert ms.nrows() == 21 * 4  # 6 antennas' baselines with autos, 4 integrations
