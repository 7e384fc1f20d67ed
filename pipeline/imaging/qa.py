"""Image QA: noise against the radiometer equation, reference sources recovered, a verdict.

- rms: robust (MAD) rms of the residual image; peak and dynamic range of the restored one.
- theoretical rms: the radiometer equation per visibility, σ_I = SEFD / (2 √(Δν τ)) per
  real part of Stokes I = (XX + YY) / 2, carried through the imaging weights W:
  σ_image = √(Σ W² σ²) / Σ W (σ scaled by the data weights, which are inverse variances).
- reference sources: catalog sources inside the image whose apparent flux (catalog flux
  at the image frequency × primary beam) reaches 5 × rms are expected; one is matched when
  the restored image peaks within one beam of it at ≥ half its apparent flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.backend import Backend
from pipeline.imaging.beam import Beam
from pipeline.imaging.config import ImagingConfig
from pipeline.imaging.primary_beam import PrimaryBeam, radec_to_sin
from pipeline.instrument.sky import REF_FREQ_HZ, Sky


@dataclass(frozen=True, kw_only=True)
class ReferenceMatch:
    """Reference sources expected in an image and those found."""

    n_expected: int
    n_matched: int
    names: tuple[str, ...] = ()
    expected_jy: tuple[float, ...] = ()
    found_jy: tuple[float, ...] = field(default=())


@dataclass(frozen=True, kw_only=True)
class ImageQA:
    """What the store records about an image's quality."""

    rms_jy: float
    peak_jy: float
    dynamic_range: float
    theoretical_rms_jy: float
    n_ref_expected: int
    n_ref_matched: int
    qa_passed: bool
    qa_reason: str | None

    def fields(self) -> dict[str, Any]:
        """The images-table columns this QA fills."""
        return {"rms_jy": self.rms_jy, "peak_jy": self.peak_jy,
                "dynamic_range": self.dynamic_range,
                "theoretical_rms_jy": self.theoretical_rms_jy,
                "n_ref_expected": self.n_ref_expected, "n_ref_matched": self.n_ref_matched,
                "qa_passed": self.qa_passed, "qa_reason": self.qa_reason}


def theoretical_rms(imaging_weight: Any, data_weight: Any, *, sefd_jy: float,
                    channel_width_hz: float, integration_s: float, backend: Backend) -> float:
    """Radiometer-equation rms (Jy/beam) of a Stokes I image made with these weights.

    imaging_weight, data_weight : (nrow, nchan); the median positive data weight is taken
    to carry the radiometer σ of one channel and integration.
    """
    xp = backend.xp
    # float32 arrays with float64 sums: a full-size chunk is 84 M weights, and float64
    # copies of both plus a full median took 7 s of a 60 s image
    W = xp.asarray(imaging_weight, dtype=xp.float32).ravel()
    w = xp.asarray(data_weight, dtype=xp.float32).ravel()
    good = (W > 0) & (w > 0)
    if not bool(good.any()) or channel_width_hz <= 0 or integration_s <= 0:
        return float("nan")
    sigma = sefd_jy / (2.0 * math.sqrt(channel_width_hz * integration_s))
    # the median of a strided subset of ≤ 4 M weights is the median for this purpose
    step = max(1, W.size // (1 << 22))
    sample = w[::step][good[::step]]
    w_ref = float(xp.median(sample if sample.size else w[good]))
    var = float(xp.where(good, W * W / xp.where(good, w, 1.0), 0.0).sum(dtype=xp.float64))
    total = float(xp.where(good, W, 0.0).sum(dtype=xp.float64))
    return float(sigma * math.sqrt(var * w_ref) / total)


def apparent_flux(sky: Sky, pb: PrimaryBeam, freq_hz: float) -> np.ndarray:
    """(nsrc,) flux densities at ``freq_hz`` (power law from 1.4 GHz) times the beam."""
    spec = sky.flux_jy * (freq_hz / REF_FREQ_HZ) ** sky.spectral_index
    return spec * pb.response(sky.ra_deg, sky.dec_deg)


def sources_in_image(sky: Sky, *, ra0_deg: float, dec0_deg: float, npix: int,
                     cell_rad: float, margin_px: float = 0.0) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Indices of sources inside the image and their pixel coordinates (gridder layout)."""
    sep_cos = (np.sin(np.radians(sky.dec_deg)) * np.sin(np.radians(dec0_deg))
               + np.cos(np.radians(sky.dec_deg)) * np.cos(np.radians(dec0_deg))
               * np.cos(np.radians(sky.ra_deg - ra0_deg)))
    near = np.flatnonzero(sep_cos > math.cos(min(math.pi / 2, 1.5 * npix * cell_rad)))
    le, m = radec_to_sin(sky.ra_deg[near], sky.dec_deg[near], ra0_deg=ra0_deg,
                         dec0_deg=dec0_deg)
    x, y = le / cell_rad + npix // 2, m / cell_rad + npix // 2
    inside = ((x >= margin_px) & (x <= npix - 1 - margin_px)
              & (y >= margin_px) & (y <= npix - 1 - margin_px))
    return near[inside], x[inside], y[inside]


def match_reference(image: np.ndarray, sky: Sky, pb: PrimaryBeam, *, ra0_deg: float,
                    dec0_deg: float, cell_rad: float, freq_hz: float, rms_jy: float,
                    beam: Beam, nsigma: float = 5.0) -> ReferenceMatch:
    """Reference sources expected above ``nsigma`` × rms and those the image shows.

    image : (npix, npix) host float32 restored (not PB-corrected) image, gridder layout.
    """
    npix = image.shape[0]
    radius = max(1.0, beam.pixels(cell_rad)[0])
    idx, x, y = sources_in_image(sky, ra0_deg=ra0_deg, dec0_deg=dec0_deg, npix=npix,
                                 cell_rad=cell_rad, margin_px=radius + 1)
    if idx.size == 0:
        return ReferenceMatch(n_expected=0, n_matched=0)
    app = apparent_flux(sky.take(idx), pb, freq_hz)
    want = app >= nsigma * rms_jy
    idx, x, y, app = idx[want], x[want], y[want], app[want]
    r = int(math.ceil(radius))
    off = np.arange(-r, r + 1)
    disk = (off[:, None] ** 2 + off[None, :] ** 2) <= radius * radius
    found = np.empty(idx.size)
    for k, (xi, yi) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int),
                                     strict=True)):
        box = image[xi - r:xi + r + 1, yi - r:yi + r + 1]
        found[k] = float(np.nanmax(np.where(disk, box, -np.inf)))
    ok = found >= 0.5 * app
    return ReferenceMatch(n_expected=int(idx.size), n_matched=int(ok.sum()),
                          names=tuple(sky.names[i] for i in idx),
                          expected_jy=tuple(float(a) for a in app),
                          found_jy=tuple(float(f) for f in found))


def assess(*, rms_jy: float, peak_jy: float, theoretical_rms_jy: float,
           match: ReferenceMatch, beam: Beam, config: ImagingConfig) -> ImageQA:
    """The QA verdict: finite noise near the radiometer value, most reference sources found."""
    reasons = []
    if not (math.isfinite(rms_jy) and rms_jy > 0):
        reasons.append(f"residual rms is {rms_jy}")
    elif (math.isfinite(theoretical_rms_jy)
          and rms_jy > max(config.qa_max_noise_ratio * theoretical_rms_jy,
                           peak_jy / config.qa_dynamic_range)):
        # a snapshot of a bright calibrator is dynamic-range limited, not broken
        reasons.append(f"rms {rms_jy * 1e3:.3g} mJy is {rms_jy / theoretical_rms_jy:.1f}× the "
                       f"radiometer value (limit {config.qa_max_noise_ratio:g}×) and the "
                       f"dynamic range is only {peak_jy / rms_jy:.0f}")
    if match.n_expected and match.n_matched < config.qa_min_matched_fraction * match.n_expected:
        reasons.append(f"{match.n_matched} of {match.n_expected} reference sources found "
                       f"(need {config.qa_min_matched_fraction:.0%})")
    if not (beam.bmaj_deg > 0 and beam.bmin_deg > 0):
        reasons.append("restoring beam is degenerate")
    dr = peak_jy / rms_jy if rms_jy > 0 and math.isfinite(rms_jy) else float("nan")
    return ImageQA(rms_jy=float(rms_jy), peak_jy=float(peak_jy), dynamic_range=float(dr),
                   theoretical_rms_jy=float(theoretical_rms_jy),
                   n_ref_expected=match.n_expected, n_ref_matched=match.n_matched,
                   qa_passed=not reasons, qa_reason="; ".join(reasons) or None)
