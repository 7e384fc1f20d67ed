"""Provenance: the build read once (a non-git install says so), settings as plain values,
the diff of two versions, and rows written in the record step's transaction or not at all."""

from __future__ import annotations

import re
from dataclasses import replace

from conftest import add_observations

from pipeline.imaging.config import ImagingConfig
from pipeline.jobs.contract import StageResult
from pipeline.jobs.runner import Runner, StageRegistry
from pipeline.provenance import NOT_GIT, BuildInfo, ProvenanceRecorder, provenance_diff, settings_of

BUILD = BuildInfo(version="9.9", commit="f" * 40)


def test_the_build_names_its_commit_or_says_it_is_no_checkout(tmp_path):
    here = BuildInfo.read()
    assert re.fullmatch(r"[0-9a-f]{40}", here.commit) and here.version
    assert BuildInfo.read(tmp_path).commit == NOT_GIT


def test_settings_are_every_field_as_plain_values():
    values = settings_of(ImagingConfig(niter=40))
    assert values["niter"] == 40 and values["weighting"] == "briggs"
    assert values["npix"] is None and "catalog_path" in values
    assert settings_of(None) == {}


def test_the_diff_names_what_changed_only():
    old = {"settings": settings_of(ImagingConfig()), "caltables": [{"caltable_id": 1}],
           "contimg_version": "1", "git_commit": "a" * 40, "run_id": None}
    new = {**old, "settings": settings_of(ImagingConfig(niter=40, weighting="natural")),
           "git_commit": "b" * 40, "run_id": 3}
    changes = {c["field"]: (c["old"], c["new"]) for c in provenance_diff(old, new)}
    assert changes == {"settings.niter": (1000, 40), "settings.weighting": ("briggs", "natural"),
                       "git_commit": ("a" * 40, "b" * 40), "run_id": (None, 3)}
    assert provenance_diff(old, old) == []


def _registry(record) -> StageRegistry:
    registry = StageRegistry()
    config = replace(ImagingConfig(), niter=7)
    registry.register_stage("convert", lambda ctx: StageResult(ms_path=f"/ms/{ctx.observation.id}"),
                            prepare=lambda store, obs, now: {"config": config}, record=record)
    registry.after_record.append(ProvenanceRecorder(BUILD))
    return registry


def test_a_product_and_its_provenance_are_written_together(store, home):
    (obs_id,) = add_observations(store, 1)
    Runner(store, home, _registry(lambda *a: None)).run_once()
    (row,) = store.provenance(obs_id).to_dict("records")
    assert (row["stage"], row["product_kind"], row["product_id"]) == \
        ("convert", "ms", f"/ms/{obs_id}")
    assert row["settings"]["niter"] == 7 and row["git_commit"] == "f" * 40
    assert row["inputs"]["observation_id"] == obs_id and row["caltables"] == []


def test_a_failed_record_leaves_no_provenance(store, home):
    (obs_id,) = add_observations(store, 1)

    def broken(store, obs, result, now):
        raise OSError("disk full")

    outcomes = Runner(store, home, _registry(broken)).run_once(max_rounds=1)
    assert outcomes == {"retry": 1}
    assert store.provenance(obs_id).empty
