"""The calibration page in real Chromium: timeline bars, a clicked table's QA, flux monitor."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.time import Time
from conftest import (
    T0,
    InProcessServer,
    ServedHome,
    SteppedConvert,
    ViewQueryCounter,
    add_observations,
    counting_store,
    sign_in,
    wait_until,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from pipeline.calibration.registry import CalibrationConfig, validity_window
from pipeline.home import Home
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store

pytestmark = pytest.mark.ui

CFG = CalibrationConfig()
N_ANT, N_CHAN = 6, 16
SHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


def write_caltable(path: Path, cparam: np.ndarray, freq_hz: np.ndarray) -> Path:
    """A minimal CASA calibration table: main CPARAM/FLAG/ANTENNA1/TIME + SPECTRAL_WINDOW."""
    from casacore.tables import makearrcoldesc, makescacoldesc, maketabdesc, table

    nrow = cparam.shape[0]
    desc = maketabdesc([makescacoldesc("TIME", 0.0), makescacoldesc("ANTENNA1", 0),
                        makearrcoldesc("CPARAM", 0j, ndim=2),
                        makearrcoldesc("FLAG", False, ndim=2)])
    with table(str(path), desc, nrow=nrow, ack=False) as t:
        t.putcol("TIME", np.zeros(nrow))
        t.putcol("ANTENNA1", np.arange(nrow) % N_ANT)
        t.putcol("CPARAM", cparam)
        t.putcol("FLAG", np.zeros(cparam.shape, bool))
        spw_path = path / "SPECTRAL_WINDOW"
        with table(str(spw_path), maketabdesc([makearrcoldesc("CHAN_FREQ", 0.0, ndim=1)]),
                   nrow=1, ack=False) as spw:
            spw.putcell("CHAN_FREQ", 0, freq_hz)
        t.putkeyword("SPECTRAL_WINDOW", f"Table: {spw_path}")
    return path


def mjd(t) -> float:
    return float(Time(t, scale="utc").mjd)


# (name, hours from T0, passed, snr, flagged, reason, real files)
TABLES = [
    ("3C48", -33.0, True, 42.0, 0.08, None, False),
    ("3C286", -10.0, False, 6.5, 0.12, "SNR 6.5 below 10", False),
    ("3C48", -6.0, True, 55.3, 0.04, None, True),
    ("3C147", 2.0, False, 31.0, 0.45, "flagged fraction 0.45 above 0.3", False),
    ("3C48", 18.0, True, 38.0, 0.10, None, False),
]


def fill_calibration(store: Store, home: Home) -> None:
    """Three observations and the TABLES solves (real files for the one marked so)."""
    rng = np.random.default_rng(3)
    freq = np.linspace(1.31e9, 1.50e9, N_CHAN)
    for k in range(3):  # conftest's add_observations has placeholder mid-times
        start = T0 + timedelta(minutes=5 * k)
        store.add_observation(obs_id=start.strftime("%Y-%m-%dT%H:%M:%S"), start_utc=start,
                              mid_mjd=mjd(start + timedelta(minutes=2.5)), dec_deg=33.0,
                              n_subbands=16, now=T0, state="converted")
    for i, (cal, dt_h, passed, snr, flagged, reason, real) in enumerate(TABLES):
        transit = T0 + timedelta(hours=dt_h)
        d = home.caltables / f"obs{i}"
        b, g = d / "cal.B", d / "cal.G"
        if real:
            d.mkdir(parents=True)
            bp = (1 + 0.1 * np.sin(np.linspace(0, 3, N_CHAN)))[None, :, None] * np.exp(
                1j * rng.normal(0, 0.1, (N_ANT, N_CHAN, 2))) * rng.uniform(
                0.9, 1.1, (N_ANT, 1, 2))
            write_caltable(b, bp.astype(np.complex64), freq)
            gains = rng.uniform(0.8, 1.2, (N_ANT, 1, 2)) * np.exp(
                1j * rng.uniform(-2, 2, (N_ANT, 1, 2)))
            write_caltable(g, gains.astype(np.complex64), freq[N_CHAN // 2:][:1])
        lo, hi = validity_window(mjd(transit), CFG)
        store.add_caltable(
            observation_id=f"obs{i}", calibrator=cal, b_path=str(b), g_path=str(g),
            transit_mjd=mjd(transit), valid_from_mjd=lo, valid_to_mjd=hi,
            qa_passed=passed, qa_reason=reason, snr=snr, flagged_frac=flagged,
            antennas_lost=i, flux_ratio=0.95 + 0.02 * i, model_flux_jy=16.0, now=T0)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = Home.resolve(tmp_path_factory.mktemp("calpage") / "home")
    with Store.open(home) as store:
        fill_calibration(store, home)
    server = ServedHome(home, "--paused")
    yield server
    assert server.stop() == 0


def screenshot(page, name: str) -> None:
    """The whole page (the template scrolls inside itself, so grow the viewport)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1900})
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / name))
    page.set_viewport_size({"width": 1400, "height": 900})


BARS = "window.Bokeh.documents[0].get_model_by_name('caltable-bars')"


def bars_data(page) -> dict:
    page.wait_for_function(f"() => window.Bokeh && Bokeh.documents.length && {BARS} && "
                           f"{BARS}.data_source.data.id.length > 0")
    return page.evaluate(f"""() => {{
        const d = {BARS}.data_source.data;
        return {{id: Array.from(d.id), verdict: Array.from(d.verdict),
                 calibrator: Array.from(d.calibrator), left: Array.from(d.left),
                 right: Array.from(d.right)}};
    }}""")


def test_timeline_has_one_bar_per_table_coloured_by_qa(served, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    served.sign_in(page)
    page.goto(served.url + "/calibration")
    data = bars_data(page)
    accepted = sum(t[2] for t in TABLES)
    assert len(data["id"]) == len(TABLES)
    assert data["verdict"].count("accepted") == accepted
    assert data["verdict"].count("rejected") == len(TABLES) - accepted
    assert data["calibrator"] == [t[0] for t in TABLES]
    widths_h = [(r - left) / 3.6e6 for left, r in zip(data["left"], data["right"], strict=True)]
    assert widths_h == pytest.approx([24.0] * len(TABLES))
    gaps = page.evaluate("() => { const d = window.Bokeh.documents[0].get_model_by_name("
                         "'coverage-gaps').data_source.data; "
                         "return Array.from(d.left).map((l, i) => (d.right[i] - l) / 3.6e6); }")
    # Accepted 3C48 windows end at −21 h and start at −18 h: a 3-hour gap between them
    # (plus the padding at either end of the plot).
    assert pytest.approx(3.0) in gaps
    flux = page.evaluate("() => window.Bokeh.documents[0].get_model_by_name('flux-points')"
                         ".data.ratio.length")
    assert flux == len(TABLES)
    screenshot(page, "calibration-timeline.png")
    outside = [u for u in requests
               if not u.startswith((served.url, "blob:" + served.url, "data:"))]
    assert outside == []


def test_clicking_a_bar_shows_its_qa_and_solutions(served, page):
    served.sign_in(page)
    page.goto(served.url + "/calibration")
    data = bars_data(page)
    detail = page.locator(".caltable-detail")
    expect(detail).to_contain_text("Click a bar")

    # A real mouse click at the rejected 3C147 bar's centre, in screen pixels.
    i = data["calibrator"].index("3C147")
    xy = page.evaluate(f"""(i) => {{
        const r = {BARS};
        const view = Bokeh.index.find_one(r);
        const d = r.data_source.data;
        const sx = view.coordinates.x_scale.compute((d.left[i] + d.right[i]) / 2);
        const sy = view.coordinates.y_scale.compute((d.bottom[i] + d.top[i]) / 2);
        const box = view.parent.canvas_view.el.getBoundingClientRect();
        return [box.left + sx, box.top + sy];
    }}""", i)
    page.mouse.click(*xy)
    expect(detail).to_contain_text(f"#{data['id'][i]} · 3C147")
    expect(detail).to_contain_text("rejected")
    expect(detail).to_contain_text("flagged fraction 0.45 above 0.3")
    expect(detail).to_contain_text("0.450")
    expect(detail).to_contain_text("solutions file not found")
    expect(page.locator(".caltable-solutions")).to_be_hidden()

    # Selecting through the data source: the server reacts the same way.
    j = next(k for k, t in enumerate(TABLES) if t[6])
    page.evaluate(f"(j) => {{ {BARS}.data_source.selected.indices = [j]; }}", j)
    expect(detail).to_contain_text(f"#{data['id'][j]} · 3C48")
    expect(detail).to_contain_text("accepted")
    expect(detail).to_contain_text("55.3")
    expect(detail).not_to_contain_text("not found")
    expect(page.locator(".caltable-solutions")).to_be_visible()
    # the sources are Bokeh models, the row a Panel pane: separate patches, so wait
    page.wait_for_function(
        "(want) => { const d = window.Bokeh.documents[0];"
        " return d.get_model_by_name('gain-source').data.antenna.length === want[0] &&"
        " d.get_model_by_name('bandpass-source').data.freq_mhz.length === want[1]; }",
        arg=[2 * N_ANT, 2 * N_CHAN], timeout=10_000)
    page.mouse.move(0, 0)  # no tooltip over the picture
    screenshot(page, "calibration-selected.png")


def test_chosen_observation_is_marked_with_its_selection(served, page):
    served.sign_in(page)
    page.goto(served.url + "/calibration")
    bars_data(page)
    info = page.locator(".observation-selection")
    # Newest observation (T0 + 12.5 min): only the accepted 3C48 at −6 h is valid then
    # (the +18 h one starts at +6 h; the +2 h 3C147 failed QA).
    expect(info).to_contain_text("single · #3 × 1.00")
    # the line is a Bokeh model and the text a Panel pane: their patches may reach the
    # browser in either order, so each is waited for, not read once
    line_visible = ("(want) => window.Bokeh.documents[0].get_model_by_name("
                    "'observation-line').visible === want")
    page.wait_for_function(line_visible, arg=True, timeout=10_000)
    page.locator(".observation-select select").select_option("(none)")
    expect(info).to_contain_text("No observation chosen")
    page.wait_for_function(line_visible, arg=False, timeout=10_000)


@pytest.fixture
def busy(home):
    """The calibration data served in-process while a convert job steps its progress."""
    counter = ViewQueryCounter()
    store = counting_store(home, counter)
    fill_calibration(store, home)
    add_observations(store, 1, start=T0 + timedelta(hours=1))
    # 1 000 steps (150 s): the job still steps however long a busy machine takes to pan
    # and zoom (100 steps ran out in a fresh-clone run: it sat at 99 % for the last wait)
    convert = SteppedConvert(step_s=0.15, steps=1000)
    reg = StageRegistry()
    reg.register_stage("convert", convert)
    state = RunnerState()
    runner = Runner(store, home, reg, state=state, config=RunnerConfig(poll_s=0.1, workers=1))
    server = InProcessServer(home, store, state)
    yield server.url, runner, state, counter
    convert.gate.set()
    runner.stop()
    server.stop()
    store.close()


X_RANGE_JS = ("() => { const r = window.Bokeh.documents[0].get_model_by_name("
              "'caltable-timeline').x_range; return [r.start, r.end]; }")


def test_a_pan_and_zoom_hold_while_jobs_run(busy, page):
    url, runner, state, counter = busy
    sign_in(page, url, "ada")
    page.goto(url + "/calibration")
    bars_data(page)
    auto = page.evaluate(X_RANGE_JS)
    queries = counter.count
    runner.start()
    # the job's start is a store change: the page's refresh for it is behind us
    wait_until(lambda: counter.count > queries and state.running
               and state.running[0]["progress"] >= 0.03, what="the job's start refresh")

    # The operator drags the timeline 300 px to the left (xpan, the active drag tool)...
    moved = (f"(a) => {{ const r = ({X_RANGE_JS})(); "
             "return r[0] > a[0] + 0.1 * (a[1] - a[0]); }")
    for attempt in range(3):
        # where the plot is now: a refresh reaching a loaded browser late can move it
        x, y = page.evaluate("""() => { const v = Bokeh.index.find_one(
            window.Bokeh.documents[0].get_model_by_name('caltable-timeline'));
            const b = v.canvas_view.el.getBoundingClientRect();
            return [b.left + b.width / 2, b.top + b.height / 2]; }""")
        page.mouse.move(x, y)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(x - 30 * k, y)
        page.mouse.up()
        try:
            page.wait_for_function(moved, arg=auto, timeout=10_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    # then turns on the wheel zoom in the plot's toolbar and zooms in
    page.locator(".bk-tool-icon-wheel-zoom").first.click()
    page.mouse.move(x, y)
    for _ in range(3):
        page.mouse.wheel(0, -150)
    page.wait_for_function(f"(a) => {{ const r = ({X_RANGE_JS})(); "
                           "return r[1] - r[0] < 0.9 * (a[1] - a[0]); }", arg=auto)
    zoomed = page.evaluate(X_RANGE_JS)
    before = counter.count
    first = state.running[0]["progress"]

    # 10 s later, with a progress step every 0.15 s, the range is the one the operator set
    # (and the server holds it too, so a refresh cannot take it back).
    wait_until(lambda: state.running and state.running[0]["progress"] >= first + 0.06,
               timeout=60, what="60 more progress steps")
    page.wait_for_timeout(2500)  # one more refresh period of the page
    assert page.evaluate(X_RANGE_JS) == pytest.approx(zoomed, abs=1.0)
    assert counter.count == before, "progress steps re-ran the page's store queries"
