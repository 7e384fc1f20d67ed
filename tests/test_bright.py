"""The calibrator subtracted before CLEAN and restored after (pipeline/imaging/bright.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.backend import cpu_backend
from pipeline.imaging.beam import Beam, restore
from pipeline.imaging.bright import SubtractedSource, add_point, apparent_flux, lm_pixels

BE = cpu_backend()
CELL = math.radians(3.0 / 3600)
BEAM = Beam(bmaj_deg=16.0 / 3600, bmin_deg=11.0 / 3600, bpa_deg=30.0)


def test_add_point_on_a_pixel_is_the_restored_component():
    """On a whole pixel, the added beam equals restoring a one-pixel model component."""
    npix = 128
    model = np.zeros((npix, npix), np.float32)
    model[70, 50] = 2.5
    zero = np.zeros_like(model)
    want = restore(model, zero, BEAM, CELL, backend=BE)
    got = add_point(zero, SubtractedSource(name="x", x_pix=70.0, y_pix=50.0, flux_jy=2.5),
                    BEAM, CELL, backend=BE)
    assert np.abs(got - want).max() < 1e-4 * 2.5
    assert not zero.any()      # a new image, the input untouched


def test_add_point_between_pixels_keeps_the_flux_and_the_position():
    """A sub-pixel source: its beam sums to flux × beam area, centred where it was put."""
    npix = 128
    src = SubtractedSource(name="x", x_pix=60.3, y_pix=66.7, flux_jy=4.0)
    img = add_point(np.zeros((npix, npix), np.float32), src, BEAM, CELL, backend=BE)
    total = img.sum() / BEAM.area_pixels(CELL)
    assert total == pytest.approx(4.0, rel=1e-3)
    x, y = np.meshgrid(np.arange(npix), np.arange(npix), indexing="ij")
    assert (img * x).sum() / img.sum() == pytest.approx(60.3, abs=1e-3)
    assert (img * y).sum() / img.sum() == pytest.approx(66.7, abs=1e-3)
    # the peak pixel is below the flux (the beam's centre lies between pixels)
    assert 3.5 < img.max() < 4.0


def test_lm_pixels_follow_the_sin_projection():
    """The phase centre is the centre pixel; north is +y, east is +x, in cells."""
    npix = 1000
    assert lm_pixels(150.0, 33.0, 150.0, 33.0, npix=npix, cell_rad=CELL) == (500.0, 500.0)
    x, y = lm_pixels(150.0, 33.0 + 30 * 3.0 / 3600, 150.0, 33.0, npix=npix, cell_rad=CELL)
    assert x == pytest.approx(500.0, abs=1e-6) and y == pytest.approx(530.0, abs=1e-3)
    x, y = lm_pixels(150.0 + 0.1, 33.0, 150.0, 33.0, npix=npix, cell_rad=CELL)
    assert x == pytest.approx(500 + math.radians(0.1) * math.cos(math.radians(33)) / CELL,
                              rel=1e-4)


def test_apparent_flux_is_the_weighted_mean_amplitude():
    """Σ w |V| / Σ w, flagged (zero-weight) visibilities left out."""
    amp = np.array([[2.0, 4.0], [6.0, 100.0]], np.float32)
    w = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
    assert apparent_flux(amp, w, backend=BE) == pytest.approx((2 + 4 + 12) / 4)
    assert apparent_flux(amp, np.zeros_like(w), backend=BE) == 0.0
