"""Calibrating again gives what calibrating once gave; a damaged MS is rebuilt first.

On a simulated 3C48 transit with RFI, converted by the real ingest and convert stages
and calibrated by the real calibrate stage (numerics included).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table
from conftest import contimg

from pipeline.calibration.converter_flags import CONVERTER_FLAG
from pipeline.calibration.registry import CalibrationConfig, Selection
from pipeline.calibration.stage import (
    calibrate_stage,
    default_numerics,
    prepare_calibrate,
    record_calibrate,
    run_calibrate,
)
from pipeline.convert.stage import convert_stage
from pipeline.home import Home
from pipeline.ingest.ingester import Ingester
from pipeline.jobs.contract import StageContext
from pipeline.jobs.runner import Runner, StageRegistry
from pipeline.store import Store


def _converting_registry() -> StageRegistry:
    reg = StageRegistry()
    reg.register_task("ingest", Ingester().scan, every_s=30.0)
    reg.register_stage("convert", convert_stage)
    return reg


def _convert(home: Home, clock) -> None:
    with Store.open(home) as store:
        Runner(store, home, _converting_registry(), clock=clock).run_once(rescan_after_s=0.1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A home with one converted (never calibrated) transit of 3C48 with RFI."""
    from conftest import Clock

    home = Home.resolve(tmp_path_factory.mktemp("rerun") / "home")
    # 16 antennas and 8 channels per subband: enough samples that the robust flagger,
    # run again on its own flags, finds more (24 samples here before the fix)
    sim = contimg("simulate", "--home", str(home.root), "--transit-of", "3C48",
                  "--minutes", "5", "--seed", "5", "--antennas", "16",
                  "--channels-per-subband", "8", "--rfi")
    assert sim.returncode == 0, sim.stderr
    _convert(home, Clock())
    with Store.open(home) as store:
        (obs_id,) = store.pipeline_rows(state="converted").id
        obs = store.observation(obs_id)
    with table(obs.ms_path, ack=False) as t:
        flags = t.getcol("FLAG")
    return home, obs, flags


def _flags(ms: Path | str) -> np.ndarray:
    with table(str(ms), ack=False) as t:
        return t.getcol("FLAG")


def _stage_context(converted, tmp_path: Path, **inputs) -> StageContext:
    """The transit's observation with a fresh copy of its MS in a home of the test's."""
    master_home, obs, _ = converted
    home = Home.resolve(tmp_path / "home")
    ms = home.ms / Path(obs.ms_path).name
    shutil.copytree(obs.ms_path, ms)
    return StageContext(observation=replace(obs, ms_path=str(ms)), home=home, attempt=1,
                        progress=lambda f: None, inputs=inputs)


@pytest.fixture(scope="module")
def solved_once(converted, tmp_path_factory):
    """The stage's solve on the transit, once: (FLAG written, SolvedTables)."""
    ctx = _stage_context(converted, tmp_path_factory.mktemp("once"), solve="3C48")
    outcome = run_calibrate(ctx, numerics=default_numerics()).payload
    assert outcome.own_solve_applied and outcome.solved.qa_passed
    return _flags(ctx.observation.ms_path), outcome.solved


@pytest.mark.parametrize("path,flagger", [("solve", "robust"), ("apply", "robust"),
                                          ("apply", "aoflagger")])
def test_calibrating_twice_writes_the_flags_of_once(path, flagger, converted, solved_once,
                                                    tmp_path):
    """A retry (the same stage inputs again, as after a killed attempt) flags no more."""
    _, _, converter_flags = converted
    config = CalibrationConfig(flagger=flagger)
    if path == "solve":
        inputs = {"solve": "3C48", "config": config}
    else:
        tables = solved_once[1]
        inputs = {"config": config,
                  "selection": Selection(kind="single",
                                         tables=((1, tables.b_path, tables.g_path, 1.0),))}
    ctx = _stage_context(converted, tmp_path, **inputs)
    ms = ctx.observation.ms_path
    run_calibrate(ctx, numerics=default_numerics())
    once = _flags(ms)
    run_calibrate(ctx, numerics=default_numerics())
    twice = _flags(ms)
    # the calibration did flag (the simulator's RFI), on top of the converter's flags
    assert once.sum() > converter_flags.sum() + 1000 and once[converter_flags].all()
    np.testing.assert_array_equal(twice, once)
    with table(ms, ack=False) as t:
        np.testing.assert_array_equal(t.getcol(CONVERTER_FLAG), converter_flags)
    if path == "solve":
        np.testing.assert_array_equal(once, solved_once[0])


def _data_file(ms: Path) -> Path:
    """The file of the storage manager holding DATA."""
    with table(str(ms), ack=False) as t:
        (seq,) = [int(k.lstrip("*")) for k, v in t.getdminfo().items()
                  if "DATA" in v["COLUMNS"]]
    (path,) = ms.glob(f"table.f{seq}_TSM*")
    return path


DAMAGE = {
    "table.f0 deleted": lambda ms: (ms / "table.f0").unlink(),
    "DATA's tiles cut short": lambda ms: os.truncate(_data_file(ms),
                                                     _data_file(ms).stat().st_size // 2),
    "table.dat cut short": lambda ms: os.truncate(ms / "table.dat", 1000),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_ms_is_rebuilt_from_its_subband_files_and_calibrated(
        damage, converted, solved_once, tmp_path, clock, caplog):
    """As a worker killed while casacore writes leaves it: reconverted, then calibrated."""
    master, obs, _ = converted
    home = Home.resolve(tmp_path / "home")
    shutil.copytree(master.incoming, home.incoming)
    _convert(home, clock)
    with Store.open(home) as store:
        (obs_id,) = store.pipeline_rows(state="converted").id
        ms = Path(store.observation(obs_id).ms_path)
        with table(str(ms), ack=False):
            pass                                   # it opens before the damage
        DAMAGE[damage](ms)
        reg = StageRegistry()
        reg.register_stage("calibrate", calibrate_stage, prepare=prepare_calibrate,
                           record=record_calibrate)
        with caplog.at_level(logging.WARNING, logger="pipeline.calibration.ms_repair"):
            outcomes = Runner(store, home, reg, clock=clock).run_once()
        assert outcomes == {"done": 1}, store.pipeline_rows()[["state", "error"]]
        assert store.observation(obs_id).state == "calibrated"
        assert store.observation(obs_id).ms_path == str(ms)
        assert any("rebuilding it from its 16 subband files" in r.getMessage()
                   for r in caplog.records)
        alerts = store.recent_alerts()
        assert (alerts.kind == "ms rebuilt").sum() == 1
        assert store.caltables(observation_id=obs_id).qa_passed.all()
    with table(str(ms), ack=False) as t:
        assert "CORRECTED_DATA" in t.colnames()
    # the rebuilt MS is calibrated as the undamaged one was
    np.testing.assert_array_equal(_flags(ms), solved_once[0])


def test_a_damaged_ms_without_its_subband_files_is_a_clear_error(converted, tmp_path):
    ctx = _stage_context(converted, tmp_path, solve="3C48")
    (Path(ctx.observation.ms_path) / "table.f0").unlink()
    gone = str(tmp_path / "gone_sb00.hdf5")
    ctx = replace(ctx, observation=replace(ctx.observation, files=(gone,)))
    with pytest.raises(Exception, match=f"cannot be read.*subband files missing: {gone}"):
        run_calibrate(ctx, numerics=default_numerics())
