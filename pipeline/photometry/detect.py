"""Blind detection: islands above N σ that no known source explains → new-source candidates.

Islands are connected pixels at or above ``detect_sigma`` times the local rms (the same
tile map forced photometry uses), labelled with ``scipy.ndimage.label``. Each island's
position is its flux-weighted centroid (the peak pixel when the centroid falls outside
the island); its flux is the beam fit at that position, as for forced photometry. Only
islands inside the primary-beam cutoff count: outside it the catalog was not measured,
so an unmatched island there would be a false "new" source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from pipeline.photometry.forced import (
    PhotometryConfig,
    SkyImage,
    beam_precision_px,
    fit_in_chunks,
    pb_at,
    rms_map,
    to_pixels,
)


@dataclass(frozen=True, kw_only=True)
class Islands:
    """Islands found in one image (all arrays (n,)); fluxes PB-corrected, Jy."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray
    x: np.ndarray
    y: np.ndarray
    peak_jy_beam: np.ndarray   # apparent peak pixel value
    flux_jy: np.ndarray
    flux_err_jy: np.ndarray
    snr: np.ndarray
    local_rms_jy: np.ndarray
    pb: np.ndarray
    n_pixels: np.ndarray

    def __len__(self) -> int:
        return int(self.ra_deg.size)

    @property
    def apparent_jy(self) -> np.ndarray:
        """Fluxes as the image holds them, before the primary-beam correction."""
        return self.flux_jy * self.pb

    def take(self, idx: np.ndarray) -> Islands:
        """The islands at ``idx``."""
        return Islands(**{k: np.asarray(v)[idx] for k, v in self.__dict__.items()})


def find_islands(image: SkyImage, *, config: PhotometryConfig | None = None,
                 residual: np.ndarray | None = None,
                 pbcor: np.ndarray | None = None) -> Islands:
    """Islands at or above ``config.detect_sigma`` local rms inside the PB cutoff."""
    config = config or PhotometryConfig()
    data = image.data
    tile = max(16, int(round(config.rms_tile_fwhm * image.bmaj_px)))
    sigma = rms_map(residual if residual is not None else data, tile=tile)
    with np.errstate(invalid="ignore"):
        above = np.isfinite(data) & (data >= config.detect_sigma * sigma)
    labels, n = ndimage.label(above)
    if n == 0:
        return _empty()
    # Island statistics from the island pixels alone: scipy's per-label maximum sorts
    # the whole image (seconds on 2048²), these few per cent of it sort in milliseconds.
    ny, nx = data.shape
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat]
    val = data.ravel()[flat].astype(np.float64)
    py, px = np.divmod(flat, nx)
    sizes = np.bincount(lab, minlength=n + 1)[1:]
    wsum = np.bincount(lab, weights=val, minlength=n + 1)[1:]
    cx = np.bincount(lab, weights=val * px, minlength=n + 1)[1:] / wsum
    cy = np.bincount(lab, weights=val * py, minlength=n + 1)[1:] / wsum
    top = np.lexsort((val, lab))[np.cumsum(sizes) - 1]     # each island's brightest pixel
    peaks, peak_x, peak_y = val[top], px[top].astype(float), py[top].astype(float)
    # A ring-shaped island's centroid can sit off the island; fall back to the peak there.
    iy, ix = np.rint(cy).astype(int), np.rint(cx).astype(int)
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    on_island = np.zeros(n, bool)
    on_island[inside] = labels[iy[inside], ix[inside]] == np.arange(1, n + 1)[inside]
    cx = np.where(on_island, cx, peak_x)
    cy = np.where(on_island, cy, peak_y)
    keep = sizes >= config.min_island_pixels
    cx, cy, peaks, sizes = cx[keep], cy[keep], peaks[keep], sizes[keep]
    pb = pb_at(image, cx, cy, pbcor=pbcor)
    inside_pb = np.isfinite(pb) & (pb >= config.pb_cutoff)
    cx, cy, peaks, sizes, pb = (a[inside_pb] for a in (cx, cy, peaks, sizes, pb))
    if cx.size == 0:
        return _empty()
    precision = beam_precision_px(image.cd, image.bmaj_deg, image.bmin_deg, image.bpa_deg)
    half = max(2, int(math.ceil(config.box_fwhm * image.bmaj_px)))
    amp, _bg, gain, _flags = fit_in_chunks(data, cx, cy, precision=precision, half=half)
    local = sigma[np.clip(np.rint(cy).astype(int), 0, ny - 1),
                  np.clip(np.rint(cx).astype(int), 0, nx - 1)].astype(float)
    # A fit that failed (box mostly blanked) falls back to the peak, the point-source flux.
    amp = np.where(np.isfinite(amp), amp, peaks)
    err = np.where(np.isfinite(gain), local * gain, local)
    ra, dec = image.wcs.all_pix2world(cx, cy, 0)
    return Islands(ra_deg=np.asarray(ra, float) % 360.0, dec_deg=np.asarray(dec, float),
                   x=cx, y=cy, peak_jy_beam=peaks, flux_jy=amp / pb, flux_err_jy=err / pb,
                   snr=amp / err, local_rms_jy=local / pb, pb=pb,
                   n_pixels=sizes.astype(np.int64))


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def unmatched(islands: Islands, known_ra_deg: np.ndarray, known_dec_deg: np.ndarray, *,
              radius_arcsec: float) -> np.ndarray:
    """Indices of islands with no known source within ``radius_arcsec``."""
    if len(islands) == 0:
        return np.zeros(0, dtype=np.int64)
    if np.size(known_ra_deg) == 0:
        return np.arange(len(islands))
    tree = cKDTree(_unit_vectors(known_ra_deg, known_dec_deg))
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    dist, _ = tree.query(_unit_vectors(islands.ra_deg, islands.dec_deg), k=1)
    return np.flatnonzero(dist > chord)


def sidelobes(islands: Islands, bright_ra_deg: np.ndarray, bright_dec_deg: np.ndarray,
              bright_apparent_jy: np.ndarray, *, fraction: float,
              radius_deg: float) -> np.ndarray:
    """Mask of islands fainter than ``fraction`` of a known source within ``radius_deg``.

    Fluxes compared are apparent (as in the image, before the primary-beam correction):
    a sidelobe scales with the source's apparent flux.
    """
    out = np.zeros(len(islands), bool)
    strong = np.flatnonzero(np.asarray(bright_apparent_jy, float) > 0)
    if len(islands) == 0 or strong.size == 0:
        return out
    tree = cKDTree(_unit_vectors(np.asarray(bright_ra_deg)[strong],
                                 np.asarray(bright_dec_deg)[strong]))
    chord = 2.0 * math.sin(math.radians(radius_deg) / 2.0)
    apparent = islands.apparent_jy
    for i, near in enumerate(tree.query_ball_point(
            _unit_vectors(islands.ra_deg, islands.dec_deg), r=chord)):
        if near:
            brightest = float(np.max(np.asarray(bright_apparent_jy)[strong[near]]))
            out[i] = apparent[i] < fraction * brightest
    return out


def psf_sidelobes(islands: Islands, image: SkyImage, psf: np.ndarray,
                  bright_ra_deg: np.ndarray, bright_dec_deg: np.ndarray,
                  bright_apparent_jy: np.ndarray, *, fraction: float,
                  radius_deg: float) -> np.ndarray:
    """Mask of islands that ``fraction`` of a brighter source's dirty sidelobes could explain.

    The sources are the known ones and the image's other islands; one within a beam of
    the island is the island itself (or its match) and is skipped.

    psf : (ny, nx) the image's point-spread function, peak 1 at its brightest pixel. At
    an island's offset from each known source within ``radius_deg`` the PSF envelope
    (its largest |value| within a beam of that offset) times the source's apparent flux
    is the sidelobe CLEAN had to remove; calibration and deconvolution errors leave a
    share of it (a sparse array's snapshot PSF has 20-40 % sidelobes along N–S and E–W
    lines, so its streaks reach several per cent of a bright source). Fluxes compared
    are apparent, as for :func:`sidelobes`.
    """
    out = np.zeros(len(islands), bool)
    strong = np.flatnonzero(np.nan_to_num(np.asarray(bright_apparent_jy, float)) > 0)
    if len(islands) == 0 or strong.size == 0 or psf is None:
        return out
    size = 2 * max(1, int(math.ceil(image.bmaj_px))) + 1
    env = ndimage.maximum_filter(np.abs(np.nan_to_num(np.asarray(psf, np.float32))), size=size)
    ny, nx = env.shape
    cy, cx = np.unravel_index(int(np.nanargmax(psf)), psf.shape)
    env = env / max(float(env[cy, cx]), 1e-12)
    ra = np.asarray(bright_ra_deg, float)[strong]
    dec = np.asarray(bright_dec_deg, float)[strong]
    flux = np.asarray(bright_apparent_jy, float)[strong]
    kx, ky = to_pixels(image, ra, dec)
    tree = cKDTree(_unit_vectors(ra, dec))
    chord = 2.0 * math.sin(math.radians(radius_deg) / 2.0)
    apparent = islands.apparent_jy
    own = image.bmaj_px    # within a beam: the island itself (or its match), no sidelobe
    for i, near in enumerate(tree.query_ball_point(
            _unit_vectors(islands.ra_deg, islands.dec_deg), r=chord)):
        near = np.asarray(near, dtype=np.int64)
        near = near[np.hypot(islands.x[i] - kx[near], islands.y[i] - ky[near]) > own]
        if not near.size:
            continue
        ix = np.rint(cx + islands.x[i] - kx[near]).astype(int)
        iy = np.rint(cy + islands.y[i] - ky[near]).astype(int)
        ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        lobe = np.where(ok, env[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)], 0.0)
        out[i] = bool(np.any(apparent[i] < fraction * lobe * flux[near]))
    return out


def crowded(cands: Islands, islands: Islands, *, radius_deg: float,
            neighbours: int) -> np.ndarray:
    """Mask of candidates with at least ``neighbours`` other islands within ``radius_deg``."""
    if len(cands) == 0:
        return np.zeros(0, bool)
    tree = cKDTree(_unit_vectors(islands.ra_deg, islands.dec_deg))
    chord = 2.0 * math.sin(math.radians(radius_deg) / 2.0)
    counts = tree.query_ball_point(_unit_vectors(cands.ra_deg, cands.dec_deg), r=chord,
                                   return_length=True)
    return np.asarray(counts) - 1 >= neighbours     # the candidate is among the islands


def streaks(cands: Islands, islands: Islands, *, half_width_px: float, length_px: float,
            members: int) -> np.ndarray:
    """Mask of candidates on a streak of islands along their image row or column.

    A streak: ≥ ``members`` other islands on the line, one of them brighter than the
    candidate (the streak's source is the brightest on it, not a member). On the row:
    |Δy| ≤ ``half_width_px`` and |Δx| ≤ ``length_px``; on the column the same with x
    and y swapped (pixel axes along RA and Dec). Brightness is apparent.
    """
    out = np.zeros(len(cands), bool)
    if len(cands) == 0 or len(islands) <= members:
        return out
    apparent = islands.apparent_jy
    for i in range(len(cands)):
        dx = np.abs(islands.x - cands.x[i])
        dy = np.abs(islands.y - cands.y[i])
        itself = (dx <= half_width_px) & (dy <= half_width_px)
        mine = cands.apparent_jy[i]
        for line in ((dy <= half_width_px) & (dx <= length_px) & ~itself,
                     (dx <= half_width_px) & (dy <= length_px) & ~itself):
            if int(line.sum()) >= members and float(apparent[line].max()) > mine:
                out[i] = True
    return out


def new_source_candidates(image: SkyImage, known_ra_deg: np.ndarray,
                          known_dec_deg: np.ndarray, *, config: PhotometryConfig | None = None,
                          residual: np.ndarray | None = None, pbcor: np.ndarray | None = None,
                          known_apparent_jy: np.ndarray | None = None,
                          psf: np.ndarray | None = None) -> tuple[Islands, int]:
    """(islands no known source explains, number of islands found in all).

    A candidate must also pass the threshold in its beam fit (an island of a few noisy
    pixels can pass it pixel-wise and not as a source), and not be a sidelobe of a known
    source whose apparent flux in this image is ``known_apparent_jy`` (NaN: unmeasured),
    by a fixed fraction and, given the image's ``psf``, by that source's own sidelobes.
    """
    config = config or PhotometryConfig()
    islands = find_islands(image, config=config, residual=residual, pbcor=pbcor)
    radius = (config.match_radius_arcsec if config.match_radius_arcsec is not None
              else image.bmaj_deg * 3600.0)
    cands = islands.take(unmatched(islands, known_ra_deg, known_dec_deg, radius_arcsec=radius))
    keep = (cands.snr >= config.detect_sigma) & ~crowded(
        cands, islands, radius_deg=config.artefact_radius_fwhm * image.bmaj_deg,
        neighbours=config.artefact_neighbours) & ~streaks(
        cands, islands, half_width_px=0.5 * image.bmaj_px,
        length_px=config.sidelobe_radius_deg / image.bmaj_deg * image.bmaj_px,
        members=config.streak_members)
    if known_apparent_jy is not None:
        flux = np.nan_to_num(np.asarray(known_apparent_jy, float), nan=0.0)
        keep &= ~sidelobes(cands, known_ra_deg, known_dec_deg, flux,
                           fraction=config.sidelobe_fraction,
                           radius_deg=config.sidelobe_radius_deg)
        if psf is not None:
            # the image's own islands count too: a bright new source's sidelobes are no
            # more new than a known one's (its N–S and E–W streaks were most of the
            # candidates left in a full-array image with an uncatalogued 0.3 Jy source)
            keep &= ~psf_sidelobes(cands, image, psf,
                                   np.concatenate([np.asarray(known_ra_deg, float),
                                                   islands.ra_deg]),
                                   np.concatenate([np.asarray(known_dec_deg, float),
                                                   islands.dec_deg]),
                                   np.concatenate([flux, islands.apparent_jy]),
                                   fraction=config.psf_sidelobe_fraction,
                                   radius_deg=config.sidelobe_radius_deg)
    return cands.take(np.flatnonzero(keep)), len(islands)


def _empty() -> Islands:
    z = np.zeros(0)
    return Islands(ra_deg=z, dec_deg=z, x=z, y=z, peak_jy_beam=z, flux_jy=z, flux_err_jy=z,
                   snr=z, local_rms_jy=z, pb=z, n_pixels=np.zeros(0, np.int64))
