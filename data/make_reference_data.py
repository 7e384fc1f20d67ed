"""Generate the shipped reference data: antenna layout, synthetic NVSS-like catalog, calibrators.

Run once (``python data/make_reference_data.py``); the outputs are committed, and the
script is kept so that anyone can see, and reproduce bit for bit, how they were made.
Everything is seeded; nothing is downloaded.

- ``antennas.csv``: a DSA-110-like T of 117 pads at OVRO, 96 active. East-west arm
  2.5 km (70 pads), north-south arm 1.5 km south of the crossing (47 pads); spacing is
  6 m near the crossing and grows cubically outwards, so short baselines are dense and
  the longest reach ~2.9 km.
- ``catalog.csv``: point sources over dec 28°–38°, all RA, S(1.4 GHz) >= 8 mJy, counts
  N(>S) = 30 deg^-2 (S / 5 mJy)^-1.1 (NVSS-like density), spectral indices N(-0.75, 0.2).
- ``calibrators.csv``: 3C286, 3C48, 3C147, 3C138 with Perley & Butler (2017, ApJS 230, 7,
  table 6) coefficients: log10 S[Jy] = a0 + a1 x + a2 x^2 + ..., x = log10(nu / GHz).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SITE_LAT_DEG, SITE_LON_DEG, SITE_HEIGHT_M = 37.2339, -118.2825, 1222.0
SEED = 110

CALIBRATORS = [
    # name, RA (J2000), Dec (J2000), PB2017 coefficients a0..an
    ("3C286", "13h31m08.288s", "+30d30m32.96s", [1.2481, -0.4507, -0.1798, 0.0357]),
    ("3C48", "01h37m41.30s", "+33d09m35.1s", [1.3253, -0.7553, -0.1914, 0.0498]),
    ("3C147", "05h42m36.14s", "+49d51m07.2s",
     [1.4516, -0.6961, -0.2007, 0.0640, -0.0464, 0.0289]),
    ("3C138", "05h21m09.89s", "+16d38m22.1s", [1.0088, -0.4981, -0.1552, -0.0102, 0.0223]),
]


def arm(n: int, length_m: float, first_m: float, step_m: float) -> np.ndarray:
    """Distances from the crossing: ``first + step k + c k^3`` reaching ``length_m``."""
    k = np.arange(n, dtype=float)
    c = (length_m - first_m - step_m * (n - 1)) / (n - 1) ** 3
    return first_m + step_m * k + c * k**3


def make_antennas(rng: np.random.Generator) -> list[dict]:
    """117 pads on a T: 70 east-west (west to east), then 47 north-south (north to south)."""
    half = arm(35, 1250.0, 6.0, 6.0)
    east = np.concatenate([-half[::-1], half])
    ns = arm(47, 1500.0, 12.0, 6.0)
    enu = np.zeros((117, 3))
    enu[:70, 0] = east
    enu[:70, 1] = rng.normal(0, 0.3, 70)          # pads are surveyed, not on a perfect line
    enu[70:, 0] = rng.normal(0, 0.3, 47)
    enu[70:, 1] = -ns
    # the site slopes gently: ~4 m over the arms, plus pad-to-pad scatter
    enu[:, 2] = 1.5e-3 * enu[:, 0] - 1.0e-3 * enu[:, 1] + rng.normal(0, 0.05, 117)
    inactive = set(rng.choice(np.r_[1:69, 71:116], size=21, replace=False).tolist())

    from pyuvdata import utils
    ecef = utils.ECEF_from_ENU(enu, latitude=np.radians(SITE_LAT_DEG),
                               longitude=np.radians(SITE_LON_DEG), altitude=SITE_HEIGHT_M)
    rows = []
    for i in range(117):
        rows.append({"name": f"DSA-{i + 1:03d}", "arm": "EW" if i < 70 else "NS",
                     "active": int(i not in inactive),
                     "east_m": f"{enu[i, 0]:.4f}", "north_m": f"{enu[i, 1]:.4f}",
                     "up_m": f"{enu[i, 2]:.4f}", "x_m": f"{ecef[i, 0]:.4f}",
                     "y_m": f"{ecef[i, 1]:.4f}", "z_m": f"{ecef[i, 2]:.4f}"})
    return rows


def make_catalog(rng: np.random.Generator, *, dec_min: float = 28.0, dec_max: float = 38.0,
                 s_min: float = 0.008, s_max: float = 20.0) -> list[dict]:
    """Uniform on the sphere over the strip; power-law counts between s_min and s_max."""
    area = np.degrees(2 * np.pi) * np.degrees(np.sin(np.radians(dec_max))
                                              - np.sin(np.radians(dec_min)))
    slope = 1.1
    n = rng.poisson(area * 30.0 * (s_min / 0.005) ** -slope)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dec_min)),
                                           np.sin(np.radians(dec_max)), n)))
    u = rng.uniform(0, 1, n)
    # inverse CDF of a truncated power law N(>S) ∝ S^-slope
    lo, hi = s_min ** -slope, s_max ** -slope
    flux = (lo - u * (lo - hi)) ** (-1 / slope)
    alpha = rng.normal(-0.75, 0.2, n)
    order = np.argsort(ra)
    rows = []
    for i in order:
        h = ra[i] / 15
        hh, mm = int(h), int((h * 60) % 60)
        ss = int((h * 3600) % 60)
        d = abs(dec[i])
        dd, dm, ds = int(d), int((d * 60) % 60), int((d * 3600) % 60)
        rows.append({"name": f"J{hh:02d}{mm:02d}{ss:02d}+{dd:02d}{dm:02d}{ds:02d}",
                     "ra_deg": f"{ra[i]:.5f}", "dec_deg": f"{dec[i]:.5f}",
                     "flux_jy": f"{flux[i]:.5f}", "spectral_index": f"{alpha[i]:.2f}"})
    return rows


def write_csv(path: Path, rows: list[dict], header: list[str]) -> None:
    """Write rows after ``#`` comment lines (astropy's CSV reader skips them)."""
    with open(path, "w", newline="") as fh:
        for line in header:
            fh.write(f"# {line}\n")
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    """Write antennas.csv, catalog.csv and calibrators.csv beside this script."""
    rng = np.random.default_rng(SEED)
    write_csv(HERE / "antennas.csv", make_antennas(rng), [
        "DSA-110-like T layout, made by data/make_reference_data.py (synthetic, seeded)",
        f"site: lat_deg={SITE_LAT_DEG} lon_deg={SITE_LON_DEG} height_m={SITE_HEIGHT_M}",
        "east/north/up: metres from the site; x/y/z: absolute ECEF (WGS84) metres"])
    write_csv(HERE / "catalog.csv", make_catalog(rng), [
        "synthetic NVSS-like catalog, made by data/make_reference_data.py (seeded)",
        "flux_jy at 1.4 GHz; S(nu) = flux_jy (nu / 1.4 GHz)^spectral_index"])
    rows = []
    from astropy.coordinates import SkyCoord
    for name, ra, dec, coeffs in CALIBRATORS:
        c = SkyCoord(ra, dec, frame="icrs")
        rows.append({"name": name, "ra_deg": f"{c.ra.deg:.6f}", "dec_deg": f"{c.dec.deg:.6f}",
                     "coefficients": " ".join(f"{a:.4f}" for a in coeffs)})
    write_csv(HERE / "calibrators.csv", rows, [
        "flux-density calibrators, Perley & Butler 2017 (ApJS 230, 7) table 6",
        "log10 S[Jy] = sum_k a_k log10(nu / GHz)^k; coefficients a0 a1 ... space-separated"])


if __name__ == "__main__":
    main()
