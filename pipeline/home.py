"""The runtime home: one directory holding everything contimg writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import HomeError

DEFAULT_HOME = Path("var")
SUBDIRS = ("incoming", "ms", "images", "mosaics", "caltables", "backups", "quarantine")


@dataclass(frozen=True, kw_only=True)
class Home:
    """Paths inside a contimg home (``CONTIMG_HOME``, default ``./var``)."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> Home:
        """Home from an explicit path, else ``$CONTIMG_HOME``, else ``./var``."""
        chosen = home if home is not None else os.environ.get("CONTIMG_HOME") or DEFAULT_HOME
        return cls(root=Path(chosen).expanduser().absolute())

    @property
    def db(self) -> Path:
        """The DuckDB file."""
        return self.root / "contimg.duckdb"

    @property
    def incoming(self) -> Path:
        """UVH5 subband files land here."""
        return self.root / "incoming"

    @property
    def ms(self) -> Path:
        """Measurement Sets."""
        return self.root / "ms"

    @property
    def images(self) -> Path:
        """FITS images and thumbnails."""
        return self.root / "images"

    @property
    def mosaics(self) -> Path:
        """Mosaics."""
        return self.root / "mosaics"

    @property
    def caltables(self) -> Path:
        """Calibration tables."""
        return self.root / "caltables"

    @property
    def backups(self) -> Path:
        """Store backups."""
        return self.root / "backups"

    @property
    def quarantine(self) -> Path:
        """Input that could not be processed, kept with its reason in the store."""
        return self.root / "quarantine"

    def ensure(self) -> Home:
        """Create the home and its folders; raise HomeError if it cannot be written."""
        if self.root.exists() and not self.root.is_dir():
            raise HomeError(self.root, "exists and is not a directory")
        try:
            for sub in SUBDIRS:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeError(self.root, f"cannot create folders ({exc.strerror})") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise HomeError(self.root, "not writable by this user")
        return self
