"""The ``image`` stage: a calibrated Measurement Set → CLEANed, PB-corrected FITS with QA.

As the runner runs it (the pattern of pipeline/calibration/stage.py):

- ``image_stage`` (anywhere: paths and parameters only) images the observation's MS into
  ``home/images/<obs id>/`` and returns an ``ImageProducts`` as the StageResult's payload;
- ``record_image`` (server, writes the store) registers the image and its QA with
  ``Store.add_image``, and raises an alert when QA failed (the image is kept with its
  reason; the photometry stage decides what to do with it).

``image_ms`` is the whole imager for one MS and is what benchmarks and notebooks call.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.backend import Backend, cpu_backend, get_backend
from pipeline.errors import ObservationError
from pipeline.imaging.beam import Beam, fit_beam, restore
from pipeline.imaging.bright import (
    SubtractedSource,
    add_point,
    apparent_flux,
    lm_pixels,
    subtract_calibrator,
)
from pipeline.imaging.clean import CleanResult, NothingToImage, clean
from pipeline.imaging.config import ImagingConfig
from pipeline.imaging.primary_beam import PrimaryBeam, drift_scan_beam, pb_correct
from pipeline.imaging.products import ImageGeometry, thumbnail, write_fits
from pipeline.imaging.qa import ImageQA, assess, match_reference, theoretical_rms
from pipeline.jobs.contract import Observation, StageContext, StageResult

if TYPE_CHECKING:
    from pipeline.store import Store

log = logging.getLogger(__name__)

STAGE = "image"
DEFAULT_CONFIG = ImagingConfig()
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ImagingInputError(ObservationError):
    """An observation reached the image stage without what it needs."""


@dataclass(frozen=True, kw_only=True)
class ImageProducts:
    """StageResult.payload of the image stage: the files written and the images row."""

    path: str
    mid_mjd: float
    fields: Mapping[str, object]
    beam: Beam
    qa: ImageQA
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class ImageArrays:
    """The host arrays behind the products (gridder layout), for tests and notebooks."""

    restored: np.ndarray
    residual: np.ndarray
    model: np.ndarray
    psf: np.ndarray
    pb: np.ndarray
    pbcor: np.ndarray
    primary_beam: PrimaryBeam
    geometry: ImageGeometry
    clean: CleanResult


def ms_times_mjd(ms: Path) -> np.ndarray:
    """Distinct integration mid-times of a Measurement Set, MJD (UTC)."""
    from casacore.tables import table  # noqa: PLC0415

    with table(str(ms), ack=False) as t:
        return np.unique(t.getcol("TIME")) / 86400.0


def reference_sky(config: ImagingConfig):
    """The reference catalog QA matches against: the catalog plus the calibrators."""
    from pipeline.instrument.sky import (  # noqa: PLC0415
        DEFAULT_CATALOG,
        load_calibrators,
        load_catalog,
    )
    return load_catalog(config.catalog_path or DEFAULT_CATALOG) + load_calibrators()


def image_ms(ms_path: Path, out_dir: Path, *, name: str, config: ImagingConfig = DEFAULT_CONFIG,
             backend: Backend | None = None, progress: Callable[[float], None] | None = None,
             keep_arrays: bool = False) -> tuple[ImageProducts, ImageArrays | None]:
    """Image, CLEAN, restore, PB-correct and assess one MS; write products into ``out_dir``.

    Files: ``<name>.image.fits`` (restored), ``.residual``, ``.model``, ``.psf``,
    ``.pbcor.fits`` and ``<name>.png``. Returns the products and, with ``keep_arrays``,
    the host arrays. ``backend`` None: ``pipeline.backend.choose_backend(config.backend)``
    (the rule the GPU page reports).
    """
    from pipeline.imaging.ms_reader import read_imaging_data  # noqa: PLC0415 — casacore
    from pipeline.imaging.weighting import imaging_weights  # noqa: PLC0415

    report = progress or (lambda f: None)
    t0 = time.perf_counter()
    ms = Path(ms_path)
    be = backend or get_backend(config.backend)
    data = read_imaging_data(ms, column=config.column)
    used = data.weight.any(axis=1)
    if not used.any():
        raise NothingToImage(str(ms))
    npix, cell = config.geometry(data.uvw[used], data.freq)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    # a calibrator transit: its model visibilities out before CLEAN, the source back after
    bright = subtract_calibrator(ms, vis=data.vis) if config.subtract_calibrator else None
    t_subtract = time.perf_counter() - t1
    report(0.05)
    t1 = time.perf_counter()
    wimg = imaging_weights(uvw=be.asarray(data.uvw), freq=be.asarray(data.freq),
                           weight=be.asarray(data.weight), npix=npix, pixsize_rad=cell,
                           scheme=config.weighting, robust=config.robust, backend=be)
    source = None
    if bright is not None:
        cal_name, amplitude = bright
        source = _subtracted(cal_name, apparent_flux(amplitude, wimg, backend=be), data,
                             npix=npix, cell_rad=cell)
        del amplitude, bright
    t_weights = time.perf_counter() - t1
    result = clean(uvw=data.uvw, freq=data.freq, vis=data.vis, weight=wimg, npix=npix,
                   cell_rad=cell, config=config, backend=be,
                   progress=lambda f: report(0.05 + 0.8 * f))
    t1 = time.perf_counter()
    beam = fit_beam(result.psf, cell, backend=be)
    restored = restore(result.model, result.residual, beam, cell, backend=be)
    model_img = result.model
    if source is not None:
        restored = add_point(restored, source, beam, cell, backend=be)
        model_img = model_img.copy()
        model_img[int(round(source.x_pix)) % npix, int(round(source.y_pix)) % npix] += \
            be.xp.float32(source.flux_jy)
    restored = be.to_host(restored)
    chan_w = be.to_host(wimg.sum(axis=0, dtype=be.xp.float64))
    sigma_th = theoretical_rms(wimg, be.asarray(data.weight), sefd_jy=config.sefd_jy,
                               channel_width_hz=data.channel_width_hz,
                               integration_s=data.integration_s, backend=be)
    del wimg
    t_restore = time.perf_counter() - t1
    report(0.9)
    t1 = time.perf_counter()
    times = ms_times_mjd(ms)
    half_int = data.integration_s / 86400.0 / 2
    ref_freq = float((data.freq * chan_w).sum() / chan_w.sum())
    geom = ImageGeometry(
        ra_deg=data.ra_deg, dec_deg=data.dec_deg, npix=npix, cell_rad=cell, freq_hz=ref_freq,
        bandwidth_hz=float(data.freq.max() - data.freq.min() + data.channel_width_hz),
        start_mjd=float(times.min() - half_int), mid_mjd=data.mid_mjd, object_name=name)
    pointing_dec = data.dec_deg if data.pointing_dec_deg is None else data.pointing_dec_deg
    pb = drift_scan_beam(times_mjd=times, dec_deg=pointing_dec, freq_hz=data.freq,
                         freq_weight=chan_w)
    pb_img = pb.image(npix=npix, cell_rad=cell, ra0_deg=data.ra_deg, dec0_deg=data.dec_deg)
    host = cpu_backend()
    pbcor = pb_correct(restored, pb_img, cutoff=config.pb_cutoff, backend=host)
    residual, model, psf = (be.to_host(a) for a in (result.residual, model_img, result.psf))
    peak = float(np.nanmax(restored))
    match = match_reference(restored, reference_sky(config), pb, ra0_deg=data.ra_deg,
                            dec0_deg=data.dec_deg, cell_rad=cell, freq_hz=ref_freq,
                            rms_jy=result.rms_jy, beam=beam)
    qa = assess(rms_jy=result.rms_jy, peak_jy=peak, theoretical_rms_jy=sigma_th, match=match,
                beam=beam, config=config)
    t_pb_qa = time.perf_counter() - t1
    t1 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"NITER": result.n_components, "NMAJOR": result.n_major,
             "THRESH": (result.threshold_jy, "[Jy] CLEAN threshold"),
             "WEIGHT": config.weighting_label, "BACKEND": be.name}
    paths = {}
    for kind, arr in (("image", restored), ("residual", residual), ("model", model),
                      ("psf", psf), ("pbcor", pbcor)):
        paths[kind] = str(write_fits(out_dir / f"{name}.{kind}.fits", arr, geom, kind=kind,
                                     beam=beam, extra=extra))
    png = str(thumbnail(out_dir / f"{name}.png", restored, size=config.thumbnail_px))
    t_write = time.perf_counter() - t1
    duration = time.perf_counter() - t0
    report(1.0)
    fields = {
        "ra_deg": data.ra_deg, "dec_deg": data.dec_deg, "freq_hz": ref_freq,
        "bmaj_deg": beam.bmaj_deg, "bmin_deg": beam.bmin_deg, "bpa_deg": beam.bpa_deg,
        "backend": be.name, "duration_s": duration, "residual_path": paths["residual"],
        "model_path": paths["model"], "psf_path": paths["psf"], "pbcor_path": paths["pbcor"],
        "thumbnail_path": png, "npix": npix, "cell_arcsec": float(np.degrees(cell) * 3600),
        "weighting": config.weighting_label, "n_iter": result.n_components,
        "n_major": result.n_major, "threshold_jy": result.threshold_jy,
        "n_vis": data.n_vis, **qa.fields()}
    timings = {"read_s": t_read, "subtract_s": t_subtract, "weights_s": t_weights, **result.timings,
               "restore_s": t_restore, "pb_qa_s": t_pb_qa, "write_s": t_write,
               "total_s": duration}
    log.info("%s: %d² × %.2f″ on %s, %d components in %d major cycles, rms %.3g mJy "
             "(radiometer %.3g), %.1f s", name, npix, fields["cell_arcsec"], be.name,
             result.n_components, result.n_major, result.rms_jy * 1e3, sigma_th * 1e3,
             duration)
    products = ImageProducts(path=paths["image"], mid_mjd=data.mid_mjd, fields=fields,
                             beam=beam, qa=qa, timings=timings)
    arrays = ImageArrays(restored=restored, residual=residual, model=model, psf=psf, pb=pb_img,
                         pbcor=be.to_host(pbcor), primary_beam=pb, geometry=geom,
                         clean=result) if keep_arrays else None
    return products, arrays


def _subtracted(name: str, flux_jy: float, data: Any, *, npix: int,
                cell_rad: float) -> SubtractedSource:
    """The subtracted calibrator's pixel position in this image and its apparent flux."""
    from pipeline.instrument.sky import load_calibrators  # noqa: PLC0415

    cals = load_calibrators()
    i = [n.upper() for n in cals.names].index(name.upper())
    x, y = lm_pixels(float(cals.ra_deg[i]), float(cals.dec_deg[i]), data.ra_deg,
                     data.dec_deg, npix=npix, cell_rad=cell_rad)
    log.info("%s subtracted before CLEAN: %.3f Jy apparent at pixel (%.2f, %.2f)", name,
             flux_jy, x, y)
    return SubtractedSource(name=name, x_pix=x, y_pix=y, flux_jy=flux_jy)


def image_stage(ctx: StageContext) -> StageResult:
    """Image the observation's calibrated MS (ctx.inputs["config"] overrides the defaults)."""
    obs = ctx.observation
    if not obs.ms_path:
        raise ImagingInputError(obs.id, "has no Measurement Set; convert and calibrate it first")
    config: ImagingConfig = ctx.inputs.get("config") or DEFAULT_CONFIG
    safe = _UNSAFE.sub("_", obs.id)
    out_dir = ctx.home.images / safe
    tag = ctx.inputs.get("product_tag")
    if tag:  # a rerun writes beside the current image; the store swaps them at record
        out_dir = out_dir / _UNSAFE.sub("_", str(tag))
    products, _ = image_ms(Path(obs.ms_path), out_dir, name=safe,
                           config=config, progress=ctx.progress)
    return StageResult(payload=products)


def record_image(store: Store, obs: Observation, result: StageResult, now: datetime) -> None:
    """Server side: register the image with its QA; alert when QA failed."""
    products = result.payload
    if not isinstance(products, ImageProducts):
        raise ImagingInputError(obs.id, f"image stage returned {type(products).__name__}, "
                                "expected ImageProducts")
    image_id = store.add_image(observation_id=obs.id, path=products.path,
                               mid_mjd=products.mid_mjd, now=now, **products.fields)
    if not products.qa.qa_passed:
        store.add_alert(severity="warning", kind="image QA", subject=obs.id, now=now,
                        message=f"image {image_id} of {obs.id} failed QA: "
                                f"{products.qa.qa_reason}")


def stage_inputs(config: ImagingConfig) -> Callable[[Store, Observation, datetime],
                                                        dict[str, Any]]:
    """A prepare hook handing the stage ``config`` (for a registry that images differently)."""
    def prepare(store: Store, obs: Observation, now: datetime) -> dict[str, Any]:
        return {"config": config}
    return prepare
