"""Plain functions that shape data for the pages."""

from __future__ import annotations

import pandas as pd

from views.overview import stage_queue_html, state_cards_html
from views.pipeline_page import pipeline_fraction, shape_rows


def test_pipeline_progress_follows_the_state_machine():
    assert pipeline_fraction("pending", 0.0) == 0.0
    assert pipeline_fraction("converting", 0.5) == 0.125
    assert pipeline_fraction("converted", 0.0) == 0.25
    assert pipeline_fraction("imaging", 1.0) == 0.75
    assert pipeline_fraction("complete", 0.0) == 1.0
    rows = pd.DataFrame({"id": ["a", "b"], "state": ["calibrating", "failed"],
                         "progress": [0.4, 0.9]})
    assert shape_rows(rows).pipeline.tolist() == [35, 0]


def test_state_cards_carry_every_state_and_count():
    html = state_cards_html({"pending": 3, "failed": 1})
    assert 'data-state="pending"' in html and '<span class="count">3</span>' in html
    assert html.count('class="state-card"') == 10


def test_stage_queue_greys_out_stages_not_installed():
    html = stage_queue_html({"convert": 2, "calibrate": 5}, ["convert"])
    assert "convert: <b>2</b> waiting" in html
    assert "calibrate: 5 waiting (not installed)" in html
