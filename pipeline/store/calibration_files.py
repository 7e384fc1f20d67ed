"""Reading what the store registered for the pages: caltable solutions, selection, cutouts.

Views never open caltables or FITS files themselves; they ask the store, which knows
which files are registered, and get plot-ready records back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.calibration.registry import (
    CalibrationConfig,
    CaltableRecord,
    Selection,
    select_caltables,
)
from pipeline.calibration.summary import SolutionsSummary, solutions_summary
from pipeline.cutouts import cutout_png
from pipeline.errors import ContimgError


@dataclass(frozen=True, kw_only=True)
class SourceCutout:
    """A PNG postage stamp of a source on one image, or why there is none."""

    image_id: int
    path: str | None
    png: bytes | None
    problem: str = ""


class CalibrationFileQueries:
    """Mixin of Store: the files behind caltables and photometry images, read for the pages."""

    def caltable_solutions(self, caltable_id: int) -> SolutionsSummary:
        """Gains per antenna and bandpass per channel of one registered solve.

        An unknown id gives an empty summary whose ``missing`` says so.
        """
        row = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT path, g_path FROM caltables WHERE id = ?", [int(caltable_id)]).fetchone()
        if row is None:
            return SolutionsSummary(missing=(f"caltable #{caltable_id}: not in the store",))
        return solutions_summary(row[0], row[1])

    def caltable(self, caltable_id: int) -> pd.Series | None:
        """One registered solve by id (the columns of ``caltables``), or None if unknown."""
        rows: pd.DataFrame = self._df(  # type: ignore[attr-defined]
            "SELECT id, observation_id, calibrator, transit_mjd, valid_from_mjd, valid_to_mjd, "
            "qa_passed, qa_reason, path AS b_path, g_path FROM caltables "
            "WHERE kind = 'BG' AND id = ?", [int(caltable_id)])
        return None if rows.empty else rows.iloc[0]

    def caltable_records(self, *, from_mjd: float, to_mjd: float) -> list[CaltableRecord]:
        """Registered solves with a transit in [from_mjd, to_mjd], as selection sees them."""
        rows: pd.DataFrame = self.caltables(  # type: ignore[attr-defined]
            from_mjd=from_mjd, to_mjd=to_mjd)
        return [CaltableRecord(caltable_id=int(r.id), calibrator=str(r.calibrator),
                               transit_mjd=float(r.transit_mjd),
                               valid_from_mjd=float(r.valid_from_mjd),
                               valid_to_mjd=float(r.valid_to_mjd), qa_passed=bool(r.qa_passed),
                               b_path=str(r.b_path), g_path=str(r.g_path))
                for r in rows.itertuples(index=False)]

    def caltable_selection(self, mid_mjd: float, config: CalibrationConfig) -> Selection:
        """The tables that would calibrate an observation at ``mid_mjd`` now."""
        reach = config.stale_limit_h / 24.0
        records = self.caltable_records(from_mjd=mid_mjd - reach, to_mjd=mid_mjd + reach)
        return select_caltables(mid_mjd, records, config)

    def source_cutout(self, image_id: int, ra_deg: float, dec_deg: float, *,
                      size_arcsec: float = 300.0, size_px: int = 240) -> SourceCutout:
        """A PNG of the image a photometry point was measured on, around (ra, dec)."""
        img = self.photometry_image(image_id)  # type: ignore[attr-defined]
        if img is None:
            return SourceCutout(image_id=int(image_id), path=None, png=None,
                                problem="no longer in the store")
        # The PB-corrected image is what the flux was measured on, when it was written.
        paths = [p for p in (img.pbcor_path, img.path) if p]
        path = next((p for p in paths if Path(p).is_file()), img.path)
        try:
            png = cutout_png(path, ra_deg, dec_deg, size_arcsec=size_arcsec, size_px=size_px)
        except ContimgError as exc:
            return SourceCutout(image_id=int(image_id), path=str(path), png=None,
                                problem=str(exc))
        return SourceCutout(image_id=int(image_id), path=str(path), png=png)


__all__ = ["CalibrationFileQueries", "SourceCutout"]
