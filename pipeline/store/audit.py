"""The audit trail: one row per operator action, and per action a role check refused."""

from __future__ import annotations

from datetime import datetime

import pandas as pd


class AuditQueries:
    """Mixin of Store: writing and reading the audit table (migration 0008)."""

    def record_action(self, *, username: str, role: str, action: str, allowed: bool,
                      now: datetime, target: str = "", detail: str = "") -> int:
        """Append one audit row; returns its id."""
        if not action:
            raise ValueError("an audit row needs an action")
        return self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO audit (utc, username, role, action, target, allowed, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [now, username, role, action, target, allowed, detail]).fetchone()[0]

    def audit_rows(self, *, limit: int = 200, username: str | None = None,
                   refused_only: bool = False) -> pd.DataFrame:
        """Newest audit rows first, optionally one user's or only the refused ones."""
        where, params = [], []
        if username is not None:
            where.append("username = ?")
            params.append(username)
        if refused_only:
            where.append("NOT allowed")
        sql = ("SELECT id, utc, username, role, action, target, allowed, detail FROM audit "
               + (f"WHERE {' AND '.join(where)} " if where else "")
               + "ORDER BY utc DESC, id DESC LIMIT ?")
        return self._df(sql, [*params, int(limit)])  # type: ignore[attr-defined]
