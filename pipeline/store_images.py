"""The store's images section: registering images and their QA, and the image browser's queries."""

from __future__ import annotations

from datetime import datetime

#: images columns ``add_image`` accepts besides the required ones (migrations 0001, 0004).
IMAGE_COLUMNS = frozenset({
    "ra_deg", "dec_deg", "freq_hz", "rms_jy", "peak_jy", "dynamic_range", "bmaj_deg",
    "bmin_deg", "bpa_deg", "n_ref_matched", "n_ref_expected", "backend", "duration_s",
    "residual_path", "model_path", "psf_path", "pbcor_path", "thumbnail_path", "npix",
    "cell_arcsec", "weighting", "n_iter", "n_major", "threshold_jy", "theoretical_rms_jy",
    "n_vis", "qa_passed", "qa_reason"})


class ImageQueries:
    """Mixed into Store: everything about the images table."""

    def add_image(self, *, observation_id: str, path: str, mid_mjd: float, now: datetime,
                  **fields: object) -> int:
        """Register (or re-register, replacing) an observation's image; returns its id."""
        unknown = set(fields) - IMAGE_COLUMNS
        if unknown:
            raise ValueError(f"unknown image column(s): {', '.join(sorted(unknown))}")
        cols = ["observation_id", "path", "mid_mjd", "created_utc", *fields]
        vals = [observation_id, path, mid_mjd, now, *fields.values()]
        marks = ", ".join("?" * len(cols))
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        return self._cur.execute(
            f"INSERT INTO images ({', '.join(cols)}) VALUES ({marks}) "
            f"ON CONFLICT (observation_id) DO UPDATE SET {updates} RETURNING id", vals
        ).fetchone()[0]
