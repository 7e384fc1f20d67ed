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
    """Launch a reprocess run through ``pipeline.reprocess`` when that package is present.

    ``params``: ``stage`` to restart from (convert, calibrate, image, measure), a selection
    (``from_utc``/``to_utc`` ISO times, ``dec_min``/``dec_max``, ``states``,
    ``saved_query`` id; an event's observation ids when none is given), optional
    ``overrides``. Imported lazily so triggers work before that package exists: without
    it the line returned says what would have been enqueued and that nothing was.
    """
    stage = params.get("stage")
    if not stage:
        raise ValueError("action parameters: reprocess needs a 'stage' to restart from")
    if not any(params.get(k) for k in _SELECTING) and not _event_ids(params):
        raise ValueError("action parameters: reprocess needs a selection (from_utc/to_utc, "
                         "dec_min/dec_max, states, saved_query) or an observation event")
    try:
        reprocess = importlib.import_module("pipeline.reprocess")
        selection_type = importlib.import_module("pipeline.store.reprocess").Selection
    except ImportError:
        reprocess = None
    if reprocess is None or not hasattr(reprocess, "Reprocessor"):
        what = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "no selection"
        return f"would reprocess ({what}); nothing enqueued: pipeline.reprocess is not there"
    selection = _selection(store, params, actor, reprocess, selection_type)
    from pipeline.jobs.runner_state import RunnerState
    from pipeline.operator_actions import OperatorActions
    runner = reprocess.Reprocessor(store, OperatorActions(store, RunnerState()),
                                   clock=lambda: now)
    run_id, n = runner.launch(actor, selection, stage, params.get("overrides") or {})
    return f"reprocess run #{run_id}: {n} observation(s) from {stage}"


def _selection(store: Store, params: dict[str, Any], actor: Actor, reprocess: Any,
               selection_type: type) -> Any:
    """The reprocess selection a trigger's parameters describe."""
    if params.get("saved_query") is not None:
        return reprocess.selection_from_saved_query(store, int(params["saved_query"]),
                                                    reader=actor.reader)
    when = {k: datetime.fromisoformat(params[k]) for k in ("from_utc", "to_utc")
            if params.get(k)}
    dec = {k: float(params[k]) for k in ("dec_min", "dec_max") if params.get(k) is not None}
    states = tuple(params.get("states") or ())
    return selection_type(**when, **dec, states=states, ids=_event_ids(params))


#: the parameters that select observations for a reprocess
_SELECTING = ("from_utc", "to_utc", "dec_min", "dec_max", "states", "saved_query")


def _event_ids(params: dict[str, Any]) -> tuple[str, ...]:
    """The observation ids of an event's subjects (caltables and images are not)."""
    return tuple(s for s in params.get("event_subjects") or () if ":" not in s)


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
