"""Store.lightcurve (sorted in NumPy) against the query sorted by DuckDB, over a real store."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from pipeline.store import Store
from pipeline.store.sources import LIGHTCURVE_COLUMNS

NOW = datetime(2026, 11, 23, 12, 0)
N_SOURCES = 40
#: The query ``lightcurve`` ran before: DuckDB's ORDER BY, pandas through ``.df()``.
REFERENCE = (f"SELECT {', '.join(LIGHTCURVE_COLUMNS)} FROM photometry "
             "WHERE source_id = {sid} ORDER BY mjd, image_id")


def _no_new() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ("name", "ra_deg", "dec_deg", "flux_jy",
                                         "flux_err_jy", "snr", "local_rms_jy", "pb")})


def _record(store: Store, rng, image: int, mjd: float, ids: np.ndarray) -> None:
    """One image of a random subset of ``ids``, its rows handed over in random order."""
    ids = rng.permutation(ids[rng.random(ids.size) > 0.3])
    err = rng.uniform(0.5e-3, 3e-3, ids.size)
    flux = rng.normal(0.05, 0.01, ids.size)
    rows = pd.DataFrame({"source_id": ids, "flux_jy": flux, "flux_err_jy": err,
                         "snr": flux / err, "local_rms_jy": err, "background_jy": 0.0,
                         "pb": 0.9, "flags": 0, "forced": rng.random(ids.size) > 0.2})
    store.record_photometry(image_id=image, observation_id=f"o{image}", mjd=mjd, rows=rows,
                            new_sources=_no_new(), n_islands=0, now=NOW)


def _assert_same_as_reference(store: Store, ids: np.ndarray) -> int:
    """Every source's lightcurve equals the reference query's; returns the rows compared."""
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
        assert got.mjd.is_monotonic_increasing
        assert got.index.tolist() == list(range(len(got)))
        n += len(got)
    return n


def test_lightcurve_equals_the_duckdb_sorted_query_as_appended_and_after_resort(tmp_path):
    rng = np.random.default_rng(11)
    with Store.open(tmp_path / "home") as store:
        cat = pd.DataFrame({"name": [f"L{i:03d}" for i in range(N_SOURCES)],
                            "ra_deg": np.linspace(20, 21, N_SOURCES), "dec_deg": 33.0,
                            "flux_jy": 0.05, "spectral_index": -0.7})
        store.add_catalog_sources(cat, now=NOW)
        ids = store._df("SELECT id FROM sources ORDER BY id").id.to_numpy()
        # Images recorded out of time order (image ids do not follow mjd), and two images
        # at one mjd: the order is by mjd, then image id.
        mjds = 61000 + rng.permutation(12) / 288
        mjds[5] = mjds[4]
        for image, mjd in enumerate(mjds, start=1):
            _record(store, rng, image, float(mjd), ids)
        assert _assert_same_as_reference(store, ids) > 0            # as appended
        assert store.resort_photometry_tail() > 0
        n_sorted = _assert_same_as_reference(store, ids)            # after the re-sort
        # Fresh appends after the re-sort, earlier in time than some sorted rows, and a
        # sorted image re-measured: its rows leave the sorted part for the tail.
        for image in (13, 14):
            _record(store, rng, image, 61000 - image / 288, ids)
        _record(store, rng, 3, float(mjds[2]), ids)
        assert _assert_same_as_reference(store, ids) > n_sorted // 2
        n_rows = store._df("SELECT count(*) AS n FROM photometry").n[0]
        assert sum(len(store.lightcurve(int(s))) for s in ids) == n_rows
