"""pipeline.instrument.predict against slow, obvious references."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.instrument.predict import (
    C_M_S,
    ModelImage,
    PointSources,
    predict,
    predict_points,
    predict_points_antenna,
)


def slow_dft(uvw, freqs, l, m, wc, flux):
    """One loop per row, channel and source: V = sum S exp(+2 pi i (ul + vm + w c) nu / c)."""
    out = np.zeros((len(uvw), len(freqs)), complex)
    for r, (u, v, w) in enumerate(uvw):
        for c, f in enumerate(freqs):
            for s in range(len(l)):
                out[r, c] += flux[s, c] * np.exp(2j * np.pi * (u * l[s] + v * m[s] + w * wc[s])
                                                 * f / C_M_S)
    return out


@pytest.fixture
def sky():
    rng = np.random.default_rng(5)
    l, m = rng.uniform(-0.05, 0.05, 3), rng.uniform(-0.05, 0.05, 3)
    freqs = np.linspace(1.3e9, 1.5e9, 6)
    flux = rng.uniform(0.1, 2.0, (3, 6))
    return l, m, freqs, flux


def test_point_dft_matches_slow_reference(sky):
    l, m, freqs, flux = sky
    uvw = np.random.default_rng(1).normal(0, 500, (20, 3))
    wc = np.sqrt(1 - l**2 - m**2) - 1
    got = predict(uvw, freqs, PointSources(l=l, m=m, flux=flux))
    np.testing.assert_allclose(got, slow_dft(uvw, freqs, l, m, wc, flux), atol=2e-5)


@pytest.mark.parametrize("freqs", [np.linspace(1.3e9, 1.5e9, 40),          # recurrence path
                                   np.array([1.31e9, 1.35e9, 1.352e9, 1.49e9])])  # exp path
def test_antenna_factorisation_equals_baseline_dft(freqs):
    rng = np.random.default_rng(2)
    xyz = rng.normal(0, 800, (7, 3))
    a1, a2 = np.triu_indices(7)
    n = 5
    l, m = rng.uniform(-0.05, 0.05, n), rng.uniform(-0.05, 0.05, n)
    src = PointSources(l=l, m=m, w_coeff=np.sqrt(1 - l**2 - m**2),   # unprojected: w n
                       flux=rng.uniform(0.1, 1, (n, len(freqs))))
    fast = predict(None, freqs, src, antennas=(xyz, a1, a2))
    slow = predict_points(xyz[a2] - xyz[a1], freqs, src)
    np.testing.assert_allclose(fast, slow, atol=1e-4 * n)


def test_model_image_matches_dft_of_its_pixels():
    img = np.zeros((64, 48))
    img[40, 10], img[20, 30], img[33, 24] = 2.0, 1.0, 0.5
    d = 0.004
    i, j = np.nonzero(img)
    l, m = (i - 32) * d + 0.01, (j - 24) * d - 0.02
    uvw = np.random.default_rng(3).normal(0, 200, (30, 3))
    freqs = np.linspace(1.3e9, 1.5e9, 4)
    got = predict(uvw, freqs, ModelImage(image=img, pixsize_l=d, pixsize_m=d,
                                         center_l=0.01, center_m=-0.02))
    want = predict(uvw, freqs, PointSources(l=l, m=m, flux=img[i, j]))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_list_of_models_adds():
    uvw = np.random.default_rng(4).normal(0, 100, (5, 3))
    freqs = np.array([1.4e9])
    a = PointSources(l=np.array([0.01]), m=np.array([0.0]), flux=np.array([1.0]))
    b = PointSources(l=np.array([-0.02]), m=np.array([0.01]), flux=np.array([2.0]))
    np.testing.assert_allclose(predict(uvw, freqs, [a, b]),
                               predict(uvw, freqs, a) + predict(uvw, freqs, b), atol=1e-6)


def test_source_at_phase_centre_is_its_flux():
    uvw = np.random.default_rng(6).normal(0, 1000, (10, 3))
    vis = predict(uvw, np.array([1.3e9, 1.5e9]),
                  PointSources(l=np.zeros(1), m=np.zeros(1), flux=np.array([3.0])))
    np.testing.assert_allclose(vis, 3.0, atol=1e-6)


def test_antenna_path_with_no_sources_is_zero():
    src = PointSources(l=np.zeros(0), m=np.zeros(0), flux=np.zeros(0))
    out = predict_points_antenna(np.zeros((3, 3)), np.array([1e9, 1.1e9]), src,
                                 np.array([0, 1]), np.array([1, 2]))
    assert out.shape == (2, 2) and not out.any()


@pytest.mark.parametrize("make, match", [
    (lambda: PointSources(l=np.zeros(2), m=np.zeros(3), flux=np.zeros(2)), "equal 1-D"),
    (lambda: PointSources(l=np.zeros(2), m=np.zeros(2), flux=np.zeros(3)), "flux has shape"),
    (lambda: PointSources(l=np.zeros(2), m=np.zeros(2), flux=np.zeros(2),
                          w_coeff=np.zeros(1)), "w_coeff"),
    (lambda: ModelImage(image=np.zeros(4), pixsize_l=1, pixsize_m=1), "2-D"),
    (lambda: ModelImage(image=np.zeros((4, 4)), pixsize_l=0, pixsize_m=1), "positive"),
    (lambda: predict(np.zeros((1, 3)), np.ones(1), []), "empty sky"),
    (lambda: predict(np.zeros((1, 3)), np.ones(1), PointSources(
        l=np.zeros(1), m=np.zeros(1), flux=np.zeros((1, 3)))), "3 channels"),
])
def test_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
