"""Issue 6's science claim end to end: simulate ≥ 2 h, run the pipeline, check the sources.

    .venv/bin/python benchmarks/validate_sources.py [--chunks 24] [--antennas 24]
        [--channels-per-subband 16] [--home DIR] [--keep]

Simulates ``--chunks`` 5-minute chunks from just before a 3C286 transit (the calibrate stage
needs a calibrator transit to solve on) into a temporary home, runs ingest → convert →
calibrate → image (a cheaper ImagingConfig through the image stage's prepare hook) →
measure with the runner, then prints each injected variable/transient against its source
row, the steady sources' flagged fraction and flux ratio, new-source counts and the wall
time per stage, and writes ``validate_sources.json`` into the home (and ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.home import Home
from pipeline.imaging.config import ImagingConfig
from pipeline.simulate.truth import load_truth
from pipeline.simulate.validation import ScienceCriteria, run_pipeline, science_summary
from pipeline.store import Store

#: Imaging cheap enough for 2 cores: 3 cells per beam over the 3.5° field, CLEAN's default
#: 1000 components. (10 000 components, CLEANing to the auto-threshold, diverged on 6 of 24
#: snapshots of 24 antennas, rms 0.3-1.5 Jy, and lowered fluxes further: see the report.)
BENCH_IMAGING = ImagingConfig(cells_per_beam=3.0, psf_patch=128, backend="cpu")


def report(summary: dict, run: dict) -> None:
    """Print the figures."""
    print(f"images {summary['n_images']} (QA failed {summary['n_images_qa_failed']}), "
          f"BMAJ {summary['bmaj_arcsec']:.1f}″, {summary['freq_hz'] / 1e6:.1f} MHz")
    print("injected → source row: n, η, V, |Vs|max, |m|, flagged")
    for r in summary["injected"]:
        if r["source_id"] is None:
            print(f"  {r['name']:10s} {r['kind']:9s} NOT FOUND in the sources table")
            continue
        print(f"  {r['name']:10s} {r['kind']:9s} → {r['source_id']} {r['source_name']} "
              f"({r['origin']}, {r['sep_arcsec']:.1f}″) n={r['n_meas']} η={r['eta']} "
              f"V={r['v']} Vs={r['vs_max']} m={r['m_max']} flagged={r['flagged']}")
        lc = r["lightcurve"]
        points = zip(lc["flux_jy"], lc["forced"], strict=True)
        print("      lightcurve Jy (* detected):",
              ", ".join(f"{f:.3f}{'' if fo else '*'}" for f, fo in points))
    s = summary["steady"]
    print(f"steady sources judged (n ≥ {summary['criteria']['min_meas']}): {s['n_judged']}, "
          f"flagged {s['n_flagged']} = {s['flagged_fraction']:.2%}")
    for f in s["flagged"][:15]:
        print(f"  flagged {f}")
    print(f"flux: {s['n_flux']} steady sources with median SNR ≥ "
          f"{summary['criteria']['flux_snr']}: median measured/true "
          f"{s['flux_ratio_median']:.4f}, 16–84 % {s['flux_ratio_p16_p84']}, "
          f"within 3 %: {s['flux_ratio_within_3pc']:.0%}")
    print(f"new-source candidates: {summary['n_new_sources']} "
          f"({summary['n_new_sources_injected']} of them injected sources)")
    print("wall s per stage:", {k: round(v, 1) for k, v in run["wall_s"].items()},
          "calls:", run["calls"])
    print("states:", run["states"], "outcomes:", run["outcomes"])
    print("PASSED" if summary["passed"] else f"FAILED: {'; '.join(summary['reasons'])}")


def main() -> int:
    """Run the validation and print/store its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=24)
    ap.add_argument("--antennas", type=int, default=24)
    ap.add_argument("--channels-per-subband", type=int, default=16,
                    help="16 (732 kHz) keeps bandwidth smearing of peak fluxes ≤ 1 %% at 1°")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-apparent-jy", type=float, default=0.005,
                    help="simulate sources at least this bright in the beam (default 5 mJy)")
    ap.add_argument("--home", type=Path, help="use this home (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/validate_sources.json"))
    ap.add_argument("--analyse-only", action="store_true",
                    help="only analyse an already processed --home")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    home = args.home or Path(tempfile.mkdtemp(prefix="contimg-validate-"))
    try:
        if args.analyse_only:
            run = {"wall_s": {}, "calls": {}, "outcomes": {}, "states": {}}
        else:
            run = run_pipeline(home, chunks=args.chunks, antennas=args.antennas,
                               channels=args.channels_per_subband, seed=args.seed,
                               imaging=BENCH_IMAGING, min_apparent_jy=args.min_apparent_jy)
        t = time.perf_counter()
        with Store.open(Home.resolve(home)) as store:
            summary = science_summary(store, load_truth(home), criteria=ScienceCriteria())
        run["wall_s"]["analyse"] = time.perf_counter() - t
        report(summary, run)
        blob = json.dumps({"run": run, "imaging": BENCH_IMAGING.__dict__, **summary},
                          indent=1, default=str)
        (home / "validate_sources.json").write_text(blob)
        if args.out:
            args.out.write_text(blob)
        print(f"summary: {args.out} and {home / 'validate_sources.json'}")
        return 0 if summary["passed"] else 1
    finally:
        if args.home is None and not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
