"""The Saved queries page in-process (what each reader sees, fork and delete), and in Chromium
against a served home: one user saves, reloads, another forks and runs, and for each
visibility a third user opens its link and exactly the expected ones see it."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from conftest import ServedHome, sign_in
from playwright.sync_api import expect

from pipeline.actor import Actor
from views.queries_page import QueriesPage, open_link

T = datetime(2026, 12, 2, 12, 0, 0)


@pytest.fixture
def three(store):
    ids = {vis: store.save_query(owner="ana", page=page, name=f"{vis} q", spec={},
                                 visibility=vis, now=T)
           for vis, page in (("private", "sources"), ("team", "images"),
                             ("public", "pipeline"))}
    return store, ids


@pytest.mark.parametrize(("actor", "sees"), [
    (Actor(name="ana", role="viewer"), {"private", "team", "public"}),
    (Actor(name="bob", role="viewer"), {"team", "public"}),
    (Actor.visitor(), {"public"})])
def test_the_page_lists_what_each_reader_may_see_with_open_links(three, actor, sees):
    store, ids = three
    page = QueriesPage(store=store, actor=actor, clock=lambda: T)
    page.__panel__()
    assert set(page.listed()) == {ids[v] for v in sees}
    shown = page._table.object
    for vis, qid in ids.items():
        assert (f"query={qid}'" in shown) == (vis in sees)
    assert open_link("images", ids["team"]) == f"./images?query={ids['team']}"


def test_fork_and_delete_from_the_page(three):
    store, ids = three
    bob = QueriesPage(store=store, actor=Actor(name="bob", role="viewer"), clock=lambda: T)
    bob.__panel__()
    bob._pick.value = ids["team"]
    assert bob._delete.disabled and not bob._fork.disabled
    bob.delete()  # refused by the store even if the button were forged
    assert "belongs to ana" in bob._message.object
    bob.fork()
    forks = [q for q in bob.listed() if q not in ids.values()]
    assert len(forks) == 1 and store.saved_query(forks[0], reader="bob").owner == "bob"
    bob._pick.value = forks[0]
    assert not bob._delete.disabled
    bob.delete()
    assert forks[0] not in bob.listed() and store.saved_query(forks[0], reader="bob") is None
    visitor = QueriesPage(store=store, actor=Actor.visitor())
    visitor.__panel__()
    visitor._pick.value = ids["public"]
    assert visitor._fork.disabled and visitor._delete.disabled


def test_names_are_shown_as_text(store):
    from views.queries_page import queries_html

    store.save_query(owner="ana", page="sources", name="<script>x</script>", spec={}, now=T,
                     description="a 'quote'")
    shown = queries_html(store.saved_queries(reader="ana"), "ana")
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "a &#x27;quote" in shown


def _save_in_browser(pg, name: str, search: str, visibility: str) -> int:
    """Type a filter and save it under ``name``; returns the new query's id."""
    pg.locator(".name-search input").fill(search)
    pg.locator(".name-search input").press("Enter")
    expect(pg).to_have_url(re.compile(r"filter=.*" + re.escape(search)))  # the URL follows
    pg.locator(".saved-query-name input").fill(name)
    pg.locator(".saved-query-name input").press("Enter")
    pg.locator(".saved-query-visibility button", has_text=visibility).click()
    pg.locator(".saved-query-save button").click()
    message = pg.locator(".saved-query-message")
    expect(message).to_contain_text(f"saved {name} as #")
    text = pg.locator(".saved-query-message span[data-kind]").inner_text()  # in its shadow root
    return int(re.search(r"#(\d+)", text).group(1))


@pytest.mark.ui
def test_saved_query_shared_forked_and_opened_by_link_per_visibility(browser, home):
    server = ServedHome(home, "--paused")
    contexts = []
    try:
        def signed_in(name):
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            contexts.append(ctx)
            sign_in(ctx, server.url, name)
            pg = ctx.new_page()
            pg.set_default_timeout(20_000)
            return pg

        vera = signed_in("vera")
        vera.goto(f"{server.url}/sources")
        ids = {vis: _save_in_browser(vera, f"{vis} query", f"J{vis}", vis)
               for vis in ("private", "team", "public")}
        vera.reload()
        options = vera.locator(".saved-query-list select option")
        for qid in ids.values():  # still there after a reload
            expect(options.filter(has_text=f"#{qid}")).to_have_count(1)

        val = signed_in("val")
        val.goto(f"{server.url}/sources")
        listed = val.locator(".saved-query-list select option")
        expect(listed.filter(has_text=f"#{ids['team']}")).to_have_count(1)
        expect(listed.filter(has_text=f"#{ids['private']}")).to_have_count(0)
        val.locator(".saved-query-list select").select_option(
            label=f"team query (vera, team) #{ids['team']}")
        val.locator(".saved-query-fork button").click()
        expect(val.locator(".saved-query-message")).to_contain_text("forked as #")
        val.locator(".saved-query-run button").click()
        expect(val.locator(".name-search input")).to_have_value("Jteam")
        expect(val.locator(".saved-query-message")).to_contain_text("running team query")

        otto = signed_in("otto")
        for vis, qid in ids.items():
            otto.goto(f"{server.url}/sources?query={qid}")
            if vis == "private":
                expect(otto.locator(".saved-query-message")).to_contain_text(
                    f"saved query #{qid}: not found")
                expect(otto.locator(".name-search input")).to_have_value("")
            else:
                expect(otto.locator(".name-search input")).to_have_value(f"J{vis}")
        otto.goto(f"{server.url}/queries")
        shown = otto.locator(".saved-queries-list")
        expect(shown.locator(f"tr[data-query-id='{ids['public']}']")).to_have_count(1)
        expect(shown.locator(f"tr[data-query-id='{ids['private']}']")).to_have_count(0)
        shown.locator(f"tr[data-query-id='{ids['team']}'] a").click()
        expect(otto.locator(".name-search input")).to_have_value("Jteam")
    finally:
        for ctx in contexts:
            ctx.close()
        server.stop()
