"""Triggers and their history in the store; the no-pile-up claim is a conditional UPDATE."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

import duckdb
import pandas as pd

from pipeline.triggers.spec import OUTCOMES, Trigger, TriggerError, TriggerSpec

_COLUMNS = ("id, name, kind, cron, time_zone, event_kind, event_params, action, "
            "action_params, enabled, missed_policy, owner, revision, running_since, "
            "last_fired_utc, created_utc, updated_utc")
_SPEC_FIELDS = ("name", "kind", "cron", "time_zone", "event_kind", "event_params", "action",
                "action_params", "enabled", "missed_policy")


def _trigger(row: Sequence) -> Trigger:
    d = dict(zip(_COLUMNS.split(", "), row, strict=True))
    spec = TriggerSpec(**{k: (json.loads(d[k]) if k.endswith("_params") else d[k])
                          for k in _SPEC_FIELDS})
    return Trigger(id=d["id"], spec=spec, owner=d["owner"], revision=d["revision"],
                   running_since=d["running_since"], last_fired_utc=d["last_fired_utc"],
                   created_utc=d["created_utc"], updated_utc=d["updated_utc"])


def _values(spec: TriggerSpec) -> list:
    d = asdict(spec)
    return [json.dumps(d[k], sort_keys=True) if k.endswith("_params") else d[k]
            for k in _SPEC_FIELDS]


#: the table whose rows are each event kind's subjects (its part of ``event_fingerprint``)
EVENT_SOURCES = {"observation complete": "observations",
                 "calibration registered": "caltables", "calibration QA failed": "caltables",
                 "image QA failed": "images", "new images in strip": "images"}


class TriggerQueries:
    """Mixin of Store: making, editing, listing and claiming triggers; their history."""

    def add_trigger(self, spec: TriggerSpec, *, owner: str, now: datetime) -> int:
        """Store a new trigger; returns its id (TriggerError on a taken name)."""
        try:
            trigger_id = self._cur.execute(  # type: ignore[attr-defined]
                f"INSERT INTO triggers ({', '.join(_SPEC_FIELDS)}, owner, created_utc, "
                f"updated_utc) VALUES ({', '.join('?' * (len(_SPEC_FIELDS) + 3))}) "
                "RETURNING id", [*_values(spec), owner, now, now]).fetchone()[0]
        except duckdb.ConstraintException:
            raise TriggerError("name", f"a trigger named {spec.name!r} exists; choose "
                               "another name or edit that one") from None
        self.note_write(triggers_only=True)  # type: ignore[attr-defined]
        return trigger_id

    def update_trigger(self, trigger_id: int, spec: TriggerSpec, *, now: datetime) -> bool:
        """Replace a trigger's spec (a new revision); False if there is no such trigger."""
        sets = ", ".join(f"{k} = ?" for k in _SPEC_FIELDS)
        try:
            rows = self._cur.execute(  # type: ignore[attr-defined]
                f"UPDATE triggers SET {sets}, revision = nextval('trigger_revision_seq'), "
                "updated_utc = ? WHERE id = ? RETURNING id",
                [*_values(spec), now, int(trigger_id)]).fetchall()
        except duckdb.ConstraintException:
            raise TriggerError("name", f"a trigger named {spec.name!r} exists") from None
        self.note_write(triggers_only=True)  # type: ignore[attr-defined]
        return bool(rows)

    def set_trigger_enabled(self, trigger_id: int, enabled: bool, *, now: datetime) -> bool:
        """Enable or disable a trigger; False if there is no such trigger."""
        rows = self._cur.execute(  # type: ignore[attr-defined]
            "UPDATE triggers SET enabled = ?, revision = nextval('trigger_revision_seq'), "
            "updated_utc = ? WHERE id = ? RETURNING id",
            [bool(enabled), now, int(trigger_id)]).fetchall()
        self.note_write(triggers_only=True)  # type: ignore[attr-defined]
        return bool(rows)

    def delete_trigger(self, trigger_id: int) -> bool:
        """Delete a trigger (its history stays); False if there was none."""
        with self._transaction() as cur:  # type: ignore[attr-defined]
            cur.execute("DELETE FROM trigger_seen WHERE trigger_id = ?", [int(trigger_id)])
            return bool(cur.execute("DELETE FROM triggers WHERE id = ? RETURNING id",
                                    [int(trigger_id)]).fetchall())

    def trigger(self, trigger_id: int) -> Trigger | None:
        """One trigger, or None."""
        row = self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS} FROM triggers WHERE id = ?", [int(trigger_id)]).fetchone()
        return None if row is None else _trigger(row)

    def trigger_list(self) -> list[Trigger]:
        """Every trigger, by name."""
        return [_trigger(r) for r in self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS} FROM triggers ORDER BY name").fetchall()]

    def trigger_revisions(self) -> dict[int, int]:
        """Each trigger's id and revision (cheap: the service rereads only changed rows)."""
        return dict(self._cur.execute(  # type: ignore[attr-defined]
            "SELECT id, revision FROM triggers").fetchall())

    def triggers_by_id(self, ids: Sequence[int]) -> list[Trigger]:
        """The triggers with these ids (missing ones left out)."""
        if not ids:
            return []
        return [_trigger(r) for r in self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS} FROM triggers WHERE list_contains(?, id)",
            [[int(i) for i in ids]]).fetchall()]

    def claim_trigger_run(self, trigger_id: int, *, now: datetime) -> bool:
        """Take the trigger's run claim; False when a run of it is still going."""
        try:
            return bool(self._cur.execute(  # type: ignore[attr-defined]
                "UPDATE triggers SET running_since = ? WHERE id = ? AND running_since IS NULL "
                "RETURNING id", [now, int(trigger_id)]).fetchall())
        except duckdb.TransactionException:
            return False  # another firing claimed it at the same moment

    def release_trigger_run(self, trigger_id: int) -> None:
        """Drop the trigger's run claim."""
        self._cur.execute("UPDATE triggers SET running_since = NULL WHERE id = ?",  # type: ignore[attr-defined]
                          [int(trigger_id)])

    def release_all_trigger_runs(self) -> int:
        """Drop every run claim (at server start nothing runs); returns how many."""
        return len(self._cur.execute(  # type: ignore[attr-defined]
            "UPDATE triggers SET running_since = NULL WHERE running_since IS NOT NULL "
            "RETURNING id").fetchall())

    def set_trigger_last_fired(self, trigger_id: int, fire_utc: datetime) -> None:
        """Record the schedule's latest fire time handled (fired, skipped or missed)."""
        self._cur.execute(  # type: ignore[attr-defined]
            "UPDATE triggers SET last_fired_utc = ? WHERE id = ?", [fire_utc, int(trigger_id)])

    def add_trigger_history(self, *, trigger_id: int, fired_utc: datetime, fired_by: str,
                            outcome: str, enqueued: str = "", detail: str = "") -> int:
        """Append one firing to a trigger's history; returns its id."""
        if outcome not in OUTCOMES:
            raise ValueError(f"trigger outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        return self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO trigger_history (trigger_id, fired_utc, fired_by, enqueued, outcome, "
            "detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            [int(trigger_id), fired_utc, fired_by, enqueued, outcome, detail]).fetchone()[0]

    def trigger_history(self, *, trigger_id: int | None = None,
                        limit: int = 200) -> pd.DataFrame:
        """Firings newest first.

        Columns: id, trigger_id, trigger, fired_utc, fired_by, enqueued, outcome, detail.
        """
        return self._df(  # type: ignore[attr-defined]
            "SELECT h.id, h.trigger_id, t.name AS trigger, h.fired_utc, h.fired_by, "
            "h.enqueued, h.outcome, h.detail FROM trigger_history h "
            "LEFT JOIN triggers t ON t.id = h.trigger_id "
            "WHERE (?::BIGINT IS NULL OR h.trigger_id = ?) "
            "ORDER BY h.fired_utc DESC, h.id DESC LIMIT ?", [trigger_id, trigger_id, limit])

    # ------------------------------------------------------------- events
    def event_fingerprint(self) -> dict[str, tuple]:
        """Per event source table, values that change whenever an event from it may have.

        One query; keys "observations", "caltables", "images".
        """
        # one aggregate a table joined by UNION ALL: about half the time of six scalar
        # subqueries in one SELECT (DuckDB plans each subquery as its own join)
        rows = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT 'observations', count(*), max(updated_utc) FROM observations "
            "WHERE state = 'complete' UNION ALL "
            "SELECT 'caltables', count(*), max(created_utc) FROM caltables UNION ALL "
            "SELECT 'images', count(*), max(created_utc) FROM images").fetchall()
        return {table: (n, latest) for table, n, latest in rows}

    def unseen_event_subjects_many(self, event_kind: str, watchers: Sequence[tuple]
                                   ) -> dict[int, list[str]]:
        """Subjects of ``event_kind`` each trigger has not acted on yet, in one query.

        ``watchers``: (trigger_id, since, dec_min, dec_max) each (the strip bounds only for
        "new images in strip"). Returns the unseen subjects by trigger id, sorted; triggers
        with none are left out.
        """
        if not watchers:
            return {}
        sources = {  # each kind's table is EVENT_SOURCES[kind]
            "observation complete": "SELECT id AS s, updated_utc AS t, NULL AS dec "
                                    "FROM observations WHERE state = 'complete'",
            "calibration registered": "SELECT 'caltable:' || id, created_utc, NULL "
                                      "FROM caltables",
            "calibration QA failed": "SELECT 'caltable:' || id, created_utc, NULL "
                                     "FROM caltables WHERE NOT qa_passed",
            "image QA failed": "SELECT 'image:' || id, created_utc, NULL FROM images "
                               "WHERE qa_passed = false",
            "new images in strip": "SELECT 'image:' || id, created_utc, dec_deg FROM images",
        }
        cols = [list(c) for c in zip(*watchers, strict=True)]
        rows = self._cur.execute(  # type: ignore[attr-defined]
            "WITH w AS (SELECT unnest(?::BIGINT[]) AS tid, unnest(?::TIMESTAMP[]) AS since, "
            "unnest(?::DOUBLE[]) AS lo, unnest(?::DOUBLE[]) AS hi), "
            f"e(s, t, dec) AS ({sources[event_kind]}) "
            "SELECT w.tid, e.s FROM w JOIN e ON e.t >= w.since "
            "AND (w.lo IS NULL OR e.dec BETWEEN w.lo AND w.hi) "
            "ANTI JOIN trigger_seen ts ON ts.trigger_id = w.tid AND ts.subject = e.s "
            "ORDER BY w.tid, e.s", cols).fetchall()
        out: dict[int, list[str]] = {}
        for tid, subject in rows:
            out.setdefault(int(tid), []).append(str(subject))
        return out

    def mark_event_subjects_seen(self, trigger_id: int, subjects: Sequence[str]) -> None:
        """Record that the trigger acted on ``subjects`` (so it never fires for them again)."""
        if subjects:
            self._cur.execute(  # type: ignore[attr-defined]
                "INSERT INTO trigger_seen SELECT ?, unnest(?) ON CONFLICT DO NOTHING",
                [int(trigger_id), list(subjects)])
