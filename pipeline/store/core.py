"""The DuckDB store: one file per home, versioned migrations, typed query methods.

One connection per process and a cursor per thread (DuckDB cursors are independent
connections to the same database instance). Every state change is one transaction whose
``UPDATE ... WHERE state = ?`` checks the expected current state, so a second claimer
loses cleanly: either its UPDATE matches no row or DuckDB reports a write conflict.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from pipeline.errors import SchemaTooNew, StoreCorrupt, StoreLocked, UnknownObservation
from pipeline.home import Home
from pipeline.jobs.contract import Observation
from pipeline.jobs.states import JOB_STATES, STATES, StageSpec, stage_spec
from pipeline.store.annotations import AnnotationQueries
from pipeline.store.audit import AuditQueries
from pipeline.store.calibration_files import CalibrationFileQueries
from pipeline.store.images import ImageQueries
from pipeline.store.photometry import PhotometryQueries, fill_missing_variability
from pipeline.store.provenance import ProvenanceQueries
from pipeline.store.reprocess import ReprocessQueries
from pipeline.store.saved_queries import SavedQueryQueries
from pipeline.store.sources import SourceQueries
from pipeline.store.triggers import TriggerQueries

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "data" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, kw_only=True)
class Migration:
    """One numbered SQL file under data/migrations."""

    version: int
    path: Path


def find_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations in ``directory`` sorted by version; gaps or duplicates are errors."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration names look like 0001_what_it_does.sql")
        found.append(Migration(version=int(match.group(1)), path=path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(
            f"{directory}: migrations must be numbered 1..N without gaps, got {versions}")
    return found


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A job this worker holds: it alone may finish or fail it."""

    job_id: int
    observation_id: str
    stage: str
    attempts: int
    worker: str


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Cumulative bucket counts as Prometheus wants them (last bound is +Inf)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float
    count: int


_OBS_COLUMNS = ("id, start_utc, mid_mjd, dec_deg, n_subbands, partial, state, attempts, "
                "next_try_utc, error, quarantined, ms_path, files")


class Store(ImageQueries, SourceQueries, PhotometryQueries, CalibrationFileQueries,
            AuditQueries, SavedQueryQueries, AnnotationQueries, TriggerQueries,
            ProvenanceQueries, ReprocessQueries):
    """Owns the home's DuckDB file; every query the pipeline and views need is a method."""

    #: Observation columns a stage may set through StageResult.updates.
    OBSERVATION_RESULT_COLUMNS = frozenset({
        "mid_mjd", "dec_deg", "freq_min_hz", "freq_max_hz", "n_channels", "n_antennas",
        "n_integrations"})

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path, schema_version: int):
        self._conn = conn
        self.path = path
        self.schema_version = schema_version
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        # How many times each stage's waiting jobs were woken: a job that decided to wait
        # while a wake-up ran compares counts, so that wake-up is not lost.
        self._wakes: dict[str, int] = {}
        self._wakes_lock = threading.Lock()
        # Writes committed through this object (transactions, and the autocommit writes that
        # make trigger events): the trigger service skips its store queries while it is
        # unchanged, and still polls now and then for writes made elsewhere.
        self._writes = 0
        self._trigger_writes = 0  # of them, edits of trigger rows only (no event can follow)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, home: Home | str | Path, *, migrations_dir: Path = MIGRATIONS_DIR) -> Store:
        """Open (creating if needed) the home's store and apply pending migrations.

        Raises StoreCorrupt, StoreLocked or SchemaTooNew with one-line messages; in none
        of those cases is the file modified.
        """
        home = home if isinstance(home, Home) else Home.resolve(home)
        home.ensure()
        path = home.db
        migrations = find_migrations(migrations_dir)
        conn = _connect(path)
        try:
            version = _migrate(conn, path, migrations)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, version)

    def close(self) -> None:
        """Close every cursor and the connection."""
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _cur(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._conn.cursor()
            self._local.cur = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a transaction on the thread's cursor, or join the one already open.

        Joining lets ``under_claim`` wrap store methods that open their own transaction:
        the outermost one commits or rolls back everything.
        """
        cur = self._cur
        if self._in_transaction:
            yield cur
            return
        cur.begin()
        self._local.in_transaction = True
        try:
            yield cur
            cur.commit()
            self.note_write()
        except BaseException:
            try:
                cur.rollback()
            except duckdb.Error:  # a failed commit has rolled back already
                log.debug("rollback after a failed transaction: none open")
            raise
        finally:
            self._local.in_transaction = False

    @property
    def _in_transaction(self) -> bool:
        """Whether this thread's cursor is inside a transaction opened by ``_transaction``."""
        return getattr(self._local, "in_transaction", False)

    def note_write(self, *, triggers_only: bool = False) -> None:
        """Count a committed write (call it after the commit, so a reader never misses it).

        ``triggers_only``: it changed trigger rows and nothing an event trigger watches.
        """
        with self._wakes_lock:
            self._writes += 1
            self._trigger_writes += int(triggers_only)

    def write_count(self) -> int:
        """How many writes ``note_write`` has counted on this object (not other objects')."""
        return self._writes

    def event_write_count(self) -> int:
        """Of ``write_count``, the writes that may have made a trigger event."""
        with self._wakes_lock:
            return self._writes - self._trigger_writes

    def _retrying(self, fn: Callable[[], T]) -> T:
        """``_retry_conflicts(fn)``, or ``fn()`` once inside an open transaction.

        A conflict aborts the whole open transaction, so only its owner can retry.
        """
        return fn() if self._in_transaction else _retry_conflicts(fn)

    def _quietly(self, sql: str, params: Sequence) -> None:
        """Run an advisory write; a concurrent write to the same row wins over it."""
        try:
            self._cur.execute(sql, list(params))
        except duckdb.TransactionException:
            log.debug("advisory write skipped on conflict: %s", sql)

    def _df(self, sql: str, params: Sequence = ()) -> pd.DataFrame:
        return self._cur.execute(sql, list(params)).df()

    # ---------------------------------------------------------- observations
    def add_observation(self, *, obs_id: str, start_utc: datetime, mid_mjd: float,
                        dec_deg: float, n_subbands: int, now: datetime, partial: bool = False,
                        state: str = "pending", error: str | None = None,
                        ms_path: str | None = None) -> bool:
        """Register an observation; False if one with that id is already there."""
        if state not in STATES:
            raise ValueError(f"observation {obs_id}: unknown state {state!r}")
        rows = self._cur.execute(
            "INSERT INTO observations (id, start_utc, mid_mjd, dec_deg, n_subbands, partial, "
            "state, error, ms_path, created_utc, updated_utc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            [obs_id, start_utc, mid_mjd, dec_deg, n_subbands, partial, state, error, ms_path,
             now, now],
        ).fetchall()
        self.note_write()
        return bool(rows)

    def observation(self, obs_id: str) -> Observation:
        """One observation; UnknownObservation if absent."""
        row = self._cur.execute(
            f"SELECT {_OBS_COLUMNS} FROM observations WHERE id = ?", [obs_id]).fetchone()
        if row is None:
            raise UnknownObservation(obs_id)
        return Observation(**dict(zip(_OBS_COLUMNS.split(", "), row, strict=True)))

    def observations(self, *, state: str | None = None, limit: int = 1000) -> pd.DataFrame:
        """Observations, newest first, optionally in one state."""
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        return self._df(f"SELECT {_OBS_COLUMNS} FROM observations {where} "
                        "ORDER BY start_utc DESC LIMIT ?", [*params, limit])

    def pipeline_rows(self, *, state: str | None = None, search: str = "",
                      limit: int = 2000) -> pd.DataFrame:
        """One row per observation, newest first, with its current job and quarantine reasons.

        Columns: id, start_utc, dec_deg, n_subbands, partial, state, stage, job_state,
        progress (0–1 of the current job), attempts, next_try_utc, error, quarantine_reason,
        ms_path.
        """
        return self._df(
            "WITH current_job AS (SELECT observation_id, stage, state AS job_state, progress "
            "  FROM jobs QUALIFY row_number() OVER (PARTITION BY observation_id "
            "  ORDER BY id DESC) = 1), "
            "reasons AS (SELECT observation_id, string_agg(reason, '; ' ORDER BY id) AS reason "
            "  FROM quarantine WHERE observation_id IS NOT NULL GROUP BY observation_id) "
            "SELECT o.id, o.start_utc, o.dec_deg, o.n_subbands, o.partial, o.state, j.stage, "
            "j.job_state, coalesce(j.progress, 0.0) AS progress, o.attempts, o.next_try_utc, "
            "o.error, r.reason AS quarantine_reason, o.ms_path "
            "FROM observations o LEFT JOIN current_job j ON j.observation_id = o.id "
            "LEFT JOIN reasons r ON r.observation_id = o.id "
            "WHERE (? IS NULL OR o.state = ?) AND contains(o.id, ?) "
            "ORDER BY o.start_utc DESC LIMIT ?", [state, state, search, limit])

    def counts_by_state(self) -> dict[str, int]:
        """Observations per state, every state present (zero where none)."""
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._cur.execute(
                "SELECT state, count(*) FROM observations GROUP BY state").fetchall():
            counts[state] = n
        return counts

    def retry_observation(self, obs_id: str, *, now: datetime) -> bool:
        """Send a failed observation back to the stage it failed in; False if not failed."""
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT j.id, j.stage FROM jobs j JOIN observations o ON o.id = j.observation_id "
                "WHERE o.id = ? AND o.state = 'failed' AND j.state = 'quarantined'",
                [obs_id]).fetchone()
            if row is None:
                return False
            job_id, stage = row
            spec = stage_spec(stage)
            cur.execute("UPDATE jobs SET state = 'queued', attempts = 0, next_try_utc = NULL, "
                        "error = NULL, claimed_by = NULL WHERE id = ?", [job_id])
            cur.execute("UPDATE observations SET state = ?, attempts = 0, next_try_utc = NULL, "
                        "quarantined = false, updated_utc = ? WHERE id = ? AND state = 'failed'",
                        [spec.from_state, now, obs_id])
        return True

    # ------------------------------------------------------------------ jobs
    def enqueue(self, spec: StageSpec, *, now: datetime) -> int:
        """Create a queued job for every observation waiting in ``spec.from_state``.

        Returns how many were created; 0 if another enqueuer created them concurrently.
        """
        try:
            rows = self._cur.execute(
                "INSERT INTO jobs (observation_id, stage, created_utc) "
                "SELECT o.id, ?, ? FROM observations o WHERE o.state = ? AND NOT EXISTS "
                "(SELECT 1 FROM jobs j WHERE j.observation_id = o.id AND j.stage = ?) "
                "ORDER BY o.start_utc RETURNING id",
                [spec.name, now, spec.from_state, spec.name]).fetchall()
        except (duckdb.ConstraintException, duckdb.TransactionException):
            return 0
        return len(rows)

    def ready_jobs(self, stage: str, *, now: datetime, limit: int) -> list[int]:
        """Ids of jobs of ``stage`` that may be claimed now, oldest observation first."""
        rows = self._cur.execute(
            "SELECT j.id FROM jobs j JOIN observations o ON o.id = j.observation_id "
            "WHERE j.stage = ? AND j.state IN ('queued', 'retry') "
            "AND (j.next_try_utc IS NULL OR j.next_try_utc <= ?) "
            "ORDER BY o.start_utc LIMIT ?", [stage, now, limit]).fetchall()
        return [r[0] for r in rows]

    def claim(self, job_id: int, spec: StageSpec, *, worker: str, now: datetime) -> Claim | None:
        """Take one job: queued/retry → running and the observation into the running state.

        Returns None when another worker got there first (its UPDATE matched or the
        database reported a write conflict).
        """
        try:
            with self._transaction() as cur:
                row = cur.execute(
                    "UPDATE jobs SET state = 'running', claimed_by = ?, heartbeat_utc = ?, "
                    "started_utc = ?, finished_utc = NULL, progress = 0, "
                    "attempts = attempts + 1 "
                    "WHERE id = ? AND stage = ? AND state IN ('queued', 'retry') "
                    "AND (next_try_utc IS NULL OR next_try_utc <= ?) "
                    "RETURNING observation_id, attempts",
                    [worker, now, now, job_id, spec.name, now]).fetchone()
                if row is None:
                    raise _Lost
                obs_id, attempts = row
                moved = cur.execute(
                    "UPDATE observations SET state = ?, attempts = ?, updated_utc = ? "
                    "WHERE id = ? AND state = ? RETURNING id",
                    [spec.running_state, attempts, now, obs_id, spec.from_state]).fetchone()
                if moved is None:
                    raise _Lost
        except (_Lost, duckdb.TransactionException):
            return None
        return Claim(job_id=job_id, observation_id=obs_id, stage=spec.name, attempts=attempts,
                     worker=worker)

    def heartbeat(self, claims: Sequence[Claim], *, now: datetime) -> None:
        """Renew claims still held; a job whose row is being written is skipped this time.

        One statement per job, so a job being recorded never holds back the others' beats.
        """
        for claim in claims:
            self._quietly(
                "UPDATE jobs SET heartbeat_utc = ? WHERE id = ? AND claimed_by = ? "
                "AND attempts = ? AND state = 'running'",
                [now, claim.job_id, claim.worker, claim.attempts])

    def set_progress(self, claim: Claim, progress: float) -> None:
        """Record a running job's progress, 0–1 (skipped if the row is being written)."""
        self._quietly(
            "UPDATE jobs SET progress = ? WHERE id = ? AND claimed_by = ? AND attempts = ? "
            "AND state = 'running'",
            [min(max(progress, 0.0), 1.0), claim.job_id, claim.worker, claim.attempts])

    def under_claim(self, claim: Claim, fn: Callable[[], T], *, now: datetime,
                    attempts: int = 20) -> T | None:
        """Run ``fn`` in one transaction that first takes ``claim``'s job row; None if lost.

        The claim is held when the job is still running, claimed by this worker, in this
        attempt; it is lost when it was requeued as stale, taken by another worker or by a
        later attempt. Everything ``fn`` writes through this store in this thread joins
        the transaction (``finish``, ``fail``, a record hook's inserts): it is committed
        together, or, if the claim is lost or ``fn`` raises, nothing of it is. While
        ``fn`` runs the job row is written, so a concurrent requeue of it fails instead
        of stealing it. ``fn`` is run again after a write conflict.
        """
        if self._in_transaction:
            raise RuntimeError(f"job {claim.job_id}: under_claim inside an open transaction; "
                               "call it from the runner, outside any store transaction")

        def attempt() -> tuple[bool, T | None]:
            with self._transaction() as cur:
                # The first statement, so DuckDB's snapshot starts here and sees the latest.
                held = cur.execute(
                    "UPDATE jobs SET heartbeat_utc = ? WHERE id = ? AND claimed_by = ? "
                    "AND attempts = ? AND state = 'running' RETURNING id",
                    [now, claim.job_id, claim.worker, claim.attempts]).fetchone()
                if held is None:
                    raise _Lost
                return True, fn()

        for i in range(attempts):
            try:
                _, value = attempt()
                return value
            except _Lost:
                return None
            except (duckdb.TransactionException, duckdb.ConstraintException):
                # ConstraintException: two writers inserted one new key (variability rows).
                if i == attempts - 1:
                    raise
                time.sleep(0.005 * (i + 1))
        raise AssertionError("unreachable")

    def finish(self, claim: Claim, spec: StageSpec, *, now: datetime,
               ms_path: str | None = None, updates: Mapping[str, object] | None = None) -> bool:
        """Mark a claimed job done and move its observation on; False if the claim was lost."""
        updates = dict(updates or {})
        unknown = set(updates) - self.OBSERVATION_RESULT_COLUMNS
        if unknown:
            raise ValueError(
                f"stage {claim.stage}: cannot set observation columns {sorted(unknown)}")
        return self._retrying(
            lambda: self._finish(claim, spec, now=now, ms_path=ms_path, updates=updates))

    def _finish(self, claim: Claim, spec: StageSpec, *, now: datetime,
                ms_path: str | None, updates: dict[str, object]) -> bool:
        try:
            with self._transaction() as cur:
                row = cur.execute(
                    "UPDATE jobs SET state = 'done', finished_utc = ?, progress = 1, error = NULL, "
                    "duration_s = epoch(? - started_utc) "
                    "WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running' "
                    "RETURNING id", [now, now, claim.job_id, claim.worker, claim.attempts]
                ).fetchone()
                if row is None:
                    raise _Lost
                # Column names come from OBSERVATION_RESULT_COLUMNS, values are bound.
                extra = "".join(f", {col} = ?" for col in updates)
                cur.execute(
                    "UPDATE observations SET state = ?, attempts = 0, error = NULL, "
                    f"next_try_utc = NULL, ms_path = coalesce(?, ms_path), updated_utc = ?{extra} "
                    "WHERE id = ? AND state = ?",
                    [spec.to_state, ms_path, now, *updates.values(), claim.observation_id,
                     spec.running_state])
        except _Lost:
            return False
        return True

    def fail(self, claim: Claim, spec: StageSpec, *, error: str, now: datetime,
             retry_at: datetime | None) -> str | None:
        """Record a failed attempt: back to the queue at ``retry_at``, or quarantined if None.

        Returns the job's new state ('retry' or 'quarantined'), or None if the claim was lost.
        """
        return self._retrying(
            lambda: self._fail(claim, spec, error=error, now=now, retry_at=retry_at))

    def _fail(self, claim: Claim, spec: StageSpec, *, error: str, now: datetime,
              retry_at: datetime | None) -> str | None:
        job_state = "retry" if retry_at is not None else "quarantined"
        obs_state = spec.from_state if retry_at is not None else "failed"
        try:
            with self._transaction() as cur:
                row = cur.execute(
                    "UPDATE jobs SET state = ?, next_try_utc = ?, error = ?, finished_utc = ?, "
                    "claimed_by = NULL WHERE id = ? AND claimed_by = ? AND attempts = ? "
                    "AND state = 'running' RETURNING id",
                    [job_state, retry_at, error, now, claim.job_id, claim.worker, claim.attempts]
                ).fetchone()
                if row is None:
                    raise _Lost
                cur.execute(
                    "UPDATE observations SET state = ?, error = ?, next_try_utc = ?, "
                    "quarantined = ?, updated_utc = ? WHERE id = ? AND state = ?",
                    [obs_state, error, retry_at, retry_at is None, now, claim.observation_id,
                     spec.running_state])
        except _Lost:
            return None
        return job_state

    def release_to_wait(self, claim: Claim, spec: StageSpec, *, reason: str, now: datetime,
                        retry_at: datetime) -> bool:
        """Hand a claimed job back uncounted: it could not start yet (e.g. no calibration)."""
        return self._retrying(lambda: self._release_to_wait(
            claim, spec, reason=reason, now=now, retry_at=retry_at))

    def _release_to_wait(self, claim: Claim, spec: StageSpec, *, reason: str, now: datetime,
                         retry_at: datetime) -> bool:
        try:
            with self._transaction() as cur:
                row = cur.execute(
                    "UPDATE jobs SET state = 'retry', attempts = attempts - 1, next_try_utc = ?, "
                    "error = ?, claimed_by = NULL, finished_utc = NULL, progress = 0 "
                    "WHERE id = ? AND claimed_by = ? AND attempts = ? AND state = 'running' "
                    "RETURNING attempts",
                    [retry_at, reason, claim.job_id, claim.worker, claim.attempts]).fetchone()
                if row is None:
                    raise _Lost
                cur.execute(
                    "UPDATE observations SET state = ?, attempts = ?, error = ?, "
                    "next_try_utc = ?, updated_utc = ? WHERE id = ? AND state = ?",
                    [spec.from_state, row[0], reason, retry_at, now, claim.observation_id,
                     spec.running_state])
        except _Lost:
            return False
        return True

    def requeue_stale(self, stages: Sequence[StageSpec], *, stale_before: datetime,
                      now: datetime) -> list[int]:
        """Return running jobs whose heartbeat is older than ``stale_before`` to the queue.

        A stage whose jobs are being written meanwhile (a job recorded under its claim) is
        skipped this time: that job is alive, and the next call looks again.
        """
        requeued = []
        for spec in stages:
            try:
                requeued += self._requeue_stale(spec, stale_before=stale_before, now=now)
            except duckdb.TransactionException:
                log.debug("requeue of stale %s jobs skipped on a write conflict", spec.name)
        return requeued

    def _requeue_stale(self, spec: StageSpec, *, stale_before: datetime,
                       now: datetime) -> list[int]:
        with self._transaction() as cur:
            rows = cur.execute(
                "UPDATE jobs SET state = 'queued', claimed_by = NULL, heartbeat_utc = NULL, "
                "error = 'worker stopped responding; requeued' "
                "WHERE stage = ? AND state = 'running' "
                "AND (heartbeat_utc IS NULL OR heartbeat_utc < ?) "
                "RETURNING id, observation_id", [spec.name, stale_before]).fetchall()
            for _, obs_id in rows:
                cur.execute(
                    "UPDATE observations SET state = ?, updated_utc = ? "
                    "WHERE id = ? AND state = ?",
                    [spec.from_state, now, obs_id, spec.running_state])
        return [job_id for job_id, _ in rows]

    def job(self, job_id: int) -> dict:
        """One job as a dict of its columns."""
        cur = self._cur.execute("SELECT * FROM jobs WHERE id = ?", [job_id])
        row = cur.fetchone()
        if row is None:
            raise KeyError(f"job {job_id}: not in the store")
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def jobs_by_state(self) -> dict[str, int]:
        """Jobs per state, every state present."""
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, n in self._cur.execute(
                "SELECT state, count(*) FROM jobs GROUP BY state").fetchall():
            counts[state] = n
        return counts

    def queue_depth(self, stages: Sequence[StageSpec]) -> dict[str, int]:
        """Observations waiting for each stage (in its from-state)."""
        counts = self.counts_by_state()
        return {s.name: counts[s.from_state] for s in stages}

    def recent_jobs(self, *, limit: int = 50) -> pd.DataFrame:
        """Most recently touched jobs with their progress and errors."""
        return self._df(
            "SELECT id, observation_id, stage, state, attempts, progress, started_utc, "
            "finished_utc, duration_s, next_try_utc, claimed_by, error FROM jobs "
            "ORDER BY coalesce(finished_utc, started_utc, created_utc) DESC, id DESC LIMIT ?",
            [limit])

    # ------------------------------------------------------------- products
    def table_counts(self) -> dict[str, int]:
        """Row counts of the product tables /metrics and the overview report."""
        row = self._cur.execute(
            "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM sources), "
            "(SELECT count(*) FROM photometry), (SELECT count(*) FROM caltables)").fetchone()
        return dict(zip(("images", "sources", "photometry", "caltables"), row, strict=True))

    def stage_duration_histogram(self, bounds: Sequence[float]) -> dict[str, Histogram]:
        """Histogram of finished jobs' durations per stage, in seconds."""
        return self._histograms("jobs", "stage", "duration_s", "state = 'done'", bounds)

    def image_noise_histogram(self, bounds: Sequence[float]) -> Histogram:
        """Histogram of image rms noise in Jy/beam."""
        hists = self._histograms("images", "''", "rms_jy", "true", bounds)
        return hists.get("", _histogram_of_nothing(bounds))

    def _histograms(self, table: str, key: str, value: str, where: str,
                    bounds: Sequence[float]) -> dict[str, Histogram]:
        # Counted in DuckDB: /metrics must stay fast with millions of rows behind it.
        edges = sorted(float(b) for b in bounds)
        filters = "".join(f", count(*) FILTER (WHERE {value} <= ?)" for _ in edges)
        rows = self._cur.execute(
            f"SELECT {key}, sum({value}), count(*){filters} FROM {table} "
            f"WHERE {where} AND {value} IS NOT NULL GROUP BY 1", edges).fetchall()
        return {k: Histogram(bounds=(*edges, float("inf")), cumulative=(*cum, n),
                             total=float(total), count=n)
                for k, total, n, *cum in rows}

    # --------------------------------------------------------------- alerts
    def add_alert(self, *, severity: str, kind: str, message: str, now: datetime,
                  subject: str | None = None) -> int:
        """Raise an alert for operators; returns its id."""
        if severity not in ("info", "warning", "critical"):
            raise ValueError(f"alert severity must be info, warning or critical, got {severity!r}")
        return self._cur.execute(
            "INSERT INTO alerts (created_utc, severity, kind, subject, message) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id", [now, severity, kind, subject, message]
        ).fetchone()[0]

    def open_alerts_by_severity(self) -> dict[str, int]:
        """Unacknowledged alerts per severity."""
        counts = dict.fromkeys(("info", "warning", "critical"), 0)
        for sev, n in self._cur.execute("SELECT severity, count(*) FROM alerts "
                                        "WHERE NOT acknowledged GROUP BY severity").fetchall():
            counts[sev] = n
        return counts

    def recent_alerts(self, *, limit: int = 20) -> pd.DataFrame:
        """Newest alerts first."""
        return self._df("SELECT id, created_utc, severity, kind, subject, message, acknowledged "
                        "FROM alerts ORDER BY created_utc DESC, id DESC LIMIT ?", [limit])

    # ------------------------------------------------ ingest & quarantine
    def add_ingested_observation(self, *, obs_id: str, start_utc: datetime, mid_mjd: float,
                                 dec_deg: float, files: Sequence[str], now: datetime,
                                 partial: bool = False, freq_min_hz: float | None = None,
                                 freq_max_hz: float | None = None,
                                 n_channels: int | None = None, n_antennas: int | None = None,
                                 n_integrations: int | None = None) -> bool:
        """Register a subband group as a pending observation in one statement.

        ``files`` are the group's subband files; ``n_subbands`` is their count. Returns
        False (and changes nothing) if an observation with that id is already there.
        """
        rows = self._cur.execute(
            "INSERT INTO observations (id, start_utc, mid_mjd, dec_deg, n_subbands, partial, "
            "state, files, freq_min_hz, freq_max_hz, n_channels, n_antennas, n_integrations, "
            "created_utc, updated_utc) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            [obs_id, start_utc, mid_mjd, dec_deg, len(files), partial, list(files), freq_min_hz,
             freq_max_hz, n_channels, n_antennas, n_integrations, now, now]).fetchall()
        return bool(rows)

    def registered_files(self, paths: Sequence[str]) -> set[str]:
        """Those of ``paths`` that already belong to a registered observation."""
        if not paths:
            return set()
        rows = self._cur.execute(
            "SELECT DISTINCT f FROM (SELECT unnest(files) AS f FROM observations "
            "WHERE files IS NOT NULL) WHERE list_contains(?, f)", [list(paths)]).fetchall()
        return {r[0] for r in rows}

    def observation_starting_near(self, start_utc: datetime, *, within_s: float) -> str | None:
        """Id of an observation whose start is within ``within_s`` of ``start_utc``, if any."""
        row = self._cur.execute(
            "SELECT id FROM observations WHERE start_utc BETWEEN ? AND ? "
            "ORDER BY abs(epoch(start_utc - ?::TIMESTAMP)) LIMIT 1",
            [start_utc - timedelta(seconds=within_s), start_utc + timedelta(seconds=within_s),
             start_utc]).fetchone()
        return row[0] if row else None

    def add_quarantine(self, *, original_path: str, quarantine_path: str | None, stage: str,
                       reason: str, now: datetime, observation_id: str | None = None) -> int:
        """Record a file moved to quarantine/ (or a group given up on) and why; returns its id."""
        return self._cur.execute(
            "INSERT INTO quarantine (original_path, quarantine_path, observation_id, stage, "
            "reason, created_utc) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            [original_path, quarantine_path, observation_id, stage, reason, now]).fetchone()[0]

    def quarantined_files(self, *, limit: int = 1000) -> pd.DataFrame:
        """Quarantined input, newest first, with the reason for each."""
        return self._df(
            "SELECT id, original_path, quarantine_path, observation_id, stage, reason, "
            "created_utc FROM quarantine ORDER BY created_utc DESC, id DESC LIMIT ?", [limit])

    # ------------------------------------------------ calibration
    def add_caltable(self, *, observation_id: str, calibrator: str, b_path: str, g_path: str,
                     transit_mjd: float, valid_from_mjd: float, valid_to_mjd: float,
                     qa_passed: bool, qa_reason: str | None, snr: float | None,
                     flagged_frac: float | None, antennas_lost: int | None,
                     flux_ratio: float | None, model_flux_jy: float | None,
                     now: datetime) -> int:
        """Register one solve's bandpass + gain tables with their QA; returns its id.

        Idempotent by ``b_path``: registering the same tables again (a retried solve
        rewrote them) updates the row's figures and keeps its id.
        """
        measured = (None if flux_ratio is None or model_flux_jy is None
                    else flux_ratio * model_flux_jy)
        caltable_id = self._cur.execute(
            "INSERT INTO caltables (observation_id, calibrator, kind, path, g_path, transit_mjd, "
            "valid_from_mjd, valid_to_mjd, qa_passed, qa_reason, snr, flagged_frac, "
            "antennas_lost, flux_ratio, model_flux_jy, measured_flux_jy, created_utc) "
            "VALUES (?, ?, 'BG', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET observation_id = excluded.observation_id, "
            "calibrator = excluded.calibrator, g_path = excluded.g_path, "
            "transit_mjd = excluded.transit_mjd, valid_from_mjd = excluded.valid_from_mjd, "
            "valid_to_mjd = excluded.valid_to_mjd, qa_passed = excluded.qa_passed, "
            "qa_reason = excluded.qa_reason, snr = excluded.snr, "
            "flagged_frac = excluded.flagged_frac, antennas_lost = excluded.antennas_lost, "
            "flux_ratio = excluded.flux_ratio, model_flux_jy = excluded.model_flux_jy, "
            "measured_flux_jy = excluded.measured_flux_jy, created_utc = excluded.created_utc "
            "RETURNING id",
            [observation_id, calibrator, b_path, g_path, transit_mjd, valid_from_mjd,
             valid_to_mjd, qa_passed, qa_reason, snr, flagged_frac, antennas_lost, flux_ratio,
             model_flux_jy, measured, now]).fetchone()[0]
        self.note_write()
        return caltable_id

    def caltables(self, *, from_mjd: float | None = None, to_mjd: float | None = None,
                  observation_id: str | None = None, limit: int = 10_000) -> pd.DataFrame:
        """Registered solves whose transit lies in [from_mjd, to_mjd], oldest transit first.

        Columns: id, observation_id, calibrator, transit_mjd, valid_from_mjd, valid_to_mjd,
        qa_passed, qa_reason, snr, flagged_frac, antennas_lost, flux_ratio, model_flux_jy,
        measured_flux_jy, b_path, g_path, created_utc.
        """
        return self._df(
            "SELECT id, observation_id, calibrator, transit_mjd, valid_from_mjd, valid_to_mjd, "
            "qa_passed, qa_reason, snr, flagged_frac, antennas_lost, flux_ratio, model_flux_jy, "
            "measured_flux_jy, path AS b_path, g_path, created_utc FROM caltables "
            "WHERE kind = 'BG' AND (?::DOUBLE IS NULL OR transit_mjd >= ?) "
            "AND (?::DOUBLE IS NULL OR transit_mjd <= ?) "
            "AND (?::VARCHAR IS NULL OR observation_id = ?) "
            "ORDER BY transit_mjd, id LIMIT ?",
            [from_mjd, from_mjd, to_mjd, to_mjd, observation_id, observation_id, limit])

    def calibrator_flux_series(self) -> pd.DataFrame:
        """Measured over model flux of each calibrator solve, by calibrator and time.

        Columns: id, calibrator, transit_mjd, model_flux_jy, measured_flux_jy, ratio,
        qa_passed.
        """
        return self._df(
            "SELECT id, calibrator, transit_mjd, model_flux_jy, measured_flux_jy, "
            "flux_ratio AS ratio, qa_passed FROM caltables "
            "WHERE kind = 'BG' AND flux_ratio IS NOT NULL ORDER BY calibrator, transit_mjd, id")

    def wake_waiting(self, stage: str, now: datetime, *, reason: str = "no calibration") -> int:
        """Make jobs of ``stage`` waiting with ``reason`` ready now; returns how many."""
        woken = self._retrying(lambda: self._wake_waiting(stage, now, reason))
        with self._wakes_lock:
            self._wakes[stage] = self._wakes.get(stage, 0) + 1
        return woken

    def wakes(self, stage: str) -> int:
        """How many times this store has woken ``stage``'s waiting jobs (a wake-up count)."""
        with self._wakes_lock:
            return self._wakes.get(stage, 0)

    def _wake_waiting(self, stage: str, now: datetime, reason: str) -> int:
        spec = stage_spec(stage)
        with self._transaction() as cur:
            rows = cur.execute(
                "UPDATE jobs SET next_try_utc = ? WHERE stage = ? AND state = 'retry' "
                "AND error = ? AND next_try_utc > ? RETURNING observation_id",
                [now, stage, reason, now]).fetchall()
            ids = [r[0] for r in rows]
            if ids:
                cur.execute("UPDATE observations SET next_try_utc = ?, updated_utc = ? "
                            "WHERE list_contains(?, id) AND state = ?",
                            [now, now, ids, spec.from_state])
        return len(ids)

    def record_calibration_applied(self, observation_id: str, *, selection: str,
                                   tables: Sequence[tuple[int, float]], now: datetime) -> None:
        """Record which (caltable_id, weight) calibrated an observation, replacing earlier."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM calibration_applied WHERE observation_id = ?",
                        [observation_id])
            for caltable_id, weight in tables:
                cur.execute("INSERT INTO calibration_applied VALUES (?, ?, ?, ?, ?)",
                            [observation_id, caltable_id, selection, weight, now])

    def calibration_applied(self, observation_id: str) -> pd.DataFrame:
        """The tables that calibrated an observation: caltable_id, selection, weight, ..."""
        return self._df(
            "SELECT a.caltable_id, a.selection, a.weight, a.applied_utc, c.calibrator, "
            "c.transit_mjd FROM calibration_applied a LEFT JOIN caltables c "
            "ON c.id = a.caltable_id WHERE a.observation_id = ? ORDER BY a.weight DESC",
            [observation_id])


class _Lost(Exception):
    """Internal: the conditional UPDATE matched nothing; another worker won."""


def _retry_conflicts(fn: Callable[[], T], attempts: int = 20) -> T:
    """Repeat a conditional transaction that lost a write-write race with an advisory write.

    Safe because every such transaction re-checks the state it expects.
    """
    for i in range(attempts - 1):
        try:
            return fn()
        except duckdb.TransactionException:
            time.sleep(0.005 * (i + 1))
    return fn()


def _histogram_of_nothing(bounds: Sequence[float]) -> Histogram:
    edges = (*sorted(float(b) for b in bounds), float("inf"))
    return Histogram(bounds=edges, cumulative=(0,) * len(edges), total=0.0, count=0)


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            holder = re.search(r"PID (\d+)", text)
            raise StoreLocked(path, f"held by PID {holder.group(1)}" if holder else "locked"
                              ) from None
        raise StoreCorrupt(path, text.split("\n")[0].removeprefix("IO Error: ")) from None
    except duckdb.Error as exc:
        raise StoreCorrupt(path, str(exc).split("\n")[0]) from None


#: What a migration needs beyond SQL, run after its SQL in the same transaction, by file.
_AFTER_SQL: dict[str, Callable[[duckdb.DuckDBPyConnection], object]] = {
    # η, V and the rest of the sources whose duplicates 0006 merged (it drops their rows).
    "0006_unique_source_names.sql": lambda conn: fill_missing_variability(
        conn, now=datetime.now(UTC).replace(tzinfo=None)),
}


def _migrate(conn: duckdb.DuckDBPyConnection, path: Path, migrations: list[Migration]) -> int:
    known = migrations[-1].version if migrations else 0
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                 "(version INTEGER PRIMARY KEY, applied_utc TIMESTAMP NOT NULL)")
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > known:
        raise SchemaTooNew(path, current, known)
    for migration in migrations:
        if migration.version <= current:
            continue
        conn.begin()
        try:
            conn.execute(migration.path.read_text())
            after = _AFTER_SQL.get(migration.path.name)
            if after is not None:
                after(conn)
            conn.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP)",
                         [migration.version])
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        current = migration.version
    return current
