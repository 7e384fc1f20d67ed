"""The stage contract: what a stage function takes, returns and raises.

A stage function takes paths and parameters and returns a result; it may run in a worker
process on another machine (the scale-out design), so this module and the stage modules
that use it import neither the scheduler, the store nor Panel. The store appears here
only as a type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.home import Home
    from pipeline.store import Store


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One 5-minute chunk as the store holds it."""

    id: str
    start_utc: datetime
    mid_mjd: float
    dec_deg: float
    n_subbands: int
    partial: bool
    state: str
    attempts: int
    next_try_utc: datetime | None
    error: str | None
    quarantined: bool
    ms_path: str | None
    files: tuple[str, ...] = ()

    def __post_init__(self):
        # DuckDB hands back VARCHAR[] as a list (or None); a frozen record holds a tuple.
        object.__setattr__(self, "files", tuple(self.files or ()))


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """What a stage function gets: the observation, where to write, how to report."""

    observation: Observation
    home: Home
    attempt: int
    progress: Callable[[float], None]
    inputs: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What a stage function returns for the runner to record in the store.

    ``updates`` sets observation columns named in ``Store.OBSERVATION_RESULT_COLUMNS``.
    """

    ms_path: str | None = None
    updates: Mapping[str, object] = field(default_factory=dict)
    payload: object = None


class StageWait(Exception):  # noqa: N818 — a signal to the runner, not an error
    """Raised by a stage (or its prepare hook) that cannot run yet; not a failed attempt.

    The observation goes back to the stage's waiting state with ``reason`` shown, and
    is tried again after ``retry_after_s`` (e.g. "no calibration" until a table arrives).
    """

    def __init__(self, reason: str, *, retry_after_s: float = 60.0):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


StageFn = Callable[[StageContext], StageResult | None]
#: Runs in the server process before the stage: reads the store, returns ctx.inputs.
PrepareFn = Callable[["Store", Observation, datetime], Mapping[str, object]]
#: Runs in the server process after the stage: writes what the stage produced.
RecordFn = Callable[["Store", Observation, StageResult, datetime], None]
#: Runs in the server process after a stage's prepare hook: returns the inputs the stage
#: gets, given the stage's name and what prepare returned (a reprocess run's overrides).
InputsFn = Callable[["Store", Observation, str, Mapping[str, object], datetime],
                    Mapping[str, object]]
#: Runs in the server process right after a stage's record hook, in its transaction, with
#: the stage's name and the inputs it ran with (provenance, reprocess bookkeeping).
AfterRecordFn = Callable[["Store", Observation, str, Mapping[str, object], StageResult,
                          datetime], object]


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """What a periodic task (ingest, nightly re-sort) gets."""

    store: Store
    home: Home
    now: datetime


TaskFn = Callable[[TaskContext], int | None]
