"""Conversion of one full-size chunk (96 antennas, 16 × 48 channels, 24 integrations).

Prints UVH5 throughput, real-time factor (309 s of data / conversion time) and the peak
memory of the converting child process, then the plain pyuvdata read → phase → write_ms
time on the same files as a peer ratio. Asserts nothing. ``--keep DIR`` reuses/keeps
the chunk in DIR instead of a temporary folder.

The child converts the chunk twice: ``cold`` is a fresh process's first conversion
(imports excluded; numba compiling pyuvdata's baseline helpers and astropy parsing its
IERS tables are in it), ``warm`` the second, as the long-lived server sees every chunk
after its first. Dirty pages are flushed (``os.sync``) before each timed run: a chunk
arrives every 5 minutes, so the 2 GB Measurement Set of the previous one has long
reached the disk, and a run that starts while the kernel is still writing one back is
measuring the previous run's disk, not this one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CHUNK_S = 24 * 12.884901888
START = datetime(2026, 11, 23, 12, 0, 0)
OBS_ID = START.strftime("%Y-%m-%dT%H:%M:%S")


def make_chunk(directory: Path) -> list[Path]:
    from uvh5_factory import write_chunk
    return write_chunk(directory, START, n_ant=96, n_chan=48, n_times=24, seed=1)


def run_contimg(files: list[str], ms_dir: str, queue) -> None:
    from pipeline.convert.stage import convert_group
    out = {}
    for run in ("cold", "warm"):
        shutil.rmtree(Path(ms_dir) / f"{OBS_ID}.ms", ignore_errors=True)
        os.sync()
        t0 = time.perf_counter()
        convert_group(files, ms_dir=Path(ms_dir), obs_id=OBS_ID)
        out[f"{run}_s"] = time.perf_counter() - t0
        out[f"{run}_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def rewrite_as_correlator(src: Path, dst: Path) -> None:
    """Copy a UVH5 file with DSA-110's storage: no compression, one integration per chunk."""
    import h5py
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        fin.copy("Header", fout)
        n_bl = int(fin["Header/Nbls"][()])
        data = fout.create_group("Data")
        for name in ("visdata", "flags", "nsamples"):
            dset = fin["Data"][name]
            out = data.create_dataset(name, dset.shape, dset.dtype,
                                      chunks=(min(n_bl, dset.shape[0]), *dset.shape[1:]))
            for start in range(0, dset.shape[0], 16 * n_bl):
                out[start:start + 16 * n_bl] = dset[start:start + 16 * n_bl]
        for key, value in fin.attrs.items():
            fout.attrs[key] = value


def run_plain(files: list[str], ms_dir: str, queue) -> None:
    import warnings

    import numpy as np
    from pyuvdata import UVData

    from pipeline.instrument.phasing import meridian_icrs_deg, mid_jd, use_bundled_iers
    use_bundled_iers()
    warnings.simplefilter("ignore")
    os.sync()
    t0 = time.perf_counter()
    uvd = UVData()
    uvd.read(files, file_type="uvh5", axis="freq")
    t1 = time.perf_counter()
    uvd.reorder_freqs(channel_order="freq")
    ra, dec = meridian_icrs_deg(mid_jd(uvd.time_array), 33.0, uvd.telescope.location)
    uvd.phase(lon=np.deg2rad(ra[0]), lat=np.deg2rad(dec[0]), cat_name=OBS_ID,
              cat_type="sidereal")
    t2 = time.perf_counter()
    uvd.write_ms(str(Path(ms_dir) / "plain.ms"))
    t3 = time.perf_counter()
    queue.put({"seconds": t3 - t0, "read_s": t1 - t0, "phase_s": t2 - t1, "write_s": t3 - t2,
               "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def in_child(fn, *args) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process: its ru_maxrss is the conversion's own
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="make/keep the chunk here")
    parser.add_argument("--no-plain", action="store_true", help="skip the pyuvdata peer run")
    parser.add_argument("--layout", choices=("pyuvdata", "correlator"), default="correlator",
                        help="storage of the input files: the DSA-110 correlator's "
                        "(uncompressed, chunked by integration; what `contimg simulate` "
                        "writes) or pyuvdata's write_uvh5 defaults (small chunks, lzf "
                        "flags/nsamples)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        incoming = work / "incoming"
        files = sorted(incoming.glob("*_sb*.hdf5"))
        if len(files) != 16:
            t0 = time.perf_counter()
            files = make_chunk(incoming)
            print(f"made a full-size chunk in {time.perf_counter() - t0:.1f} s")
        if args.layout == "correlator":
            recast = work / "correlator"
            recast.mkdir(exist_ok=True)
            for f in files:
                if not (recast / f.name).exists():
                    rewrite_as_correlator(f, recast / f.name)
            files = sorted(recast.glob("*_sb*.hdf5"))
        size_mb = sum(f.stat().st_size for f in files) / 2**20
        names = [str(f) for f in files]
        ms_dir = work / "ms"
        shutil.rmtree(ms_dir, ignore_errors=True)
        ms_dir.mkdir()
        ours = in_child(run_contimg, names, str(ms_dir))
        figures = {
            "layout": args.layout,
            "uvh5_mb": round(size_mb),
            "contimg_cold_s": round(ours["cold_s"], 2),
            "contimg_warm_s": round(ours["warm_s"], 2),
            "throughput_warm_mb_s": round(size_mb / ours["warm_s"], 1),
            "real_time_factor_warm": round(CHUNK_S / ours["warm_s"], 1),
            "peak_rss_cold_mb": round(ours["cold_maxrss_mb"]),
            "peak_rss_mb": round(ours["warm_maxrss_mb"]),
        }
        if not args.no_plain:
            plain = in_child(run_plain, names, str(ms_dir))
            figures.update({
                "pyuvdata_plain_s": round(plain["seconds"], 2),
                "pyuvdata_read_phase_write_s": [round(plain[k], 2)
                                                for k in ("read_s", "phase_s", "write_s")],
                "pyuvdata_peak_rss_mb": round(plain["maxrss_mb"]),
                "speedup_vs_pyuvdata_cold": round(plain["seconds"] / ours["cold_s"], 2),
            })
        print(json.dumps(figures, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
