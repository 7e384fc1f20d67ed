"""The wall clock in the store's convention, shared by the runner, the stages and the views."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC as a naive datetime, the store's convention."""
    return datetime.now(UTC).replace(tzinfo=None)
