"""A full-size chunk through the pipeline as ``contimg process --once`` runs it, beside WSClean.

Two chunks of 96 antennas × 768 channels × 24 integrations (309 s each), simulated once
and cached under ``--cache`` (default /tmp/contimg-bench-chunk; ``cal/``, ``field-seed1/``
hold the subband files):

- a calibrator transit (3C48 at the phase centre): the calibrate stage solves on it;
- an ordinary field at 06:00 UTC at the same declination (no calibrator in the beam),
  calibrated with the table the first chunk made (the same seed: the same antenna gains).

Every run starts from a fresh home (the cached subband files hard-linked into its
incoming/), runs the shipped registry with a Runner (the calibrator chunk first, then the
ordinary one, as they would arrive) and prints each stage's seconds as the stage
functions ran them (ingest and the store's bookkeeping are outside), their sum and the
real-time factor (309 s / sum). Then, unless ``--no-wsclean``, WSClean (Debian's
``wsclean`` 3.1, installed with apt when missing) images each calibrated MS with the same
parameters (``-use-wgridder -j <cores>``, the pipeline's npix and cell, Briggs 0, niter
1000, mgain 0.8, auto-mask 3, auto-threshold 0.5) and the table gives its time, the ratio
of its time to our image stage, and both residual rms (1.4826 × MAD over the whole
residual image, the same estimator for both). Asserts nothing; prints ``uptime`` first,
since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

CHUNK_S = 309.0
#: the calibrator chunk: the last 3C48 transit before this instant (fixed: the cache is reused)
CAL_BEFORE = "2026-12-02T12:00:00"
FIELD_START = "2026-12-02T06:00:00"
STAGES = ("convert", "calibrate", "image", "measure")
DONE = ".simulated"


def simulate(home: Path, *extra: str) -> None:
    """``contimg simulate`` a full-size 5-minute chunk into ``home``'s incoming/ (once)."""
    if (home / DONE).exists():
        return
    exe = ["contimg"] if shutil.which("contimg") else [sys.executable, "-m", "app.cli"]
    t0 = time.perf_counter()
    subprocess.run([*exe, "simulate", "--home", str(home), "--minutes", "5",
                    "--antennas", "96", "--channels-per-subband", "48", "--seed", "1", *extra],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    (home / DONE).touch()
    print(f"simulated {home.name} in {time.perf_counter() - t0:.0f} s")


def cal_window() -> tuple[datetime, float]:
    """(start, apparent dec) of the calibrator chunk, as ``simulate --transit-of`` picks them."""
    from pipeline.instrument.sky import load_calibrators
    from pipeline.instrument.transits import apparent_position, previous_transit
    cals = load_calibrators()
    i = [n.upper() for n in cals.names].index("3C48")
    ra, dec = float(cals.ra_deg[i]), float(cals.dec_deg[i])
    transit = previous_transit(ra, dec, datetime.fromisoformat(CAL_BEFORE))
    return (transit - timedelta(minutes=2.5)).replace(microsecond=0), \
        apparent_position(ra, dec, transit)[1]


def make_cache(cache: Path, *, ordinary: bool = True) -> dict[str, Path]:
    """The chunks' subband files under ``cache``, simulated when missing."""
    simulate(cache / "cal", "--transit-of", "3C48", "--start", CAL_BEFORE)
    if not ordinary:
        return {"calibrator": cache / "cal"}
    _, dec = cal_window()
    # 06:00 UTC: 3C48 has drifted ~19° past the meridian, no calibrator is in the beam.
    # The same seed: the simulator draws the antenna gains from it (another seed is
    # another instrument, which the calibrator's tables do not calibrate: QA fails)
    simulate(cache / "field-seed1", "--start", FIELD_START, "--dec", f"{dec:.2f}")
    return {"calibrator": cache / "cal", "ordinary": cache / "field-seed1"}


def timed_registry(timings: dict[str, dict[str, float]]):
    """The shipped registry, each stage function timed into ``timings[obs id][stage]``."""
    from pipeline.jobs.default_stages import default_registry
    registry = default_registry()
    for name, fn in list(registry.stages.items()):
        def wrapped(ctx, _fn=fn, _name=name):
            t0 = time.perf_counter()
            try:
                result = _fn(ctx)
            finally:
                timings[ctx.observation.id][_name] = time.perf_counter() - t0
            payload = result.payload
            # the stage's own breakdown: the image stage's, a calibrator solve's
            inner = getattr(payload, "timings", None) or getattr(
                getattr(payload, "solved", None), "timings", None)
            if inner:
                print(f"  {ctx.observation.id} {_name}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in inner.items()))
            return result
        registry.stages[name] = wrapped
    return registry


def process(home: Path, cached: Path, registry) -> None:
    """Link ``cached``'s subband files into ``home``'s incoming/ and run the pipeline once."""
    from pipeline.home import Home
    from pipeline.jobs.runner import Runner
    from pipeline.store import Store
    h = Home.resolve(home)
    h.ensure()
    for f in sorted(cached.glob("incoming/*")):
        if f.is_dir():  # the simulator's truth files
            shutil.copytree(f, h.incoming / f.name, dirs_exist_ok=True)
        else:
            os.link(f, h.incoming / f.name)
    with Store.open(h) as store:
        outcome = Runner(store, h, registry).run_once(rescan_after_s=0.1, parallel=True)
    print(f"  {cached.name}: {outcome}")


def residual_rms(path: Path) -> float:
    """1.4826 × MAD of a residual FITS image (the estimator CLEAN itself uses)."""
    from astropy.io import fits

    from pipeline.backend import cpu_backend
    from pipeline.imaging.clean import robust_rms
    data = np.asarray(fits.getdata(path), np.float32).squeeze()
    return robust_rms(data[np.isfinite(data)], backend=cpu_backend())


def ensure_wsclean() -> str | None:
    """Path of ``wsclean``, installing Debian's package with apt when it is missing."""
    exe = shutil.which("wsclean")
    if exe is None and shutil.which("apt-get"):
        print("wsclean missing: apt-get install -y wsclean")
        subprocess.run(["apt-get", "install", "-y", "wsclean"], check=False,
                       stdout=subprocess.DEVNULL)
        exe = shutil.which("wsclean")
    return exe


def run_wsclean(exe: str, ms: Path, work: Path, *, npix: int, cell_arcsec: float
                ) -> tuple[float, float] | str:
    """(seconds, residual rms Jy) of WSClean on ``ms`` with the pipeline's parameters."""
    from pipeline.backend import cpu_threads
    out = work / f"wsclean-{ms.stem}"
    cmd = [exe, "-quiet", "-size", str(npix), str(npix), "-scale", f"{cell_arcsec:.6f}asec",
           "-weight", "briggs", "0", "-niter", "1000", "-mgain", "0.8", "-auto-mask", "3",
           "-auto-threshold", "0.5", "-use-wgridder", "-j", str(cpu_threads()),
           "-data-column", "CORRECTED_DATA", "-name", str(out), str(ms)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if done.returncode:
        return f"failed: {done.stderr.strip()[-200:]}"
    return dt, residual_rms(Path(f"{out}-residual.fits"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/contimg-bench-chunk"))
    parser.add_argument("--no-wsclean", action="store_true", help="skip the WSClean rows")
    parser.add_argument("--only", choices=("calibrator", "both"), default="both",
                        help="process only the calibrator chunk (faster)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's home (its MS, images) under --cache")
    args = parser.parse_args()
    from pipeline.process_tuning import configure_process

    configure_process()  # as contimg's own processes run
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    chunks = make_cache(args.cache.absolute(), ordinary=args.only == "both")
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache))
    timings: dict[str, dict[str, float]] = defaultdict(dict)
    try:
        registry = timed_registry(timings)
        home = tmp / "home"
        obs_of: dict[str, str] = {}
        for label, cached in chunks.items():
            before = set(timings)
            process(home, cached, registry)
            new = [o for o in timings if o not in before]
            if new:
                obs_of[label] = new[0]
        print(f"\n{'chunk':12s}" + "".join(f"{s:>11s}" for s in STAGES)
              + f"{'sum':>9s}{'× real time':>13s}")
        for label, obs in obs_of.items():
            t = timings[obs]
            total = sum(t.get(s, 0.0) for s in STAGES)
            print(f"{label:12s}" + "".join(f"{t.get(s, float('nan')):11.1f}" for s in STAGES)
                  + f"{total:9.1f}{CHUNK_S / total:12.2f}×")
        if args.no_wsclean:
            return
        exe = ensure_wsclean()
        if exe is None:
            print("WSClean: not installed and apt-get could not install it")
            return
        version = subprocess.run([exe, "-version"], capture_output=True, text=True)
        print(f"\n{(version.stdout.strip().splitlines() or ['wsclean'])[0][:60]}, same MS "
              "and parameters:")
        print(f"{'chunk':12s}{'npix':>6s}{'cell″':>7s}{'ours s':>8s}{'WSClean s':>11s}"
              f"{'ratio':>8s}{'our rms mJy':>13s}{'WSClean mJy':>13s}{'Δ rms':>8s}")
        for label, obs in obs_of.items():
            safe = obs.replace(":", "_")
            ours = sorted((home / "images").glob("*/*.residual.fits"))
            ours = [p for p in ours if p.parent.name == safe] or ours
            ms = [p for p in (home / "ms").glob("*.ms")
                  if p.stem.replace(":", "_") in safe or safe in p.stem.replace(":", "_")]
            if not ours or not ms:
                print(f"{label:12s} no image or MS found")
                continue
            from astropy.io import fits
            hdr = fits.getheader(ours[0])
            npix, cell = int(hdr["NAXIS1"]), abs(float(hdr["CDELT1"])) * 3600
            got = run_wsclean(exe, ms[0], tmp, npix=npix, cell_arcsec=cell)
            if isinstance(got, str):
                print(f"{label:12s} WSClean {got}")
                continue
            ws_s, ws_rms = got
            our_rms = residual_rms(ours[0])
            img_s = timings[obs]["image"]
            print(f"{label:12s}{npix:6d}{cell:7.2f}{img_s:8.1f}{ws_s:11.1f}"
                  f"{ws_s / img_s:7.2f}×{our_rms * 1e3:13.4f}{ws_rms * 1e3:13.4f}"
                  f"{(our_rms / ws_rms - 1) * 100:+7.2f}%")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
