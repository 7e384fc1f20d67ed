"""Operators' trigger actions (save, enable, fire, delete), each role-checked and audited.

The triggers page calls these; a forged browser event meets the same check as the button.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.actor import Actor
from pipeline.clock import utcnow
from pipeline.operator_actions import ACTION_ROLES, Refused
from pipeline.store import Store
from pipeline.triggers import firing
from pipeline.triggers.spec import Trigger, TriggerError, TriggerSpec


class TriggerActions:
    """Trigger changes and manual firings through one role check and one audit row each."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utcnow):
        self.store, self.clock = store, clock

    def authorize(self, actor: Actor, action: str, *, target: str = "") -> None:
        """Raise Refused (audited) unless ``actor`` may do ``action``."""
        needed = ACTION_ROLES[action]
        if not actor.may(needed):
            self.store.record_action(username=actor.name, role=actor.role, action=action,
                                     allowed=False, target=target, now=self.clock(),
                                     detail=f"needs {needed} (via {actor.via})")
            raise Refused(actor, action, needed)

    def save(self, actor: Actor, spec: TriggerSpec, *, trigger_id: int | None = None) -> int:
        """Make a trigger (``trigger_id`` None) or replace one's spec; returns its id."""
        target = spec.name if trigger_id is None else f"trigger #{trigger_id}"
        self.authorize(actor, "trigger.save", target=target)
        now = self.clock()
        if trigger_id is None:
            trigger_id = self.store.add_trigger(spec, owner=actor.name, now=now)
            detail = "created"
        else:
            if not self.store.update_trigger(trigger_id, spec, now=now):
                raise TriggerError("trigger", f"#{trigger_id} does not exist (deleted?)")
            detail = "edited"
        self._audit(actor, "trigger.save", f"trigger #{trigger_id} {spec.name}", detail)
        return trigger_id

    def set_enabled(self, actor: Actor, trigger_id: int, enabled: bool) -> bool:
        """Enable or disable a trigger; False if there is none."""
        action = "trigger.enable"
        self.authorize(actor, action, target=f"trigger #{trigger_id}")
        changed = self.store.set_trigger_enabled(trigger_id, enabled, now=self.clock())
        self._audit(actor, action, f"trigger #{trigger_id}",
                    "enabled" if enabled else "disabled")
        return changed

    def fire(self, actor: Actor, trigger_id: int) -> int:
        """Fire a trigger now as ``actor`` (no pile-up); returns its history row's id."""
        self.authorize(actor, "trigger.fire", target=f"trigger #{trigger_id}")
        trigger = self._trigger(trigger_id)
        history = firing.fire(self.store, trigger, fired_by=actor.name, now=self.clock(),
                              actor=actor)
        self._audit(actor, "trigger.fire", f"trigger #{trigger_id} {trigger.spec.name}",
                    f"history #{history}")
        return history

    def delete(self, actor: Actor, trigger_id: int) -> bool:
        """Delete a trigger (its history stays); False if there was none."""
        self.authorize(actor, "trigger.delete", target=f"trigger #{trigger_id}")
        gone = self.store.delete_trigger(trigger_id)
        self._audit(actor, "trigger.delete", f"trigger #{trigger_id}",
                    "" if gone else "none such")
        return gone

    def _trigger(self, trigger_id: int) -> Trigger:
        trigger = self.store.trigger(trigger_id)
        if trigger is None:
            raise TriggerError("trigger", f"#{trigger_id} does not exist (deleted?)")
        return trigger

    def _audit(self, actor: Actor, action: str, target: str, detail: str) -> None:
        self.store.record_action(username=actor.name, role=actor.role, action=action,
                                 allowed=True, target=target, detail=detail, now=self.clock())
