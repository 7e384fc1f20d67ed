"""The store's provenance section: what each product was made with, and earlier image versions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd

_PROVENANCE_COLUMNS = ("id, observation_id, stage, product_kind, product_id, product_version, "
                       "run_id, settings, caltables, inputs, contimg_version, git_commit, "
                       "created_utc")


class ProvenanceQueries:
    """Mixed into Store: provenance rows and the versions of an observation's image."""

    def add_provenance(self, *, observation_id: str, stage: str, product_kind: str,
                       product_id: str | None, product_version: int | None,
                       run_id: int | None, settings: dict[str, Any],
                       caltables: list[dict[str, Any]], inputs: dict[str, Any],
                       contimg_version: str, git_commit: str, now: datetime) -> int:
        """Record one product's provenance; returns the row's id."""
        return self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO provenance (observation_id, stage, product_kind, product_id, "
            "product_version, run_id, settings, caltables, inputs, contimg_version, "
            "git_commit, created_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [observation_id, stage, product_kind, product_id, product_version, run_id,
             json.dumps(settings), json.dumps(caltables), json.dumps(inputs, default=str),
             contimg_version, git_commit, now]).fetchone()[0]

    def provenance(self, observation_id: str, *, stage: str | None = None) -> pd.DataFrame:
        """Provenance rows of an observation, oldest first; settings/caltables/inputs as dicts."""
        frame = self._df(  # type: ignore[attr-defined]
            f"SELECT {_PROVENANCE_COLUMNS} FROM provenance WHERE observation_id = ? "
            "AND (?::VARCHAR IS NULL OR stage = ?) ORDER BY id", [observation_id, stage, stage])
        for col in ("settings", "caltables", "inputs"):
            frame[col] = [json.loads(v) if isinstance(v, str) else v for v in frame[col]]
        return frame

    def image_provenance(self, image_id: int, version: int) -> dict[str, Any] | None:
        """The newest provenance row of one version of an image (None if none recorded)."""
        frame = self._df(  # type: ignore[attr-defined]
            f"SELECT {_PROVENANCE_COLUMNS} FROM provenance WHERE stage = 'image' "
            "AND product_id = ? AND product_version = ? ORDER BY id DESC LIMIT 1",
            [str(image_id), int(version)])
        if frame.empty:
            return None
        row = frame.iloc[0].to_dict()
        for col in ("settings", "caltables", "inputs"):
            row[col] = json.loads(row[col]) if isinstance(row[col], str) else row[col]
        return row

    def current_image(self, observation_id: str) -> dict[str, Any] | None:
        """The current images row of an observation as a dict, or None."""
        cur = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT * FROM images WHERE observation_id = ?", [observation_id])
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row,
                                                 strict=True))

    def image_versions(self, image_id: int) -> pd.DataFrame:
        """Every version of an image, newest first, the current one included.

        Columns: version, current, path, rms_jy, n_iter, qa_passed, qa_reason, created_utc.
        """
        return self._df(  # type: ignore[attr-defined]
            "SELECT coalesce(version, 1) AS version, true AS current, path, rms_jy, n_iter, "
            "qa_passed, qa_reason, created_utc FROM images WHERE id = ? "
            "UNION ALL SELECT version, false, path, rms_jy, n_iter, qa_passed, qa_reason, "
            "created_utc FROM image_versions WHERE image_id = ? ORDER BY version DESC",
            [int(image_id), int(image_id)])

    def _archive_image(self, cur, observation_id: str, new_path: str, now: datetime) -> int:
        """Keep the observation's current image as an earlier version; returns the next version.

        1 when there is no image yet; the same version when the path is unchanged (a retry
        rewrote the same files, nothing earlier to keep).
        """
        row = cur.execute("SELECT id, coalesce(version, 1), path FROM images "
                          "WHERE observation_id = ?", [observation_id]).fetchone()
        if row is None:
            return 1
        image_id, version, path = row
        if path == new_path:
            return version
        cur.execute(
            "INSERT INTO image_versions (image_id, observation_id, version, path, rms_jy, "
            "n_iter, qa_passed, qa_reason, created_utc, superseded_utc, row_json) "
            "SELECT id, observation_id, coalesce(version, 1), path, rms_jy, n_iter, qa_passed, "
            "qa_reason, created_utc, ?, to_json(i) FROM images i WHERE id = ? "
            "ON CONFLICT DO NOTHING", [now, image_id])
        return version + 1
