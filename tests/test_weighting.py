"""Natural, uniform and Briggs imaging weights against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backend import cpu_backend, get_backend, gpu_status
from pipeline.imaging.weighting import WeightingError, imaging_weights, weight_density
from pipeline.instrument.predict import C_M_S

HAVE_GPU = gpu_status()[0]
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no GPU: {gpu_status()[1]}")
BACKENDS = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])]

NPIX = 128
PIXSIZE = np.radians(10.0 / 3600)


@pytest.fixture(scope="module")
def data():
    """Clustered uv samples (dense core, sparse edge), weights with some flagged."""
    rng = np.random.default_rng(2)
    nrow = 3000
    r = np.abs(rng.normal(0, 300, nrow))                     # metres: most short
    phi = rng.uniform(0, 2 * np.pi, nrow)
    uvw = np.stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, 20, nrow)], axis=1)
    freq = np.array([1.30e9, 1.40e9, 1.50e9])
    weight = rng.uniform(0.5, 2.0, (nrow, 3)).astype(np.float32)
    weight[rng.random((nrow, 3)) < 0.05] = 0.0
    return dict(uvw=uvw, freq=freq, weight=weight)


def _weights(data, backend, **kw):
    be = cpu_backend() if backend == "cpu" else get_backend("gpu")
    out = imaging_weights(uvw=be.asarray(data["uvw"]), freq=be.asarray(data["freq"]),
                          weight=be.asarray(data["weight"]), npix=NPIX, pixsize_rad=PIXSIZE,
                          backend=be, **kw)
    return be.to_host(out)


def _cell_of(data) -> np.ndarray:
    """The obvious reference cell: rounded (u, v) in uv cells, folded to u >= 0."""
    scale = data["freq"][None, :] * NPIX * PIXSIZE / C_M_S
    u = np.rint(data["uvw"][:, 0:1] * scale).astype(int)
    v = np.rint(data["uvw"][:, 1:2] * scale).astype(int)
    flip = (u < 0) | ((u == 0) & (v < 0))
    return np.where(flip, -u, u) * 10_000 + np.where(flip, -v, v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_natural_is_the_input(data, backend):
    w = _weights(data, backend, scheme="natural")
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, data["weight"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_makes_every_occupied_cell_sum_to_one(data, backend):
    w = _weights(data, backend, scheme="uniform")
    assert w.dtype == np.float32 and w.shape == data["weight"].shape
    cells = _cell_of(data)
    occupied = data["weight"] > 0
    _, inverse = np.unique(cells[occupied], return_inverse=True)
    sums = np.bincount(inverse, weights=w[occupied].astype(np.float64))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    assert np.all(w[~occupied] == 0)
    # a cell holding many samples gives each of them less than a lone sample gets
    counts = np.bincount(inverse)
    assert counts.max() > 5 and (counts == 1).any()


def test_density_folds_conjugate_points(data):
    be = cpu_backend()
    mirrored = dict(data, uvw=data["uvw"] * np.array([-1.0, -1.0, 1.0]))
    d1, c1 = weight_density(npix=NPIX, pixsize_rad=PIXSIZE, backend=be, **data)
    d2, c2 = weight_density(npix=NPIX, pixsize_rad=PIXSIZE, backend=be, **mirrored)
    # (u, v) → (-u, -v) lands in the same cells except exactly on the u = 0 line
    on_axis = np.rint(data["uvw"][:, 0:1] * data["freq"] * NPIX * PIXSIZE / C_M_S) == 0
    assert np.mean(c1 == c2) > 0.95 and np.all((c1 == c2) | on_axis)
    assert d1.sum() == pytest.approx(data["weight"].sum(dtype=np.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_briggs_follows_its_formula_and_limits(data, backend):
    nat = data["weight"].astype(np.float64)
    uni = _weights(data, backend, scheme="uniform").astype(np.float64)
    occupied = nat > 0
    # Briggs from the definition with the density recovered from uniform: W = w / w_uni
    density = np.where(occupied, nat / np.where(occupied, uni, 1), 0)
    cells = _cell_of(data)[occupied]
    _, first = np.unique(cells, return_index=True)
    sum_w2 = np.sum(density[occupied][first] ** 2)
    for robust in (-1.0, 0.0, 0.5):
        f2 = (5 * 10 ** -robust) ** 2 / (sum_w2 / nat.sum())
        ref = nat / (1 + density * f2)
        np.testing.assert_allclose(_weights(data, backend, scheme="briggs", robust=robust),
                                   ref, rtol=1e-5)

    def normalised(w):
        return w[occupied] / w[occupied].sum()

    plus2 = normalised(_weights(data, backend, scheme="briggs", robust=2.0))
    minus2 = normalised(_weights(data, backend, scheme="briggs", robust=-2.0))
    zero = normalised(_weights(data, backend, scheme="briggs", robust=0.0))
    n, u = normalised(nat), normalised(uni)
    # robust +2 ≈ natural and -2 ≈ uniform, each far closer than robust 0 is
    assert np.abs(plus2 - n).sum() < 0.05 and np.abs(minus2 - u).sum() < 0.05
    assert np.abs(zero - n).sum() > 4 * np.abs(plus2 - n).sum()
    assert np.abs(zero - u).sum() > 4 * np.abs(minus2 - u).sum()


def test_weighting_errors(data):
    be = cpu_backend()
    with pytest.raises(WeightingError, match="unknown scheme 'superuniform'"):
        imaging_weights(npix=NPIX, pixsize_rad=PIXSIZE, backend=be, scheme="superuniform",
                        **data)
    with pytest.raises(WeightingError, match="use smaller pixels"):
        imaging_weights(npix=NPIX, pixsize_rad=50 * PIXSIZE, backend=be, scheme="uniform",
                        **data)
