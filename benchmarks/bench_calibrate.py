"""Calibration of one full-size calibrator chunk (96 antennas, 768 channels, 24 integrations).

Simulates a 5-minute transit of 3C48 into a temporary home (about a minute), converts it,
then times flag + model + bandpass + gains + tables + apply (``solve_calibrator_ms``) on a
fresh copy of the MS, on the CPU and, when ``get_backend("gpu")`` works, on the GPU.
Prints the step timings and the QA; asserts nothing. ``--keep DIR`` reuses/keeps the
simulated home in DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def make_home(home: Path) -> Path:
    """A converted full-size 3C48 transit chunk under ``home``; reused if there."""
    done = sorted(home.glob("ms/*.ms"))
    if done:
        return done[0]
    exe = [sys.executable, "-m", "app.cli"] if not shutil.which("contimg") else ["contimg"]
    t0 = time.perf_counter()
    for args in (["simulate", "--transit-of", "3C48", "--minutes", "5", "--antennas", "96",
                  "--channels-per-subband", "48", "--seed", "1"], ["process", "--once"]):
        subprocess.run([*exe, *args, "--home", str(home)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    print(f"simulated and converted in {time.perf_counter() - t0:.0f} s")
    return sorted(home.glob("ms/*.ms"))[0]


def run(ms: Path, work: Path, backend_name: str) -> None:
    from pipeline.backend import get_backend
    from pipeline.calibration.solve_ms import solve_calibrator_ms

    be = get_backend(backend_name)
    copy = work / f"{backend_name}.ms"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ms, copy)
    os.sync()
    t0 = time.perf_counter()
    res = solve_calibrator_ms(copy, calibrator="3C48", out_dir=work / f"cal-{backend_name}",
                              backend=be)
    total = time.perf_counter() - t0
    steps = ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items())
    print(f"{backend_name} ({be.device}): total {total:.1f} s  [{steps}]")
    print(f"  QA: snr {res.qa.snr:.0f}, flagged {100 * res.qa.flagged_fraction:.2f} %, "
          f"antennas lost {res.qa.antennas_lost}, flux ratio {res.qa.flux_ratio:.4f}")
    shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="simulate into / reuse this home")
    args = parser.parse_args()
    from pipeline.backend import gpu_status

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-cal-")
    home = args.keep or Path(tmp.name) / "home"
    try:
        ms = make_home(home)
        print(f"{ms}: {os.cpu_count()} CPU cores")
        run(ms, home.parent if args.keep else Path(tmp.name), "cpu")
        ok, why = gpu_status()
        if ok:
            run(ms, home.parent if args.keep else Path(tmp.name), "gpu")
        else:
            print(f"gpu: skipped ({why})")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
