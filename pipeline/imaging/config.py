"""Imaging configuration: the instrument pipeline's WSClean defaults, and the image geometry.

Defaults follow what the DSA-110 pipeline asks of WSClean: a 3.5° × 3.5° field, cells of
one fifth of the synthesized beam, Briggs robust 0, up to 1000 CLEAN components at loop
gain 0.1 inside major cycles of gain 0.8, an auto-mask at 3σ and an auto-threshold at
0.5σ, w-correction on, and whichever backend the host offers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.instrument.predict import C_M_S

Weighting = Literal["natural", "uniform", "briggs"]


@dataclass(frozen=True, kw_only=True)
class ImagingConfig:
    """How an observation is imaged and CLEANed, and what its QA accepts.

    ``npix``/``cell_arcsec`` left as None are derived from the data (see :meth:`geometry`):
    the cell is the synthesized beam (λ_min / longest baseline) over ``cells_per_beam``
    and ``npix`` covers ``fov_deg``, rounded up to an even 2·3·5-smooth FFT size.
    """

    fov_deg: float = 3.5
    npix: int | None = None
    cell_arcsec: float | None = None
    cells_per_beam: float = 5.0
    weighting: Weighting = "briggs"
    robust: float = 0.0
    niter: int = 1000
    gain: float = 0.1
    mgain: float = 0.8
    auto_mask_sigma: float = 3.0
    auto_threshold_sigma: float = 0.5
    max_major: int = 20
    #: half-width (pixels) of the PSF patch the minor cycles subtract (Clark)
    psf_patch: int = 256
    do_wgridding: bool = True
    #: a calibrator within 1° of the phase centre is subtracted from the visibilities
    #: with its model before CLEAN and restored after (pipeline/imaging/bright.py)
    subtract_calibrator: bool = True
    #: gridder accuracy (ducc0's and the GPU kernel's relative L2 error). 1e-3 leaves the
    #: residual's error ~1000x below its noise: on the full-size benchmark chunk, rms
    #: 0.342 mJy and the ten brightest fluxes to 4 digits as at 1e-4, 70 → 54 s.
    epsilon: float = 1e-3
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    column: str = "CORRECTED_DATA"
    #: primary-beam response below which the PB-corrected image is blanked
    pb_cutoff: float = 0.1
    #: system equivalent flux density per polarization, for the radiometer-equation rms
    sefd_jy: float = 5800.0
    #: QA: the residual rms may exceed the radiometer value by this factor
    qa_max_noise_ratio: float = 3.0
    #: QA: ...unless a bright source limits it: rms up to peak / this is accepted
    qa_dynamic_range: float = 1000.0
    #: QA: at least this fraction of the expected reference sources must be found
    qa_min_matched_fraction: float = 0.5
    #: QA: the reference catalog (None: pipeline.simulate's bundled NVSS-like catalog)
    catalog_path: str | None = None
    thumbnail_px: int = 512

    def __post_init__(self):
        if self.npix is not None and (self.npix < 16 or self.npix % 2):
            raise ValueError(f"imaging.npix must be even and at least 16, got {self.npix}")
        if self.cell_arcsec is not None and not self.cell_arcsec > 0:
            raise ValueError(f"imaging.cell_arcsec must be positive, got {self.cell_arcsec}")
        if not 0 < self.fov_deg < 90:
            raise ValueError(f"imaging.fov_deg must be within (0, 90), got {self.fov_deg}")
        if not self.cells_per_beam >= 2:
            raise ValueError("imaging.cells_per_beam must be at least 2 (Nyquist), got "
                             f"{self.cells_per_beam}")
        if self.weighting not in ("natural", "uniform", "briggs"):
            raise ValueError("imaging.weighting must be natural, uniform or briggs, got "
                             f"{self.weighting!r}")
        if not -2 <= self.robust <= 2:
            raise ValueError(f"imaging.robust must be within [-2, 2], got {self.robust}")
        if self.niter < 0:
            raise ValueError(f"imaging.niter must not be negative, got {self.niter}")
        if not 0 < self.gain <= 1 or not 0 < self.mgain <= 1:
            raise ValueError(f"imaging.gain and imaging.mgain must be within (0, 1], got "
                             f"{self.gain} and {self.mgain}")
        if not self.auto_mask_sigma >= self.auto_threshold_sigma > 0:
            raise ValueError("imaging.auto_mask_sigma must be at least "
                             "imaging.auto_threshold_sigma > 0, got "
                             f"{self.auto_mask_sigma} and {self.auto_threshold_sigma}")
        if self.max_major < 1 or self.psf_patch < 4:
            raise ValueError("imaging.max_major must be at least 1 and imaging.psf_patch at "
                             f"least 4, got {self.max_major} and {self.psf_patch}")
        if self.backend not in ("auto", "cpu", "gpu"):
            raise ValueError(f"imaging.backend must be auto, cpu or gpu, got {self.backend!r}")
        if not 0 < self.pb_cutoff < 1:
            raise ValueError(f"imaging.pb_cutoff must be within (0, 1), got {self.pb_cutoff}")

    @property
    def weighting_label(self) -> str:
        """The weighting as the store records it: natural, uniform or briggs(R)."""
        return f"briggs({self.robust:g})" if self.weighting == "briggs" else self.weighting

    def geometry(self, uvw_m: np.ndarray, freq_hz: np.ndarray) -> tuple[int, float]:
        """(npix, cell in radians) for these baselines (nrow, 3) m and frequencies (nchan,) Hz."""
        if self.cell_arcsec is not None:
            cell = math.radians(self.cell_arcsec / 3600.0)
        else:
            cell = synthesized_beam_rad(uvw_m, freq_hz) / self.cells_per_beam
        npix = self.npix if self.npix is not None else fast_even_size(
            math.ceil(math.radians(self.fov_deg) / cell))
        return npix, cell


def synthesized_beam_rad(uvw_m: np.ndarray, freq_hz: np.ndarray) -> float:
    """λ / B (rad): the synthesized beam of the longest projected baseline, top frequency."""
    uv = np.asarray(uvw_m, np.float64)[:, :2]
    longest = float(np.sqrt((uv * uv).sum(axis=1)).max()) if uv.size else 0.0
    if longest <= 0:
        raise ValueError("no baseline longer than 0 m: the synthesized beam is undefined")
    return C_M_S / float(np.max(freq_hz)) / longest


def fast_even_size(n: int) -> int:
    """Smallest even number ≥ ``n`` whose only prime factors are 2, 3 and 5 (fast FFTs)."""
    m = max(2, int(n))
    while True:
        if m % 2 == 0:
            k = m
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            if k == 1:
                return m
        m += 1
