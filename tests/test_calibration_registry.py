"""Caltable selection, the QA gate, and the calibrate stage on a real store and runner.

The calibration numerics are replaced by small fakes of their interface here: these tests
are about which tables an observation gets, when it waits and when it goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.time import Time
from conftest import T0

from pipeline.calibration.registry import (
    CalibrationConfig,
    CaltableRecord,
    Selection,
    qa_verdict,
    select_caltables,
    validity_window,
)
from pipeline.calibration.stage import (
    NO_CALIBRATION,
    Numerics,
    SolvedTables,
    calibrator_at,
    prepare_calibrate,
    record_calibrate,
    register_solve,
    run_calibrate,
    transit_calibrator,
)
from pipeline.instrument.transits import previous_transit
from pipeline.jobs.contract import StageWait
from pipeline.jobs.runner import Runner, StageRegistry

CFG = CalibrationConfig()
T = 61000.0  # observation mid-time, MJD
H = 1 / 24


def rec(cid: int, dt_h: float, *, passed: bool = True, cal: str = "3C48",
        cfg: CalibrationConfig = CFG) -> CaltableRecord:
    transit = T + dt_h * H
    lo, hi = validity_window(transit, cfg)
    return CaltableRecord(caltable_id=cid, calibrator=cal, transit_mjd=transit,
                          valid_from_mjd=lo, valid_to_mjd=hi, qa_passed=passed,
                          b_path=f"/cal/{cid}.B", g_path=f"/cal/{cid}.G")


# ------------------------------------------------------------------------ pure selection
def test_before_only_is_single():
    sel = select_caltables(T, [rec(1, -5), rec(2, -9)], CFG)
    assert sel == Selection(kind="single", tables=((1, "/cal/1.B", "/cal/1.G", 1.0),))


def test_after_only_is_single():
    sel = select_caltables(T, [rec(3, 11.5), rec(4, 2)], CFG)
    assert sel.kind == "single" and sel.caltable_ids == (4,) and sel.warning is None


def test_bracketing_tables_interpolate_by_time_distance():
    sel = select_caltables(T, [rec(1, -3), rec(2, 9), rec(3, -8), rec(9, 30)], CFG)
    assert sel.kind == "interpolated"
    weights = {cid: w for cid, _, _, w in sel.tables}
    assert weights == pytest.approx({1: 0.75, 2: 0.25})
    assert sum(weights.values()) == pytest.approx(1.0)
    assert sel.caltable_ids == (1, 2)


def test_table_at_the_observation_itself_is_single_not_interpolated():
    sel = select_caltables(T, [rec(1, 0), rec(2, 5)], CFG)
    assert sel.kind == "single" and sel.caltable_ids == (1,)


def test_window_edges_are_inclusive_and_outside_is_stale():
    assert select_caltables(T, [rec(1, -12)], CFG).kind == "single"
    sel = select_caltables(T, [rec(1, -12.5), rec(2, 40)], CFG)
    assert sel.kind == "stale" and sel.caltable_ids == (1,)
    assert "12.5 h" in sel.warning and "±12 h window" in sel.warning


def test_only_stale_beyond_limit_waits():
    sel = select_caltables(T, [rec(1, -49), rec(2, 60)], CFG)
    assert sel.kind == "none" and sel.tables == ()
    assert "no accepted caltable within 48 h" in sel.warning


def test_rejected_tables_are_never_selected():
    sel = select_caltables(T, [rec(1, -1, passed=False), rec(2, 2, passed=False)], CFG)
    assert sel.kind == "none" and "2 failed QA" in sel.warning
    sel = select_caltables(T, [rec(1, -1, passed=False), rec(2, 20)], CFG)
    assert sel.kind == "stale" and sel.caltable_ids == (2,)


def test_nothing_at_all_waits():
    assert select_caltables(T, [], CFG).kind == "none"


def test_config_changes_windows():
    cfg = CalibrationConfig(window_h=6, stale_limit_h=10)
    assert select_caltables(T, [rec(1, -8, cfg=cfg)], cfg).kind == "stale"
    assert select_caltables(T, [rec(1, -11, cfg=cfg)], cfg).kind == "none"
    # A table keeps the window it was registered with.
    assert select_caltables(T, [rec(1, -8)], cfg).kind == "single"


@dataclass(frozen=True)
class QA:
    snr: float
    flagged_fraction: float
    antennas_lost: int = 0
    flux_ratio: float = 1.0


@pytest.mark.parametrize(("snr", "flagged", "passed", "reason"), [
    (10.0, 0.30, True, None),
    (9.99, 0.10, False, "SNR 10.0 below 10"),
    (50.0, 0.31, False, "flagged fraction 0.31 above 0.3"),
    (3.0, 0.5, False, "SNR 3.0 below 10; flagged fraction 0.50 above 0.3"),
    (float("nan"), 0.0, False, "SNR nan below 10"),
])
def test_qa_gate_thresholds(snr, flagged, passed, reason):
    assert qa_verdict(QA(snr, flagged), CFG) == (passed, reason)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window_h": 0}, "window_h must be positive"),
    ({"window_h": 12, "stale_limit_h": 6}, "stale_limit_h must be at least window_h"),
    ({"max_flagged_fraction": 1.5}, "max_flagged_fraction must be within"),
    ({"calibrator_radius_deg": 0}, "calibrator_radius_deg must be positive"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalibrationConfig(**kwargs)


def test_selection_refuses_bad_weights():
    with pytest.raises(ValueError, match="weights sum to 0.5"):
        Selection(kind="single", tables=((1, "b", "g", 0.5),))


# ------------------------------------------------------- the stage on a real store/runner
TRANSIT_3C48 = previous_transit(24.422083, 33.15975, T0)


def mjd(t: datetime) -> float:
    return float(Time(t, scale="utc").mjd)


@dataclass
class FakeNumerics:
    """Fakes of solve_calibrator_ms / read_caltable / apply_calibration that record calls."""

    snr: float = 40.0
    flagged: float = 0.05
    solved: list = field(default_factory=list)
    applied: list = field(default_factory=list)
    flaggers: list = field(default_factory=list)
    flagged_ms: list = field(default_factory=list)

    def solve(self, ms, *, calibrator, out_dir, refant=None, progress=None, flagger="robust"):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.solved.append((ms, calibrator))
        self.flaggers.append(flagger)
        if progress:
            progress(0.5)
        qa = QA(self.snr, self.flagged, 1, 0.98)
        return type("SolveResult", (), dict(
            b_table=out_dir / "cal.B", g_table=out_dir / "cal.G", calibrator=calibrator,
            transit_mjd=mjd(TRANSIT_3C48), qa=qa, timings={"solve": 0.1}))()

    def read(self, path):
        return f"solutions:{Path(path).name}:{Path(path).parent.name}"

    def apply(self, ms, *, bandpass, gains, flagger=None, progress=None):
        self.applied.append((Path(ms).name, bandpass, gains))
        if progress:
            progress(0.5)
        self.flagged_ms.append((Path(ms).name, flagger))

    def numerics(self) -> Numerics:
        return Numerics(solve=self.solve, read_caltable=self.read, apply=self.apply)


def calibrate_registry(fake: FakeNumerics) -> StageRegistry:
    reg = StageRegistry()
    reg.register_stage("calibrate", lambda ctx: run_calibrate(ctx, numerics=fake.numerics()),
                       prepare=prepare_calibrate, record=record_calibrate)
    return reg


def add_converted(store, when: datetime, *, dec: float = 33.16, name: str | None = None) -> str:
    obs_id = name or when.strftime("%Y-%m-%dT%H:%M:%S")
    store.add_observation(obs_id=obs_id, start_utc=when - timedelta(minutes=2.5),
                          mid_mjd=mjd(when), dec_deg=dec, n_subbands=16, now=T0,
                          state="converted", ms_path=f"/ms/{obs_id}.ms")
    return obs_id


def add_table(store, transit: datetime, *, passed: bool = True, name: str = "t") -> int:
    lo, hi = validity_window(mjd(transit), CFG)
    return store.add_caltable(
        observation_id=name, calibrator="3C48", b_path=f"/cal/{name}.B",
        g_path=f"/cal/{name}.G", transit_mjd=mjd(transit), valid_from_mjd=lo, valid_to_mjd=hi,
        qa_passed=passed, qa_reason=None if passed else "SNR 4.0 below 10", snr=40.0,
        flagged_frac=0.1, antennas_lost=0, flux_ratio=1.01, model_flux_jy=16.0, now=T0)


def test_calibrator_transit_is_found_from_time_and_declination():
    assert calibrator_at(mjd(TRANSIT_3C48), 33.16)[0] == "3C48"
    assert calibrator_at(mjd(TRANSIT_3C48 + timedelta(minutes=3)), 33.16)[0] == "3C48"
    assert calibrator_at(mjd(TRANSIT_3C48 + timedelta(minutes=10)), 33.16) is None
    assert calibrator_at(mjd(TRANSIT_3C48), 36.0) is None


@pytest.mark.parametrize("offset_s, solved", [
    (0, True), (100, True), (149, True), (-149, True),    # 3C48 transits in this chunk
    (-151, False), (160, False), (-200, False), (240, False),  # in the chunk before/after
])
def test_only_the_chunk_holding_the_transit_is_solved(offset_s, solved):
    # every one of these chunks has 3C48 within 1 deg of its pointing at mid-time
    mid = mjd(TRANSIT_3C48 + timedelta(seconds=offset_s))
    assert calibrator_at(mid, 33.16)[0] == "3C48"
    found = transit_calibrator(mid, 33.16, half_duration_s=150.0)
    assert (found is not None) == solved
    if solved:
        assert found[0] == "3C48" and found[1] == pytest.approx(offset_s, abs=0.5)


def test_consecutive_chunks_solve_each_transit_once(store, home, clock):
    fake = FakeNumerics()
    # 5-minute chunks with mid-times 200 s before and 100 s after the transit: 3C48 is
    # within 1 deg of both pointings, but transits in the second one only
    ids = [add_converted(store, TRANSIT_3C48 + timedelta(seconds=s)) for s in (-200, 100)]
    assert all(calibrator_at(store.observation(i).mid_mjd, 33.16) for i in ids)
    runner = Runner(store, home, calibrate_registry(fake), clock=clock)
    assert runner.run_once() == {"done": 2, "waiting": 1}   # the first waits, then is woken
    assert fake.solved == [(Path(f"/ms/{ids[1]}.ms"), "3C48")]
    assert all(store.observation(i).state == "calibrated" for i in ids)
    [table] = store.caltables().itertuples()
    assert table.observation_id == ids[1]
    assert [a[0] for a in fake.applied] == [f"{ids[0]}.ms"]


def test_no_table_waits_then_goes_on_by_itself_when_a_transit_is_solved(store, home, clock):
    fake = FakeNumerics()
    later = add_converted(store, TRANSIT_3C48 + timedelta(hours=2))
    runner = Runner(store, home, calibrate_registry(fake), clock=clock)
    assert runner.run_once() == {"waiting": 1}
    row = store.observation(later)
    assert (row.state, row.error, row.attempts) == ("converted", NO_CALIBRATION, 0)
    assert store.job(store.ready_jobs("calibrate", now=clock() + timedelta(days=1),
                                      limit=5)[0])["error"] == NO_CALIBRATION
    assert fake.applied == []

    # The calibrator transit arrives (converted); its solve wakes the waiting observation.
    cal = add_converted(store, TRANSIT_3C48)
    assert runner.run_once() == {"done": 2}
    assert store.observation(cal).state == "calibrated"
    assert store.observation(later).state == "calibrated"
    assert fake.solved == [(Path(f"/ms/{cal}.ms"), "3C48")]
    [table] = store.caltables().itertuples()
    assert table.qa_passed and table.observation_id == cal
    assert table.model_flux_jy == pytest.approx(15.9, rel=0.05)
    assert table.measured_flux_jy == pytest.approx(0.98 * table.model_flux_jy)
    # The transit was calibrated by its own solve (not re-applied); the later one applied it.
    assert [a[0] for a in fake.applied] == [f"{later}.ms"]
    applied = store.calibration_applied(later)
    assert applied.caltable_id.tolist() == [table.id] and applied.selection[0] == "single"
    assert store.calibration_applied(cal).caltable_id.tolist() == [table.id]


def test_registering_a_table_wakes_waiting_jobs(store, home, clock):
    obs = add_converted(store, TRANSIT_3C48 + timedelta(hours=2))
    runner = Runner(store, home, calibrate_registry(FakeNumerics()), clock=clock)
    runner.run_once()
    assert store.ready_jobs("calibrate", now=clock(), limit=5) == []
    add_table(store, TRANSIT_3C48)
    assert store.wake_waiting("calibrate", clock()) == 1
    assert store.wake_waiting("calibrate", clock()) == 0  # already ready: nothing to do
    assert runner.run_once() == {"done": 1}
    assert store.observation(obs).state == "calibrated"


def test_bracketing_tables_interpolate_gains_through_the_stage(store, home, clock):
    fake = FakeNumerics()
    obs = add_converted(store, TRANSIT_3C48 + timedelta(hours=6), dec=20.0)
    before = add_table(store, TRANSIT_3C48, name="before")
    after = add_table(store, TRANSIT_3C48 + timedelta(hours=8), name="after")
    assert Runner(store, home, calibrate_registry(fake), clock=clock).run_once() == {"done": 1}
    [(_, bandpass, gains)] = fake.applied
    assert bandpass == "solutions:after.B:cal"  # the heavier (nearer) table's bandpass
    assert [(g, pytest.approx(w)) for g, w in gains] == [
        ("solutions:before.G:cal", 0.25), ("solutions:after.G:cal", 0.75)]
    applied = store.calibration_applied(obs)
    assert dict(zip(applied.caltable_id, applied.weight, strict=True)) == pytest.approx(
        {after: 0.75, before: 0.25})
    assert store.recent_alerts().empty


def test_only_stale_table_is_used_with_a_warning_alert(store, home, clock):
    fake = FakeNumerics()
    obs = add_converted(store, TRANSIT_3C48 + timedelta(hours=20), dec=20.0)
    stale = add_table(store, TRANSIT_3C48)
    assert Runner(store, home, calibrate_registry(fake), clock=clock).run_once() == {"done": 1}
    assert len(fake.applied) == 1
    alerts = store.recent_alerts()
    assert alerts.kind.tolist() == ["stale calibration"]
    assert alerts.severity[0] == "warning" and alerts.subject[0] == obs
    assert f"caltable {stale} (3C48) is 20.0 h" in alerts.message[0]
    assert store.calibration_applied(obs).selection[0] == "stale"


def test_only_qa_failed_tables_wait(store, home, clock):
    obs = add_converted(store, TRANSIT_3C48 + timedelta(hours=1), dec=20.0)
    add_table(store, TRANSIT_3C48, passed=False)
    assert Runner(store, home, calibrate_registry(FakeNumerics()), clock=clock).run_once() == {
        "waiting": 1}
    assert (store.observation(obs).state, store.observation(obs).error) == (
        "converted", NO_CALIBRATION)


def test_failed_calibrator_solve_is_kept_with_its_reason_and_waits(store, home, clock):
    fake = FakeNumerics(snr=4.0)
    cal = add_converted(store, TRANSIT_3C48)
    runner = Runner(store, home, calibrate_registry(fake), clock=clock)
    assert runner.run_once() == {"waiting": 1}
    row = store.observation(cal)
    assert (row.state, row.error) == ("converted", NO_CALIBRATION)
    [table] = store.caltables().itertuples()
    assert not table.qa_passed and table.qa_reason == "SNR 4.0 below 10"
    alert = store.recent_alerts().iloc[0]
    assert alert.kind == "caltable rejected" and "failed QA: SNR 4.0 below 10" in alert.message
    # Woken later by a good table from elsewhere: the transit is not solved a second time.
    add_table(store, TRANSIT_3C48 + timedelta(hours=3), name="good")
    store.wake_waiting("calibrate", clock())
    assert runner.run_once() == {"done": 1}
    assert len(fake.solved) == 1 and len(fake.applied) == 1
    assert len(store.caltables()) == 2


def test_failed_calibrator_solve_falls_back_to_registered_tables(store, home, clock):
    fake = FakeNumerics(flagged=0.6)
    cal = add_converted(store, TRANSIT_3C48)
    good = add_table(store, TRANSIT_3C48 - timedelta(hours=5), name="earlier")
    assert Runner(store, home, calibrate_registry(fake), clock=clock).run_once() == {"done": 1}
    assert store.observation(cal).state == "calibrated"
    assert store.calibration_applied(cal).caltable_id.tolist() == [good]
    tables = store.caltables()
    assert tables.qa_passed.tolist() == [True, False]
    assert "flagged fraction 0.60 above 0.3" in tables.qa_reason[1]
    # its solve flagged it already: the application does not flag it again
    assert fake.flagged_ms == [(f"{cal}.ms", None)]


def test_registering_the_same_tables_again_updates_and_keeps_the_id(store):
    solved = SolvedTables(calibrator="3C48", b_path="/c/x.B", g_path="/c/x.G",
                          transit_mjd=T, snr=5.0, flagged_fraction=0.1, antennas_lost=2,
                          flux_ratio=0.9, qa_passed=False, qa_reason="SNR 5.0 below 10")
    first = register_solve(store, "obs", solved, now=T0)
    again = register_solve(store, "obs", SolvedTables(**{**solved.__dict__, "snr": 30.0,
                                                         "qa_passed": True, "qa_reason": None}),
                           now=T0)
    assert first == again
    [row] = store.caltables().itertuples()
    assert row.snr == 30.0 and row.qa_passed
    assert row.valid_to_mjd - row.valid_from_mjd == pytest.approx(1.0)


def test_caltables_time_filter_uses_transit(store):
    add_table(store, TRANSIT_3C48, name="a")
    add_table(store, TRANSIT_3C48 + timedelta(days=3), name="b")
    t = mjd(TRANSIT_3C48)
    assert store.caltables(from_mjd=t - 1, to_mjd=t + 1).observation_id.tolist() == ["a"]
    assert store.caltables(from_mjd=t + 1).observation_id.tolist() == ["b"]
    series = store.calibrator_flux_series()
    assert series.ratio.tolist() == [1.01, 1.01] and set(series.calibrator) == {"3C48"}


def test_prepare_waits_when_nothing_to_solve_or_apply(store):
    obs_id = add_converted(store, TRANSIT_3C48 + timedelta(hours=3), dec=20.0)
    with pytest.raises(StageWait, match=NO_CALIBRATION):
        prepare_calibrate(store, store.observation(obs_id), T0)
    cal = add_converted(store, TRANSIT_3C48)
    inputs = prepare_calibrate(store, store.observation(cal), T0)
    assert inputs["solve"] == "3C48" and inputs["selection"].kind == "none"


def test_stage_refuses_an_observation_without_a_measurement_set(store, home):
    from pipeline.jobs.contract import StageContext
    store.add_observation(obs_id="bare", start_utc=T0, mid_mjd=T, dec_deg=33.0,
                          n_subbands=16, now=T0, state="converted")
    ctx = StageContext(observation=store.observation("bare"), home=home, attempt=1,
                       progress=lambda f: None, inputs={})
    with pytest.raises(Exception, match="observation bare: has no Measurement Set"):
        run_calibrate(ctx, numerics=FakeNumerics().numerics())


def _calibrate_with_each_flagger(store, home, obs_id: str) -> FakeNumerics:
    """The stage run on ``obs_id`` once with aoflagger configured, once with robust."""
    from pipeline.jobs.contract import StageContext
    fake = FakeNumerics()
    for flagger in ("aoflagger", "robust"):
        config = CalibrationConfig(flagger=flagger)
        inputs = prepare_calibrate(store, store.observation(obs_id), T0, config=config)
        ctx = StageContext(observation=store.observation(obs_id), home=home, attempt=1,
                           progress=lambda f: None, inputs=inputs)
        run_calibrate(ctx, numerics=fake.numerics())
    return fake


def test_the_configured_flagger_runs_before_the_solve(store, home):
    fake = _calibrate_with_each_flagger(store, home, add_converted(store, TRANSIT_3C48))
    assert fake.flaggers == ["aoflagger", "robust"]
    # a solve that passed QA applied its own tables; nothing else flagged the transit
    assert fake.applied == []


def test_every_observation_is_flagged_before_tables_are_applied(store, home):
    add_table(store, TRANSIT_3C48)
    target = add_converted(store, TRANSIT_3C48 + timedelta(hours=3), dec=20.0)
    fake = _calibrate_with_each_flagger(store, home, target)
    assert fake.flagged_ms == [(f"{target}.ms", "aoflagger"), (f"{target}.ms", "robust")]
    assert len(fake.applied) == 2 and fake.solved == []


# ------------------------------------------------------ with the real calibration numerics
def test_real_numerics_solve_a_transit_and_calibrate_its_neighbours(home, clock):
    """Simulated 3C48 transit through `contimg simulate` and the default registry."""
    from casacore.tables import table
    from conftest import contimg

    from pipeline.calibration.summary import solutions_summary
    from pipeline.jobs.default_stages import default_registry
    from pipeline.simulate import load_truth
    from pipeline.store import Store

    sim = contimg("simulate", "--home", str(home.root), "--start", "2026-11-23T05:12:00",
                  "--minutes", "15", "--dec", "33.16", "--antennas", "6",
                  "--channels-per-subband", "4", "--seed", "5", "--rfi")
    assert sim.returncode == 0, sim.stderr
    with Store.open(home) as store:
        registry = default_registry()
        for later in ("image", "measure"):  # this test's claims end with calibration
            for hooks in (registry.stages, registry.prepares, registry.records):
                hooks.pop(later, None)
        outcomes = Runner(store, home, registry, clock=clock).run_once(rescan_after_s=0.1)
        # The first chunk (7.5 min before transit) waits, the transit's solve wakes it;
        # ingest, convert and calibrate then run on all three chunks.
        assert outcomes["done"] == 3 * len(registry.stages)
        assert outcomes.get("waiting", 0) >= 1
        rows = store.pipeline_rows()
        assert set(rows.state) == {"calibrated"}
        tables = store.caltables()
        # two chunks have 3C48 within 1 deg at mid-time; only the one it transits in solves
        assert len(tables) == 1 and tables.qa_passed.all()
        assert set(tables.calibrator) == {"3C48"}
        assert tables.flux_ratio.between(0.8, 1.2).all()
        first = rows.sort_values("start_utc").id.iloc[0]
        assert store.calibration_applied(first).caltable_id.isin(tables.id).all()
        with table(str(rows.sort_values("start_utc").ms_path.iloc[0]), ack=False) as t:
            assert "CORRECTED_DATA" in t.colnames()
            cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
            flags = t.getcol("FLAG")[cross]
            _, when = np.unique(t.getcol("TIME")[cross], return_inverse=True)
            with table(str(Path(t.name()) / "SPECTRAL_WINDOW"), ack=False) as spw:
                freqs = spw.getcol("CHAN_FREQ")[0]
                half = 0.5 * np.abs(spw.getcol("CHAN_WIDTH")[0])
        # the science chunk before the transit was flagged too: the simulator's
        # transmitters' channels whole, its burst where it was (but for the edge channels
        # it barely reaches), little else
        rfi = load_truth(home.root).data["rfi"]
        injected = np.zeros(flags.shape, bool)
        for f in rfi["channels_hz"]:
            injected[:, int(np.argmin(np.abs(freqs - f)))] = True
        assert flags[:, injected[0, :, 0]].all()
        bursts = [b for b in rfi["bursts"] if b["chunk"] == 0]
        for b in bursts:
            chans = (freqs + half > b["freq_lo_hz"]) & (freqs - half < b["freq_hi_hz"])
            injected[np.ix_(when == b["integration"], chans)] = True
        assert bursts and flags[injected].mean() > 0.95
        assert flags[~injected].mean() < 0.01
        summary = solutions_summary(tables.b_path.iloc[0], tables.g_path.iloc[0])
    assert summary.missing == ()
    assert len(set(summary.gains.antenna)) == 6
    assert summary.gains.amp.between(0.3, 3).all()
    assert len(summary.bandpass) == 2 * 64
