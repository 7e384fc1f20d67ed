"""Photometry at scale: lightcurve queries, forced photometry per image, streaming memory.

1. Lightcurve query p50/p95 (``Store.lightcurve``) over ``--rows`` synthetic photometry
   rows (default 10 M) in a real store: images of 10 k consecutive sources (a drift scan's
   field moves through RA, and source ids follow RA), appended image by image, measured
   as appended, after ``resort_photometry_tail`` and with a day of fresh appends after it
   (target p95 ≤ 5 ms). Also the cost of recording one image through
   ``record_photometry`` (10 k rows + the variability update from the running aggregates)
   at 10 M rows and at ``--rows``, new and re-measured (target ≤ 0.2 s, flat in N).
2. Forced photometry time for 1000 positions on a 2048² image (target ≤ 2 s), and the
   whole ``measure_image`` (FITS read, forced fit, blind detection).
3. Peak memory over a stream of ``--images`` measured and recorded images (default 200):
   RSS after each, which must not grow with the number of images.

Asserts nothing; prints figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from photometry_factory import FakeField, correlated_noise  # noqa: E402

from pipeline.photometry.forced import (  # noqa: E402
    PhotometryConfig,
    forced_photometry,
    read_image,
)
from pipeline.photometry.stage import measure_image  # noqa: E402
from pipeline.store import Store  # noqa: E402

NOW = datetime(2026, 11, 23)
ROWS_PER_IMAGE = 10_000


def rss_mb() -> float:
    """Current resident set size, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(a, q) -> float:
    """Percentile in ms."""
    return float(np.percentile(np.asarray(a) * 1e3, q))


# ------------------------------------------------------------------ 1. lightcurves
N_SOURCES = 54_000
IMAGES_PER_DAY = 288
_NO_NEW = ("name", "ra_deg", "dec_deg", "flux_jy", "flux_err_jy", "snr", "local_rms_jy", "pb")


def append_images(cur, first: int, last: int, *, batch: int = 100,
                  table: str = "photometry_recent") -> None:
    """Append synthetic images [first, last) in one INSERT ... SELECT per ``batch`` images.

    Image k covers ids [start_k, start_k + 10 k): the field drifts through RA. Each image's
    rows are in source order, as ``record_photometry`` writes them, into ``table``: the
    indexed table of recent rows as it does, or photometry_sorted for a history appended
    before migration 0013 (a 100 M-row ART index is not what a nightly re-sort leaves).
    """
    step = max(1, (N_SOURCES - ROWS_PER_IMAGE) // 400)
    for lo in range(first, last, batch):
        hi = min(lo + batch, last)
        cur.execute(
            f"""INSERT INTO {table} (source_id, image_id, mjd, flux_jy, flux_err_jy,
                    snr, forced, local_rms_jy, background_jy, pb, flags)
                SELECT 1 + (((i * {step}) % {N_SOURCES - ROWS_PER_IMAGE}) + j) AS source_id,
                       i AS image_id, 61000 + i / 288.0, 0.05 + random() * 1e-3, 1e-3,
                       50.0, true, 1e-3, 0.0, 0.8, 0
                FROM range({lo}, {hi}) t(i), range({ROWS_PER_IMAGE}) s(j)
                ORDER BY i, source_id""")
        cur.execute(f"INSERT INTO photometry_runs SELECT i, 'obs' || i, 61000 + i / 288.0, "
                    f"{ROWS_PER_IMAGE}, 0, 0, false, now()::TIMESTAMP "
                    f"FROM range({lo}, {hi}) t(i)")


def fill_variability(cur) -> float:
    """Variability rows with their running aggregates for every source, in one SQL pass.

    The synthetic fluxes vary by < 2 %, so no pair passes the |m| cut: vs_max = m_max = 0
    is the exact pair maximum (a full pair recompute would cost N² per source).
    Returns the seconds it took.
    """
    t = time.perf_counter()
    cur.execute("DELETE FROM variability")
    cur.execute(
        """INSERT INTO variability (source_id, n_meas, wmean_jy, eta, v, vs_max, m_max,
               is_variable, updated_utc, mean_jy, max_jy, min_jy, max_snr, n_detected,
               first_mjd, last_mjd, ref_jy, sum_w, sum_wd, sum_wdd, sum_d, sum_dd, min_err_jy)
           SELECT source_id, count(*), sum(flux_jy / flux_err_jy ^ 2) / sum(flux_err_jy ^ -2),
                  NULL, stddev_samp(flux_jy) / avg(flux_jy), 0, 0, false, now()::TIMESTAMP,
                  avg(flux_jy), max(flux_jy), min(flux_jy), max(snr),
                  count(*) FILTER (WHERE snr >= 5), min(mjd), max(mjd), 0.05,
                  sum(flux_err_jy ^ -2), sum((flux_jy - 0.05) / flux_err_jy ^ 2),
                  sum((flux_jy - 0.05) ^ 2 / flux_err_jy ^ 2), sum(flux_jy - 0.05),
                  sum((flux_jy - 0.05) ^ 2), min(flux_err_jy)
           FROM photometry GROUP BY source_id""")
    return time.perf_counter() - t


#: The lightcurve query as it was before (sorted by DuckDB, converted by ``.df()``): the
#: peer ``time_lightcurves`` times alternately with ``Store.lightcurve``.
REFERENCE_LIGHTCURVE = ("SELECT mjd, flux_jy, flux_err_jy, snr, forced, image_id FROM photometry "
                        "WHERE source_id = {sid} ORDER BY mjd, image_id")


def time_lightcurves(store: Store, ids: np.ndarray, label: str) -> None:
    """Print lightcurve p50/p95 over ``ids``: ``Store.lightcurve`` and, query by query in
    turn with it (ratios under the same load), the reference query and ``Store.lightcurve``
    with index scans off (the recent rows read by zone maps, as before migration 0013)."""
    cur = store._cur

    def no_index(sid: int) -> pd.DataFrame:
        return store.lightcurve(sid)

    ways = {"lightcurve": lambda sid: store.lightcurve(sid),
            "reference": lambda sid: cur.execute(REFERENCE_LIGHTCURVE.format(sid=sid)).df(),
            "no index": no_index}
    for way in ways.values():
        way(int(ids[0]))  # warm the cache
    times = {name: [] for name in ways}
    sizes = []
    for sid in ids:
        for name, way in ways.items():
            if name == "no index":  # set outside the timing
                cur.execute("SET index_scan_max_count = 0")
                cur.execute("SET index_scan_percentage = 0")
            t = time.perf_counter()
            lc = way(int(sid))
            times[name].append(time.perf_counter() - t)
            if name == "no index":
                cur.execute("RESET index_scan_max_count")
                cur.execute("RESET index_scan_percentage")
        sizes.append(len(lc))
    new = times["lightcurve"]
    peers = "; ".join(
        f"{name} p50 {pct(ts, 50):.1f} ms, p95 {pct(ts, 95):.1f} ms "
        f"(median ratio {np.median(ts) / np.median(new):.2f}×)"
        for name, ts in times.items() if name != "lightcurve")
    print(f"lightcurve {label}: p50 {pct(new, 50):.1f} ms, p95 {pct(new, 95):.1f} ms "
          f"(target p95 ≤ 5 ms); {peers}; {np.mean(sizes):.0f} points per source, "
          f"{len(ids)} queries, load {os.getloadavg()[0]:.1f}", flush=True)


def time_records(store: Store, n_rows: int, next_image: int, *, repeats: int = 5) -> int:
    """Print the time of ``record_photometry`` (10 k rows + variability) for new and
    re-measured images; returns the next free image id."""
    field = store._df("SELECT id FROM sources WHERE id BETWEEN 20000 AND 29999").id
    rng = np.random.default_rng(next_image)
    no_new = pd.DataFrame({c: [] for c in _NO_NEW})
    times = {"new image": [], "re-measured image": []}
    for k in range(repeats):
        rows = pd.DataFrame({"source_id": field.to_numpy(),
                             "flux_jy": 0.05 + rng.random(len(field)) * 1e-3,
                             "flux_err_jy": 1e-3, "snr": 50.0, "local_rms_jy": 1e-3,
                             "background_jy": 0.0, "pb": 0.8, "flags": 0, "forced": True})
        for label, image_id in (("new image", next_image + k), ("re-measured image",
                                                                next_image + k)):
            t = time.perf_counter()
            store.record_photometry(image_id=image_id, observation_id=f"bench{image_id}",
                                    mjd=62000.0 + k / 288, rows=rows, new_sources=no_new,
                                    n_islands=0, now=NOW)
            times[label].append(time.perf_counter() - t)
    for label, ts in times.items():
        print(f"record_photometry at {n_rows / 1e6:.0f} M rows, {label} of {len(field)} rows "
              f"with variability update: median {np.median(ts):.3f} s, max {max(ts):.3f} s "
              f"over {repeats} (target ≤ 0.2 s)", flush=True)
    return next_image + repeats


def bench_lightcurves(home: Path, n_rows: int, n_queries: int) -> None:
    """Fill a store with ``n_rows`` rows; time records at 10 M and ``n_rows``, and
    lightcurves as appended, after the re-sort and with a day of fresh appends."""
    n_images = n_rows // ROWS_PER_IMAGE
    with Store.open(home) as store:
        t0 = time.perf_counter()
        cat = pd.DataFrame({"name": [f"S{i:06d}" for i in range(N_SOURCES)],
                            "ra_deg": np.linspace(0, 360, N_SOURCES, endpoint=False),
                            "dec_deg": 33.0, "flux_jy": 0.05, "spectral_index": -0.7})
        store.add_catalog_sources(cat, now=NOW)
        cur = store._cur
        spare = 10 * n_images + 1_000_000  # image ids of benchmark records, past any fill
        marks = sorted({min(n_images, 1000), n_images})  # 10 M rows, then all
        done = 0
        for mark in tqdm(marks, desc="fill", unit="stage"):
            append_images(cur, done, mark, table="photometry_sorted")
            done = mark
            n = cur.execute("SELECT count(*) FROM photometry").fetchall()[0][0]
            print(f"store: {n / 1e6:.1f} M photometry rows in {done} images, "
                  f"{time.perf_counter() - t0:.0f} s so far; variability aggregates filled in "
                  f"{fill_variability(cur):.1f} s", flush=True)
            spare = time_records(store, n, spare)
        rng = np.random.default_rng(0)
        ids = rng.integers(1, N_SOURCES - ROWS_PER_IMAGE, n_queries)
        time_lightcurves(store, ids, "as appended (sorted within each image)")
        t = time.perf_counter()
        moved = store.resort_photometry_tail()
        print(f"resort_photometry_tail: {moved / 1e6:.1f} M rows in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        time_lightcurves(store, ids, "after resort_photometry_tail")
        t = time.perf_counter()
        append_images(cur, n_images, n_images + IMAGES_PER_DAY)
        print(f"a day of appends: {IMAGES_PER_DAY} images, "
              f"{IMAGES_PER_DAY * ROWS_PER_IMAGE / 1e6:.2f} M rows in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        time_lightcurves(store, ids, "re-sorted, then a day of fresh appends")
        n = cur.execute("SELECT count(*) FROM photometry").fetchall()[0][0]
        time_records(store, n, spare)


# ------------------------------------------------------------ 2. forced photometry
def fake_image(path: Path, field: FakeField, n_src: int, *, seed: int) -> dict:
    """Write a restored image with ``n_src`` random sources and its residual."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    margin = 14
    x = rng.uniform(margin, field.npix - margin, n_src)
    y = rng.uniform(margin, field.npix - margin, n_src)
    ra, dec = field.wcs().all_pix2world(x, y, 0)
    noise = correlated_noise(field, 1e-3, rng)
    img = noise.copy()
    p, half = field.precision(), 12
    for xi, yi, s in zip(x, y, rng.uniform(0.005, 0.1, n_src), strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
        dx, dy = xx - xi, yy - yi
        img[iy - half:iy + half + 1, ix - half:ix + half + 1] += s * np.exp(
            -0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy))
    h = field.header()
    fits.PrimaryHDU(img.astype(np.float32)[None, None], header=h).writeto(path, overwrite=True)
    res = path.with_name(path.stem + "-residual.fits")
    fits.PrimaryHDU(noise.astype(np.float32)[None, None], header=h).writeto(res, overwrite=True)
    return {"path": str(path), "residual_path": str(res), "ra": np.asarray(ra),
            "dec": np.asarray(dec)}


def bench_forced(tmp: Path, n_pos: int = 1000) -> None:
    """Forced photometry of ``n_pos`` positions on a 2048² image."""
    field = FakeField(npix=2048, cell_arcsec=3.0, bmaj_arcsec=18.0, bmin_arcsec=12.0)
    made = fake_image(tmp / "big.fits", field, n_pos, seed=1)
    image = read_image(made["path"])
    from astropy.io import fits
    residual = fits.getdata(made["residual_path"])[0, 0]
    config = PhotometryConfig(pb_cutoff=0.05)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        table = forced_photometry(image, made["ra"], made["dec"], config=config,
                                  residual=residual)
        times.append(time.perf_counter() - t)
    print(f"forced photometry, {len(table)} positions on 2048² (beam {image.bmaj_px:.0f} px): "
          f"median {np.median(times):.2f} s, best {min(times):.2f} s (target ≤ 2 s)")
    row = {"id": 1, "path": made["path"], "residual_path": made["residual_path"],
           "pbcor_path": None, "mid_mjd": 61000.0}
    src = pd.DataFrame({"id": np.arange(n_pos), "ra_deg": made["ra"], "dec_deg": made["dec"]})
    t = time.perf_counter()
    out = measure_image(row, src, config=config)
    print(f"measure_image (read + forced + detect) on 2048²: {time.perf_counter() - t:.2f} s "
          f"({', '.join(f'{k} {v:.2f}' for k, v in out.timings.items())}), "
          f"{out.n_islands} islands")


# ----------------------------------------------------------------- 3. streaming
def bench_stream(tmp: Path, n_images: int, n_pos: int = 1000) -> None:
    """Measure and record ``n_images`` images one after another; print RSS as it goes."""
    field = FakeField(npix=1024, cell_arcsec=3.0, bmaj_arcsec=18.0, bmin_arcsec=12.0)
    files = [fake_image(tmp / f"s{k}.fits", field, n_pos, seed=10 + k) for k in range(4)]
    config = PhotometryConfig(pb_cutoff=0.05)
    with Store.open(tmp / "stream-home") as store:
        # One catalog: the positions of the first file (the others' sources become "new").
        cat = pd.DataFrame({"name": [f"C{i}" for i in range(n_pos)], "ra_deg": files[0]["ra"],
                            "dec_deg": files[0]["dec"], "flux_jy": 0.05,
                            "spectral_index": -0.7})
        store.add_catalog_sources(cat, now=NOW)
        src = store.sources_in_field(field.ra_deg, field.dec_deg, 1.0)
        start = rss_mb()
        marks = {}
        t0 = time.perf_counter()
        for k in range(n_images):
            f = files[k % 4]
            row = {"id": k + 1, "path": f["path"], "residual_path": f["residual_path"],
                   "pbcor_path": None, "mid_mjd": 61000 + k / 288}
            out = measure_image(row, src, config=config)
            store.record_photometry(image_id=k + 1, observation_id=f"o{k}", mjd=out.mjd,
                                    rows=out.rows, new_sources=out.new_sources.iloc[:0],
                                    n_islands=out.n_islands, now=NOW)
            if k + 1 in (1, 10, 50, 100, 150, 200) or k + 1 == n_images:
                marks[k + 1] = rss_mb()
        elapsed = time.perf_counter() - t0
        n = store._df("SELECT count(*) AS n FROM photometry").n[0]
    print(f"stream of {n_images} images (1024², {n_pos} positions): {elapsed:.0f} s, "
          f"{elapsed / n_images:.2f} s per image, {n} rows")
    print("RSS MB after image: " + ", ".join(f"{k}: {v:.0f}" for k, v in marks.items())
          + f" (before {start:.0f}, peak {peak_mb():.0f})")


def main() -> None:
    """Run the three benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--only", choices=("lightcurve", "forced", "stream"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only in (None, "forced"):
            bench_forced(tmp)
        if args.only in (None, "stream"):
            bench_stream(tmp, args.images)
        if args.only in (None, "lightcurve"):
            bench_lightcurves(tmp / "lc-home", args.rows, args.queries)


if __name__ == "__main__":
    main()
