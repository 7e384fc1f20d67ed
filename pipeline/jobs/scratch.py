"""Temporary paths a stage writes before it renames a product into place.

Two attempts at one observation can run at once (a job requeued while its first worker
still runs), so each attempt writes under its own name, ``.tmp-<final name>.<token>``.
While in use a temporary path is held by an exclusive ``flock`` on ``<path>.lock``;
the kernel drops that lock when the writer's process dies, which lets a sweep remove a
dead attempt's leftovers and leave a live attempt's alone. No scheduler, no store: a
stage module may import this.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"


def legacy_temp_path(final: Path) -> Path:
    """The one shared temporary name earlier versions used (swept like a dead attempt's)."""
    final = Path(final)
    return final.with_name(PREFIX + final.name)


def temp_paths(final: Path) -> list[Path]:
    """Temporary paths of any attempt at ``final`` that exist now, lock files excluded."""
    final = Path(final)
    token = re.compile(re.escape(PREFIX + final.name) + r"(\.\d+-[0-9a-f]{12})?")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if token.fullmatch(p.name))


def sweep_dead(final: Path) -> list[Path]:
    """Remove the temporary paths of dead attempts at ``final``; returns those removed.

    A path whose lock is held belongs to a live attempt (in any process on this host)
    and is kept.
    """
    removed = []
    for tmp in temp_paths(final):
        lock = _lock_of(tmp)
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # written by a version without locks: its writer is long gone
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live attempt is writing it
            log.warning("%s: removing what a dead attempt left half-written", tmp)
            _remove(tmp)
            lock.unlink(missing_ok=True)
            removed.append(tmp)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextmanager
def attempt_path(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final`` that is this attempt's alone, held while in use.

    Dead attempts' leftovers are swept first. Rename the path onto ``final`` inside the
    block; whatever is still there on leaving (an error, a refused rename) is removed.
    """
    final = Path(final)
    sweep_dead(final)
    while True:
        tmp = final.with_name(f"{PREFIX}{final.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}")
        fd = _hold(_lock_of(tmp))
        if fd is not None:
            break
    try:
        yield tmp
    finally:
        try:
            _remove(tmp)
            _lock_of(tmp).unlink(missing_ok=True)
        finally:
            os.close(fd)


def _lock_of(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + LOCK_SUFFIX)


def _hold(lock: Path) -> int | None:
    """Create and lock ``lock``; None if a sweep unlinked it before the lock was taken."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
