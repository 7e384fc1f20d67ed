"""Provenance: what every product was made with and from, recorded in the runner's record step.

A stage stays free of the store (pipeline/jobs/contract.py); the runner hands this
module's ``ProvenanceRecorder`` the observation, the stage's inputs (its config among
them) and its result right after the stage's own record hook, in the same transaction,
so a product and its provenance are written together or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.jobs.contract import Observation, StageResult

if TYPE_CHECKING:
    from pipeline.store import Store

NOT_GIT = "not a git checkout"
#: what a stage's product is called in the provenance table
PRODUCT_KINDS = {"convert": "ms", "calibrate": "calibrated_ms", "image": "image",
                 "measure": "photometry"}


@dataclass(frozen=True, kw_only=True)
class BuildInfo:
    """The contimg version and the git commit of the code that made a product."""

    version: str
    commit: str

    @classmethod
    def read(cls, root: Path | None = None) -> BuildInfo:
        """Read once (a recorder holds it): the installed version and ``git rev-parse HEAD``."""
        try:
            version = metadata.version("contimg")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        root = root or Path(__file__).resolve().parents[1]
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=10, check=False)
            commit = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() \
                else NOT_GIT
        except (OSError, subprocess.TimeoutExpired):
            commit = NOT_GIT
        return cls(version=version, commit=commit)


def settings_of(config: object) -> dict[str, Any]:
    """A stage config as plain JSON-able ``{field: value}`` (every init field)."""
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)
            if f.init}


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return settings_of(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


class ProvenanceRecorder:
    """Writes one provenance row per product the runner records (a RecordFn's companion)."""

    def __init__(self, build: BuildInfo | None = None):
        self.build = build or BuildInfo.read()

    def __call__(self, store: Store, obs: Observation, stage: str,
                 inputs: Mapping[str, object], result: StageResult, now: datetime) -> int:
        """Record the provenance of what ``stage`` made of ``obs``; returns the row's id."""
        run_id = inputs.get("reprocess_run")
        product_id, version, made_from = _product(store, obs, stage, result)
        caltables = store.calibration_applied(obs.id)
        applied = [{"caltable_id": int(r.caltable_id), "weight": float(r.weight),
                    "selection": r.selection, "calibrator": r.calibrator,
                    "transit_mjd": None if r.transit_mjd != r.transit_mjd
                    else float(r.transit_mjd)}
                   for r in caltables.itertuples()] if stage != "convert" else []
        made_from.update({"observation_id": obs.id, "start_utc": obs.start_utc.isoformat(),
                          "mid_mjd": obs.mid_mjd, "dec_deg": obs.dec_deg})
        if stage == "convert":
            made_from["files"] = list(obs.files)
        return store.add_provenance(
            observation_id=obs.id, stage=stage, product_kind=PRODUCT_KINDS[stage],
            product_id=product_id, product_version=version,
            run_id=None if run_id is None else int(run_id),
            settings=settings_of(inputs.get("config")), caltables=applied, inputs=made_from,
            contimg_version=self.build.version, git_commit=self.build.commit, now=now)


def _product(store: Store, obs: Observation, stage: str,
             result: StageResult) -> tuple[str | None, int | None, dict[str, Any]]:
    """(product id, version, inputs) of what ``stage`` just recorded for ``obs``."""
    if stage in ("convert", "calibrate"):
        return result.ms_path or obs.ms_path, None, {"ms_path": obs.ms_path}
    image = store.current_image(obs.id)
    if image is None:
        return None, None, {"ms_path": obs.ms_path}
    made_from: dict[str, Any] = {"ms_path": obs.ms_path}
    if stage == "measure":
        made_from.update({"image_id": int(image["id"]),
                          "image_created_utc": image["created_utc"].isoformat()})
    return str(image["id"]), int(image.get("version") or 1), made_from


def provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What changed between two provenance rows: [{field, old, new}] over settings and build.

    Settings compare key by key (``settings.niter``); caltables, contimg version and
    commit as wholes. Unchanged fields are left out.
    """
    changes = []
    old_s, new_s = _as_dict(old.get("settings")), _as_dict(new.get("settings"))
    for key in sorted(set(old_s) | set(new_s)):
        if old_s.get(key) != new_s.get(key):
            changes.append({"field": f"settings.{key}", "old": old_s.get(key),
                            "new": new_s.get(key)})
    for key in ("caltables", "contimg_version", "git_commit", "run_id"):
        a, b = old.get(key), new.get(key)
        if key == "caltables":
            a, b = _as_list(a), _as_list(b)
        if a != b:
            changes.append({"field": key, "old": a, "new": b})
    return changes


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])
