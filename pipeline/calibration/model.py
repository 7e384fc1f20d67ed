"""Model visibilities of a calibrator in a drift-scan Measurement Set.

The calibrator's Perley-Butler spectrum, attenuated by the 4.65 m Airy power pattern at
its angle from the (fixed, meridian) pointing at each integration, predicted through
:func:`pipeline.instrument.predict.predict` in the MS's own phasing and conjugation.

Geometry. The MS holds UVW = -R_t b for baselines b = x[ant2] - x[ant1] in the local
(east, north, up) frame, R_t the rotation its phasing used at time t (pyuvdata's
convention, conjugated by the MS writer). R_t is recovered from the MS itself (orthogonal
Procrustes of UVW on the antennas' ENU baselines, exact to round-off), and the
calibrator's apparent ENU direction s_t (as the simulator and pyuvdata compute it) is
rotated into the phased frame: (l, m, n) = R_t s_t. The data phase is then exactly
UVW . (l, m, n - 1), whatever small frame differences the phasing carried, and the MS
convention (DATA conjugated, UVW negated) makes the MS model ``predict(UVW_ms, ...)``.

Channel averaging. A correlator channel that averages N native channels (244.14 kHz
each) of a delay-tracked signal decorrelates a source away from the delay-tracking
centre (the pointing) by the Dirichlet kernel sin(N x) / (N sin x), x = pi dnu tau,
tau = b.(s - p) / c. With 48 channels per subband N = 1 and the factor is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore.tables import table

from pipeline.errors import ContimgError
from pipeline.instrument.predict import C_M_S, PointSources, predict
from pipeline.instrument.sky import (
    DEFAULT_CALIBRATORS,
    DEFAULT_CATALOG,
    Sky,
    airy_power,
    load_calibrators,
    load_catalog,
    pointing_enu,
    source_enu,
)
from pipeline.instrument.telescope import CHANNEL_WIDTH_HZ, OVRO, Site

#: catalog sources further than this from the phase centre are left out of a model
FIELD_RADIUS_DEG = 5.0


class CalibratorNotFound(ContimgError):
    """No calibrator (or not the named one) is usable in a Measurement Set."""

    def __init__(self, ms: Path | str, problem: str):
        super().__init__(f"{ms}: {problem}")
        self.ms = ms


def _require_ms(ms: Path) -> Path:
    ms = Path(ms)
    if not (ms / "table.dat").is_file():
        raise FileNotFoundError(f"{ms}: no such Measurement Set")
    return ms


def ms_site(ms: Path) -> Site:
    """The telescope site from OBSERVATION.TELESCOPE_LOCATION (ECEF), else OVRO."""
    try:
        with table(str(ms / "OBSERVATION"), ack=False) as obs:
            if "TELESCOPE_LOCATION" not in obs.colnames():
                return OVRO
            xyz = obs.getcol("TELESCOPE_LOCATION")[0]
    except RuntimeError:
        return OVRO
    from astropy import units as u  # noqa: PLC0415
    from astropy.coordinates import EarthLocation  # noqa: PLC0415
    loc = EarthLocation.from_geocentric(*xyz, unit=u.m)
    return Site(lat_deg=float(loc.lat.deg), lon_deg=float(loc.lon.deg),
                height_m=float(loc.height.to_value(u.m)))


def pointing_dec_deg(ms: Path) -> float:
    """Pointing declination: the converter's keyword, else the phase centre's."""
    with table(str(ms), ack=False) as t:
        kw = t.getkeywords()
    extra = kw.get("pyuvdata_extra", {}) or {}
    if "pointing_dec_deg" in extra:
        return float(extra["pointing_dec_deg"])
    if "phase_center_dec" in extra:
        return float(np.degrees(extra["phase_center_dec"]))
    with table(str(ms / "FIELD"), ack=False) as f:
        return float(np.degrees(f.getcol("PHASE_DIR")[0, 0, 1]))


def _antenna_enu(ms: Path, site: Site) -> np.ndarray:
    from pyuvdata import utils  # noqa: PLC0415
    with table(str(ms / "ANTENNA"), ack=False) as ant:
        ecef = ant.getcol("POSITION")
    # filler rows (antenna numbers no antenna has) hold zeros: leave them at the origin
    real = np.linalg.norm(ecef, axis=1) > 6e6
    enu = np.zeros_like(ecef)
    enu[real] = utils.ENU_from_ECEF(ecef[real], latitude=np.radians(site.lat_deg),
                                    longitude=np.radians(site.lon_deg),
                                    altitude=site.height_m)
    return enu


def frame_rotation(uvw: np.ndarray, b_enu: np.ndarray) -> np.ndarray:
    """(3, 3) rotation R with uvw ~ b_enu @ R.T, by orthogonal Procrustes (Kabsch).

    uvw, b_enu : (nbl, 3) metres. Exact for data phased by a rotation; only two
    non-parallel baselines are needed, so a nearly flat array is fine.
    """
    h = b_enu.T @ uvw
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return (vt.T @ np.diag([1.0, 1.0, d]) @ u.T)


def _sky_for(ms: Path, calibrator: str, catalog_path: Path | None,
             field_catalog: Path | None, min_field_jy: float, jd_mid: float,
             p_dec_deg: float) -> Sky:
    """The calibrator plus catalog sources whose apparent 1.4-GHz flux reaches the cut."""
    cals = load_calibrators(catalog_path or DEFAULT_CALIBRATORS)
    names = {n.upper(): i for i, n in enumerate(cals.names)}
    if calibrator.upper() not in names:
        raise CalibratorNotFound(ms, f"{calibrator!r} is not in the calibrator list "
                                 f"({', '.join(cals.names)})")
    sky = cals.take([names[calibrator.upper()]])
    if field_catalog is None:
        return sky
    cat = _catalog(Path(field_catalog))
    with table(str(ms / "FIELD"), ack=False) as f:
        ra0, dec0 = f.getcol("PHASE_DIR")[0, 0]
    ra, dec = np.radians(cat.ra_deg), np.radians(cat.dec_deg)
    cos_sep = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    near = np.flatnonzero(cos_sep > np.cos(np.radians(FIELD_RADIUS_DEG)))
    sep = np.arccos(np.clip(cos_sep[near], -1, 1))
    # the drift moves a source by up to ~0.6 deg in a chunk: judge it at its best
    best = np.maximum(sep - np.radians(0.7), 0.0)
    apparent = cat.flux_jy[near] * airy_power(best, 1.4e9)
    keep = near[apparent >= min_field_jy]
    # a catalog entry at the calibrator's own position is the calibrator itself
    far = np.degrees(np.arccos(np.clip(
        np.sin(np.radians(sky.dec_deg[0])) * np.sin(dec[keep]) + np.cos(np.radians(
            sky.dec_deg[0])) * np.cos(dec[keep]) * np.cos(ra[keep] - np.radians(
                sky.ra_deg[0])), -1, 1))) > 1 / 60
    return sky + cat.take(keep[far])


_CATALOGS: dict[Path, Sky] = {}


def _catalog(path: Path) -> Sky:
    # the 54 k-source catalog takes ~0.3 s to parse; calibrations reuse it
    if path not in _CATALOGS:
        _CATALOGS[path] = load_catalog(path)
    return _CATALOGS[path]


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelInputs:
    """Everything :func:`compute_model` needs from the MS and the catalogs (no tables open).

    Read on the thread that owns casacore; the arithmetic can then run on another.
    """

    site: Site
    time_s: np.ndarray
    uvw: np.ndarray
    ant1: np.ndarray
    ant2: np.ndarray
    freqs: np.ndarray
    width: float
    p_dec: float
    sky: Sky
    ant_enu: np.ndarray


def read_model_inputs(ms: Path, calibrator: str, *, catalog_path: Path | None = None,
                      field_catalog: Path | None = DEFAULT_CATALOG,
                      min_field_jy: float = 0.02) -> ModelInputs:
    """The MS columns, site, pointing, antennas and sky model a calibrator model needs.

    Parameters
    ----------
    ms : Path
        A converted chunk.
    calibrator : str
        Name in the calibrator list (case-insensitive).
    catalog_path : Path, optional
        Calibrator CSV (default data/calibrators.csv).
    field_catalog : Path or None
        Point-source catalog (NVSS-like; default data/catalog.csv) whose sources around
        the calibrator enter the model too; None for the calibrator alone. At DSA-110's
        resolution the rest of the 5-deg field adds ~1 Jy rms to every visibility of a
        16 Jy calibrator, which would bias gains by several per cent.
    min_field_jy : float
        Field sources whose beam-attenuated 1.4-GHz flux can reach this are modelled.
    """
    ms = _require_ms(ms)
    site = ms_site(ms)
    with table(str(ms), ack=False) as t:
        time_s, uvw = t.getcol("TIME"), t.getcol("UVW")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")[0]
        width = float(np.abs(spw.getcol("CHAN_WIDTH")[0]).mean())
    p_dec = pointing_dec_deg(ms)
    jd_mid = float(np.mean(np.unique(time_s))) / 86400.0 + 2400000.5
    sky = _sky_for(ms, calibrator, catalog_path, field_catalog, min_field_jy, jd_mid, p_dec)
    return ModelInputs(site=site, time_s=time_s, uvw=uvw, ant1=a1, ant2=a2, freqs=freqs,
                       width=width, p_dec=p_dec, sky=sky, ant_enu=_antenna_enu(ms, site))


def compute_model(inputs: ModelInputs, *, dtype=np.complex64) -> np.ndarray:
    """(nrow, nchan) model visibilities, Jy, from :func:`read_model_inputs` (opens no table).

    Rows as in the MS main table, in the MS's phasing: Stokes I, the model of every
    polarization XX and YY (unpolarised, the simulator's and CASA's convention; one
    polarization axis fewer halves the model's memory and passes); autocorrelations
    hold the sum of the apparent fluxes (no system noise), which the solver ignores.
    """
    from pyuvdata.utils.times import get_lst_for_time  # noqa: PLC0415

    from pipeline.instrument.phasing import use_bundled_iers  # noqa: PLC0415

    use_bundled_iers()
    site, sky, freqs, width = inputs.site, inputs.sky, inputs.freqs, inputs.width
    time_s, uvw, a1, a2 = inputs.time_s, inputs.uvw, inputs.ant1, inputs.ant2
    p_dec = inputs.p_dec
    times, t_idx = np.unique(time_s, return_inverse=True)
    jd = times / 86400.0 + 2400000.5
    lst = get_lst_for_time(jd, telescope_loc=site.earth_location())
    s_enu = source_enu(sky.ra_deg, sky.dec_deg, jd, lst, site)              # (nsrc, nt, 3)
    p_enu = pointing_enu(p_dec, site)
    theta = np.arccos(np.clip(s_enu @ p_enu, -1.0, 1.0))                    # (nsrc, nt)
    n_native = max(1, int(round(width / CHANNEL_WIDTH_HZ)))
    # native correlator channels inside each MS channel (the channel is their mean)
    offsets = (np.arange(n_native) - (n_native - 1) / 2) * CHANNEL_WIDTH_HZ
    fine = (freqs[:, None] + offsets[None, :]).ravel()
    spectrum = sky.spectrum(fine, float(jd.mean() - 2400000.5))             # (nsrc, nfine)
    # only the antennas in the data: the ANTENNA table also holds empty filler rows
    used, ant_idx = np.unique(np.concatenate([a1, a2]), return_inverse=True)
    c1, c2 = ant_idx[:a1.size], ant_idx[a1.size:]
    ant_enu = inputs.ant_enu[used]
    out = np.zeros((time_s.size, freqs.size), dtype=dtype)
    for k in range(times.size):
        rows = np.flatnonzero(t_idx == k)
        cross = rows[a1[rows] != a2[rows]]
        if cross.size < 2:
            continue
        rot = frame_rotation(-uvw[cross], ant_enu[c2[cross]] - ant_enu[c1[cross]])
        xyz = -(ant_enu @ rot.T)           # MS frame: UVW = xyz[ant2] - xyz[ant1]
        flux = spectrum * airy_power(theta[:, k, None], fine[None, :])
        # one integration's rows in order (the converter's layout): straight into them
        span = rows[-1] - rows[0] == rows.size - 1
        vis = averaged_model(xyz, c1[rows], c2[rows], lmn=s_enu[:, k] @ rot.T,
                             pointing=rot @ p_enu, freqs=freqs, offsets=offsets, flux=flux,
                             dtype=dtype, out=out[rows[0]:rows[-1] + 1] if span else None)
        if not span:
            out[rows] = vis
    return out


def averaged_model(xyz, ant1, ant2, *, lmn, pointing, freqs, offsets, flux,
                   dtype=np.complex64, out=None) -> np.ndarray:
    """Point-source visibilities of channels that average native correlator channels.

    Parameters
    ----------
    xyz : (nant, 3) float
        Antenna positions in the phased frame, metres (``uvw = xyz[ant2] - xyz[ant1]``).
    ant1, ant2 : (nrow,) int
        Indices into ``xyz``.
    lmn : (nsrc, 3) float
        Source directions in the phased frame (the phase centre is (0, 0, 1)).
    pointing : (3,) float
        The delay-tracking centre (the pointing) in the same frame.
    freqs : (nchan,) float
        MS channel centres, Hz.
    offsets : (n_native,) float
        Native channels' offsets from their MS channel's centre, Hz.
    flux : (nsrc, nchan * n_native) float
        Apparent flux densities at ``freqs[:, None] + offsets``, Jy.
    dtype : complex dtype of the result.
    out : (nrow, nchan) ``dtype`` array, optional; written (and returned) when given.

    Returns
    -------
    (nrow, nchan) complex: the mean over each channel's native channels of the sources'
    visibilities with phases relative to the pointing, times the pointing's own phase.
    """
    centre = np.array([0.0, 0.0, 1.0])
    n_native = len(offsets)
    if n_native == 1:
        # nothing averages: the sources' phases relative to the pointing and the
        # pointing's own phase add up to their phases relative to the phase centre,
        # one DFT (the per-row complex exponential of the pointing's phase cost more
        # than the prediction itself at 4656 baselines x 768 channels)
        return _predict_dft(xyz, ant1, ant2, lmn - centre, freqs + offsets[0], flux,
                            dtype=dtype, out=out)
    # delay-tracked to the pointing, as the correlator averages: phases relative to
    # the pointing over the native channels, the pointing's own phase put back after
    fine = (freqs[:, None] + offsets[None, :]).ravel()
    vis = _predict_dft(xyz, ant1, ant2, lmn - pointing, fine, flux, dtype=np.complex64)
    vis = vis.reshape(len(ant1), len(freqs), n_native).mean(axis=2, dtype=np.complex128)
    # exp(2 pi i uvw.(p - centre) nu / c) factorised per antenna (uvw = xyz[2] - xyz[1])
    turns = (xyz @ (pointing - centre))[:, None] * freqs[None, :] / C_M_S  # (nant, nchan)
    phasor = np.exp(2j * np.pi * (turns - np.round(turns)))
    vis *= phasor[ant2] * np.conj(phasor[ant1])
    if out is not None:
        out[...] = vis
        return out
    return vis.astype(dtype)


def _predict_dft(xyz, ant1, ant2, rel, freqs, flux, *, dtype, out=None):
    """predict()'s per-antenna DFT in channel blocks of 64.

    The factorised DFT is one (nant x nsrc) @ (nsrc x nant) GEMM per channel: 18 k small
    GEMMs for a 768-channel, 24-integration chunk, which is why the process runs BLAS on
    one thread (pipeline/process_tuning.py).
    """
    src = PointSources(l=rel[:, 0], m=rel[:, 1], w_coeff=rel[:, 2], flux=flux)
    return predict(None, freqs, src, antennas=(xyz, ant1, ant2), dtype=dtype,
                   chan_block=64, **({} if out is None else {"out": out}))


def calibrator_in_beam(ms: Path, *, max_offset_deg: float = 1.0,
                       catalog_path: Path | None = None) -> str | None:
    """The calibrator closest to the pointing centre at mid-time, if within range.

    Within ``max_offset_deg``, else None.

    The phase centre of a converted chunk is the meridian at mid-time (ICRS), i.e. the
    pointing at the moment the calibrator would transit.
    """
    ms = _require_ms(ms)
    cals = load_calibrators(catalog_path or DEFAULT_CALIBRATORS)
    with table(str(ms / "FIELD"), ack=False) as f:
        ra0, dec0 = f.getcol("PHASE_DIR")[0, 0]
    ra, dec = np.radians(cals.ra_deg), np.radians(cals.dec_deg)
    cos_sep = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    sep = np.degrees(np.arccos(np.clip(cos_sep, -1, 1)))
    best = int(np.argmin(sep))
    return cals.names[best] if sep[best] <= max_offset_deg else None
