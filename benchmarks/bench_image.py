"""Imaging of one full-size chunk (96 antennas, 768 channels, 24 integrations).

Makes the chunk as bench_calibrate.py does (a simulated 5-minute transit of 3C48,
converted by the shipped convert stage; about two minutes, reused with ``--keep DIR``),
reads it with ``read_imaging_data`` and prints, for a dirty 4096² × 3″ image (``--npix``,
``--cell-arcsec``), one row per measurement:

- read: MS → Stokes I, weights (ms_reader);
- weights: Briggs robust 0 imaging weights (weighting, NumPy);
- ducc0 dirty image with and without w-gridding (the CPU path), and visibilities/s,
  also at the pipeline's own accuracy (ImagingConfig.epsilon) and how far that image is
  off the ε 1e-5 one;
- the GPU path (gpu_gridding on CuPy) with and without w-correction when a GPU answers,
  timed after a warm-up call (CuPy compiles its kernels on first use) with the data
  already on the device, plus the host→device copy on its own row; "no GPU" otherwise;
- WSClean's dirty image of the same MS (``-niter 0``, Briggs 0, same size and cell, as
  many threads as this process may use) when ``wsclean`` is on PATH, and the ratio of
  its time to read + weights + ducc0 with w-gridding at the pipeline's accuracy;
  "wsclean not installed" otherwise.

Each measurement is a function returning a ``Row``; ``main`` prints the table, so other
figures (the cleaned image) can be added as further functions. Asserts nothing.

The issue's figures on 2 cores: WSClean 3.1 16 s, ducc0 8.8 s with w-gridding (1.9 s
without); targets: CPU dirty image faster than WSClean, GPU dirty image with
w-correction ≤ 0.3 s on an H100.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table: what was measured, its time, and the visibilities it handled."""

    what: str
    seconds: float | None = None
    n_vis: int = 0
    note: str = ""

    def line(self, wsclean_s: float | None) -> str:
        """The row as printed: seconds, Mvis/s, and WSClean's time / this time."""
        if self.seconds is None:
            return f"{self.what:38s} {'—':>9s} {'':>9s} {'':>10s}  {self.note}"
        rate = f"{self.n_vis / self.seconds / 1e6:9.1f}" if self.n_vis else f"{'':>9s}"
        ratio = (f"{wsclean_s / self.seconds:9.2f}×" if wsclean_s and self.seconds > 0
                 else f"{'':>10s}")
        return f"{self.what:38s} {self.seconds:9.3f} {rate} {ratio}  {self.note}"


def make_ms(home: Path) -> Path:
    """The full-size converted chunk under ``home`` (made by bench_calibrate's helper)."""
    from bench_calibrate import make_home
    return make_home(home)


def warm_page_cache(ms: Path) -> float:
    """Read every file of the MS once, so that our reader and WSClean both start warm.

    Otherwise whichever reads first pays the disk and the other gets the page cache.
    Returns the GB read.
    """
    total = 0
    for f in sorted(p for p in ms.rglob("*") if p.is_file()):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                total += len(chunk)
    return total / 1e9


def measure_read(ms: Path):
    """Read the MS for imaging; returns (Row, ImagingData)."""
    from pipeline.imaging.ms_reader import read_imaging_data
    t0 = time.perf_counter()
    data = read_imaging_data(ms)
    dt = time.perf_counter() - t0
    return Row(what=f"read ({data.column})", seconds=dt, n_vis=data.n_vis,
               note=f"{data.vis.shape[0]} rows × {data.freq.size} channels"), data


def measure_weights(data, *, npix: int, pixsize: float):
    """Briggs robust 0 weights on the CPU; returns (Row, weights)."""
    from pipeline.backend import cpu_backend
    from pipeline.imaging.weighting import imaging_weights
    t0 = time.perf_counter()
    w = imaging_weights(uvw=data.uvw, freq=data.freq, weight=data.weight, npix=npix,
                        pixsize_rad=pixsize, scheme="briggs", robust=0.0,
                        backend=cpu_backend())
    return Row(what="weights (Briggs 0, NumPy)", seconds=time.perf_counter() - t0,
               n_vis=data.n_vis), w


def measure_ducc0(data, wgt, *, npix: int, pixsize: float, do_w: bool,
                  epsilon: float = 1e-5):
    """ducc0 dirty image (the CPU path of gridding.vis2dirty); returns (Row, image)."""
    from pipeline.backend import cpu_backend, cpu_threads
    from pipeline.imaging.gridding import vis2dirty
    t0 = time.perf_counter()
    img = vis2dirty(uvw=data.uvw, freq=data.freq, vis=data.vis, wgt=wgt, npix=npix,
                    pixsize_rad=pixsize, do_wgridding=do_w, backend=cpu_backend(),
                    epsilon=epsilon)
    dt = time.perf_counter() - t0
    return Row(what=f"ducc0 dirty, w-gridding {'on' if do_w else 'off'}, ε {epsilon:.0e}",
               seconds=dt, n_vis=data.n_vis, note=f"{cpu_threads()} threads"), img


def measure_gpu(data, wgt, *, npix: int, pixsize: float, reference: dict) -> list[Row]:
    """The GPU path (CuPy), with and without w-correction, against ducc0's images."""
    from pipeline.backend import get_backend, gpu_status
    ok, why = gpu_status()
    if not ok:
        return [Row(what="GPU dirty", note=f"no GPU ({why})")]
    from pipeline.imaging import gpu_gridding
    be = get_backend("gpu")
    import cupy
    sync = cupy.cuda.Device().synchronize
    t0 = time.perf_counter()
    dev = {k: be.asarray(v) for k, v in
           (("uvw", data.uvw), ("freq", data.freq), ("vis", data.vis), ("wgt", wgt))}
    sync()
    rows = [Row(what="GPU host→device copy", seconds=time.perf_counter() - t0, note=be.device)]
    for do_w in (False, True):
        kw = dict(npix=npix, pixsize_rad=pixsize, do_wgridding=do_w, backend=be, **dev)
        gpu_gridding.vis2dirty(**kw)  # warm-up: kernel compilation, FFT plans
        sync()
        t0 = time.perf_counter()
        img = gpu_gridding.vis2dirty(**kw)
        sync()
        dt = time.perf_counter() - t0
        ref = reference[do_w]
        err = float(np.abs(be.to_host(img) - ref).max() / np.abs(ref).max())
        rows.append(Row(what=f"GPU dirty, w-correction {'on' if do_w else 'off'}",
                        seconds=dt, n_vis=data.n_vis,
                        note=f"max |GPU - ducc0| / peak = {err:.1e}"))
        del img
    return rows


def measure_wsclean(ms: Path, column: str, *, npix: int, cell_arcsec: float,
                    work: Path) -> Row:
    """WSClean's dirty image of the same MS, when it is installed."""
    exe = shutil.which("wsclean")
    if exe is None:
        return Row(what="WSClean dirty", note="wsclean not installed")
    from pipeline.backend import cpu_threads
    cmd = [exe, "-quiet", "-size", str(npix), str(npix), "-scale", f"{cell_arcsec}asec",
           "-niter", "0", "-weight", "briggs", "0", "-data-column", column,
           "-j", str(cpu_threads()), "-name", str(work / "wsclean"), str(ms)]
    os.sync()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if done.returncode:
        return Row(what="WSClean dirty", note=f"failed: {done.stderr.strip()[-200:]}")
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False)
    first = (version.stdout.strip().splitlines() or ["?"])[0][:40]
    return Row(what="WSClean dirty (read + weights + grid)", seconds=dt, note=first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="make the home in / reuse it from this DIR")
    parser.add_argument("--npix", type=int, default=4096)
    parser.add_argument("--cell-arcsec", type=float, default=3.0)
    args = parser.parse_args()
    from pipeline.process_tuning import configure_process

    configure_process()  # as contimg's own processes run
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-image-")
    home = args.keep.absolute() if args.keep else Path(tmp.name) / "home"
    work = Path(tempfile.mkdtemp(prefix="bench-image-work-", dir=home.parent))
    npix, pixsize = args.npix, np.radians(args.cell_arcsec / 3600.0)
    try:
        ms = make_ms(home)
        print(f"{ms}: {os.cpu_count()} CPU cores, {npix}² × {args.cell_arcsec}″ dirty image; "
              f"{warm_page_cache(ms):.2f} GB read once first (both readers start warm)")
        read_row, data = measure_read(ms)
        weights_row, wgt = measure_weights(data, npix=npix, pixsize=pixsize)
        rows = [read_row, weights_row]
        images = {}
        for do_w in (False, True):
            row, images[do_w] = measure_ducc0(data, wgt, npix=npix, pixsize=pixsize,
                                              do_w=do_w)
            rows.append(row)
        # the pipeline's own accuracy (ImagingConfig.epsilon), against the ε 1e-5 image
        from pipeline.imaging.config import ImagingConfig
        eps = ImagingConfig().epsilon
        loose, loose_img = measure_ducc0(data, wgt, npix=npix, pixsize=pixsize, do_w=True,
                                         epsilon=eps)
        peak = float(np.abs(images[True]).max())
        err = float(np.abs(loose_img - images[True]).max()) / peak
        rms = float(np.std(images[True])) / peak
        rows.append(Row(what=loose.what, seconds=loose.seconds, n_vis=loose.n_vis,
                        note=f"{loose.note}; max |Δ| / peak vs ε 1e-5 = {err:.1e} "
                             f"(image rms / peak {rms:.1e})"))
        del loose_img
        end_to_end = read_row.seconds + weights_row.seconds + loose.seconds
        rows.append(Row(what=f"read + weights + ducc0 (w on, ε {eps:.0e})", seconds=end_to_end,
                        n_vis=data.n_vis, note="the pipeline's settings"))
        rows += measure_gpu(data, wgt, npix=npix, pixsize=pixsize, reference=images)
        wsclean = measure_wsclean(ms, data.column, npix=npix, cell_arcsec=args.cell_arcsec,
                                  work=work)
        rows.append(wsclean)
        print(f"{'measurement':38s} {'seconds':>9s} {'Mvis/s':>9s} {'WSClean/x':>10s}")
        for row in rows:
            print(row.line(wsclean.seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
