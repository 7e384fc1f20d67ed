"""As a user would: `contimg simulate --minutes 30` then `contimg process --once`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import TETE, SkyCoord
from astropy.time import Time
from casacore.tables import table
from conftest import contimg

from pipeline.instrument.phasing import use_bundled_iers
from pipeline.instrument.telescope import INTEGRATION_S, OVRO, load_layout

N_ANT, N_CHAN, DEC = 6, 1, 33.16
START = "2026-11-23T12:00:00"  # no calibrator transits: calibrate waits for a table


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    sim = contimg("simulate", "--home", str(home), "--start", START, "--minutes", "30",
                  "--dec", str(DEC), "--antennas", str(N_ANT), "--channels-per-subband",
                  str(N_CHAN), "--seed", "3")
    assert sim.returncode == 0, sim.stderr
    run = contimg("process", "--once", "--home", str(home))
    assert run.returncode == 0, run.stderr
    status = contimg("status", "--json", "--home", str(home))
    return home, run.stdout, json.loads(status.stdout)


def test_six_observations_converted(processed):
    home, stdout, status = processed
    assert "processed: done 6, waiting 6" in stdout
    assert status["observations"]["converted"] == 6
    # six conversions done; six calibrate jobs handed back uncounted, waiting for a table
    assert status["jobs"] == {"queued": 0, "running": 0, "retry": 6, "done": 6,
                              "quarantined": 0}
    assert len(sorted(home.glob("ms/*.ms"))) == 6
    assert not list(home.glob("ms/.tmp-*"))


def test_each_ms_matches_the_instrument(processed):
    home, _, _ = processed
    layout = load_layout()
    names = [layout.names[i] for i in layout.select(N_ANT)]
    n_baselines = N_ANT * (N_ANT + 1) // 2  # autocorrelations kept
    use_bundled_iers()
    for ms in sorted(home.glob("ms/*.ms")):
        with table(str(ms), ack=False) as main:
            assert main.nrows() == n_baselines * 24
            times = np.unique(main.getcol("TIME"))
        assert len(times) == 24
        # JD float64 in UVH5 resolves ~20 µs, so consecutive MS times wobble by that much.
        np.testing.assert_allclose(np.diff(times), INTEGRATION_S, atol=1e-4)
        with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
            freqs = spw.getcol("CHAN_FREQ")[0]
        assert freqs.size == 16 * N_CHAN and np.all(np.diff(freqs) > 0)
        assert 1.3114e9 < freqs[0] < freqs[-1] < 1.4986e9
        # FIELD phase centre: the meridian at mid-time (apparent LST, pointing dec) in
        # ICRS, computed independently here with astropy's true-equator frame.
        with table(str(ms / "FIELD"), ack=False) as field:
            ra, dec = np.degrees(field.getcol("PHASE_DIR")[0, 0])
        mid = Time((times[0] + times[-1]) / 2 / 86400, format="mjd", scale="utc")
        lst = mid.sidereal_time("apparent", longitude=OVRO.lon_deg * u.deg).deg
        icrs = SkyCoord(ra=lst * u.deg, dec=DEC * u.deg, frame=TETE(obstime=mid)).icrs
        assert abs((ra - icrs.ra.deg + 180) % 360 - 180) * np.cos(np.radians(DEC)) < 1e-3
        assert dec == pytest.approx(icrs.dec.deg, abs=1e-3)
        assert abs(dec - DEC) > 0.01  # precession since J2000: ICRS differs from apparent
        # ANTENNA positions equal data/antennas.csv for the antennas used.
        with table(str(ms / "ANTENNA"), ack=False) as ant:
            ms_names = list(ant.getcol("NAME"))
            pos = ant.getcol("POSITION")
        for name in names:
            i = ms_names.index(name)
            np.testing.assert_allclose(pos[i], layout.ecef_m[layout.names.index(name)],
                                       atol=1e-3)


def test_observation_rows_record_the_ms(processed):
    home, _, _ = processed
    from pipeline.store import Store
    with Store.open(home) as store:
        rows = store.pipeline_rows()
    assert len(rows) == 6 and set(rows.state) == {"converted"}
    assert set(rows.error) == {"no calibration"} and set(rows.attempts) == {0}
    assert all(str(p).startswith(str(home / "ms")) for p in rows.ms_path)
    starts = sorted(rows.start_utc)
    first = datetime.fromisoformat(START)
    assert abs(starts[0] - first) < timedelta(seconds=1)
    gaps = {round((b - a).total_seconds(), 1) for a, b in zip(starts, starts[1:], strict=False)}
    assert gaps == {round(24 * INTEGRATION_S, 1)}
