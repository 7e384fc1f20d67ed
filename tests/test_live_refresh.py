"""Live refreshes reach the browser while Panel's thread pool runs the periodic callbacks.

With ``pn.config.nthreads`` a page's periodic callback runs on a worker thread; a page
that writes a plain Bokeh model there (a ColumnDataSource's data, a Span) without the
document lock loses the update (Bokeh raises in the session). This serves the
calibration page, adds a caltable, publishes a store change and waits for the new bar.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import T0, InProcessServer
from test_calibration_page import BARS, CFG, TABLES, fill_calibration, mjd

from pipeline.calibration.registry import validity_window
from pipeline.jobs.runner_state import RunnerState
from pipeline.store import Store

pytestmark = pytest.mark.ui


def test_a_new_caltable_appears_live(home, page):
    store = Store.open(home)
    fill_calibration(store, home)
    state = RunnerState()
    server = InProcessServer(home, store, state)
    try:
        server.sign_in(page)
        page.goto(server.url + "/calibration")
        page.wait_for_function(f"() => window.Bokeh && Bokeh.documents.length && {BARS} && "
                               f"{BARS}.data_source.data.id.length === {len(TABLES)}")
        transit = mjd(T0 + timedelta(hours=6))
        lo, hi = validity_window(transit, CFG)
        store.add_caltable(observation_id="obs-live", calibrator="3C48", b_path="x.B",
                           g_path="x.G", transit_mjd=transit, valid_from_mjd=lo,
                           valid_to_mjd=hi, qa_passed=True, qa_reason=None, snr=40.0,
                           flagged_frac=0.05, antennas_lost=0, flux_ratio=1.0,
                           model_flux_jy=16.0, now=T0)
        state.publish(counts={"converted": 3, "calibrated": 1})  # a store change
        page.wait_for_function(f"() => {BARS}.data_source.data.id.length === "
                               f"{len(TABLES) + 1}", timeout=30_000)
    finally:
        server.stop()
        store.close()
