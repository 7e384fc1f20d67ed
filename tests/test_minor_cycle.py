"""The Clark minor cycle's row-slice search gives what testing every active pixel gives."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.backend import get_backend, gpu_status
from pipeline.imaging.clean import minor_cycle

needs_gpu = pytest.mark.skipif(not gpu_status()[0], reason=f"no GPU: {gpu_status()[1]}")
BACKENDS = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])]


def reference_minor_cycle(residual, patch, *, stop, gain, max_components):
    """Högbom over the pixels above ``stop``, every active pixel tested at each iteration."""
    half = patch.shape[0] // 2
    px, py = np.nonzero(np.abs(residual) > stop)
    vals = residual[px, py].astype(np.float32)
    comp = np.zeros(vals.shape, np.float32)
    n = 0
    while n < max_components:
        i = int(np.argmax(np.abs(vals)))
        if abs(vals[i]) <= stop:
            break
        amp = gain * vals[i]
        comp[i] += amp
        dx, dy = px - px[i] + half, py - py[i] + half
        hit = np.nonzero((dx >= 0) & (dx <= 2 * half) & (dy >= 0) & (dy <= 2 * half))[0]
        vals[hit] -= np.float32(amp) * patch[dx[hit], dy[hit]]
        n += 1
    keep = np.nonzero(comp)[0]
    return px[keep], py[keep], comp[keep], n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stop", [2.0, 4.0])
def test_minor_cycle_matches_the_exhaustive_search(stop, backend):
    rng = np.random.default_rng(3)
    npix, half = 200, 20
    g = np.arange(-half, half + 1)
    patch = (np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / 8.0)
             + 0.1 * np.cos(g[:, None] / 2.0) * np.cos(g[None, :] / 3.0)).astype(np.float32)
    patch[half, half] = 1.0
    residual = rng.normal(0, 1, (npix, npix)).astype(np.float32)
    # sources near the edges too, where the patch is clipped on one side
    for x, y in ((5, 100), (100, 195), (190, 3), (100, 100), (60, 140)):
        lo_x, lo_y = max(0, x - half), max(0, y - half)
        hi_x, hi_y = min(npix, x + half + 1), min(npix, y + half + 1)
        residual[lo_x:hi_x, lo_y:hi_y] += 30 * patch[lo_x - x + half:hi_x - x + half,
                                                     lo_y - y + half:hi_y - y + half]
    be = get_backend(backend)
    got = minor_cycle(be.asarray(residual), be.asarray(patch), stop=stop, gain=0.1,
                      max_components=300, backend=be)
    got = [be.to_host(a) for a in got[:3]] + [got[3]]
    want = reference_minor_cycle(residual, patch, stop=stop, gain=0.1, max_components=300)
    assert got[3] == want[3] > 50
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)
