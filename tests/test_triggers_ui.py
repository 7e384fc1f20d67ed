"""Triggers in the browser: an operator makes and fires triggers; a viewer cannot (issue 15)."""

from __future__ import annotations

import pytest
from conftest import ServedHome, audit_via_api, forge_toggle, sign_in, wait_until
from playwright.sync_api import expect

pytestmark = pytest.mark.ui



@pytest.fixture
def served(home):
    server = ServedHome(home)
    yield server
    assert server.stop() == 0


def test_operator_makes_and_fires_triggers_viewer_is_refused(served, browser):
    operator_ctx, viewer_ctx, admin_ctx = (browser.new_context(viewport={"width": 1400,
                                                                         "height": 1000})
                                           for _ in range(3))
    try:
        sign_in(operator_ctx, served.url, "otto")
        sign_in(viewer_ctx, served.url, "vera")
        sign_in(admin_ctx, served.url, "ada")
        page = operator_ctx.new_page()
        page.goto(served.url + "/triggers")
        expect(page.locator(".no-triggers")).to_be_visible()

        # a cron trigger: a bad string names the field as it is typed, a good one shows
        # its next five fire times
        page.locator(".trigger-name input").fill("leap noon")
        cron = page.locator(".trigger-cron input")
        cron.fill("61 * * * *")
        expect(page.locator(".cron-preview")).to_contain_text("cron: '61 * * * *' is not")
        page.locator(".trigger-save button").click()
        expect(page.locator(".triggers-message")).to_contain_text("cron:")
        # noon of a leap day: it cannot fire while this test runs on the real clock (every
        # five minutes did, on a fresh clone's run, and its history was no longer empty)
        cron.fill("0 12 29 2 *")
        expect(page.locator(".cron-preview li")).to_have_count(5)
        page.locator(".trigger-save button").click()
        table = page.locator(".triggers-table")
        expect(table).to_contain_text("leap noon")
        expect(table).to_contain_text("0 12 29 2 *")

        # a manual one, fired by hand: its history row names the operator
        page.locator(".trigger-name input").fill("check windows")
        page.locator(".trigger-kind select").select_option("manual")
        page.locator(".trigger-action select").select_option("check validity windows")
        page.locator(".trigger-save button").click()
        expect(table).to_contain_text("check windows")
        expect(page.locator(".trigger-pick select")).to_have_value("#2 check windows")
        page.locator(".trigger-fire button").click()
        history = page.locator(".trigger-history")
        expect(history).to_contain_text("check windows")
        expect(history.locator("tr[data-outcome='ok']")).to_contain_text("otto")
        expect(history).to_contain_text("without a valid caltable")

        # the viewer: the list and history, no controls; a forged toggle is refused
        viewer = viewer_ctx.new_page()
        viewer.goto(served.url + "/triggers")
        expect(viewer.locator(".triggers-table")).to_contain_text("leap noon")
        for control in (".trigger-editor", ".trigger-fire", ".trigger-delete",
                        ".trigger-enabled"):
            expect(viewer.locator(control)).to_be_hidden()
        viewer.locator(".trigger-pick select").select_option(label="#1 leap noon")
        expect(viewer.locator(".trigger-history-pane")).to_contain_text("No firings")
        assert forge_toggle(viewer, 'trigger-enabled', False) is False  # there, not shown
        expect(viewer.locator(".triggers-message")).to_contain_text("needs the operator role")
        wait_until(lambda: any(r["action"] == "trigger.enable" and not r["allowed"]
                               and r["username"] == "vera"
                               for r in audit_via_api(served.url, admin_ctx)),
                   what="the forged disable audited as refused")
        viewer.reload()
        expect(viewer.locator(".triggers-table tr[data-trigger-id='1']")).to_have_attribute(
            "data-enabled", "true")
        allowed = [(r["username"], r["action"]) for r in audit_via_api(served.url, admin_ctx)
                   if r["action"].startswith("trigger.") and r["allowed"]]
        assert sorted(allowed) == [("otto", "trigger.fire")] + [("otto", "trigger.save")] * 2
    finally:
        for ctx in (operator_ctx, viewer_ctx, admin_ctx):
            ctx.close()
