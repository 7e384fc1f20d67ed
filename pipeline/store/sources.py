"""The store's sources section (read side): filtered source tables, lightcurves, η–V points.

Sources are joined with their variability row (absent until a source is first measured).
A ``FilterSpec`` describes one filter; it round-trips through JSON so that a saved query
can hold it. Lightcurves read ``photometry``, a view (migration 0013) over the re-sorted
rows, kept sorted by source_id (DESIGN.md) so that DuckDB's row-group min/max skip
everything but one source's rows, and the rows appended since, read by an ART index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from pipeline.errors import ContimgError
from pipeline.store.annotations import (
    AnnotationError,
    annotation_join_sql,
    normalise_tag,
    tag_condition_sql,
)

#: Columns a filtered source table may be sorted by (``sep_arcsec`` only with a cone).
SORT_COLUMNS = ("id", "name", "ra_deg", "dec_deg", "catalog_flux_jy", "wmean_jy", "n_meas",
                "eta", "v", "vs_max", "m_max", "sep_arcsec")
SOURCE_COLUMNS = ("id", "name", "ra_deg", "dec_deg", "catalog_flux_jy", "origin", "n_meas",
                  "wmean_jy", "eta", "v", "vs_max", "m_max", "is_variable")
LIGHTCURVE_COLUMNS = ("mjd", "flux_jy", "flux_err_jy", "snr", "forced", "image_id")
_ROWS_PER_VECTOR = 2048  # DuckDB hands results back in vectors of this many rows


class InvalidFilter(ContimgError, ValueError):
    """A source filter that cannot be run as given."""

    def __init__(self, problem: str):
        super().__init__(f"source filter: {problem}")


@dataclass(frozen=True, kw_only=True)
class FilterSpec:
    """One filter over the sources table; ``None`` leaves a bound open.

    Flux bounds apply to the weighted mean measured flux (Jy). A cone needs ``ra_deg``,
    ``dec_deg`` and ``radius_arcsec`` together; the separation is exact on the sphere.
    """

    eta_min: float | None = None
    eta_max: float | None = None
    v_min: float | None = None
    v_max: float | None = None
    flux_min_jy: float | None = None
    flux_max_jy: float | None = None
    n_meas_min: int | None = None
    n_meas_max: int | None = None
    name: str = ""
    ra_deg: float | None = None
    dec_deg: float | None = None
    radius_arcsec: float | None = None
    variable_only: bool = False
    origin: str | None = None
    tag: str = ""
    sort_by: str = "eta"
    descending: bool = True

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "sort_by", "tag"):
                ok = isinstance(value, str)
            elif f.name in ("variable_only", "descending"):
                ok = isinstance(value, bool)
            elif f.name == "origin":
                ok = value is None or isinstance(value, str)
            elif f.name.startswith("n_meas"):
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = value is None or (isinstance(value, int | float)
                                       and not isinstance(value, bool))
            if not ok:
                raise InvalidFilter(f"{f.name} = {value!r} has the wrong type")
        for lo, hi in (("eta_min", "eta_max"), ("v_min", "v_max"),
                       ("flux_min_jy", "flux_max_jy"), ("n_meas_min", "n_meas_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            for key, val in ((lo, a), (hi, b)):
                if val is not None and not math.isfinite(val):
                    raise InvalidFilter(f"{key} must be a finite number, got {val!r}")
            if a is not None and b is not None and a > b:
                raise InvalidFilter(f"{lo} = {a} is above {hi} = {b}; swap them")
        cone = (self.ra_deg, self.dec_deg, self.radius_arcsec)
        if any(c is not None for c in cone) and any(c is None for c in cone):
            raise InvalidFilter("a position search needs ra_deg, dec_deg and radius_arcsec")
        if self.dec_deg is not None and not -90 <= self.dec_deg <= 90:
            raise InvalidFilter(f"dec_deg = {self.dec_deg} is outside [-90, 90]")
        if self.radius_arcsec is not None and not 0 < self.radius_arcsec <= 180 * 3600:
            raise InvalidFilter(f"radius_arcsec = {self.radius_arcsec} must be in (0, 648000]")
        if self.origin not in (None, "catalog", "detected"):
            raise InvalidFilter(f"origin {self.origin!r} is neither 'catalog' nor 'detected'")
        if self.sort_by not in SORT_COLUMNS:
            raise InvalidFilter(f"cannot sort by {self.sort_by!r}; choose one of "
                                f"{', '.join(SORT_COLUMNS)}")
        if self.tag.strip():
            _tag_param(self.tag)  # a tag no target can carry (a comma) is refused here
        if self.sort_by == "sep_arcsec" and not self.has_cone:
            raise InvalidFilter("sorting by sep_arcsec needs a position search")

    @property
    def has_cone(self) -> bool:
        """Whether this filter is a position search."""
        return self.radius_arcsec is not None

    def to_json(self) -> str:
        """JSON text that ``from_json`` turns back into an equal FilterSpec."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FilterSpec:
        """The FilterSpec ``to_json`` wrote; unknown keys are an error, missing ones default."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidFilter(f"not JSON ({exc}); save the filter again") from None
        if not isinstance(data, dict):
            raise InvalidFilter(f"expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidFilter(f"unknown key(s) {', '.join(sorted(unknown))}; this saved "
                                "filter was written by another contimg version")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class SourcesPage:
    """One page of a filtered source table and how many rows the whole filter matches."""

    rows: pd.DataFrame
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, kw_only=True)
class PhotometryImage:
    """The image a photometry point was measured on."""

    id: int
    path: str
    pbcor_path: str | None
    mid_mjd: float


def _where(spec: FilterSpec) -> tuple[str, list]:
    """SQL WHERE text over ``s`` (sources) and ``v`` (variability) with its parameters."""
    clauses, params = ["TRUE"], []

    def between(col: str, lo: object, hi: object) -> None:
        if lo is not None:
            clauses.append(f"{col} >= ?")
            params.append(lo)
        if hi is not None:
            clauses.append(f"{col} <= ?")
            params.append(hi)

    between("v.eta", spec.eta_min, spec.eta_max)
    between("v.v", spec.v_min, spec.v_max)
    between("v.wmean_jy", spec.flux_min_jy, spec.flux_max_jy)
    between("coalesce(v.n_meas, 0)", spec.n_meas_min, spec.n_meas_max)
    if spec.name:
        clauses.append("contains(lower(s.name), lower(?))")
        params.append(spec.name)
    if spec.variable_only:
        clauses.append("coalesce(v.is_variable, false)")
    if spec.origin is not None:
        clauses.append("s.origin = ?")
        params.append(spec.origin)
    if spec.tag.strip():
        clauses.append(tag_condition_sql("source", "s.id"))
        params.append(_tag_param(spec.tag))
    if spec.has_cone:
        # A declination band first (cheap, uses zone maps), then the exact separation.
        r_deg = spec.radius_arcsec / 3600.0
        clauses.append("s.dec_deg BETWEEN ? AND ?")
        params += [spec.dec_deg - r_deg, spec.dec_deg + r_deg]
        clauses.append(f"{_SEP_SQL} <= ?")
        params += [*_sep_params(spec), spec.radius_arcsec]
    return " AND ".join(clauses), params


def _tag_param(tag: str) -> str:
    try:
        return normalise_tag(tag)
    except AnnotationError as exc:
        raise InvalidFilter(str(exc)) from None


# Haversine great-circle distance in arcsec: well-conditioned at small separations.
_SEP_SQL = ("degrees(2 * asin(least(1.0, sqrt(pow(sin(radians(s.dec_deg - ?) / 2), 2) + "
            "cos(radians(s.dec_deg)) * cos(radians(?)) * "
            "pow(sin(radians(s.ra_deg - ?) / 2), 2))))) * 3600")


_SOURCE_SELECT = ("s.id, s.name, s.ra_deg, s.dec_deg, s.catalog_flux_jy, s.origin, "
                  "coalesce(v.n_meas, 0) AS n_meas, v.wmean_jy, v.eta, v.v, v.vs_max, v.m_max, "
                  "coalesce(v.is_variable, false) AS is_variable")


def _sep_params(spec: FilterSpec) -> list[float]:
    return [spec.dec_deg, spec.dec_deg, spec.ra_deg]


class SourceQueries:
    """Mixed into Store: the read side of sources, variability and photometry."""

    def _source_select(self, spec: FilterSpec, *, annotations: bool = False
                       ) -> tuple[str, list]:
        where, params = _where(spec)
        sep, sep_params = ("NULL::DOUBLE", []) if not spec.has_cone else (
            _SEP_SQL, _sep_params(spec))
        direction = "DESC" if spec.descending else "ASC"
        # Exports add each source's tags and consensus QA rating (migration 0010).
        ann_cols, ann_joins = (annotation_join_sql("source", "s.id") if annotations
                               else ("", ""))
        sql = (f"SELECT {_SOURCE_SELECT}, {sep} AS sep_arcsec{', ' if ann_cols else ''}"
               f"{ann_cols} FROM sources s LEFT JOIN variability v ON v.source_id = s.id "
               f"{ann_joins} WHERE {where} "
               # id breaks ties so that pages never repeat or skip a row.
               f"ORDER BY {spec.sort_by} {direction} NULLS LAST, id")
        return sql, sep_params + params

    def count_sources(self, spec: FilterSpec) -> int:
        """How many sources ``spec`` matches."""
        where, params = _where(spec)
        return int(self._cur.execute(
            "SELECT count(*) FROM sources s LEFT JOIN variability v ON v.source_id = s.id "
            f"WHERE {where}", params).fetchone()[0])

    def sources_page(self, spec: FilterSpec, *, limit: int = 50, offset: int = 0) -> SourcesPage:
        """One page (``limit`` rows from ``offset``) of the filtered, sorted source table."""
        if limit < 1 or offset < 0:
            raise InvalidFilter(f"page limit {limit} / offset {offset}: need limit ≥ 1, "
                                "offset ≥ 0")
        sql, params = self._source_select(spec)
        rows = self._cur.execute(f"{sql} LIMIT ? OFFSET ?", [*params, limit, offset]).df()
        return SourcesPage(rows=rows, total=self.count_sources(spec), offset=offset,
                           limit=limit)

    def iter_sources(self, spec: FilterSpec, *, chunk_rows: int = 50_000
                     ) -> Iterator[pd.DataFrame]:
        """The whole filtered table, in order, as DataFrames of at most ~``chunk_rows`` rows.

        Runs on its own cursor so that other queries on this thread do not cut the stream.
        Columns: a page's, then ``tags`` (comma-joined) and ``qa_consensus`` (None: unrated).
        """
        sql, params = self._source_select(spec, annotations=True)
        vectors = max(1, math.ceil(chunk_rows / _ROWS_PER_VECTOR))
        cur = self._conn.cursor()
        try:
            result = cur.execute(sql, params)
            first = True
            while True:
                chunk = result.fetch_df_chunk(vectors)
                if chunk.empty and not first:
                    return
                first = False
                yield chunk
                if len(chunk) < vectors * _ROWS_PER_VECTOR:
                    return
        finally:
            cur.close()

    def export_sources(self, spec: FilterSpec) -> pd.DataFrame:
        """Every row ``spec`` matches (not one page), for export."""
        return pd.concat(list(self.iter_sources(spec)), ignore_index=True)

    def source(self, source_id: int) -> dict | None:
        """One source with its variability figures (the columns of a page row), or None."""
        rows = self._cur.execute(
            f"SELECT {_SOURCE_SELECT}, NULL::DOUBLE AS sep_arcsec FROM sources s "
            "LEFT JOIN variability v ON v.source_id = s.id WHERE s.id = ?",
            [int(source_id)]).df()
        return None if rows.empty else rows.iloc[0].to_dict()

    def sources_revision(self) -> tuple:
        """Changes whenever sources or variability change: a cheap test for a page refresh."""
        return tuple(self._cur.execute(
            "SELECT (SELECT count(*) FROM sources), (SELECT max(id) FROM sources), "
            "(SELECT count(*) FROM variability), (SELECT max(updated_utc) FROM variability)"
        ).fetchone())

    def lightcurve(self, source_id: int) -> pd.DataFrame:
        """One source's measurements by time: mjd, flux_jy, flux_err_jy, snr, forced, image_id."""
        # The id is inlined (it is an int) so the planner sees a constant and prunes row
        # groups by their source_id min/max; a bound parameter is planned before its value.
        # The few hundred rows are put in time order here and come back through numpy, not
        # .df(): DuckDB's sort is a pipeline of its own, and on two busy cores each
        # pipeline and the pandas conversion cost more than the scan of a day's unsorted
        # row groups (benchmarks/bench_photometry.py prints both ways).
        data = self._cur.execute(
            f"SELECT {', '.join(LIGHTCURVE_COLUMNS)} FROM photometry "
            f"WHERE source_id = {int(source_id)}").fetchnumpy()
        frame = pd.DataFrame({c: data[c] for c in LIGHTCURVE_COLUMNS})
        order = np.lexsort((frame["image_id"].to_numpy(), frame["mjd"].to_numpy()))
        return frame.take(order).reset_index(drop=True)

    def eta_v_points(self, spec: FilterSpec | None = None, *, limit: int = 100_000
                     ) -> pd.DataFrame:
        """Sources the filter matches that can sit on log η–V axes (η > 0, V > 0).

        Columns id, name, eta, v, wmean_jy, n_meas, is_variable; at most ``limit``, most
        variable (largest η) first.
        """
        spec = spec or FilterSpec()
        where, params = _where(spec)
        return self._cur.execute(
            "SELECT s.id, s.name, v.eta, v.v, v.wmean_jy, v.n_meas, v.is_variable "
            "FROM sources s JOIN variability v ON v.source_id = s.id "
            f"WHERE {where} AND v.eta > 0 AND v.v > 0 ORDER BY v.eta DESC, s.id LIMIT ?",
            [*params, int(limit)]).df()

    def photometry_image(self, image_id: int) -> PhotometryImage | None:
        """The image (paths, mid-time) a photometry row points at, or None if it is gone."""
        row = self._cur.execute("SELECT id, path, pbcor_path, mid_mjd FROM images WHERE id = ?",
                                [int(image_id)]).fetchone()
        if row is None:
            return None
        return PhotometryImage(id=int(row[0]), path=str(row[1]), pbcor_path=row[2],
                               mid_mjd=float(row[3]))
