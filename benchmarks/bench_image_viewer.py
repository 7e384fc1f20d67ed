"""What opening a full-size image in the viewer costs on the server, step by step.

Writes a 4096² × 3″ SIN image (noise plus the reference catalog's sources in the field)
into a temporary home, registers it, and times what ``ImageViewer`` does when an image is
opened and on each zoom: read the FITS plane, find the reference sources on it, the
display-range percentiles, and one datashader rasterization to a 900×800 screen tile with
RA/Dec for the hover. Prints seconds; asserts nothing. ``--npix N`` changes the size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main() -> None:
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    from pipeline.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npix", type=int, default=4096)
    ap.add_argument("--cell-arcsec", type=float, default=3.0)
    args = ap.parse_args()
    n = args.npix
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        w = WCS(naxis=4)
        w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
        w.wcs.crval = [30.0, 33.0, 1.405e9, 1.0]
        w.wcs.crpix = [n / 2 + 1, n / 2 + 1, 1, 1]
        w.wcs.cdelt = [-args.cell_arcsec / 3600, args.cell_arcsec / 3600, 1.9e8, 1.0]
        h = w.to_header()
        h["BMAJ"], h["BMIN"], h["BPA"], h["BUNIT"] = 20 / 3600, 15 / 3600, 10.0, "JY/BEAM"
        data = np.random.default_rng(1).normal(0, 1e-3, (1, 1, n, n)).astype(np.float32)
        path = Path(tmp) / "big.fits"
        fits.PrimaryHDU(data, h).writeto(path)
        with Store.open(home) as store:
            image_id = store.add_image(observation_id="bench", path=str(path), mid_mjd=61367.25,
                                       now=datetime(2026, 11, 23), dec_deg=33.0, rms_jy=1e-3)
            store.reference_catalog()  # parsed once per server; not part of opening
            timings = {}
            t = time.perf_counter()
            plane = store.image_plane(image_id)
            timings["read FITS plane"] = time.perf_counter() - t
            t = time.perf_counter()
            sources = store.reference_sources(image_id, plane=plane)
            timings[f"reference sources ({len(sources)})"] = time.perf_counter() - t
            from views.image_viewer import CLIPS, clip_levels, with_world
            t = time.perf_counter()
            levels = {k: clip_levels(plane.data, v) for k, v in CLIPS.items()}
            timings["display percentiles (5 clips)"] = time.perf_counter() - t
            import holoviews as hv
            import holoviews.plotting.bokeh  # noqa: F401
            from holoviews.operation.datashader import rasterize
            base = hv.Image((np.arange(n), np.arange(n), plane.data), kdims=["x", "y"],
                            vdims=["value"])
            for label in ("rasterize + RA/Dec, first", "rasterize + RA/Dec, again"):
                t = time.perf_counter()
                tile = rasterize(base, width=900, height=800, dynamic=False, aggregator="mean")
                with_world(tile, plane=plane, lo=levels["99.5 %"][0], hi=levels["99.5 %"][1],
                           scaling="asinh")
                timings[label] = time.perf_counter() - t
    print(f"image viewer, {n}² × {args.cell_arcsec:g}″ image:")
    for label, seconds in timings.items():
        print(f"  {label:34s} {seconds:7.3f} s")


if __name__ == "__main__":
    main()
