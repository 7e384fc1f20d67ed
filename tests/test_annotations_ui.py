"""The annotations panel: safe Markdown, threads, tags, ratings, read-only visitors; in
process over a real store, and served in Chromium across a server restart."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import T0

from pipeline.actor import Actor
from pipeline.store.sources import FilterSpec
from views.annotations_panel import AnnotationsPanel, comment_html, thread_html


@pytest.fixture
def image_id(store) -> int:
    return store.add_image(observation_id="obs0", path="/nowhere/0.fits", mid_mjd=61000.0,
                           now=T0, qa_passed=False, qa_reason="rms too high")


@pytest.mark.parametrize("body, present, absent", [
    ("<script>window.__pwned=1</script>", "&lt;script&gt;", "<script"),
    ('<img src=x onerror="alert(1)">', "&lt;img", "<img"),
    ("[x](javascript:alert(1))", "[x](javascript:alert(1))", "href=\"javascript"),
    ("**bold** and `code`", "<strong>bold</strong>", "&lt;strong"),
])
def test_comment_markdown_escapes_raw_html(body, present, absent):
    out = comment_html(body)
    assert present in out and absent not in out


def test_thread_html_nests_replies_and_escapes_authors(store, image_id):
    first = store.add_comment("image", image_id, by="<b>vera</b>", body="top")
    store.add_comment("image", image_id, by="val", body="reply", parent_id=first)
    out = thread_html(store.comments("image", image_id))
    assert "&lt;b&gt;vera&lt;/b&gt;" in out and "<b><b>" not in out
    assert 'style="margin-left: 20px"' in out  # the reply, one level in


def test_panel_writes_as_its_actor(store, image_id):
    panel = AnnotationsPanel(store=store, actor=Actor(name="vera", role="viewer"),
                             kind="image", target_id=image_id)
    panel.__panel__()
    assert "Pipeline QA: failed (rms too high)" in panel._qa.object
    panel._body.value = "ghost near the *bright* source"
    panel._on_post()
    assert list(store.comments("image", image_id)["author"]) == ["vera"]
    cid = int(store.comments("image", image_id)["id"].iloc[0])
    assert f"Reply to #{cid} (vera)" in panel._mode.options
    panel._mode.value = f"Edit my #{cid}"
    assert panel._body.value == "ghost near the *bright* source"
    panel._body.value = "no ghost after all"
    panel._on_post()
    assert list(store.comments("image", image_id)["body"]) == ["no ghost after all"]
    panel._tag_input.value = "Ghost Image"
    panel._on_add_tag()
    assert store.tags("image", image_id) == ["ghost-image"]
    assert "ghost-image" in panel._tags.object
    panel._rating.value, panel._rating_note.value = "bad", "ghost"
    panel._on_rate()
    assert 'data-consensus="bad"' in panel._qa.object
    panel._tag_input.value = "a,b"
    panel._on_add_tag()
    assert "commas" in panel._message.object
    panel._tag_remove.value = "ghost-image"
    panel._on_remove_tag()
    assert store.tags("image", image_id) == []


def test_someone_elses_comment_offers_no_edit(store, image_id):
    store.add_comment("image", image_id, by="otto", body="mine")
    panel = AnnotationsPanel(store=store, actor=Actor(name="vera", role="viewer"),
                             kind="image", target_id=image_id)
    panel.__panel__()
    assert not any(m.startswith("Edit") for m in panel._mode.options)


def test_visitor_reads_but_cannot_write(store, image_id):
    store.add_comment("image", image_id, by="vera", body="visible to all")
    panel = AnnotationsPanel(store=store, actor=Actor.visitor(), kind="image",
                             target_id=image_id)
    panel.__panel__()
    assert "visible to all" in panel._thread.object
    assert not panel._writers.visible and panel._readonly.visible
    panel._body.value = "sneaky"
    panel._on_post()  # a forged click: the store refuses a writer of None
    assert "signed-out" in panel._message.object
    assert len(store.comments("image", image_id)) == 1


def test_panel_follows_the_target_and_sources(store):
    store.add_catalog_sources(pd.DataFrame({
        "name": ["J0001+A"], "ra_deg": [1.0], "dec_deg": [10.0], "flux_jy": [1.0],
        "spectral_index": [-0.7]}), now=T0)
    sid = int(store.export_sources(FilterSpec())["id"].iloc[0])
    store.add_tag("source", sid, "agn", by="vera")
    panel = AnnotationsPanel(store=store, actor=Actor(name="val", role="viewer"),
                             kind="source")
    panel.__panel__()
    assert not panel._writers.visible
    panel.target_id = sid
    assert "agn" in panel._tags.object and "Pipeline QA" not in panel._qa.object
    assert panel._writers.visible


def test_pages_hand_their_actor_to_the_panel(store, image_id):
    from views.images_page import ImageBrowser
    page = ImageBrowser(store=store)
    page.actor = Actor.visitor()  # as the server does, after making the page
    page.__panel__()
    page.image_id = image_id
    assert page.annotations.target_id == image_id
    assert page.annotations._readonly.visible and not page.annotations._writers.visible


@pytest.mark.ui
def test_served_comment_is_text_and_survives_a_restart(tmp_path, browser):
    from conftest import ServedHome, sign_in
    from image_factory import SPECS, make_images
    from playwright.sync_api import expect

    from pipeline.home import Home
    from pipeline.store import Store

    home = Home.resolve(tmp_path / "home")
    with Store.open(home) as store:
        (img,) = make_images(store, home.images, SPECS[:1])
    # A <script> put in by innerHTML never runs, but an onerror does: both must show as text.
    attack = '<script>window.__pwned=1</script> <img src=x onerror="window.__pwned=2"> **bold**'


    def open_image(server, who):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        sign_in(context, server.url, who)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(server.url + "/images")
        page.locator(".image-table .tabulator-row").first.locator(
            '[tabulator-field="observation"]').click()
        expect(page.locator(".annotations-title")).to_contain_text(f"image {img}")
        return context, page

    server = ServedHome(home, "--paused")
    try:
        context, page = open_image(server, "vera")
        page.locator(".comment-body-input textarea").fill(attack)
        page.locator(".post button").click()
        thread = page.locator(".annotations-thread")
        expect(thread).to_contain_text("<script>window.__pwned=1</script>")
        expect(thread).to_contain_text('<img src=x onerror="window.__pwned=2">')
        expect(thread.locator("strong")).to_have_text("bold")  # Markdown still renders
        expect(thread.locator(".who b")).to_have_text("vera")
        assert thread.locator("script").count() == 0 and thread.locator("img").count() == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        page.locator(".rating-choice button", has_text="bad").click()
        page.locator(".rating-note input").fill("stripes")
        page.locator(".rate button").click()
        expect(page.locator(".qa-consensus")).to_have_attribute("data-consensus", "bad")
        context.close()
    finally:
        assert server.stop() == 0

    again = ServedHome(home, "--paused")
    try:
        context, page = open_image(again, "val")
        thread = page.locator(".annotations-thread")
        expect(thread).to_contain_text("<script>window.__pwned=1</script>")
        expect(thread.locator(".who b")).to_have_text("vera")
        expect(page.locator(".qa-consensus")).to_have_attribute("data-consensus", "bad")
        expect(page.locator(".annotations-qa")).to_contain_text("1 bad")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        context.close()
    finally:
        assert again.stop() == 0


def test_tag_filters_on_the_images_and_sources_pages(store, image_id):
    from views.images_page import ImageBrowser
    from views.sources_page import SourcesPage
    other = store.add_image(observation_id="obs1", path="/nowhere/1.fits", mid_mjd=61000.1,
                            now=T0)
    store.add_catalog_sources(pd.DataFrame({
        "name": ["J0001+A", "J0002+B"], "ra_deg": [1.0, 2.0], "dec_deg": [10.0, 10.0],
        "flux_jy": [1.0, 0.5], "spectral_index": [-0.7] * 2}), now=T0)
    s1, _s2 = (int(i) for i in store.export_sources(FilterSpec(sort_by="name",
                                                                 descending=False))["id"])
    store.add_tag("source", s1, "agn", by="vera")
    browser = ImageBrowser(store=store, actor=Actor(name="vera", role="viewer"))
    browser.__panel__()
    assert list(browser._tag_w.options) == [""]
    browser.image_id = other
    browser.annotations._tag_input.value = "Ghost"
    browser.annotations._on_add_tag()  # a write refreshes the page's tag list
    assert list(browser._tag_w.options) == ["", "ghost"]
    browser.tag = "ghost"
    assert list(browser._rows["id"]) == [other]
    browser.tag = ""
    assert sorted(browser._rows["id"]) == sorted([image_id, other])
    sources = SourcesPage(store=store)
    sources.__panel__()
    sources._tag.value = "AGN"
    assert sources.filter.tag == "AGN" and list(sources._rows["id"]) == [s1]
    sources._tag.value = "a,b"
    assert "commas" in sources._filter_error.object
