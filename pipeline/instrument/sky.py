"""The simulated sky: reference catalog, calibrators, injected variables, geometry, beam."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.instrument.telescope import DATA_DIR, DISH_DIAMETER_M, Site

DEFAULT_CATALOG = DATA_DIR / "catalog.csv"
DEFAULT_CALIBRATORS = DATA_DIR / "calibrators.csv"
REF_FREQ_HZ = 1.4e9
C_M_S = 299_792_458.0

# Column names accepted by load_catalog, first match wins (ours, then NVSS/VizieR style).
_RA_NAMES = ("ra_deg", "RAJ2000", "RA", "ra", "_RAJ2000")
_DEC_NAMES = ("dec_deg", "DEJ2000", "DEC", "Dec", "dec", "_DEJ2000")
_FLUX_NAMES = ("flux_jy", "S1.4", "S1_4", "flux", "Flux", "FLUX")
_NAME_NAMES = ("name", "NVSS", "Name", "NAME", "source")


@dataclass(frozen=True, kw_only=True, eq=False)
class Sky:
    """Point sources with 1.4-GHz flux densities, spectra and optional variability.

    ra_deg, dec_deg, flux_jy, spectral_index : (nsrc,) float (ICRS, Jy at 1.4 GHz).
    kind : (nsrc,) str, one of catalog, calibrator, variable, transient.
    pb_coeffs : per source, Perley-Butler coefficients (empty: power law).
    variability : per source, a dict (see :func:`flux_scale`) or None.
    """

    names: tuple[str, ...]
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    flux_jy: np.ndarray
    spectral_index: np.ndarray
    kind: tuple[str, ...]
    pb_coeffs: tuple[tuple[float, ...], ...] = field(default=())
    variability: tuple[dict | None, ...] = field(default=())

    def __post_init__(self):
        n = len(self.names)
        for name in ("ra_deg", "dec_deg", "flux_jy", "spectral_index"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"sky: {name} has shape {np.shape(getattr(self, name))}, "
                                 f"expected ({n},)")
        if not self.pb_coeffs:
            object.__setattr__(self, "pb_coeffs", ((),) * n)
        if not self.variability:
            object.__setattr__(self, "variability", (None,) * n)

    def __len__(self) -> int:
        return len(self.names)

    def take(self, idx) -> Sky:
        """The sources at integer indices ``idx``."""
        idx = np.asarray(idx, dtype=int)
        return Sky(names=tuple(self.names[i] for i in idx), ra_deg=self.ra_deg[idx],
                   dec_deg=self.dec_deg[idx], flux_jy=self.flux_jy[idx],
                   spectral_index=self.spectral_index[idx],
                   kind=tuple(self.kind[i] for i in idx),
                   pb_coeffs=tuple(self.pb_coeffs[i] for i in idx),
                   variability=tuple(self.variability[i] for i in idx))

    def __add__(self, other: Sky) -> Sky:
        return Sky(names=self.names + other.names,
                   ra_deg=np.concatenate([self.ra_deg, other.ra_deg]),
                   dec_deg=np.concatenate([self.dec_deg, other.dec_deg]),
                   flux_jy=np.concatenate([self.flux_jy, other.flux_jy]),
                   spectral_index=np.concatenate([self.spectral_index, other.spectral_index]),
                   kind=self.kind + other.kind, pb_coeffs=self.pb_coeffs + other.pb_coeffs,
                   variability=self.variability + other.variability)

    def flux_at(self, mjd: float) -> np.ndarray:
        """(nsrc,) float: 1.4-GHz flux densities in Jy at time ``mjd``."""
        out = np.array(self.flux_jy, dtype=float)
        for i, k in enumerate(self.kind):
            if k in ("variable", "transient") and self.variability[i] is not None:
                out[i] = flux_scale(self.variability[i], mjd) * self.flux_jy[i]
        return out

    def spectrum(self, freqs_hz: np.ndarray, mjd: float) -> np.ndarray:
        """(nsrc, nchan) float: flux densities in Jy at ``freqs_hz`` and time ``mjd``."""
        freqs = np.asarray(freqs_hz, dtype=float)
        out = self.flux_at(mjd)[:, None] * (freqs[None, :] / REF_FREQ_HZ) ** \
            self.spectral_index[:, None]
        for i in self._calibrators():
            out[i] = perley_butler(self.pb_coeffs[i], freqs)
        return out

    def _calibrators(self) -> list[int]:
        return [i for i, k in enumerate(self.kind) if k == "calibrator" and self.pb_coeffs[i]]


def flux_scale(var: dict[str, Any], mjd: float) -> float:
    """Flux relative to the catalog value at ``mjd`` for one variability model.

    Models: ``sinusoid`` (1 + amplitude sin(2 pi (t - t0) / period)), ``step`` (1 before
    t_step, ``ratio`` after), ``transient`` (1 between t_on and t_off, else 0).
    """
    model = var["model"]
    if model == "sinusoid":
        return 1.0 + var["amplitude"] * np.sin(2 * np.pi * (mjd - var["t0_mjd"]) * 86400.0
                                                 / var["period_s"])
    if model == "step":
        return var["ratio"] if mjd >= var["t_step_mjd"] else 1.0
    if model == "transient":
        return 1.0 if var["t_on_mjd"] <= mjd < var["t_off_mjd"] else 0.0
    raise ValueError(f"unknown variability model {model!r}")


def perley_butler(coeffs, freqs_hz) -> np.ndarray:
    """Flux density in Jy: log10 S = sum_k a_k log10(nu / GHz)^k (Perley & Butler 2017)."""
    x = np.log10(np.asarray(freqs_hz, dtype=float) / 1e9)
    return 10.0 ** np.polynomial.polynomial.polyval(x, np.asarray(coeffs, dtype=float))


def _column(t, names: tuple[str, ...], path: Path, what: str, required: bool = True):
    for name in names:
        if name in t.colnames:
            return t[name]
    if required:
        raise ValueError(f"catalog {path}: no {what} column (looked for {', '.join(names)})")
    return None


def _degrees(col) -> np.ndarray:
    """Degrees from a numeric column (its unit when it has one, else degrees)."""
    from astropy import units as u  # noqa: PLC0415
    unit = getattr(col, "unit", None)
    values = np.ma.filled(np.asarray(col, float), np.nan)
    return u.Quantity(values, unit).to_value(u.deg) if unit is not None else values


def load_catalog(path: str | Path = DEFAULT_CATALOG, *, default_spectral_index: float = -0.7,
                 min_flux_jy: float = 0.0) -> Sky:
    """Read a point-source catalog (CSV, VOTable or FITS) with astropy.

    Accepts our columns (name, ra_deg, dec_deg, flux_jy, spectral_index) or NVSS/VizieR
    ones (NVSS, RAJ2000, DEJ2000 in degrees or sexagesimal, S1.4 in mJy when its unit says
    so). A missing spectral index becomes ``default_spectral_index``.
    """
    from astropy.coordinates import SkyCoord  # noqa: PLC0415
    from astropy.table import Table  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalog {path}: no such file")
    if path.suffix.lower() == ".csv":
        import pandas as pd  # noqa: PLC0415 — ~20x faster than astropy's CSV reader here
        t = Table.from_pandas(pd.read_csv(path, comment="#"))
    else:
        t = Table.read(path)
    ra = _column(t, _RA_NAMES, path, "RA")
    dec = _column(t, _DEC_NAMES, path, "declination")
    if ra.dtype.kind in "US":
        c = SkyCoord(np.asarray(ra), np.asarray(dec), unit=("hourangle", "deg"))
        ra_deg, dec_deg = c.ra.deg, c.dec.deg
    else:
        ra_deg, dec_deg = _degrees(ra), _degrees(dec)
    fcol = _column(t, _FLUX_NAMES, path, "flux density")
    unit = getattr(fcol, "unit", None)
    if unit is not None:
        from astropy import units as u  # noqa: PLC0415
        flux = u.Quantity(np.ma.filled(np.asarray(fcol, float), np.nan), unit).to_value(u.Jy)
    elif fcol.name in ("S1.4", "S1_4"):
        flux = np.asarray(fcol, dtype=float) / 1e3     # NVSS tables give mJy
    else:
        flux = np.asarray(fcol, dtype=float)
    acol = _column(t, ("spectral_index", "alpha", "SpIdx"), path, "", required=False)
    alpha = (np.full(len(t), default_spectral_index) if acol is None
             else np.asarray(np.ma.filled(acol, default_spectral_index), dtype=float))
    ncol = _column(t, _NAME_NAMES, path, "", required=False)
    names = (tuple(str(n) for n in ncol) if ncol is not None
             else tuple(f"SRC{i:06d}" for i in range(len(t))))
    keep = np.flatnonzero(np.isfinite(flux) & (flux >= min_flux_jy))
    return Sky(names=names, ra_deg=np.asarray(ra_deg, float), dec_deg=np.asarray(dec_deg, float),
               flux_jy=flux, spectral_index=alpha, kind=("catalog",) * len(t)).take(keep)


def load_calibrators(path: str | Path = DEFAULT_CALIBRATORS) -> Sky:
    """Read the calibrator list: name, ra_deg, dec_deg, Perley-Butler coefficients."""
    from astropy.table import Table  # noqa: PLC0415

    path = Path(path)
    t = Table.read(path, format="ascii.csv", comment="#")
    coeffs = tuple(tuple(float(a) for a in str(c).split()) for c in t["coefficients"])
    flux = np.array([perley_butler(c, REF_FREQ_HZ) for c in coeffs])
    # the nominal spectral index at 1.4 GHz, for anyone who wants a power law
    alpha = np.array([np.polynomial.polynomial.polyval(
        np.log10(1.4), np.polynomial.polynomial.polyder(c)) for c in coeffs])
    return Sky(names=tuple(str(n) for n in t["name"]), ra_deg=np.asarray(t["ra_deg"], float),
               dec_deg=np.asarray(t["dec_deg"], float), flux_jy=flux, spectral_index=alpha,
               kind=("calibrator",) * len(t), pb_coeffs=coeffs)


def airy_power(theta_rad, freqs_hz, *, diameter_m: float = DISH_DIAMETER_M) -> np.ndarray:
    """Airy power pattern (2 J1(x) / x)^2, x = pi D sin(theta) / lambda; broadcasts."""
    from scipy.special import j1  # noqa: PLC0415

    x = np.pi * diameter_m * np.sin(np.asarray(theta_rad)) * np.asarray(freqs_hz) / C_M_S
    x = np.where(np.abs(x) < 1e-9, 1e-9, x)
    return (2.0 * j1(x) / x) ** 2


def hadec_to_enu(ha_rad, dec_rad, lat_rad: float) -> np.ndarray:
    """(..., 3) unit vectors (east, north, up) of hour angle / declination directions."""
    ha, dec = np.asarray(ha_rad), np.asarray(dec_rad)
    cl, sl = np.cos(lat_rad), np.sin(lat_rad)
    cd, sd, ch = np.cos(dec), np.sin(dec), np.cos(ha)
    return np.stack([-cd * np.sin(ha), cl * sd - sl * cd * ch, sl * sd + cl * cd * ch], axis=-1)


def source_enu(ra_deg, dec_deg, times_jd, lst_rad, site: Site) -> np.ndarray:
    """(nsrc, ntime, 3) apparent (east, north, up) directions of ICRS sources.

    Uses pyuvdata's apparent coordinates and LSTs, so that ``UVData.phase`` to a source
    puts it exactly at the phase centre of the simulated data.
    """
    from pyuvdata.utils.phasing import transform_icrs_to_app  # noqa: PLC0415

    ra = np.radians(np.asarray(ra_deg, float))
    dec = np.radians(np.asarray(dec_deg, float))
    ns, nt = ra.size, len(times_jd)
    if ns == 0:
        return np.zeros((0, nt, 3))
    t = np.asarray(times_jd, float)
    ends = t[[0, -1]]
    # apparent places change by milliarcseconds over a chunk (diurnal aberration):
    # exact at the first and last integration, linear in between
    app_ra, app_dec = transform_icrs_to_app(
        time_array=np.tile(ends, ns), ra=np.repeat(ra, 2), dec=np.repeat(dec, 2),
        telescope_loc=site.earth_location())
    app_ra, app_dec = app_ra.reshape(ns, 2), app_dec.reshape(ns, 2)
    span = ends[1] - ends[0]
    frac = (t - ends[0]) / span if span > 0 else np.zeros(nt)
    dra = (app_ra[:, 1] - app_ra[:, 0] + np.pi) % (2 * np.pi) - np.pi
    ra_t = app_ra[:, :1] + dra[:, None] * frac[None, :]
    dec_t = app_dec[:, :1] + (app_dec[:, 1] - app_dec[:, 0])[:, None] * frac[None, :]
    ha = np.asarray(lst_rad, float)[None, :] - ra_t
    return hadec_to_enu(ha, dec_t, np.radians(site.lat_deg))


def pointing_enu(dec_deg: float, site: Site) -> np.ndarray:
    """(3,) unit vector of the meridian at declination ``dec_deg`` (the dishes' pointing)."""
    return hadec_to_enu(0.0, np.radians(dec_deg), np.radians(site.lat_deg))


def meridian_icrs(times_jd, dec_deg: float, site: Site) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra_deg, dec_deg) of the meridian at apparent dec ``dec_deg`` at ``times_jd``."""
    from pipeline.instrument.phasing import meridian_icrs_deg  # noqa: PLC0415

    return meridian_icrs_deg(times_jd, dec_deg, site.earth_location())
