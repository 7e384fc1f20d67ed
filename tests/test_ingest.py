"""Ingest on real UVH5 files: grouping, completeness, partial groups, quarantine."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from uvh5_factory import INT_TIME_S, NAME_FORMAT, subband_uvdata, write_chunk

from pipeline.ingest.config import IngestConfig
from pipeline.ingest.ingester import Ingester, group_by_time, parse_name
from pipeline.jobs.contract import TaskContext

START = datetime(2026, 11, 23, 11, 55, 0)
N_CHAN, N_TIMES, N_ANT = 2, 2, 6


@pytest.fixture(scope="package")
def ingest_master(tmp_path_factory) -> Path:
    """Two chunks 5 minutes apart, plus odd files for the quarantine cases."""
    root = tmp_path_factory.mktemp("ingest-master")
    kw = {"n_ant": N_ANT, "n_chan": N_CHAN, "n_times": N_TIMES}
    write_chunk(root / "a", START, **kw)
    write_chunk(root / "b", START + timedelta(minutes=5), **kw)
    odd = root / "odd"
    odd.mkdir()
    subband_uvdata(START, 5, **{**kw, "n_chan": 3}).write_uvh5(str(odd / "channels.hdf5"))
    names = [f"DSA-{i:03d}" for i in (1, 2, 3, 4, 5, 99)]
    subband_uvdata(START, 5, **kw, ant_names=names).write_uvh5(str(odd / "antennas.hdf5"))
    nan = subband_uvdata(START, 5, **kw)
    nan.data_array[3, 1, 0] = np.nan
    nan.write_uvh5(str(odd / "nan.hdf5"), run_check=False)
    return root


def stamp(t: datetime) -> str:
    return t.strftime(NAME_FORMAT)


def place(master: Path, chunk: str, incoming: Path, *, subbands: tuple | range = tuple(range(16)),
          jitter: dict[int, float] | None = None) -> list[Path]:
    """Copy a master chunk's subbands into incoming, renaming with jittered timestamps."""
    incoming.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted((master / chunk).glob("*_sb*.hdf5")):
        parsed = parse_name(src)
        if parsed.subband not in subbands:
            continue
        shift = timedelta(seconds=(jitter or {}).get(parsed.subband, 0.0))
        dst = incoming / f"{stamp(parsed.stamp + shift)}_sb{parsed.subband:02d}.hdf5"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


@pytest.fixture
def ingester() -> Ingester:
    return Ingester(config=IngestConfig())


def scan(ingester, store, home, clock, times: int = 1) -> int:
    return sum(ingester.scan(TaskContext(store=store, home=home, now=clock()))
               for _ in range(times))


def test_complete_group_registers_once_with_16_subbands(ingest_master, ingester, store, home,
                                                         clock):
    files = place(ingest_master, "a", home.incoming)
    assert scan(ingester, store, home, clock) == 0  # sizes not yet seen twice
    assert scan(ingester, store, home, clock) == 1
    obs = store.observation(stamp(START))
    assert (obs.n_subbands, obs.partial, obs.state) == (16, False, "pending")
    assert sorted(obs.files) == sorted(str(f) for f in files)
    assert obs.dec_deg == pytest.approx(33.0)
    assert obs.start_utc == START
    first = START + timedelta(seconds=INT_TIME_S / 2)
    mid = first + timedelta(seconds=INT_TIME_S * (N_TIMES - 1) / 2)
    assert obs.mid_mjd == pytest.approx(61367 + (mid - datetime(2026, 11, 23)).total_seconds()
                                        / 86400, abs=1e-8)
    row = store.observations().iloc[0]
    assert (row.n_subbands,) == (16,)
    extra = store._cur.execute("SELECT n_channels, n_antennas, n_integrations, freq_min_hz, "
                               "freq_max_hz FROM observations").fetchone()
    assert extra[:3] == (16 * N_CHAN, N_ANT, N_TIMES)
    assert 1.30e9 < extra[3] < extra[4] < 1.50e9
    # Registered once: later scans, and a fresh ingester after a restart, add nothing.
    assert scan(ingester, store, home, clock, times=2) == 0
    assert scan(Ingester(), store, home, clock, times=2) == 0
    assert len(store.observations()) == 1
    assert all(f.exists() for f in files)  # ingest moves nothing it can read
    assert store.quarantined_files().empty


def test_two_chunks_with_jittered_names_make_two_observations(ingest_master, ingester, store,
                                                               home, clock):
    rng = np.random.default_rng(3)
    jitter_a = dict(enumerate(rng.uniform(-30, 30, 16)))
    jitter_b = dict(enumerate(rng.uniform(-30, 30, 16)))
    jitter_a[0], jitter_b[0] = 0.0, 0.0  # the id is the earliest name; fix one name per chunk
    a = place(ingest_master, "a", home.incoming, jitter=jitter_a)
    b = place(ingest_master, "b", home.incoming, jitter=jitter_b)
    assert scan(ingester, store, home, clock, times=2) == 2
    obs = store.observations()
    assert len(obs) == 2 and set(obs.n_subbands) == {16}
    by_start = {row.start_utc: set(row.files) for row in obs.itertuples()}
    assert by_start[START] == {str(f) for f in a}
    assert by_start[START + timedelta(minutes=5)] == {str(f) for f in b}
    earliest = min(parse_name(f).stamp for f in a)
    assert store.observation(stamp(earliest)).n_subbands == 16


def test_group_by_time_splits_at_the_window():
    files = [parse_name(Path(f"{stamp(START + timedelta(seconds=s))}_sb{i:02d}.hdf5"))
             for i, s in enumerate([0, 30, 59, 300, 330])]
    groups = group_by_time(files, window_s=60)
    assert [[f.subband for f in g] for g in groups] == [[0, 1, 2], [3, 4]]


def test_growing_file_waits_until_its_size_is_stable(ingest_master, ingester, store, home,
                                                      clock):
    files = place(ingest_master, "a", home.incoming)
    full = files[-1].read_bytes()
    files[-1].write_bytes(full[: len(full) // 2])  # the correlator is still writing it
    assert scan(ingester, store, home, clock) == 0
    with open(files[-1], "ab") as f:
        f.write(full[len(full) // 2:])
    assert scan(ingester, store, home, clock) == 0  # size changed since the last scan
    assert store.quarantined_files().empty  # a file being written is never judged
    assert scan(ingester, store, home, clock) == 1
    assert store.observation(stamp(START)).n_subbands == 16


def test_missing_subbands_register_as_partial_only_after_the_timeout(ingest_master, ingester,
                                                                      store, home, clock):
    place(ingest_master, "a", home.incoming, subbands=range(14))
    assert scan(ingester, store, home, clock, times=2) == 0
    clock.advance(599)
    assert scan(ingester, store, home, clock) == 0
    clock.advance(2)
    assert scan(ingester, store, home, clock) == 1
    obs = store.observation(stamp(START))
    assert (obs.n_subbands, obs.partial, len(obs.files)) == (14, True, 14)
    # A subband arriving after that is kept aside, not made into a one-file observation.
    [late] = place(ingest_master, "a", home.incoming, subbands=[14])
    clock.advance(700)
    assert scan(ingester, store, home, clock, times=2) == 0
    q = store.quarantined_files()
    assert list(q.original_path) == [str(late)]
    assert f"arrived after observation {stamp(START)}" in q.reason[0]
    assert len(store.observations()) == 1


def truncate(path: Path, master: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return "not a readable UVH5 file"


def not_hdf5(path: Path, master: Path) -> str:
    path.write_text("correlator log line, not a UVH5 file\n" * 50)
    return "not a readable UVH5 file"


def other_channels(path: Path, master: Path) -> str:
    shutil.copyfile(master / "odd" / "channels.hdf5", path)
    return "channel count differs from its group's (3 channels, the others have 2 channels)"


def other_antennas(path: Path, master: Path) -> str:
    shutil.copyfile(master / "odd" / "antennas.hdf5", path)
    return "antenna set differs from its group's (6 antennas (differs in DSA-006, DSA-099)"


def nans(path: Path, master: Path) -> str:
    shutil.copyfile(master / "odd" / "nan.hdf5", path)
    return "visibilities hold NaN or Inf (1 values"


@pytest.mark.parametrize("spoil", [truncate, not_hdf5, other_channels, other_antennas, nans])
def test_bad_file_goes_to_quarantine_and_the_group_goes_on(spoil, ingest_master, ingester,
                                                            store, home, clock):
    files = place(ingest_master, "a", home.incoming)
    bad = files[5]
    problem = spoil(bad, ingest_master)
    assert scan(ingester, store, home, clock, times=2) == 1
    assert not bad.exists()
    assert (home.quarantine / bad.name).exists()
    q = store.quarantined_files()
    assert len(q) == 1
    assert q.original_path[0] == str(bad)
    assert q.quarantine_path[0] == str(home.quarantine / bad.name)
    assert q.stage[0] == "ingest"
    assert q.reason[0].startswith(f"{bad}: ")
    assert problem in q.reason[0]
    obs = store.observation(stamp(START))
    assert (obs.n_subbands, obs.partial) == (15, True)
    assert str(bad) not in obs.files
    assert all(Path(f).exists() for f in obs.files)


@pytest.mark.parametrize("name, problem", [
    ("2026-11-23T11:55:00_sb16.hdf5", "unknown subband 'sb16' (expected sb00–sb15)"),
    ("2026-11-23T11:55:00_sbXY.hdf5", "unknown subband 'sbXY'"),
    ("2026-13-45T11:55:00_sb03.hdf5", "timestamp '2026-13-45T11:55:00' is not"),
])
def test_wrongly_named_subband_goes_to_quarantine(name, problem, ingest_master, ingester,
                                                  store, home, clock):
    place(ingest_master, "a", home.incoming)
    odd = home.incoming / name
    shutil.copyfile(ingest_master / "odd" / "channels.hdf5", odd)
    assert scan(ingester, store, home, clock, times=2) == 1
    q = store.quarantined_files()
    assert list(q.original_path) == [str(odd)]
    assert q.reason[0] == f"{odd}: {problem}" or q.reason[0].startswith(f"{odd}: {problem}")
    assert store.observation(stamp(START)).n_subbands == 16


def test_unrelated_files_are_ignored(ingest_master, ingester, store, home, clock):
    place(ingest_master, "a", home.incoming)
    truth = home.incoming / "truth"
    truth.mkdir()
    (truth / "sources.csv").write_text("ra,dec,flux\n")
    shutil.copyfile(ingest_master / "odd" / "nan.hdf5", truth / f"{stamp(START)}_sb01.hdf5")
    others = [home.incoming / "README.txt", home.incoming / "calibration.hdf5",
              home.incoming / f"{stamp(START)}_sb01.hdf5.part"]
    for p in others:
        p.write_text("not ours\n")
    assert scan(ingester, store, home, clock, times=3) == 1
    assert all(p.exists() for p in others) and (truth / "sources.csv").exists()
    assert store.quarantined_files().empty
    assert list(home.quarantine.iterdir()) == []


def test_files_untouched_for_settle_s_are_complete_at_first_sight(ingest_master, store, home):
    place(ingest_master, "a", home.incoming)
    # As after a restart: the files are already older than settle_s.
    now = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=61)
    ingester = Ingester(config=IngestConfig(settle_s=60))
    assert ingester.scan(TaskContext(store=store, home=home, now=now)) == 1


@pytest.mark.parametrize("kwargs, problem", [
    ({"n_subbands": 0}, "n_subbands must be at least 1"),
    ({"group_window_s": 0}, "group_window_s must be positive"),
    ({"partial_timeout_s": -1}, "partial_timeout_s must be positive"),
    ({"settle_s": 0}, "settle_s must be positive"),
])
def test_bad_ingest_config(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        IngestConfig(**kwargs)

