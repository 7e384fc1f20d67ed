"""The job runner: moves observations through the stages on APScheduler's thread pool.

Stage functions are registered by name in a StageRegistry; a stage with no function
registered simply waits. The runner claims jobs through the store (one transaction per
transition), renews its claims from a heartbeat thread of its own (so periodic tasks
filling the scheduler's pool never starve it), records a result and finishes its job in
one transaction under a claim still held, retries failures with exponential backoff and
quarantines a job after ``max_attempts``. Progress goes to a RunnerState that views watch.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from pipeline.clock import utcnow
from pipeline.home import Home
from pipeline.jobs.contract import (
    AfterRecordFn,
    InputsFn,
    Observation,
    PrepareFn,
    RecordFn,
    StageContext,
    StageFn,
    StageResult,
    StageWait,
    TaskContext,
    TaskFn,
)
from pipeline.jobs.runner_config import RunnerConfig
from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STAGES, StageSpec, stage_spec
from pipeline.store import Claim, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PeriodicTask:
    """A function the scheduler runs every ``every_s`` seconds in the server process."""

    name: str
    every_s: float
    fn: TaskFn


@dataclass(kw_only=True)
class StageRegistry:
    """Stage functions by stage name, and periodic tasks; later stages register here."""

    stages: dict[str, StageFn] = field(default_factory=dict)
    prepares: dict[str, PrepareFn] = field(default_factory=dict)
    records: dict[str, RecordFn] = field(default_factory=dict)
    tasks: dict[str, PeriodicTask] = field(default_factory=dict)
    #: run after every stage's prepare, each handed the inputs so far (reprocess overrides)
    input_hooks: list[InputsFn] = field(default_factory=list)
    #: run after every stage's record, in its transaction (provenance, reprocess runs)
    after_record: list[AfterRecordFn] = field(default_factory=list)
    #: run after a job is quarantined, (store, home, observation id, stage, error, now):
    #: a reprocess run's observation rolls back to its products from before the run
    on_quarantine: list[Callable[..., None]] = field(default_factory=list)

    def register_stage(self, name: str, fn: StageFn, *, prepare: PrepareFn | None = None,
                       record: RecordFn | None = None) -> None:
        """Run ``fn`` for every observation entering stage ``name``.

        ``fn`` takes paths and parameters only (it may run on another machine);
        ``prepare`` and ``record`` run in the server process around it and are the only
        parts that touch the store.
        """
        stage_spec(name)
        self.stages[name] = fn
        for hooks, hook in ((self.prepares, prepare), (self.records, record)):
            if hook is None:
                hooks.pop(name, None)
            else:
                hooks[name] = hook

    def register_task(self, name: str, fn: TaskFn, *, every_s: float) -> None:
        """Run ``fn`` every ``every_s`` seconds."""
        self.tasks[name] = PeriodicTask(name=name, every_s=every_s, fn=fn)

    def specs(self) -> list[StageSpec]:
        """Specs of the stages that have a function, in pipeline order."""
        return [s for s in STAGES if s.name in self.stages]


class Runner:
    """Claims and runs stage jobs; one per process, started once."""

    def __init__(self, store: Store, home: Home, registry: StageRegistry, *,
                 config: RunnerConfig | None = None, state: RunnerState | None = None,
                 clock: Callable[[], datetime] = utcnow, worker_id: str | None = None):
        self.store = store
        self.home = home
        self.registry = registry
        self.config = config or RunnerConfig()
        self.state = state or RunnerState()
        self.clock = clock
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()
        # Keyed by (job, attempt): a requeued job may run again here while its old
        # attempt still runs.
        self._running: dict[tuple[int, int], dict] = {}
        self._claims: dict[tuple[int, int], Claim] = {}
        self._scheduler: BackgroundScheduler | None = None
        # A tick holds this while it claims and hands jobs to the pool; stop() takes it
        # before APScheduler's shutdown, which holds the job-store lock that add_job needs
        # while it waits for running jobs, the tick among them: a deadlock otherwise.
        self._tick_lock = threading.Lock()
        self._stopping = False
        self._heartbeat_stop: threading.Event | None = None
        self._heartbeat_thread: threading.Thread | None = None
        #: Ticks run since construction, paused ones included.
        self.ticks = 0
        self.state.publish(registered_stages=[s.name for s in registry.specs()])

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Recover stale claims, then start the background scheduler (idempotent)."""
        if self._scheduler is not None:
            return
        self._stopping = False
        self.recover_stale()
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2),
                       "stages": ThreadPoolExecutor(self.config.workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC")
        sched.add_job(self.tick, "interval", seconds=self.config.poll_s, id="tick",
                      next_run_time=datetime.now(UTC))
        self._start_heartbeat()
        for task in self.registry.tasks.values():
            sched.add_job(self._run_task, "interval", seconds=task.every_s, args=[task],
                          id=f"task-{task.name}", next_run_time=datetime.now(UTC))
        sched.start()
        self._scheduler = sched
        self.state.publish(scheduler_running=True)
        log.info("runner %s started: stages %s, %d workers", self.worker_id,
                 [s.name for s in self.registry.specs()] or "none", self.config.workers)

    def stop(self, *, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait`` let running stage jobs finish."""
        if self._scheduler is None:
            return
        with self._tick_lock:
            self._stopping = True  # a tick from now on starts nothing
        self._scheduler.shutdown(wait=wait)
        self._scheduler = None
        self._stop_heartbeat()  # after the jobs: a job finishing meanwhile keeps its lease
        self.state.publish(scheduler_running=False)

    @property
    def is_running(self) -> bool:
        """Whether the background scheduler is running."""
        return self._scheduler is not None and self._scheduler.running

    # ------------------------------------------------------------ the loop
    def recover_stale(self) -> list[int]:
        """Send claims whose heartbeat stopped back to the queue."""
        now = self.clock()
        stale_before = now - timedelta(seconds=self.config.stale_after_s)
        requeued = self.store.requeue_stale(STAGES, stale_before=stale_before, now=now)
        if requeued:
            log.warning("requeued %d stale job(s): %s", len(requeued), requeued)
        return requeued

    def tick(self) -> int:
        """Enqueue, claim what there is room for, hand it to the pool; return jobs started."""
        try:
            with self._tick_lock:
                if self.state.paused or self._scheduler is None or self._stopping:
                    return 0
                self.recover_stale()
                started = 0
                for claim in self.claim_ready(self.config.workers - len(self._running)):
                    self._scheduler.add_job(self.run_claim, args=[claim], executor="stages",
                                            id=f"job-{claim.job_id}-{claim.attempts}")
                    started += 1
                return started
        finally:
            self.ticks += 1
            self.refresh_state()

    def claim_ready(self, slots: int) -> list[Claim]:
        """Enqueue new jobs and claim up to ``slots`` of the ready ones, earliest stage first."""
        claims: list[Claim] = []
        now = self.clock()
        for spec in reversed(self.registry.specs()):
            # Later stages first: finishing an observation beats starting a new one.
            self.store.enqueue(spec, now=now)
            for job_id in self.store.ready_jobs(spec.name, now=now, limit=slots - len(claims)):
                claim = self.store.claim(job_id, spec, worker=self.worker_id, now=now)
                if claim is not None:
                    claims.append(claim)
                    self._track(claim)
            if len(claims) >= slots:
                break
        return claims

    def run_claim(self, claim: Claim) -> str:
        """Run one claimed job to its end; returns 'done', 'retry', 'quarantined' or 'lost'."""
        spec = stage_spec(claim.stage)
        fn = self.registry.stages[claim.stage]
        obs = self.store.observation(claim.observation_id)
        prepare = self.registry.prepares.get(claim.stage)
        record = self.registry.records.get(claim.stage)
        wakes = self.store.wakes(claim.stage)
        t0 = time.perf_counter()
        try:
            inputs = prepare(self.store, obs, self.clock()) if prepare else {}
            for hook in self.registry.input_hooks:
                inputs = hook(self.store, obs, claim.stage, inputs, self.clock())
            ctx = StageContext(observation=obs, home=self.home, attempt=claim.attempts,
                               progress=lambda f: self._progress(claim, f), inputs=inputs)
            result = fn(ctx) or StageResult()
            outcome = self._settle(claim, spec, obs, result, record, wakes, inputs)
        except StageWait as wait:
            outcome = self._wait(claim, spec, wait, wakes)
        except Exception as exc:  # a stage failure must never take the runner down
            outcome = self._failed(claim, spec, exc)
        else:
            log.info("%s %s: %s in %.1f s", claim.stage, claim.observation_id, outcome,
                     time.perf_counter() - t0)
        finally:
            self._untrack(claim)
        self.refresh_state()
        return outcome

    def run_once(self, *, max_rounds: int = 10_000, rescan_after_s: float = 2.0,
                 parallel: bool = False) -> dict[str, int]:
        """Process everything ready now in this thread, then return outcome counts.

        Tasks run twice, ``rescan_after_s`` apart, so ingest can see that a file's size
        is stable; jobs waiting for a backoff are left. ``parallel`` runs up to
        ``config.workers`` jobs at once, as the server's stage pool does; without it one job
        runs at a time, in claim order (what a test that expects an order needs).
        """
        self.recover_stale()
        for i in range(2 if self.registry.tasks else 0):
            if i:
                time.sleep(rescan_after_s)
            for task in self.registry.tasks.values():
                self._run_task(task)
        outcomes: dict[str, int] = {}
        # A backlog on two cores converts one chunk while it images another.
        workers = self.config.workers if parallel else 1
        with futures.ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="contimg-once") as pool:
            running: set[futures.Future[str]] = set()
            for _ in range(max_rounds):
                claims = self.claim_ready(workers - len(running)) if len(running) < workers else []
                running |= {pool.submit(self.run_claim, claim) for claim in claims}
                if not running:
                    if not self._any_ready():
                        break
                    continue
                done, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.refresh_state()
        return outcomes

    # -------------------------------------------------------------- helpers
    def _settle(self, claim: Claim, spec: StageSpec, obs: Observation, result: StageResult,
                record: RecordFn | None, wakes: int,
                inputs: Mapping[str, object] | None = None) -> str:
        """Record ``result`` and finish the job in one transaction under the claim.

        Returns 'done', 'waiting' (the record hook raised StageWait: what it wrote is kept
        and the job waits) or 'lost' (the claim was no longer held: nothing of the record
        is written). A record hook that raises rolls back its writes and fails the attempt.
        """
        def settle() -> str:
            if record:
                try:
                    record(self.store, obs, result, self.clock())
                except StageWait as wait:
                    return self._wait(claim, spec, wait, wakes)
            for hook in self.registry.after_record:
                hook(self.store, obs, claim.stage, inputs or {}, result, self.clock())
            ok = self.store.finish(claim, spec, now=self.clock(), ms_path=result.ms_path,
                                   updates=result.updates)
            return "done" if ok else "lost"

        outcome = self.store.under_claim(claim, settle, now=self.clock())
        if outcome is None:
            log.warning("%s %s attempt %d: claim lost (requeued or taken over); its result "
                        "is not recorded", claim.stage, claim.observation_id, claim.attempts)
            return "lost"
        return outcome

    def _wait(self, claim: Claim, spec: StageSpec, wait: StageWait, wakes: int) -> str:
        now = self.clock()
        ok = self.store.release_to_wait(claim, spec, reason=wait.reason, now=now,
                                        retry_at=now + timedelta(seconds=wait.retry_after_s))
        log.info("%s %s waits: %s", claim.stage, claim.observation_id, wait.reason)
        if ok and self.store.wakes(claim.stage) != wakes:
            # Another job woke this stage's waiters while this one was deciding to wait
            # (a calibrator solved meanwhile): without this it would sleep its full retry.
            self.store.wake_waiting(claim.stage, self.clock(), reason=wait.reason)
        return "waiting" if ok else "lost"

    def _failed(self, claim: Claim, spec: StageSpec, exc: Exception) -> str:
        now = self.clock()
        message = f"{type(exc).__name__}: {exc}"
        quarantine = claim.attempts >= self.config.max_attempts
        retry_at = None if quarantine else now + timedelta(
            seconds=self.config.backoff(claim.attempts))
        outcome = self.store.fail(claim, spec, error=message, now=now, retry_at=retry_at)
        log.warning("%s %s attempt %d failed: %s%s", claim.stage, claim.observation_id,
                    claim.attempts, message, " (quarantined)" if quarantine else "")
        log.debug("%s", traceback.format_exc())
        if outcome == "quarantined":
            self.store.add_alert(
                severity="warning", kind="quarantined", subject=claim.observation_id, now=now,
                message=f"{claim.stage} failed {claim.attempts} times: {message}")
            for hook in self.registry.on_quarantine:
                try:
                    hook(self.store, self.home, claim.observation_id, claim.stage, message, now)
                except Exception:  # the quarantine stands; the hook's failure is logged
                    log.exception("quarantine hook of %s %s failed", claim.stage,
                                  claim.observation_id)
        self.state.publish(last_error=f"{claim.observation_id} {claim.stage}: {message}")
        return outcome or "lost"

    def _run_task(self, task: PeriodicTask) -> None:
        try:
            task.fn(TaskContext(store=self.store, home=self.home, now=self.clock()))
        except Exception as exc:  # a task failure is reported, the next run tries again
            log.exception("task %s failed", task.name)
            self.state.publish(last_error=f"task {task.name}: {type(exc).__name__}: {exc}")
        self.refresh_state()

    def _any_ready(self) -> bool:
        now = self.clock()
        return any(self.store.ready_jobs(s.name, now=now, limit=1) for s in self.registry.specs())

    def _heartbeat(self) -> None:
        with self._lock:
            claims = list(self._claims.values())
        self.store.heartbeat(claims, now=self.clock())

    def _start_heartbeat(self) -> None:
        # A thread of its own: in the scheduler's pool, ingest or the re-sort could hold
        # every thread past stale_after_s and get a live job requeued under its worker.
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.config.heartbeat_s):
                try:
                    self._heartbeat()
                except Exception:  # a failed beat is retried at the next one
                    log.exception("heartbeat of runner %s failed", self.worker_id)

        self._heartbeat_stop = stop
        self._heartbeat_thread = threading.Thread(
            target=beat, name=f"heartbeat-{self.worker_id}", daemon=True)
        self._heartbeat_thread.start()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_stop is not None and self._heartbeat_thread is not None:
            self._heartbeat_stop.set()
            self._heartbeat_thread.join()
        self._heartbeat_stop = self._heartbeat_thread = None

    def _track(self, claim: Claim) -> None:
        key = (claim.job_id, claim.attempts)
        with self._lock:
            self._claims[key] = claim
            self._running[key] = {
                "job_id": claim.job_id, "observation_id": claim.observation_id,
                "stage": claim.stage, "attempt": claim.attempts, "progress": 0.0,
                "started_utc": self.clock()}
            running = [dict(r) for r in self._running.values()]
        self.state.publish(running=running)

    def _untrack(self, claim: Claim) -> None:
        key = (claim.job_id, claim.attempts)
        with self._lock:
            self._claims.pop(key, None)
            self._running.pop(key, None)
            running = [dict(r) for r in self._running.values()]
        self.state.publish(running=running)

    def _progress(self, claim: Claim, fraction: float) -> None:
        with self._lock:
            entry = self._running.get((claim.job_id, claim.attempts))
            if entry is None or fraction - entry["progress"] < 0.01 and fraction < 1:
                return  # unchanged to a percent: spare the store and the browsers
            entry["progress"] = min(max(fraction, 0.0), 1.0)
            running = [dict(r) for r in self._running.values()]
        self.store.set_progress(claim, fraction)
        self.state.publish(running=running)

    def refresh_state(self) -> None:
        """Publish counts and queue depths read from the store."""
        self.state.publish(counts=self.store.counts_by_state(),
                           queue_depth=self.store.queue_depth(STAGES),
                           jobs=self.store.jobs_by_state(),
                           scheduler_running=self.is_running)
