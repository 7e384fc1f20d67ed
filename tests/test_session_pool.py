"""A session's browser events run in the order they came, different sessions side by side.

Panel hands each property change and each click to its thread pool separately; with a
plain pool a button pressed right after typing could be handled before the typed value
(a preview computed from the old overrides). The served dashboard's pool keeps one queue
per session (app/session_pool.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import panel as pn
import pytest
from bokeh.document import Document
from conftest import free_port, wait_http
from playwright.sync_api import expect

from app.server import use_session_threads
from app.session_pool import SessionOrderedPool, session_document


def test_one_sessions_items_run_in_order_even_when_the_first_is_slow():
    pool = SessionOrderedPool(ThreadPoolExecutor(4))
    doc, ran, go = Document(), [], threading.Event()

    def first(d):
        go.wait(10)
        ran.append("first")

    f1 = pool.submit(first, doc)
    f2 = pool.submit(lambda d: ran.append("second"), doc)
    time.sleep(0.2)  # a plain pool would have run the second on a free thread by now
    assert not f2.done() and ran == []
    go.set()
    wait([f1, f2], timeout=10)
    assert ran == ["first", "second"]
    assert pool.pending() == 0  # nothing kept for a session once its queue drains
    pool.shutdown()


def test_different_sessions_run_side_by_side():
    pool = SessionOrderedPool(ThreadPoolExecutor(2))
    a, b = Document(), Document()
    b_ran = threading.Event()
    # a's item can finish only if b's runs meanwhile: one slow session holds up no other
    fa = pool.submit(lambda d: b_ran.wait(10), a)
    fb = pool.submit(lambda d: b_ran.set(), b)
    assert fa.result(timeout=15) is True and fb.result(timeout=15) is None
    pool.shutdown()


def test_an_error_reaches_the_future_and_the_queue_goes_on():
    pool = SessionOrderedPool(ThreadPoolExecutor(1))
    doc = Document()

    def boom(d):
        raise ValueError("bad event")

    f1 = pool.submit(boom, doc)
    f2 = pool.submit(lambda d: "after", doc)
    assert f2.result(timeout=10) == "after"
    with pytest.raises(ValueError, match="bad event"):
        f1.result()
    pool.shutdown()


def test_the_document_is_found_in_each_shape_panel_submits():
    doc = Document()

    class Periodic:
        _doc = doc

        def run(self, post, busy):
            pass

    from functools import partial
    assert session_document(print, (doc, "event"), {}) is doc
    assert session_document(partial(print, doc, "cb"), (), {}) is doc
    assert session_document(Periodic().run, (True, "id"), {}) is doc
    assert session_document(print, ("no", "doc"), {}) is None


def _typed_then_clicked_app():
    """A box whose change takes a while to take effect, and a button that reads its effect."""
    box = pn.widgets.TextInput(label="overrides", css_classes=["box"])
    seen = pn.pane.Markdown("seen: -", css_classes=["seen"])
    button = pn.widgets.Button(label="Preview", css_classes=["preview"])
    derived = {"value": ""}

    def on_box(event):
        time.sleep(0.5)  # a page's store query after a filter change, say
        derived["value"] = event.new.upper()

    box.param.watch(on_box, "value")
    button.on_click(lambda _: setattr(seen, "object", f"seen: {derived['value']}"))
    return pn.Column(box, button, seen)


@pytest.mark.ui
def test_a_click_right_after_typing_acts_on_the_typed_value(page):
    use_session_threads()
    port = free_port()
    started = threading.Event()
    holder = {}

    def serve() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        server = pn.io.server.get_server({"typed": _typed_then_clicked_app}, port=port,
                                         address="127.0.0.1", start=False, show=False,
                                         websocket_origin=[f"127.0.0.1:{port}"])
        holder["loop"] = server.io_loop
        server.start()
        started.set()
        server.io_loop.start()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        url = f"http://127.0.0.1:{port}/typed"
        wait_http(url)
        page.goto(url)
        for word in ("abc", "defg"):
            page.locator(".box input").fill(word)
            page.locator(".preview button").click()  # the blur sends the value, then the click
            expect(page.locator(".seen")).to_contain_text(f"seen: {word.upper()}")
    finally:
        holder["loop"].add_callback(holder["loop"].stop)
        thread.join(10)
