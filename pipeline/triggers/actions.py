"""What a trigger does when it fires.

Each action takes the store, its parameters, the actor and the time, and returns one line
saying what it enqueued or did.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pipeline.actor import Actor
from pipeline.calibration.registry import CalibrationConfig
from pipeline.errors import ContimgError
from pipeline.store import Store

ActionFn = Callable[[Store, dict[str, Any], Actor, datetime], str]


class ActionUnavailable(ContimgError):
    """The action exists in the trigger vocabulary but not yet in contimg; nothing ran."""

    def __init__(self, action: str, why: str):
        super().__init__(f"{action}: not available yet ({why}); nothing was run")
        self.action = action


def reprocess_action(store: Store, params: dict[str, Any], actor: Actor, now: datetime) -> str:
    """Hand a reprocess request to ``pipeline.reprocess`` when that package is present.

    ``params``: a selection (``from_utc``/``to_utc``, ``saved_query``, ``dec_min``/
    ``dec_max``, ``state``), ``stage`` to restart from, optional ``overrides``. The package
    is imported lazily so triggers work before it exists: its ``launch_from_trigger(store,
    params, actor=..., now=...) -> str`` does the enqueuing; without it the line returned
    says what would have been enqueued and that nothing was.
    """
    try:
        reprocess = importlib.import_module("pipeline.reprocess")
    except ImportError:
        reprocess = None
    launch = getattr(reprocess, "launch_from_trigger", None)
    if launch is not None:
        return str(launch(store, params, actor=actor, now=now))
    what = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "no selection"
    return f"would reprocess ({what}); nothing enqueued: pipeline.reprocess has no launcher"


def check_validity_windows(store: Store, params: dict[str, Any], actor: Actor,
                           now: datetime) -> str:
    """Check that waiting and recent observations have a caltable in its validity window.

    ``params``: ``limit`` (observations looked at, newest first, default 200). Observations
    with none raise one warning alert naming how many.
    """
    config = CalibrationConfig()
    obs = store.observations(limit=int(params.get("limit", 200)))
    lacking = [str(r.id) for r in obs.itertuples(index=False)
               if r.mid_mjd == r.mid_mjd  # NaN: not converted yet, nothing to check
               and store.caltable_selection(float(r.mid_mjd), config).kind == "none"]
    if lacking:
        store.add_alert(severity="warning", kind="validity windows", now=now,
                        subject=lacking[0],
                        message=f"{len(lacking)} observation(s) have no caltable within "
                                f"its validity window, e.g. {', '.join(lacking[:3])}")
    return f"checked {len(obs)} observation(s): {len(lacking)} without a valid caltable"


def _back_up(store: Store, params: dict[str, Any], actor: Actor, now: datetime) -> str:
    raise ActionUnavailable("back up", "backups come with issue 17")


def _build_mosaic(store: Store, params: dict[str, Any], actor: Actor, now: datetime) -> str:
    raise ActionUnavailable("build mosaic", "mosaic tiers are not built yet")


ACTION_FNS: dict[str, ActionFn] = {
    "reprocess": reprocess_action,
    "check validity windows": check_validity_windows,
    "back up": _back_up,
    "build mosaic": _build_mosaic,
}
