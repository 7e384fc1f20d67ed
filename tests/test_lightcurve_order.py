"""Store.lightcurve over photometry_sorted + the indexed photometry_recent (migration 0013),
against the rows the test recorded and the query sorted by DuckDB, in a real store."""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pandas as pd

from pipeline.store import Store
from pipeline.store.core import MIGRATIONS_DIR
from pipeline.store.sources import LIGHTCURVE_COLUMNS

NOW = datetime(2026, 11, 23, 12, 0)
N_SOURCES = 40
#: The query ``lightcurve`` ran before: DuckDB's ORDER BY, pandas through ``.df()``.
REFERENCE = (f"SELECT {', '.join(LIGHTCURVE_COLUMNS)} FROM photometry "
             "WHERE source_id = {sid} ORDER BY mjd, image_id")


def _no_new() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("name", "ra_deg", "dec_deg", "flux_jy",
                                         "flux_err_jy", "snr", "local_rms_jy", "pb")})


def _record(store: Store, rng, image: int, mjd: float, ids: np.ndarray,
            written: dict) -> None:
    """One image of a random subset of ``ids``, its rows handed over in random order;
    ``written`` keeps each image's rows (a re-measurement replaces them)."""
    ids = rng.permutation(ids[rng.random(ids.size) > 0.3])
    err = rng.uniform(0.5e-3, 3e-3, ids.size)
    flux = rng.normal(0.05, 0.01, ids.size)
    rows = pd.DataFrame({"source_id": ids, "flux_jy": flux, "flux_err_jy": err,
                         "snr": flux / err, "local_rms_jy": err, "background_jy": 0.0,
                         "pb": 0.9, "flags": 0, "forced": rng.random(ids.size) > 0.2})
    store.record_photometry(image_id=image, observation_id=f"o{image}", mjd=mjd, rows=rows,
                            new_sources=_no_new(), n_islands=0, now=NOW)
    written[image] = rows.assign(image_id=image, mjd=mjd)


def _expected(written: dict, sid: int) -> pd.DataFrame:
    rows = pd.concat(written.values(), ignore_index=True)
    return rows[rows.source_id == sid].sort_values(["mjd", "image_id"])


def _seed(store: Store) -> np.ndarray:
    cat = pd.DataFrame({"name": [f"L{i:03d}" for i in range(N_SOURCES)],
                        "ra_deg": np.linspace(20, 21, N_SOURCES), "dec_deg": 33.0,
                        "flux_jy": 0.05, "spectral_index": -0.7})
    store.add_catalog_sources(cat, now=NOW)
    return store._df("SELECT id FROM sources ORDER BY id").id.to_numpy()


def _count(store: Store, table: str) -> int:
    return int(store._df(f"SELECT count(*) AS n FROM {table}").n[0])


def _assert_same_as_reference(store: Store, ids: np.ndarray, written: dict) -> int:
    """Every source's lightcurve equals the rows recorded and the DuckDB-sorted query;
    returns the rows compared."""
    n = 0
    for sid in [*ids.tolist(), int(ids.max()) + 1000]:   # and one source with no rows
        got = store.lightcurve(int(sid))
        want = store._cur.execute(REFERENCE.format(sid=int(sid))).df()
        assert list(got.columns) == list(LIGHTCURVE_COLUMNS)
        assert got.dtypes.to_dict() == want.dtypes.to_dict()
        assert got.image_id.tolist() == want.image_id.tolist(), sid
        assert got.forced.tolist() == want.forced.tolist()
        for col in ("mjd", "flux_jy", "flux_err_jy", "snr"):
            np.testing.assert_allclose(got[col], want[col], rtol=1e-12, err_msg=col)
        mine = _expected(written, sid)
        assert got.image_id.tolist() == mine.image_id.tolist(), sid
        for col in ("mjd", "flux_jy", "flux_err_jy", "snr"):
            np.testing.assert_allclose(got[col], mine[col], rtol=1e-12, err_msg=col)
        assert got.mjd.is_monotonic_increasing
        assert got.index.tolist() == list(range(len(got)))
        n += len(got)
    return n


def test_lightcurve_equals_the_rows_recorded_as_appended_and_after_resort(tmp_path):
    rng = np.random.default_rng(11)
    written: dict = {}
    with Store.open(tmp_path / "home") as store:
        ids = _seed(store)
        # Images recorded out of time order (image ids do not follow mjd), and two images
        # at one mjd: the order is by mjd, then image id.
        mjds = 61000 + rng.permutation(12) / 288
        mjds[5] = mjds[4]
        for image, mjd in enumerate(mjds, start=1):
            _record(store, rng, image, float(mjd), ids, written)
        n_rows = _count(store, "photometry")
        assert _count(store, "photometry_recent") == n_rows > 0     # appended: indexed
        assert _assert_same_as_reference(store, ids, written) == n_rows
        assert store.resort_photometry_tail() == n_rows
        assert _count(store, "photometry_recent") == 0
        assert _count(store, "photometry_sorted") == n_rows
        assert _assert_same_as_reference(store, ids, written) == n_rows   # re-sorted
        # Fresh appends after the re-sort, earlier in time than some sorted rows, and a
        # sorted image re-measured: its rows leave photometry_sorted for the recent table.
        for image in (13, 14):
            _record(store, rng, image, 61000 - image / 288, ids, written)
        _record(store, rng, 3, float(mjds[2]), ids, written)
        assert _count(store, "photometry_sorted WHERE image_id = 3") == 0
        n_rows = _count(store, "photometry")
        assert _assert_same_as_reference(store, ids, written) == n_rows
        store.resort_photometry_tail()
        assert _assert_same_as_reference(store, ids, written) == n_rows


def test_rows_appended_before_the_migration_are_read_and_then_resorted(tmp_path):
    """A store whose unsorted rows were appended before 0013 keeps them in photometry_sorted
    until the re-sort; its lightcurves are whole throughout."""
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(f.name[:4]) < 13:
            shutil.copy(f, old_dir / f.name)
    rng = np.random.default_rng(3)
    written: dict = {}
    home = tmp_path / "home"
    with Store.open(home, migrations_dir=old_dir) as store:
        ids = _seed(store)
        for image in range(1, 6):
            _record(store, rng, image, 61000 + image / 288, ids, written)
    with Store.open(home) as store:
        assert _count(store, "photometry_recent") == 0
        _record(store, rng, 6, 61000.5, ids, written)
        _record(store, rng, 2, 61000.6, ids, written)     # re-measured, from the old table
        n_rows = _count(store, "photometry")
        assert _assert_same_as_reference(store, ids, written) == n_rows
        assert store.resort_photometry_tail() == n_rows
        assert _count(store, "photometry_recent") == 0
        assert _assert_same_as_reference(store, ids, written) == n_rows
