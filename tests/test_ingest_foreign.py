"""Another instrument's UVH5 files are turned away at ingest, each with the field that differs.

Real UVH5 written with pyuvdata for other instruments (another site, band, channel layout,
polarizations, integration time, antenna set, baseline order) and dropped into
``incoming/`` under subband names: alone, and inside a good chunk.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation
from uvh5_factory import (
    BAND_WIDTH_HZ,
    N_SUBBANDS,
    NAME_FORMAT,
    OVRO,
    other_telescope,
    subband_freqs,
    subband_uvdata,
    telescope,
    uvdata,
    write_chunk,
)

from pipeline.convert.stage import convert_group
from pipeline.ingest.ingester import Ingester, read_header
from pipeline.ingest.instrument_check import (
    HeaderRecord,
    Instrument,
    header_record,
    instrument_problems,
)
from pipeline.jobs.contract import TaskContext
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, StageRegistry
from pipeline.simulate import SimConfig, simulate

START = datetime(2026, 11, 23, 11, 55, 0)
N_CHAN, N_TIMES, N_ANT = 2, 2, 6
SB = 5
WIDTH = BAND_WIDTH_HZ / (N_SUBBANDS * N_CHAN)
MWA = EarthLocation.from_geodetic(lon=116.67081 * u.deg, lat=-26.703319 * u.deg,
                                  height=377.8 * u.m)
VLA = EarthLocation.from_geodetic(lon=-107.6184 * u.deg, lat=34.0784 * u.deg,
                                  height=2124.0 * u.m)


@pytest.fixture(scope="module")
def instrument() -> Instrument:
    return Instrument.default()


# ------------------------------------------------------------------ the pure check
@pytest.fixture(scope="module")
def good(instrument) -> HeaderRecord:
    """The record of a good DSA-110 subband file (sb05, 2 channels, 6 antennas)."""
    rec = header_record(subband_uvdata(START, SB, n_ant=N_ANT, n_chan=N_CHAN, n_times=N_TIMES),
                        source="incoming/x_sb05.hdf5", subband=SB)
    assert instrument_problems(rec, instrument) == []
    return rec


def _moved(rec: HeaderRecord, index: int, metres: float) -> np.ndarray:
    ecef = rec.antenna_ecef_m.copy()
    ecef[index, 0] += metres
    return ecef


def _shifted(rec: HeaderRecord, hz: float) -> dict:
    return {"freqs_hz": rec.freqs_hz + hz}


CASES = [
    ("telescope name", lambda r: {"telescope_name": "MWA"},
     "telescope_name 'MWA' is not DSA-110 (its files say 'DSA-110' or 'OVRO_DSA' or "
     "'OVRO_MMA')"),
    ("site", lambda r: {"site_ecef_m": r.site_ecef_m + np.array([0.0, 0.0, 2000.0]),
                        "antenna_ecef_m": r.antenna_ecef_m},
     "telescope location (lat 37.2482°, lon -118.2825°) is 2.0 km from DSA-110's site "
     "(lat 37.2339°, lon -118.2825°)"),
    ("band", lambda r: _shifted(r, -700e6),
     "freq_array 728.587–740.306 MHz is outside DSA-110's band 1311.400–1498.900 MHz"),
    ("subband", lambda r: _shifted(r, 3 * 11.71875e6),
     "freq_array 1463.744–1475.463 MHz is not subband sb05's 1428.588–1440.306 MHz (the file "
     "name's subband)"),
    ("channel count", lambda r: {"freqs_hz": np.linspace(1.43e9, 1.44e9, 64),
                                 "channel_widths_hz": np.full(64, 11.71875e6 / 64)},
     "Nfreqs 64 channels per subband: DSA-110's 48 channels average only to 48, 24, 16, 12, "
     "8, 6, 4, 3, 2, 1"),
    ("channel width", lambda r: {"channel_widths_hz": r.channel_widths_hz / 2},
     "channel_width 2929.688 kHz is not DSA-110's 5859.375 kHz for 2 channels per subband"),
    ("circular polarizations", lambda r: {"polarizations": ("rr", "ll")},
     "polarization_array ['rr', 'll'] is not DSA-110's ['xx', 'yy']"),
    ("four polarizations", lambda r: {"polarizations": ("xx", "yy", "xy", "yx")},
     "polarization_array ['xx', 'yy', 'xy', 'yx'] is not DSA-110's ['xx', 'yy']"),
    ("integration time", lambda r: {"integration_times_s": np.array([2.0])},
     "integration_time 2.000 s is not DSA-110's 12.885 s"),
    ("antenna names", lambda r: {"antenna_names": ("Tile011", "Tile012", *r.antenna_names[2:])},
     "antenna_names: 2 of 6 antennas are not pads of data/antennas.csv (Tile011, Tile012)"),
    ("antenna positions", lambda r: {"antenna_ecef_m": _moved(r, 2, 5.0)},
     "antenna_positions: 1 antennas are more than 1 m from their pads in data/antennas.csv "
     "(DSA-003 5.0 m)"),
    ("baseline order", lambda r: {"n_reversed_rows": 30},
     "ant_1_array > ant_2_array in 30 of 42 rows (DSA-110's correlator writes every "
     "baseline with ant_1 <= ant_2)"),
]


@pytest.mark.parametrize("change, problem", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_field_that_differs_is_named(change, problem, good, instrument):
    rec = dataclasses.replace(good, **change(good))
    assert instrument_problems(rec, instrument) == [problem]


@pytest.mark.parametrize("change", [
    {"telescope_name": "ovro_mma"},  # names compare without case
    {"telescope_name": "DSA-110"},
    {"site_ecef_m": None},  # another reference point on the site, 800 m away
    {"antenna_ecef_m": None},  # a resurvey: every antenna 0.5 m off its pad
    {"integration_times_s": np.array([12.8849])},
    {"polarizations": ("yy", "xx")},
    {"subband": None},  # a name without a subband: the band alone is checked
], ids=["case", "simulator-name", "site-800m", "resurvey", "rounded-int", "pol-order",
        "no-subband"])
def test_what_this_array_writes_fits(change, good, instrument):
    if "site_ecef_m" in change:
        change = {"site_ecef_m": good.site_ecef_m + np.array([800.0, 0, 0])}
    if "antenna_ecef_m" in change:
        change = {"antenna_ecef_m": good.antenna_ecef_m + 0.5}
    assert instrument_problems(dataclasses.replace(good, **change), instrument) == []


def test_every_file_the_simulator_writes_fits(tmp_path, instrument):
    """Every pad (inactive ones too) and both channel layouts pass the check."""
    for name, cfg in [("all-pads", {"n_antennas": 117, "channels_per_subband": 1}),
                      ("fine", {"n_antennas": 4, "channels_per_subband": 48})]:
        incoming = tmp_path / name
        simulate(incoming, SimConfig(start=START, minutes=5, dec_deg=33.0, noise=False,
                                     catalog=False, calibrators=False, inject=False,
                                     gains=False, **cfg))
        paths = sorted(incoming.glob("*_sb*.hdf5"))
        assert len(paths) == 16
        for path in paths:
            _, rec = read_header(path, subband=int(path.stem[-2:]))
            assert instrument_problems(rec, instrument) == [], path


# ------------------------------------------------------------------ foreign files
def mwa(start: datetime) -> object:
    """An MWA-like file: another site, band, channels, polarizations, cadence and tiles."""
    rng = np.random.default_rng(11)
    names = [f"Tile{i:03d}" for i in range(11, 17)]
    tel = other_telescope(name="MWA", location=MWA, names=names, diameter_m=4.0,
                          enu_m=np.column_stack([rng.uniform(-700, 700, (6, 2)), np.zeros(6)]))
    freqs = 167.055e6 + 40e3 * np.arange(32)
    return uvdata(start, telescope=tel, freqs_hz=freqs, channel_width_hz=40e3,
                  polarizations=("xx", "xy", "yx", "yy"), integration_s=2.0, n_times=N_TIMES)


def dsa_like(start: datetime, *, tel=None, freqs=None, width=WIDTH, **kw) -> object:
    return uvdata(start, telescope=tel or telescope(N_ANT), n_times=N_TIMES,
                  freqs_hz=subband_freqs(SB, N_CHAN) if freqs is None else freqs,
                  channel_width_hz=width, **kw)


def other_site(start):
    """DSA-110's pads as offsets from the VLA, under DSA-110's name."""
    dsa = telescope(N_ANT)
    return dsa_like(start, tel=other_telescope(
        name="DSA-110", location=VLA, names=dsa.antenna_names,
        ecef_m=dsa.antenna_positions + np.array([VLA.x.value, VLA.y.value, VLA.z.value])))


def other_band(start):
    """A 700 MHz subband (a DSA-2000-like band) of the same width."""
    return dsa_like(start, freqs=subband_freqs(SB, N_CHAN) - 740e6)


def other_channels(start):
    """64 channels over sb05's band: a layout that 48 correlator channels cannot give."""
    lo = subband_freqs(SB, N_CHAN).min() - WIDTH / 2
    width = 2 * WIDTH / 64
    return dsa_like(start, freqs=(lo + (np.arange(64) + 0.5) * width)[::-1], width=width)


def other_antennas(start):
    """OVRO-LWA-like stands at OVRO, under DSA-110's telescope name."""
    rng = np.random.default_rng(5)
    names = [f"LWA-{i:03d}" for i in range(1, N_ANT + 1)]
    return dsa_like(start, tel=other_telescope(
        name="OVRO_DSA", location=OVRO, names=names,
        enu_m=np.column_stack([rng.uniform(-100, 100, (N_ANT, 2)), np.zeros(N_ANT)])))


def moved_antennas(start):
    """DSA-110's names scattered over OVRO, away from their pads (the old test factory)."""
    rng = np.random.default_rng(0)
    return dsa_like(start, tel=other_telescope(
        name="OVRO_DSA", location=OVRO, names=[f"DSA-{i:03d}" for i in range(1, N_ANT + 1)],
        enu_m=np.column_stack([rng.uniform(-600, 600, N_ANT), rng.uniform(-300, 300, N_ANT),
                               rng.uniform(-1, 1, N_ANT)])))


def other_cadence(start):
    """Circular feeds integrating 10 s (a VLA-like correlator setup)."""
    return dsa_like(start, polarizations=("rr", "ll"), integration_s=10.0)


def ant2_first(start):
    """Every cross baseline listed (ant_2, ant_1)."""
    return dsa_like(start, ant2_first=True)


FOREIGN = {
    "mwa": (mwa, ["telescope_name 'MWA'", "telescope location (lat -26.7033°",
                  "Nfreqs 32 channels per subband", "freq_array 167.035–168.315 MHz is outside",
                  "polarization_array ['xx', 'xy', 'yx', "
                  "'yy']", "integration_time 2.000 s", "antenna_names: 6 of 6 antennas"]),
    "site": (other_site, ["telescope location (lat 34.0784°, lon -107.6184°) is",
                          "antenna_positions: 6 antennas are more than 1 m"]),
    "band": (other_band, ["freq_array 688.587–700.306 MHz is outside DSA-110's band"]),
    "channels": (other_channels, ["Nfreqs 64 channels per subband"]),
    "antennas": (other_antennas, ["antenna_names: 6 of 6 antennas are not pads of "
                                  "data/antennas.csv (LWA-001, LWA-002, LWA-003, LWA-004…)"]),
    "positions": (moved_antennas, ["antenna_positions: 6 antennas are more than 1 m from "
                                   "their pads"]),
    "cadence": (other_cadence, ["polarization_array ['rr', 'll']", "integration_time 10.000 s"]),
    "baselines": (ant2_first, ["ant_1_array > ant_2_array in 30 of 42 rows"]),
}


def stamp(t: datetime) -> str:
    return t.strftime(NAME_FORMAT)


def drop(make, incoming: Path, start: datetime, sb: int = SB) -> Path:
    incoming.mkdir(parents=True, exist_ok=True)
    path = incoming / f"{stamp(start)}_sb{sb:02d}.hdf5"
    make(start).write_uvh5(str(path))
    return path


def ingest_and_convert() -> StageRegistry:
    """The shipped ingest task and convert stage, without the stages after them."""
    shipped = default_registry()
    return StageRegistry(stages={"convert": shipped.stages["convert"]}, tasks=shipped.tasks)


def assert_quarantined(path: Path, problems: list[str], store, home) -> None:
    q = store.quarantined_files()
    row = q[q.original_path == str(path)]
    assert len(row) == 1, q
    assert row.stage.iloc[0] == "ingest"
    reason = row.reason.iloc[0]
    assert reason.startswith(f"{path}: ")
    for problem in problems:
        assert problem in reason, reason
    assert reason.endswith("— not DSA-110 data; if it is, correct the writer (or "
                           "data/antennas.csv) and put the file back in incoming/")
    assert not path.exists()
    assert Path(row.quarantine_path.iloc[0]) == home.quarantine / path.name
    assert (home.quarantine / path.name).is_file()


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_foreign_file_alone_is_quarantined_and_nothing_of_it_converted(kind, store, home,
                                                                       clock):
    make, problems = FOREIGN[kind]
    path = drop(make, home.incoming, START)
    runner = Runner(store, home, ingest_and_convert(), clock=clock)
    assert runner.run_once(rescan_after_s=0.1) == {}
    assert_quarantined(path, problems, store, home)
    # Long after the partial timeout, nothing was registered from it.
    clock.advance(3600)
    assert runner.run_once(rescan_after_s=0.1) == {}
    assert store.observations().empty
    assert not home.ms.exists() or list(home.ms.iterdir()) == []
    assert store.recent_jobs(limit=5).empty
    assert len(store.quarantined_files()) == 1


def test_foreign_files_in_a_good_chunk_are_quarantined_and_the_rest_goes_on_partial(
        store, home, clock):
    """The chunk's sb05 is MWA's, and an early 'sb03' from another band came too."""
    good = write_chunk(home.incoming, START, subbands=[s for s in range(16) if s != SB],
                       n_ant=N_ANT, n_chan=N_CHAN, n_times=N_TIMES)
    foreign = [drop(mwa, home.incoming, START + timedelta(seconds=20)),
               # named 40 s early: kept, it would have given the chunk its id
               drop(other_band, home.incoming, START - timedelta(seconds=40), sb=3)]
    runner = Runner(store, home, ingest_and_convert(), clock=clock)
    assert runner.run_once(rescan_after_s=0.1) == {}
    assert_quarantined(foreign[0], FOREIGN["mwa"][1], store, home)
    assert_quarantined(foreign[1], ["freq_array", "outside DSA-110's band"], store, home)
    # sb05 may still come: the chunk waits for it as for any missing subband...
    assert store.observations().empty
    clock.advance(601)
    # ...then goes on without it.
    assert runner.run_once(rescan_after_s=0.1) == {"done": 1}
    obs = store.observation(stamp(START))
    assert (obs.n_subbands, obs.partial, obs.state) == (15, True, "converted")
    assert sorted(obs.files) == sorted(str(p) for p in good)
    row = store._cur.execute("SELECT n_channels, n_antennas FROM observations").fetchone()
    assert row == (15 * N_CHAN, N_ANT)
    assert len(store.observations()) == 1 and len(store.quarantined_files()) == 2


def test_ingester_with_its_own_instrument_judges_by_it(store, home, clock):
    """The check reads what it is given: an instrument with a 2 s cadence keeps MWA's
    cadence and names the rest."""
    base = Instrument.default()
    only_cadence = dataclasses.replace(base, integration_s=2.0)
    path = drop(mwa, home.incoming, START)
    ingester = Ingester(instrument=only_cadence)
    for _ in range(2):
        ingester.scan(TaskContext(store=store, home=home, now=clock()))
    reason = store.quarantined_files().reason.iloc[0]
    assert reason.startswith(f"{path}: telescope_name 'MWA'")
    assert "integration_time" not in reason


# ------------------------------------------------------------------ conversion
def test_conversion_of_ant2_first_files_names_the_file(tmp_path):
    """Should such files ever reach conversion, the error names the file, not the MS."""
    files = [drop(ant2_first, tmp_path / "in", START, sb=sb) for sb in range(2)]
    ms_dir = tmp_path / "ms"
    ms_dir.mkdir()
    with pytest.raises(ValueError, match=re.escape(
            f"{files[0]}: 30 of 42 rows have ant_1 > ant_2, which DSA-110's correlator never "
            "writes")):
        convert_group(files, ms_dir=ms_dir, obs_id="x")
    assert list(ms_dir.iterdir()) == []
