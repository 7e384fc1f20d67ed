"""contimg simulate: real UVH5 files read back with pyuvdata, checked against references."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import contimg
from pyuvdata import UVData
from scipy.special import j1

from pipeline.instrument.predict import C_M_S
from pipeline.instrument.sky import (
    Sky,
    load_calibrators,
    load_catalog,
    meridian_icrs,
    perley_butler,
    source_enu,
)
from pipeline.instrument.telescope import DEFAULT_LAYOUT, INTEGRATION_S, load_layout
from pipeline.simulate import SimConfig, load_truth, simulate
from pipeline.simulate.writer import offline_iers

T0 = datetime(2026, 11, 23, 12, 0, 0)
NAME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)_sb(\d\d)\.hdf5$")


def run(tmp_path_factory, name: str, **kw) -> Path:
    incoming = tmp_path_factory.mktemp(name) / "incoming"
    simulate(incoming, SimConfig(**{"start": T0, "minutes": 5, "dec_deg": 33.0, **kw}))
    return incoming


def read(paths) -> UVData:
    with offline_iers():
        uv = UVData()
        # .hdf5 is not an extension pyuvdata recognises: the type must be named
        uv.read([str(p) for p in paths] if isinstance(paths, list) else str(paths),
                file_type="uvh5")
    return uv


def files(incoming: Path) -> list[Path]:
    return sorted(incoming.glob("*.hdf5"), key=lambda p: p.name[-7:])


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory) -> Path:
    return run(tmp_path_factory, "default", n_antennas=6, channels_per_subband=4, seed=3)


def two_sources(dec: float = 33.0) -> Sky:
    with offline_iers():
        ra, _ = meridian_icrs(np.array([2461368.0 + 0.5 * 309.24 / 86400]), dec, load_layout().site)
    return Sky(names=("A", "B"), ra_deg=np.array([ra[0] + 0.3, ra[0] - 0.5]),
               dec_deg=np.array([dec + 0.4, dec - 0.2]), flux_jy=np.array([2.0, 0.7]),
               spectral_index=np.array([-0.7, 0.0]), kind=("catalog", "catalog"))


QUIET = dict(catalog=False, calibrators=False, inject=False, noise=False, gains=False)


@pytest.fixture(scope="module")
def point_sim(tmp_path_factory) -> Path:
    return run(tmp_path_factory, "point", n_antennas=5, channels_per_subband=48,
               extra_sources=two_sources(), **QUIET)


# ------------------------------------------------------------------ file layout
def test_sixteen_files_named_by_timestamp_and_subband(default_sim):
    found = files(default_sim)
    assert len(found) == 16
    stamps = []
    for f in found:
        m = NAME.match(f.name)
        assert m, f.name
        stamps.append(datetime.fromisoformat(m.group(1)))
    assert [int(NAME.match(f.name).group(2)) for f in found] == list(range(16))
    assert all(abs((s - T0).total_seconds()) <= 30 for s in stamps)
    assert len(set(stamps)) > 1                       # they do jitter
    assert not list(default_sim.glob(".*"))           # no temporary files left


def test_each_file_reads_and_sb00_is_highest(default_sim):
    found = files(default_sim)
    centres = []
    for f in found:
        uv = read(f)
        assert uv.Nfreqs == 4 and uv.Ntimes == 24
        assert np.all(np.diff(uv.freq_array) < 0)      # descending within a file
        centres.append(uv.freq_array.mean())
        assert uv.data_array.dtype == np.complex64
    assert np.all(np.diff(centres) < 0)                # sb00 highest, sb15 lowest


def test_files_read_together_cover_the_band(default_sim):
    uv = read(files(default_sim))
    assert uv.Nfreqs == 64
    assert uv.freq_array.min() - uv.channel_width.max() / 2 <= 1311.4e6 + 1
    assert uv.freq_array.max() + uv.channel_width.max() / 2 >= 1498.6e6
    assert uv.Ntimes == 24
    np.testing.assert_allclose(uv.integration_time, INTEGRATION_S)
    np.testing.assert_allclose(np.diff(np.unique(uv.time_array)) * 86400, INTEGRATION_S,
                               atol=1e-4)
    assert abs(np.unique(uv.time_array)[0] - 2461368.0 - 0.5 * INTEGRATION_S / 86400) < 1e-8
    assert list(uv.polarization_array) == [-5, -6]       # XX, YY
    assert uv.Nbls == 6 * 7 // 2                       # autos included


def test_antennas_location_and_pointing(default_sim):
    uv = read(files(default_sim)[0])
    layout = Table.read(DEFAULT_LAYOUT, format="ascii.csv", comment="#")
    by_name = {str(r["name"]): np.array([r["x_m"], r["y_m"], r["z_m"]]) for r in layout}
    tel = uv.telescope
    assert all(re.fullmatch(r"DSA-\d{3}", n) for n in tel.antenna_names)
    xyz = tel.antenna_positions + np.array([tel.location.x.value, tel.location.y.value,
                                            tel.location.z.value])
    for name, pos in zip(tel.antenna_names, xyz, strict=True):
        np.testing.assert_allclose(pos, by_name[name], atol=1e-3)
    assert abs(tel.location.lat.deg - 37.2339) < 1e-6
    assert abs(tel.location.lon.deg + 118.2825) < 1e-6
    assert abs(tel.location.height.value - 1222) < 1e-3
    assert np.isclose(np.degrees(uv.extra_keywords["phase_center_dec"]), 33.0)
    (entry,) = uv.phase_center_catalog.values()
    assert entry["cat_type"] == "unprojected"


def test_antenna_selection_keeps_both_arm_ends():
    layout = load_layout()
    enu = layout.enu_m[layout.select(8)]
    assert np.ptp(enu[:, 0]) > 2000 and np.ptp(enu[:, 1]) > 1200


# ------------------------------------------------------------------ numerics
def airy(theta, freqs):
    x = np.pi * 4.65 * np.sin(theta) * freqs / C_M_S
    return (2 * j1(x) / x) ** 2


def test_visibilities_match_slow_dft(point_sim):
    truth = load_truth(point_sim.parent)
    sky = two_sources()
    pointing = np.array([0, np.cos(np.radians(37.2339)) * np.sin(np.radians(33))
                         - np.sin(np.radians(37.2339)) * np.cos(np.radians(33)),
                         np.sin(np.radians(37.2339)) * np.sin(np.radians(33))
                         + np.cos(np.radians(37.2339)) * np.cos(np.radians(33))])
    for f in files(point_sim)[::5]:
        uv = read(f)
        times = np.unique(uv.time_array)
        with offline_iers():
            enu = source_enu(sky.ra_deg, sky.dec_deg, times, np.unique(uv.lst_array),
                             load_layout().site)
        ref = np.zeros((uv.Nblts, uv.Nfreqs), complex)
        it = np.searchsorted(times, uv.time_array)
        for s in range(2):
            e = enu[s, it]                                        # (nblt, 3)
            theta = np.arccos(e @ pointing)
            flux = sky.flux_jy[s] * (uv.freq_array / 1.4e9) ** sky.spectral_index[s]
            for c, nu in enumerate(uv.freq_array):
                ref[:, c] += flux[c] * airy(theta, nu) * np.exp(
                    2j * np.pi * np.sum(uv.uvw_array * e, axis=1) * nu / C_M_S)
        cross = uv.ant_1_array != uv.ant_2_array       # autos also carry the SEFD
        for p in range(2):
            np.testing.assert_allclose(uv.data_array[cross, :, p], ref[cross], atol=2e-4)
    assert {s["name"] for s in truth.sources} == {"A", "B"}


def test_channel_averaging_tracks_the_pointing(point_sim, tmp_path_factory):
    coarse = run(tmp_path_factory, "coarse", n_antennas=5, channels_per_subband=4,
                 extra_sources=two_sources(), **QUIET)
    fine, avg = read(files(point_sim)[3]), read(files(coarse)[3])
    w = fine.uvw_array[:, 2:] @ np.ones((1, 1))
    p = load_truth(point_sim.parent).data["dec_deg"]
    lat = np.radians(37.2339)
    pt = np.array([0, np.cos(lat) * np.sin(np.radians(p)) - np.sin(lat) * np.cos(np.radians(p)),
                   np.sin(lat) * np.sin(np.radians(p)) + np.cos(lat) * np.cos(np.radians(p))])
    w = fine.uvw_array @ pt
    rot = np.exp(-2j * np.pi * w[:, None] * fine.freq_array[None, :] / C_M_S)
    want = (fine.data_array[:, :, 0] * rot).reshape(fine.Nblts, 4, 12).mean(-1)
    want *= np.exp(2j * np.pi * w[:, None] * avg.freq_array[None, :] / C_M_S)
    np.testing.assert_allclose(avg.freq_array, fine.freq_array.reshape(4, 12).mean(-1))
    cross = fine.ant_1_array != fine.ant_2_array
    np.testing.assert_allclose(avg.data_array[cross, :, 0], want[cross], atol=1e-4)


def test_noise_follows_the_radiometer_equation(tmp_path_factory):
    incoming = run(tmp_path_factory, "noise", n_antennas=6, channels_per_subband=4,
                   catalog=False, calibrators=False, inject=False, gains=False, seed=9)
    uv = read(files(incoming))
    cross = uv.ant_1_array != uv.ant_2_array
    data = uv.data_array[cross]
    sigma = 5800 / np.sqrt(2 * 12 * 244140.625 * INTEGRATION_S)
    assert abs(data.real.std() / sigma - 1) < 0.03
    assert abs(data.imag.std() / sigma - 1) < 0.03
    assert abs(load_truth(incoming.parent).data["noise"]["sigma_jy"] / sigma - 1) < 1e-12
    autos = uv.data_array[~cross]
    assert abs(autos.real.mean() / 5800 - 1) < 0.01
    assert np.all(autos.imag == 0)


def test_gains_applied_are_the_truth_gains(point_sim, tmp_path_factory):
    corrupted = run(tmp_path_factory, "gains", n_antennas=5, channels_per_subband=48,
                    extra_sources=two_sources(), **{**QUIET, "gains": True})
    truth = load_truth(corrupted.parent)
    f = files(corrupted)[7]
    raw, clean = read(f), read(files(point_sim)[7])
    g = truth.gains(np.unique(raw.time_array), raw.freq_array)   # (nant, nt, nchan, npol)
    idx = {n: i for i, n in enumerate(truth.antenna_names)}
    names = dict(zip(raw.telescope.antenna_numbers, raw.telescope.antenna_names, strict=True))
    row = np.flatnonzero((raw.ant_1_array == raw.ant_1_array[1])
                         & (raw.ant_2_array == raw.ant_2_array[1]))   # one cross baseline
    i, j = idx[names[raw.ant_1_array[1]]], idx[names[raw.ant_2_array[1]]]
    want = g[i] * g[j].conj() * clean.data_array[row]
    np.testing.assert_allclose(raw.data_array[row], want, rtol=1e-4, atol=1e-5)
    amp = np.abs(g)
    assert 0.03 < np.ptp(amp[:, 0, :, 0], axis=1).mean() / amp.mean() < 0.4


def test_calibrator_transit_phases_up_to_its_flux(tmp_path_factory):
    cal = load_calibrators()
    i = cal.names.index("3C286")
    with offline_iers():
        ra_now, _ = meridian_icrs(np.array([2461368.0]), 30.5, load_layout().site)
    wait_s = ((cal.ra_deg[i] - ra_now[0]) % 360) / 360 * 86164.09 - 150
    start = (T0 + timedelta(seconds=wait_s)).replace(microsecond=0)
    incoming = tmp_path_factory.mktemp("cal") / "incoming"
    simulate(incoming, SimConfig(start=start, minutes=5, dec_deg=float(cal.dec_deg[i]),
                                 n_antennas=4, catalog=False, inject=False, noise=False,
                                 gains=False))
    truth = load_truth(incoming.parent)
    src = truth.source("3C286")
    assert src["flux_jy"] == pytest.approx(10 ** np.polyval(
        [0.0357, -0.1798, -0.4507, 1.2481], np.log10(1.4)), rel=1e-9)
    assert truth.flux("3C286", 1.4e9, 61000.0) == pytest.approx(src["flux_jy"])
    uv = read(files(incoming)[8])
    with offline_iers():
        uv.phase(ra=np.radians(src["ra_deg"]), dec=np.radians(src["dec_deg"]), cat_name="3C286")
    cross = uv.ant_1_array != uv.ant_2_array
    vis = uv.data_array[cross][..., 0]
    s_nu = perley_butler(src["pb_coeffs"], uv.freq_array)
    assert np.abs(vis.imag).max() < 1e-3 * s_nu.max()      # all the phase was geometry
    assert np.all(vis.real <= s_nu * 1.0001) and np.all(vis.real > 0.8 * s_nu)
    assert np.all(vis.real.max(axis=0) > 0.97 * s_nu)      # near the beam centre at transit


def test_truth_round_trips_and_names_what_was_injected(default_sim):
    truth = load_truth(default_sim.parent)
    assert load_truth(truth.path).data == truth.data
    assert sorted(truth.chunks[0]["files"]) == sorted(p.name for p in default_sim.glob("*.hdf5"))
    kinds = {s["kind"] for s in truth.sources}
    assert {"catalog", "variable", "transient"} <= kinds
    curves = truth.data["lightcurves"]
    assert {"SIM-VAR-1", "SIM-VAR-2", "SIM-VAR-3", "SIM-TRN-1"} <= set(curves)
    assert len(truth.antenna_names) == 6 and truth.gains([2461368.0], [1.4e9]).shape == (6, 1, 1, 2)
    assert truth.data["noise"]["sefd_jy"] == 5800


def test_injected_sources_vary_enough_over_a_longer_run():
    from pipeline.simulate.run import injected_sources
    cfg = SimConfig(start=T0, minutes=60, dec_deg=33.0)
    with offline_iers():
        sky = injected_sources(cfg, np.random.default_rng(0))
    mjd = 61367.5 + np.linspace(0, 12 * 309.24, 200) / 86400
    flux = np.array([sky.flux_at(m) for m in mjd])
    for k in range(3):
        assert np.ptp(flux[:, k]) / flux[:, k].mean() >= 0.3
    on = flux[:, 3] > 0
    assert 0 < on.sum() < len(mjd)
    assert 10 * 60 <= (mjd[on].max() - mjd[on].min()) * 86400 <= 20 * 60


def test_catalog_loads_ours_and_nvss_style_columns(tmp_path):
    sky = load_catalog()
    assert len(sky) > 10_000 and sky.flux_jy.min() >= 0.005
    assert 28 <= sky.dec_deg.min() and sky.dec_deg.max() <= 38
    t = Table({"NVSS": ["J1", "J2"], "RAJ2000": ["13 31 08.29", "01 37 41.30"],
               "DEJ2000": ["+30 30 33.0", "+33 09 35.1"], "S1.4": [15000.0, 16000.0]})
    t["S1.4"].unit = "mJy"
    t.write(tmp_path / "nvss.vot", format="votable")
    other = load_catalog(tmp_path / "nvss.vot")
    np.testing.assert_allclose(other.flux_jy, [15.0, 16.0])
    np.testing.assert_allclose(other.ra_deg[0], 202.7845, atol=1e-3)


# ------------------------------------------------------------------ determinism, CLI
def test_same_seed_same_files(default_sim, tmp_path_factory):
    again = run(tmp_path_factory, "again", n_antennas=6, channels_per_subband=4, seed=3)
    for a, b in zip(files(default_sim)[:3], files(again)[:3], strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(read(a).data_array, read(b).data_array)


def test_cli_writes_two_chunks_and_if_empty_skips(tmp_path):
    home = tmp_path / "h"
    args = ["simulate", "--home", str(home), "--start", "2026-11-23T12:00:00", "--minutes",
            "10", "--dec", "33", "--antennas", "4", "--channels-per-subband", "1"]
    r = contimg(*args)
    assert r.returncode == 0, r.stderr
    assert len(list((home / "incoming").glob("*.hdf5"))) == 32
    assert len(list((home / "incoming" / "truth").glob("*.json"))) == 1
    for extra in ([], ["--live"]):   # neither writes nor plans over what is there
        r = contimg(*args[:4], "2026-11-24T12:00:00", *args[5:], "--if-empty", *extra)
        assert r.returncode == 0 and "nothing simulated" in r.stdout
    assert len(list((home / "incoming").glob("*.hdf5"))) == 32
    assert not (home / "simulation-plan.json").exists()


@pytest.mark.parametrize("bad, match", [
    (["--minutes", "0"], "--minutes must be positive"),
    (["--dec", "-70"], "--dec must be between"),
    (["--antennas", "118"], "--antennas must be between 2 and 117"),
    (["--channels-per-subband", "5"], "must divide 48"),
    (["--start", "yesterday"], "Invalid isoformat"),
])
def test_cli_bad_arguments_one_line_error(tmp_path, bad, match):
    args = {"--start": "2026-11-23T12:00:00", "--minutes": "5", "--dec": "33"}
    args.update(dict(zip(bad[::2], bad[1::2], strict=True)))
    r = contimg("simulate", "--home", str(tmp_path / "h"),
                *[x for kv in args.items() for x in kv])
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and match in r.stderr, r.stderr
    assert not list((tmp_path / "h" / "incoming").glob("*.hdf5"))


def test_cli_centres_a_run_on_a_calibrator_transit(tmp_path):
    from pipeline.instrument.transits import hour_angle_deg
    home = tmp_path / "home"
    # the transit mid-way through the one chunk (as `make run` places it), not mid-run
    result = contimg("simulate", "--home", str(home), "--transit-of", "3C48", "--minutes", "5",
                     "--transit-after", "2.6", "--antennas", "4", "--channels-per-subband",
                     "1", "--start", "2026-11-23T12:00:00")
    assert result.returncode == 0, result.stderr
    [truth] = (home / "incoming" / "truth").glob("*.json")
    start = datetime.fromisoformat(truth.stem)
    ha = hour_angle_deg(24.422083, 33.15975, start + timedelta(minutes=2.6))
    assert min(ha, 360 - ha) < 0.01  # 3C48 on the meridian 2.6 minutes in
    assert start < datetime(2026, 11, 23, 12)
    assert len(list((home / "incoming").glob("*.hdf5"))) == 16
    meta = UVData()
    meta.read(sorted((home / "incoming").glob("*.hdf5"))[0], file_type="uvh5", read_data=False)
    # the array points at 3C48's apparent declination (astropy, true equator) at transit
    from astropy import units as u
    from astropy.coordinates import TETE, SkyCoord
    from astropy.time import Time
    when = Time(start + timedelta(minutes=2.6), scale="utc")
    app = SkyCoord(24.422083 * u.deg, 33.15975 * u.deg).transform_to(TETE(obstime=when))
    assert meta.extra_keywords["pointing_dec_deg"] == pytest.approx(app.dec.deg, abs=2e-3)
