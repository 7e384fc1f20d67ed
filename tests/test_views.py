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


def test_a_page_shown_twice_keeps_both_copies_live(store):
    """A notebook displaying a page twice: both copies follow a refresh."""
    import html

    import panel as pn
    from bokeh.document import Document
    from conftest import add_observations

    from views.overview import OverviewPage

    from panel.io.state import set_curdoc

    add_observations(store, 2)
    # A notebook's document has no server session, whatever an earlier test in this
    # process left as Panel's current document (a served one builds after load instead).
    with set_curdoc(Document()):
        page = OverviewPage(store=store)
        roots = [pn.panel(page).get_root(Document()) for _ in range(2)]
    assert roots[0] is not roots[1]
    add_observations(store, 3, prefix="late-")
    page.refresh()
    texts = [html.unescape(m.text) for m, _ in page._cards._models.values()]
    assert len(texts) == 2
    assert all('data-state="pending" style="--c:#6c757d"><span class="count">5</span>' in t
               for t in texts), texts
