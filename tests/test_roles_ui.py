"""Roles in the browser: a viewer and an operator signed in side by side (issue 14)."""

from __future__ import annotations

import json

import pytest
from conftest import (
    ServedHome,
    audit_via_api,
    fail_one_observation,
    forge_toggle,
    sign_in,
    toggle_active,
    wait_until,
)
from playwright.sync_api import expect

from pipeline.store import Store

pytestmark = pytest.mark.ui



@pytest.fixture
def served(home):
    """One failed observation (nothing for the runner to do), unpaused."""
    with Store.open(home) as store:
        bad = fail_one_observation(store, home, "sb03: truncated HDF5 file")
    server = ServedHome(home)
    server.bad = bad
    yield server
    assert server.stop() == 0


def health(server) -> dict:
    import urllib.request
    return json.loads(urllib.request.urlopen(server.url + "/api/health", timeout=30).read())


def test_viewer_cannot_steer_operator_can_and_the_viewer_sees_it(served, browser):
    viewer_ctx, operator_ctx, admin_ctx = (browser.new_context(viewport={"width": 1400,
                                                                         "height": 900})
                                           for _ in range(3))
    try:
        sign_in(viewer_ctx, served.url, "vera")
        sign_in(operator_ctx, served.url, "otto")
        sign_in(admin_ctx, served.url, "ada")
        viewer = viewer_ctx.new_page()
        viewer.goto(served.url + "/overview")
        expect(viewer.locator(".who")).to_have_attribute("data-role", "viewer")
        # no controls to see, and no link to the admins' page
        expect(viewer.locator(".runner-status")).to_contain_text("scheduler running")
        expect(viewer.locator(".pause-toggle")).to_be_hidden()
        expect(viewer.locator('nav a[data-slug="audit"]')).to_have_count(0)

        # a forged browser event for the hidden toggle: refused on the server, audited,
        # and the toggle set back
        assert forge_toggle(viewer, 'pause-toggle', True) is False  # it exists, not shown
        wait_until(lambda: any(r["action"] == "pause" and not r["allowed"]
                               and r["username"] == "vera"
                               for r in audit_via_api(served.url, admin_ctx)),
                   what="the forged pause audited as refused")
        assert health(served)["paused"] is False
        wait_until(lambda: toggle_active(viewer, 'pause-toggle') is False,
                   what="the forged toggle set back")
        expect(viewer.locator(".pause-message")).to_contain_text("needs the operator role")

        # a forged HTTP call with the viewer's cookie: 403 as JSON, audited
        response = viewer_ctx.request.post(served.url + "/api/pause",
                                           headers={"Origin": served.url})
        assert response.status == 403
        assert "Traceback" not in response.text()
        assert response.json()["error"] == "Forbidden"
        refused = [r for r in audit_via_api(served.url, admin_ctx)
                   if r["action"] == "pause" and not r["allowed"]]
        assert len(refused) == 2
        assert health(served)["paused"] is False

        # the viewer's pipeline page has no retry button; a forged retry is refused
        pipeline = viewer_ctx.new_page()
        pipeline.goto(served.url + "/pipeline")
        expect(pipeline.locator(".pipeline-table")).to_contain_text(served.bad)
        expect(pipeline.locator(".retry-button")).to_be_hidden()
        response = viewer_ctx.request.post(f"{served.url}/api/observations/{served.bad}/retry")
        assert response.status == 403
        assert health(served)["counts"]["failed"] == 1

        # the operator pauses with the real control; the viewer's open page shows it
        operator = operator_ctx.new_page()
        operator.goto(served.url + "/overview")
        toggle = operator.locator(".pause-toggle button")
        expect(toggle).to_be_visible()
        toggle.click()
        wait_until(lambda: health(served)["paused"] is True, what="paused by the operator")
        expect(viewer.locator(".runner-status")).to_contain_text("scheduler paused")
        allowed = [r for r in audit_via_api(served.url, admin_ctx) if r["allowed"]]
        assert [(r["username"], r["action"]) for r in allowed] == [("otto", "pause")]

        # the admins' page: refused to the viewer (and audited), shown to the admin
        viewer.goto(served.url + "/audit")
        expect(viewer.locator(".refused")).to_contain_text("for the admin role")
        admin = admin_ctx.new_page()
        admin.goto(served.url + "/audit")
        table = admin.locator(".audit-table")
        expect(table).to_contain_text("otto")
        expect(table).to_contain_text("page.open")
    finally:
        for ctx in (viewer_ctx, operator_ctx, admin_ctx):
            ctx.close()
