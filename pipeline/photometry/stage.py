"""The ``measure`` stage (imaged → complete): forced photometry, new sources, variability.

Three parts, as the runner runs them (see ``pipeline.calibration.stage``):

- ``prepare_measure`` (server, reads the store): seeds the reference catalog once, finds
  the observation's image and the known sources (catalog and detected) in its field.
  An image that failed QA is handed on as ``skip`` with its reason.
- ``measure_stage`` (anywhere: paths and parameters only): reads one image, measures
  every known source inside the primary-beam cutoff and finds islands no known source
  explains. Only this image is in memory; nothing accumulates across images.
- ``record_measure`` (server, writes the store): replaces the image's photometry rows,
  adds the new sources, updates variability and raises alerts in one transaction.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.errors import ObservationError
from pipeline.jobs.contract import Observation, StageContext, StageResult, TaskContext
from pipeline.photometry.catalog_seed import seed_catalog
from pipeline.photometry.detect import new_source_candidates
from pipeline.photometry.forced import (
    ImageReadError,
    PhotometryConfig,
    SkyImage,
    forced_photometry,
    read_image,
)
from pipeline.photometry.thresholds import VariabilityThresholds

if TYPE_CHECKING:
    from pipeline.store import Store

log = logging.getLogger(__name__)

STAGE = "measure"
DEFAULT_CONFIG = PhotometryConfig()
DEFAULT_THRESHOLDS = VariabilityThresholds()
#: Seconds between re-sorts of the photometry tail (DESIGN: nightly).
RESORT_EVERY_S = 86_400.0
#: Field radius used when the images row lacks npix/cell (degrees).
FALLBACK_FIELD_RADIUS_DEG = 5.0


class MeasureInputError(ObservationError):
    """An observation reached the measure stage without what it needs."""


@dataclass(frozen=True, kw_only=True)
class MeasureOutcome:
    """StageResult.payload of the measure stage; ``skipped`` says why nothing was measured."""

    image_id: int
    mjd: float
    skipped: str | None = None
    rows: pd.DataFrame | None = None          # store.photometry.PHOTOMETRY_FRAME_COLUMNS
    new_sources: pd.DataFrame | None = None   # store.photometry.NEW_SOURCE_COLUMNS
    n_islands: int = 0
    timings: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------- prepare
def field_radius_deg(image: dict) -> float:
    """Radius that holds the whole image: half its diagonal (or a generous fallback)."""
    npix, cell = image.get("npix"), image.get("cell_arcsec")
    if npix and cell:
        return float(npix) * float(cell) / 3600.0 / 2.0 * math.sqrt(2.0) + 0.05
    return FALLBACK_FIELD_RADIUS_DEG


def field_centre(image: dict) -> tuple[float, float]:
    """(ra, dec) of the image centre: the images row, else the FITS header's CRVAL."""
    if image.get("ra_deg") is not None and image.get("dec_deg") is not None:
        return float(image["ra_deg"]), float(image["dec_deg"])
    sky = read_image(image["path"])
    ra, dec = sky.wcs.wcs.crval[:2]
    return float(ra), float(dec)


def prepare_measure(store: Store, obs: Observation, now: datetime, *,
                    config: PhotometryConfig = DEFAULT_CONFIG) -> dict[str, object]:
    """Server side: {"image": images row, "sources": known sources in the field, "config"}."""
    seed_catalog(store, now=now)
    image = store.image_to_measure(obs.id)
    if image is None:
        raise MeasureInputError(obs.id, "has no registered image; run the image stage first")
    if image.get("qa_passed") is False:
        return {"image": image, "config": config,
                "skip": f"image {image['id']} failed QA ({image.get('qa_reason') or 'no reason'})"
                        "; not measured"}
    ra, dec = field_centre(image)
    sources = store.sources_in_field(ra, dec, field_radius_deg(image))
    return {"image": image, "sources": sources, "config": config}


# --------------------------------------------------------------------------- stage
def measure_stage(ctx: StageContext) -> StageResult:
    """Forced photometry at the known sources and blind detection on one image."""
    image = ctx.inputs.get("image")
    if not isinstance(image, dict):
        raise MeasureInputError(ctx.observation.id, "measure stage ran without its image; "
                                "register prepare_measure with the stage")
    if ctx.inputs.get("skip"):
        log.warning("observation %s: %s", ctx.observation.id, ctx.inputs["skip"])
        return StageResult(payload=MeasureOutcome(image_id=int(image["id"]),
                                                  mjd=float(image["mid_mjd"]),
                                                  skipped=str(ctx.inputs["skip"])))
    config = ctx.inputs.get("config") or DEFAULT_CONFIG
    sources = ctx.inputs.get("sources")
    if sources is None:
        sources = pd.DataFrame({"id": [], "ra_deg": [], "dec_deg": []})
    outcome = measure_image(image, sources, config=config, progress=ctx.progress)
    return StageResult(payload=outcome)


def measure_image(image: dict, sources: pd.DataFrame, *, config: PhotometryConfig,
                  progress=None) -> MeasureOutcome:
    """Measure one registered image (a dict as ``Store.image_to_measure`` gives it)."""
    t0 = time.perf_counter()
    sky = read_image(image["path"])
    residual = _companion(image.get("residual_path"), sky, "residual")
    pbcor = _companion(image.get("pbcor_path"), sky, "PB-corrected")
    psf = _companion(image.get("psf_path"), sky, "PSF")
    t_read = time.perf_counter()
    ra = sources["ra_deg"].to_numpy(float)
    dec = sources["dec_deg"].to_numpy(float)
    forced = forced_photometry(sky, ra, dec, config=config, residual=residual, pbcor=pbcor)
    if progress:
        progress(0.6)
    t_forced = time.perf_counter()
    apparent = np.full(ra.size, np.nan)
    apparent[forced.index] = forced.flux_jy * forced.pb
    cands, n_islands = new_source_candidates(sky, ra, dec, config=config, residual=residual,
                                             pbcor=pbcor, known_apparent_jy=apparent,
                                             psf=psf)
    t_detect = time.perf_counter()
    rows = pd.DataFrame({
        "source_id": sources["id"].to_numpy(np.int64)[forced.index],
        "flux_jy": forced.flux_jy, "flux_err_jy": forced.flux_err_jy, "snr": forced.snr,
        "local_rms_jy": forced.local_rms_jy, "background_jy": forced.background_jy,
        "pb": forced.pb, "flags": forced.flags, "forced": True})
    new = pd.DataFrame({
        "name": [iau_name(a, d) for a, d in zip(cands.ra_deg, cands.dec_deg, strict=True)],
        "ra_deg": cands.ra_deg, "dec_deg": cands.dec_deg, "flux_jy": cands.flux_jy,
        "flux_err_jy": cands.flux_err_jy, "snr": cands.snr,
        "local_rms_jy": cands.local_rms_jy, "pb": cands.pb})
    if progress:
        progress(0.9)
    return MeasureOutcome(image_id=int(image["id"]), mjd=float(image["mid_mjd"]), rows=rows,
                          new_sources=new, n_islands=int(n_islands),
                          timings={"read_s": t_read - t0, "forced_s": t_forced - t_read,
                                   "detect_s": t_detect - t_forced})


def _companion(path: str | None, sky: SkyImage, what: str) -> np.ndarray | None:
    """The first plane of a product beside the image, checked to be the same shape."""
    if not path or not Path(path).exists():
        return None
    from astropy.io import fits  # noqa: PLC0415

    try:
        data = fits.getdata(path, memmap=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageReadError(path, f"{what} image is not a readable FITS file ({exc})") from None
    if data is None or data.ndim < 2:
        raise ImageReadError(path, f"{what} image holds no image data")
    plane = np.asarray(data, np.float32).reshape((-1, *data.shape[-2:]))[0]
    if plane.shape != sky.data.shape:
        raise ImageReadError(path, f"{what} image is {plane.shape[1]}×{plane.shape[0]} pixels "
                             f"but {sky.path.name} is {sky.data.shape[1]}×{sky.data.shape[0]}")
    return plane


def iau_name(ra_deg: float, dec_deg: float) -> str:
    """An IAU-style name, 'CTG Jhhmmss.s+ddmmss', for a detected source."""
    ra_h = (float(ra_deg) % 360.0) / 15.0
    h, rem = divmod(round(ra_h * 36000), 36000)   # tenths of seconds of time
    m, ts = divmod(rem, 600)
    sign = "-" if dec_deg < 0 else "+"
    d, rem = divmod(round(abs(float(dec_deg)) * 3600), 3600)
    dm, ds = divmod(rem, 60)
    return f"CTG J{int(h) % 24:02d}{int(m):02d}{ts / 10:04.1f}{sign}{int(d):02d}{int(dm):02d}" \
           f"{int(ds):02d}"


# -------------------------------------------------------------------------- record
def record_measure(store: Store, obs: Observation, result: StageResult, now: datetime, *,
                   thresholds: VariabilityThresholds = DEFAULT_THRESHOLDS) -> None:
    """Server side: write the image's photometry, new sources, variability and alerts."""
    outcome = result.payload
    if not isinstance(outcome, MeasureOutcome):
        raise MeasureInputError(obs.id, f"measure stage returned {type(outcome).__name__}, "
                                "expected MeasureOutcome")
    if outcome.skipped:
        log.info("observation %s: %s", obs.id, outcome.skipped)
        return
    written = store.record_photometry(
        image_id=outcome.image_id, observation_id=obs.id, mjd=outcome.mjd, rows=outcome.rows,
        new_sources=outcome.new_sources, n_islands=outcome.n_islands, now=now,
        thresholds=thresholds)
    log.info("observation %s: %d photometry rows%s, %d new source(s), %d newly variable",
             obs.id, written.n_rows, " (replacing earlier ones)" if written.replaced else "",
             len(written.new_source_ids), len(written.newly_variable_ids))


# ----------------------------------------------------------------------- upkeep
def resort_photometry_task(ctx: TaskContext) -> int:
    """Periodic task: re-sort photometry rows appended since the last run by source."""
    return ctx.store.resort_photometry_tail()
