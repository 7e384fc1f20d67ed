"""Browser sessions are freed when their browsers go: the count and the callbacks fall to 0."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import InProcessServer, ServedHome, add_observations, sign_in, wait_until
from playwright.sync_api import expect

from pipeline.home import Home
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store

pytestmark = pytest.mark.ui

N_SESSIONS = 3


def health(url: str) -> dict:
    """/api/health's body (503 without a running scheduler, the body alike)."""
    try:
        with urllib.request.urlopen(url + "/api/health", timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


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
            served.sign_in(page)
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


def watcher_count(state: RunnerState) -> int:
    """Watchers on the runner state (each session's pages add theirs)."""
    return sum(len(ws) for kinds in state.param.watchers.values() for ws in kinds.values())


def watchers(state: RunnerState) -> list[str]:
    """Who watches the runner state, for a failure's message."""
    return [f"{name}: {getattr(w.fn, '__qualname__', w.fn)}"
            for name, kinds in state.param.watchers.items()
            for ws in kinds.values() for w in ws]


@pytest.fixture
def in_process(home):
    """A server in this process, so the test can look at the shared runner state."""
    with Store.open(home) as store:
        add_observations(store, 2, state="complete")
        state = RunnerState(paused=True)
        server = InProcessServer(home, store, state)
        yield server.url, state
        server.stop()


def test_closed_sessions_leave_no_watchers_on_the_runner_state(in_process, browser):
    url, state = in_process
    before = watcher_count(state)
    contexts = [browser.new_context() for _ in range(N_SESSIONS)]
    try:
        for ctx in contexts:
            page = ctx.new_page()
            sign_in(page, url, "vera")
            page.goto(url + "/overview")
            expect(page.locator('.state-card[data-state="complete"] .count')).to_have_text(
                "2", timeout=30_000)
        assert watcher_count(state) > before
    finally:
        for ctx in contexts:
            ctx.close()
    wait_until(lambda: health(url)["sessions"] == 0, timeout=60,
               what="the server's session count back at 0")
    # the runner state outlives every session: what still watches it keeps a page alive
    wait_until(lambda: watcher_count(state) == before, timeout=10,
               what=f"the runner state's watchers back at {before} ({watchers(state)})")
