"""The one FITS plane reader, and the viewer, cutouts and forced photometry reading through it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cutouts import CutoutError, cutout
from pipeline.fits_plane import FitsPlaneError, read_fits_plane
from pipeline.imaging.beam import Beam
from pipeline.imaging.products import ImageGeometry, write_fits
from pipeline.photometry.forced import ImageReadError, read_image
from pipeline.store.image_files import UnreadableImage, read_plane

GEOM = ImageGeometry(ra_deg=24.42, dec_deg=33.16, npix=64, cell_rad=math.radians(3 / 3600),
                     freq_hz=1.405e9, bandwidth_hz=187.5e6, start_mjd=61002.2,
                     mid_mjd=61002.2018, object_name="x")
BEAM = Beam(bmaj_deg=0.005, bmin_deg=0.004, bpa_deg=10.0)


@pytest.fixture
def product(tmp_path):
    """An imager product with a distinct value in every pixel, and those pixels."""
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
    path = write_fits(tmp_path / "x.image.fits", image, GEOM, kind="image", beam=BEAM)
    with fits.open(path) as hdul:
        return path, hdul[0].data[0, 0].astype(np.float32)


def test_the_imagers_product_reads_with_its_wcs_beam_and_frequency(product):
    path, pixels = product
    plane = read_fits_plane(path)
    # the stored pixels, as written (a round trip through the file: exact)
    np.testing.assert_array_equal(plane.data, pixels)
    assert plane.data.dtype == np.float32 and plane.data.dtype.isnative
    assert plane.wcs.naxis == 2 and plane.bunit.upper() == "JY/BEAM"
    assert (plane.bmaj_deg, plane.bmin_deg, plane.bpa_deg) == (0.005, 0.004, 10.0)
    assert plane.freq_hz == 1.405e9 and plane.date_obs.startswith("2025-")
    # the phase centre at 0-based pixel (npix/2 - 1, npix/2): CRPIX = (npix/2, npix/2 + 1)
    ra, dec = plane.world(np.array([31.0]), np.array([32.0]))
    assert ra[0] == pytest.approx(GEOM.ra_deg) and dec[0] == pytest.approx(GEOM.dec_deg)
    assert plane.cell_deg == pytest.approx((3 / 3600, 3 / 3600))


def test_viewer_cutouts_and_photometry_see_the_same_plane(product):
    path, pixels = product
    viewer, photometry = read_plane(path), read_image(path)
    np.testing.assert_array_equal(viewer.data, pixels)
    np.testing.assert_array_equal(photometry.data, pixels)
    assert viewer.wcs.to_header() == photometry.wcs.to_header()
    ra, dec = viewer.world(np.array([10.0]), np.array([50.0]))
    cut = cutout(path, float(ra[0]), float(dec[0]), size_arcsec=15.0)   # 5 × 5 pixels
    x, y = (round(v) for v in cut.position_pix)
    assert cut.data[y, x] == pixels[50, 10]


def _cube(path, ctypes: list[str]):
    """A 3-axis FITS image whose first axis is ``ctypes[0]`` (numpy order reversed)."""
    h = fits.Header()
    shape = {"RA---SIN": 8, "DEC--SIN": 6, "FREQ": 2}
    for i, c in enumerate(ctypes, 1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"] = c, 1.0
        h[f"CRVAL{i}"] = {"RA---SIN": 24.0, "DEC--SIN": 33.0, "FREQ": 1.4e9}[c]
        h[f"CDELT{i}"] = {"RA---SIN": -1e-3, "DEC--SIN": 1e-3, "FREQ": 1e6}[c]
    h["BMAJ"], h["BMIN"], h["BUNIT"] = 0.005, 0.004, "JY/BEAM"
    data = np.ones([shape[c] for c in reversed(ctypes)], np.float32)
    fits.PrimaryHDU(data, header=h).writeto(path)
    return path


def test_a_plane_whose_first_axes_are_not_ra_dec_is_refused_by_every_reader(tmp_path):
    # FREQ first: taking index 0 of the leading numpy axes would give a (Dec, FREQ) slice
    path = _cube(tmp_path / "freq-first.fits", ["FREQ", "RA---SIN", "DEC--SIN"])
    for read, error in ((read_fits_plane, FitsPlaneError), (read_plane, UnreadableImage),
                        (read_image, ImageReadError)):
        with pytest.raises(error, match="freq-first.fits: the first two axes are not RA/Dec"):
            read(path)
    with pytest.raises(FitsPlaneError, match=r"write images with RA, Dec as axes 1 and 2"):
        read_fits_plane(path)
    with pytest.raises(CutoutError, match="the first two axes are not RA/Dec"):
        cutout(path, 24.0, 33.0)
    good = read_fits_plane(_cube(tmp_path / "ok.fits", ["RA---SIN", "DEC--SIN", "FREQ"]))
    assert good.shape == (6, 8) and good.freq_hz == 1.4e9


def test_frequency_falls_back_to_restfrq_and_a_missing_beam_is_none(tmp_path):
    h = fits.Header()
    for i, (c, v, d) in enumerate((("RA---SIN", 24.0, -1e-3), ("DEC--SIN", 33.0, 1e-3)), 1):
        h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CRPIX{i}"] = c, v, d, 1.0
    h["RESTFRQ"] = 1.42e9
    fits.PrimaryHDU(np.ones((4, 4), np.float32), header=h).writeto(tmp_path / "r.fits")
    plane = read_fits_plane(tmp_path / "r.fits")
    assert plane.freq_hz == 1.42e9 and plane.bmaj_deg is None and plane.bpa_deg is None


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p, "no such file"),
    (lambda p: p.write_bytes(b"not a fits file at all" * 200) and p, "not a readable FITS file"),
    (lambda p: fits.PrimaryHDU(np.zeros(5)).writeto(p) or p, "primary HDU holds no image"),
    (lambda p: fits.PrimaryHDU(np.zeros((4, 4))).writeto(p) or p,
     r"no celestial \(RA/Dec\) axes in the WCS"),
])
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, make, problem):
    path = make(tmp_path / "bad.fits")
    with pytest.raises(FitsPlaneError, match=f"bad.fits: {problem}") as info:
        read_fits_plane(path)
    assert info.value.path == path and info.value.remedy
