"""Conversion on real UVH5 files into real Measurement Sets, read back with python-casacore."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import TETE, SkyCoord
from astropy.time import Time
from casacore.tables import table
from conftest import contimg
from pyuvdata import UVData
from uvh5_factory import INT_TIME_S, NAME_FORMAT, OVRO, telescope, write_chunk

from pipeline.convert.ms_writer import write_ms_blocks
from pipeline.convert.stage import convert_group, ms_paths, phase_to_meridian
from pipeline.convert.uvh5_group import (
    Block,
    apply_w_phasor_inplace,
    block_rows,
    iter_phased_blocks,
    open_group,
    read_group,
)
from pipeline.instrument.phasing import meridian_icrs_deg, mid_jd, use_bundled_iers
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, StageRegistry
from pipeline.jobs.scratch import temp_paths
from pipeline.store import Store

START = datetime(2026, 11, 23, 12, 0, 0)
OBS_ID = START.strftime(NAME_FORMAT)
N_ANT, N_CHAN, N_TIMES, DEC = 6, 3, 4, 33.0
N_BL = N_ANT * (N_ANT + 1) // 2  # autocorrelations are kept


@pytest.fixture(scope="package")
def chunk_master(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convert-master")
    write_chunk(root, START, n_ant=N_ANT, n_chan=N_CHAN, n_times=N_TIMES, dec_deg=DEC, seed=4)
    return root


@pytest.fixture
def chunk(chunk_master, tmp_path) -> list[Path]:
    """A private copy of the chunk's 16 files, sb00 (highest frequency) first."""
    return sorted(Path(p) for p in shutil.copytree(chunk_master, tmp_path / "in").glob("*.hdf5"))


@pytest.fixture(scope="package")
def converted_master(chunk_master, tmp_path_factory):
    """The chunk converted once by contimg; tests only read it."""
    ms_dir = tmp_path_factory.mktemp("convert-ms")
    files = sorted(chunk_master.glob("*.hdf5"))
    seen: list[float] = []
    result = convert_group(files, ms_dir=ms_dir, obs_id=OBS_ID, progress=seen.append)
    return result, seen


@pytest.fixture(scope="package")
def reference(chunk_master) -> UVData:
    """pyuvdata's own reading and phasing of the same files, the plain path."""
    use_bundled_iers()
    uvd = UVData()
    uvd.read(sorted(str(p) for p in chunk_master.glob("*.hdf5")), file_type="uvh5", axis="freq")
    uvd.reorder_freqs(channel_order="freq")
    ra, dec = meridian_icrs_deg(mid_jd(uvd.time_array), DEC, uvd.telescope.location)
    uvd.phase(lon=np.deg2rad(ra[0]), lat=np.deg2rad(dec[0]), cat_name=OBS_ID,
              cat_type="sidereal")
    return uvd


def input_freqs(files) -> np.ndarray:
    with_all = [h5py.File(f, "r")["Header/freq_array"][()].ravel() for f in files]
    return np.sort(np.concatenate(with_all))


def test_ms_rows_channels_and_progress(converted_master, chunk_master):
    result, seen = converted_master
    assert result.path.name == f"{OBS_ID}.ms" and not result.reused
    with table(str(result.path), ack=False) as ms:
        assert ms.nrows() == N_BL * N_TIMES
        assert ms.getcol("DATA").shape == (N_BL * N_TIMES, 16 * N_CHAN, 2)
        assert {"DATA", "FLAG", "WEIGHT", "SIGMA", "UVW", "WEIGHT_SPECTRUM"} <= set(ms.colnames())
        assert np.all(ms.getcol("ANTENNA1") <= ms.getcol("ANTENNA2"))
        assert np.count_nonzero(ms.getcol("ANTENNA1") == ms.getcol("ANTENNA2")) == N_ANT * N_TIMES
        assert np.all(ms.getcol("WEIGHT") > 0) and np.all(np.isfinite(ms.getcol("SIGMA")))
    with table(str(result.path / "SPECTRAL_WINDOW"), ack=False) as spw:
        assert spw.nrows() == 1
        freqs = spw.getcol("CHAN_FREQ")[0]
    assert np.all(np.diff(freqs) > 0)
    np.testing.assert_allclose(freqs, input_freqs(chunk_master.glob("*.hdf5")), rtol=0, atol=1e-3)
    assert (result.n_channels, result.n_antennas, result.n_integrations) == (
        16 * N_CHAN, N_ANT, N_TIMES)
    assert result.freq_min_hz == freqs[0] and result.freq_max_hz == freqs[-1]
    # Progress rises from 0 to 1, per subband read and through the write.
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len([f for f in seen if f <= 0.5]) >= 16 and any(0.6 < f < 1 for f in seen)


def test_field_is_the_meridian_at_mid_time(converted_master):
    result, _ = converted_master
    first = Time(START) + (INT_TIME_S / 2) * u.s
    mid = first + (INT_TIME_S * (N_TIMES - 1) / 2) * u.s
    lst = mid.sidereal_time("apparent", longitude=OVRO.lon)
    # The apparent meridian (LST, pointing dec) carried to ICRS, independently of pyuvdata.
    icrs = SkyCoord(ra=lst, dec=DEC * u.deg, frame=TETE(obstime=mid)).icrs
    with table(str(result.path / "FIELD"), ack=False) as field:
        assert field.nrows() == 1
        ra, dec = field.getcol("PHASE_DIR")[0, 0]
        assert field.getcolkeyword("PHASE_DIR", "MEASINFO")["Ref"] in ("ICRS", "J2000")
    assert np.rad2deg(dec) == pytest.approx(icrs.dec.deg, abs=2e-4)
    dra = (np.rad2deg(ra) - icrs.ra.deg + 180) % 360 - 180
    assert abs(dra) * np.cos(dec) < 2e-4
    assert result.mid_mjd == pytest.approx(mid.mjd, abs=1e-8)
    assert result.dec_deg == pytest.approx(DEC)  # the observation keeps the pointing dec


def test_antenna_positions_equal_the_input(converted_master):
    result, _ = converted_master
    tel = telescope(N_ANT, seed=4)
    centre = np.array([OVRO.x.value, OVRO.y.value, OVRO.z.value])
    with table(str(result.path / "ANTENNA"), ack=False) as ant:
        names = list(ant.getcol("NAME"))
        positions = ant.getcol("POSITION")
        unused = ant.getcol("FLAG_ROW")
    # As pyuvdata writes it, the antenna number is the row: DSA numbers start at 1, so
    # row 0 is an unused, flagged filler.
    rows = tel.antenna_numbers
    assert [names[r] for r in rows] == list(tel.antenna_names)
    np.testing.assert_allclose(positions[rows], centre + tel.antenna_positions, rtol=0, atol=1e-6)
    assert unused.tolist() == [True] + [False] * N_ANT and names[0] == ""


def test_data_equal_pyuvdata_phased_data(converted_master, reference):
    result, _ = converted_master
    with table(str(result.path), ack=False) as ms:
        data = ms.getcol("DATA")
        uvw = ms.getcol("UVW")
        flag = ms.getcol("FLAG")
        time_s = ms.getcol("TIME")
    # CASA's sign convention is the conjugate of UVData's, and UVW is negated with it.
    np.testing.assert_allclose(data, np.conj(reference.data_array), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(uvw, -reference.uvw_array, rtol=0, atol=1e-3)
    assert not flag.any()
    np.testing.assert_allclose(np.unique(time_s) / 86400,
                               Time(np.unique(reference.time_array), format="jd").mjd, atol=1e-9)


def test_block_writer_equals_pyuvdata_write_ms(chunk, tmp_path, reference):
    ours, theirs = tmp_path / "ours.ms", tmp_path / "theirs.ms"
    uvd = read_group(chunk)
    phase_to_meridian(uvd, dec_deg=DEC, name=OBS_ID)
    write_ms_blocks(uvd, ours, block_bytes=1000)  # several blocks even for tiny data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.write_ms(str(theirs))
    with table(str(ours), ack=False) as a, table(str(theirs), ack=False) as b:
        assert a.nrows() == b.nrows()
        for col in ("DATA", "FLAG", "WEIGHT_SPECTRUM", "WEIGHT", "ANTENNA1", "ANTENNA2",
                    "TIME", "INTERVAL", "FIELD_ID", "DATA_DESC_ID", "SCAN_NUMBER"):
            np.testing.assert_allclose(a.getcol(col), b.getcol(col), rtol=1e-6, err_msg=col)
        np.testing.assert_allclose(a.getcol("UVW"), b.getcol("UVW"), rtol=0, atol=1e-3)
    for sub, col in (("ANTENNA", "POSITION"), ("SPECTRAL_WINDOW", "CHAN_FREQ"),
                     ("SPECTRAL_WINDOW", "CHAN_WIDTH"), ("FIELD", "PHASE_DIR"),
                     ("POLARIZATION", "CORR_TYPE"), ("DATA_DESCRIPTION", "SPECTRAL_WINDOW_ID")):
        with table(str(ours / sub), ack=False) as a, table(str(theirs / sub), ack=False) as b:
            np.testing.assert_allclose(a.getcol(col), b.getcol(col), rtol=1e-12, err_msg=sub)


def test_rerun_reuses_a_complete_ms_and_clears_a_stale_tmp(chunk, tmp_path):
    ms_dir = tmp_path / "ms"
    ms_dir.mkdir()
    final, tmp = ms_paths(ms_dir, OBS_ID)
    tmp.mkdir()
    (tmp / "table.f0").write_bytes(b"half-written by a killed attempt")
    first = convert_group(chunk, ms_dir=ms_dir, obs_id=OBS_ID)
    assert not tmp.exists() and final.exists() and not first.reused
    inode = final.stat().st_ino
    second = convert_group(chunk, ms_dir=ms_dir, obs_id=OBS_ID)
    assert second.reused and final.stat().st_ino == inode
    assert second.updates() == first.updates()
    assert sorted(p.name for p in ms_dir.iterdir()) == [final.name]


def test_unreadable_subband_fails_naming_the_file(chunk, tmp_path):
    chunk[3].write_bytes(b"not hdf5")
    ms_dir = tmp_path / "ms"
    ms_dir.mkdir()
    with pytest.raises(ValueError, match=f"{chunk[3]}: cannot read as UVH5"):
        convert_group(chunk, ms_dir=ms_dir, obs_id=OBS_ID)
    assert list(ms_dir.iterdir()) == []


def settle(files) -> None:
    """Age files by two minutes, as if they had landed before this process started."""
    old = time.time() - 120
    for f in files:
        os.utime(f, (old, old))


def ingest_and_convert() -> StageRegistry:
    """The shipped ingest task and convert stage, without the stages after them."""
    shipped = default_registry()
    return StageRegistry(stages={"convert": shipped.stages["convert"]}, tasks=shipped.tasks)


def test_runner_takes_pending_to_converted(chunk_master, store, home, clock):
    files = write_chunk(home.incoming, START, n_ant=N_ANT, n_chan=N_CHAN, n_times=N_TIMES,
                        dec_deg=DEC, seed=4)
    runner = Runner(store, home, ingest_and_convert(), clock=clock)
    # run_once scans twice: the second scan sees unchanged sizes, so the group is complete.
    assert runner.run_once(rescan_after_s=0.1) == {"done": 1}
    obs = store.observation(OBS_ID)
    assert obs.state == "converted"
    assert obs.ms_path == str(home.ms / f"{OBS_ID}.ms")
    row = store._cur.execute("SELECT n_channels, n_antennas, n_integrations, freq_min_hz, "
                             "freq_max_hz FROM observations").fetchone()
    assert row[:3] == (16 * N_CHAN, N_ANT, N_TIMES)
    np.testing.assert_allclose(row[3:], input_freqs(files)[[0, -1]])
    job = store.recent_jobs(limit=1).iloc[0]
    assert (job.stage, job.state, job.progress, job.attempts) == ("convert", "done", 1.0, 1)
    assert sorted(p.name for p in home.ms.iterdir()) == [f"{OBS_ID}.ms"]


def test_stage_without_files_fails_with_the_observation_named(store, home, clock):
    store.add_observation(obs_id="bare", start_utc=START, mid_mjd=61367.5, dec_deg=DEC,
                          n_subbands=16, now=START)
    Runner(store, home, default_registry(), clock=clock).run_once()
    obs = store.observation("bare")
    assert obs.state == "pending" and "observation bare: no subband files recorded" in obs.error


SLOW_WRITER = textwrap.dedent("""
    import os, pathlib, sys, time
    from casacore.tables import table
    putcol = table.putcol
    stall_on, marker = os.environ["STALL_ON"], pathlib.Path(os.environ["STALL_MARKER"])
    def slow_putcol(self, *args, **kwargs):  # test-only: hold the write so we can kill it
        if stall_on in self.name():
            marker.touch()       # a column of that MS is being written: kill me now
            time.sleep(600)
        return putcol(self, *args, **kwargs)
    table.putcol = slow_putcol
    from app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_mid_write_then_rerun_converts_each_exactly_once(chunk_master, home, tmp_path):
    home.ensure()
    starts = [START, START + timedelta(minutes=5)]
    ids = [s.strftime(NAME_FORMAT) for s in starts]
    for s in starts:
        settle(write_chunk(home.incoming, s, n_ant=N_ANT, n_chan=N_CHAN, n_times=N_TIMES,
                           dec_deg=DEC, seed=4))
    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 — closed below
    marker = tmp_path / "second-is-writing"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "process", "--once", "--workers", "1",
         "--home", str(home.root)], stdout=log, stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "STALL_ON": ids[1], "STALL_MARKER": str(marker)})
    try:
        # Kill while the second observation is half-written, after the first is done.
        first_ms, _ = ms_paths(home.ms, ids[0])
        second_ms, _ = ms_paths(home.ms, ids[1])
        # The child stalls in its first putcol into the second MS, so the kill always
        # lands mid-write however loaded the machine is (no sleep-then-kill race).
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.01)
        assert first_ms.exists()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    assert child.returncode == -signal.SIGKILL
    assert temp_paths(second_ms) and not second_ms.exists()  # the kill left its temporary MS
    first_inode = first_ms.stat().st_ino

    time.sleep(1.1)  # the killed claim's heartbeat is now older than --stale-after
    result = contimg("process", "--once", "--stale-after", "1", "--home", str(home.root))
    assert result.returncode == 0, result.stderr
    assert "done 1" in result.stdout, result.stdout + result.stderr
    with Store.open(home) as store:
        obs = store.observations()
        jobs = store.recent_jobs()
    jobs = jobs[jobs.stage == "convert"]  # calibrate then waits: no calibrator in this sky
    assert sorted(obs.id) == ids and set(obs.state) == {"converted"}
    assert len(jobs) == 2 and set(jobs.state) == {"done"}
    assert sorted(jobs.observation_id) == ids
    assert dict(zip(jobs.observation_id, jobs.attempts, strict=True)) == {ids[0]: 1, ids[1]: 2}
    assert sorted(p.name for p in home.ms.iterdir()) == [f"{i}.ms" for i in ids]
    assert first_ms.stat().st_ino == first_inode  # the finished one was not redone
    for obs_id in ids:
        with table(str(home.ms / f"{obs_id}.ms"), ack=False) as ms:
            assert ms.nrows() == N_BL * N_TIMES


def test_group_reader_equals_pyuvdata_read(chunk):
    use_bundled_iers()
    ours = read_group(chunk)
    theirs = UVData()
    theirs.read([str(p) for p in chunk], file_type="uvh5", axis="freq")
    theirs.reorder_freqs(channel_order="freq")
    np.testing.assert_array_equal(ours.freq_array, theirs.freq_array)
    np.testing.assert_array_equal(ours.channel_width, theirs.channel_width)
    np.testing.assert_array_equal(ours.data_array, theirs.data_array)
    np.testing.assert_array_equal(ours.flag_array, theirs.flag_array)
    np.testing.assert_array_equal(ours.nsample_array, theirs.nsample_array)
    np.testing.assert_array_equal(ours.uvw_array, theirs.uvw_array)
    assert ours.Nspws == 1 and ours.Nfreqs == 16 * N_CHAN


@pytest.mark.parametrize("w_max_m", [1.0, 3000.0])
def test_float32_phasor_matches_float64(w_max_m):
    rng = np.random.default_rng(9)
    data = (rng.standard_normal((500, 64, 2)) + 1j * rng.standard_normal((500, 64, 2)))
    w = rng.uniform(-w_max_m, w_max_m, 500)
    freqs = np.linspace(1.31e9, 1.50e9, 64)
    expected = data * np.exp(-2j * np.pi * w[:, None, None] * freqs[None, :, None] / 299792458.0)
    ours = data.astype(np.complex64)
    apply_w_phasor_inplace(ours, w, freqs, block_rows=77)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6 * np.abs(data).max())


def test_subband_with_other_baselines_fails_naming_it(chunk, chunk_master, tmp_path):
    with h5py.File(chunk[7], "r+") as f:
        ant2 = f["Header/ant_2_array"]
        ant2[0] = ant2[1]
    with pytest.raises(ValueError, match=f"{chunk[7]}: ant_2_array differs from"):
        read_group(chunk)


def test_row_weights_equal_the_median():
    from pipeline.convert.ms_writer import row_weights
    rng = np.random.default_rng(2)
    nsample = np.ones((50, 7, 2), np.float32)
    nsample[::3] = rng.uniform(0, 1, (17, 7, 2))
    np.testing.assert_array_equal(row_weights(nsample), np.median(nsample, axis=1))


def test_streamed_blocks_equal_the_phased_whole_band(chunk):
    """Descending files read by row blocks (storage order, reversed view) = the whole band."""
    use_bundled_iers()
    whole = read_group(chunk)
    phase_to_meridian(whole, dec_deg=DEC, name=OBS_ID)
    meta, layout = open_group(chunk)
    assert meta.data_array is None
    assert layout.to_ascending == slice(None, None, -1)  # DSA-110: the whole band descends
    assert layout.paths[0].name.endswith("_sb00.hdf5")
    phase_to_meridian(meta, dec_deg=DEC, name=OBS_ID)
    np.testing.assert_array_equal(meta.uvw_array, whole.uvw_array)
    rows = 0
    for block in iter_phased_blocks(layout, delta_w_m=meta.uvw_array[:, 2],
                                    freqs_hz=meta.freq_array, rows_per_block=10):
        span = slice(block.start, block.start + block.data.shape[0])
        np.testing.assert_allclose(block.data, whole.data_array[span], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(block.flags, whole.flag_array[span])
        np.testing.assert_array_equal(block.nsamples, whole.nsample_array[span])
        rows += block.data.shape[0]
    assert rows == N_BL * N_TIMES  # 84 rows in blocks of 10: a short last block too


def _rewrite_datasets(path: Path, change) -> None:
    """Replace the file's Data datasets by ``change(name, array)`` (uncompressed)."""
    with h5py.File(path, "r+") as f:
        for name in ("visdata", "flags", "nsamples"):
            values = change(name, f["Data"][name][()])
            del f["Data"][name]
            f["Data"].create_dataset(name, data=values)


def test_old_shape_and_ascending_files_read_as_pyuvdata_reads_them(chunk):
    """DSA-110's writer keeps the spw axis (Nblts, 1, Nfreqs, Npols); other writers ascend."""
    use_bundled_iers()
    theirs = UVData()
    theirs.read([str(p) for p in chunk], file_type="uvh5", axis="freq")
    theirs.reorder_freqs(channel_order="freq")
    for path in chunk[:8]:
        _rewrite_datasets(path, lambda name, a: a[:, None])
    for path in chunk[8:]:  # these files list their channels ascending
        _rewrite_datasets(path, lambda name, a: a[:, ::-1])
        with h5py.File(path, "r+") as f:
            for key in ("freq_array", "channel_width"):
                if f["Header"][key].shape:
                    f["Header"][key][...] = f["Header"][key][()][..., ::-1]
    ours = read_group(chunk)
    assert isinstance(open_group(chunk)[1].to_ascending, np.ndarray)  # mixed orders
    np.testing.assert_array_equal(ours.freq_array, theirs.freq_array)
    np.testing.assert_array_equal(ours.data_array, theirs.data_array)
    np.testing.assert_array_equal(ours.flag_array, theirs.flag_array)
    np.testing.assert_array_equal(ours.nsample_array, theirs.nsample_array)


def test_block_rows_are_whole_hdf5_chunks(chunk):
    _, layout = open_group(chunk)
    assert layout.n_blt % layout.row_align == 0 or layout.row_align > layout.n_blt
    step = block_rows(layout, block_bytes=1)
    assert step == min(layout.row_align, layout.n_blt)
    assert block_rows(layout, block_bytes=2**40) == layout.n_blt


def test_writer_rejects_blocks_that_miss_rows(chunk, tmp_path):
    uvd = read_group(chunk)
    phase_to_meridian(uvd, dec_deg=DEC, name=OBS_ID)
    short = [Block(start=0, data=uvd.data_array[:5], flags=uvd.flag_array[:5],
                   nsamples=uvd.nsample_array[:5])]
    with pytest.raises(ValueError, match=r"ours\.ms: the blocks held 5 rows, expected 84"):
        write_ms_blocks(uvd, tmp_path / "ours.ms", blocks=short)


def test_row_weights_median_of_mixed_rows_per_polarization():
    from pipeline.convert.ms_writer import row_weights
    nsample = np.ones((4, 5, 2), np.float32)
    nsample[1, :, 0] = 2.0          # constant per pol, different between pols
    nsample[2, 3, 1] = 0.0          # one channel differs in one pol only
    nsample[3] = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.testing.assert_array_equal(row_weights(nsample), np.median(nsample, axis=1))
