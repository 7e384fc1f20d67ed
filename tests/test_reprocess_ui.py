"""The Reprocess panel and image versions in the browser, on a real 3C48 transit.

An operator previews and launches a reprocess from ``image`` with another niter, watches
its progress reach done, and opens the image's versions and provenance diff; a viewer's
page has no panel, and the panel's actions refuse a viewer on the server (audited).
"""

from __future__ import annotations

import pytest
from conftest import T0, ServedHome, add_observations, sign_in
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


def test_the_caltable_picker_lists_passed_tables_and_sets_the_override(store):
    (obs_id,) = add_observations(store, 1, state="complete")
    mid = store.observation(obs_id).mid_mjd

    def add(transit_mjd: float, passed: bool) -> int:
        return store.add_caltable(
            observation_id=obs_id, calibrator="3C48", b_path=f"b{transit_mjd}{passed}",
            g_path="g", transit_mjd=transit_mjd, valid_from_mjd=transit_mjd - 0.5,
            valid_to_mjd=transit_mjd + 0.5, qa_passed=passed,
            qa_reason=None if passed else "SNR 3.0 below 10", snr=3.0, flagged_frac=0.1,
            antennas_lost=0, flux_ratio=1.0, model_flux_jy=16.0, now=T0)

    failed, older, newer = add(mid, False), add(mid - 1.0, True), add(mid, True)
    panel = ReprocessPanel(store=store, actor=Actor(name="otto", role="operator"))
    choices = list(panel._caltable.options.values())
    assert choices == [None, newer, older] and failed not in choices  # newest first
    assert panel.overrides() == {}
    panel._stage.value = "calibrate"
    panel._caltable.value = newer
    panel._overrides.value = "calibration.flagger = robust"
    assert panel.overrides() == {"calibration.flagger": "robust",
                                 "calibration.caltable_id": newer}
    panel._on_preview()
    assert panel._preview.object.startswith("Preview: 1 observation(s) from calibrate")
    panel._stage.value = "image"  # a chosen table is applied by the calibrate stage
    panel._on_preview()
    assert f"caltable {newer}: a chosen caltable is applied by the calibrate stage" in \
        panel._preview.object
    panel._overrides.value = f"calibration.caltable_id = {older}"
    with pytest.raises(PanelInputError, match=f"differs from the caltable picked \\(#{newer}\\)"):
        panel.overrides()
    panel._on_preview()
    assert "differs from the caltable picked" in panel._preview.object
