"""Audit rows written where the store cannot be opened: the account commands' changes.

``contimg users`` and ``contimg apikey`` run while the server holds the DuckDB file, so
they append their audit rows to a JSON-lines spool in the home (under an exclusive lock);
the server moves the spool into the audit table at start and every few seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.actor import Actor

SPOOL_FILE = "audit-spool.jsonl"


@contextmanager
def _locked(root: Path) -> Iterator[Path]:
    path = Path(root) / SPOOL_FILE
    with open(path.with_name(f".{SPOOL_FILE}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def spool_action(root: Path, actor: Actor, action: str, *, now: datetime, target: str = "",
                 detail: str = "") -> None:
    """Append one allowed action to the home's audit spool."""
    row = {"utc": now.isoformat(), "username": actor.name, "role": actor.role,
           "action": action, "target": target, "allowed": True,
           "detail": detail or f"via {actor.via}"}
    with _locked(root) as path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(row) + "\n")


def drain_spool(root: Path, record: Any) -> int:
    """Hand every spooled row to ``record(**row)`` (Store.record_action); returns how many.

    The spool is emptied once every row is recorded.
    """
    path = Path(root) / SPOOL_FILE
    if not path.exists():
        return 0
    with _locked(root) as path:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return 0
        n = 0
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            record(username=row["username"], role=row["role"], action=row["action"],
                   allowed=bool(row["allowed"]), target=row.get("target", ""),
                   detail=row.get("detail", ""), now=datetime.fromisoformat(row["utc"]))
            n += 1
        path.unlink()
    return n
