"""Conversion of one full-size chunk (96 antennas, 16 × 48 channels, 24 integrations).

Prints UVH5 throughput, real-time factor (309 s of data / conversion time) and the peak
memory of the converting child process, then the plain pyuvdata read → phase → write_ms
time on the same files as a peer ratio. Asserts nothing. ``--keep DIR`` reuses/keeps
the chunk in DIR instead of a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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
    from pipeline.convert import convert_group
    t0 = time.perf_counter()
    convert_group(files, ms_dir=Path(ms_dir), obs_id=OBS_ID)
    queue.put({"seconds": time.perf_counter() - t0,
               "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_plain(files: list[str], ms_dir: str, queue) -> None:
    import warnings

    import numpy as np
    from pyuvdata import UVData

    from pipeline.phasing import meridian_ra_deg, mid_jd, use_bundled_iers
    use_bundled_iers()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    uvd = UVData()
    uvd.read(files, file_type="uvh5", axis="freq")
    t1 = time.perf_counter()
    uvd.reorder_freqs(channel_order="freq")
    ra = meridian_ra_deg(mid_jd(uvd.time_array), uvd.telescope.location)
    uvd.phase(lon=np.deg2rad(ra), lat=np.deg2rad(33.0), cat_name=OBS_ID, cat_type="sidereal")
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
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        incoming = work / "incoming"
        files = sorted(incoming.glob("*_sb*.hdf5"))
        if len(files) != 16:
            t0 = time.perf_counter()
            files = make_chunk(incoming)
            print(f"made a full-size chunk in {time.perf_counter() - t0:.1f} s")
        size_mb = sum(f.stat().st_size for f in files) / 2**20
        names = [str(f) for f in files]
        ms_dir = work / "ms"
        shutil.rmtree(ms_dir, ignore_errors=True)
        ms_dir.mkdir()
        ours = in_child(run_contimg, names, str(ms_dir))
        figures = {
            "uvh5_mb": round(size_mb),
            "contimg_s": round(ours["seconds"], 2),
            "throughput_mb_s": round(size_mb / ours["seconds"], 1),
            "real_time_factor": round(CHUNK_S / ours["seconds"], 1),
            "peak_rss_mb": round(ours["maxrss_mb"]),
        }
        if not args.no_plain:
            plain = in_child(run_plain, names, str(ms_dir))
            figures.update({
                "pyuvdata_plain_s": round(plain["seconds"], 2),
                "pyuvdata_read_phase_write_s": [round(plain[k], 2)
                                                for k in ("read_s", "phase_s", "write_s")],
                "pyuvdata_peak_rss_mb": round(plain["maxrss_mb"]),
                "speedup_vs_pyuvdata": round(plain["seconds"] / ours["seconds"], 2),
            })
        print(json.dumps(figures, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
