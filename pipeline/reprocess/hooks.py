"""Runner hooks of reprocessing: a run's overrides into a stage's inputs, its items finished.

Both run in the server process (input and after-record hooks), never in a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline.jobs.contract import Observation, StageResult
from pipeline.reprocess.overrides import OVERRIDE_SECTIONS, apply_overrides

if TYPE_CHECKING:
    from pipeline.store import Store

_SECTION_OF = {stage: section for section, stage in OVERRIDE_SECTIONS.items()}


def run_overrides(store: Store, obs: Observation, stage: str, inputs: Mapping[str, object],
                  now: datetime) -> Mapping[str, object]:
    """An input hook: ``inputs`` with the observation's reprocess run and its overrides.

    ``product_tag`` names the run, so a stage that writes files writes them beside the
    old ones instead of over them.
    """
    active = store.active_reprocess(obs.id)
    if active is None:
        return inputs
    run_id, overrides = active
    section = _SECTION_OF.get(stage)
    out = dict(inputs, reprocess_run=run_id, product_tag=f"run{run_id}")
    if section and section in overrides and "config" in out:
        out["config"] = apply_overrides(out["config"], overrides[section])
    return out


def finish_items(last_stage: str):
    """An after-record hook marking a run's observation done once ``last_stage`` recorded."""
    def after(store: Store, obs: Observation, stage: str, inputs: Mapping[str, object],
              result: StageResult, now: datetime) -> None:
        run_id = inputs.get("reprocess_run")
        if stage == last_stage and run_id is not None:
            store.finish_reprocess_item(int(run_id), obs.id, now=now)
    return after
