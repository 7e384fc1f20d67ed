"""The ``calibrate`` stage: solve on calibrator transits, pick and apply tables everywhere.

Three parts, as the runner runs them:

- ``prepare_calibrate`` (server, reads the store): is this observation a calibrator
  transit (then: solve), and which registered tables would calibrate it (the Selection)?
  With nothing to solve and nothing to apply it raises StageWait("no calibration").
- ``calibrate_stage`` (anywhere: paths and parameters only): solves and/or applies, and
  returns a ``CalibrateOutcome`` as the StageResult's payload. Every observation is
  RFI-flagged (FLAG, with ``CalibrationConfig.flagger``) as tables are applied; a
  calibrator transit is flagged by its solve. Each attempt starts from the converter's
  flags (``converter_flags``), so a rerun flags what the first run flagged, no more;
  an MS that no longer opens is first rebuilt from the observation's UVH5 files
  (``ms_repair``).
- ``record_calibrate`` (server, writes the store): registers a solved table with its QA
  verdict whatever the verdict, raises alerts, wakes waiting observations, and only then
  raises StageWait when the observation could not be calibrated. A table that failed QA
  is therefore always kept with its reason, although its observation goes on waiting.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astropy.time import Time

from pipeline.calibration.registry import (
    CalibrationConfig,
    Flagger,
    Selection,
    qa_verdict,
    validity_window,
)
from pipeline.errors import ObservationError
from pipeline.instrument.times import mjd_to_utc
from pipeline.jobs.contract import Observation, StageContext, StageResult, StageWait

if TYPE_CHECKING:
    from pipeline.store import Store

log = logging.getLogger(__name__)

#: The StageWait reason for observations with nothing to apply; ``wake_waiting`` matches it.
NO_CALIBRATION = "no calibration"
STAGE = "calibrate"
#: the part of the stage's progress that rebuilding a damaged MS takes
REBUILD_SHARE = 0.3
DEFAULT_CONFIG = CalibrationConfig()
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class CalibrationInputError(ObservationError):
    """An observation reached the calibrate stage without what it needs."""


@dataclass(frozen=True, kw_only=True)
class SolvedTables:
    """A solve's tables and QA as the stage hands them to the record hook."""

    calibrator: str
    b_path: str
    g_path: str
    transit_mjd: float
    snr: float
    flagged_fraction: float
    antennas_lost: int
    flux_ratio: float
    qa_passed: bool
    qa_reason: str | None
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CalibrateOutcome:
    """StageResult.payload of the calibrate stage.

    ``applied`` is the selection of registered tables that calibrated the observation;
    ``own_solve_applied`` says its own new solve did instead (ids are known only once the
    record hook registers it); ``waiting`` says why nothing did; ``rebuilt_ms`` names
    the MS rebuilt from the UVH5 files because the one there was damaged.
    """

    solved: SolvedTables | None = None
    applied: Selection | None = None
    own_solve_applied: bool = False
    waiting: str | None = None
    rebuilt_ms: str | None = None


@dataclass(frozen=True, kw_only=True)
class Numerics:
    """The calibration numerics the stage calls (tests pass small fakes of the same API).

    ``repair(ctx, ms, progress=...)`` returns the path of an MS rebuilt because ``ms``
    was damaged, or None when it is fine; None here takes the MS as it is.
    """

    solve: Callable[..., Any]
    read_caltable: Callable[[Path], Any]
    apply: Callable[..., Any]
    repair: Callable[..., Path | None] | None = None


def default_numerics() -> Numerics:
    """The real numerics, imported when a stage runs (they pull in casacore)."""
    from pipeline.calibration.apply import apply_calibration  # noqa: PLC0415
    from pipeline.calibration.caltables import read_caltable  # noqa: PLC0415
    from pipeline.calibration.ms_repair import rebuild_if_damaged  # noqa: PLC0415
    from pipeline.calibration.solve_ms import solve_calibrator_ms  # noqa: PLC0415
    return Numerics(solve=solve_calibrator_ms, read_caltable=read_caltable,
                    apply=apply_calibration, repair=rebuild_if_damaged)


# ------------------------------------------------------------------ which calibrator
def angular_separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance between two positions, degrees (Vincenty, stable everywhere)."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    dra = r2 - r1
    num = math.hypot(math.cos(d2) * math.sin(dra),
                     math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(dra))
    den = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(dra)
    return math.degrees(math.atan2(num, den))


def calibrator_at(mid_mjd: float, dec_deg: float, *, radius_deg: float = 1.0
                  ) -> tuple[str, float] | None:
    """(name, offset_deg) of the calibrator nearest the meridian pointing, if within radius.

    A drift scan points at the apparent (LST, dec) at mid-time, compared here in ICRS
    with the calibrators; no Measurement Set is read.
    """
    from pipeline.instrument.phasing import meridian_icrs_deg  # noqa: PLC0415
    from pipeline.instrument.sky import load_calibrators  # noqa: PLC0415
    from pipeline.instrument.telescope import OVRO  # noqa: PLC0415

    cals = load_calibrators()
    ra_m, dec_m = meridian_icrs_deg(mid_mjd + 2400000.5, dec_deg, OVRO.earth_location())
    best: tuple[str, float] | None = None
    for name, ra, dec in zip(cals.names, cals.ra_deg, cals.dec_deg, strict=True):
        offset = angular_separation_deg(float(ra_m[0]), float(dec_m[0]), float(ra), float(dec))
        if offset <= radius_deg and (best is None or offset < best[1]):
            best = (name, offset)
    return best


def transit_calibrator(mid_mjd: float, dec_deg: float, *, half_duration_s: float,
                       radius_deg: float = 1.0) -> tuple[str, float] | None:
    """(name, seconds from transit) if this chunk is the one to solve a calibrator on.

    The calibrator must be within ``radius_deg`` of the meridian pointing at mid-time
    (:func:`calibrator_at`) and transit during the chunk: -half < t_mid - t_transit <= half
    with half = ``half_duration_s``. A 5-minute chunk spans 1.25 deg of hour angle, so
    two or three chunks pass the radius test; the half-open interval gives each transit
    to exactly one of them, and the others apply its table.
    """
    from pipeline.instrument.sky import load_calibrators  # noqa: PLC0415
    from pipeline.instrument.transits import seconds_from_transit  # noqa: PLC0415

    found = calibrator_at(mid_mjd, dec_deg, radius_deg=radius_deg)
    if found is None:
        return None
    cals = load_calibrators()
    i = cals.names.index(found[0])
    dt = seconds_from_transit(float(cals.ra_deg[i]), float(cals.dec_deg[i]),
                              mjd_to_utc(mid_mjd).to_pydatetime())
    return (found[0], dt) if -half_duration_s < dt <= half_duration_s else None


def chunk_half_duration_s(obs: Observation) -> float:
    """Half an observation's duration from its start and mid-time, seconds (150 if unknown)."""
    start = Time(obs.start_utc, scale="utc").mjd if obs.start_utc else None
    half = (obs.mid_mjd - start) * 86400.0 if start is not None else 0.0
    return half if half > 0 else 150.0


def calibrator_model_flux_jy(name: str) -> float | None:
    """The calibrator's Perley–Butler flux density at 1.4 GHz, Jy (None if not listed)."""
    from pipeline.instrument.sky import load_calibrators  # noqa: PLC0415

    cals = load_calibrators()
    return float(cals.flux_jy[cals.names.index(name)]) if name in cals.names else None


# ------------------------------------------------------------------------- the hooks
def prepare_calibrate(store: Store, obs: Observation, now: datetime, *,
                      config: CalibrationConfig = DEFAULT_CONFIG) -> dict[str, object]:
    """Server side: {"solve": calibrator or None, "selection": Selection, "config": ...}."""
    # Only the chunk the calibrator transits in is solved; its neighbours within the
    # radius apply that solve (or wait for it) like any other observation.
    chosen = chosen_selection(store, obs)
    if chosen is not None:
        # A reprocess run named the table: apply it, solve nothing, whatever the rules say.
        return {"solve": None, "selection": chosen, "config": config}
    found = transit_calibrator(obs.mid_mjd, obs.dec_deg,
                               half_duration_s=chunk_half_duration_s(obs),
                               radius_deg=config.calibrator_radius_deg)
    # A transit solved before (the observation waited, or a retry) is not solved again:
    # its table is registered, accepted or not, and selection already sees it.
    solve = found[0] if found and store.caltables(observation_id=obs.id).empty else None
    selection = store.caltable_selection(obs.mid_mjd, config)
    if solve is None and selection.kind == "none":
        raise StageWait(NO_CALIBRATION, retry_after_s=config.wait_retry_s)
    return {"solve": solve, "selection": selection, "config": config}


def chosen_selection(store: Store, obs: Observation) -> Selection | None:
    """The caltable the observation's reprocess run chose, as a "chosen" Selection, or None.

    The plan refused an unknown or QA-failed id; one removed or failed since is an error
    of this observation (the run rolls it back) rather than a silent fallback to the rules.
    """
    from pipeline.reprocess.overrides import chosen_caltable  # noqa: PLC0415

    active = store.active_reprocess(obs.id)
    caltable_id = chosen_caltable(active[1]) if active else None
    if caltable_id is None:
        return None
    row = store.caltable(caltable_id)
    if row is None or not bool(row["qa_passed"]):
        raise CalibrationInputError(
            obs.id, f"its reprocess run {active[0]} chose caltable {caltable_id}, which is "
                    f"{'no longer registered' if row is None else 'marked failed QA'}")
    hours = abs(float(row["transit_mjd"]) - obs.mid_mjd) * 24.0
    inside = float(row["valid_from_mjd"]) <= obs.mid_mjd <= float(row["valid_to_mjd"])
    warning = None if inside else (
        f"caltable {caltable_id} ({row['calibrator']}) is {hours:.1f} h from the "
        "observation, outside its validity window; applied as the reprocess run chose")
    return Selection(kind="chosen", tables=((caltable_id, str(row["b_path"]),
                                             str(row["g_path"]), 1.0),), warning=warning)


def calibrate_stage(ctx: StageContext) -> StageResult:
    """Solve on a calibrator transit and/or apply the selected tables to the observation."""
    return run_calibrate(ctx, numerics=default_numerics())


def run_calibrate(ctx: StageContext, *, numerics: Numerics) -> StageResult:
    """``calibrate_stage`` with the numerics given (paths and parameters only, no store)."""
    obs = ctx.observation
    if not obs.ms_path:
        raise CalibrationInputError(obs.id, "has no Measurement Set; convert it first")
    ms = Path(obs.ms_path)
    tag = ctx.inputs.get("product_tag")
    if tag:
        # A reprocess run calibrates its own copy beside the current MS (ms/run<N>/): the
        # current one, and the image made from it, stay as they are until this records,
        # when the copy becomes the observation's MS in the record's transaction.
        from pipeline.reprocess.files import ms_working_copy  # noqa: PLC0415
        ms = ms_working_copy(ms, ctx.home.ms, str(tag))
    moved = str(ms) if str(ms) != obs.ms_path else None
    rebuilt = None
    if numerics.repair is not None:
        rebuilt = numerics.repair(ctx, ms, progress=lambda f: ctx.progress(REBUILD_SHARE * f))
    if rebuilt is None:
        return StageResult(payload=_calibrate(ctx, ms, numerics=numerics), ms_path=moved)
    outer = ctx.progress
    ctx = replace(ctx, progress=lambda f: outer(REBUILD_SHARE + (1 - REBUILD_SHARE) * f))
    outcome = _calibrate(ctx, rebuilt, numerics=numerics)
    return StageResult(payload=replace(outcome, rebuilt_ms=str(rebuilt)), ms_path=str(rebuilt))


def _calibrate(ctx: StageContext, ms: Path, *, numerics: Numerics) -> CalibrateOutcome:
    """Solve and/or apply on ``ms``, a Measurement Set that opens."""
    obs = ctx.observation
    config: CalibrationConfig = ctx.inputs.get("config") or DEFAULT_CONFIG
    selection: Selection = ctx.inputs.get("selection") or Selection(kind="none")
    solve = ctx.inputs.get("solve")
    solved = None
    if solve:
        out_dir = ctx.home.caltables / _UNSAFE.sub("_", obs.id)
        result = numerics.solve(ms, calibrator=solve, out_dir=out_dir,
                                progress=lambda f: ctx.progress(0.8 * f),
                                flagger=config.flagger)
        passed, reason = qa_verdict(result.qa, config)
        solved = SolvedTables(
            calibrator=result.calibrator, b_path=str(result.b_table),
            g_path=str(result.g_table), transit_mjd=float(result.transit_mjd),
            snr=float(result.qa.snr), flagged_fraction=float(result.qa.flagged_fraction),
            antennas_lost=int(result.qa.antennas_lost), flux_ratio=float(result.qa.flux_ratio),
            qa_passed=passed, qa_reason=reason, timings=dict(result.timings or {}))
        if passed:
            # solve_calibrator_ms has applied its own tables to this MS already.
            ctx.progress(1.0)
            return CalibrateOutcome(solved=solved, own_solve_applied=True)
        log.warning("observation %s: %s solve rejected (%s)", obs.id, solve, reason)
    if selection.kind == "none":
        # The record hook registers the rejected table, then makes the observation wait.
        return CalibrateOutcome(solved=solved, waiting=NO_CALIBRATION)
    start = 0.85 if solve else 0.1
    ctx.progress(start)
    # every observation is RFI-flagged as its tables are applied (a calibrator transit
    # was flagged by its solve), with the flagger the operator chose
    apply_selection(ms, selection, numerics=numerics,
                    flagger=config.flagger if solved is None else None,
                    progress=lambda f: ctx.progress(start + (1 - start) * f))
    ctx.progress(1.0)
    return CalibrateOutcome(solved=solved, applied=selection)


def apply_selection(ms: Path, selection: Selection, *, numerics: Numerics,
                    flagger: Flagger | None = None,
                    progress: Callable[[float], None] | None = None) -> Any:
    """Apply a selection: bandpass of the heaviest table, gains blended by weight.

    flagger : RFI-flag the data first with it (None: FLAG as it is); progress : 0..1.
    """
    heaviest = max(selection.tables, key=lambda t: t[3])
    bandpass = numerics.read_caltable(Path(heaviest[1]))
    gains = [(numerics.read_caltable(Path(g)), w) for _, _, g, w in selection.tables]
    return numerics.apply(ms, bandpass=bandpass, gains=gains if len(gains) > 1 else gains[0][0],
                          flagger=flagger, progress=progress)


def record_calibrate(store: Store, obs: Observation, result: StageResult, now: datetime, *,
                     config: CalibrationConfig = DEFAULT_CONFIG) -> None:
    """Server side: register a solve, alert, wake waiting observations; may raise StageWait."""
    outcome = result.payload
    if not isinstance(outcome, CalibrateOutcome):
        raise CalibrationInputError(obs.id, f"calibrate stage returned {type(outcome).__name__}"
                                    ", expected CalibrateOutcome")
    if outcome.rebuilt_ms:
        store.add_alert(severity="warning", kind="ms rebuilt", subject=obs.id, now=now,
                        message=f"observation {obs.id}: its Measurement Set was damaged and "
                                f"was rebuilt from its subband files ({outcome.rebuilt_ms})")
    new_id = None
    if outcome.solved is not None:
        new_id = register_solve(store, obs.id, outcome.solved, now=now, config=config)
        if outcome.solved.qa_passed:
            woken = store.wake_waiting(STAGE, now)
            if woken:
                log.info("caltable %d woke %d observation(s) waiting for calibration",
                         new_id, woken)
        else:
            store.add_alert(
                severity="warning", kind="caltable rejected", subject=obs.id, now=now,
                message=f"caltable {new_id} ({outcome.solved.calibrator}) from {obs.id} "
                        f"failed QA: {outcome.solved.qa_reason}")
    if outcome.waiting:
        raise StageWait(outcome.waiting, retry_after_s=config.wait_retry_s)
    if outcome.own_solve_applied and new_id is not None:
        store.record_calibration_applied(obs.id, selection="single", tables=[(new_id, 1.0)],
                                         now=now)
        return
    applied = outcome.applied
    if applied is None:
        raise CalibrationInputError(obs.id, "calibrate stage neither applied tables nor waits")
    if applied.kind == "stale":
        store.add_alert(severity="warning", kind="stale calibration", subject=obs.id, now=now,
                        message=f"observation {obs.id}: {applied.warning}")
    store.record_calibration_applied(obs.id, selection=applied.kind,
                                     tables=[(cid, w) for cid, _, _, w in applied.tables],
                                     now=now)


def register_solve(store: Store, obs_id: str, solved: SolvedTables, *, now: datetime,
                   config: CalibrationConfig = DEFAULT_CONFIG) -> int:
    """Register a solve's tables with their QA verdict; returns the caltable id."""
    valid_from, valid_to = validity_window(solved.transit_mjd, config)
    return store.add_caltable(
        observation_id=obs_id, calibrator=solved.calibrator, b_path=solved.b_path,
        g_path=solved.g_path, transit_mjd=solved.transit_mjd, valid_from_mjd=valid_from,
        valid_to_mjd=valid_to, qa_passed=solved.qa_passed, qa_reason=solved.qa_reason,
        snr=solved.snr, flagged_frac=solved.flagged_fraction,
        antennas_lost=solved.antennas_lost, flux_ratio=solved.flux_ratio,
        model_flux_jy=calibrator_model_flux_jy(solved.calibrator), now=now)
