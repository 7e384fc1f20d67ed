"""The store's sources read side on a real DuckDB file: filters, cones, export, lightcurves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from conftest import T0

from pipeline.store import Store
from pipeline.store.sources import FilterSpec, InvalidFilter


def variability_rows(phot: pd.DataFrame) -> pd.DataFrame:
    """η, V and the weighted mean per source, as the VAST pipeline defines them."""
    out = []
    for sid, g in phot.groupby("source_id"):
        f, w = g.flux_jy.to_numpy(), 1 / g.flux_err_jy.to_numpy() ** 2
        n = len(f)
        wmean = float((w * f).sum() / w.sum())
        eta = float((w * (f - wmean) ** 2).sum() / (n - 1)) if n > 1 else None
        v = float(f.std(ddof=1) / f.mean()) if n > 1 else None
        out.append({"source_id": int(sid), "n_meas": n, "wmean_jy": wmean, "eta": eta, "v": v,
                    "vs_max": None, "m_max": None,
                    "is_variable": bool(eta is not None and eta > 2 and v > 0.1)})
    return pd.DataFrame(out)


def fill_sources(store: Store, *, ra: np.ndarray, dec: np.ndarray, n_epochs: int, seed: int = 1,
                 image_paths: list[str] | None = None, variable_every: int = 5,
                 missing_every: int = 0) -> dict:
    """Sources at (ra, dec), ``n_epochs`` images, photometry and variability rows.

    Every ``variable_every``-th source varies by ±30 %; every ``missing_every``-th (if set)
    has no measurement at all. Photometry goes in sorted by source, as the pipeline keeps it.
    Returns the frames inserted.
    """
    rng = np.random.default_rng(seed)
    n = len(ra)
    image_ids, mjds = [], []
    for k in range(n_epochs):
        path = image_paths[k] if image_paths else f"/nowhere/img{k}.fits"
        mjd = 61000.0 + k * 300 / 86400
        image_ids.append(store.add_image(observation_id=f"obs{k:04d}", path=path, mid_mjd=mjd,
                                         now=T0, pbcor_path=path))
        mjds.append(mjd)
    flux = rng.uniform(0.01, 2.0, n)
    sources = pd.DataFrame({"id": np.arange(1, n + 1), "name": [f"J{i:05d}+SRC" for i in range(n)],
                            "ra_deg": ra, "dec_deg": dec, "catalog_flux_jy": flux,
                            "spectral_index": -0.7,
                            "origin": ["detected" if i % 7 == 6 else "catalog" for i in range(n)],
                            "created_utc": T0})
    rows = []
    for i in range(n):
        if missing_every and i % missing_every == missing_every - 1:
            continue
        scale = 1 + (0.3 * np.sin(np.arange(n_epochs)) if i % variable_every == 0 else 0)
        err = 0.002 + 0.01 * flux[i]
        f = flux[i] * scale + rng.normal(0, err, n_epochs)
        # Epochs inserted out of time order: the query must sort them.
        for k in rng.permutation(n_epochs):
            rows.append((i + 1, image_ids[k], mjds[k], f[k], err, f[k] / err, bool(k % 3 == 0)))
    phot = pd.DataFrame(rows, columns=["source_id", "image_id", "mjd", "flux_jy", "flux_err_jy",
                                       "snr", "forced"])
    var = variability_rows(phot).assign(updated_utc=T0)
    cur = store._cur
    for table, frame in (("sources", sources), ("photometry_recent", phot), ("variability", var)):
        cur.register("frame", frame)
        cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
        cur.unregister("frame")
    return {"sources": sources, "photometry": phot, "variability": var,
            "image_ids": image_ids, "mjds": mjds}


@pytest.fixture
def filled(store):
    rng = np.random.default_rng(42)
    n = 300
    # A field near RA 0/360 (wrap), a field at 45° dec, and a few near the pole.
    ra = np.concatenate([rng.uniform(-1.5, 1.5, 120) % 360, rng.uniform(148, 152, 150),
                         rng.uniform(0, 360, 30)])
    dec = np.concatenate([rng.uniform(31.5, 34.5, 120), rng.uniform(43, 47, 150),
                          rng.uniform(88.5, 90, 30)])
    data = fill_sources(store, ra=ra[:n], dec=dec[:n], n_epochs=6, missing_every=11)
    return store, data


def merged(data) -> pd.DataFrame:
    return data["sources"].merge(data["variability"], left_on="id", right_on="source_id",
                                 how="left")


def test_filters_match_a_pandas_reference(filled):
    store, data = filled
    ref = merged(data)
    cases = [
        (FilterSpec(), pd.Series(True, index=ref.index)),
        (FilterSpec(eta_min=2.0), ref.eta >= 2.0),
        (FilterSpec(eta_min=0.5, eta_max=50, v_min=0.05),
         (ref.eta >= 0.5) & (ref.eta <= 50) & (ref.v >= 0.05)),
        (FilterSpec(v_max=0.1), ref.v <= 0.1),
        (FilterSpec(flux_min_jy=0.5, flux_max_jy=1.0),
         (ref.wmean_jy >= 0.5) & (ref.wmean_jy <= 1.0)),
        (FilterSpec(n_meas_max=0), ref.n_meas.isna()),
        (FilterSpec(n_meas_min=6), ref.n_meas >= 6),
        (FilterSpec(name="j0001"), ref.name.str.contains("J0001")),
        (FilterSpec(variable_only=True), ref.is_variable.fillna(False).astype(bool)),
        (FilterSpec(origin="detected"), ref.origin == "detected"),
    ]
    for spec, mask in cases:
        want = set(ref.id[mask.fillna(False).astype(bool)])
        got = store.export_sources(spec)
        assert set(got.id) == want, spec
        assert store.count_sources(spec) == len(want), spec
    assert 0 < store.count_sources(FilterSpec(variable_only=True)) < len(ref)


def test_cone_search_agrees_with_astropy_separation(filled):
    store, data = filled
    src = data["sources"]
    sky = SkyCoord(src.ra_deg.to_numpy() * u.deg, src.dec_deg.to_numpy() * u.deg)
    # Across RA 0/360, at 45° dec (RA degrees shrink by cos δ), around the pole.
    for ra, dec, r in ((359.8, 33.0, 2400.0), (0.3, 33.2, 900.0), (150.0, 45.0, 3600.0),
                       (150.0, 45.0, 5400.0), (10.0, 89.8, 1800.0)):
        sep = sky.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec
        want = set(src.id[sep <= r])
        assert 3 <= len(want) < len(src), (ra, dec, r)  # a test that could fail
        got = store.export_sources(FilterSpec(ra_deg=ra, dec_deg=dec, radius_arcsec=r,
                                              sort_by="sep_arcsec", descending=False))
        assert set(got.id) == want
        np.testing.assert_allclose(got.sep_arcsec, np.sort(sep[sep <= r]), rtol=1e-9,
                                   atol=1e-6)


def test_pages_are_sorted_disjoint_and_cover_the_filter(filled):
    store, _ = filled
    spec = FilterSpec(n_meas_min=1, sort_by="wmean_jy", descending=True)
    total = store.count_sources(spec)
    seen = []
    for offset in range(0, total + 40, 40):
        page = store.sources_page(spec, limit=40, offset=offset)
        assert page.total == total
        seen += list(page.rows.wmean_jy)
        assert len(page.rows) == max(0, min(40, total - offset))
    assert len(seen) == total
    assert seen == sorted(seen, reverse=True)
    # NULLs sort last whichever the direction.
    asc = store.sources_page(replace(spec, n_meas_min=None, descending=False), limit=400)
    assert asc.rows.eta.isna().to_numpy()[-5:].all()
    assert not asc.rows.eta.isna().to_numpy()[0]


def test_export_streams_every_row_in_chunks(filled):
    store, _ = filled
    n = 5000  # DuckDB hands out 2048-row vectors: enough rows for several chunks
    extra = pd.DataFrame({"id": np.arange(1000, 1000 + n), "name": [f"X{i:05d}" for i in range(n)],
                          "ra_deg": 200.0, "dec_deg": 10.0, "created_utc": T0})
    store._cur.register("extra", extra)
    store._cur.execute("INSERT INTO sources BY NAME SELECT * FROM extra")
    spec = FilterSpec(sort_by="name", descending=False)
    chunks = list(store.iter_sources(spec, chunk_rows=2048))
    assert len(chunks) == 3
    whole = pd.concat(chunks, ignore_index=True)
    assert len(whole) == store.count_sources(spec) == 300 + n
    assert list(whole.name) == sorted(whole.name)
    # Another query on this thread mid-stream does not cut it.
    stream = store.iter_sources(spec, chunk_rows=2048)
    first = next(stream)
    store.sources_page(FilterSpec(), limit=5)
    rest = list(stream)
    assert len(first) + sum(len(c) for c in rest) == 300 + n
    empty = store.export_sources(FilterSpec(name="no such source"))
    assert empty.empty and "eta" in empty.columns


def test_lightcurve_is_one_sources_rows_in_time_order(filled):
    store, data = filled
    phot = data["photometry"]
    for sid in (1, 2, 150):
        lc = store.lightcurve(sid)
        want = phot[phot.source_id == sid].sort_values("mjd")
        assert list(lc.columns) == ["mjd", "flux_jy", "flux_err_jy", "snr", "forced", "image_id"]
        assert len(lc) == 6
        assert list(lc.mjd) == sorted(lc.mjd)
        np.testing.assert_allclose(lc.flux_jy, want.flux_jy)
        assert list(lc.image_id) == list(want.image_id)
        assert list(lc.forced) == list(want.forced)
    assert store.lightcurve(11).empty  # a source never measured
    assert store.lightcurve(10**9).empty


def test_eta_v_points_and_one_source(filled):
    store, data = filled
    pts = store.eta_v_points()
    var = data["variability"].dropna(subset=["eta"])
    assert len(pts) == int(((var.eta > 0) & (var.v > 0)).sum())
    assert (pts.eta > 0).all() and (pts.v > 0).all()
    limited = store.eta_v_points(FilterSpec(variable_only=True), limit=5)
    assert len(limited) == 5 and limited.is_variable.all()
    assert list(limited.eta) == sorted(limited.eta, reverse=True)
    one = store.source(1)
    assert one["name"] == "J00000+SRC" and one["n_meas"] == 6
    assert store.source(11)["n_meas"] == 0
    assert store.source(10**9) is None
    assert set(one) == set(store.sources_page(FilterSpec(), limit=1).rows.columns)


def test_sources_revision_changes_with_variability(filled):
    store, _ = filled
    before = store.sources_revision()
    assert store.sources_revision() == before
    store._cur.execute("UPDATE variability SET updated_utc = updated_utc + INTERVAL 1 HOUR "
                       "WHERE source_id = 1")
    assert store.sources_revision() != before


def test_photometry_image(filled):
    store, data = filled
    img = store.photometry_image(data["image_ids"][2])
    assert img.path == "/nowhere/img2.fits" and img.mid_mjd == pytest.approx(data["mjds"][2])
    assert store.photometry_image(10**9) is None


def test_filter_spec_round_trips_through_json():
    spec = FilterSpec(eta_min=2.5, v_max=0.4, n_meas_min=3, name="J1", ra_deg=10.5,
                      dec_deg=-3.25, radius_arcsec=60.0, variable_only=True, origin="catalog",
                      sort_by="sep_arcsec", descending=False)
    assert FilterSpec.from_json(spec.to_json()) == spec
    assert FilterSpec.from_json("{}") == FilterSpec()


@pytest.mark.parametrize("kwargs, match", [
    ({"eta_min": 3.0, "eta_max": 1.0}, "eta_min = 3.0 is above eta_max = 1.0"),
    ({"n_meas_min": 5, "n_meas_max": 2}, "n_meas_min = 5 is above"),
    ({"v_min": float("nan")}, "v_min must be a finite number"),
    ({"ra_deg": 10.0, "dec_deg": 5.0}, "needs ra_deg, dec_deg and radius_arcsec"),
    ({"ra_deg": 10.0, "dec_deg": 95.0, "radius_arcsec": 5.0}, r"outside \[-90, 90\]"),
    ({"ra_deg": 10.0, "dec_deg": 5.0, "radius_arcsec": 0.0}, "must be in"),
    ({"origin": "nvss"}, "neither 'catalog' nor 'detected'"),
    ({"sort_by": "flux; DROP TABLE sources"}, "cannot sort by"),
    ({"sort_by": "sep_arcsec"}, "needs a position search"),
    ({"eta_min": "2"}, "eta_min = '2' has the wrong type"),
    ({"n_meas_min": 2.5}, "n_meas_min = 2.5 has the wrong type"),
    ({"variable_only": 1}, "variable_only = 1 has the wrong type"),
])
def test_invalid_filters(kwargs, match):
    with pytest.raises(InvalidFilter, match=match):
        FilterSpec(**kwargs)


@pytest.mark.parametrize("text, match", [
    ("not json", "not JSON"), ("[1, 2]", "expected a JSON object"),
    ('{"eta_minimum": 1}', "unknown key.*eta_minimum"),
])
def test_invalid_saved_filters(text, match):
    with pytest.raises(InvalidFilter, match=match):
        FilterSpec.from_json(text)


def test_bad_page_bounds(store):
    with pytest.raises(InvalidFilter, match="need limit"):
        store.sources_page(FilterSpec(), limit=0)
