"""One firing of a trigger: take its run claim (no pile-up), run the action, write history."""

from __future__ import annotations

import logging
from datetime import datetime

from pipeline.actor import Actor
from pipeline.store import Store
from pipeline.triggers.actions import ACTION_FNS, ActionFn, ActionUnavailable
from pipeline.triggers.spec import Trigger

log = logging.getLogger(__name__)


def acting_for(trigger: Trigger, fired_by: str) -> Actor:
    """Who a firing acts as: the user who fired it by hand, or the trigger's owner."""
    if fired_by == "schedule":
        return Actor(name=trigger.owner, role="operator", via="schedule")
    if fired_by.startswith("event:"):
        return Actor(name=trigger.owner, role="operator", via="event")
    return Actor(name=fired_by, role="operator")


def begin(store: Store, trigger: Trigger, *, fired_by: str, now: datetime) -> bool:
    """Take the trigger's run claim; False (with a "skipped" history row) if it is taken."""
    if store.claim_trigger_run(trigger.id, now=now):
        return True
    store.add_trigger_history(
        trigger_id=trigger.id, fired_utc=now, fired_by=fired_by, outcome="skipped",
        detail="the previous run of this trigger is still going (no pile-up)")
    return False


def run_claimed(store: Store, trigger: Trigger, *, fired_by: str, now: datetime,
                actor: Actor | None = None, extra: dict | None = None,
                actions: dict[str, ActionFn] | None = None, note: str = "") -> int:
    """Run the action of a trigger whose claim ``begin`` took, release it; the history id."""
    fns = actions if actions is not None else ACTION_FNS
    actor = actor or acting_for(trigger, fired_by)
    params = {**trigger.spec.action_params, **(extra or {})}
    try:
        enqueued = fns[trigger.spec.action](store, params, actor, now)
        outcome, detail = "ok", note
    except ActionUnavailable as exc:
        enqueued, outcome, detail = "", "skipped", f"refused: {exc}"
    except Exception as exc:  # an action's failure is history, not a dead scheduler
        log.exception("trigger %s (%d) failed", trigger.spec.name, trigger.id)
        enqueued, outcome, detail = "", "failed", f"{type(exc).__name__}: {exc}"
    finally:
        store.release_trigger_run(trigger.id)
    return store.add_trigger_history(trigger_id=trigger.id, fired_utc=now, fired_by=fired_by,
                                     enqueued=enqueued, outcome=outcome, detail=detail)


def fire(store: Store, trigger: Trigger, *, fired_by: str, now: datetime,
         actor: Actor | None = None, actions: dict[str, ActionFn] | None = None) -> int:
    """Run ``trigger``'s action now unless a run of it is still going; the history id."""
    if not begin(store, trigger, fired_by=fired_by, now=now):
        return int(store.trigger_history(trigger_id=trigger.id, limit=1).id.iloc[0])
    return run_claimed(store, trigger, fired_by=fired_by, now=now, actor=actor,
                       actions=actions)
