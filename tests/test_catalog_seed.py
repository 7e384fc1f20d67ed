"""The reference catalog goes into a store once, however many workers seed it at once.

Real DuckDB files throughout: two threads seeding through one store, the shipped measure
stage run by two runner workers whose preparations meet at a barrier, and a store at
schema version 5 holding a doubled catalog, repaired by migration 0006 on opening.
"""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from astropy.time import Time
from conftest import T0
from photometry_factory import FakeField, write_image

from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
from pipeline.photometry.catalog_seed import catalog_frame, seed_catalog
from pipeline.photometry.variability import metrics
from pipeline.store import MIGRATIONS_DIR, Store

NOW = T0
FIELD = FakeField(npix=200, cell_arcsec=20.0, bmaj_arcsec=60.0, bmin_arcsec=50.0,
                  bpa_deg=10.0, ra_deg=150.0, dec_deg=33.0)


def _doubled_names(store: Store) -> pd.DataFrame:
    return store._df("SELECT name, count(*) AS n FROM sources GROUP BY name HAVING n > 1")


def _in_threads(fn, n: int = 2) -> list:
    """Run ``fn()`` in ``n`` threads released together; return their results."""
    barrier = threading.Barrier(n, timeout=30)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


# ------------------------------------------------------------------- seeding
def test_two_threads_seeding_at_once_add_each_name_once(store):
    added = _in_threads(lambda: seed_catalog(store, now=NOW))
    names = catalog_frame().name
    assert sorted(added) == [0, len(names)]
    got = store._df("SELECT id, name, ra_deg FROM sources ORDER BY id")
    assert len(got) == len(names) and set(got.name) == set(names)
    assert _doubled_names(store).empty
    assert got.ra_deg.is_monotonic_increasing  # ids still follow RA


def test_concurrent_catalog_inserts_without_the_seeded_check_add_each_name_once(store):
    frame = catalog_frame()
    added = _in_threads(lambda: store.add_catalog_sources(frame, now=NOW))
    assert sorted(added) == [0, len(frame)]
    assert store.table_counts()["sources"] == len(frame)
    assert _doubled_names(store).empty


def test_catalog_insert_adds_only_missing_names(store):
    cat = pd.DataFrame({"name": ["a", "b"], "ra_deg": [10.0, 11.0], "dec_deg": [30.0, 30.0],
                        "flux_jy": [0.1, 0.2], "spectral_index": [-0.7, -0.7]})
    assert store.add_catalog_sources(cat.iloc[:1], now=NOW) == 1
    assert store.add_catalog_sources(cat, now=NOW) == 1
    assert sorted(store._df("SELECT name FROM sources").name) == ["a", "b"]


def test_a_catalog_with_repeated_names_is_refused(store):
    cat = pd.DataFrame({"name": ["a", "a"], "ra_deg": [10.0, 11.0], "dec_deg": [30.0, 30.0],
                        "flux_jy": [0.1, 0.2], "spectral_index": [-0.7, -0.7]})
    with pytest.raises(ValueError, match=r"1 name\(s\) more than once .*'a'.*unique"):
        store.add_catalog_sources(cat, now=NOW)
    assert store.table_counts()["sources"] == 0


def test_the_store_refuses_a_second_source_of_one_name(store):
    seed_catalog(store, now=NOW)
    name = catalog_frame().name.iloc[0]
    with pytest.raises(duckdb.ConstraintException, match="unique"):
        store._cur.execute("INSERT INTO sources (name, ra_deg, dec_deg, created_utc) "
                           "VALUES (?, 0, 0, ?)", [name, NOW])


def _rows(ids, flux, err) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({"source_id": np.asarray(ids, np.int64), "flux_jy": flux,
                         "flux_err_jy": err, "snr": np.asarray(flux) / np.asarray(err),
                         "local_rms_jy": err, "background_jy": 0.0, "pb": 1.0, "flags": 0,
                         "forced": True}, index=range(n))


def _new(names, flux) -> pd.DataFrame:
    return pd.DataFrame({"name": names, "ra_deg": 10.0, "dec_deg": 30.0, "flux_jy": flux,
                         "flux_err_jy": 1e-3, "snr": np.asarray(flux) / 1e-3,
                         "local_rms_jy": 1e-3, "pb": 1.0})


def test_a_detection_named_as_a_known_source_joins_it(store):
    # Two images of one field recorded at once can both find the same new source; the
    # second to write finds its name taken and measures that source, not a twin.
    first = store.record_photometry(image_id=1, observation_id="o1", mjd=61000.0,
                                    rows=_rows([], [], []), new_sources=_new(["CTG X"], [0.05]),
                                    n_islands=1, now=NOW)
    (sid,) = first.new_source_ids
    again = store.record_photometry(
        image_id=2, observation_id="o2", mjd=61000.1, rows=_rows([], [], []),
        new_sources=_new(["CTG X", "CTG Y", "CTG Y"], [0.06, 0.07, 0.09]), n_islands=3,
        now=NOW)
    assert len(again.new_source_ids) == 1  # CTG Y, once (its brighter island)
    assert _doubled_names(store).empty
    rows = store._df("SELECT p.source_id, p.image_id, p.flux_jy, p.forced, s.name "
                     "FROM photometry p JOIN sources s ON s.id = p.source_id "
                     "ORDER BY s.name, p.image_id")
    assert list(rows.name) == ["CTG X", "CTG X", "CTG Y"]
    assert (rows.source_id.iloc[:2] == sid).all() and not rows.forced.any()
    np.testing.assert_allclose(rows.flux_jy, [0.05, 0.06, 0.09])
    assert store._df("SELECT n_meas FROM variability WHERE source_id = ?", [sid]).n_meas[0] == 2


# --------------------------------------------------------- through the runner
def _imaged_backlog(store: Store, home, n: int) -> list[str]:
    cat = catalog_frame()
    x, y = FIELD.wcs().all_world2pix(cat.ra_deg.to_numpy(), cat.dec_deg.to_numpy(), 0)
    inside = (x > -0.5) & (x < FIELD.npix - 0.5) & (y > -0.5) & (y < FIELD.npix - 0.5)
    cat = cat[inside]
    mjd0 = Time(T0).mjd
    ids = []
    for k in range(n):
        obs_id = (T0 + timedelta(minutes=5 * k)).isoformat()
        files = write_image(home.images / f"img{k}.fits", FIELD, cat.ra_deg.to_numpy(),
                            cat.dec_deg.to_numpy(), cat.flux_jy.to_numpy(), sigma=0.5e-3,
                            seed=k)
        store.add_observation(obs_id=obs_id, start_utc=T0 + timedelta(minutes=5 * k),
                              mid_mjd=mjd0 + 5 * k / 1440, dec_deg=FIELD.dec_deg,
                              n_subbands=16, now=T0, state="imaged")
        store.add_image(observation_id=obs_id, path=str(files["path"]),
                        mid_mjd=mjd0 + 5 * k / 1440, now=T0,
                        pbcor_path=str(files["pbcor_path"]),
                        residual_path=str(files["residual_path"]), ra_deg=FIELD.ra_deg,
                        dec_deg=FIELD.dec_deg, npix=FIELD.npix, cell_arcsec=FIELD.cell_arcsec,
                        qa_passed=True)
        ids.append(obs_id)
    assert len(cat) >= 15
    return ids


def test_two_workers_measuring_a_backlog_seed_the_catalog_once(store, home):
    n_obs = 4
    obs = _imaged_backlog(store, home, n_obs)
    shipped = default_registry()
    prepare = shipped.prepares["measure"]
    # The first two preparations start together, as two idle workers take a backlog.
    meet = threading.Barrier(2, timeout=30)
    calls = {"n": 0}
    lock = threading.Lock()

    def prepare_together(st, ob, now):
        with lock:
            calls["n"] += 1
            first_two = calls["n"] <= 2
        if first_two:
            meet.wait()
        return prepare(st, ob, now)

    registry = StageRegistry()
    registry.register_stage("measure", shipped.stages["measure"], prepare=prepare_together,
                            record=shipped.records["measure"])
    runner = Runner(store, home, registry, config=RunnerConfig(workers=2, poll_s=0.05))
    runner.start()
    try:
        deadline = time.monotonic() + 300
        while (store.counts_by_state()["complete"] < n_obs and not store.jobs_by_state()
               .get("retry") and time.monotonic() < deadline):
            threading.Event().wait(0.1)
    finally:
        runner.stop()
    assert calls["n"] == n_obs  # every job prepared once: none failed and was retried
    assert all(store.observation(o).state == "complete" for o in obs)
    assert store.table_counts()["sources"] == len(catalog_frame())
    assert _doubled_names(store).empty
    # Each source in the field has one lightcurve of every image, not two halves.
    per_source = store._df("SELECT p.source_id, count(*) AS n FROM photometry p "
                           "JOIN sources s ON s.id = p.source_id WHERE s.origin = 'catalog' "
                           "GROUP BY p.source_id")
    assert len(per_source) >= 15 and (per_source.n == n_obs).all()


# --------------------------------------------------------------- the repair
def _store_at_version_5(home, tmp_path) -> Store:
    old = tmp_path / "migrations-v5"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("000[1-5]_*.sql")):
        shutil.copy(path, old / path.name)
    store = Store.open(home, migrations_dir=old)
    assert store.schema_version == 5
    return store


def test_migration_merges_duplicate_names_into_the_lowest_id(home, tmp_path):
    rng = np.random.default_rng(4)
    with _store_at_version_5(home, tmp_path) as store:
        # As the racing seeders left it: J1 twice, J3 three times, J2 once.
        for names in (["J1", "J2", "J3"], ["J1", "J3"], ["J3"]):
            for name in names:
                store._cur.execute("INSERT INTO sources (name, ra_deg, dec_deg, origin, "
                                   "created_utc) VALUES (?, 10, 30, 'catalog', ?)", [name, NOW])
        ids = dict(store._cur.execute("SELECT id, name FROM sources").fetchall())
        assert sorted(ids) == [1, 2, 3, 4, 5, 6] and ids[4] == "J1" and ids[5] == ids[6] == "J3"
        # Which images measured which id (J1: 1 and 4 share images 1, 2; J3: 3 and 6 share 1).
        measured = {1: [0, 1, 2], 4: [1, 2, 3, 4], 2: [0, 1, 2, 3, 4, 5], 3: [0, 1],
                    5: [2, 3], 6: [1, 5]}
        flux = {(sid, k): 0.05 + 0.02 * rng.standard_normal() for sid, ks in measured.items()
                for k in ks}
        err = {key: 1e-3 * (1 + rng.uniform()) for key in flux}
        for k in range(6):
            # the images row as that schema's code wrote it (today's add_image keeps
            # versions, a column of a later migration)
            image_id = store._cur.execute(
                "INSERT INTO images (observation_id, path, mid_mjd, created_utc) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                [f"o{k}", f"/nowhere/{k}.fits", 61000.0 + k, NOW]).fetchone()[0]
            sids = [s for s, ks in measured.items() if k in ks]
            store.record_photometry(
                image_id=image_id, observation_id=f"o{k}", mjd=61000.0 + k,
                rows=_rows(sids, [flux[s, k] for s in sids], [err[s, k] for s in sids]),
                new_sources=_new([], []), n_islands=0, now=NOW)
        assert store.resort_photometry_tail() > 0
        j2_before = store._df("SELECT * FROM variability WHERE source_id = 2")
        image_of = dict(store._cur.execute("SELECT observation_id, id FROM images").fetchall())

    with Store.open(home) as store:
        assert store.schema_version >= 6  # 0007 and later run too
        got = store._df("SELECT id, name FROM sources ORDER BY id")
        assert list(got.id) == [1, 2, 3] and list(got.name) == ["J1", "J2", "J3"]
        phot = store._df("SELECT source_id, image_id, flux_jy, flux_err_jy FROM photometry "
                         "ORDER BY source_id, image_id")
        assert set(phot.source_id) == {1, 2, 3}
        # One row per image; where two ids measured one image, the kept id's row stays.
        kept = {1: [(1, k) for k in (0, 1, 2)] + [(4, k) for k in (3, 4)],
                3: [(3, 0), (3, 1), (5, 2), (5, 3), (6, 5)],
                2: [(2, k) for k in range(6)]}
        for sid, origin in kept.items():
            rows = phot[phot.source_id == sid]
            assert list(rows.image_id) == [image_of[f"o{k}"] for _, k in origin]
            np.testing.assert_allclose(rows.flux_jy, [flux[o] for o in origin], rtol=1e-12)
        var = store._df("SELECT * FROM variability ORDER BY source_id")
        assert list(var.source_id) == [1, 2, 3]
        for sid in (1, 3):
            rows, row = phot[phot.source_id == sid], var[var.source_id == sid].iloc[0]
            ref = metrics(rows.flux_jy.to_numpy(), rows.flux_err_jy.to_numpy())
            assert row.n_meas == 5
            np.testing.assert_allclose(
                [row.wmean_jy, row.eta, row.v, row.vs_max],
                [ref.wmean_jy, ref.eta, ref.v, ref.vs_max], rtol=1e-9)
        # The source that had no twin is untouched.
        pd.testing.assert_frame_equal(  # (0007's aggregate columns are new)
            var.loc[var.source_id == 2, list(j2_before.columns)].reset_index(drop=True),
            j2_before)
        # Images whose rows moved to another id wait for the re-sort; the others stay sorted.
        unsorted = store._df("SELECT image_id FROM photometry_runs WHERE NOT sorted")
        assert set(unsorted.image_id) == {image_of[f"o{k}"] for k in (2, 3, 4, 5)}
        # From now on the store itself refuses a twin, and photometry stays unindexed.
        with pytest.raises(duckdb.ConstraintException, match="unique"):
            store._cur.execute("INSERT INTO sources (name, ra_deg, dec_deg, created_utc) "
                               "VALUES ('J1', 0, 0, ?)", [NOW])
        assert store._df("SELECT index_name FROM duckdb_indexes() "
                         "WHERE table_name = 'photometry'").empty
        assert store.add_catalog_sources(pd.DataFrame({
            "name": ["J4"], "ra_deg": [1.0], "dec_deg": [2.0], "flux_jy": [0.1],
            "spectral_index": [-0.7]}), now=NOW) == 1
        assert store._df("SELECT id FROM sources WHERE name = 'J4'").id[0] > 6


def test_migration_keeps_a_store_without_duplicates_as_it_was(home, tmp_path):
    with _store_at_version_5(home, tmp_path) as store:
        seed_catalog(store, now=NOW)
        before = store._df("SELECT * FROM sources ORDER BY id")
    with Store.open(home) as store:
        pd.testing.assert_frame_equal(store._df("SELECT * FROM sources ORDER BY id"), before)
