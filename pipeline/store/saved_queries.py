"""Saved queries: a page's filter kept by name, private to its owner, shared with the team,
or public. Visibility is enforced here, in the SQL, so no page, list, API or URL can hand a
private query to anyone but its owner: for them it does not exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from pipeline.errors import ContimgError

VISIBILITIES = ("private", "team", "public")
PAGES = ("sources", "images", "pipeline")
#: Who a reader is: a signed-in user's name, or None for a signed-out (read-only) visitor.
Reader = str | None


class SavedQueryError(ContimgError):
    """A saved query that cannot be made or changed as asked; says which and why."""


@dataclass(frozen=True, kw_only=True)
class SavedQuery:
    """One saved query as a reader may see it."""

    id: int
    owner: str
    page: str
    name: str
    description: str
    visibility: str
    spec: dict[str, Any]
    forked_from: int | None
    created_utc: datetime
    updated_utc: datetime


_COLUMNS = ("id, owner, page, name, description, visibility, spec, forked_from, created_utc, "
            "updated_utc")


def _visible_sql(reader: Reader) -> tuple[str, list[Any]]:
    """The WHERE clause of what ``reader`` may see: their own, the team's, the public."""
    if reader is None:
        return "visibility = 'public'", []
    return "(owner = ? OR visibility IN ('team', 'public'))", [reader]


class SavedQueryQueries:
    """Mixin of Store: saving, listing, opening, editing, forking and deleting queries."""

    def save_query(self, *, owner: str, page: str, name: str, spec: dict[str, Any],
                   now: datetime, visibility: str = "private",
                   description: str = "") -> int:
        """Keep ``spec`` under ``name`` for ``owner``; returns the new query's id."""
        _check(page=page, name=name, visibility=visibility, spec=spec)
        try:
            return self._cur.execute(  # type: ignore[attr-defined]
                "INSERT INTO saved_queries (owner, page, name, description, visibility, spec, "
                "created_utc, updated_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [owner, page, name, description, visibility, json.dumps(spec, sort_keys=True),
                 now, now]).fetchone()[0]
        except duckdb.ConstraintException as exc:
            raise SavedQueryError(f"{owner} already has a {page} query named {name!r}; "
                                  "choose another name or edit that one") from exc

    def saved_query(self, query_id: int, *, reader: Reader) -> SavedQuery | None:
        """The query ``query_id`` if ``reader`` may see it, else None (as if it did not exist)."""
        where, params = _visible_sql(reader)
        row = self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS} FROM saved_queries WHERE id = ? AND {where}",
            [int(query_id), *params]).fetchone()
        return None if row is None else _query(row)

    def saved_queries(self, *, reader: Reader, page: str | None = None) -> pd.DataFrame:
        """Every query ``reader`` may see (optionally of one page): theirs first, by name."""
        where, params = _visible_sql(reader)
        if page is not None:
            where += " AND page = ?"
            params.append(page)
        return self._df(  # type: ignore[attr-defined]
            f"SELECT {_COLUMNS} FROM saved_queries WHERE {where} "
            "ORDER BY owner = ? DESC, lower(name), id", [*params, reader or ""])

    def update_query(self, query_id: int, *, by: str, now: datetime, name: str | None = None,
                     description: str | None = None, visibility: str | None = None,
                     spec: dict[str, Any] | None = None) -> SavedQuery:
        """Change one's own query; anyone else's is refused (a private one is 'not found')."""
        current = self._owned(query_id, by)
        new = {"name": current.name if name is None else name,
               "description": current.description if description is None else description,
               "visibility": current.visibility if visibility is None else visibility,
               "spec": current.spec if spec is None else spec}
        _check(page=current.page, name=new["name"], visibility=new["visibility"],
               spec=new["spec"])
        try:
            self._cur.execute(  # type: ignore[attr-defined]
                "UPDATE saved_queries SET name = ?, description = ?, visibility = ?, spec = ?, "
                "updated_utc = ? WHERE id = ?",
                [new["name"], new["description"], new["visibility"],
                 json.dumps(new["spec"], sort_keys=True), now, int(query_id)])
        except duckdb.ConstraintException as exc:
            raise SavedQueryError(f"{by} already has a {current.page} query named "
                                  f"{new['name']!r}") from exc
        return self.saved_query(query_id, reader=by)  # type: ignore[return-value]

    def delete_query(self, query_id: int, *, by: str) -> None:
        """Delete one's own query."""
        self._owned(query_id, by)
        self._cur.execute("DELETE FROM saved_queries WHERE id = ?",  # type: ignore[attr-defined]
                          [int(query_id)])

    def fork_query(self, query_id: int, *, by: str, now: datetime,
                   name: str | None = None) -> int:
        """A private copy, owned by ``by``, of a query they may see; returns its id."""
        source = self.saved_query(query_id, reader=by)
        if source is None:
            raise SavedQueryError(f"saved query #{query_id}: not found")
        visible = self.saved_queries(reader=by, page=source.page)
        taken = set(visible.loc[visible["owner"] == by, "name"])
        base = name or (source.name if source.owner != by else f"{source.name} (copy)")
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base} ({n})", n + 1
        with self._transaction() as cur:  # type: ignore[attr-defined]
            new_id = self.save_query(owner=by, page=source.page, name=candidate,
                                     spec=source.spec, now=now, description=source.description)
            cur.execute("UPDATE saved_queries SET forked_from = ? WHERE id = ?",
                        [int(query_id), new_id])
        return new_id

    def _owned(self, query_id: int, by: str) -> SavedQuery:
        query = self.saved_query(query_id, reader=by)
        if query is None:
            raise SavedQueryError(f"saved query #{query_id}: not found")
        if query.owner != by:
            raise SavedQueryError(f"saved query #{query_id} belongs to {query.owner}: fork it "
                                  "to change a copy of your own")
        return query


def _check(*, page: str, name: str, visibility: str, spec: dict[str, Any]) -> None:
    if page not in PAGES:
        raise SavedQueryError(f"page {page!r}: queries are saved on {', '.join(PAGES)}")
    if not name or not name.strip() or len(name) > 120:
        raise SavedQueryError("a saved query needs a name of 1-120 characters")
    if visibility not in VISIBILITIES:
        raise SavedQueryError(f"visibility {visibility!r}: one of {', '.join(VISIBILITIES)}")
    if not isinstance(spec, dict):
        raise SavedQueryError(f"a saved query's filter is a mapping, got {type(spec).__name__}")


def _query(row: tuple) -> SavedQuery:
    qid, owner, page, name, description, visibility, spec, forked, created, updated = row
    return SavedQuery(id=int(qid), owner=owner, page=page, name=name, description=description,
                      visibility=visibility, spec=json.loads(spec),
                      forked_from=None if forked is None else int(forked),
                      created_utc=created, updated_utc=updated)
