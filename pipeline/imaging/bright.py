"""A calibrator at the phase centre, subtracted before CLEAN and restored after it.

A calibrator-transit chunk holds a 10–40 Jy source whose sidelobes dominate the dirty
image: with a major-cycle gain of 0.8 CLEAN spends five major cycles (two gridder passes
over every visibility each) and ~100 components taking it down to the field's level.
Its model visibilities are known exactly (the calibrate stage solved the gains against
the same model: pipeline/calibration/model.py), so they are subtracted from the Stokes I
visibilities once, CLEAN images the rest of the field, and the source is put back:

- into the model image, its apparent flux on its nearest pixel (Jy/pixel);
- into the restored image, the restoring beam at its exact (sub-pixel) position times its
  apparent flux: the weighted mean of the model visibilities' amplitudes, which is what
  the dirty image of the model holds at the source (peak-normalised PSF).

Whatever the model misses (a gain error, a flux-scale error) stays in the residual
visibilities and CLEAN finds it at the source's position like any other flux, so the
restored image still measures the data, not the catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backend import Backend
from pipeline.imaging.beam import FWHM_PER_SIGMA, Beam


@dataclass(frozen=True, kw_only=True)
class SubtractedSource:
    """A source taken out of the visibilities: its name, pixel position and apparent flux."""

    name: str
    x_pix: float
    y_pix: float
    flux_jy: float


def lm_pixels(ra_deg: float, dec_deg: float, ra0_deg: float, dec0_deg: float, *, npix: int,
              cell_rad: float) -> tuple[float, float]:
    """(x, y) pixel of a direction in the gridder's layout (SIN projection about ra0, dec0)."""
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    ra0, dec0 = math.radians(ra0_deg), math.radians(dec0_deg)
    dra = ra - ra0
    l = math.cos(dec) * math.sin(dra)
    m = math.sin(dec) * math.cos(dec0) - math.cos(dec) * math.sin(dec0) * math.cos(dra)
    return npix // 2 + l / cell_rad, npix // 2 + m / cell_rad


def subtract_calibrator(ms: Path, *, vis: np.ndarray, max_offset_deg: float = 1.0) -> tuple[str, np.ndarray] | None:
    """Subtract the calibrator in the beam (if any) from ``vis`` in place.

    vis : (ncross, nchan) complex64 Stokes I of the MS's cross-correlation rows in table
    order (as ``read_imaging_data`` returns them). Returns (calibrator name, model
    amplitudes (ncross, nchan) float32) or None when no calibrator is within
    ``max_offset_deg`` of the phase centre.
    """
    from pipeline.calibration.model import (  # noqa: PLC0415 — casacore, catalogs
        calibrator_in_beam,
        compute_model,
        read_model_inputs,
    )
    name = calibrator_in_beam(ms, max_offset_deg=max_offset_deg)
    if name is None:
        return None
    inputs = read_model_inputs(ms, name, field_catalog=None)
    model = compute_model(inputs)
    cross = inputs.ant1 != inputs.ant2
    if not cross.all():
        model = model[cross]
    # flagged visibilities are 0 in ``vis`` and carry no weight: leave them 0
    np.subtract(vis, model, out=vis, where=vis != 0)
    return name, np.abs(model)


def apparent_flux(amplitude: Any, weight: Any, *, backend: Backend) -> float:
    """Σ w |V_model| / Σ w: the dirty image's value of the model at its source, Jy/beam."""
    xp = backend.xp
    w = backend.asarray(weight, xp.float32)
    total = float(w.sum(dtype=xp.float64))
    if not total > 0:
        return 0.0
    return float((backend.asarray(amplitude, xp.float32) * w).sum(dtype=xp.float64)) / total


def add_point(image: Any, source: SubtractedSource, beam: Beam, cell_rad: float, *,
              backend: Backend, reach: float = 6.0) -> Any:
    """``image`` + the beam (peak 1) × flux centred on the source's sub-pixel position."""
    xp = backend.xp
    maj, mnr = beam.pixels(cell_rad)
    s_maj, s_min = maj / FWHM_PER_SIGMA, mnr / FWHM_PER_SIGMA
    pa = math.radians(beam.bpa_deg)
    ux, uy = math.sin(pa), math.cos(pa)
    npix = image.shape[0]
    h = int(math.ceil(reach * maj))
    x0, y0 = int(round(source.x_pix)), int(round(source.y_pix))
    xs = slice(max(0, x0 - h), min(npix, x0 + h + 1))
    ys = slice(max(0, y0 - h), min(npix, y0 + h + 1))
    if xs.start >= xs.stop or ys.start >= ys.stop:
        return image
    x = (xp.arange(xs.start, xs.stop, dtype=xp.float64) - source.x_pix)[:, None]
    y = (xp.arange(ys.start, ys.stop, dtype=xp.float64) - source.y_pix)[None, :]
    along = x * ux + y * uy
    across = -x * uy + y * ux
    out = image.copy()
    out[xs, ys] += (source.flux_jy * xp.exp(-0.5 * ((along / s_maj) ** 2
                                                    + (across / s_min) ** 2))).astype(out.dtype)
    return out
