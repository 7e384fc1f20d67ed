"""A reprocess run's files beside the current ones: ``ms/run<N>/`` working copies.

The stage side makes them (paths only); the server side removes those of observations
a run dropped or rolled back, which nothing in the store points at any more.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_dir(root: Path, tag: str) -> Path:
    """The folder under ``root`` (home.ms, home.images) a run tagged ``tag`` writes into."""
    return Path(root) / _UNSAFE.sub("_", tag)


def run_tag(run_id: int) -> str:
    """The product tag of reprocess run ``run_id`` (what the input hook hands stages)."""
    return f"run{int(run_id)}"


def ms_working_copy(ms: Path, ms_root: Path, tag: str) -> Path:
    """The run's own copy of ``ms`` in ``ms_root/<tag>/`` (made fresh), or ``ms`` if it is one.

    A from-convert rerun's MS is already the run's own; otherwise the current MS is
    copied, so calibrating the copy leaves the current one (and the image made from it)
    untouched until the stage records. A copy left by a failed attempt is replaced: each
    attempt starts from the current MS. A missing ``ms`` gives the copy's path with
    nothing there (the repair step rebuilds it there).
    """
    ms, target_dir = Path(ms), run_dir(ms_root, tag)
    if ms.parent == target_dir:
        return ms
    target = target_dir / ms.name
    partial = target.with_name(target.name + ".copying")
    for stale in (target, partial):
        if stale.exists():
            shutil.rmtree(stale)
    target_dir.mkdir(parents=True, exist_ok=True)
    if ms.is_dir():
        # Copied under another name and renamed: a crash mid-copy never leaves a copy that
        # looks whole. The MS is closed (no stage writes it while this one holds the job).
        shutil.copytree(ms, partial, symlinks=True)
        os.rename(partial, target)
    return target


def remove_run_ms(ms_root: Path, run_id: int, ms_name: str) -> bool:
    """Remove run ``run_id``'s MS named ``ms_name`` (and the run's folder once empty)."""
    folder = run_dir(ms_root, run_tag(run_id))
    removed = False
    for path in (folder / ms_name, folder / (ms_name + ".copying")):
        if path.exists():
            shutil.rmtree(path)
            removed = True
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return removed


def run_images_dir(images_root: Path, observation_id: str, run_id: int) -> Path:
    """Where run ``run_id`` writes an observation's image files (the image stage's layout)."""
    return run_dir(run_dir(images_root, observation_id), run_tag(run_id))


def remove_run_images(images_root: Path, observation_id: str, run_id: int,
                      keep: str | None = None) -> bool:
    """Remove run ``run_id``'s image files of an observation, unless ``keep`` lies among them.

    ``keep`` is the image path the store records now: a folder it points into is in use.
    """
    folder = run_images_dir(images_root, observation_id, run_id)
    if not folder.is_dir() or (keep and Path(keep).resolve().is_relative_to(folder.resolve())):
        return False
    shutil.rmtree(folder)
    return True
