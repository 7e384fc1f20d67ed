"""The saved-queries panel in-process over a real store: save, list, run, edit, fork, delete,
visibility, stale filters and the URL's filter, without a browser."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import parse_qs

import pytest

from pipeline.actor import Actor
from pipeline.store.sources import FilterSpec
from views.saved_queries_panel import SavedQueriesPanel

T = datetime(2026, 12, 2, 12, 0, 0)
ANA, BOB = Actor(name="ana", role="viewer"), Actor(name="bob", role="viewer")


class FakePage:
    """Stands in for a page's filter: a spec dict it hands out and takes back."""

    def __init__(self, spec: dict | None = None):
        self.spec = dict(spec or {"variable_only": True, "sort_by": "eta"})
        self.applied: list[dict] = []

    def current(self) -> dict:
        return dict(self.spec)

    def apply(self, spec: dict) -> None:
        self.applied.append(spec)
        self.spec = dict(spec)


def make(store, actor, page=None, name="sources"):
    page = page or FakePage()
    return SavedQueriesPanel(store=store, actor=actor, page=name, current_spec=page.current,
                             apply_spec=page.apply, clock=lambda: T), page


def save(panel, name, visibility="private", description=""):
    panel._name.value, panel._description.value = name, description
    panel._visibility.value = visibility
    return panel.save()


def test_saved_query_lists_runs_and_survives_a_new_panel(store):
    panel, page = make(store, ANA)
    qid = save(panel, "bright variables", "team", "η above the line")
    assert qid is not None and panel.listed() == [qid]
    page.spec = {"sort_by": "v"}
    assert panel.run(qid) and page.spec == {"variable_only": True, "sort_by": "eta"}
    again, _ = make(store, ANA)  # a reload builds a new panel over the same store
    assert again.listed() == [qid]


@pytest.mark.parametrize(("visibility", "bob_sees", "visitor_sees"), [
    ("private", False, False), ("team", True, False), ("public", True, True)])
def test_each_visibility_reaches_exactly_whom_it_should(store, visibility, bob_sees,
                                                        visitor_sees):
    qid = save(make(store, ANA)[0], "q", visibility)
    for actor, sees in ((BOB, bob_sees), (Actor.visitor(), visitor_sees)):
        panel, page = make(store, actor)
        assert (qid in panel.listed()) == sees
        panel.open_from_url({"query": str(qid)})
        assert bool(page.applied) == sees
        if not sees:
            # the same words as for an id that never existed
            assert f"#{qid}: not found" in panel.message()
            panel.open_from_url({"query": "999999"})
            assert "#999999: not found" in panel.message()


def test_only_the_owner_edits_or_deletes_and_another_forks_a_copy(store):
    ana, _ = make(store, ANA)
    qid = save(ana, "mine", "team")
    bob, bob_page = make(store, BOB, FakePage({"sort_by": "v"}))
    bob._list.value = qid
    assert bob._delete.disabled and bob._update.disabled and not bob._fork.disabled
    bob.delete()  # a forged click is refused by the store, shown as a message
    bob._name.value = "taken over"
    bob.update()
    assert "belongs to ana" in bob.message() and "Traceback" not in bob.message()
    assert store.saved_query(qid, reader="ana").name == "mine"
    fork = bob.fork()
    copy = store.saved_query(fork, reader="bob")
    assert (copy.owner, copy.visibility, copy.forked_from) == ("bob", "private", qid)
    assert not bob._delete.disabled
    assert bob.run() and bob_page.spec == {"variable_only": True, "sort_by": "eta"}
    bob._name.value, bob._visibility.value = "bob's", "public"
    bob.update()
    assert store.saved_query(fork, reader=None).name == "bob's"
    bob.delete()
    assert store.saved_query(fork, reader="bob") is None and fork not in bob.listed()


def test_a_stale_filter_names_its_field_and_the_page_keeps_its_own(store):
    qid = store.save_query(owner="ana", page="sources", name="old", now=T,
                           spec={"eta_minimum": 2.0})  # renamed by an upgrade
    panel, page = make(store, ANA, FakePage({"sort_by": "v"}))
    assert not panel.run(qid)
    assert "eta_minimum" in panel.message() and "no longer exists" in panel.message()
    assert page.spec == {"sort_by": "v"} and page.applied == []
    panel.open_from_url({"filter": json.dumps({"eta_min": "lots"})})
    assert "eta_min" in panel.message() and page.applied == []


def test_store_refusals_are_messages(store):
    panel, _ = make(store, ANA)
    assert save(panel, "") is None and "needs a name" in panel.message()
    save(panel, "dup")
    assert save(panel, "dup") is None and "already has" in panel.message()
    visitor, _ = make(store, Actor.visitor())
    assert visitor.save() is None and "sign in" in visitor.message()
    assert not visitor._save.visible


def test_the_url_carries_the_filter_and_opens_it(store):
    spec = FilterSpec(eta_min=2.5, name="J10", sort_by="v")
    panel, _ = make(store, ANA, FakePage({"eta_min": 2.5, "name": "J10", "sort_by": "v"}))
    query = parse_qs(panel.url_query()[1:])
    other, page = make(store, BOB)
    other.open_from_url({k: v[0] for k, v in query.items()})
    assert FilterSpec(**page.spec) == spec


def test_a_query_of_another_page_is_not_found_here(store):
    qid = store.save_query(owner="ana", page="images", name="deep", now=T, spec={},
                           visibility="public")
    panel, page = make(store, ANA)
    assert not panel.run(qid) and "not found" in panel.message() and page.applied == []


def test_sources_page_saves_and_runs_its_filter(store):
    from views.sources_page import SourcesPage

    page = SourcesPage(store=store, actor=ANA)
    page.__panel__()
    page._eta[0].value, page._variable.value, page._name.value = 2.0, True, "J1"
    wanted = page.filter
    assert wanted.eta_min == 2.0 and wanted.variable_only
    qid = save(page._queries, "mine")
    page._eta[0].value, page._variable.value, page._name.value = None, False, ""
    assert page.filter != wanted
    assert page._queries.run(qid) and page.filter == wanted
    assert page._variable.value and page._eta[0].value == 2.0
    again = SourcesPage(store=store, actor=BOB)
    again.__panel__()
    link = parse_qs(page._queries.url_query()[1:])  # what the browser's URL carries
    again._queries.open_from_url({k: v[0] for k, v in link.items()})
    assert again.filter == wanted


def test_images_page_saves_and_runs_its_filter(store):
    from views.images_page import ImageBrowser

    page = ImageBrowser(store=store, actor=ANA)
    page.__panel__()
    page.param.update(dec_range=(30.0, 40.0), rms_range=(0.0, 2.0), qa="passed",
                      time_range=(datetime(2026, 1, 1), datetime(2026, 2, 1)))
    wanted = page.filters()
    qid = save(page._queries, "deep")
    assert store.saved_query(qid, reader="ana").spec["qa"] is True
    page.param.update(dec_range=None, rms_range=None, qa="all", time_range=None)
    assert page._queries.run(qid)
    got = page.filters()
    assert (got.dec_min, got.dec_max, got.qa) == (30.0, 40.0, True)
    assert got.rms_max == pytest.approx(wanted.rms_max)
    assert abs((got.from_utc - wanted.from_utc).total_seconds()) < 1
    assert abs((got.to_utc - wanted.to_utc).total_seconds()) < 1
    assert page._range_widgets["dec_range"].value == (30.0, 40.0)  # the widgets show it
    assert page._range_widgets["rms_range"].value == pytest.approx((0.0, 2.0))


def test_pipeline_page_saves_and_runs_its_filter(store):
    from views.pipeline_page import ALL, PipelinePage

    page = PipelinePage(store=store, actor=ANA)
    page.__panel__()
    page.param.update(state_filter="failed", search="2026-11")
    qid = save(page._queries, "failures")
    assert store.saved_query(qid, reader="ana").spec == {"state": "failed", "search": "2026-11"}
    page.param.update(state_filter=ALL, search="")
    assert page._queries.run(qid)
    assert (page.state_filter, page.search) == ("failed", "2026-11")
    stale = store.save_query(owner="ana", page="pipeline", name="old", now=T,
                             spec={"state": "no-such-state"})
    assert not page._queries.run(stale) and "no-such-state" in page._queries.message()
    assert (page.state_filter, page.search) == ("failed", "2026-11")
