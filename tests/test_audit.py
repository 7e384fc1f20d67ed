"""The audit trail in a real store: actions and refusals kept, newest first, across reopen."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline.store import Store

T = datetime(2026, 12, 2, 12, 0, 0)


def test_actions_and_refusals_are_kept_newest_first_and_survive_a_reopen(home):
    with Store.open(home) as store:
        store.record_action(username="ana", role="operator", action="pause", allowed=True,
                            now=T)
        store.record_action(username="vic", role="viewer", action="retry", allowed=False,
                            target="2026-11-23T12:00:00", now=T + timedelta(seconds=5),
                            detail="needs operator")
    with Store.open(home) as store:
        rows = store.audit_rows()
        assert list(rows.action) == ["retry", "pause"]
        assert list(rows.allowed) == [False, True]
        refused = store.audit_rows(refused_only=True)
        assert list(refused.username) == ["vic"] and refused.target.iloc[0].startswith("2026")
        assert list(store.audit_rows(username="ana").action) == ["pause"]
        assert len(store.audit_rows(limit=1)) == 1


def test_an_audit_row_needs_an_action(store):
    with pytest.raises(ValueError, match="needs an action"):
        store.record_action(username="ana", role="admin", action="", allowed=True, now=T)
