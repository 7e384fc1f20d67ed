"""Variability metrics: NumPy formulas, the store's SQL against them, flags and alerts."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from pipeline.photometry import variability as var
from pipeline.photometry.catalog_seed import catalog_frame, seed_catalog
from pipeline.photometry.thresholds import VariabilityThresholds
from pipeline.store import Store

NOW = datetime(2026, 11, 23, 12, 0)
N_SRC, N_IMG = 12, 9


def test_numpy_formulas_on_a_hand_example():
    s, e = np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 2.0])
    # w = 1, 1, 1/4: ξ = (1 + 2 + 1) / 2.25
    xi = 4 / 2.25
    assert var.weighted_mean(s, e) == pytest.approx(xi)
    assert var.eta(s, e) == pytest.approx(((1 - xi) ** 2 + (2 - xi) ** 2
                                           + (4 - xi) ** 2 / 4) / 2)
    assert var.v_index(s) == pytest.approx(np.std(s, ddof=1) / np.mean(s))
    vs, m = var.pair_metrics(s, e)
    np.testing.assert_allclose(vs, [-1 / np.sqrt(2), -3 / np.sqrt(5), -2 / np.sqrt(5)])
    np.testing.assert_allclose(m, [-2 / 3, -6 / 5, -4 / 6])
    # Only the pair (1, 4) has |m| > 0.7 (1.2); the other two have 2/3
    assert var.max_pair(s, e, m_threshold=0.7) == pytest.approx((3 / np.sqrt(5), 1.2))
    assert var.max_pair(s, e, m_threshold=5.0) == (0.0, 0.0)
    assert np.isnan(var.eta(s[:1], e[:1])) and np.isnan(var.v_index(s[:1]))


def _rows(source_ids, flux, err) -> pd.DataFrame:
    return pd.DataFrame({"source_id": source_ids, "flux_jy": flux, "flux_err_jy": err,
                         "snr": flux / err, "local_rms_jy": err, "background_jy": 0.0,
                         "pb": 1.0, "flags": 0, "forced": True})


def _no_new() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("name", "ra_deg", "dec_deg", "flux_jy",
                                         "flux_err_jy", "snr", "local_rms_jy", "pb")})


def _lightcurves(seed: int = 0):
    """(N_SRC, N_IMG) fluxes and errors: steady, noisy, and a few variables."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.01, 0.2, N_SRC)[:, None]
    err = rng.uniform(0.5e-3, 3e-3, (N_SRC, N_IMG))
    flux = base + rng.normal(size=(N_SRC, N_IMG)) * err
    flux[0] *= np.where(np.arange(N_IMG) >= 5, 2.0, 1.0)          # a step
    flux[1] *= 1 + 0.4 * np.sin(np.arange(N_IMG))                 # a sinusoid
    return flux, err


def _write_all(store: Store, flux, err, *, ids, present=None) -> None:
    for j in range(N_IMG):
        keep = np.ones(N_SRC, bool) if present is None else present[:, j]
        store.record_photometry(image_id=100 + j, observation_id=f"obs{j}", mjd=61000 + j / 288,
                                rows=_rows(ids[keep], flux[keep, j], err[keep, j]),
                                new_sources=_no_new(), n_islands=0, now=NOW)


def _check_against_numpy(store: Store, flux, err, ids, present=None) -> None:
    got = store._df("SELECT * FROM variability ORDER BY source_id").set_index("source_id")
    t = VariabilityThresholds()
    for i, sid in enumerate(ids):
        keep = np.ones(N_IMG, bool) if present is None else present[i]
        ref = var.metrics(flux[i, keep], err[i, keep], thresholds=t)
        row = got.loc[sid]
        assert row.n_meas == ref.n_meas
        for col, value in (("wmean_jy", ref.wmean_jy), ("eta", ref.eta), ("v", ref.v),
                           ("vs_max", ref.vs_max), ("m_max", ref.m_max)):
            assert row[col] == pytest.approx(value, rel=1e-9, abs=1e-12), (sid, col)
        assert row.mean_jy == pytest.approx(flux[i, keep].mean())
        assert row.max_jy == pytest.approx(flux[i, keep].max())
        assert bool(row.is_variable) == var.is_variable(ref, t)


@pytest.fixture
def ids(store) -> np.ndarray:
    seed_catalog(store, now=NOW)
    return store._df("SELECT id FROM sources ORDER BY id LIMIT ?", [N_SRC]).id.to_numpy()


def test_sql_metrics_equal_the_numpy_formulas_after_each_append(store, ids):
    flux, err = _lightcurves()
    rng = np.random.default_rng(1)
    present = rng.random((N_SRC, N_IMG)) > 0.2      # sources missing from some images
    _write_all(store, flux, err, ids=ids, present=present)
    _check_against_numpy(store, flux, err, ids, present)


def test_sql_metrics_after_remeasuring_an_image_and_full_recompute(store, ids):
    flux, err = _lightcurves(seed=2)
    _write_all(store, flux, err, ids=ids)
    # Re-measure image 3 with other fluxes: incremental pair maxima no longer hold.
    flux[:, 3] *= 0.5
    store.record_photometry(image_id=103, observation_id="obs3", mjd=61000 + 3 / 288,
                            rows=_rows(ids, flux[:, 3], err[:, 3]), new_sources=_no_new(),
                            n_islands=0, now=NOW)
    _check_against_numpy(store, flux, err, ids)
    assert store.recompute_variability(now=NOW) == N_SRC
    _check_against_numpy(store, flux, err, ids)


def test_remeasuring_an_image_does_not_duplicate_rows(store, ids):
    flux, err = _lightcurves()
    _write_all(store, flux, err, ids=ids)
    before = store._df("SELECT count(*) AS n FROM photometry").n[0]
    again = store.record_photometry(image_id=104, observation_id="obs4", mjd=61000 + 4 / 288,
                                    rows=_rows(ids, flux[:, 4], err[:, 4]),
                                    new_sources=_no_new(), n_islands=0, now=NOW)
    assert again.replaced
    counts = store._df("SELECT count(*) AS n, count(DISTINCT (source_id, image_id)) AS d "
                       "FROM photometry")
    assert counts.n[0] == counts.d[0] == before == N_SRC * N_IMG
    assert store._df("SELECT max(n_meas) AS m FROM variability").m[0] == N_IMG


def test_steady_source_is_not_flagged_and_a_variable_one_is(store, ids):
    rng = np.random.default_rng(7)
    err = np.full((N_SRC, N_IMG), 1e-3)
    flux = 0.05 + rng.normal(size=(N_SRC, N_IMG)) * err          # all steady
    flux[2, 6:] += 0.03                                           # one brightens by 60 %
    _write_all(store, flux, err, ids=ids)
    flagged = store._df("SELECT source_id FROM variability WHERE is_variable").source_id
    assert flagged.tolist() == [ids[2]]
    alerts = store.recent_alerts(limit=50)
    variable = alerts[alerts.kind == "variable source"]
    assert len(variable) == 1 and str(ids[2]) in variable.message.iloc[0]
    # Staying variable does not alert again.
    store.record_photometry(image_id=200, observation_id="obs-late", mjd=61001.0,
                            rows=_rows(ids, flux[:, -1], err[:, -1]), new_sources=_no_new(),
                            n_islands=0, now=NOW)
    assert (store.recent_alerts(limit=50).kind == "variable source").sum() == 1


def test_new_sources_are_added_with_an_unforced_row_and_an_alert(store, ids):
    flux, err = _lightcurves()
    new = pd.DataFrame({"name": ["CTG J100000.0+330000"], "ra_deg": [150.0],
                        "dec_deg": [33.0], "flux_jy": [0.02], "flux_err_jy": [1e-3],
                        "snr": [20.0], "local_rms_jy": [1e-3], "pb": [0.9]})
    w = store.record_photometry(image_id=7, observation_id="obsN", mjd=61000.0,
                                rows=_rows(ids, flux[:, 0], err[:, 0]), new_sources=new,
                                n_islands=N_SRC + 1, now=NOW)
    (sid,) = w.new_source_ids
    src = store._df("SELECT * FROM sources WHERE id = ?", [sid]).iloc[0]
    assert src.origin == "detected" and src.first_image_id == 7
    row = store._df("SELECT * FROM photometry WHERE source_id = ?", [sid]).iloc[0]
    assert not row.forced and row.flux_jy == pytest.approx(0.02)
    alerts = store.recent_alerts()
    assert (alerts.kind == "new source").sum() == 1
    assert "CTG J100000.0+330000" in alerts[alerts.kind == "new source"].message.iloc[0]
    # Re-measured, the same source is found among the known ones (forced at its position):
    # its row in its discovery image stays unforced, and nothing new appears.
    rows = pd.concat([_rows(ids, flux[:, 0], err[:, 0]),
                      _rows(np.array([sid]), np.array([0.021]), np.array([1e-3]))])
    again = store.record_photometry(image_id=7, observation_id="obsN", mjd=61000.0, rows=rows,
                                    new_sources=_no_new(), n_islands=N_SRC + 1, now=NOW)
    assert again.new_source_ids == ()
    row = store._df("SELECT * FROM photometry WHERE source_id = ?", [sid])
    assert len(row) == 1 and not row.forced.iloc[0]


def test_catalog_is_seeded_once_in_ra_order(store):
    n = seed_catalog(store, now=NOW)
    assert n == len(catalog_frame()) > 50_000
    assert seed_catalog(store, now=NOW) == 0
    got = store._df("SELECT id, ra_deg, origin FROM sources ORDER BY id")
    assert len(got) == n and set(got.origin) == {"catalog"}
    assert got.ra_deg.is_monotonic_increasing


def test_sources_in_field_wraps_in_ra(store):
    store.add_catalog_sources(pd.DataFrame({
        "name": ["a", "b", "c"], "ra_deg": [359.9, 0.1, 10.0], "dec_deg": [30.0, 30.0, 30.0],
        "flux_jy": [0.1] * 3, "spectral_index": [-0.7] * 3}), now=NOW)
    got = store.sources_in_field(0.0, 30.0, 0.5)
    assert sorted(got.name) == ["a", "b"]


def test_tail_resort_keeps_every_row(store, ids):
    flux, err = _lightcurves()
    _write_all(store, flux, err, ids=ids)
    before = store._df("SELECT * FROM photometry ORDER BY source_id, image_id")
    assert store.resort_photometry_tail() == N_SRC * N_IMG
    after = store._df("SELECT * FROM photometry ORDER BY source_id, image_id")
    pd.testing.assert_frame_equal(before, after)
    assert store.resort_photometry_tail() == 0
    in_table = store._df("SELECT source_id FROM photometry").source_id
    assert in_table.is_monotonic_increasing


def test_concurrent_writes_of_overlapping_images_all_land(store, ids):
    import threading

    flux, err = _lightcurves()
    errors: list[BaseException] = []

    def write(j: int) -> None:
        try:
            store.record_photometry(image_id=300 + j, observation_id=f"c{j}",
                                    mjd=61000 + j / 288, rows=_rows(ids, flux[:, j], err[:, j]),
                                    new_sources=_no_new(), n_islands=0, now=NOW)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store._df("SELECT count(*) AS n FROM photometry").n[0] == 4 * N_SRC
    assert (store._df("SELECT n_meas FROM variability").n_meas == 4).all()


def test_eta_threshold_holds_false_alarms_for_short_lightcurves():
    from scipy.stats import chi2
    t = VariabilityThresholds()
    np.testing.assert_allclose(t.eta_threshold([3, 11]),
                               [chi2.isf(1e-3, 2) / 2, chi2.isf(1e-3, 10) / 10])
    assert t.eta_threshold(10_000) == t.eta           # long lightcurves: the VAST value
    # Steady three-point lightcurves with correct errors: plain η > 2 flags ~13.5 %.
    rng = np.random.default_rng(4)
    n_src, n = 20_000, 3
    err = np.full((n_src, n), 1e-3)
    flux = 0.01 + rng.normal(size=(n_src, n)) * err
    eta = np.array([var.eta(f, e) for f, e in zip(flux, err, strict=True)])
    v = np.array([var.v_index(f) for f in flux])
    assert 0.12 < np.mean(eta > 2.0) < 0.15
    flagged = var.flag_variable(np.full(n_src, n), eta, v, np.zeros(n_src), np.zeros(n_src),
                                thresholds=t)
    assert flagged.mean() < 0.003


def test_too_few_measurements_are_not_judged():
    t = VariabilityThresholds()
    two = var.metrics(np.array([0.1, 0.3]), np.array([1e-3, 1e-3]), thresholds=t)
    assert two.vs_max > 100 and not var.is_variable(two, t)
    three = var.metrics(np.array([0.1, 0.3, 0.3]), np.full(3, 1e-3), thresholds=t)
    assert var.is_variable(three, t)
    with pytest.raises(ValueError, match="min_meas"):
        VariabilityThresholds(min_meas=1)
    with pytest.raises(ValueError, match="eta_false_alarm"):
        VariabilityThresholds(eta_false_alarm=0.0)


def test_a_source_never_detected_is_not_judged():
    t = VariabilityThresholds()
    faint = var.metrics(np.array([0.002, -0.003, 0.004]), np.full(3, 1e-3), thresholds=t)
    assert faint.eta > t.eta_threshold(3) and faint.max_snr < t.min_snr
    assert not var.is_variable(faint, t)
    seen = var.metrics(np.array([0.002, -0.003, 0.006]), np.full(3, 1e-3), thresholds=t)
    assert seen.max_snr >= t.min_snr and var.is_variable(seen, t)
