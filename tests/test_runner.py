"""The job runner on a real store: transitions, races, retries, quarantine, stale claims."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from conftest import add_observations

from pipeline.jobs.contract import StageResult
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STAGES, stage_spec

CONVERT = stage_spec("convert")


def all_stages(calls: list | None = None) -> StageRegistry:
    reg = StageRegistry()
    for spec in STAGES:
        def fn(ctx, name=spec.name):
            if calls is not None:
                calls.append((name, ctx.observation.id))
            ctx.progress(0.5)
            if name == "convert":
                return StageResult(ms_path=f"/ms/{ctx.observation.id}.ms")
            return None
        reg.register_stage(spec.name, fn)
    return reg


def test_observation_walks_every_state_to_complete(store, home, clock):
    ids = add_observations(store, 3)
    calls: list = []
    runner = Runner(store, home, all_stages(calls), clock=clock)
    outcomes = runner.run_once()
    assert outcomes == {"done": 12}
    assert store.counts_by_state()["complete"] == 3
    assert Counter(name for name, _ in calls) == {s.name: 3 for s in STAGES}
    assert store.observation(ids[0]).ms_path == f"/ms/{ids[0]}.ms"
    assert runner.state.counts["complete"] == 3
    assert store.jobs_by_state()["done"] == 12


def test_stage_without_function_waits(store, home, clock):
    add_observations(store, 2)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: None)
    runner = Runner(store, home, reg, clock=clock)
    runner.run_once()
    counts = store.counts_by_state()
    assert counts["converted"] == 2 and counts["calibrating"] == 0
    assert runner.state.registered_stages == ["convert"]


def test_unknown_stage_name_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'grid'"):
        StageRegistry().register_stage("grid", lambda ctx: None)


def test_two_threads_racing_for_one_job_exactly_one_wins(store, clock):
    for round_ in range(25):
        [obs] = add_observations(store, 1, prefix=f"r{round_}-")
        store.enqueue(CONVERT, now=clock())
        [job_id] = store.ready_jobs("convert", now=clock(), limit=10)
        barrier = threading.Barrier(2)
        results = []

        def claim(worker, barrier=barrier, results=results, job_id=job_id):
            barrier.wait()
            results.append(store.claim(job_id, CONVERT, worker=worker, now=clock()))

        threads = [threading.Thread(target=claim, args=(w,)) for w in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [c for c in results if c is not None]
        assert len(winners) == 1, results
        assert store.job(job_id)["claimed_by"] == winners[0].worker
        assert store.job(job_id)["attempts"] == 1
        assert store.observation(obs).state == "converting"


def test_two_runners_process_each_observation_exactly_once(store, home, clock):
    add_observations(store, 30)
    calls: list = []
    lock = threading.Lock()

    def convert(ctx):
        with lock:
            calls.append(ctx.observation.id)

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    runners = [Runner(store, home, reg, clock=clock, worker_id=w) for w in ("w1", "w2")]
    threads = [threading.Thread(target=r.run_once) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 30 and len(set(calls)) == 30
    assert store.counts_by_state()["converted"] == 30


def test_fails_twice_then_succeeds_with_exponential_backoff(store, home, clock):
    [obs] = add_observations(store, 1)
    attempts = []

    def flaky(ctx):
        attempts.append(ctx.attempt)
        if len(attempts) <= 2:
            raise OSError(f"subband file unreadable (attempt {ctx.attempt})")

    reg = StageRegistry()
    reg.register_stage("convert", flaky)
    config = RunnerConfig(backoff_base_s=60, max_attempts=3)
    runner = Runner(store, home, reg, config=config, clock=clock)

    t0 = clock()
    assert runner.run_once() == {"retry": 1}
    row = store.observation(obs)
    assert (row.state, row.attempts, row.next_try_utc) == ("pending", 1, t0 + timedelta(seconds=60))
    assert "unreadable (attempt 1)" in row.error
    assert runner.state.last_error.startswith(f"{obs} convert: OSError")

    clock.advance(59)
    assert runner.run_once() == {}  # still backing off
    clock.advance(1)
    t1 = clock()
    assert runner.run_once() == {"retry": 1}
    assert store.observation(obs).next_try_utc == t1 + timedelta(seconds=120)

    clock.advance(120)
    assert runner.run_once() == {"done": 1}
    assert attempts == [1, 2, 3]
    row = store.observation(obs)
    assert (row.state, row.error, row.attempts) == ("converted", None, 0)
    job = store.recent_jobs(limit=1).iloc[0]
    assert (job.state, job.attempts) == ("done", 3)


def test_backoff_is_capped():
    config = RunnerConfig(backoff_base_s=60, backoff_max_s=300)
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 300, 300]


def test_quarantine_after_max_attempts_then_operator_retry(store, home, clock):
    [obs] = add_observations(store, 1)
    fail = {"on": True}

    def convert(ctx):
        if fail["on"]:
            raise ValueError("NaN visibilities in sb03")

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    runner = Runner(store, home, reg, clock=clock,
                    config=RunnerConfig(backoff_base_s=10, max_attempts=2))
    runner.run_once()
    clock.advance(10)
    assert runner.run_once() == {"quarantined": 1}
    row = store.observation(obs)
    assert (row.state, row.quarantined) == ("failed", True)
    assert "NaN visibilities" in row.error
    alerts = store.recent_alerts()
    assert list(alerts.kind) == ["quarantined"] and list(alerts.subject) == [obs]
    clock.advance(10_000)
    assert runner.run_once() == {}  # quarantined jobs are never retried on their own

    fail["on"] = False
    assert store.retry_observation(obs, now=clock())
    assert not store.retry_observation(obs, now=clock())  # no longer failed
    assert runner.run_once() == {"done": 1}
    assert store.observation(obs).state == "converted"


def test_stale_claim_goes_back_to_the_queue(store, home, clock):
    [obs] = add_observations(store, 1)
    store.enqueue(CONVERT, now=clock())
    [job_id] = store.ready_jobs("convert", now=clock(), limit=1)
    dead = store.claim(job_id, CONVERT, worker="crashed-host:1", now=clock())
    assert dead is not None and store.observation(obs).state == "converting"

    calls = []
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: calls.append(ctx.attempt))
    config = RunnerConfig(stale_after_s=120, heartbeat_s=10)
    runner = Runner(store, home, reg, clock=clock, config=config)

    clock.advance(60)
    assert runner.recover_stale() == []  # heartbeat still within the lease
    clock.advance(61)
    assert runner.recover_stale() == [job_id]
    assert store.observation(obs).state == "pending"
    assert runner.run_once() == {"done": 1}
    assert calls == [2]  # the crashed attempt counts
    # The dead worker's late report is refused: nothing is processed twice.
    assert not store.finish(dead, CONVERT, now=clock())
    assert store.observation(obs).state == "converted"


def test_heartbeat_keeps_a_live_claim(store, home, clock):
    add_observations(store, 1)
    store.enqueue(CONVERT, now=clock())
    [job_id] = store.ready_jobs("convert", now=clock(), limit=1)
    claim = store.claim(job_id, CONVERT, worker="alive", now=clock())
    clock.advance(100)
    store.heartbeat([claim], now=clock())
    clock.advance(100)
    runner = Runner(store, home, StageRegistry(), clock=clock,
                    config=RunnerConfig(stale_after_s=120))
    assert runner.recover_stale() == []
    assert store.job(job_id)["state"] == "running"


def test_background_scheduler_runs_jobs_and_publishes_progress(store, home):
    add_observations(store, 4)
    release = threading.Event()
    seen_running = threading.Event()

    def convert(ctx):
        ctx.progress(0.25)
        seen_running.set()
        release.wait(20)
        ctx.progress(1.0)

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    runner = Runner(store, home, reg, config=RunnerConfig(poll_s=0.05, workers=2))
    progress_seen = []
    runner.state.param.watch(lambda e: progress_seen.extend(r["progress"] for r in e.new),
                             "running")
    runner.start()
    try:
        assert seen_running.wait(20)
        assert runner.state.scheduler_running
        assert 0.25 in progress_seen
        assert store.counts_by_state()["converting"] <= 2  # two workers
        release.set()
        deadline = threading.Event()
        for _ in range(400):
            if store.counts_by_state()["converted"] == 4:
                break
            deadline.wait(0.05)
        assert store.counts_by_state()["converted"] == 4
    finally:
        release.set()
        runner.stop()
    assert not runner.state.scheduler_running


def test_paused_runner_claims_nothing(store, home):
    add_observations(store, 2)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: None)
    runner = Runner(store, home, reg, state=RunnerState(paused=True),
                    config=RunnerConfig(poll_s=0.02))
    runner.start()
    try:
        for _ in range(1000):  # until several ticks ran while paused
            if runner.ticks >= 5:
                break
            threading.Event().wait(0.02)
        assert runner.ticks >= 5
        assert runner.state.scheduler_running
        assert store.counts_by_state()["pending"] == 2
        assert store.jobs_by_state()["running"] == 0 and store.recent_jobs().empty
        runner.state.paused = False
        for _ in range(500):
            if store.counts_by_state()["converted"] == 2:
                break
            threading.Event().wait(0.02)
        assert store.counts_by_state()["converted"] == 2
    finally:
        runner.stop()


@pytest.mark.parametrize("kwargs, problem", [
    ({"workers": 0}, "workers must be at least 1"),
    ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ({"stale_after_s": 5, "heartbeat_s": 10}, "stale_after_s must exceed"),
])
def test_bad_runner_config(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        RunnerConfig(**kwargs)


def test_stage_result_updates_observation_columns(store, home, clock):
    [obs] = add_observations(store, 1)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: StageResult(
        ms_path="/ms/a.ms", updates={"freq_min_hz": 1.3114e9, "n_channels": 768}))
    Runner(store, home, reg, clock=clock).run_once()
    row = store.observations().iloc[0]
    assert (row.state, row.ms_path) == ("converted", "/ms/a.ms")
    assert store.observation(obs).state == "converted"


def test_stage_result_cannot_set_other_columns(store, home, clock):
    add_observations(store, 1)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: StageResult(updates={"state": "complete"}))
    Runner(store, home, reg, clock=clock, config=RunnerConfig(max_attempts=1)).run_once()
    row = store.observations().iloc[0]
    assert row.state == "failed"
    assert "cannot set observation columns ['state']" in row.error


def test_stage_that_cannot_start_yet_waits_without_spending_attempts(store, home, clock):
    from pipeline.jobs.contract import StageWait
    [obs] = add_observations(store, 1, state="converted")
    tables: list[str] = []

    def prepare(store_, observation, now):
        if not tables:
            raise StageWait("no calibration", retry_after_s=300)
        return {"table": tables[0]}

    seen = []
    reg = StageRegistry()
    reg.register_stage("calibrate", lambda ctx: seen.append(ctx.inputs["table"]),
                       prepare=prepare)
    runner = Runner(store, home, reg, clock=clock, config=RunnerConfig(max_attempts=1))
    for _ in range(3):  # waiting again and again never quarantines
        assert runner.run_once() == {"waiting": 1}
        row = store.observation(obs)
        assert (row.state, row.error, row.attempts) == ("converted", "no calibration", 0)
        assert runner.run_once() == {}  # not before retry_after_s
        clock.advance(300)
    tables.append("/cal/3C48.G")
    assert runner.run_once() == {"done": 1}
    assert seen == ["/cal/3C48.G"]
    assert store.observation(obs).state == "calibrated"


def test_record_hook_runs_in_the_server_with_the_result(store, home, clock):
    [obs] = add_observations(store, 1)
    recorded = []
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: StageResult(payload={"rows": 42}),
                       record=lambda s, o, result, now: recorded.append((o.id, result.payload)))
    Runner(store, home, reg, clock=clock).run_once()
    assert recorded == [(obs, {"rows": 42})]


def test_wake_up_while_a_job_decides_to_wait_is_not_lost(store, home, clock):
    """A calibrator solves (and wakes the waiters) after another job found no table but
    before that job's wait is recorded: the waiter must still be woken, not sleep 300 s."""
    from pipeline.jobs.contract import StageWait
    waiter, solver = add_observations(store, 2, state="converted")
    tables: list[str] = []
    waiter_checked, solved = threading.Event(), threading.Event()
    ran: list[str] = []

    def prepare(store_, observation, now):
        if observation.id == solver:
            assert waiter_checked.wait(10)  # solve only once the waiter has looked
            return {}
        if not tables:
            waiter_checked.set()
            assert solved.wait(10)  # ...and let the waiter record its wait after the wake
            raise StageWait("no calibration", retry_after_s=300)
        return {}

    def calibrate(ctx):
        ran.append(ctx.observation.id)

    def record(store_, observation, result, now):
        if observation.id == solver:
            tables.append("/cal/3C286.G")
            store_.wake_waiting("calibrate", now)
            solved.set()

    reg = StageRegistry()
    reg.register_stage("calibrate", calibrate, prepare=prepare, record=record)
    runner = Runner(store, home, reg, clock=clock, config=RunnerConfig(workers=2))
    outcomes = runner.run_once(parallel=True)
    assert outcomes == {"done": 2, "waiting": 1}
    assert {store.observation(o).state for o in (waiter, solver)} == {"calibrated"}
    assert sorted(ran) == sorted([waiter, solver])


def test_run_once_runs_as_many_jobs_at_once_as_it_has_workers(store, home, clock):
    add_observations(store, 2)
    both_running = threading.Barrier(2, timeout=10)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: both_running.wait() and None)
    runner = Runner(store, home, reg, clock=clock, config=RunnerConfig(workers=2))
    # With one job at a time the barrier would break after 10 s and both jobs would fail.
    assert runner.run_once(parallel=True) == {"done": 2}
    assert store.counts_by_state()["converted"] == 2


def test_stop_while_a_tick_hands_out_a_job_does_not_hang(store, home):
    """APScheduler's shutdown holds the job-store lock while it waits for running jobs; a
    tick inside add_job then waited for that lock for ever (seen: `serve` hung on exit)."""
    add_observations(store, 1)
    reg = StageRegistry()
    reg.register_stage("convert", lambda ctx: None)
    runner = Runner(store, home, reg, config=RunnerConfig(poll_s=0.05, heartbeat_s=0.5,
                                                          stale_after_s=5))
    claiming, stop_called = threading.Event(), threading.Event()
    claim_ready = runner.claim_ready

    def slow_claim_ready(slots):
        claims = claim_ready(slots)
        if claims:
            claiming.set()
            stop_called.wait(10)
            time.sleep(0.5)  # let stop() reach the shutdown, as it did when it hung
        return claims

    runner.claim_ready = slow_claim_ready
    runner.start()
    assert claiming.wait(20), "no tick claimed the job"
    stopper = threading.Thread(target=runner.stop, daemon=True)
    stopper.start()
    stop_called.set()
    stopper.join(30)
    assert not stopper.is_alive(), "Runner.stop hung behind a tick"
    assert not runner.is_running
