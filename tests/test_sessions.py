"""Browser sessions are freed when their browsers go: the count and the callbacks fall to 0."""

from __future__ import annotations

import json
import urllib.request

import pytest
from conftest import ServedHome, add_observations, wait_until
from playwright.sync_api import expect

from pipeline.home import Home
from pipeline.store import Store

pytestmark = pytest.mark.ui

N_SESSIONS = 3


def health(url: str) -> dict:
    """/api/health's body."""
    with urllib.request.urlopen(url + "/api/health", timeout=30) as r:
        return json.loads(r.read())


def metric(url: str, name: str) -> float:
    """One unlabelled gauge from /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


@pytest.fixture
def served(tmp_path):
    home = Home.resolve(tmp_path / "home")
    with Store.open(home) as store:
        add_observations(store, 2, state="complete")
    server = ServedHome(home, "--paused")
    yield server
    assert server.stop() == 0


def test_closed_sessions_are_freed_and_stop_polling(served, browser):
    assert health(served.url)["sessions"] == 0
    contexts = [browser.new_context() for _ in range(N_SESSIONS)]
    try:
        for ctx in contexts:
            page = ctx.new_page()
            page.goto(served.url + "/overview")
            # the page fills in after load (built in Panel's thread pool): wait for it
            expect(page.locator('.state-card[data-state="complete"] .count')).to_have_text(
                "2", timeout=30_000)
        body = health(served.url)
        assert body["sessions"] == N_SESSIONS
        # every open overview polls the runner state
        assert body["periodic_callbacks"] >= N_SESSIONS
        assert metric(served.url, "contimg_sessions") == N_SESSIONS
    finally:
        for ctx in contexts:
            ctx.close()
    # Bokeh frees a session UNUSED_SESSION_LIFETIME_MS after its socket closed
    wait_until(lambda: health(served.url)["sessions"] == 0, timeout=60,
               what="the server's session count back at 0")
    body = health(served.url)
    assert body["periodic_callbacks"] == 0, body
    assert metric(served.url, "contimg_session_callbacks") == 0
