"""Calibration of one full-size calibrator chunk (96 antennas, 768 channels, 24 integrations).

Simulates a 5-minute transit of 3C48 into a home (about a minute) and converts it with a
convert-only run (the shipped ingest task and convert stage, none of the stages after
them: ``contimg process --once`` would calibrate it too). Then it calibrates fresh copies
of the MS with ``solve_calibrator_ms`` and prints the time of each step (read, flag,
model, bandpass, gains, tables, apply, qa; the model is computed on a second thread
while the main one reads and flags, so ``model`` is what is left to wait for after
flagging and ``model_thread`` the thread's own time), the wall total and the process's
CPU time (both cores; on a shared machine the CPU time is the steadier figure):
``cold`` is this process's first solve
(catalog parsing, IERS tables and first-call costs in it), ``warm`` the second, as the
long-lived server sees every transit after its first. Runs on the CPU and, when
``get_backend("gpu")`` works, on the GPU. Prints the QA; asserts nothing. Then the
tables are applied, after robust flagging, to another copy as to every other
observation, and that time is printed too. ``--keep DIR``
makes the home in DIR, or reuses the one already there.

The issue's target: flag + model + bandpass + gains + tables + apply within 15 s on the
2-core reference machine.
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

STEPS = ("read", "flag", "model", "bandpass", "gains", "tables", "apply", "qa", "model_thread")
TARGET_STEPS = ("flag", "model", "bandpass", "gains", "tables", "apply")


def convert_only(home: Path) -> None:
    """Ingest and convert what is in ``home``'s incoming/, nothing after conversion."""
    from pipeline.home import Home
    from pipeline.jobs.default_stages import default_registry
    from pipeline.jobs.runner import Runner, StageRegistry
    from pipeline.store import Store

    shipped = default_registry()
    registry = StageRegistry(stages={"convert": shipped.stages["convert"]},
                             tasks=shipped.tasks)
    h = Home.resolve(home)
    for sub in ("incoming", "ms", "caltables"):
        (h.root / sub).mkdir(parents=True, exist_ok=True)
    with Store.open(h) as store:
        outcome = Runner(store, h, registry).run_once(rescan_after_s=0.1)
    print(f"convert-only run: {outcome}")


def make_home(home: Path) -> Path:
    """A converted full-size 3C48 transit chunk under ``home``; reused if there."""
    done = sorted(home.glob("ms/*.ms"))
    if done:
        return done[0]
    t0 = time.perf_counter()
    if not any(home.glob("incoming/*.hdf5")):
        exe = ["contimg"] if shutil.which("contimg") else [sys.executable, "-m", "app.cli"]
        subprocess.run([*exe, "simulate", "--home", str(home), "--transit-of", "3C48",
                        "--minutes", "5", "--antennas", "96", "--channels-per-subband", "48",
                        "--seed", "1"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        print(f"simulated in {time.perf_counter() - t0:.0f} s")
    t1 = time.perf_counter()
    convert_only(home)
    print(f"converted in {time.perf_counter() - t1:.0f} s")
    found = sorted(home.glob("ms/*.ms"))
    if not found:
        raise SystemExit(f"{home}: the convert-only run produced no Measurement Set")
    return found[0]


def run(ms: Path, work: Path, backend_name: str, label: str):
    from pipeline.backend import get_backend
    from pipeline.calibration.solve_ms import solve_calibrator_ms

    be = get_backend(backend_name)
    copy = work / f"{backend_name}-{label}.ms"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ms, copy)
    os.sync()   # the copy's dirty pages are not this run's disk time
    t0, c0 = time.perf_counter(), time.process_time()
    res = solve_calibrator_ms(copy, calibrator="3C48", out_dir=work / f"cal-{backend_name}",
                              backend=be)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    tm = res.timings
    steps = "  ".join(f"{k} {tm[k]:5.2f}" for k in STEPS if k in tm)
    target = sum(tm.get(k, 0.0) for k in TARGET_STEPS)
    print(f"{backend_name} {label:4s} ({be.device}): total {total:6.2f} s (cpu {cpu:6.2f} s), "
          f"flag..apply {target:6.2f} s (target 15)  [{steps}]")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  QA: snr {res.qa.snr:.0f}, flagged {100 * res.qa.flagged_fraction:.2f} %, "
          f"antennas lost {res.qa.antennas_lost}, flux ratio {res.qa.flux_ratio:.4f}")
    shutil.rmtree(copy, ignore_errors=True)
    return res


def run_apply(ms: Path, work: Path, res, backend_name: str) -> None:
    """What every other observation costs: robust flagging + applying the tables."""
    from pipeline.backend import get_backend
    from pipeline.calibration.apply import apply_calibration
    from pipeline.calibration.caltables import read_caltable

    copy = work / f"{backend_name}-target.ms"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ms, copy)
    os.sync()
    bandpass, gains = read_caltable(res.b_table), read_caltable(res.g_table)
    t0 = time.perf_counter()
    stats = apply_calibration(copy, bandpass=bandpass, gains=gains, flagger="robust",
                              backend=get_backend(backend_name))
    print(f"{backend_name} flag + apply as for a target observation: "
          f"{time.perf_counter() - t0:6.2f} s (flagged {100 * stats.flagged_fraction_after:.3f} %)")
    shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="make the home in / reuse it from this DIR")
    args = parser.parse_args()
    from pipeline.backend import gpu_status
    from pipeline.process_tuning import configure_process

    configure_process()  # as contimg's own processes run
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-cal-")
    home = args.keep.absolute() if args.keep else Path(tmp.name) / "home"
    work = Path(tempfile.mkdtemp(prefix="bench-cal-work-", dir=home.parent))
    try:
        ms = make_home(home)
        print(f"{ms}: {os.cpu_count()} CPU cores")
        ok, why = gpu_status()
        for name in ("cpu", "gpu") if ok else ("cpu",):
            for label in ("cold", "warm"):
                res = run(ms, work, name, label)
            run_apply(ms, work, res, name)
        if not ok:
            print(f"gpu: skipped ({why})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
