"""Saved filters turned back into the pages' filter objects, or a message naming the field."""

from __future__ import annotations

import pytest

from pipeline.store.images import ImageFilter
from pipeline.store.query_specs import SpecProblem, filter_from_spec
from pipeline.store.sources import FilterSpec


def test_each_page_gets_its_own_filter_back():
    assert filter_from_spec("sources", {"eta_min": 2.0, "variable_only": True}) == FilterSpec(
        eta_min=2.0, variable_only=True)
    assert filter_from_spec("images", {"qa": True, "rms_max": 0.002}) == ImageFilter(
        qa=True, rms_max=0.002)
    assert filter_from_spec("pipeline", {"state": "failed"}) == {"state": "failed"}


@pytest.mark.parametrize(("page", "spec", "problem"), [
    ("sources", {"eta_minimum": 2.0}, "field 'eta_minimum' no longer exists"),
    ("sources", {"eta_min": "high"}, "eta_min = 'high' has the wrong type"),
    ("images", {"noise_max": 1.0}, "images filter field 'noise_max'"),
    ("pipeline", {"stage": "image"}, "pipeline filter field 'stage'"),
    ("pipeline", {"state": 3}, "'state': 3 is not text"),
    ("mosaics", {}, "no page 'mosaics'"),
])
def test_a_filter_that_no_longer_fits_names_the_field(page, spec, problem):
    with pytest.raises(SpecProblem, match=problem):
        filter_from_spec(page, spec)
