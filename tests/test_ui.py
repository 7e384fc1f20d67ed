"""The dashboard in real Chromium: overview counts, navigation, live updates, no CDN."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import T0, ServedHome, add_observations, free_port
from playwright.sync_api import expect
from tornado.ioloop import IOLoop

from app.server import AppContext, make_server
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.jobs.runner_state import RunnerState
from pipeline.jobs.states import STATES
from pipeline.store import Store
from views.pages import PAGES

pytestmark = pytest.mark.ui

KNOWN = {"pending": 3, "converted": 2, "calibrated": 1, "imaged": 4, "complete": 7, "failed": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from pipeline.home import Home
    home = Home.resolve(tmp_path_factory.mktemp("ui") / "home")
    with Store.open(home) as store:
        for state, n in KNOWN.items():
            add_observations(store, n, state=state, prefix=f"{state}-")
    server = ServedHome(home, "--paused")
    yield server
    assert server.stop() == 0


def test_overview_shows_exactly_the_stored_counts(served, page):
    page.goto(served.url + "/overview")
    for state in STATES:
        card = page.locator(f'.state-card[data-state="{state}"] .count')
        expect(card).to_have_text(str(KNOWN.get(state, 0)))
    expect(page.locator(".runner-status")).to_contain_text("paused")


def test_root_redirects_to_overview(served, page):
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/overview")


def test_every_nav_link_opens_its_page(served, page):
    page.goto(served.url + "/overview")
    for spec in PAGES:
        page.locator(f'nav a[data-slug="{spec.slug}"]').click()
        expect(page).to_have_url(f"{served.url}/{spec.slug}")
        expect(page).to_have_title(f"contimg · {spec.title}")
        expect(page.locator(f'nav a[data-slug="{spec.slug}"]')).to_have_class("current")
        heading = "Observations by state" if spec.slug == "overview" else spec.title
        expect(page.get_by_role("heading", name=heading).first).to_be_visible()


def test_pages_fetch_nothing_from_outside(served, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for spec in PAGES[:3]:
        page.goto(f"{served.url}/{spec.slug}")
        expect(page.locator("nav a.current")).to_have_text(spec.title)
    outside = [u for u in requests
               if not u.startswith((served.url, "blob:" + served.url, "data:"))]
    assert requests and outside == []


@pytest.fixture
def live_server(home):
    """An in-process server whose runner has a convert stage the test releases by hand."""
    store = Store.open(home)
    add_observations(store, 3)
    gate = threading.Event()

    def convert(ctx):
        ctx.progress(0.4)
        gate.wait(60)

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    state = RunnerState()
    runner = Runner(store, home, reg, state=state, config=RunnerConfig(poll_s=0.1, workers=3))
    port = free_port()
    started = threading.Event()
    holder = {}

    def serve():
        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        server = make_server(AppContext(home=home, store=store, state=state), port=port,
                             address="127.0.0.1", loop=loop)
        server.start()
        holder.update(loop=loop, server=server)
        started.set()
        loop.start()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port}", runner, gate
    gate.set()
    runner.stop()
    holder["loop"].add_callback(holder["loop"].stop)
    thread.join(10)
    store.close()


def test_overview_updates_live_while_jobs_run(live_server, page):
    url, runner, gate = live_server
    page.goto(url + "/overview")
    pending = page.locator('.state-card[data-state="pending"] .count')
    converting = page.locator('.state-card[data-state="converting"] .count')
    converted = page.locator('.state-card[data-state="converted"] .count')
    expect(pending).to_have_text("3")
    runner.start()
    expect(converting).to_have_text("3")
    expect(pending).to_have_text("0")
    expect(page.locator(".running-jobs")).to_contain_text("convert")
    gate.set()
    expect(converted).to_have_text("3")
    expect(converting).to_have_text("0")
    expect(page.locator(".recent-jobs")).to_contain_text("done")


@pytest.fixture
def served_with_failure(home):
    """Four pending observations and one the runner quarantined after a real failure."""
    from pipeline.jobs.runner import RunnerConfig as Config
    with Store.open(home) as store:
        [bad] = add_observations(store, 1, prefix="bad-")

        def convert(ctx):
            raise OSError("sb07: truncated HDF5 file")

        reg = StageRegistry()
        reg.register_stage("convert", convert)
        Runner(store, home, reg, config=Config(max_attempts=1)).run_once()
        add_observations(store, 4)
        store.add_quarantine(original_path="/in/2026-11-23T12:00:03_sb07.hdf5",
                             quarantine_path="/q/2026-11-23T12:00:03_sb07.hdf5", stage="ingest",
                             reason="sb07: not a readable UVH5 file (truncated)",
                             now=T0, observation_id=bad)
    server = ServedHome(home, "--paused")
    yield server, bad
    assert server.stop() == 0


def test_pipeline_page_lists_and_retries(served_with_failure, page):
    import json
    import urllib.request
    served, bad = served_with_failure
    page.goto(served.url + "/pipeline")
    rows = page.locator(".pipeline-table .tabulator-row")
    expect(rows).to_have_count(5)
    failed_row = rows.filter(has_text=bad)
    expect(failed_row).to_contain_text("sb07: truncated HDF5 file")
    expect(failed_row).to_contain_text("failed")
    expect(failed_row).to_contain_text("not a readable UVH5 file (truncated)")
    expect(page.locator(".quarantine-table")).to_contain_text("2026-11-23T12:00:03_sb07.hdf5")

    page.locator(".pipeline-table").page.get_by_role("combobox").first.select_option("failed")
    expect(rows).to_have_count(1)
    retry = page.locator(".retry-button button")
    expect(retry).to_be_disabled()
    rows.first.locator('input[type="checkbox"]').check()
    expect(retry).to_have_text("Retry 1 failed")
    retry.click()
    expect(page.locator(".pipeline-message")).to_contain_text(f"Sent back to the queue: {bad}")
    expect(rows).to_have_count(0)  # the filter still says failed
    health = json.loads(urllib.request.urlopen(served.url + "/api/health").read())
    assert health["counts"]["failed"] == 0 and health["counts"]["pending"] == 5

