"""What operators do to the running pipeline, checked here against the actor's role.

Each action, allowed or refused, is written to the audit trail.

Pages and the JSON API both call these; neither decides by itself who may act, so a
forged browser event or HTTP call meets the same check as the button.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from pipeline.actor import Actor
from pipeline.clock import utcnow
from pipeline.errors import ContimgError
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store

#: the least role each audited action needs
ACTION_ROLES = {
    "pause": "operator",
    "resume": "operator",
    "retry": "operator",
    "trigger.save": "operator",
    "trigger.enable": "operator",
    "trigger.fire": "operator",
    "trigger.delete": "operator",
    "reprocess": "operator",
    "cancel": "operator",
    "page.open": "viewer",
    "audit.view": "admin",
}


class Refused(ContimgError):
    """The actor's role does not allow the action; the refusal is already audited."""

    def __init__(self, actor: Actor, action: str, needed: str):
        super().__init__(f"{action} needs the {needed} role; {actor.name} is {actor.role}")
        self.actor, self.action, self.needed = actor, action, needed


class OperatorActions:
    """Pause, resume and retry through one role check and one audit row each."""

    def __init__(self, store: Store, state: RunnerState,
                 clock: Callable[[], datetime] = utcnow):
        self.store, self.state, self.clock = store, state, clock

    def authorize(self, actor: Actor, action: str, *, target: str = "",
                  needed: str | None = None) -> None:
        """Raise Refused (audited) unless ``actor`` may do ``action``."""
        needed = needed or ACTION_ROLES[action]
        if not actor.may(needed):
            self.store.record_action(username=actor.name, role=actor.role, action=action,
                                     allowed=False, target=target, now=self.clock(),
                                     detail=f"needs {needed} (via {actor.via})")
            raise Refused(actor, action, needed)

    def set_paused(self, actor: Actor, paused: bool) -> bool:
        """Pause or resume new jobs; returns whether it changed anything."""
        action = "pause" if paused else "resume"
        self.authorize(actor, action)
        changed = bool(self.state.paused) != bool(paused)
        self.state.paused = bool(paused)
        self._audit(actor, action, detail="" if changed else "already so")
        return changed

    def retry(self, actor: Actor, observation_ids: Iterable[str]) -> list[str]:
        """Send failed observations back to their failed stage; returns those sent."""
        ids = list(observation_ids)
        self.authorize(actor, "retry", target=",".join(ids))
        now = self.clock()
        sent = [obs for obs in ids if self.store.retry_observation(obs, now=now)]
        self._audit(actor, "retry", target=",".join(ids),
                    detail=f"{len(sent)} of {len(ids)} sent back")
        return sent

    def _audit(self, actor: Actor, action: str, *, target: str = "", detail: str = "") -> None:
        self.store.record_action(username=actor.name, role=actor.role, action=action,
                                 allowed=True, target=target, detail=detail, now=self.clock())
