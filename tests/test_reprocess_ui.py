"""The Reprocess panel and image versions in the browser, on a real 3C48 transit.

An operator previews and launches a reprocess from ``image`` with another niter, watches
its progress reach done, and opens the image's versions and provenance diff; a viewer's
page has no panel, and the panel's actions refuse a viewer on the server (audited).
"""

from __future__ import annotations

import pytest
from conftest import ServedHome, add_observations, sign_in
from playwright.sync_api import expect
from test_reprocess import DAYS, process_transits

from pipeline.actor import Actor
from pipeline.home import Home
from pipeline.store import Store
from views.reprocess_panel import PanelInputError, ReprocessPanel, parse_overrides


@pytest.fixture
def processed(tmp_path) -> Home:
    """One 5-minute 3C48 transit through every stage (niter 100)."""
    return process_transits(tmp_path / "home", DAYS[:1])


@pytest.mark.ui
def test_operator_reprocesses_from_the_page_and_opens_the_diff(processed, browser):
    server = ServedHome(processed)
    operator_ctx, viewer_ctx = (browser.new_context(viewport={"width": 1400, "height": 1000})
                                for _ in range(2))
    try:
        sign_in(viewer_ctx, server.url, "vera")
        viewer = viewer_ctx.new_page()
        viewer.goto(server.url + "/pipeline")
        expect(viewer.locator(".pipeline-table")).to_be_visible(timeout=30_000)
        expect(viewer.locator(".reprocess-panel")).to_have_count(0)

        sign_in(operator_ctx, server.url, "otto")
        page = operator_ctx.new_page()
        page.goto(server.url + "/pipeline")
        panel = page.locator(".reprocess-panel")
        expect(panel).to_be_visible(timeout=30_000)
        page.locator(".rp-overrides textarea").fill("imaging.nitre = 40")
        page.locator(".rp-preview-button button").click()
        expect(page.locator(".rp-preview")).to_contain_text("unknown key imaging.nitre")
        page.locator(".rp-overrides textarea").fill("imaging.niter = 40")
        page.locator(".rp-overrides textarea").press("Tab")
        page.locator(".rp-preview-button button").click()
        expect(page.locator(".rp-preview")).to_contain_text(
            "1 observation(s) from image: 2 jobs")
        page.locator(".rp-launch-button button").click()
        expect(page.locator(".rp-message")).to_contain_text("Launched run 1")
        # the run's row reaches done as the server's runner images and measures again
        status = page.locator('.rp-progress .tabulator-cell[tabulator-field="status"]')
        expect(status).to_have_text(["done"], timeout=120_000)

        page.goto(server.url + "/images")
        page.locator(".image-table .tabulator-row").first.click()
        versions = page.locator(".versions-table .tabulator-row")
        expect(versions).to_have_count(2, timeout=30_000)
        expect(page.locator(".versions-note")).to_contain_text("What changed from version 1 to 2")
        diff = page.locator(".provenance-diff")
        expect(diff).to_contain_text("settings.niter")
        expect(diff.locator(".tabulator-row", has_text="settings.niter")).to_contain_text("40")
    finally:
        operator_ctx.close()
        viewer_ctx.close()
        assert server.stop() == 0
    with Store.open(processed) as store:
        audit = store._df("SELECT username, action, allowed FROM audit "
                          "WHERE action = 'reprocess'").values.tolist()
        assert audit == [["otto", "reprocess", True]]


def test_the_panel_refuses_a_viewer_on_the_server_and_audits_it(store):
    """What a forged launch or cancel event from a viewer's browser would reach."""
    add_observations(store, 2, state="complete")
    panel = ReprocessPanel(store=store, actor=Actor(name="vera", role="viewer"))
    panel._on_launch()
    assert panel._message.object.startswith("Not allowed: reprocess needs the operator role")
    assert store.counts_by_state()["complete"] == 2
    operator = ReprocessPanel(store=store, actor=Actor(name="otto", role="operator"))
    operator._on_launch()
    panel.refresh()
    panel._on_cancel()
    assert panel._message.object.startswith("Not allowed: cancel needs the operator role")
    rows = store._df("SELECT username, action, allowed FROM audit ORDER BY id").values.tolist()
    assert rows == [["vera", "reprocess", False], ["otto", "reprocess", True],
                    ["vera", "cancel", False]]


def test_override_lines_are_typed_and_a_bad_line_names_itself():
    assert parse_overrides("imaging.niter = 40\n# note\nimaging.weighting = natural\n"
                           "imaging.fov_deg = 2.5") == {
        "imaging.niter": 40, "imaging.weighting": "natural", "imaging.fov_deg": 2.5}
    with pytest.raises(PanelInputError, match="overrides line 2"):
        parse_overrides("imaging.niter = 4\nniter 40")
