"""Exceptions that name the file or object, the problem and the remedy."""

from __future__ import annotations

from pathlib import Path


class ContimgError(Exception):
    """Base of every error contimg reports to a user as one line."""


class ObservationError(ContimgError):
    """Something about one observation, named by its id: what each stage raises."""

    def __init__(self, obs_id: str, problem: str):
        super().__init__(f"observation {obs_id}: {problem}")
        self.obs_id = obs_id


class HomeError(ContimgError):
    """The runtime home cannot be used."""

    def __init__(self, home: Path, problem: str):
        super().__init__(f"home {home}: {problem}")
        self.home = home


class StoreCorrupt(ContimgError):
    """The DuckDB file exists but is not a readable contimg database."""

    def __init__(self, path: Path, detail: str):
        super().__init__(
            f"{path}: not a readable DuckDB database ({detail}); it was left untouched — "
            "move it aside or restore a backup (contimg backup restore)"
        )
        self.path = path


class StoreLocked(ContimgError):
    """Another process holds the DuckDB file open for writing."""

    def __init__(self, path: Path, detail: str):
        super().__init__(
            f"{path}: in use by another process ({detail}); stop it, or talk to the running "
            "server's /api instead"
        )
        self.path = path


class SchemaTooNew(ContimgError):
    """The database was written by a newer contimg than this one."""

    def __init__(self, path: Path, found: int, known: int):
        super().__init__(
            f"{path}: schema version {found} is newer than this contimg knows ({known}); "
            "upgrade contimg — the file was left untouched"
        )
        self.path = path
        self.found = found
        self.known = known


class UnknownObservation(ContimgError):
    """An observation id that the store does not hold."""

    def __init__(self, obs_id: str):
        super().__init__(f"observation {obs_id}: not in the store")
        self.obs_id = obs_id
