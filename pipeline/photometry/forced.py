"""Forced photometry: the restoring beam fitted at fixed positions, with local background.

At each position a linear least-squares fit of ``A · beam(x − x0) + B`` over a small box
(A the flux density in Jy for a point source, B a constant background) runs for all
positions at once as array expressions (NumPy, or CuPy through ``pipeline.backend``).
Image noise is correlated over the beam, so the uncertainty of A is
``σ · sqrt(wᵀ R w)`` with w the estimator's pixel weights and R the noise correlation,
taken as the restoring beam (Condon 1997); σ comes from a local rms map (tile MAD of the
residual image when there is one, else of the image itself). Fluxes are divided by the
primary beam at each position; positions below ``pb_cutoff`` are not measured.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backend import Backend, cpu_backend
from pipeline.errors import ContimgError

FLAG_EDGE = 1    # the fit box reaches past the image edge
FLAG_NAN = 2     # blanked (NaN) pixels inside the fit box
_MAD_TO_SIGMA = 1.4826
_FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))


class ImageReadError(ContimgError):
    """A FITS image that forced photometry cannot use."""

    def __init__(self, path: Path | str, problem: str, remedy: str = "re-run the image stage"):
        super().__init__(f"image {path}: {problem}; {remedy}")
        self.path = Path(path)


@dataclass(frozen=True, kw_only=True)
class PhotometryConfig:
    """Parameters of forced photometry and blind detection."""

    pb_cutoff: float = 0.2            # measure where the primary-beam power is at least this
    box_fwhm: float = 1.5             # fit-box half-width in major-axis FWHMs
    rms_tile_fwhm: float = 16.0       # rms-map tile side in major-axis FWHMs
    detect_sigma: float = 5.0         # island threshold, in local rms
    match_radius_arcsec: float | None = None   # None: the restoring beam's BMAJ
    min_island_pixels: int = 3
    # A candidate fainter than this fraction of a known source's apparent flux within
    # sidelobe_radius_deg of it is taken for a sidelobe (a drift scan's N–S streaks).
    sidelobe_fraction: float = 0.005
    sidelobe_radius_deg: float = 2.0
    # ...or fainter than this share of the known source's own dirty sidelobe at the
    # candidate's offset (the PSF's envelope there): what CLEAN and calibration errors
    # leave of it. A snapshot of a sparse array has 20-40 % sidelobes, and a drift scan's
    # sources change apparent flux across the 5 minutes, which a CLEAN component of
    # fixed flux cannot follow. 1.0: whatever the whole dirty sidelobe could explain.
    # Measured on 12 simulated 24-antenna snapshots: candidates 321 → 138 (0.1 → 1.0),
    # every injected variable and transient still found (their fluxes are 50-210× the
    # sidelobe at their offsets; the false ones were 0.5-1.2× it, on the N–S and E–W
    # lines of moderately bright sources and of 3C286).
    psf_sidelobe_fraction: float = 1.0
    # A candidate with this many other islands within artefact_radius_fwhm BMAJs is part
    # of a streak or ring of artefacts; real new sources stand alone at this density.
    artefact_neighbours: int = 3
    artefact_radius_fwhm: float = 10.0
    # A candidate in a line of at least this many other islands along the image's rows or
    # columns (within half a BMAJ of it across, sidelobe_radius_deg along) sits on an
    # E–W or N–S streak: the sidelobe pattern of a T-shaped array, of whatever source
    # made it. Four random islands so aligned are rare (~0.2 % at 40 islands per deg²).
    streak_members: int = 4

    def __post_init__(self):
        if not 0.0 < self.pb_cutoff <= 1.0:
            raise ValueError(f"photometry.pb_cutoff must be in (0, 1], got {self.pb_cutoff}")
        for name in ("box_fwhm", "rms_tile_fwhm", "detect_sigma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"photometry.{name} must be positive, got {getattr(self, name)}")
        if self.match_radius_arcsec is not None and self.match_radius_arcsec <= 0:
            raise ValueError("photometry.match_radius_arcsec must be positive, "
                             f"got {self.match_radius_arcsec}")


@dataclass(frozen=True, kw_only=True)
class SkyImage:
    """One plane of a FITS image: data (ny, nx) float32 Jy/beam and its geometry."""

    path: Path
    data: np.ndarray
    wcs: Any                      # astropy.wcs.WCS, celestial axes only
    bmaj_deg: float
    bmin_deg: float
    bpa_deg: float
    freq_hz: float | None

    @property
    def cd(self) -> np.ndarray:
        """(2, 2) pixel → (east, north) offsets in degrees (the WCS's scale matrix)."""
        return np.asarray(self.wcs.pixel_scale_matrix, float)

    @property
    def bmaj_px(self) -> float:
        """The restoring beam's major axis FWHM in pixels (along the finer pixel axis)."""
        return self.bmaj_deg / float(np.min(np.abs(np.linalg.eigvals(self.cd))))


@dataclass(frozen=True, kw_only=True)
class ForcedTable:
    """Forced measurements; ``index`` points into the positions given (those measured)."""

    index: np.ndarray          # (n,) int
    flux_jy: np.ndarray        # PB-corrected flux density
    flux_err_jy: np.ndarray
    snr: np.ndarray
    local_rms_jy: np.ndarray   # PB-corrected
    background_jy: np.ndarray  # Jy/beam, as fitted (not PB-corrected)
    pb: np.ndarray
    flags: np.ndarray          # FLAG_* bits

    def __len__(self) -> int:
        return int(self.index.size)


# -------------------------------------------------------------------------- reading
def read_image(path: str | Path) -> SkyImage:
    """Read the first plane of a FITS image; ImageReadError names what is wrong."""
    from pipeline.fits_plane import FitsPlaneError, read_fits_plane  # noqa: PLC0415

    path = Path(path)
    try:
        plane = read_fits_plane(path)
    except FitsPlaneError as exc:
        raise ImageReadError(path, exc.problem, exc.remedy) from None
    missing = [k for k in ("BMAJ", "BMIN") if getattr(plane, f"{k.lower()}_deg") is None]
    if missing:
        raise ImageReadError(path, f"header has no restoring beam ({', '.join(missing)})",
                             "write BMAJ/BMIN/BPA in degrees when restoring the image")
    unit = plane.bunit.strip().upper().replace(" ", "")
    if unit not in ("JY/BEAM", "JY/BEAM."):
        warnings.warn(f"image {path}: BUNIT is {plane.bunit!r}, expected JY/BEAM; "
                      "fluxes assume Jy/beam", stacklevel=2)
    if not np.isfinite(plane.data).any():
        raise ImageReadError(path, "every pixel is NaN or infinite")
    return SkyImage(path=path, data=plane.data, wcs=plane.wcs, bmaj_deg=plane.bmaj_deg,
                    bmin_deg=plane.bmin_deg, bpa_deg=plane.bpa_deg or 0.0,
                    freq_hz=plane.freq_hz)


# ------------------------------------------------------------------------- geometry
def beam_precision_px(cd: np.ndarray, bmaj_deg: float, bmin_deg: float,
                      bpa_deg: float) -> np.ndarray:
    """(2, 2) P with beam(d) = exp(−½ dᵀ P d) for pixel offsets d = (dx, dy)."""
    pa = math.radians(bpa_deg)
    major = np.array([math.sin(pa), math.cos(pa)])     # (east, north): PA east of north
    minor = np.array([math.cos(pa), -math.sin(pa)])
    smaj, smin = bmaj_deg * _FWHM_TO_SIGMA, bmin_deg * _FWHM_TO_SIGMA
    cov_sky_inv = np.outer(major, major) / smaj ** 2 + np.outer(minor, minor) / smin ** 2
    return cd.T @ cov_sky_inv @ cd


def to_pixels(image: SkyImage, ra_deg: np.ndarray, dec_deg: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel (x, y) of sky positions in degrees."""
    x, y = image.wcs.all_world2pix(np.asarray(ra_deg, float), np.asarray(dec_deg, float), 0)
    return np.asarray(x, float), np.asarray(y, float)


def airy_pb(image: SkyImage, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Primary-beam power at pixels (x, y): the 4.65 m Airy pattern about the image centre.

    In a SIN projection the intermediate coordinates are direction cosines, so
    sin θ = |CD · (p − CRPIX)| exactly.
    """
    from pipeline.instrument.sky import airy_power  # noqa: PLC0415

    if image.freq_hz is None:
        raise ImageReadError(image.path, "no frequency axis, so no primary-beam model",
                             "write a FREQ axis or a PB-corrected image beside it")
    crpix = np.asarray(image.wcs.wcs.crpix, float) - 1.0
    d = np.stack([np.asarray(x, float) - crpix[0], np.asarray(y, float) - crpix[1]])
    lm = np.tensordot(image.cd, d, axes=1)
    sin_theta = np.clip(np.radians(np.hypot(lm[0], lm[1])), 0.0, 1.0)
    return airy_power(np.arcsin(sin_theta), image.freq_hz)


def pb_from_pbcor(restored: np.ndarray, pbcor: np.ndarray, x: np.ndarray,
                  y: np.ndarray) -> np.ndarray:
    """Primary beam at (x, y) as restored / PB-corrected, bilinear between pixels.

    The PB-corrected image is the restored one divided by the beam pixel by pixel, so
    their ratio is the imager's own beam. Blanked (NaN) corners are left out of the
    interpolation; NaN where all four are blanked.
    """
    ny, nx = restored.shape
    x0 = np.clip(np.floor(x).astype(int), 0, nx - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, ny - 2)
    fx, fy = np.clip(x - x0, 0.0, 1.0), np.clip(y - y0, 0.0, 1.0)
    total = np.zeros(len(x0))
    weight = np.zeros(len(x0))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            with np.errstate(divide="ignore", invalid="ignore"):
                r = restored[y0 + dy, x0 + dx].astype(float) / pbcor[y0 + dy, x0 + dx]
            ok = np.isfinite(r) & (r > 0)
            w = np.where(ok, wy * wx + 1e-12, 0.0)
            total += np.where(ok, r, 0.0) * w
            weight += w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


# ------------------------------------------------------------------------- rms map
def rms_tiles(data: Any, *, tile: int, backend: Backend | None = None) -> Any:
    """(ceil(ny/tile), ceil(nx/tile)) robust rms (1.4826 · MAD) of square tiles.

    Tiles with fewer than a quarter of their pixels finite take the median of the others.
    """
    xp = (backend or cpu_backend()).xp
    ny, nx = data.shape
    ty, tx = -(-ny // tile), -(-nx // tile)
    padded = xp.full((ty * tile, tx * tile), xp.nan, dtype=xp.float32)
    padded[:ny, :nx] = data
    blocks = padded.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty, tx, -1)
    n_ok = xp.isfinite(blocks).sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = xp.nanmedian(blocks, axis=-1)
        mad = xp.nanmedian(xp.abs(blocks - med[..., None]), axis=-1) * _MAD_TO_SIGMA
    good = (n_ok >= tile * tile // 4) & xp.isfinite(mad) & (mad > 0)
    if not bool(good.any()):
        return xp.full((ty, tx), xp.nan, dtype=xp.float32)
    return xp.where(good, mad, xp.median(mad[good])).astype(xp.float32)


def sample_tiles(tiles: Any, x: Any, y: Any, *, tile: int, backend: Backend | None = None
                 ) -> Any:
    """Bilinear interpolation of a tile map (values at tile centres) at pixels (x, y)."""
    xp = (backend or cpu_backend()).xp
    ty, tx = tiles.shape
    fy = xp.clip((xp.asarray(y, dtype=xp.float64) + 0.5) / tile - 0.5, 0, ty - 1)
    fx = xp.clip((xp.asarray(x, dtype=xp.float64) + 0.5) / tile - 0.5, 0, tx - 1)
    y0, x0 = xp.floor(fy).astype(xp.int64), xp.floor(fx).astype(xp.int64)
    y1, x1 = xp.minimum(y0 + 1, ty - 1), xp.minimum(x0 + 1, tx - 1)
    wy, wx = fy - y0, fx - x0
    return ((1 - wy) * ((1 - wx) * tiles[y0, x0] + wx * tiles[y0, x1])
            + wy * ((1 - wx) * tiles[y1, x0] + wx * tiles[y1, x1]))


def rms_map(data: Any, *, tile: int, backend: Backend | None = None) -> Any:
    """Full-size (ny, nx) local rms: the tile map interpolated at every pixel."""
    xp = (backend or cpu_backend()).xp
    tiles = rms_tiles(data, tile=tile, backend=backend)
    ny, nx = data.shape
    yy = xp.arange(ny, dtype=xp.float64)[:, None]
    xx = xp.arange(nx, dtype=xp.float64)[None, :]
    return sample_tiles(tiles, xx, yy, tile=tile, backend=backend).astype(xp.float32)


# --------------------------------------------------------------------------- kernel
def fit_beam_amplitudes(data: Any, x: Any, y: Any, *, precision: np.ndarray, half: int,
                        backend: Backend | None = None) -> tuple[Any, Any, Any, Any]:
    """Least-squares ``A · beam + B`` at every (x, y), all positions at once.

    data : (ny, nx) float32 Jy/beam; x, y : (n,) pixel positions; precision : (2, 2)
    beam precision in pixels (``beam_precision_px``); half : box half-width, pixels.
    Returns A (n,) Jy, B (n,) Jy/beam, noise gain (n,) = sqrt(wᵀ R w) so that
    σ_A = σ_pixel · gain, and flags (n,) int. A is NaN where the box holds too little.
    """
    xp = (backend or cpu_backend()).xp
    ny, nx = data.shape
    off = xp.arange(-half, half + 1)
    ix = xp.rint(x).astype(xp.int64)
    iy = xp.rint(y).astype(xp.int64)
    yy = iy[:, None, None] + off[None, :, None]                 # (n, k, 1)
    xx = ix[:, None, None] + off[None, None, :]                 # (n, 1, k)
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    patch = data[xp.clip(yy, 0, ny - 1), xp.clip(xx, 0, nx - 1)].astype(xp.float64)
    finite = xp.isfinite(patch)
    mask = inside & finite
    patch = xp.where(mask, patch, 0.0)
    dx = xx - xp.asarray(x, dtype=xp.float64)[:, None, None]
    dy = yy - xp.asarray(y, dtype=xp.float64)[:, None, None]
    p = xp.asarray(precision, dtype=xp.float64)
    g = xp.exp(-0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy))
    kk = (2 * half + 1) ** 2
    core = (g * g).reshape(len(ix), kk).sum(1)
    g = xp.where(mask, g, 0.0)
    m = mask.astype(xp.float64)
    n = len(ix)
    g, m, patch = g.reshape(n, kk), m.reshape(n, kk), patch.reshape(n, kk)
    a11, a12, a22 = (g * g).sum(1), g.sum(1), m.sum(1)
    b1, b2 = (g * patch).sum(1), patch.sum(1)
    det = a11 * a22 - a12 * a12
    # Half the beam's weight must be on good pixels for A to mean anything.
    ok = (det > 1e-12 * core * xp.maximum(a22, 1.0)) & (a11 >= 0.5 * core)
    det = xp.where(ok, det, 1.0)
    amp = xp.where(ok, (a22 * b1 - a12 * b2) / det, xp.nan)
    bg = xp.where(ok, (a11 * b2 - a12 * b1) / det, xp.nan)
    w = m * (a22[:, None] * g - a12[:, None]) / det[:, None]   # A = Σ w · data
    gain = xp.sqrt(xp.maximum(((w @ _box_correlation(off, p, xp)) * w).sum(1), 0.0))
    gain = xp.where(ok, gain, xp.nan)
    flags = (xp.where(~inside.reshape(n, kk).all(1), FLAG_EDGE, 0)
             | xp.where((inside & ~finite).reshape(n, kk).any(1), FLAG_NAN, 0))
    return amp, bg, gain, flags


def fit_in_chunks(data: Any, x: Any, y: Any, *, precision: np.ndarray, half: int,
                  backend: Backend | None = None, chunk: int = 2048
                  ) -> tuple[Any, Any, Any, Any]:
    """``fit_beam_amplitudes`` over ``chunk`` positions at a time.

    Keeps the (chunk, k, k) work arrays to tens of MB whatever the number of positions.
    """
    xp = (backend or cpu_backend()).xp
    parts = [fit_beam_amplitudes(data, x[i:i + chunk], y[i:i + chunk], precision=precision,
                                 half=half, backend=backend)
             for i in range(0, max(len(x), 1), chunk)]
    return tuple(xp.concatenate([p[j] for p in parts]) for j in range(4))


def _box_correlation(off: Any, p: Any, xp: Any) -> Any:
    """(k², k²) noise correlation between box pixels: the beam at their separation."""
    oy, ox = xp.meshgrid(off, off, indexing="ij")
    oy, ox = oy.ravel().astype(xp.float64), ox.ravel().astype(xp.float64)
    dx, dy = ox[:, None] - ox[None, :], oy[:, None] - oy[None, :]
    return xp.exp(-0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy))


# -------------------------------------------------------------------------- driver
def forced_photometry(image: SkyImage, ra_deg: np.ndarray, dec_deg: np.ndarray, *,
                      config: PhotometryConfig | None = None,
                      residual: np.ndarray | None = None, pbcor: np.ndarray | None = None,
                      backend: Backend | None = None) -> ForcedTable:
    """Measure every position whose primary-beam power is at least ``config.pb_cutoff``.

    ``residual`` (same shape) gives the local rms when present; ``pbcor`` (the
    PB-corrected image) gives the primary beam, else the Airy model about the centre.
    """
    config = config or PhotometryConfig()
    backend = backend or cpu_backend()
    x, y = to_pixels(image, ra_deg, dec_deg)
    ny, nx = image.data.shape
    on_image = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < nx - 0.5) \
        & (y > -0.5) & (y < ny - 0.5)
    idx = np.flatnonzero(on_image)
    x, y = x[idx], y[idx]
    pb = pb_at(image, x, y, pbcor=pbcor)
    keep = np.isfinite(pb) & (pb >= config.pb_cutoff)
    idx, x, y, pb = idx[keep], x[keep], y[keep], pb[keep]
    tile = max(16, int(round(config.rms_tile_fwhm * image.bmaj_px)))
    half = max(2, int(math.ceil(config.box_fwhm * image.bmaj_px)))
    data = backend.asarray(image.data)
    noise_src = backend.asarray(residual) if residual is not None else data
    tiles = rms_tiles(noise_src, tile=tile, backend=backend)
    precision = beam_precision_px(image.cd, image.bmaj_deg, image.bmin_deg, image.bpa_deg)
    xd, yd = backend.asarray(x), backend.asarray(y)
    amp, bg, gain, flags = fit_in_chunks(data, xd, yd, precision=precision, half=half,
                                         backend=backend)
    sigma = backend.to_host(sample_tiles(tiles, xd, yd, tile=tile, backend=backend))
    amp, bg, gain, flags = (backend.to_host(a) for a in (amp, bg, gain, flags))
    err = sigma * gain
    good = np.isfinite(amp) & np.isfinite(err) & (err > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = amp / err
    return ForcedTable(index=idx[good], flux_jy=(amp / pb)[good], flux_err_jy=(err / pb)[good],
                       snr=snr[good], local_rms_jy=(sigma / pb)[good], background_jy=bg[good],
                       pb=pb[good], flags=flags[good].astype(np.int32))


def pb_at(image: SkyImage, x: np.ndarray, y: np.ndarray, *,
          pbcor: np.ndarray | None = None) -> np.ndarray:
    """Primary beam at pixels (x, y): from the PB-corrected image if given, else Airy."""
    if pbcor is not None:
        return pb_from_pbcor(image.data, pbcor, x, y)
    return airy_pb(image, x, y)
