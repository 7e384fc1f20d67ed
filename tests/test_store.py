"""The store: migrations, opening errors that leave files untouched, typed queries."""

from __future__ import annotations

import shutil
import subprocess
import sys

import duckdb
import pytest
from conftest import T0, add_observations

from pipeline.errors import HomeError, SchemaTooNew, StoreCorrupt, StoreLocked
from pipeline.home import Home
from pipeline.jobs.states import STAGES, STATES
from pipeline.store import MIGRATIONS_DIR, Store, find_migrations

REQUIRED_TABLES = {"observations", "jobs", "caltables", "images", "sources", "photometry",
                   "variability", "saved_queries", "triggers", "trigger_runs", "backups",
                   "alerts", "metrics", "schema_version"}


def tables(path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
                .fetchall()}


def test_fresh_home_gets_every_table_and_latest_version(home):
    with Store.open(home) as store:
        assert store.schema_version == len(find_migrations()) >= 1
    assert REQUIRED_TABLES <= tables(home.db)
    for sub in ("incoming", "ms", "images", "quarantine", "backups"):
        assert (home.root / sub).is_dir()


def test_reopen_is_a_noop_and_keeps_rows(home):
    with Store.open(home) as store:
        add_observations(store, 3)
    with Store.open(home) as store:
        assert store.counts_by_state()["pending"] == 3
    with duckdb.connect(str(home.db), read_only=True) as con:
        rows = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(find_migrations()) + 1))


def test_upgrade_applies_only_new_migrations(home, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with Store.open(home, migrations_dir=migrations) as store:
        add_observations(store, 2)
        v1 = store.schema_version
    n = v1 + 1
    (migrations / f"{n:04d}_add_notes.sql").write_text(
        "ALTER TABLE observations ADD COLUMN notes VARCHAR;")
    with Store.open(home, migrations_dir=migrations) as store:
        assert store.schema_version == n
        assert store.counts_by_state()["pending"] == 2
    with duckdb.connect(str(home.db), read_only=True) as con:
        cols = {r[0] for r in con.execute("DESCRIBE observations").fetchall()}
    assert "notes" in cols


def test_failed_migration_leaves_previous_version(home, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    Store.open(home, migrations_dir=migrations).close()
    good = len(find_migrations(migrations))
    (migrations / f"{good + 1:04d}_broken.sql").write_text(
        "CREATE TABLE half (x INT); SELECT * FROM no_such_table;")
    with pytest.raises(duckdb.Error):
        Store.open(home, migrations_dir=migrations)
    with duckdb.connect(str(home.db), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == good
    assert "half" not in tables(home.db)


def test_newer_schema_is_refused_and_untouched(home):
    Store.open(home).close()
    with duckdb.connect(str(home.db)) as con:
        con.execute("INSERT INTO schema_version VALUES (999, now()::TIMESTAMP)")
    before = home.db.read_bytes()
    with pytest.raises(SchemaTooNew, match=r"contimg\.duckdb: schema version 999 is newer"):
        Store.open(home)
    assert home.db.read_bytes() == before


def test_corrupt_file_is_refused_and_untouched(home):
    home.ensure()
    home.db.write_bytes(b"this is not a database" * 500)
    before = home.db.read_bytes()
    with pytest.raises(StoreCorrupt, match=r"contimg\.duckdb: not a readable DuckDB database"):
        Store.open(home)
    assert home.db.read_bytes() == before


def test_home_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    with pytest.raises(HomeError, match="exists and is not a directory"):
        Store.open(Home.resolve(target))
    with pytest.raises(HomeError, match="cannot create folders"):
        Store.open(Home.resolve(target / "below"))


def test_second_process_gets_a_clear_lock_error(home):
    Store.open(home).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", str(home.db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked, match=rf"in use by another process \(held by PID {holder.pid}"):
            Store.open(home)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("name, problem", [
    ("1_short.sql", "migration names look like"),
    ("0002_gap.sql", "without gaps"),
])
def test_bad_migration_sets_are_errors(tmp_path, name, problem):
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(ValueError, match=problem):
        find_migrations(tmp_path)


def test_counts_cover_every_state(store):
    for i, state in enumerate(STATES):
        add_observations(store, i + 1, state=state, prefix=f"{state}-")
    assert store.counts_by_state() == {s: i + 1 for i, s in enumerate(STATES)}
    assert store.queue_depth(STAGES) == {s.name: STATES.index(s.from_state) + 1 for s in STAGES}


def test_duplicate_observation_is_not_registered_twice(store):
    assert store.add_observation(obs_id="a", start_utc=T0, mid_mjd=1.0, dec_deg=0.0,
                                 n_subbands=16, now=T0)
    assert not store.add_observation(obs_id="a", start_utc=T0, mid_mjd=1.0, dec_deg=0.0,
                                     n_subbands=16, now=T0)
    assert store.counts_by_state()["pending"] == 1


def test_unknown_state_is_refused(store):
    with pytest.raises(ValueError, match="observation x: unknown state 'lost'"):
        store.add_observation(obs_id="x", start_utc=T0, mid_mjd=1.0, dec_deg=0.0,
                              n_subbands=16, now=T0, state="lost")


def test_filters_are_bound_parameters(store):
    add_observations(store, 2)
    assert store.observations(state="pending' OR '1'='1").empty
    assert len(store.observations(state="pending")) == 2


def test_image_noise_histogram_is_cumulative(store):
    for i, rms in enumerate([1e-4, 3e-4, 3e-4, 2e-3]):
        store.add_image(observation_id=f"o{i}", path=f"/i{i}.fits", mid_mjd=1.0, now=T0,
                        rms_jy=rms)
    h = store.image_noise_histogram([2e-4, 1e-3])
    assert h.cumulative == (1, 3, 4)
    assert h.count == 4
    assert h.total == pytest.approx(2.7e-3)
