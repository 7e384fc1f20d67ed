"""The dashboard in real Chromium: overview counts, navigation, live updates, no CDN."""

from __future__ import annotations

import pytest
from conftest import (
    T0,
    InProcessServer,
    ServedHome,
    SteppedConvert,
    ViewQueryCounter,
    add_observations,
    counting_store,
    fail_one_observation,
    sign_in,
    wait_until,
)
from playwright.sync_api import expect

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
    served.sign_in(page)
    page.goto(served.url + "/overview")
    for state in STATES:
        card = page.locator(f'.state-card[data-state="{state}"] .count')
        expect(card).to_have_text(str(KNOWN.get(state, 0)))
    expect(page.locator(".runner-status")).to_contain_text("paused")


def test_root_redirects_to_overview(served, page):
    served.sign_in(page)
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/overview")


def test_every_nav_link_opens_its_page(served, page):
    served.sign_in(page)
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
        served.sign_in(page)
        page.goto(f"{served.url}/{spec.slug}")
        expect(page.locator("nav a.current")).to_have_text(spec.title)
    outside = [u for u in requests
               if not u.startswith((served.url, "blob:" + served.url, "data:"))]
    assert requests and outside == []


@pytest.fixture
def live_server(home):
    """An in-process server whose runner has a convert stage the test releases by hand."""
    counter = ViewQueryCounter()
    store = counting_store(home, counter)
    add_observations(store, 3)
    convert = SteppedConvert()
    reg = StageRegistry()
    reg.register_stage("convert", convert)
    state = RunnerState()
    runner = Runner(store, home, reg, state=state, config=RunnerConfig(poll_s=0.1, workers=3))
    server = InProcessServer(home, store, state)
    yield server.url, runner, convert
    convert.gate.set()
    runner.stop()
    server.stop()
    store.close()


def test_overview_updates_live_while_jobs_run(live_server, page):
    url, runner, convert = live_server
    sign_in(page, url, "vera")
    page.goto(url + "/overview")
    pending = page.locator('.state-card[data-state="pending"] .count')
    converting = page.locator('.state-card[data-state="converting"] .count')
    converted = page.locator('.state-card[data-state="converted"] .count')
    expect(pending).to_have_text("3")
    runner.start()
    # every job is inside the stage and held there until the gate opens
    wait_until(lambda: len(convert.started) == 3, what="three convert jobs running")
    expect(converting).to_have_text("3")
    expect(pending).to_have_text("0")
    expect(page.locator(".running-jobs .tabulator-row")).to_have_count(3)
    expect(page.locator(".running-jobs")).to_contain_text("convert")
    convert.gate.set()
    expect(converted).to_have_text("3")
    expect(converting).to_have_text("0")
    expect(page.locator(".running-jobs .tabulator-row")).to_have_count(0)
    expect(page.locator(".recent-jobs")).to_contain_text("done")


@pytest.fixture
def stepping_server(home):
    """One observation whose convert job steps its progress by 0.1 % every 0.15 s.

    1 000 steps (150 s): a busy machine's waits never see it run out of steps.
    """
    counter = ViewQueryCounter()
    store = counting_store(home, counter)
    add_observations(store, 1)
    convert = SteppedConvert(step_s=0.15, steps=1000)
    reg = StageRegistry()
    reg.register_stage("convert", convert)
    state = RunnerState()
    runner = Runner(store, home, reg, state=state, config=RunnerConfig(poll_s=0.1, workers=1))
    server = InProcessServer(home, store, state)
    yield server.url, runner, convert, state, counter
    convert.gate.set()
    runner.stop()
    server.stop()
    store.close()


#: true once the overview's running-jobs table holds a progress of at least ``want``
RUNNING_PROGRESS_JS = """(want) => {
  if (!window.Bokeh || !Bokeh.documents.length) return false;
  for (const m of Bokeh.documents[0].all_models) {
    const d = m.data;
    if (d && d.progress !== undefined && d.stage !== undefined)
      return Array.from(d.progress).some(p => p >= want);
  }
  return false;
}"""


def progress_of(state: RunnerState) -> float:
    return state.running[0]["progress"] if state.running else -1.0


def test_progress_steps_move_the_bars_without_store_queries(stepping_server, browser):
    url, runner, convert, state, counter = stepping_server
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    sign_in(context, url, "vera")
    tabs = {}
    try:
        for slug in ("overview", "pipeline", "images", "sources", "calibration", "gpu"):
            tabs[slug] = context.new_page()
            tabs[slug].goto(f"{url}/{slug}")
            expect(tabs[slug].locator("nav a.current")).to_be_visible()
        runner.start()
        # the job's start is a store change every page refreshes for (each within its
        # period, 5 s at most); after that only progress moves
        wait_until(lambda: progress_of(state) >= 0.045, what="45 progress steps")
        before = counter.count
        first = progress_of(state)
        bar = tabs["overview"].locator(".running-jobs .tabulator-row")
        expect(bar).to_have_count(1)
        wait_until(lambda: progress_of(state) >= first + 0.03, what="30 more progress steps")
        # the overview's bar follows the runner state: it shows a later percentage
        tabs["overview"].wait_for_function(RUNNING_PROGRESS_JS, arg=first + 0.02,
                                           timeout=20_000)
        assert counter.count == before, (
            f"{counter.count - before} store queries from pages during 30 progress steps")
        convert.gate.set()
        expect(tabs["overview"].locator(".running-jobs .tabulator-row")).to_have_count(0)
        # the job's end is a store change: pages read the store again
        wait_until(lambda: counter.count > before, what="a store refresh after the job ended")
    finally:
        context.close()


@pytest.fixture
def served_with_failure(home):
    """Four pending observations and one the runner quarantined after a real failure."""
    with Store.open(home) as store:
        bad = fail_one_observation(store, home, "sb07: truncated HDF5 file")
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
    served.sign_in(page)
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

