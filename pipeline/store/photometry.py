"""The store's photometry section, write side: catalog seeding, measurements, variability.

Mixed into Store. Pages read through ``pipeline.store.sources`` (the read side).

Appends stay cheap at 100 M photometry rows because only the day-sized table of recent
rows is indexed (migration 0013: ``photometry`` is a view over ``photometry_sorted`` and
``photometry_recent``): an image's rows go in sorted by source_id in one bulk INSERT from
a DataFrame, and ``photometry_runs`` says whether an image was measured before, so only a
re-measurement pays for the DELETE that replaces its rows. Catalog ids follow RA, so the
sources of one field form a narrow id range and any scan of their rows is pruned to it by
DuckDB's zone maps.

Variability is kept as per-source running aggregates (migration 0007): recording an image
updates them from that image's rows alone (``variability.apply_rows``), so its cost does
not grow with history. Only sources whose new row could beat the stored pair maximum, or
whose replaced row held an extreme or the pair, are read from ``photometry``;
``recompute_variability`` recomputes everything from the rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from pipeline.photometry.thresholds import VariabilityThresholds
from pipeline.photometry.variability import (
    AGGREGATE_COLUMNS,
    DETECTION_SNR,
    apply_rows,
    flag_variable,
)

log = logging.getLogger(__name__)

#: Columns of the frame ``record_photometry`` takes for measured rows.
PHOTOMETRY_FRAME_COLUMNS = ("source_id", "flux_jy", "flux_err_jy", "snr", "local_rms_jy",
                            "background_jy", "pb", "flags", "forced")
#: Columns of the frame ``record_photometry`` takes for new (detected) sources.
NEW_SOURCE_COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "snr",
                      "local_rms_jy", "pb")
#: Variability columns every schema since 0005 has; 0007 adds _AGG_ONLY_COLUMNS.
_VARIABILITY_COLUMNS = ("n_meas", "wmean_jy", "eta", "v", "vs_max", "m_max", "is_variable",
                        "mean_jy", "max_jy", "min_jy", "max_snr", "n_detected", "first_mjd",
                        "last_mjd")
_AGG_ONLY_COLUMNS = ("ref_jy", "sum_w", "sum_wd", "sum_wdd", "sum_d", "sum_dd", "min_err_jy",
                     "pair_image_a", "pair_image_b")
#: Tries of a photometry write that loses a write-write conflict.
WRITE_ATTEMPTS = 10
#: Rows sorted at once by ``resort_photometry_tail`` (bounds its memory).
RESORT_SLICE_ROWS = 5_000_000
#: Above this many sources per kind, one image raises a single summary alert.
MAX_ALERTS_PER_IMAGE = 10


@dataclass(frozen=True, kw_only=True)
class PhotometryWrite:
    """What ``record_photometry`` did."""

    image_id: int
    n_rows: int
    replaced: bool                  # the image had rows before; they were replaced
    new_source_ids: tuple[int, ...]
    newly_variable_ids: tuple[int, ...]


class PhotometryQueries:
    """Mixed into Store: writing sources, photometry and variability."""

    # ------------------------------------------------------------------ catalog
    def catalog_seeded(self) -> bool:
        """Whether the reference catalog is in ``sources`` already."""
        return self._cur.execute(
            "SELECT count(*) > 0 FROM sources WHERE origin = 'catalog'").fetchall()[0][0]

    def add_catalog_sources(self, frame: pd.DataFrame, *, now: datetime) -> int:
        """Insert those reference sources (name, ra_deg, dec_deg, flux_jy, spectral_index) not in.

        One transaction adds every name ``sources`` lacks, so two seeders at once add each
        name once: the unique index on ``sources.name`` makes the later commit fail, and
        its retry finds the names there. Ids are given in RA order, so a field's sources
        form a narrow id range. Returns the number inserted.
        """
        cat = frame.loc[:, ["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index"]]
        repeated = cat["name"][cat["name"].duplicated()].unique()
        if len(repeated):
            raise ValueError(f"reference catalog: {len(repeated)} name(s) more than once "
                             f"(first {repeated[0]!r}); a name identifies one source, so make "
                             "the names unique")
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return self._insert_catalog(cat, now=now)
            except (duckdb.TransactionException, duckdb.ConstraintException):
                # Another seeder committed some of these names since this one began.
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                log.info("catalog insert conflicted with another seeder, retrying")
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _insert_catalog(self, cat: pd.DataFrame, *, now: datetime) -> int:
        cur = self._cur
        _register(cur, "_catalog_in", cat)
        try:
            with self._transaction() as tx:
                return int(tx.execute(
                    "INSERT INTO sources (name, ra_deg, dec_deg, catalog_flux_jy, "
                    "spectral_index, origin, created_utc) SELECT c.name, c.ra_deg, c.dec_deg, "
                    "c.flux_jy, c.spectral_index, 'catalog', ? FROM _catalog_in c "
                    "WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE s.name = c.name) "
                    "ORDER BY c.ra_deg, c.dec_deg", [now]).fetchone()[0])
        finally:
            _unregister(cur, "_catalog_in")

    # ---------------------------------------------------------------- the stage
    def image_to_measure(self, observation_id: str) -> dict | None:
        """The observation's images row as the measure stage needs it, or None."""
        cols = ("id", "path", "pbcor_path", "residual_path", "psf_path", "mid_mjd", "ra_deg",
                "dec_deg", "freq_hz", "npix", "cell_arcsec", "bmaj_deg", "qa_passed",
                "qa_reason")
        row = self._cur.execute(f"SELECT {', '.join(cols)} FROM images "
                                "WHERE observation_id = ?", [observation_id]).fetchone()
        return None if row is None else dict(zip(cols, row, strict=True))

    def sources_in_field(self, ra_deg: float, dec_deg: float, radius_deg: float
                         ) -> pd.DataFrame:
        """Sources within ``radius_deg`` of a position: id, name, ra_deg, dec_deg, origin."""
        cos_dec = max(np.cos(np.radians(min(abs(dec_deg) + radius_deg, 90.0))), 1e-6)
        ra_half = min(radius_deg / cos_dec, 180.0)
        return self._df(
            "SELECT id, name, ra_deg, dec_deg, origin FROM sources "
            "WHERE dec_deg BETWEEN ? AND ? "
            "AND abs(((ra_deg - ? + 540.0) % 360.0) - 180.0) <= ? "
            "AND degrees(acos(least(1.0, sin(radians(dec_deg)) * sin(radians(?)) "
            "  + cos(radians(dec_deg)) * cos(radians(?)) * cos(radians(ra_deg - ?))))) <= ? "
            "ORDER BY id",
            [dec_deg - radius_deg, dec_deg + radius_deg, ra_deg, ra_half,
             dec_deg, dec_deg, ra_deg, radius_deg])

    def record_photometry(self, *, image_id: int, observation_id: str, mjd: float,
                          rows: pd.DataFrame, new_sources: pd.DataFrame, n_islands: int,
                          now: datetime, thresholds: VariabilityThresholds | None = None
                          ) -> PhotometryWrite:
        """Write one image's measurements, replacing any earlier ones, in one transaction.

        ``rows`` has PHOTOMETRY_FRAME_COLUMNS (known sources); ``new_sources`` has
        NEW_SOURCE_COLUMNS (each becomes a 'detected' source with one unforced row).
        Then variability is updated for every source touched and alerts are raised
        for new sources and sources that became variable. Two images of overlapping
        fields recorded at once conflict on their sources' variability rows; the loser
        is rolled back and written again (it re-reads everything it depends on).
        """
        thresholds = thresholds or VariabilityThresholds()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return self._record_photometry(
                    image_id=image_id, observation_id=observation_id, mjd=mjd, rows=rows,
                    new_sources=new_sources, n_islands=n_islands, now=now,
                    thresholds=thresholds)
            except (duckdb.TransactionException, duckdb.ConstraintException):
                # ConstraintException: both inserted the first variability row of a source.
                # Inside a caller's transaction (a record under a claim) only it can retry.
                if attempt == WRITE_ATTEMPTS - 1 or self._in_transaction:
                    raise
                log.info("image %d: photometry write conflicted, retrying", image_id)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _record_photometry(self, *, image_id: int, observation_id: str, mjd: float,
                           rows: pd.DataFrame, new_sources: pd.DataFrame, n_islands: int,
                           now: datetime, thresholds: VariabilityThresholds
                           ) -> PhotometryWrite:
        cur = self._cur
        with self._transaction() as tx:
            replaced = tx.execute("SELECT count(*) > 0 FROM photometry_runs WHERE image_id = ?",
                                  [image_id]).fetchall()[0][0]
            tables = _photometry_tables(tx)
            before = None
            if replaced:
                # Their values leave the running aggregates (variability.apply_rows).
                before = tx.execute("SELECT source_id, flux_jy, flux_err_jy, snr, mjd "
                                    "FROM photometry WHERE image_id = ?", [image_id]).df()
                for table in tables:
                    tx.execute(f"DELETE FROM {table} WHERE image_id = ?", [image_id])
            rows, new_sources = _known_names_as_rows(tx, rows, new_sources)
            new_ids = self._insert_new_sources(tx, new_sources, image_id=image_id, now=now)
            frame = _photometry_frame(rows, new_sources, new_ids, image_id=image_id, mjd=mjd)
            _register(cur, "_phot_in", frame)
            try:
                # A source discovered in this image keeps its unforced row on re-measurement.
                tx.execute(
                    f"INSERT INTO {tables[-1]} (source_id, image_id, mjd, flux_jy, "
                    "flux_err_jy, snr, forced, local_rms_jy, background_jy, pb, flags) "
                    "SELECT f.source_id, f.image_id, f.mjd, f.flux_jy, f.flux_err_jy, f.snr, "
                    "f.forced AND s.first_image_id IS DISTINCT FROM f.image_id, f.local_rms_jy, "
                    "f.background_jy, f.pb, f.flags FROM _phot_in f "
                    "LEFT JOIN sources s ON s.id = f.source_id ORDER BY f.source_id")
            finally:
                _unregister(cur, "_phot_in")
            tx.execute(
                "INSERT INTO photometry_runs (image_id, observation_id, mjd, n_forced, n_new, "
                "n_islands, sorted, measured_utc) VALUES (?, ?, ?, ?, ?, ?, false, ?) "
                "ON CONFLICT (image_id) DO UPDATE SET observation_id = excluded.observation_id, "
                "mjd = excluded.mjd, n_forced = excluded.n_forced, n_new = excluded.n_new, "
                "n_islands = excluded.n_islands, sorted = false, "
                "measured_utc = excluded.measured_utc",
                [image_id, observation_id, mjd, len(rows), len(new_ids), n_islands, now])
            newly = self._apply_image_variability(tx, frame, before, image_id=image_id,
                                                  thresholds=thresholds, now=now)
            self._photometry_alerts(new_sources, new_ids, newly, observation_id, now=now)
        return PhotometryWrite(image_id=image_id, n_rows=len(frame), replaced=bool(replaced),
                               new_source_ids=tuple(int(i) for i in new_ids),
                               newly_variable_ids=tuple(int(i) for i in newly))

    def _insert_new_sources(self, tx, new_sources: pd.DataFrame, *, image_id: int,
                            now: datetime) -> np.ndarray:
        if new_sources is None or len(new_sources) == 0:
            return np.zeros(0, np.int64)
        ids = np.asarray([r[0] for r in tx.execute(
            "SELECT nextval('sources_id_seq') FROM range(?)", [len(new_sources)]).fetchall()],
            np.int64)
        frame = pd.DataFrame({"id": ids, "name": new_sources["name"].astype(str).to_numpy(),
                              "ra_deg": new_sources["ra_deg"].to_numpy(float),
                              "dec_deg": new_sources["dec_deg"].to_numpy(float)})
        _register(self._cur, "_new_src", frame)
        try:
            tx.execute("INSERT INTO sources (id, name, ra_deg, dec_deg, origin, created_utc, "
                       "first_image_id) SELECT id, name, ra_deg, dec_deg, 'detected', ?, ? "
                       "FROM _new_src", [now, image_id])
        finally:
            _unregister(self._cur, "_new_src")
        return ids

    def _apply_image_variability(self, tx, frame: pd.DataFrame, before: pd.DataFrame | None,
                                 *, image_id: int, thresholds: VariabilityThresholds,
                                 now: datetime) -> np.ndarray:
        """Update the touched sources' variability from this image's rows alone.

        The running aggregates take the new rows (and give back the replaced ones); only
        sources whose new row might beat the stored pair maximum, or whose removed row held
        an extreme, are read from ``photometry`` (see ``variability.apply_rows``). Returns
        the sources that became variable.
        """
        add = frame.loc[:, ["source_id", "flux_jy", "flux_err_jy", "snr", "mjd"]]
        touched = np.union1d(add["source_id"].to_numpy(np.int64),
                             np.zeros(0, np.int64) if before is None
                             else before["source_id"].to_numpy(np.int64))
        if touched.size == 0:
            return np.zeros(0, np.int64)
        aggregates = _has_aggregates(tx)
        doubled = add["source_id"].duplicated().any() or (
            before is not None and before["source_id"].duplicated().any())
        if not aggregates or doubled:
            # A store held below migration 0007 (a migration's own test), or an image with
            # two rows of one source (the aggregates take one): from the rows.
            rows = self._variability_from_rows(tx, touched, image_id=image_id,
                                               full=before is not None or doubled,
                                               thresholds=thresholds, aggregates=aggregates)
            return self._write_variability(tx, rows, touched, thresholds=thresholds, now=now,
                                           aggregates=aggregates)
        _register(self._cur, "_touched", pd.DataFrame({"source_id": touched}))
        try:
            old = tx.execute(
                f"SELECT source_id, {', '.join(AGGREGATE_COLUMNS)}, is_variable "
                "FROM variability WHERE source_id IN (SELECT source_id FROM _touched)").df()
        finally:
            _unregister(self._cur, "_touched")
        old = old.set_index("source_id")
        up = apply_rows(old, add=add, remove=before, image_id=image_id,
                        m_threshold=thresholds.m)
        state = up.state.drop(index=up.pairs)
        state["was_variable"] = old["is_variable"].reindex(state.index).fillna(False
                                                                               ).astype(bool)
        parts = [state.reset_index()]
        if up.recompute.size:
            parts.append(self._variability_from_rows(tx, up.recompute, image_id=image_id,
                                                     full=True, thresholds=thresholds))
        if up.pairs.size:
            parts.append(self._variability_from_rows(tx, up.pairs, image_id=image_id,
                                                     full=False, thresholds=thresholds))
        rows = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
            len(p) for p in parts) else parts[0]
        return self._write_variability(tx, rows, touched, thresholds=thresholds, now=now)

    def _variability_from_rows(self, tx, source_ids: np.ndarray, *, image_id: int, full: bool,
                               thresholds: VariabilityThresholds, aggregates: bool = True
                               ) -> pd.DataFrame:
        """Every figure of ``source_ids`` computed from all their photometry rows.

        The pair maximum is incremental with ``full`` False (pairs of image ``image_id``'s
        rows with the source's other rows, merged with the stored maximum) and over all
        pairs with ``full``. ``aggregates``: the variability table has 0007's columns
        (False only inside migration 0006). Sources with no rows are absent.
        """
        _register(self._cur, "_touched", pd.DataFrame({"source_id": source_ids}))
        try:
            # Inlined (ints) so the planner prunes row groups by their source_id min/max;
            # a bound parameter is planned before its value is known.
            lo, hi = int(source_ids.min()), int(source_ids.max())
            # After an append only pairs with this image's rows are new: join those rows
            # with the rest (N per source) rather than all pairs (N² per source).
            pair_join = ("a.image_id < b.image_id" if full
                         else "a.image_id = $img AND b.image_id <> $img")
            old_pair = ("old.pair_image_a", "old.pair_image_b") if aggregates else (
                "NULL::BIGINT", "NULL::BIGINT")
            rows = tx.execute(
                f"""
                WITH p AS (
                    SELECT source_id, image_id, mjd, flux_jy AS s, flux_err_jy AS e, snr
                    FROM photometry WHERE source_id BETWEEN {lo} AND {hi}
                    AND source_id IN (SELECT source_id FROM _touched)),
                agg AS (
                    SELECT source_id, count(*) AS n_meas,
                           sum(s / (e * e)) / sum(1.0 / (e * e)) AS wmean_jy,
                           avg(s) AS mean_jy, stddev_samp(s) AS sd, max(s) AS max_jy,
                           min(s) AS min_jy, max(snr) AS max_snr,
                           count(*) FILTER (WHERE snr >= {DETECTION_SNR}) AS n_detected,
                           min(mjd) AS first_mjd, max(mjd) AS last_mjd, min(e) AS min_err_jy
                    FROM p GROUP BY source_id),
                chi AS (
                    SELECT p.source_id,
                           CASE WHEN agg.n_meas > 1 THEN
                                sum((p.s - agg.wmean_jy) ** 2 / (p.e * p.e)) / (agg.n_meas - 1)
                                END AS eta,
                           any_value(agg.mean_jy) AS ref_jy,
                           sum(1.0 / (p.e * p.e)) AS sum_w,
                           sum((p.s - agg.mean_jy) / (p.e * p.e)) AS sum_wd,
                           sum((p.s - agg.mean_jy) ** 2 / (p.e * p.e)) AS sum_wdd,
                           sum(p.s - agg.mean_jy) AS sum_d,
                           sum((p.s - agg.mean_jy) ** 2) AS sum_dd
                    FROM p JOIN agg USING (source_id) GROUP BY p.source_id, agg.n_meas),
                pairs AS (
                    SELECT a.source_id, a.image_id AS ia, b.image_id AS ib,
                           abs(a.s - b.s) / sqrt(a.e * a.e + b.e * b.e) AS vs,
                           abs(2.0 * (a.s - b.s) / (a.s + b.s)) AS m
                    FROM p a JOIN p b ON a.source_id = b.source_id AND {pair_join}),
                best AS (
                    SELECT source_id, max(vs) AS vs, arg_max(m, vs) AS m,
                           arg_max(ia, vs) AS ia, arg_max(ib, vs) AS ib FROM pairs
                    WHERE m > $m_thr GROUP BY source_id),
                merged AS (
                    SELECT agg.* EXCLUDE (sd), chi.* EXCLUDE (source_id),
                           CASE WHEN agg.sd IS NULL OR agg.mean_jy = 0 THEN NULL
                                ELSE agg.sd / agg.mean_jy END AS v,
                           ($full OR old.source_id IS NULL
                            OR coalesce(best.vs, 0) > coalesce(old.vs_max, 0)) AS take,
                           CASE WHEN take THEN coalesce(best.vs, 0) ELSE old.vs_max END
                               AS vs_max,
                           CASE WHEN take THEN coalesce(best.m, 0) ELSE old.m_max END AS m_max,
                           CASE WHEN take THEN best.ia ELSE {old_pair[0]} END AS pair_image_a,
                           CASE WHEN take THEN best.ib ELSE {old_pair[1]} END AS pair_image_b,
                           coalesce(old.is_variable, false) AS was_variable
                    FROM agg JOIN chi USING (source_id)
                    LEFT JOIN best USING (source_id)
                    LEFT JOIN variability old USING (source_id))
                SELECT * EXCLUDE (take) FROM merged
                """,
                {"full": full, "m_thr": thresholds.m,
                 **({} if full else {"img": image_id})}).df()
        finally:
            _unregister(self._cur, "_touched")
        return rows

    def _write_variability(self, tx, rows: pd.DataFrame, source_ids: np.ndarray, *,
                           thresholds: VariabilityThresholds, now: datetime,
                           aggregates: bool = True) -> np.ndarray:
        """Upsert ``rows`` (figures of sources that have rows) and drop the rest of
        ``source_ids``' variability rows; returns the sources that became variable."""
        # The η threshold depends on N through a χ² quantile: one function, shared with
        # the NumPy reference, decides on the metrics computed.
        rows = rows.copy()
        rows["is_variable"] = flag_variable(rows["n_meas"], rows["eta"], rows["v"],
                                            rows["vs_max"], rows["m_max"], rows["max_snr"],
                                            thresholds=thresholds)
        for col in ("n_meas", "n_detected"):
            rows[col] = rows[col].astype(np.int64)
        for col in ("pair_image_a", "pair_image_b"):
            if col in rows:
                rows[col] = rows[col].astype("Int64")  # NaN (no pair) becomes NULL
        cols = list(_VARIABILITY_COLUMNS) + (list(_AGG_ONLY_COLUMNS) if aggregates else [])
        frame = rows.loc[:, ["source_id", *cols]]
        _register(self._cur, "_var_new", frame)
        try:
            # Sources left with no rows (a re-measurement dropped them) lose their metrics.
            gone = np.setdiff1d(source_ids, rows["source_id"].to_numpy(np.int64))
            if gone.size:
                tx.execute("DELETE FROM variability WHERE list_contains(?, source_id)",
                           [gone.tolist()])
            tx.execute(
                f"INSERT INTO variability (source_id, updated_utc, {', '.join(cols)}) "
                f"SELECT source_id, ?, {', '.join(cols)} FROM _var_new "
                "ON CONFLICT (source_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in ("updated_utc", *cols)), [now])
        finally:
            _unregister(self._cur, "_var_new")
        newly = rows.loc[rows["is_variable"] & ~rows["was_variable"].astype(bool), "source_id"]
        return newly.to_numpy(np.int64)

    def _recompute_sources(self, tx, source_ids: np.ndarray, *,
                           thresholds: VariabilityThresholds, now: datetime,
                           aggregates: bool = True) -> np.ndarray:
        """Recompute ``source_ids`` from all their rows, in slices of the id range."""
        newly = []
        # Slices keep the all-pairs self-join's memory bounded at 100 M rows.
        for chunk in np.array_split(source_ids, max(1, source_ids.size // 20_000)):
            if chunk.size:
                rows = self._variability_from_rows(tx, chunk, image_id=-1, full=True,
                                                   thresholds=thresholds,
                                                   aggregates=aggregates)
                newly.append(self._write_variability(tx, rows, chunk, thresholds=thresholds,
                                                     now=now, aggregates=aggregates))
        return np.concatenate(newly) if newly else np.zeros(0, np.int64)

    def recompute_variability(self, *, now: datetime,
                              thresholds: VariabilityThresholds | None = None) -> int:
        """Recompute every source's variability from all its rows (after a threshold change)."""
        thresholds = thresholds or VariabilityThresholds()
        ids = self._cur.execute("SELECT DISTINCT source_id FROM photometry").fetchnumpy()
        source_ids = np.asarray(ids["source_id"], np.int64)
        with self._transaction() as tx:
            self._recompute_sources(tx, np.sort(source_ids), thresholds=thresholds, now=now)
        return int(source_ids.size)

    def _photometry_alerts(self, new_sources: pd.DataFrame, new_ids: np.ndarray,
                           newly_variable: np.ndarray, observation_id: str, *,
                           now: datetime) -> None:
        if len(new_ids):
            if len(new_ids) > MAX_ALERTS_PER_IMAGE:
                self.add_alert(severity="warning", kind="new sources", subject=observation_id,
                               now=now, message=f"{len(new_ids)} new sources in "
                               f"{observation_id} (image may have artefacts)")
            else:
                for sid, r in zip(new_ids, new_sources.itertuples(index=False), strict=True):
                    self.add_alert(
                        severity="warning", kind="new source", subject=str(r.name), now=now,
                        message=f"new source {r.name} (id {sid}) at RA {r.ra_deg:.4f} "
                                f"Dec {r.dec_deg:.4f}: {r.flux_jy * 1e3:.1f} mJy, "
                                f"SNR {r.snr:.1f} in {observation_id}")
        if len(newly_variable):
            if len(newly_variable) > MAX_ALERTS_PER_IMAGE:
                self.add_alert(severity="warning", kind="variable sources",
                               subject=observation_id, now=now,
                               message=f"{len(newly_variable)} sources became variable "
                               f"after {observation_id} (check its calibration)")
                return
            names = dict(self._cur.execute(
                "SELECT id, name FROM sources WHERE list_contains(?, id)",
                [newly_variable.tolist()]).fetchall())
            for sid in newly_variable:
                name = names.get(int(sid), str(sid))
                self.add_alert(severity="info", kind="variable source", subject=name, now=now,
                               message=f"source {name} (id {sid}) is variable after "
                                       f"{observation_id}")

    # --------------------------------------------------------------- upkeep
    def resort_photometry_tail(self) -> int:
        """Re-sort the rows of images appended since the last re-sort by (source_id, mjd).

        Rows of those images move to the end of the table of sorted rows in source order,
        so a lightcurve touches one row group per re-sort instead of one per image (since
        migration 0013 they come from ``photometry_recent``, and from photometry_sorted
        those written before it). Returns the number of rows moved. Run nightly (DESIGN:
        1–2 ms lightcurves when sorted).
        """
        unsorted = "image_id IN (SELECT image_id FROM photometry_runs WHERE NOT sorted)"
        with self._transaction() as tx:
            tables = _photometry_tables(tx)
            n = tx.execute(f"SELECT count(*) FROM photometry WHERE {unsorted}").fetchone()[0]
            if n:
                # A table in the file, not TEMP (in memory): 100 M rows of tail held in
                # memory, then sorted at once, took 17.7 GB and was OOM-killed on 24 GB.
                tx.execute("CREATE OR REPLACE TABLE _photometry_resort AS SELECT * "
                           f"FROM photometry WHERE {unsorted}")
                for table in tables:
                    tx.execute(f"DELETE FROM {table} WHERE {unsorted}")
                lo, hi = tx.execute("SELECT min(source_id), max(source_id) "
                                    "FROM _photometry_resort").fetchone()
                # Slices of the id range, appended in order, sort a few M rows at a time.
                n_slices = max(1, int(n) // RESORT_SLICE_ROWS)
                edges = np.linspace(lo, hi + 1, n_slices + 1).astype(np.int64)
                for a, b in zip(edges[:-1], edges[1:], strict=True):
                    tx.execute(f"INSERT INTO {tables[0]} SELECT * FROM _photometry_resort "
                               f"WHERE source_id >= {int(a)} AND source_id < {int(b)} "
                               "ORDER BY source_id, mjd")
                tx.execute("DROP TABLE _photometry_resort")
            tx.execute("UPDATE photometry_runs SET sorted = true WHERE NOT sorted")
        if n:
            # Until a checkpoint the deleted rows' row groups are still scanned.
            try:
                self._cur.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.info("checkpoint after re-sort postponed: %s", exc)
        return int(n)

def fill_missing_variability(conn: duckdb.DuckDBPyConnection, *, now: datetime,
                             thresholds: VariabilityThresholds | None = None) -> int:
    """Compute variability of every source with photometry but no variability row.

    Runs on ``conn`` inside its open transaction (a migration's: 0006 drops the rows of the
    sources it merged). Returns the number of sources computed.
    """
    ids = conn.execute("SELECT DISTINCT source_id FROM photometry WHERE source_id NOT IN "
                       "(SELECT source_id FROM variability)").fetchnumpy()["source_id"]
    source_ids = np.sort(np.asarray(ids, np.int64))
    # Inside migration 0006 the variability table lacks 0007's aggregate columns.
    aggregates = _has_aggregates(conn)
    _OnConnection(conn)._recompute_sources(
        conn, source_ids, thresholds=thresholds or VariabilityThresholds(), now=now,
        aggregates=aggregates)
    if source_ids.size:
        log.info("computed variability of %d source(s) that had none", source_ids.size)
    return int(source_ids.size)


class _OnConnection(PhotometryQueries):
    """The write side over one bare connection, before a Store exists (migrations)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self._cur = conn


def _has_aggregates(conn) -> bool:
    """Whether the variability table has migration 0007's running-aggregate columns."""
    return bool(conn.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'variability' "
        "AND column_name = 'sum_w'").fetchone()[0])


def _photometry_tables(conn) -> tuple[str, ...]:
    """The tables under ``photometry``: (sorted, recent) since migration 0013, else itself.

    Rows are appended to the last and re-sorted into the first; a re-measurement deletes
    an image's rows from each.
    """
    split = conn.execute("SELECT count(*) FROM duckdb_tables() "
                         "WHERE table_name = 'photometry_recent'").fetchone()[0]
    return ("photometry_sorted", "photometry_recent") if split else ("photometry",)


def _register(cur, name: str, frame: pd.DataFrame) -> None:
    """Register a DataFrame as a view on ``cur``.

    DuckDB refuses to register while an earlier ``fetchone()`` left a result unread (as
    ``add_alert`` does), so that result is run to its end first.
    """
    cur.complete()
    cur.register(name, frame)


def _unregister(cur, name: str) -> None:
    """Drop a registered view; after a failed statement DuckDB may refuse, which is fine."""
    try:
        cur.unregister(name)
    except duckdb.Error:
        log.debug("could not unregister %s after an aborted transaction", name)


def _known_names_as_rows(tx, rows: pd.DataFrame, new_sources: pd.DataFrame | None
                         ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """New-source candidates whose name a source has already become rows of that source.

    Names are unique (migration 0006): two images of one field measured at once can each
    find the same new source, and the later writer then finds its name taken; two islands
    of one image that round to one name keep the brighter. Returns (rows, new_sources).
    """
    if new_sources is None or len(new_sources) == 0:
        return rows, new_sources
    new_sources = (new_sources.sort_values("snr", ascending=False, kind="stable")
                   .drop_duplicates("name").sort_index())
    names = new_sources["name"].astype(str)
    known = dict(tx.execute("SELECT name, id FROM sources WHERE list_contains(?, name)",
                            [names.tolist()]).fetchall())
    if not known:
        return rows, new_sources
    hit = names.isin(list(known)).to_numpy()
    found = new_sources[hit]
    ids = found["name"].astype(str).map(known).to_numpy(np.int64)
    fresh = ~np.isin(ids, rows["source_id"].to_numpy(np.int64))  # not measured here already
    extra = pd.DataFrame({
        "source_id": ids[fresh], "flux_jy": found["flux_jy"].to_numpy(float)[fresh],
        "flux_err_jy": found["flux_err_jy"].to_numpy(float)[fresh],
        "snr": found["snr"].to_numpy(float)[fresh],
        "local_rms_jy": found["local_rms_jy"].to_numpy(float)[fresh], "background_jy": 0.0,
        "pb": found["pb"].to_numpy(float)[fresh], "flags": 0, "forced": False})
    return pd.concat([rows, extra], ignore_index=True), new_sources[~hit]


def _photometry_frame(rows: pd.DataFrame, new_sources: pd.DataFrame, new_ids: np.ndarray, *,
                      image_id: int, mjd: float) -> pd.DataFrame:
    """One frame of rows to insert: the measured sources, then the new ones (unforced)."""
    missing = set(PHOTOMETRY_FRAME_COLUMNS) - set(rows.columns)
    if missing:
        raise ValueError(f"image {image_id}: photometry rows lack {sorted(missing)}")
    parts = [rows.loc[:, list(PHOTOMETRY_FRAME_COLUMNS)]]
    if len(new_ids):
        new = new_sources.loc[:, ["flux_jy", "flux_err_jy", "snr", "local_rms_jy", "pb"]].copy()
        new.insert(0, "source_id", new_ids)
        new["background_jy"], new["flags"], new["forced"] = 0.0, 0, False
        parts.append(new.loc[:, list(PHOTOMETRY_FRAME_COLUMNS)])
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
    frame = frame.astype({"source_id": np.int64, "flags": np.int32, "forced": bool})
    frame.insert(1, "image_id", np.int64(image_id))
    frame.insert(2, "mjd", float(mjd))
    return frame.sort_values("source_id", kind="stable").reset_index(drop=True)
