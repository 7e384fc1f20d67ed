"""Plan, launch, cancel and retry reprocess runs, each through the operator role check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.actor import Actor
from pipeline.clock import utcnow
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.jobs.states import STAGES, stage_spec
from pipeline.operator_actions import OperatorActions
from pipeline.reprocess.files import remove_run_images, remove_run_ms
from pipeline.reprocess.overrides import OverrideError, chosen_caltable, validate_overrides
from pipeline.store import Store
from pipeline.store.query_specs import SpecProblem, filter_from_spec
from pipeline.store.reprocess import Selection

FROM_STAGES = tuple(s.name for s in STAGES)


class ReprocessError(ContimgError):
    """A reprocess that cannot be planned as asked (unknown stage, saved query, ...)."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a launch would do: observations and jobs, per stage."""

    from_stage: str
    selected: int
    eligible: int
    busy: int
    stages: tuple[str, ...]
    overrides: Mapping[str, Mapping[str, Any]]
    #: what an operator should know before launching (a chosen caltable far from the data)
    notes: tuple[str, ...] = ()

    @property
    def jobs(self) -> int:
        """Stage jobs the run will make: one per stage from the from-stage, per observation."""
        return self.eligible * len(self.stages)

    def summary(self) -> str:
        """One line for the page: how many observations and how much work."""
        left = self.selected - self.eligible
        return (f"{self.eligible} observation(s) from {self.from_stage}: {self.jobs} jobs "
                f"({' → '.join(self.stages)})"
                + (f"; {left} selected left out ({self.busy} busy, the rest not yet "
                   f"past {self.from_stage})" if left else "")
                + "".join(f"; {note}" for note in self.notes))


def selection_from_saved_query(store: Store, query_id: int, *, reader: str | None) -> Selection:
    """The observations a saved query shows ``reader`` (the store's visibility applies).

    A pipeline-page query is its state and search; an images-page query is the
    observations of the images it matches.
    """
    query = store.saved_query(query_id, reader=reader)
    if query is None:
        raise ReprocessError(f"saved query {query_id}: not found")
    try:
        spec = filter_from_spec(query.page, query.spec)
    except SpecProblem as exc:
        raise ReprocessError(f"saved query {query_id} ({query.name}): {exc}") from None
    if query.page == "pipeline":
        state = spec.get("state")
        return Selection(states=(state,) if state else (), search=spec.get("search") or "")
    if query.page == "images":
        ids = store.images(spec, limit=1_000_000)["observation_id"].tolist()
        return Selection(ids=tuple(ids) or ("",))  # no image: a selection of nothing
    raise ReprocessError(f"saved query {query_id} ({query.name}) is a {query.page} query; "
                         "reprocess takes pipeline or images queries")


class Reprocessor:
    """The reprocess actions pages and the API call; who may act is checked here."""

    def __init__(self, store: Store, actions: OperatorActions,
                 clock: Callable[[], datetime] = utcnow):
        self.store, self.actions, self.clock = store, actions, clock

    def plan(self, selection: Selection, from_stage: str,
             overrides: Mapping[str, Any] | None = None) -> Plan:
        """Preview a run: how many observations and jobs (nothing is written)."""
        if from_stage not in FROM_STAGES:
            raise ReprocessError(f"from-stage {from_stage!r}: one of {', '.join(FROM_STAGES)}")
        tables = validate_overrides(overrides or {})
        counts = self.store.reprocess_counts(selection, from_stage)
        k = FROM_STAGES.index(stage_spec(from_stage).name)
        stages = FROM_STAGES[k:]
        notes: tuple[str, ...] = ()
        chosen = chosen_caltable(tables)
        if chosen is not None:
            notes = self._check_caltable(chosen, selection, stages)
        return Plan(from_stage=from_stage, selected=counts["selected"],
                    eligible=counts["eligible"], busy=counts["busy"],
                    stages=stages, overrides=tables, notes=notes)

    def _check_caltable(self, caltable_id: int, selection: Selection,
                        stages: tuple[str, ...]) -> tuple[str, ...]:
        """Refuse a chosen caltable that is unknown or failed QA; note one far from the data."""
        if "calibrate" not in stages:
            raise ReprocessError(f"caltable {caltable_id}: a chosen caltable is applied by "
                                 f"the calibrate stage; reprocess from calibrate or earlier")
        row = self.store.caltable(caltable_id)
        if row is None:
            raise OverrideError(f"reprocess overrides: calibration.caltable_id = "
                                f"{caltable_id}: no caltable {caltable_id} is registered; "
                                "choose one the calibration page lists")
        if not bool(row["qa_passed"]):
            raise OverrideError(f"reprocess overrides: calibration.caltable_id = "
                                f"{caltable_id}: caltable {caltable_id} "
                                f"({row['calibrator']}) failed QA "
                                f"({row['qa_reason'] or 'no reason kept'}); choose one "
                                "that passed")
        valid_from, valid_to = float(row["valid_from_mjd"]), float(row["valid_to_mjd"])
        mids = [self.store.observation(obs_id).mid_mjd
                for obs_id in self.store.observation_ids(selection)]
        outside = [m for m in mids if not valid_from <= m <= valid_to]
        if not outside:
            return ()
        farthest_h = max(abs(m - float(row["transit_mjd"])) for m in outside) * 24.0
        return (f"caltable {caltable_id} ({row['calibrator']}) is outside its validity "
                f"window for {len(outside)} of {len(mids)} selected observation(s) "
                f"(up to {farthest_h:.1f} h from its transit); applied anyway, as chosen",)

    def launch(self, actor: Actor, selection: Selection, from_stage: str,
               overrides: Mapping[str, Any] | None = None) -> tuple[int, int]:
        """Record a run and send its observations back; returns (run id, observations)."""
        self.actions.authorize(actor, "reprocess", target=from_stage)
        plan = self.plan(selection, from_stage, overrides)
        if not plan.eligible:
            raise ReprocessError(f"nothing to reprocess: {plan.summary()}")
        run_id, n = self.store.launch_reprocess(
            created_by=actor.name, selection=selection, from_stage=from_stage,
            overrides={k: dict(v) for k, v in plan.overrides.items()}, now=self.clock())
        self._audit(actor, "reprocess", target=f"run {run_id}",
                    detail=f"{n} observation(s) from {from_stage}, overrides "
                           f"{dict(plan.overrides) or 'none'}")
        return run_id, n

    def cancel(self, actor: Actor, run_id: int) -> int:
        """Cancel a run: pending observations dropped, running ones finish; returns dropped."""
        self.actions.authorize(actor, "cancel", target=f"run {run_id}")
        dropped = self.store.cancel_reprocess(int(run_id), by=actor.name, now=self.clock())
        # A dropped observation's copy and images from an attempt that failed and waits to
        # be retried: nothing points at them any more (its MS is the old one again).
        home = Home(root=Path(self.store.path).parent)
        for obs_id in dropped:
            ms_path = self.store.observation(obs_id).ms_path
            if ms_path:
                remove_run_ms(home.ms, int(run_id), Path(ms_path).name)
            image = self.store.current_image(obs_id)
            remove_run_images(home.images, obs_id, int(run_id), keep=image and image["path"])
        self._audit(actor, "cancel", target=f"run {run_id}",
                    detail=f"{len(dropped)} pending observation(s) dropped")
        return len(dropped)

    def retry_failed(self, actor: Actor, run_id: int) -> list[str]:
        """Send a run's failed observations back (bulk retry); returns those sent.

        One rolled back by its failure goes back to the run's from-stage (its products
        were the old ones again); one quarantined but not rolled back to its failed stage.
        """
        self.actions.authorize(actor, "retry", target=f"run {run_id}")
        relaunched = self.store.relaunch_failed_items(int(run_id), now=self.clock())
        if relaunched:
            self._audit(actor, "retry", target=f"run {run_id}",
                        detail=f"{len(relaunched)} rolled-back observation(s) sent back "
                               "to the run's from-stage")
        failed = self.store.reprocess_failed(int(run_id))
        return relaunched + (self.actions.retry(actor, failed) if failed else [])

    def _audit(self, actor: Actor, action: str, *, target: str, detail: str) -> None:
        self.store.record_action(username=actor.name, role=actor.role, action=action,
                                 allowed=True, target=target, detail=detail, now=self.clock())
