"""The store's reprocess section: selecting observations, sending them back, cancelling.

A launch is one transaction: the run's row, one item per eligible observation (with the
state it had), its from-stage and later job rows set aside, and the observation put back
in the from-stage's waiting state, so the runner's ordinary enqueue picks it up. A cancel
drops only observations whose first stage has not started (their set-aside jobs and state
come back: fully old); those already under way run to the end (fully new).

An observation whose run fails in one of its stages (quarantined) is rolled back in one
transaction (``rollback_reprocess_item``): its MS path, the calibration applied to it and
its current image as they were before the run, its jobs and state as a cancel leaves
them, nothing of the run in its provenance; the item is 'failed' with the error. A run's
products thus become the observation's only when the run's last stage records: before
that the observation is fully old again whatever failed. Bulk retry sends such items
back to the run's from-stage (``relaunch_failed_items``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from pipeline.jobs.states import STAGES, stage_spec

#: States an observation is worked on in; it is busy and cannot be sent back.
RUNNING_STATES = tuple(s.running_state for s in STAGES)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which observations a reprocess takes; None/empty leaves a criterion open.

    Times bound ``start_utc`` (inclusive); declinations in degrees; ``states`` are
    observation states; ``ids`` are observation ids (a saved query's result, say);
    ``search`` is a substring of the id (the pipeline page's search box).
    """

    from_utc: datetime | None = None
    to_utc: datetime | None = None
    dec_min: float | None = None
    dec_max: float | None = None
    states: tuple[str, ...] = ()
    ids: tuple[str, ...] = field(default_factory=tuple)
    search: str = ""

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition over ``observations o`` and its parameters."""
        conds, params = [], []
        for sql, value in (("o.start_utc >= ?", self.from_utc), ("o.start_utc <= ?", self.to_utc),
                           ("o.dec_deg >= ?", self.dec_min), ("o.dec_deg <= ?", self.dec_max)):
            if value is not None:
                conds.append(sql)
                params.append(value)
        if self.states:
            conds.append("list_contains(?, o.state)")
            params.append(list(self.states))
        if self.ids:
            conds.append("list_contains(?, o.id)")
            params.append(list(self.ids))
        if self.search:
            conds.append("contains(o.id, ?)")
            params.append(self.search)
        return " AND ".join(conds) or "true", params

    def as_json(self) -> dict[str, Any]:
        """The selection as it is kept with the run."""
        return {"from_utc": None if self.from_utc is None else self.from_utc.isoformat(),
                "to_utc": None if self.to_utc is None else self.to_utc.isoformat(),
                "dec_min": self.dec_min, "dec_max": self.dec_max, "states": list(self.states),
                "ids": list(self.ids), "search": self.search}


def _eligible_sql(from_stage: str) -> tuple[str, list[Any]]:
    """Condition: ``o`` has settled at or past ``from_stage``'s input (or failed there or later)."""
    k = [s.name for s in STAGES].index(stage_spec(from_stage).name)
    settled = [STAGES[k].from_state, *(s.to_state for s in STAGES[k:])]
    later = [s.name for s in STAGES[k:]]
    return ("(list_contains(?, o.state) OR (o.state = 'failed' AND EXISTS (SELECT 1 FROM jobs q "
            "WHERE q.observation_id = o.id AND q.state = 'quarantined' "
            "AND list_contains(?, q.stage))))", [settled, later])


def _later_stages(from_stage: str) -> list[str]:
    k = [s.name for s in STAGES].index(stage_spec(from_stage).name)
    return [s.name for s in STAGES[k:]]


class ReprocessQueries:
    """Mixed into Store: reprocess runs and their observations."""

    def reprocess_counts(self, selection: Selection, from_stage: str) -> dict[str, int]:
        """How many observations ``selection`` matches: selected, eligible, busy."""
        where, params = selection.where()
        elig, eparams = _eligible_sql(from_stage)
        row = self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT count(*), count(*) FILTER (WHERE {elig}), "
            "count(*) FILTER (WHERE list_contains(?, o.state)) "
            f"FROM observations o WHERE {where}",
            [*eparams, list(RUNNING_STATES), *params]).fetchone()
        return {"selected": int(row[0]), "eligible": int(row[1]), "busy": int(row[2])}

    def launch_reprocess(self, *, created_by: str, selection: Selection, from_stage: str,
                         overrides: dict[str, dict[str, Any]], now: datetime) -> tuple[int, int]:
        """Record a run and send its eligible observations back; returns (run id, count)."""
        return self._retrying(lambda: self._launch(  # type: ignore[attr-defined]
            created_by=created_by, selection=selection, from_stage=from_stage,
            overrides=overrides, now=now))

    def _launch(self, *, created_by: str, selection: Selection, from_stage: str,
                overrides: dict[str, dict[str, Any]], now: datetime) -> tuple[int, int]:
        spec = stage_spec(from_stage)
        where, params = selection.where()
        elig, eparams = _eligible_sql(from_stage)
        stages = _later_stages(from_stage)
        with self._transaction() as cur:  # type: ignore[attr-defined]
            run_id = cur.execute(
                "INSERT INTO reprocess_runs (created_by, created_utc, selection, from_stage, "
                "overrides) VALUES (?, ?, ?, ?, ?) RETURNING id",
                [created_by, now, json.dumps(selection.as_json()), from_stage,
                 json.dumps(overrides)]).fetchone()[0]
            n = cur.execute(
                "INSERT INTO reprocess_items (run_id, observation_id, prior_state, prior_error, "
                "prior_quarantined, prior_ms_path, updated_utc) SELECT ?, o.id, o.state, "
                f"o.error, o.quarantined, o.ms_path, ? FROM observations o WHERE {where} "
                f"AND {elig} RETURNING 1",
                [run_id, now, *params, *eparams]).fetchall()
            ids = "(SELECT observation_id FROM reprocess_items WHERE run_id = ?)"
            cur.execute(
                "INSERT INTO reprocess_saved_jobs BY NAME SELECT *, ? AS run_id FROM jobs "
                f"WHERE observation_id IN {ids} AND list_contains(?, stage)",
                [run_id, run_id, stages])
            cur.execute(
                "INSERT INTO reprocess_saved_calibration BY NAME SELECT *, ? AS run_id FROM "
                f"calibration_applied WHERE observation_id IN {ids}", [run_id, run_id])
            _send_back(cur, run_id, spec.from_state, stages, ids, [run_id], now)
        return int(run_id), len(n)

    def active_reprocess(self, observation_id: str) -> tuple[int, dict[str, Any]] | None:
        """(run id, overrides) of the run an observation is being reprocessed by, or None."""
        row = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT r.id, r.overrides FROM reprocess_items i JOIN reprocess_runs r "
            "ON r.id = i.run_id WHERE i.observation_id = ? AND i.state = 'queued' "
            "ORDER BY r.id DESC LIMIT 1", [observation_id]).fetchone()
        if row is None:
            return None
        return int(row[0]), json.loads(row[1]) if isinstance(row[1], str) else dict(row[1])

    def finish_reprocess_item(self, run_id: int, observation_id: str, *, now: datetime) -> None:
        """Mark an observation of a run done (its last stage recorded)."""
        self._cur.execute(  # type: ignore[attr-defined]
            "UPDATE reprocess_items SET state = 'done', updated_utc = ? WHERE run_id = ? "
            "AND observation_id = ? AND state = 'queued'", [now, run_id, observation_id])

    def cancel_reprocess(self, run_id: int, *, by: str, now: datetime) -> list[str]:
        """Cancel a run: drop observations not yet started (back to what they were).

        Returns the ids of those dropped; those under way finish.
        """
        return self._retrying(lambda: self._cancel(run_id, by=by, now=now))  # type: ignore[attr-defined]

    def _cancel(self, run_id: int, *, by: str, now: datetime) -> list[str]:
        row = self._cur.execute("SELECT from_stage FROM reprocess_runs WHERE id = ?",  # type: ignore[attr-defined]
                                [run_id]).fetchone()
        if row is None:
            raise KeyError(f"reprocess run {run_id}: not in the store")
        spec = stage_spec(row[0])
        stages = _later_stages(spec.name)
        with self._transaction() as cur:  # type: ignore[attr-defined]
            # Not started: still waiting in the from-stage's state, its job (if any) unclaimed.
            dropped = [r[0] for r in cur.execute(
                "SELECT i.observation_id FROM reprocess_items i JOIN observations o "
                "ON o.id = i.observation_id WHERE i.run_id = ? AND i.state = 'queued' "
                "AND o.state = ? AND NOT EXISTS (SELECT 1 FROM jobs j WHERE "
                "j.observation_id = o.id AND j.stage = ? AND j.state = 'running')",
                [run_id, spec.from_state, spec.name]).fetchall()]
            if dropped:
                cur.execute("DELETE FROM jobs WHERE list_contains(?, observation_id) "
                            "AND list_contains(?, stage)", [dropped, stages])
                cur.execute(
                    "INSERT INTO jobs BY NAME SELECT * EXCLUDE (run_id) FROM "
                    "reprocess_saved_jobs WHERE run_id = ? AND list_contains(?, observation_id)",
                    [run_id, dropped])
                cur.execute(
                    "UPDATE observations o SET state = i.prior_state, error = i.prior_error, "
                    "quarantined = i.prior_quarantined, next_try_utc = NULL, updated_utc = ? "
                    "FROM reprocess_items i WHERE i.run_id = ? AND i.observation_id = o.id "
                    "AND list_contains(?, o.id) AND o.state = ?",
                    [now, run_id, dropped, spec.from_state])
                cur.execute("UPDATE reprocess_items SET state = 'cancelled', updated_utc = ? "
                            "WHERE run_id = ? AND list_contains(?, observation_id)",
                            [now, run_id, dropped])
            cur.execute("UPDATE reprocess_runs SET state = 'cancelled', cancelled_utc = ?, "
                        "cancelled_by = ? WHERE id = ? AND state = 'running'", [now, by, run_id])
        return dropped

    def rollback_reprocess_item(self, observation_id: str, *, error: str,
                                now: datetime) -> int | None:
        """Put an observation whose run failed back to what it was before the run.

        Returns the run's id, or None when no run is reprocessing the observation. One
        transaction: the MS path, calibration applied and current image from before the
        run, the run's provenance rows gone, the jobs and state a cancel restores, and
        the item 'failed' with ``error``. The run's files stay on disk (beside the old).
        """
        return self._retrying(lambda: self._rollback(  # type: ignore[attr-defined]
            observation_id, error=error, now=now))

    def _rollback(self, observation_id: str, *, error: str, now: datetime) -> int | None:
        active = self.active_reprocess(observation_id)
        if active is None:
            return None
        run_id = active[0]
        (from_stage,) = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT from_stage FROM reprocess_runs WHERE id = ?", [run_id]).fetchone()
        stages = _later_stages(from_stage)
        one = [run_id, observation_id]
        with self._transaction() as cur:  # type: ignore[attr-defined]
            _restore_image(cur, run_id, observation_id)
            if cur.execute("SELECT 1 FROM provenance WHERE run_id = ? AND observation_id = ? "
                           "AND stage = 'calibrate'", one).fetchone():
                cur.execute("DELETE FROM calibration_applied WHERE observation_id = ?",
                            [observation_id])
                cur.execute("INSERT INTO calibration_applied BY NAME SELECT * EXCLUDE (run_id) "
                            "FROM reprocess_saved_calibration WHERE run_id = ? "
                            "AND observation_id = ?", one)
            cur.execute("DELETE FROM provenance WHERE run_id = ? AND observation_id = ?", one)
            cur.execute("DELETE FROM jobs WHERE observation_id = ? AND list_contains(?, stage)",
                        [observation_id, stages])
            cur.execute("INSERT INTO jobs BY NAME SELECT * EXCLUDE (run_id) FROM "
                        "reprocess_saved_jobs WHERE run_id = ? AND observation_id = ?", one)
            cur.execute(
                "UPDATE observations o SET state = i.prior_state, error = i.prior_error, "
                "quarantined = i.prior_quarantined, ms_path = coalesce(i.prior_ms_path, "
                "o.ms_path), attempts = 0, next_try_utc = NULL, updated_utc = ? "
                "FROM reprocess_items i "
                "WHERE i.run_id = ? AND i.observation_id = o.id AND o.id = ?", [now, *one])
            cur.execute("UPDATE reprocess_items SET state = 'failed', error = ?, "
                        "updated_utc = ? WHERE run_id = ? AND observation_id = ?",
                        [error, now, *one])
        return run_id

    def relaunch_failed_items(self, run_id: int, *, now: datetime) -> list[str]:
        """Send a run's rolled-back (failed) observations back to its from-stage; their ids."""
        return self._retrying(lambda: self._relaunch(run_id, now=now))  # type: ignore[attr-defined]

    def _relaunch(self, run_id: int, *, now: datetime) -> list[str]:
        row = self._cur.execute("SELECT from_stage FROM reprocess_runs WHERE id = ?",  # type: ignore[attr-defined]
                                [run_id]).fetchone()
        if row is None:
            raise KeyError(f"reprocess run {run_id}: not in the store")
        spec = stage_spec(row[0])
        with self._transaction() as cur:  # type: ignore[attr-defined]
            # Not one busy elsewhere: a rolled-back observation may have been sent on since.
            ids = [r[0] for r in cur.execute(
                "SELECT i.observation_id FROM reprocess_items i JOIN observations o ON "
                "o.id = i.observation_id WHERE i.run_id = ? AND i.state = 'failed' AND NOT "
                "list_contains(?, o.state) ORDER BY o.start_utc",
                [run_id, list(RUNNING_STATES)]).fetchall()]
            if ids:
                cur.execute("UPDATE reprocess_items SET state = 'queued', error = NULL, "
                            "updated_utc = ? WHERE run_id = ? AND list_contains(?, "
                            "observation_id)", [now, run_id, ids])
                _send_back(cur, run_id, spec.from_state, _later_stages(spec.name),
                           "(SELECT unnest(?))", [ids], now)
        return ids

    def reprocess_progress(self, run_id: int) -> pd.DataFrame:
        """One row per observation of a run: its status and where it is.

        Columns: observation_id, status (queued, running, done, failed, cancelled), state,
        stage, job_state, progress, error.
        """
        return self._df(  # type: ignore[attr-defined]
            "WITH cj AS (SELECT observation_id, stage, state AS job_state, progress FROM jobs "
            "  QUALIFY row_number() OVER (PARTITION BY observation_id ORDER BY id DESC) = 1) "
            "SELECT i.observation_id, CASE WHEN i.state IN ('done', 'cancelled', 'failed') "
            "  THEN i.state "
            "  WHEN o.state = 'failed' THEN 'failed' "
            "  WHEN o.state = r_from.from_state AND coalesce(cj.job_state, 'queued') <> "
            "'running' THEN 'queued' ELSE 'running' END AS status, o.state, cj.stage, "
            "cj.job_state, coalesce(cj.progress, 0.0) AS progress, coalesce(i.error, o.error) "
            "AS error "
            "FROM reprocess_items i JOIN observations o ON o.id = i.observation_id "
            "JOIN (SELECT r.id, s.from_state FROM reprocess_runs r JOIN "
            "  (SELECT unnest(?) AS name, unnest(?) AS from_state) s ON s.name = r.from_stage) "
            "r_from ON r_from.id = i.run_id "
            "LEFT JOIN cj ON cj.observation_id = o.id WHERE i.run_id = ? "
            "ORDER BY o.start_utc", [[s.name for s in STAGES], [s.from_state for s in STAGES],
                                     run_id])

    def reprocess_runs(self, *, limit: int = 50) -> pd.DataFrame:
        """Runs newest first with their counts per item state.

        Columns: id, created_by, created_utc, from_stage, overrides, state, n, n_done,
        n_cancelled.
        """
        return self._df(  # type: ignore[attr-defined]
            "SELECT r.id, r.created_by, r.created_utc, r.from_stage, r.overrides::VARCHAR AS "
            "overrides, r.state, count(i.observation_id) AS n, "
            "count(*) FILTER (WHERE i.state = 'done') AS n_done, "
            "count(*) FILTER (WHERE i.state = 'cancelled') AS n_cancelled "
            "FROM reprocess_runs r LEFT JOIN reprocess_items i ON i.run_id = r.id "
            "GROUP BY ALL ORDER BY r.id DESC LIMIT ?", [limit])

    def reprocess_failed(self, run_id: int) -> list[str]:
        """Observations of a run that failed: rolled back, or quarantined and still its own."""
        return [r[0] for r in self._cur.execute(  # type: ignore[attr-defined]
            "SELECT i.observation_id FROM reprocess_items i JOIN observations o ON "
            "o.id = i.observation_id WHERE i.run_id = ? AND (i.state = 'failed' OR "
            "(i.state = 'queued' AND o.state = 'failed')) ORDER BY o.start_utc",
            [run_id]).fetchall()]

    def observation_ids(self, selection: Selection, *, limit: int = 100_000) -> Sequence[str]:
        """Ids of the observations ``selection`` matches, oldest first."""
        where, params = selection.where()
        return [r[0] for r in self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT o.id FROM observations o WHERE {where} ORDER BY o.start_utc LIMIT ?",
            [*params, limit]).fetchall()]


def _send_back(cur, run_id: int, from_state: str, stages: list[str], ids_sql: str,
               ids_params: list[Any], now: datetime) -> None:
    """Drop the run's stages' jobs of ``ids_sql``'s observations and put them in ``from_state``."""
    cur.execute(f"DELETE FROM jobs WHERE observation_id IN {ids_sql} "
                "AND list_contains(?, stage)", [*ids_params, stages])
    cur.execute(
        "UPDATE observations SET state = ?, attempts = 0, error = NULL, "
        f"next_try_utc = NULL, quarantined = false, updated_utc = ? WHERE id IN {ids_sql}",
        [from_state, now, *ids_params])


def _restore_image(cur, run_id: int, observation_id: str) -> None:
    """Make the observation's image the version it had before run ``run_id`` made one."""
    row = cur.execute(
        "SELECT i.id, i.version FROM images i WHERE i.observation_id = ? AND EXISTS (SELECT 1 "
        "FROM provenance p WHERE p.run_id = ? AND p.observation_id = i.observation_id AND "
        "p.stage = 'image' AND p.product_version = i.version)",
        [observation_id, run_id]).fetchone()
    if row is None:
        return  # the run made no image: the current one is the old one
    image_id, version = row
    earlier = cur.execute("SELECT max(version) FROM image_versions WHERE image_id = ? AND "
                          "version < ?", [image_id, version]).fetchone()[0]
    if earlier is None:
        cur.execute("DELETE FROM images WHERE id = ?", [image_id])  # it had none before
        return
    cols = [(name, kind) for name, kind in cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = "
        "'images' AND column_name NOT IN ('id', 'observation_id') ORDER BY ordinal_position"
    ).fetchall()]
    # The earlier version's whole row was kept as JSON; each column back with its type.
    sets = ", ".join(f'"{c}" = CAST(json_extract_string(v.row_json, \'$."{c}"\') AS {t})'
                     for c, t in cols)
    cur.execute(f"UPDATE images SET {sets} FROM image_versions v WHERE v.image_id = images.id "
                "AND images.id = ? AND v.version = ?", [image_id, earlier])
    cur.execute("DELETE FROM image_versions WHERE image_id = ? AND version = ?",
                [image_id, earlier])
