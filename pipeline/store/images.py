"""The store's images section: registering images and their QA, and the image browser's queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from numbers import Integral
from pathlib import Path

import pandas as pd

from pipeline.instrument.sky import DEFAULT_CATALOG, Sky, load_catalog
from pipeline.instrument.times import mjd_to_utc, utc_to_mjd
from pipeline.store.annotations import annotation_join_sql, normalise_tag, tag_condition_sql
from pipeline.store.image_files import (
    PRODUCT_COLUMNS,
    ImageFileMissing,
    ImagePlane,
    UnknownImage,
    read_plane,
    sources_in_plane,
)

#: images columns ``add_image`` accepts besides the required ones (migrations 0001, 0004).
IMAGE_COLUMNS = frozenset({
    "ra_deg", "dec_deg", "freq_hz", "rms_jy", "peak_jy", "dynamic_range", "bmaj_deg",
    "bmin_deg", "bpa_deg", "n_ref_matched", "n_ref_expected", "backend", "duration_s",
    "residual_path", "model_path", "psf_path", "pbcor_path", "thumbnail_path", "npix",
    "cell_arcsec", "weighting", "n_iter", "n_major", "threshold_jy", "theoretical_rms_jy",
    "n_vis", "qa_passed", "qa_reason"})

#: what the browser lists, in this order (``utc`` is derived from mid_mjd)
LIST_COLUMNS = ("id", "observation_id", "mid_mjd", "ra_deg", "dec_deg", "freq_hz", "rms_jy",
                "peak_jy", "dynamic_range", "bmaj_deg", "bmin_deg", "bpa_deg", "n_ref_matched",
                "n_ref_expected", "backend", "duration_s", "npix", "cell_arcsec", "weighting",
                "qa_passed", "qa_reason", "created_utc")
#: columns ``images`` may sort by; identifiers cannot be bound parameters, so a whitelist
SORT_COLUMNS = frozenset(LIST_COLUMNS) | {"utc"}


@dataclass(frozen=True, kw_only=True)
class ImageFilter:
    """The image browser's filters; None leaves a bound open.

    Times are MJD (``from_utc``/``to_utc`` are converted to it); rms in Jy/beam;
    ``qa``: True passed, False failed (or not yet judged), None all; ``tag``: images that
    carry this tag (normalised as tags are), "" all.
    """

    from_mjd: float | None = None
    to_mjd: float | None = None
    from_utc: datetime | None = None
    to_utc: datetime | None = None
    dec_min: float | None = None
    dec_max: float | None = None
    rms_min: float | None = None
    rms_max: float | None = None
    qa: bool | None = None
    tag: str = ""

    def where(self) -> tuple[str, list[object]]:
        """SQL condition and its bound parameters."""
        lo = [v for v in (self.from_mjd, None if self.from_utc is None
                          else utc_to_mjd(self.from_utc)) if v is not None]
        hi = [v for v in (self.to_mjd, None if self.to_utc is None
                          else utc_to_mjd(self.to_utc)) if v is not None]
        conds: list[str] = []
        params: list[object] = []
        for sql, value in (("mid_mjd >= ?", max(lo) if lo else None),
                           ("mid_mjd <= ?", min(hi) if hi else None),
                           ("dec_deg >= ?", self.dec_min), ("dec_deg <= ?", self.dec_max),
                           ("rms_jy >= ?", self.rms_min), ("rms_jy <= ?", self.rms_max)):
            if value is not None:
                conds.append(sql)
                params.append(float(value))
        if self.qa is True:
            conds.append("qa_passed")
        elif self.qa is False:
            conds.append("NOT coalesce(qa_passed, false)")
        if self.tag.strip():
            conds.append(tag_condition_sql("image", "images.id"))
            params.append(normalise_tag(self.tag))
        return (" AND ".join(conds) or "true"), params


class ImageQueries:
    """Mixed into Store: everything about the images table."""

    def add_image(self, *, observation_id: str, path: str, mid_mjd: float, now: datetime,
                  **fields: object) -> int:
        """Register (or re-register, replacing) an observation's image; returns its id.

        The id stays the observation's: a replaced image (another path) is kept in
        ``image_versions`` and the new row's ``version`` is one more.
        """
        unknown = set(fields) - IMAGE_COLUMNS
        if unknown:
            raise ValueError(f"unknown image column(s): {', '.join(sorted(unknown))}")
        with self._transaction() as cur:  # type: ignore[attr-defined]
            # A rerun's image (a new path) keeps the one it replaces as the earlier version.
            version = self._archive_image(cur, observation_id, path, now)  # type: ignore[attr-defined]
            cols = ["observation_id", "path", "mid_mjd", "created_utc", "version", *fields]
            vals = [observation_id, path, mid_mjd, now, version, *fields.values()]
            marks = ", ".join("?" * len(cols))
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
            return cur.execute(
                f"INSERT INTO images ({', '.join(cols)}) VALUES ({marks}) "
                f"ON CONFLICT (observation_id) DO UPDATE SET {updates} RETURNING id", vals
            ).fetchone()[0]

    # ------------------------------------------------------------- browsing
    def images(self, filters: ImageFilter | None = None, *, order_by: str = "mid_mjd",
               descending: bool = True, limit: int = 1000, offset: int = 0) -> pd.DataFrame:
        """Images matching ``filters``, sorted by ``order_by`` (a LIST_COLUMNS name or utc).

        Columns: LIST_COLUMNS plus ``utc`` (mid-time) and ``has_thumbnail``.
        """
        if order_by not in SORT_COLUMNS:
            raise ValueError(f"images: cannot sort by {order_by!r}; choose one of "
                             f"{', '.join(sorted(SORT_COLUMNS))}")
        if limit < 0 or offset < 0:
            raise ValueError(f"images: limit and offset must be >= 0, got {limit}, {offset}")
        where, params = (filters or ImageFilter()).where()
        key = "mid_mjd" if order_by == "utc" else order_by
        direction = "DESC" if descending else "ASC"
        frame = self._df(
            f"SELECT {', '.join(LIST_COLUMNS)}, thumbnail_path IS NOT NULL AS has_thumbnail "
            f"FROM images WHERE {where} ORDER BY {key} {direction} NULLS LAST, id {direction} "
            "LIMIT ? OFFSET ?", [*params, limit, offset])
        frame.insert(2, "utc", mjd_to_utc(frame["mid_mjd"].astype(float)))
        return frame

    def export_images(self, filters: ImageFilter | None = None) -> pd.DataFrame:
        """Every image ``filters`` matches, newest first, for export.

        Columns: LIST_COLUMNS, ``utc``, ``path``, ``tags`` (comma-joined) and
        ``qa_consensus`` (the users' ratings; None: unrated).
        """
        where, params = (filters or ImageFilter()).where()
        ann_cols, ann_joins = annotation_join_sql("image", "images.id")
        frame = self._df(  # type: ignore[attr-defined]
            f"SELECT {', '.join('images.' + c for c in LIST_COLUMNS)}, images.path, {ann_cols} "
            f"FROM images {ann_joins} WHERE {where} ORDER BY images.mid_mjd DESC, images.id DESC",
            params)
        frame.insert(2, "utc", mjd_to_utc(frame["mid_mjd"].astype(float)))
        return frame

    def count_images(self, filters: ImageFilter | None = None) -> int:
        """How many images match ``filters``."""
        where, params = (filters or ImageFilter()).where()
        return int(self._cur.execute(f"SELECT count(*) FROM images WHERE {where}",
                                     params).fetchone()[0])

    def image_ranges(self) -> dict[str, tuple[float, float] | None]:
        """(min, max) of mid_mjd, dec_deg and rms_jy over all images (None when empty)."""
        row = self._cur.execute(
            "SELECT min(mid_mjd), max(mid_mjd), min(dec_deg), max(dec_deg), min(rms_jy), "
            "max(rms_jy) FROM images").fetchone()
        return {name: (None if row[2 * i] is None else (float(row[2 * i]), float(row[2 * i + 1])))
                for i, name in enumerate(("mid_mjd", "dec_deg", "rms_jy"))}

    def image(self, image_id: int) -> dict[str, object]:
        """Every column of one image as a dict; UnknownImage if absent."""
        cur = self._cur.execute("SELECT * FROM images WHERE id = ?", [_image_id(image_id)])
        row = cur.fetchone()
        if row is None:
            raise UnknownImage(image_id)
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def image_file(self, image_id: object, product: str) -> Path | None:
        """The registered file of an image product, or None.

        None when the id or product is unknown, the store holds no path for it, or the
        file is gone. The path is only ever one the store registered: the download route
        never builds a path from what a client sends.
        """
        column = PRODUCT_COLUMNS.get(product)
        try:
            image_id = _image_id(image_id)
        except UnknownImage:
            return None
        if column is None:
            return None
        row = self._cur.execute(f"SELECT {column} FROM images WHERE id = ?",
                                [image_id]).fetchone()
        if row is None or not row[0]:
            return None
        path = Path(row[0])
        return path if path.is_file() else None

    def image_products(self, image_id: int) -> list[str]:
        """Products of an image whose files exist, in PRODUCT_COLUMNS order."""
        return [p for p in PRODUCT_COLUMNS if self.image_file(image_id, p) is not None]

    def image_plane(self, image_id: int, product: str = "fits") -> ImagePlane:
        """The pixel plane, WCS and beam of an image product (UnknownImage, ImageFileMissing)."""
        self.image(image_id)  # UnknownImage before a missing-file message
        if product == "thumbnail" or product not in PRODUCT_COLUMNS:
            raise ImageFileMissing(image_id, product, "not a FITS product "
                                   f"(choose {', '.join(list(PRODUCT_COLUMNS)[:-1])})")
        path = self.image_file(image_id, product)
        if path is None:
            raise ImageFileMissing(image_id, product, "no file registered or the file is gone")
        return read_plane(path)

    def reference_sources(self, image_id: int, *, min_flux_jy: float = 0.0, limit: int = 5000,
                          plane: ImagePlane | None = None) -> pd.DataFrame:
        """Reference-catalog sources on an image's field, brightest first.

        ``plane``: the image's plane when the caller has read it already (saves reading a
        large FITS file twice). Columns: name, ra_deg, dec_deg, flux_jy, x, y (0-based
        pixels of the image).
        """
        plane = self.image_plane(image_id) if plane is None else plane
        return sources_in_plane(self.reference_catalog(), plane, min_flux_jy=min_flux_jy,
                                limit=limit)

    def reference_catalog(self, path: Path = DEFAULT_CATALOG) -> Sky:
        """The reference catalog, parsed once per store (54 k rows take ~0.3 s)."""
        cache = self.__dict__.setdefault("_reference_catalogs", {})
        if path not in cache:
            cache[path] = load_catalog(path)
        return cache[path]

    def recent_images(self, *, limit: int = 50) -> pd.DataFrame:
        """The newest images with the backend that made them and how long it took.

        Columns: id, observation_id, created_utc, utc (mid-time), backend, duration_s,
        npix, n_vis, n_iter, qa_passed.
        """
        frame = self._df(
            "SELECT id, observation_id, created_utc, mid_mjd, backend, duration_s, npix, "
            "n_vis, n_iter, qa_passed FROM images ORDER BY created_utc DESC, id DESC LIMIT ?",
            [limit])
        frame.insert(3, "utc", mjd_to_utc(frame.pop("mid_mjd").astype(float)))
        return frame


def _image_id(image_id: object) -> int:
    """An image id as an int; UnknownImage for anything that is not a plain integer."""
    if isinstance(image_id, bool):
        raise UnknownImage(image_id)
    if isinstance(image_id, Integral):
        return int(image_id)
    if isinstance(image_id, str) and image_id.isascii() and image_id.isdigit() \
            and len(image_id) < 19:
        return int(image_id)
    raise UnknownImage(image_id)
