"""Triggers with a real store and scheduler: cron on time (injected clock), events once per
subject, edits without a restart, no pile-up, missed-fire policies, field-naming errors."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest

from pipeline.store import Store
from pipeline.triggers.actions import ACTION_FNS
from pipeline.triggers.firing import fire
from pipeline.triggers.service import TriggerService
from pipeline.triggers.spec import TriggerError, TriggerSpec, next_fire_times

T0 = datetime(2026, 3, 1, 12, 0, 20)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "home") as s:
        yield s


@pytest.fixture
def calls():
    return []


@pytest.fixture
def service(store, calls):
    """A started service whose ticks the test drives (autotick off), with a recording
    reprocess action."""
    def recording(store, params, actor, now):
        calls.append((now, actor.via, params))
        return f"recorded at {now:%H:%M:%S}"
    svc = TriggerService(store, autotick=False,
                         actions={**ACTION_FNS, "reprocess": recording})
    svc.start()
    yield svc
    svc.stop()


def _cron(store, cron="* * * * *", name="every minute", now=T0, **kw) -> int:
    return store.add_trigger(TriggerSpec(name=name, kind="cron", cron=cron,
                                         action="reprocess", **kw), owner="otto", now=now)


def _history(store, tid):
    return store.trigger_history(trigger_id=tid).sort_values("id")


def test_cron_every_minute_fires_on_time_across_two_minutes(store, service, calls):
    tid = _cron(store)
    service.tick(T0)
    assert service.next_fire(tid) == datetime(2026, 3, 1, 12, 1)
    for second in (30, 59):  # not yet due
        assert service.tick(T0.replace(second=second)) == 0
    assert service.tick(datetime(2026, 3, 1, 12, 1, 0, 400_000)) == 1
    # the injected clock jumps a minute at once: let the first run end (on a real clock it
    # has the minute), or the second fire time finds it running and is not piled on it
    assert service.wait_idle()
    assert service.tick(datetime(2026, 3, 1, 12, 1, 30)) == 0
    assert service.tick(datetime(2026, 3, 1, 12, 2, 1)) == 1
    assert service.wait_idle()
    hist = _history(store, tid)
    assert list(hist.outcome) == ["ok", "ok"]
    assert list(hist.fired_by) == ["schedule", "schedule"]
    assert [c[0].minute for c in calls] == [1, 2]
    assert {c[1] for c in calls} == {"schedule"}
    assert store.trigger(tid).last_fired_utc == datetime(2026, 3, 1, 12, 2)


def test_editing_the_schedule_takes_effect_without_a_restart(store, service):
    tid = _cron(store, cron="0 * * * *")
    service.tick(T0)
    assert service.next_fire(tid) == datetime(2026, 3, 1, 13, 0)
    spec = store.trigger(tid).spec
    edited = TriggerSpec(**{**spec.__dict__, "cron": "*/5 * * * *"})
    store.update_trigger(tid, edited, now=T0 + timedelta(seconds=10))
    service.tick(T0 + timedelta(seconds=11))
    assert service.next_fire(tid) == datetime(2026, 3, 1, 12, 5)
    assert service.tick(datetime(2026, 3, 1, 12, 5, 1)) == 1
    store.set_trigger_enabled(tid, False, now=datetime(2026, 3, 1, 12, 6))
    assert service.tick(datetime(2026, 3, 1, 12, 10, 1)) == 0
    assert service.next_fire(tid) is None
    assert service.wait_idle()
    assert len(_history(store, tid)) == 1


def test_a_long_action_is_not_started_twice(store, calls):
    started, release = threading.Event(), threading.Event()

    def slow(store, params, actor, now):
        calls.append(now)
        started.set()
        release.wait(10)
        return "slow done"
    svc = TriggerService(store, autotick=False, actions={**ACTION_FNS, "reprocess": slow})
    svc.start()
    try:
        tid = _cron(store)
        svc.tick(T0)
        assert svc.tick(datetime(2026, 3, 1, 12, 1, 1)) == 1
        assert started.wait(10)
        assert svc.tick(datetime(2026, 3, 1, 12, 2, 1)) == 0  # still running: skipped
        release.set()
        assert svc.wait_idle()
    finally:
        svc.stop()
    hist = _history(store, tid)
    assert list(hist.outcome) == ["skipped", "ok"]
    assert "still going" in hist.detail.iloc[0]
    assert len(calls) == 1


def test_observation_complete_fires_once_per_observation(store, service, calls):
    tid = store.add_trigger(TriggerSpec(name="on complete", kind="event",
                                        event_kind="observation complete",
                                        action="reprocess"), owner="otto", now=T0)
    service.tick(T0)
    for i in range(3):
        now = T0 + timedelta(minutes=i + 1)
        store.add_observation(obs_id=f"obs{i}", start_utc=now, mid_mjd=61000.0 + i,
                              dec_deg=30.0, n_subbands=16, now=now, state="complete")
        assert service.tick(now) == 1
        assert service.wait_idle()
        assert service.tick(now + timedelta(seconds=1)) == 0  # no change, no firing
    store.add_observation(obs_id="obs-pending", start_utc=T0, mid_mjd=61000.0, dec_deg=30.0,
                          n_subbands=16, now=T0 + timedelta(minutes=5))
    assert service.tick(T0 + timedelta(minutes=5)) == 0
    hist = _history(store, tid)
    assert list(hist.outcome) == ["ok"] * 3
    assert set(hist.fired_by) == {"event:observation complete"}
    assert [c[2]["event_subjects"] for c in calls] == [["obs0"], ["obs1"], ["obs2"]]


@pytest.mark.parametrize(("policy", "outcomes"), [("run-once", ["ok"]),
                                                  ("skip", ["skipped"])])
def test_missed_fire_times_follow_the_policy(store, calls, policy, outcomes):
    tid = _cron(store, cron="0 * * * *", missed_policy=policy)
    store.set_trigger_last_fired(tid, datetime(2026, 3, 1, 13, 0))
    # the server was down from 13:00 to 17:20: four fire times missed
    svc = TriggerService(store, autotick=False,
                         actions={**ACTION_FNS, "reprocess": lambda *a: "ran"})
    svc.start()
    try:
        svc.tick(datetime(2026, 3, 1, 17, 20))
        assert svc.wait_idle()
        assert svc.next_fire(tid) == datetime(2026, 3, 1, 18, 0)
    finally:
        svc.stop()
    hist = _history(store, tid)
    assert list(hist.outcome) == outcomes
    assert ("4 missed" in hist.detail.iloc[0]) if policy == "run-once" else (
        "missed 4" in hist.detail.iloc[0])


def test_unavailable_actions_are_refused_not_faked(store):
    for action in ("back up", "build mosaic"):
        tid = store.add_trigger(TriggerSpec(name=action, kind="manual", action=action),
                                owner="otto", now=T0)
        fire(store, store.trigger(tid), fired_by="otto", now=T0)
        row = _history(store, tid).iloc[-1]
        assert row.outcome == "skipped"
        assert "not available yet" in row.detail


def test_check_validity_windows_reports_observations_without_a_caltable(store):
    store.add_observation(obs_id="o1", start_utc=T0, mid_mjd=61000.5, dec_deg=30.0,
                          n_subbands=16, now=T0)
    tid = store.add_trigger(TriggerSpec(name="windows", kind="manual",
                                        action="check validity windows"), owner="otto", now=T0)
    fire(store, store.trigger(tid), fired_by="otto", now=T0)
    row = _history(store, tid).iloc[-1]
    assert row.outcome == "ok"
    assert "1 without a valid caltable" in row.enqueued


def test_next_five_fire_times_in_the_trigger_time_zone():
    times = next_fire_times("0 3 * * *", "America/Los_Angeles", datetime(2026, 3, 6), 5)
    assert times[0] == datetime(2026, 3, 6, 11, 0)       # 03:00 PST = 11:00 UTC
    assert times[-1] == datetime(2026, 3, 10, 10, 0)     # 03:00 PDT after 8 March


@pytest.mark.parametrize(("kw", "field", "match"), [
    (dict(kind="cron", cron="61 * * * *"), "cron", "not a valid cron"),
    (dict(kind="cron", cron="* * *"), "cron", "five fields"),
    (dict(kind="cron", cron="* * * * *", time_zone="Mars/Olympus"), "time zone", "Mars"),
    (dict(kind="event", event_kind="solar flare"), "event", "solar flare"),
    (dict(kind="event", event_kind="new images in strip", event_params={"n": 3}),
     "event parameters", "dec_min"),
    (dict(kind="manual", missed_policy="sometimes"), "missed-fire policy", "sometimes"),
])
def test_bad_specs_name_the_field(kw, field, match):
    with pytest.raises(TriggerError, match=match) as info:
        TriggerSpec(name="x", action="reprocess", **kw)
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_names_are_unique(store):
    _cron(store)
    with pytest.raises(TriggerError, match="exists"):
        _cron(store)


def test_strip_and_qa_events_fire_on_their_subjects_only(store, service, calls):
    strip = store.add_trigger(TriggerSpec(
        name="strip", kind="event", event_kind="new images in strip", action="reprocess",
        event_params={"dec_min": 20, "dec_max": 40, "n": 2}), owner="otto", now=T0)
    qa = store.add_trigger(TriggerSpec(name="bad image", kind="event",
                                       event_kind="image QA failed", action="reprocess"),
                           owner="otto", now=T0)
    service.tick(T0)
    for i, (dec, passed) in enumerate([(30.0, True), (60.0, False), (35.0, False)]):
        now = T0 + timedelta(minutes=i + 1)
        store.add_observation(obs_id=f"i{i}", start_utc=now, mid_mjd=61000.0 + i,
                              dec_deg=dec, n_subbands=16, now=now)
        store.add_image(observation_id=f"i{i}", path=f"/img/{i}.fits", mid_mjd=61000.0 + i,
                        now=now, dec_deg=dec, qa_passed=passed)
        service.tick(now)
        assert service.wait_idle()
    assert len(_history(store, strip)) == 1  # the 2nd image in the strip, not the 60° one
    assert len(_history(store, qa)) == 2
    subjects = sorted(len(c[2]["event_subjects"]) for c in calls)
    assert subjects == [1, 1, 2]


def test_events_while_disabled_do_not_fire_on_enabling(store, service, calls):
    tid = store.add_trigger(TriggerSpec(name="on complete", kind="event",
                                        event_kind="observation complete",
                                        action="reprocess", enabled=False),
                            owner="otto", now=T0)
    store.add_observation(obs_id="while-off", start_utc=T0, mid_mjd=61000.0, dec_deg=30.0,
                          n_subbands=16, now=T0 + timedelta(minutes=1), state="complete")
    assert service.tick(T0 + timedelta(minutes=1)) == 0
    store.set_trigger_enabled(tid, True, now=T0 + timedelta(minutes=2))
    assert service.tick(T0 + timedelta(minutes=2)) == 0
    store.add_observation(obs_id="while-on", start_utc=T0, mid_mjd=61000.0, dec_deg=30.0,
                          n_subbands=16, now=T0 + timedelta(minutes=3), state="complete")
    assert service.tick(T0 + timedelta(minutes=3)) == 1
    assert service.wait_idle()
    assert [c[2]["event_subjects"] for c in calls] == [["while-on"]]


@pytest.mark.parametrize(("params", "match"), [
    ({"from_utc": "2026-03-01T00:00:00"}, "needs a 'stage'"),
    ({"stage": "image"}, "needs a selection"),
])
def test_a_reprocess_trigger_without_stage_or_selection_fails_with_a_history_row(
        store, params, match):
    tid = store.add_trigger(TriggerSpec(name="redo", kind="manual", action="reprocess",
                                        action_params=params), owner="otto", now=T0)
    fire(store, store.trigger(tid), fired_by="otto", now=T0)
    row = _history(store, tid).iloc[-1]
    assert row.outcome == "failed"
    assert "action parameters" in row.detail and match in row.detail
    assert store.trigger(tid).running_since is None  # the claim is released


def test_an_edit_through_another_store_object_is_seen_within_the_poll(store, service):
    tid = _cron(store, cron="0 * * * *")
    service.tick(T0)
    with Store.open(store.path.parent) as other:  # not counted by this store: the poll
        spec = other.trigger(tid).spec
        other.update_trigger(tid, TriggerSpec(**{**spec.__dict__, "cron": "*/5 * * * *"}),
                             now=T0 + timedelta(seconds=1))
    service.tick(T0 + timedelta(seconds=2))  # within the poll interval: the old plan
    assert service.next_fire(tid) == datetime(2026, 3, 1, 13, 0)
    service.tick(T0 + service.poll_every + timedelta(seconds=1))
    assert service.next_fire(tid) == datetime(2026, 3, 1, 12, 5)


class FingerprintCountingStore(Store):
    """A real store that counts how often the trigger service looks at the event tables."""

    fingerprints = 0

    def event_fingerprint(self):
        self.fingerprints += 1
        return super().event_fingerprint()


def test_a_trigger_edit_alone_does_not_look_at_the_event_tables(tmp_path, calls):
    def recording(store, params, actor, now):
        calls.append(params.get("event_subjects"))
        return "recorded"
    with FingerprintCountingStore.open(tmp_path / "home") as store:
        svc = TriggerService(store, autotick=False,
                             actions={**ACTION_FNS, "reprocess": recording})
        svc.start()
        try:
            cron = _cron(store, cron="0 * * * *")
            event = store.add_trigger(TriggerSpec(
                name="on complete", kind="event", event_kind="observation complete",
                action="reprocess", enabled=False), owner="otto", now=T0)
            svc.tick(T0)
            looked = store.fingerprints
            spec = store.trigger(cron).spec
            store.update_trigger(cron, TriggerSpec(**{**spec.__dict__, "cron": "*/5 * * * *"}),
                                 now=T0 + timedelta(seconds=1))
            svc.tick(T0 + timedelta(seconds=2))
            assert svc.next_fire(cron) == datetime(2026, 3, 1, 12, 5)  # the edit is seen
            assert store.fingerprints == looked  # and no event table was read for it
            now = T0 + timedelta(seconds=3)
            store.add_observation(obs_id="done", start_utc=now, mid_mjd=61000.0,
                                  dec_deg=30.0, n_subbands=16, now=now, state="complete")
            svc.tick(now)
            assert store.fingerprints == looked + 1  # an observation write: looked
            # enabling an event trigger is an edit too, and its kind is then looked at
            store.set_trigger_enabled(event, True, now=T0 + timedelta(seconds=4))
            now = T0 + timedelta(seconds=5)
            store.add_observation(obs_id="after", start_utc=now, mid_mjd=61000.0,
                                  dec_deg=30.0, n_subbands=16, now=now, state="complete")
            assert svc.tick(now) == 1
            assert svc.wait_idle()
            assert calls == [["after"]]
        finally:
            svc.stop()
