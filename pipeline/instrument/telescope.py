"""The instrument: site, antenna layout, frequencies and integrations of a DSA-110-like array."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DEFAULT_LAYOUT = DATA_DIR / "antennas.csv"

DISH_DIAMETER_M = 4.65
N_SUBBANDS = 16
CHANNELS_PER_SUBBAND = 48
CHANNEL_WIDTH_HZ = 244_140.625
#: lower edge of the lowest channel; 768 channels of 244.140625 kHz reach 1498.9 MHz
BAND_LOW_EDGE_HZ = 1_311.4e6
SUBBAND_WIDTH_HZ = CHANNELS_PER_SUBBAND * CHANNEL_WIDTH_HZ
BAND_HIGH_EDGE_HZ = BAND_LOW_EDGE_HZ + N_SUBBANDS * SUBBAND_WIDTH_HZ
INTEGRATION_S = 12.884901888
INTEGRATIONS_PER_CHUNK = 24
CHUNK_S = INTEGRATION_S * INTEGRATIONS_PER_CHUNK
#: the correlator's products: two linear feeds, parallel hands only
POLARIZATIONS = ("xx", "yy")
#: telescope names this array's files carry: the simulator's, and those DSA-110's own
#: writers use (OVRO_MMA is CASA's name for the same site)
TELESCOPE_NAMES = ("DSA-110", "OVRO_DSA", "OVRO_MMA")


@dataclass(frozen=True, kw_only=True)
class Site:
    """Geodetic position of the array reference (WGS84)."""

    lat_deg: float = 37.2339
    lon_deg: float = -118.2825
    height_m: float = 1222.0

    def __post_init__(self):
        if not -90 <= self.lat_deg <= 90:
            raise ValueError(f"site latitude must be within ±90°, got {self.lat_deg}")

    def earth_location(self):
        """The site as an astropy EarthLocation."""
        from astropy import units as u  # noqa: PLC0415
        from astropy.coordinates import EarthLocation  # noqa: PLC0415
        return EarthLocation.from_geodetic(lon=self.lon_deg * u.deg, lat=self.lat_deg * u.deg,
                                           height=self.height_m * u.m)


OVRO = Site()


@dataclass(frozen=True, kw_only=True, eq=False)
class Layout:
    """Antenna pads: names, ECEF positions and which are active.

    ecef_m : (npad, 3) float64, absolute ECEF metres; enu_m : (npad, 3) relative to site.
    """

    names: tuple[str, ...]
    ecef_m: np.ndarray
    enu_m: np.ndarray
    active: np.ndarray
    site: Site
    path: Path | None = None

    def __post_init__(self):
        n = len(self.names)
        if self.ecef_m.shape != (n, 3) or self.enu_m.shape != (n, 3) or self.active.shape != (n,):
            raise ValueError(f"layout {self.path}: position arrays do not match {n} names")
        if len(set(self.names)) != n:
            raise ValueError(f"layout {self.path}: antenna names are not unique")

    @property
    def n_active(self) -> int:
        """Number of active pads."""
        return int(self.active.sum())

    def select(self, n: int | None = None) -> np.ndarray:
        """Indices of ``n`` active pads spread evenly along the arms (all active if None).

        Pads are listed arm by arm from one end to the other, so taking every k-th of the
        active ones keeps both arms' ends and therefore the longest baselines.
        """
        idx = np.flatnonzero(self.active)
        if n is None:
            return idx
        if not 2 <= n <= len(self.names):
            raise ValueError(f"--antennas must be between 2 and {len(self.names)} "
                             f"(pads in {self.path.name if self.path else 'the layout'}), got {n}")
        if n > len(idx):
            # more than the active ones: take inactive pads too, in pad order
            extra = np.flatnonzero(~self.active)[: n - len(idx)]
            return np.sort(np.concatenate([idx, extra]))
        pick = np.unique(np.round(np.linspace(0, len(idx) - 1, n)).astype(int))
        return idx[pick]


def load_layout(path: str | Path = DEFAULT_LAYOUT, *, site: Site = OVRO) -> Layout:
    """Read an antenna layout CSV: ``name`` and ECEF ``x_m,y_m,z_m`` and/or ENU ``east_m,...``.

    ECEF columns win when both are present; ENU columns are metres from ``site``. An
    ``active`` column (0/1) is optional (default all active). ``#`` lines are comments.
    """
    from astropy.table import Table  # noqa: PLC0415
    from pyuvdata import utils  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"antenna layout {path}: no such file")
    t = Table.read(path, format="ascii.csv", comment="#")
    cols = set(t.colnames)
    if "name" not in cols:
        raise ValueError(f"antenna layout {path}: needs a 'name' column, has {t.colnames}")
    lat, lon = np.radians(site.lat_deg), np.radians(site.lon_deg)
    if {"x_m", "y_m", "z_m"} <= cols:
        ecef = np.stack([np.asarray(t[c], float) for c in ("x_m", "y_m", "z_m")], axis=1)
        enu = utils.ENU_from_ECEF(ecef, latitude=lat, longitude=lon, altitude=site.height_m)
    elif {"east_m", "north_m", "up_m"} <= cols:
        enu = np.stack([np.asarray(t[c], float) for c in ("east_m", "north_m", "up_m")], axis=1)
        ecef = utils.ECEF_from_ENU(enu, latitude=lat, longitude=lon, altitude=site.height_m)
    else:
        raise ValueError(f"antenna layout {path}: needs x_m,y_m,z_m (ECEF) or "
                         "east_m,north_m,up_m columns")
    active = (np.asarray(t["active"]).astype(int) != 0 if "active" in cols
              else np.ones(len(t), bool))
    return Layout(names=tuple(str(n) for n in t["name"]), ecef_m=ecef, enu_m=np.asarray(enu),
                  active=active, site=site, path=path)


def channels_per_subband_ok(n: int) -> bool:
    """Whether ``n`` output channels per subband divide the 48 correlator channels."""
    return n >= 1 and CHANNELS_PER_SUBBAND % n == 0


def subband_fine_frequencies(sb: int) -> np.ndarray:
    """(48,) channel centres in Hz of subband ``sb``, descending (sb00 is the highest)."""
    if not 0 <= sb < N_SUBBANDS:
        raise ValueError(f"subband must be 0..{N_SUBBANDS - 1}, got {sb}")
    top = N_SUBBANDS * CHANNELS_PER_SUBBAND - sb * CHANNELS_PER_SUBBAND   # exclusive
    k = np.arange(top - 1, top - CHANNELS_PER_SUBBAND - 1, -1)
    return BAND_LOW_EDGE_HZ + (k + 0.5) * CHANNEL_WIDTH_HZ


def average_channels(x: np.ndarray, n_out: int, axis: int = -1) -> np.ndarray:
    """Mean over consecutive groups of channels so that ``n_out`` remain along ``axis``."""
    x = np.moveaxis(x, axis, -1)
    group = x.shape[-1] // n_out
    out = x.reshape(*x.shape[:-1], n_out, group).mean(axis=-1)
    return np.moveaxis(out, -1, axis)
