"""The trigger service: turns enabled trigger rows into firings, on time, without pile-up.

Why its own BackgroundScheduler and not the runner's: the runner's scheduler is made and
torn down by Runner.start/stop (and paused with the pipeline), while triggers fire even
when processing is paused (a "check validity windows" still should), and a long trigger
action must not take one of the stage pool's slots. Why the due times are worked out
here with croniter rather than as one APScheduler cron job per trigger: APScheduler 3
reads ``datetime.now`` inside its loop and its executors' misfire check, so its firing
could not be driven by an injected clock in tests; croniter (the same one the page shows
the next five fire times with) is the single source of a trigger's schedule. APScheduler
drives ``tick`` once a second and runs each firing as a job in the service's pool.

Why a tick usually asks the store nothing: the store counts the writes committed through
it (``Store.write_count``), so while that count is unchanged no trigger was edited and no
event happened through this process's store, and a cron trigger's next fire time is kept
in its plan. Writes made elsewhere (another Store object, the CLI in another process) are
not counted; they are picked up by a poll of the store every ``poll_every`` of the tick's
clock, so they take effect within that bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from croniter import croniter

from pipeline.clock import utcnow
from pipeline.store import Store
from pipeline.store.triggers import EVENT_SOURCES
from pipeline.triggers import firing
from pipeline.triggers.actions import ActionFn
from pipeline.triggers.spec import Trigger, next_fire_times, zone

log = logging.getLogger(__name__)

#: a fire time handled this late still counts as on time under the "skip" policy
ON_TIME_GRACE = timedelta(seconds=30)
#: edits and events written through another Store object or process are seen within this
POLL_EVERY = timedelta(seconds=5)


@dataclass(frozen=True, kw_only=True)
class _Plan:
    trigger: Trigger
    after: datetime  # fire times after this one are still to be handled
    next_due: datetime | None = None  # the first of them (cron), worked out once


def _plan(trigger: Trigger, after: datetime) -> _Plan:
    spec = trigger.spec
    due = (next_fire_times(spec.cron, spec.time_zone, after, 1)[0] if spec.kind == "cron"
           else None)
    return _Plan(trigger=trigger, after=after, next_due=due)


class TriggerService:
    """Fires cron triggers at their times and event triggers on store changes."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow,
                 tick_s: float = 1.0, workers: int = 2, autotick: bool = True,
                 actions: dict[str, ActionFn] | None = None,
                 poll_every: timedelta = POLL_EVERY):
        self.store, self.clock, self.tick_s = store, clock, tick_s
        self.workers, self.autotick, self.actions = workers, autotick, actions
        self.poll_every = poll_every
        self._scheduler: BackgroundScheduler | None = None
        self._plans: dict[int, _Plan] = {}
        self._known: dict[int, int] | None = None  # every trigger row's revision, as last read
        self._started_sync = False  # whether the first read (at start) is done
        self._writes_seen: int | None = None  # the store's write count at the last check
        self._checked: datetime | None = None  # the tick time of the last check
        self._event_writes_seen: int | None = None  # the store's event write count then
        self._fingerprint: dict[str, tuple] = {}  # event_fingerprint at the last check
        self._pending_kinds: set[str] = set()  # event kinds to look at whatever changed
        self._lock = threading.Lock()  # one tick at a time (APScheduler's and a test's)
        self._idle = threading.Condition()
        self._inflight = 0
        #: ticks run since construction
        self.ticks = 0

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Drop stale run claims, catch up missed fire times, start the scheduler."""
        if self._scheduler is not None:
            return
        self.store.release_all_trigger_runs()  # nothing runs before the server starts
        sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1),
                       "actions": ThreadPoolExecutor(self.workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC")
        sched.start()
        self._scheduler = sched
        if self.autotick:
            sched.add_job(self.tick, "interval", seconds=self.tick_s, id="trigger-tick")

    def stop(self, *, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait`` let running actions finish."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no dispatched firing is still running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)

    # ---------------------------------------------------------- the loop
    def tick(self, now: datetime | None = None) -> int:
        """Pick up edits, fire what is due at ``now`` (default the clock); firings started."""
        with self._lock:
            now = now or self.clock()
            try:
                # read the count before the queries: a write committed during them counts
                # after them, so the next tick looks again
                writes, event_writes = self.store.write_count(), self.store.event_write_count()
                polled = (self._checked is None
                          or not self._checked <= now < self._checked + self.poll_every)
                check = writes != self._writes_seen or bool(self._pending_kinds) or polled
                if check:
                    self._writes_seen, self._checked = writes, now
                    self._sync(now)  # an event trigger new or edited there adds its kind
                started = self._due_cron(now)
                # a trigger edit alone (the page's, or a firing's own bookkeeping) made no
                # event: the event tables are looked at only for other writes or a poll
                if polled or event_writes != self._event_writes_seen or self._pending_kinds:
                    self._event_writes_seen = event_writes
                    started += self._due_events(now)
                return started
            finally:
                self.ticks += 1

    def next_fire(self, trigger_id: int) -> datetime | None:
        """When the service will next fire a cron trigger (None: not scheduled)."""
        plan = self._plans.get(trigger_id)
        return None if plan is None else plan.next_due

    def _sync(self, now: datetime) -> None:
        revisions = self.store.trigger_revisions()
        if revisions == self._known:
            return
        known = self._known or {}
        changed = [tid for tid, rev in revisions.items() if known.get(tid) != rev]
        self._known = revisions
        plans = {tid: plan for tid, plan in self._plans.items()
                 if revisions.get(tid) == plan.trigger.revision}
        for trig in self.store.triggers_by_id(changed):
            plans.pop(trig.id, None)
            if not trig.spec.enabled or trig.spec.kind == "manual":
                continue
            if trig.spec.kind == "event":  # new or edited: look whatever else changed
                self._pending_kinds.add(trig.spec.event_kind)
            if self._started_sync or trig.last_fired_utc is None:
                # new or edited while running: its schedule starts at the edit
                after = max(trig.updated_utc, trig.last_fired_utc or trig.updated_utc)
            else:
                # known from before this start: fire times since the last one were missed
                after = max(trig.last_fired_utc, trig.updated_utc)
            plans[trig.id] = _plan(trig, after)
        self._plans = plans
        self._started_sync = True

    def _due_cron(self, now: datetime) -> int:
        started = 0
        for tid, plan in list(self._plans.items()):
            spec = plan.trigger.spec
            if spec.kind != "cron" or plan.next_due is None or plan.next_due > now:
                continue  # the common case: one comparison per cron trigger per tick
            due = _due_times(spec.cron, spec.time_zone, plan.after, now)
            if not due:
                continue
            latest = due[-1]
            self._plans[tid] = _plan(plan.trigger, latest)
            self.store.set_trigger_last_fired(tid, latest)
            missed = due[:-1]
            on_time = now - latest <= ON_TIME_GRACE
            if spec.missed_policy == "skip" and (missed or not on_time):
                n = len(missed) + (0 if on_time else 1)
                self.store.add_trigger_history(
                    trigger_id=tid, fired_utc=now, fired_by="schedule", outcome="skipped",
                    detail=f"missed {n} fire time(s) up to "
                           f"{(latest if not on_time else missed[-1]):%Y-%m-%d %H:%M} UTC "
                           "(missed-fire policy: skip)")
                if not on_time:
                    continue
            note = (f"run once for {len(due)} missed fire times" if len(due) > 1
                    and spec.missed_policy == "run-once" else "")
            started += self._dispatch(plan.trigger, "schedule", now, note=note)
        return started

    def _due_events(self, now: datetime) -> int:
        fingerprint = self.store.event_fingerprint()
        moved = {src for src, value in fingerprint.items()
                 if self._fingerprint.get(src) != value}
        self._fingerprint = fingerprint
        kinds = self._pending_kinds | {k for k, src in EVENT_SOURCES.items() if src in moved}
        self._pending_kinds = set()
        if not kinds:
            return 0  # nothing any event trigger watches has changed
        watching: dict[str, list[Trigger]] = {}
        for plan in self._plans.values():  # only the kinds whose table changed
            if plan.trigger.spec.kind == "event" and plan.trigger.spec.event_kind in kinds:
                watching.setdefault(plan.trigger.spec.event_kind, []).append(plan.trigger)
        started = 0
        # Events count from the trigger's last edit or enabling: what happened while it
        # was disabled, or before it was made, does not fire it.
        for kind, triggers in watching.items():  # one query per event kind
            found = self.store.unseen_event_subjects_many(kind, [
                (t.id, t.updated_utc, t.spec.event_params.get("dec_min"),
                 t.spec.event_params.get("dec_max")) for t in triggers])
            for trig in triggers:
                subjects = found.get(trig.id, [])
                if len(subjects) < int(trig.spec.event_params.get("n", 1)) or not subjects:
                    continue
                if not self.store.claim_trigger_run(trig.id, now=now):
                    self._pending_kinds.add(kind)  # fire them once the running one ends
                    continue
                self.store.mark_event_subjects_seen(trig.id, subjects)
                started += self._dispatch(trig, f"event:{kind}", now,
                                          extra={"event_subjects": subjects}, claimed=True)
        return started

    def _dispatch(self, trig: Trigger, fired_by: str, now: datetime, *, note: str = "",
                  extra: dict | None = None, claimed: bool = False) -> int:
        if not claimed and not firing.begin(self.store, trig, fired_by=fired_by, now=now):
            return 0

        def run() -> None:
            try:
                firing.run_claimed(self.store, trig, fired_by=fired_by, now=now, extra=extra,
                                   actions=self.actions, note=note)
            finally:
                with self._idle:
                    self._inflight -= 1
                    self._idle.notify_all()
        with self._idle:
            self._inflight += 1
        if self._scheduler is None:
            run()  # not started (a notebook): fire in this thread
        else:
            self._scheduler.add_job(run, executor="actions", misfire_grace_time=None)
        return 1


def _due_times(expr: str, time_zone: str, after: datetime, now: datetime,
               limit: int = 1000) -> list[datetime]:
    """Fire times in (after, now], oldest first.

    Past ``limit`` only the latest is added (a week of minutes missed is still one
    run-once).
    """
    out: list[datetime] = []
    cursor = after
    while len(out) < limit:
        batch = [t for t in next_fire_times(expr, time_zone, cursor, 50) if t <= now]
        out.extend(batch)
        if len(batch) < 50:
            return out
        cursor = batch[-1]
    tz = zone(time_zone)
    it = croniter(expr.strip(), (now + timedelta(microseconds=1)).replace(
        tzinfo=UTC).astimezone(tz))
    latest = it.get_prev(datetime).astimezone(UTC).replace(tzinfo=None)
    return [*out, latest] if latest > out[-1] else out
