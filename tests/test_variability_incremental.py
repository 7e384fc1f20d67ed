"""Incremental variability (running aggregates) against the full recompute from the rows."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.photometry import variability as var
from pipeline.store import Store
from pipeline.store.core import MIGRATIONS_DIR
from pipeline.store.photometry import fill_missing_variability

NOW = datetime(2026, 11, 23, 12, 0)
METRICS = ("n_meas", "wmean_jy", "eta", "v", "vs_max", "m_max", "mean_jy", "max_jy",
           "min_jy", "max_snr", "n_detected", "first_mjd", "last_mjd", "is_variable")


def _no_new() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("name", "ra_deg", "dec_deg", "flux_jy",
                                         "flux_err_jy", "snr", "local_rms_jy", "pb")})


def _seed(store: Store, n: int) -> np.ndarray:
    cat = pd.DataFrame({"name": [f"R{i:03d}" for i in range(n)],
                        "ra_deg": np.linspace(10, 11, n), "dec_deg": 33.0, "flux_jy": 0.05,
                        "spectral_index": -0.7})
    store.add_catalog_sources(cat, now=NOW)
    return store._df("SELECT id FROM sources ORDER BY id").id.to_numpy()


def _record(store: Store, image: int, ids: np.ndarray, flux: np.ndarray, err: np.ndarray
            ) -> None:
    rows = pd.DataFrame({"source_id": ids, "flux_jy": flux, "flux_err_jy": err,
                         "snr": flux / err, "local_rms_jy": err, "background_jy": 0.0,
                         "pb": 1.0, "flags": 0, "forced": True})
    store.record_photometry(image_id=image, observation_id=f"o{image}",
                            mjd=61000 + image / 288, rows=rows, new_sources=_no_new(),
                            n_islands=0, now=NOW)


def _random_image(rng, ids: np.ndarray, base: np.ndarray):
    """A random subset of the sources with noisy, sometimes flaring, sometimes negative flux."""
    keep = rng.random(ids.size) > 0.25
    err = rng.uniform(0.3e-3, 4e-3, ids.size)
    flux = base * np.where(rng.random(ids.size) < 0.08, rng.uniform(0.2, 3.0, ids.size), 1.0)
    flux = flux + rng.normal(size=ids.size) * err
    return ids[keep], flux[keep], err[keep]


def _table(store: Store) -> pd.DataFrame:
    return store._df(f"SELECT source_id, {', '.join(METRICS)} FROM variability "
                     "ORDER BY source_id").set_index("source_id")


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index)
    for col in METRICS:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        np.testing.assert_allclose(x, y, rtol=1e-7, atol=1e-12, equal_nan=True, err_msg=col)


def _reference(store: Store) -> pd.DataFrame:
    """The NumPy formulas over each source's rows (η, V, the pair maximum)."""
    p = store._df("SELECT source_id, flux_jy, flux_err_jy FROM photometry ORDER BY source_id")
    out = {}
    for sid, g in p.groupby("source_id"):
        m = var.metrics(g.flux_jy.to_numpy(), g.flux_err_jy.to_numpy())
        out[sid] = (m.n_meas, m.wmean_jy, m.eta, m.v, m.vs_max, m.m_max)
    return pd.DataFrame.from_dict(out, orient="index",
                                  columns=["n_meas", "wmean_jy", "eta", "v", "vs_max", "m_max"])


def test_incremental_equals_full_recompute_with_remeasured_images(store):
    rng = np.random.default_rng(11)
    ids = _seed(store, 40)
    base = rng.uniform(-0.002, 0.2, ids.size)            # a few near zero or below
    images = {}
    for image in range(1, 19):
        images[image] = _random_image(rng, ids, base)
        _record(store, image, *images[image])
    # Re-measure: a middle image with other fluxes and other sources, the first image
    # (its rows hold first_mjd), and one image twice.
    for image in (7, 1, 12, 12):
        images[image] = _random_image(rng, ids, base * rng.uniform(0.5, 2.0, ids.size))
        _record(store, image, *images[image])
    _record(store, 19, *_random_image(rng, ids, base))
    incremental = _table(store)
    ref = _reference(store)
    np.testing.assert_array_equal(incremental.n_meas.to_numpy(), ref.n_meas.to_numpy())
    for col in ("wmean_jy", "eta", "v", "vs_max", "m_max"):
        np.testing.assert_allclose(incremental[col].to_numpy(float), ref[col].to_numpy(float),
                                   rtol=1e-7, atol=1e-12, equal_nan=True, err_msg=col)
    assert store.recompute_variability(now=NOW) == ids.size
    _assert_same(incremental, _table(store))
    # Appends after a full recompute (its aggregates, its pair images) stay exact too.
    _record(store, 20, *_random_image(rng, ids, base))
    _record(store, 7, *_random_image(rng, ids, base))
    incremental = _table(store)
    store.recompute_variability(now=NOW)
    _assert_same(incremental, _table(store))


def test_a_remeasurement_that_drops_a_source_removes_or_keeps_its_figures(store):
    ids = _seed(store, 3)
    _record(store, 1, ids, np.array([0.1, 0.2, 0.3]), np.full(3, 1e-3))
    _record(store, 2, ids[:2], np.array([0.11, 0.2]), np.full(2, 1e-3))
    _record(store, 1, ids[:1], np.array([0.1]), np.full(1, 1e-3))   # ids 1, 2 leave image 1
    got = _table(store)
    assert list(got.index) == [ids[0], ids[1]]            # ids[2] has no rows left
    assert got.loc[ids[1], "n_meas"] == 1 and np.isnan(got.loc[ids[1], "eta"])
    assert got.loc[ids[0], "n_meas"] == 2


def test_pair_bound_is_never_below_the_exact_maximum():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        s = rng.normal(0.05, 0.05, n)
        e = rng.uniform(1e-3, 1e-2, n)
        new_s, new_e = rng.normal(0.05, 0.08), rng.uniform(1e-3, 1e-2)
        exact = var.max_pair(np.append(s, new_s), np.append(e, new_e), m_threshold=0.26)
        old = var.max_pair(s, e, m_threshold=0.26) if n > 1 else (0.0, 0.0)
        bound = var.pair_bound(np.array([new_s]), np.array([new_e]), np.array([s.min()]),
                               np.array([s.max()]), np.array([e.min()]), m_threshold=0.26)[0]
        assert max(bound, old[0]) >= exact[0] - 1e-12


def test_a_store_from_before_0007_gets_its_aggregates(tmp_path: Path):
    old_dir = tmp_path / "migrations"
    old_dir.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(f.name[:4]) < 7:
            shutil.copy(f, old_dir / f.name)
    home = tmp_path / "home"
    rng = np.random.default_rng(5)
    with Store.open(home, migrations_dir=old_dir) as store:
        ids = _seed(store, 20)
        base = rng.uniform(0.01, 0.2, ids.size)
        # Rows as the code of that schema left them: photometry, then its variability.
        for image in range(1, 8):
            sid, flux, err = _random_image(rng, ids, base)
            store._cur.execute(
                "INSERT INTO photometry (source_id, image_id, mjd, flux_jy, flux_err_jy, snr, "
                "forced) SELECT unnest($1), $2, $3, unnest($4), unnest($5), unnest($6), true",
                [sid.tolist(), image, 61000 + image / 288, flux.tolist(), err.tolist(),
                 (flux / err).tolist()])
            store._cur.execute("INSERT INTO photometry_runs VALUES (?, ?, ?, 0, 0, 0, false, ?)",
                               [image, f"o{image}", 61000 + image / 288, NOW])
        assert fill_missing_variability(store._cur, now=NOW) == ids.size
        assert "sum_w" not in store._df("SELECT * FROM variability LIMIT 1").columns
    with Store.open(home) as store:
        filled = store._df("SELECT count(*) AS n FROM variability WHERE sum_w IS NULL").n[0]
        assert filled == 0
        _record(store, 8, *_random_image(rng, ids, base))
        _record(store, 3, *_random_image(rng, ids, base * 1.5))   # pair images unknown
        incremental = _table(store)
        store.recompute_variability(now=NOW)
        _assert_same(incremental, _table(store))


@pytest.mark.parametrize("n_hist", [1, 5])
def test_apply_rows_matches_the_formulas(n_hist):
    rng = np.random.default_rng(n_hist)
    s, e = rng.uniform(0.01, 0.1, n_hist + 1), rng.uniform(1e-3, 3e-3, n_hist + 1)
    add = pd.DataFrame({"source_id": [1], "flux_jy": [s[0]], "flux_err_jy": [e[0]],
                        "snr": [s[0] / e[0]], "mjd": [61000.0]})
    up = var.apply_rows(pd.DataFrame(columns=["source_id", *var.AGGREGATE_COLUMNS])
                        .set_index("source_id"), add=add, image_id=1, m_threshold=0.26)
    state = up.state
    for k in range(1, n_hist + 1):
        add = pd.DataFrame({"source_id": [1], "flux_jy": [s[k]], "flux_err_jy": [e[k]],
                            "snr": [s[k] / e[k]], "mjd": [61000.0 + k]})
        up = var.apply_rows(state, add=add, image_id=k + 1, m_threshold=5.0)  # no pairs
        assert up.pairs.size == 0 and up.recompute.size == 0
        state = up.state
    row = state.iloc[0]
    assert row.n_meas == n_hist + 1
    assert row.wmean_jy == pytest.approx(var.weighted_mean(s, e), rel=1e-12)
    if n_hist > 1:
        assert row.eta == pytest.approx(var.eta(s, e), rel=1e-9)
        assert row.v == pytest.approx(var.v_index(s), rel=1e-9)
