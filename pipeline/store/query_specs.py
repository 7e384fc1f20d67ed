"""A saved query's filter, as a page's filter object: checked field by field, so one whose
field a migration renamed opens with a message naming that field instead of breaking."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.store.images import ImageFilter
from pipeline.store.sources import FilterSpec

#: The pipeline page filters by state and a search string (Store.pipeline_rows).
PIPELINE_FIELDS = ("state", "search")


class SpecProblem(ValueError):
    """A saved filter that no longer fits its page; names the query's page and field."""


def filter_from_spec(page: str, spec: dict[str, Any]) -> FilterSpec | ImageFilter | dict:
    """The page's filter built from ``spec``; SpecProblem names the first field that fails."""
    if page == "pipeline":
        unknown = sorted(set(spec) - set(PIPELINE_FIELDS))
        if unknown:
            raise SpecProblem(_unknown(page, unknown[0], PIPELINE_FIELDS))
        for key, value in spec.items():
            if value is not None and not isinstance(value, str):
                raise SpecProblem(f"pipeline filter field {key!r}: {value!r} is not text")
        return dict(spec)
    cls = {"sources": FilterSpec, "images": ImageFilter}.get(page)
    if cls is None:
        raise SpecProblem(f"no page {page!r} takes saved filters")
    names = tuple(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(spec) - set(names))
    if unknown:
        raise SpecProblem(_unknown(page, unknown[0], names))
    try:
        return cls(**spec)
    except (TypeError, ValueError) as exc:
        raise SpecProblem(f"{page} filter: {exc}") from exc


def _unknown(page: str, field: str, known: tuple[str, ...]) -> str:
    return (f"{page} filter field {field!r} no longer exists (renamed or removed by an "
            f"upgrade); the filter's fields are: {', '.join(known)}")
