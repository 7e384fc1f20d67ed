"""Reprocessing on real data: three simulated 3C48 transits (one field, three days) ingested,
converted, calibrated, imaged and measured, then reprocessed from ``image`` with another
niter, whole and cancelled midway; and the plan, overrides and role checks on their own."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_IMAGING, T0, add_observations, write_settings

from app.cli import main
from pipeline.actor import Actor
from pipeline.home import Home
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner
from pipeline.jobs.runner_config import RunnerConfig
from pipeline.jobs.runner_state import RunnerState
from pipeline.operator_actions import OperatorActions, Refused
from pipeline.provenance import NOT_GIT
from pipeline.reprocess import OverrideError, Reprocessor, selection_from_saved_query
from pipeline.reprocess.files import run_images_dir
from pipeline.reprocess.service import ReprocessError
from pipeline.settings import load_settings
from pipeline.store import Store
from pipeline.store.reprocess import Selection

#: QA loosened so the six-antenna snapshots are measured (QA is not what is tested here)
IMAGING = {**FAST_IMAGING, "qa_max_noise_ratio": 1000.0, "qa_dynamic_range": 1.0,
           "qa_min_matched_fraction": 0.0}
OTTO = Actor(name="otto", role="operator")
VERA = Actor(name="vera", role="viewer")
NOW = datetime(2026, 12, 3, 12, 0, 0)
#: three 5-minute transits of 3C48, a day apart (each calibrates itself)
DAYS = ("2026-11-20T12:00:00", "2026-11-21T12:00:00", "2026-11-22T12:00:00")


def process_transits(root: Path, days: tuple[str, ...]) -> Home:
    """Tiny 5-minute 3C48 transits, one per day given, through every stage (niter 100)."""
    for day in days:
        # in this process: one interpreter's imports instead of one per day
        assert main(["simulate", "--home", str(root), "--transit-of", "3C48", "--minutes", "5",
                     "--antennas", "6", "--channels-per-subband", "1", "--seed", "5",
                     "--start", day]) == 0
    home = Home.resolve(root)
    write_settings(home, imaging=IMAGING)
    with Store.open(home) as store:
        Runner(store, home, default_registry(load_settings(home))).run_once()
        assert store.counts_by_state()["complete"] == len(days)
    return home


@pytest.fixture(scope="module")
def processed_master(tmp_path_factory) -> Path:
    """A home whose three observations went through every stage once (niter 100)."""
    root = tmp_path_factory.mktemp("reprocess") / "home"
    process_transits(root, DAYS)  # the same field on three days: each source measured thrice
    return root


@pytest.fixture
def processed(processed_master, tmp_path) -> Home:
    """A copy of the processed home (its rows name the master's MS, read only here)."""
    root = tmp_path / "home"
    shutil.copytree(processed_master, root, ignore=shutil.ignore_patterns("incoming"))
    return Home.resolve(root)


def _reprocessor(store: Store) -> Reprocessor:
    return Reprocessor(store, OperatorActions(store, RunnerState(), clock=lambda: NOW),
                       clock=lambda: NOW)


def _snapshot(store: Store) -> dict:
    images = store.images().set_index("observation_id")
    return {"images": images, "rows": dict(store._df(
                "SELECT image_id, count(*) AS n FROM photometry GROUP BY 1").values.tolist()),
            "total": store.table_counts()["photometry"]}


def _variability(store: Store):
    return store._df("SELECT source_id, n_meas, eta, v FROM variability ORDER BY source_id")


def test_every_product_records_its_provenance(processed_master):
    with Store.open(processed_master) as store:
        for obs_id in store.observations()["id"]:
            prov = store.provenance(obs_id)
            assert list(prov["stage"]) == ["convert", "calibrate", "image", "measure"]
            assert prov["git_commit"].str.fullmatch(r"[0-9a-f]{40}|" + NOT_GIT).all()
            image = prov[prov.stage == "image"].iloc[0]
            assert image["settings"]["niter"] == 100 and image["product_version"] == 1
            assert image["caltables"], "the image names the caltables applied"
            assert image["inputs"]["observation_id"] == obs_id
            convert = prov[prov.stage == "convert"].iloc[0]
            assert len(convert["inputs"]["files"]) == 16


def test_reprocess_from_image_with_another_niter(processed):
    with Store.open(processed) as store:
        before, eta_before = _snapshot(store), _variability(store)
        assert before["total"] > 0 and len(before["rows"]) == 3
        rp = _reprocessor(store)
        plan = rp.plan(Selection(), "image", {"imaging.niter": 40})
        assert (plan.eligible, plan.jobs, plan.stages) == (3, 6, ("image", "measure"))
        run_id, n = rp.launch(OTTO, Selection(), "image", {"imaging": {"niter": 40}})
        assert n == 3 and set(store.counts_by_state().items()) >= {("calibrated", 3)}
        Runner(store, processed, default_registry(load_settings(processed))).run_once()

        after = _snapshot(store)
        assert store.counts_by_state()["complete"] == 3
        assert list(store.reprocess_progress(run_id)["status"]) == ["done"] * 3
        for obs_id, old in before["images"].iterrows():
            new = after["images"].loc[obs_id]
            assert new["id"] == old["id"]  # the same image, its current version replaced
            current = store.image(int(new["id"]))
            assert current["version"] == 2 and current["path"] != store.image_versions(
                int(new["id"])).iloc[1]["path"]
            versions = store.image_versions(int(new["id"]))
            assert list(versions["version"]) == [2, 1]
            assert list(versions["current"]) == [True, False]
            assert Path(versions.iloc[1]["path"]).is_file()  # the old image is kept
            assert "/run" in current["path"]
            new_prov = store.image_provenance(int(new["id"]), 2)
            old_prov = store.image_provenance(int(new["id"]), 1)
            assert new_prov["settings"]["niter"] == 40 and new_prov["run_id"] == run_id
            assert old_prov["settings"]["niter"] == 100 and pd.isna(old_prov["run_id"])
        # photometry replaced, not added to: the same rows per image
        assert after["rows"] == before["rows"] and after["total"] == before["total"]
        eta_after = _variability(store)
        assert (eta_after["n_meas"] <= 3).all()
        assert len(eta_after) == len(eta_before)
        # η/V follow the new rows: what the incremental update left equals a full recompute
        store.recompute_variability(now=NOW)
        full = _variability(store)
        np.testing.assert_allclose(eta_after[["eta", "v"]].to_numpy(float),
                                   full[["eta", "v"]].to_numpy(float), rtol=1e-6, atol=1e-12,
                                   equal_nan=True)
        assert not np.allclose(eta_after["v"].to_numpy(float), eta_before["v"].to_numpy(float),
                               equal_nan=True), "new images, new fluxes, new V"
        audit = store._df("SELECT action, allowed, username FROM audit WHERE action = "
                          "'reprocess'")
        assert audit.values.tolist() == [["reprocess", True, "otto"]]


def test_cancel_midway_leaves_each_observation_fully_old_or_fully_new(processed):
    with Store.open(processed) as store:
        old_paths = {o: store.current_image(o)["path"] for o in store.observations()["id"]}
        rp = _reprocessor(store)
        run_id, _ = rp.launch(OTTO, Selection(), "image", {"imaging.niter": 40})
        runner = Runner(store, processed, default_registry(load_settings(processed)))
        (claim,) = runner.claim_ready(1)  # one observation's new image under way ...
        assert runner.run_claim(claim) == "done"
        assert rp.cancel(OTTO, run_id) == 2  # ... the two not started are dropped
        runner.run_once()
        progress = store.reprocess_progress(run_id).set_index("observation_id")["status"]
        assert sorted(progress) == ["cancelled", "cancelled", "done"]
        assert store.counts_by_state()["complete"] == 3
        for obs_id, status in progress.items():
            image = store.current_image(obs_id)
            measured = store.provenance(obs_id, stage="measure").iloc[-1]
            if status == "done":  # fully new: new image, photometry of it
                assert image["version"] == 2 and image["path"] != old_paths[obs_id]
                assert measured["run_id"] == run_id and measured["product_version"] == 2
            else:  # fully old: nothing of the run
                assert image["version"] == 1 and image["path"] == old_paths[obs_id]
                assert pd.isna(measured["run_id"])
                assert not (store.provenance(obs_id)["run_id"] == run_id).any()
                jobs = store._df("SELECT stage, state FROM jobs WHERE observation_id = ? "
                                 "ORDER BY stage", [obs_id]).values.tolist()
                assert jobs == [["calibrate", "done"], ["convert", "done"],
                                ["image", "done"], ["measure", "done"]]
        assert store.reprocess_runs().iloc[0]["state"] == "cancelled"


def test_reprocess_from_convert_writes_a_new_ms_beside_the_old(processed):
    with Store.open(processed) as store:
        first = store.observations()["id"].iloc[-1]
        old_ms = store.observation(first).ms_path
        run_id, n = _reprocessor(store).launch(OTTO, Selection(ids=(first,)), "convert")
        assert n == 1
        Runner(store, processed, default_registry(load_settings(processed))).run_once()
        new_ms = store.observation(first).ms_path
        assert new_ms != old_ms and f"/run{run_id}/" in new_ms
        assert Path(old_ms).is_dir() and Path(new_ms).is_dir()
        stages = store.provenance(first).query("run_id == @run_id")["stage"].tolist()
        assert stages == ["convert", "calibrate", "image", "measure"]
        assert store.current_image(first)["version"] == 2


def _corrected(ms: str) -> np.ndarray:
    from casacore.tables import table
    with table(ms, ack=False) as t:
        return t.getcol("CORRECTED_DATA")


def _mark_corrected(ms: str, value: complex) -> np.ndarray:
    """Overwrite an MS's CORRECTED_DATA with ``value``; returns what it held."""
    from casacore.tables import table
    with table(ms, readonly=False, ack=False) as t:
        data = t.getcol("CORRECTED_DATA")
        t.putcol("CORRECTED_DATA", np.full_like(data, value))
    return data


def test_reprocess_from_calibrate_works_on_a_copy_beside_the_ms(processed):
    with Store.open(processed) as store:
        first = store.observations()["id"].iloc[0]
        old_ms = store.observation(first).ms_path
        calibrated = _mark_corrected(old_ms, 7 + 7j)  # whatever the rerun writes is not this
        run_id, _ = _reprocessor(store).launch(OTTO, Selection(ids=(first,)), "calibrate")
        registry = default_registry(load_settings(processed))
        seen = {}
        record = registry.records["calibrate"]

        def record_and_look(store_, obs, result, now):
            # the stage has calibrated the run's copy; the observation's MS is still the old
            seen["ms_path"] = store_.observation(obs.id).ms_path
            seen["old"] = _corrected(old_ms)
            seen["result"] = result.ms_path
            return record(store_, obs, result, now)

        registry.records["calibrate"] = record_and_look
        Runner(store, processed, registry).run_once()
        assert seen["ms_path"] == old_ms and seen["result"] != old_ms
        np.testing.assert_allclose(seen["old"], 7 + 7j)
        new_ms = store.observation(first).ms_path
        assert new_ms == seen["result"] and Path(new_ms).parent == processed.ms / f"run{run_id}"
        np.testing.assert_allclose(_corrected(old_ms), 7 + 7j)  # untouched after, too
        # the copy was calibrated afresh: what the first pass wrote, not the mark
        np.testing.assert_allclose(_corrected(new_ms), calibrated, rtol=1e-4, atol=1e-6)
        assert store.current_image(first)["version"] == 2
        assert list(store.reprocess_progress(run_id)["status"]) == ["done"]


def test_a_calibrate_rerun_with_a_chosen_caltable_applies_exactly_that_one(processed):
    with Store.open(processed) as store:
        first = store.observations()["id"].iloc[0]
        own = store.calibration_applied(first)["caltable_id"].tolist()
        tables = store.caltables()
        other = int(tables[~tables["id"].isin(own)].iloc[0]["id"])  # a day away
        rp = _reprocessor(store)
        overrides = {"calibration.caltable_id": other}
        plan = rp.plan(Selection(ids=(first,)), "calibrate", overrides)
        assert f"caltable {other} (3C48) is outside its validity window for 1 of 1" \
            in plan.summary()
        run_id, _ = rp.launch(OTTO, Selection(ids=(first,)), "calibrate", overrides)
        Runner(store, processed, default_registry(load_settings(processed))).run_once()
        assert list(store.reprocess_progress(run_id)["status"]) == ["done"]
        applied = store.calibration_applied(first)
        assert applied[["caltable_id", "selection"]].values.tolist() == [[other, "chosen"]]
        assert len(store.caltables()) == len(tables), "the transit was not solved again"
        prov = store.provenance(first)
        for stage in ("calibrate", "image", "measure"):
            row = prov[(prov.stage == stage) & (prov.run_id == run_id)].iloc[0]
            assert [(c["caltable_id"], c["selection"]) for c in row["caltables"]] == \
                [(other, "chosen")]
        old = prov[(prov.stage == "calibrate") & prov.run_id.isna()].iloc[0]
        assert [c["caltable_id"] for c in old["caltables"]] == own


def _failing_once(stage):
    """``stage`` run for real, then the attempt fails (a worker lost after writing)."""
    def run(ctx):
        stage(ctx)
        raise RuntimeError("worker lost after the stage wrote its files")
    return run


def test_a_cancel_before_a_calibrate_rerun_recorded_leaves_no_copy(processed):
    with Store.open(processed) as store:
        first = store.observations()["id"].iloc[0]
        old_ms = store.observation(first).ms_path
        rp = _reprocessor(store)
        run_id, _ = rp.launch(OTTO, Selection(ids=(first,)), "calibrate")
        registry = default_registry(load_settings(processed))
        registry.stages["calibrate"] = _failing_once(registry.stages["calibrate"])
        runner = Runner(store, processed, registry)
        (claim,) = runner.claim_ready(1)
        assert runner.run_claim(claim) == "retry"  # pending again, its copy left behind
        run_dir = processed.ms / f"run{run_id}"
        assert (run_dir / Path(old_ms).name).is_dir()
        assert rp.cancel(OTTO, run_id) == 1
        assert not run_dir.exists()
        obs = store.observation(first)
        assert (obs.state, obs.ms_path) == ("complete", old_ms)
        assert store.current_image(first)["version"] == 1


def test_a_rerun_whose_measure_fails_leaves_the_observation_fully_old(processed):
    with Store.open(processed) as store:
        first = store.observations()["id"].iloc[0]
        old_ms, old_image = store.observation(first).ms_path, store.current_image(first)
        before, applied = _snapshot(store), store.calibration_applied(first)
        rp = _reprocessor(store)
        run_id, _ = rp.launch(OTTO, Selection(ids=(first,)), "calibrate",
                              {"imaging.niter": 40})
        registry = default_registry(load_settings(processed))
        registry.stages["measure"] = _failing_once(registry.stages["measure"])
        Runner(store, processed, registry, config=RunnerConfig(max_attempts=1)).run_once()
        # its new MS and image were recorded, then measure was quarantined: all undone
        progress = store.reprocess_progress(run_id).iloc[0]
        assert progress["status"] == "failed" and "worker lost" in progress["error"]
        obs = store.observation(first)
        assert (obs.state, obs.ms_path) == ("complete", old_ms)
        image = store.current_image(first)
        assert (image["version"], image["path"]) == (1, old_image["path"])
        assert store.image_versions(int(image["id"]))["version"].tolist() == [1]
        after = _snapshot(store)
        assert after["rows"] == before["rows"] and after["total"] == before["total"]
        assert store.calibration_applied(first)["caltable_id"].tolist() == \
            applied["caltable_id"].tolist()
        assert not (store.provenance(first)["run_id"] == run_id).any()
        assert not (processed.ms / f"run{run_id}" / Path(old_ms).name).exists()
        # the image it made is gone from disk too, the old one's files kept
        assert not run_images_dir(processed.images, first, run_id).exists()
        assert Path(old_image["path"]).is_file()
        # bulk retry sends it back to the run's from-stage; now it goes through, fully new
        assert rp.retry_failed(OTTO, run_id) == [first]
        Runner(store, processed, default_registry(load_settings(processed))).run_once()
        assert list(store.reprocess_progress(run_id)["status"]) == ["done"]
        assert f"/run{run_id}/" in store.observation(first).ms_path
        image = store.current_image(first)
        assert image["version"] == 2 and image["path"] != old_image["path"]
        assert store.image_provenance(int(image["id"]), 2)["settings"]["niter"] == 40
        assert _snapshot(store)["rows"] == before["rows"]


# ----------------------------------------------------------- plan, overrides, roles
def test_plan_selects_by_time_dec_and_state(store):
    ids = add_observations(store, 6, state="complete")
    add_observations(store, 2, state="imaging", start=T0 + timedelta(hours=1), prefix="b")
    store._cur.execute("UPDATE observations SET dec_deg = 50 WHERE id = ?", [ids[0]])
    rp = _reprocessor(store)
    assert rp.plan(Selection(), "measure").eligible == 6
    everything = rp.plan(Selection(), "image")
    assert (everything.selected, everything.eligible, everything.busy) == (8, 6, 2)
    assert "2 busy" in everything.summary()
    window = Selection(from_utc=T0 + timedelta(minutes=5), to_utc=T0 + timedelta(minutes=15))
    assert rp.plan(window, "convert").eligible == 3
    assert rp.plan(Selection(dec_min=40.0), "image").eligible == 1
    assert rp.plan(Selection(states=("imaging",)), "image").eligible == 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"imaging.nitre": 5}, r"unknown key imaging\.nitre"),
    ({"imaging.niter": "many"}, r"imaging\.niter = 'many': expected an integer"),
    ({"imaging.weighting": "heavy"}, r"imaging\.weighting"),
    ({"runner.workers": 3}, r"'runner\.workers' is not a setting a run can override"),
    ({"calibration": {"flagger": "nope"}}, r"calibration\.flagger"),
])
def test_a_bad_override_names_itself(store, overrides, message):
    with pytest.raises(OverrideError, match=message):
        _reprocessor(store).plan(Selection(), "image", overrides)


def test_a_chosen_caltable_is_checked_at_plan(store):
    (obs_id,) = add_observations(store, 1, state="complete")
    mid = store.observation(obs_id).mid_mjd
    rp = _reprocessor(store)
    with pytest.raises(OverrideError, match=r"calibration\.caltable_id = 4242: no caltable "
                                            r"4242 is registered"):
        rp.plan(Selection(), "calibrate", {"calibration.caltable_id": 4242})
    with pytest.raises(OverrideError, match=r"calibration\.caltable_id = 'x'"):
        rp.plan(Selection(), "calibrate", {"calibration": {"caltable_id": "x"}})

    def add(transit_mjd: float, passed: bool) -> int:
        return store.add_caltable(
            observation_id=obs_id, calibrator="3C48", b_path=f"b{transit_mjd}{passed}",
            g_path="g",
            transit_mjd=transit_mjd, valid_from_mjd=transit_mjd - 0.5,
            valid_to_mjd=transit_mjd + 0.5, qa_passed=passed,
            qa_reason=None if passed else "SNR 3.0 below 10", snr=3.0, flagged_frac=0.1,
            antennas_lost=0, flux_ratio=1.0, model_flux_jy=16.0, now=NOW)

    bad, near, far = add(mid, False), add(mid, True), add(mid + 3.0, True)
    with pytest.raises(OverrideError, match=rf"caltable {bad} \(3C48\) failed QA "
                                            r"\(SNR 3\.0 below 10\)"):
        rp.plan(Selection(), "calibrate", {"calibration.caltable_id": bad})
    plan = rp.plan(Selection(), "calibrate", {"calibration.caltable_id": near})
    assert plan.notes == () and plan.overrides == {"calibration": {"caltable_id": near}}
    plan = rp.plan(Selection(), "convert", {"calibration.caltable_id": far,
                                            "calibration.flagger": "robust"})
    assert "outside its validity window for 1 of 1 selected observation(s) (up to 72.0 h" \
        in plan.summary()
    with pytest.raises(ReprocessError, match=f"caltable {near}: a chosen caltable is applied "
                                             "by the calibrate stage"):
        rp.plan(Selection(), "image", {"calibration.caltable_id": near})


def test_an_unknown_from_stage_is_refused(store):
    with pytest.raises(ReprocessError, match="from-stage 'flag'"):
        _reprocessor(store).plan(Selection(), "flag")
    add_observations(store, 1, state="imaging")
    with pytest.raises(ReprocessError, match="nothing to reprocess: 0 observation"):
        _reprocessor(store).launch(OTTO, Selection(), "image")
    assert store.reprocess_runs().empty


def test_a_viewer_cannot_launch_or_cancel_and_is_audited(store):
    add_observations(store, 2, state="complete")
    rp = _reprocessor(store)
    with pytest.raises(Refused, match="reprocess needs the operator role"):
        rp.launch(VERA, Selection(), "image")
    run_id, n = rp.launch(OTTO, Selection(), "image")
    with pytest.raises(Refused, match="cancel needs the operator role"):
        rp.cancel(VERA, run_id)
    assert n == 2 and store.counts_by_state()["calibrated"] == 2
    audit = store._df("SELECT username, action, allowed FROM audit ORDER BY id").values.tolist()
    assert audit == [["vera", "reprocess", False], ["otto", "reprocess", True],
                     ["vera", "cancel", False]]
    assert rp.cancel(OTTO, run_id) == 2
    assert store.counts_by_state()["complete"] == 2


def test_a_saved_query_selects_with_the_readers_visibility(store):
    add_observations(store, 3, state="complete")
    add_observations(store, 1, state="failed", prefix="x")
    qid = store.save_query(owner="vera", page="pipeline", name="done", now=NOW,
                           spec={"state": "complete", "search": ""})
    mine = selection_from_saved_query(store, qid, reader="vera")
    assert _reprocessor(store).plan(mine, "image").eligible == 3
    with pytest.raises(ReprocessError, match=f"saved query {qid}: not found"):
        selection_from_saved_query(store, qid, reader="otto")  # vera's private query


def test_bulk_retry_sends_a_runs_failed_observations_back(store):
    (obs_id,) = add_observations(store, 1, state="complete")
    rp = _reprocessor(store)
    run_id, _ = rp.launch(OTTO, Selection(), "image")
    store._cur.execute("INSERT INTO jobs (observation_id, stage, state, created_utc) "
                       "VALUES (?, 'image', 'quarantined', ?)", [obs_id, NOW])
    store._cur.execute("UPDATE observations SET state = 'failed', quarantined = true "
                       "WHERE id = ?", [obs_id])
    assert store.reprocess_failed(run_id) == [obs_id]
    assert rp.retry_failed(OTTO, run_id) == [obs_id]
    assert store.observation(obs_id).state == "calibrated"
    assert store.active_reprocess(obs_id) == (run_id, {})
