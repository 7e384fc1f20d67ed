"""What a trigger is: its kinds, event kinds, actions, and the checks that name the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pipeline.errors import ContimgError

KINDS = ("cron", "event", "manual")
MISSED_POLICIES = ("run-once", "skip")
OUTCOMES = ("ok", "skipped", "failed")
#: event kinds and the parameters each takes
EVENT_KINDS = {
    "observation complete": (),
    "calibration registered": (),
    "calibration QA failed": (),
    "image QA failed": (),
    "new images in strip": ("dec_min", "dec_max", "n"),
}
ACTIONS = ("reprocess", "check validity windows", "back up", "build mosaic")


class TriggerError(ContimgError):
    """A trigger that cannot be made or run as asked; names the field and the remedy."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


def zone(name: str) -> ZoneInfo:
    """The time zone ``name``; TriggerError naming the field otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TriggerError("time zone", f"{name!r} is not a time zone name "
                           "(e.g. UTC, America/Los_Angeles)") from None


def check_cron(expr: str, time_zone: str = "UTC") -> None:
    """Raise TriggerError naming the cron field (or the time zone) unless both are valid."""
    zone(time_zone)
    text = (expr or "").strip()
    if len(text.split()) != 5:
        raise TriggerError("cron", f"{text!r} needs five fields: minute hour day-of-month "
                           "month day-of-week (e.g. '*/5 * * * *')")
    if not croniter.is_valid(text):
        raise TriggerError("cron", f"{text!r} is not a valid cron expression "
                           "(e.g. '0 3 * * *' is 03:00 every day)")


def next_fire_times(expr: str, time_zone: str, after: datetime, n: int = 5) -> list[datetime]:
    """The next ``n`` fire times after ``after`` (naive UTC), as naive UTC datetimes.

    The expression is read in ``time_zone`` (03:00 in Los Angeles stays 03:00 local across
    daylight saving); TriggerError naming the field when it is invalid.
    """
    check_cron(expr, time_zone)
    tz = zone(time_zone)
    start = after.replace(tzinfo=UTC).astimezone(tz)
    it = croniter(expr.strip(), start)
    return [it.get_next(datetime).astimezone(UTC).replace(tzinfo=None) for _ in range(n)]


@dataclass(frozen=True, kw_only=True)
class TriggerSpec:
    """What an operator edits: everything of a trigger but its id, owner and times."""

    name: str
    kind: str
    action: str
    cron: str | None = None
    time_zone: str = "UTC"
    event_kind: str | None = None
    event_params: dict[str, Any] = field(default_factory=dict)
    action_params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    missed_policy: str = "run-once"

    def __post_init__(self):
        if not self.name.strip():
            raise TriggerError("name", "a trigger needs a name")
        if self.kind not in KINDS:
            raise TriggerError("kind", f"{self.kind!r}: one of {', '.join(KINDS)}")
        if self.action not in ACTIONS:
            raise TriggerError("action", f"{self.action!r}: one of {', '.join(ACTIONS)}")
        if self.missed_policy not in MISSED_POLICIES:
            raise TriggerError("missed-fire policy",
                               f"{self.missed_policy!r}: one of {', '.join(MISSED_POLICIES)}")
        zone(self.time_zone)
        if self.kind == "cron":
            check_cron(self.cron or "", self.time_zone)
        if self.kind == "event":
            self._check_event()

    def _check_event(self) -> None:
        if self.event_kind not in EVENT_KINDS:
            raise TriggerError("event", f"{self.event_kind!r}: one of "
                               f"{', '.join(EVENT_KINDS)}")
        missing = [p for p in EVENT_KINDS[self.event_kind] if p not in self.event_params]
        if missing:
            raise TriggerError("event parameters", f"{self.event_kind} needs "
                               f"{', '.join(missing)}")
        if self.event_kind == "new images in strip":
            p = self.event_params
            try:
                lo, hi, n = float(p["dec_min"]), float(p["dec_max"]), int(p["n"])
            except (TypeError, ValueError):
                raise TriggerError("event parameters", "dec_min and dec_max are degrees, "
                                   "n a whole number") from None
            if not (-90 <= lo < hi <= 90) or n < 1:
                raise TriggerError("event parameters", "need -90 <= dec_min < dec_max <= 90 "
                                   "and n >= 1")


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """A trigger row: its spec plus id, owner and bookkeeping."""

    id: int
    spec: TriggerSpec
    owner: str
    revision: int
    running_since: datetime | None
    last_fired_utc: datetime | None
    created_utc: datetime
    updated_utc: datetime
