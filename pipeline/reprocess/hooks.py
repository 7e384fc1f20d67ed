"""Runner hooks of reprocessing: a run's overrides into stages, its items finished or undone.

All run in the server process (input, after-record and quarantine hooks), never in a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.jobs.contract import Observation, StageResult
from pipeline.reprocess.files import remove_run_images, remove_run_ms, run_dir, run_tag
from pipeline.reprocess.overrides import OVERRIDE_SECTIONS, apply_overrides

if TYPE_CHECKING:
    from pipeline.home import Home
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
    out = dict(inputs, reprocess_run=run_id, product_tag=run_tag(run_id))
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


def rollback_failed(store: Store, home: Home, observation_id: str, stage: str, error: str,
                    now: datetime) -> None:
    """A quarantine hook: a run's observation that failed goes back to its old products.

    The store puts back the MS path, calibration and image from before the run in one
    transaction; the run's MS (a copy or a reconversion beside the old one) and the image
    files it made are removed, since nothing in the store points at them any more.
    """
    run_id = store.rollback_reprocess_item(observation_id, error=f"{stage}: {error}", now=now)
    if run_id is None:
        return
    ms_path = store.observation(observation_id).ms_path
    # The run's MS has the old one's name in the run's folder (a copy or a reconversion).
    if ms_path and Path(ms_path).parent != run_dir(home.ms, run_tag(run_id)):
        remove_run_ms(home.ms, run_id, Path(ms_path).name)
    image = store.current_image(observation_id)
    remove_run_images(home.images, observation_id, run_id, keep=image and image["path"])
