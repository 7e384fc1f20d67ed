"""The array-expression ("GPU") gridder against ducc0, an exact DFT and its own adjoint;
the imaging reader on a real simulated Measurement Set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table
from conftest import contimg

from pipeline.backend import cpu_backend, get_backend, gpu_status
from pipeline.imaging import gpu_gridding, gridding
from pipeline.imaging.ms_reader import ImagingDataError, read_imaging_data
from pipeline.instrument import predict
from pipeline.instrument.telescope import load_layout

HAVE_GPU = gpu_status()[0]
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no GPU: {gpu_status()[1]}")
BACKENDS = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])]

NPIX = 256
PIXSIZE = np.radians(6.0 / 3600)
LAT = np.radians(37.2339)


def _uvw(enu: np.ndarray, hour_angles: np.ndarray, dec: float) -> np.ndarray:
    """(nbl × nha, 3) metres: every baseline of ``enu`` seen at each hour angle."""
    a1, a2 = np.triu_indices(len(enu), 1)
    e, n, u = (enu[a2] - enu[a1]).T
    x = -np.sin(LAT) * n + np.cos(LAT) * u
    y = e
    z = np.cos(LAT) * n + np.sin(LAT) * u
    out = []
    for h in hour_angles:
        out.append(np.stack([
            np.sin(h) * x + np.cos(h) * y,
            -np.sin(dec) * np.cos(h) * x + np.sin(dec) * np.sin(h) * y + np.cos(dec) * z,
            np.cos(dec) * np.cos(h) * x - np.cos(dec) * np.sin(h) * y + np.sin(dec) * z,
        ], axis=1))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def sky_data():
    """Visibilities of four point sources on 24 DSA pads, 3 hour angles, 4 channels.

    Dec 10° at latitude 37° makes w large enough (up to ~1 km) that leaving out the
    w-correction changes the image by far more than the tolerance.
    """
    layout = load_layout()
    pads = layout.select(24)
    sky_uvw = _uvw(layout.enu_m[pads], np.radians([-2.0, 0.0, 2.0]), np.radians(10.0))
    freq = np.linspace(1.30e9, 1.50e9, 4)
    ls = np.array([0.0, 40.0, -70.0, 100.0]) * PIXSIZE
    ms = np.array([0.0, -30.0, 55.0, 90.0]) * PIXSIZE
    src = predict.PointSources(l=ls, m=ms, flux=np.array([3.0, 1.5, 1.0, 0.7]))
    vis = predict.predict_points(sky_uvw, freq, src)
    rng = np.random.default_rng(3)
    wgt = rng.uniform(0.5, 1.5, vis.shape).astype(np.float32)
    wgt[rng.random(vis.shape) < 0.1] = 0.0  # flagged
    # the gridder's convention: the sky model's (u, v) negated (see ms_reader)
    return dict(uvw=sky_uvw * np.array([-1.0, -1.0, 1.0]), freq=freq, vis=vis, wgt=wgt,
                l=ls, m=ms)


def _dirty(d, backend, do_w, module):
    return module.vis2dirty(uvw=d["uvw"], freq=d["freq"], vis=d["vis"], wgt=d["wgt"],
                            npix=NPIX, pixsize_rad=PIXSIZE, do_wgridding=do_w,
                            backend=backend)


@pytest.mark.parametrize("do_w", [False, True])
def test_dirty_image_equals_ducc0(sky_data, do_w):
    be = cpu_backend()
    ref = _dirty(sky_data, be, do_w, gridding)
    ours = _dirty(sky_data, be, do_w, gpu_gridding)
    assert ours.dtype == np.float32 and ours.shape == (NPIX, NPIX)
    peak = np.abs(ref).max()
    assert np.abs(ours - ref).max() <= 1e-4 * peak
    # the sources land where they were put: pixel npix/2 + l/dl along axis 0
    i, j = np.unravel_index(np.argmax(ours), ours.shape)
    assert (i, j) == (NPIX // 2, NPIX // 2)
    for sl, sm in zip(sky_data["l"], sky_data["m"], strict=True):
        pi, pj = NPIX // 2 + round(sl / PIXSIZE), NPIX // 2 + round(sm / PIXSIZE)
        assert ours[pi, pj] == ours[pi - 2:pi + 3, pj - 2:pj + 3].max()


def test_w_correction_matters_here(sky_data):
    """The data are chosen so that a gridder ignoring w would fail the comparison above."""
    be = cpu_backend()
    with_w = _dirty(sky_data, be, True, gpu_gridding)
    without = _dirty(sky_data, be, False, gpu_gridding)
    assert np.abs(with_w - without).max() > 1e-3 * np.abs(with_w).max()  # 10× the tolerance


@pytest.mark.parametrize("do_w", [False, True])
def test_dirty_image_equals_direct_dft(do_w):
    """A slow, obvious reference: the sum written out, on a small image."""
    rng = np.random.default_rng(5)
    npix, px = 32, np.radians(30.0 / 3600)
    uvw = rng.uniform(-600, 600, (40, 3))
    freq = np.array([1.3e9, 1.45e9])
    vis = (rng.normal(size=(40, 2)) + 1j * rng.normal(size=(40, 2))).astype(np.complex64)
    wgt = rng.uniform(0.5, 1.0, (40, 2)).astype(np.float32)
    ours = gpu_gridding.vis2dirty(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix=npix,
                                  pixsize_rad=px, do_wgridding=do_w, backend=cpu_backend())
    lm = (np.arange(npix) - npix // 2) * px
    gl, gm = np.meshgrid(lm, lm, indexing="ij")
    n = np.sqrt(1 - gl * gl - gm * gm)
    k = uvw[:, None, :] * (freq[None, :, None] / predict.C_M_S)       # (row, chan, 3)
    k = k.reshape(-1, 3)
    phase = k[:, 0, None, None] * gl + k[:, 1, None, None] * gm
    if do_w:
        phase = phase - k[:, 2, None, None] * (n - 1)
    ref = np.real(((wgt * vis).reshape(-1)[:, None, None] * np.exp(2j * np.pi * phase)).sum(0))
    if do_w:
        ref = ref / n
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("do_w", [False, True])
def test_degrid_equals_ducc0(sky_data, do_w):
    be = cpu_backend()
    rng = np.random.default_rng(11)
    model = np.zeros((NPIX, NPIX), np.float32)
    where = rng.integers(20, NPIX - 20, (2, 12))
    model[where[0], where[1]] = rng.uniform(0.1, 2, 12)
    kw = dict(uvw=sky_data["uvw"], freq=sky_data["freq"], dirty=model, wgt=sky_data["wgt"],
              pixsize_rad=PIXSIZE, do_wgridding=do_w, backend=be)
    ref = gridding.dirty2vis(**kw)
    ours = gpu_gridding.dirty2vis(**kw)
    assert ours.dtype == np.complex64 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.all(ours[sky_data["wgt"] == 0] == 0)


@pytest.mark.parametrize("do_w", [False, True])
def test_degridder_is_the_adjoint(sky_data, do_w):
    """Re <A x, y> = <x, Re A^H y> for random x (image) and y (visibilities)."""
    be = cpu_backend()
    rng = np.random.default_rng(12)
    x = rng.normal(size=(NPIX, NPIX)).astype(np.float32)
    y = (rng.normal(size=sky_data["vis"].shape)
         + 1j * rng.normal(size=sky_data["vis"].shape)).astype(np.complex64)
    ax = gpu_gridding.dirty2vis(uvw=sky_data["uvw"], freq=sky_data["freq"], dirty=x, wgt=None,
                                pixsize_rad=PIXSIZE, do_wgridding=do_w, backend=be)
    ahy = gpu_gridding.vis2dirty(uvw=sky_data["uvw"], freq=sky_data["freq"], vis=y, wgt=None,
                                 npix=NPIX, pixsize_rad=PIXSIZE, do_wgridding=do_w, backend=be)
    lhs = np.vdot(ax.astype(np.complex128), y.astype(np.complex128)).real
    rhs = np.vdot(x.astype(np.float64), ahy.astype(np.float64))
    assert lhs == pytest.approx(rhs, rel=1e-4)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("do_w", [False, True])
def test_cupy_gridder_equals_ducc0(sky_data, do_w):
    """The same comparison with the arrays on the GPU (CuPy, cupyx.scatter_add, cuFFT)."""
    gpu = get_backend("gpu")
    ref = _dirty(sky_data, cpu_backend(), do_w, gridding)
    d = {k: gpu.asarray(v) for k, v in sky_data.items() if k in ("uvw", "freq", "vis", "wgt")}
    ours = gpu.to_host(gridding.vis2dirty(npix=NPIX, pixsize_rad=PIXSIZE, do_wgridding=do_w,
                                          backend=gpu, **d))
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    model = np.zeros((NPIX, NPIX), np.float32)
    model[100, 140], model[60, 30] = 1.0, 0.5
    kw = dict(freq=sky_data["freq"], wgt=sky_data["wgt"], pixsize_rad=PIXSIZE,
              do_wgridding=do_w)
    vref = gridding.dirty2vis(uvw=sky_data["uvw"], dirty=model, backend=cpu_backend(), **kw)
    vgpu = gpu.to_host(gridding.dirty2vis(uvw=d["uvw"], dirty=gpu.asarray(model), backend=gpu,
                                          **{**kw, "freq": d["freq"], "wgt": d["wgt"]}))
    assert np.abs(vgpu - vref).max() <= 1e-4 * np.abs(vref).max()


def test_gridder_refuses_what_it_cannot_grid(sky_data):
    be = cpu_backend()
    kw = dict(uvw=sky_data["uvw"], freq=sky_data["freq"], vis=sky_data["vis"],
              wgt=sky_data["wgt"], do_wgridding=False, backend=be)
    with pytest.raises(gpu_gridding.GriddingError, match="use smaller pixels"):
        gpu_gridding.vis2dirty(npix=NPIX, pixsize_rad=20 * PIXSIZE, **kw)
    with pytest.raises(gpu_gridding.GriddingError, match="even image size"):
        gpu_gridding.vis2dirty(npix=NPIX + 1, pixsize_rad=PIXSIZE, **kw)


# ---------------------------------------------------------------- the reader, on a real MS

@pytest.fixture(scope="module")
def sim_ms(tmp_path_factory) -> Path:
    """A converted (uncalibrated) 12-antenna transit of 3C48, no noise, unit gains."""
    from pipeline.home import Home
    from pipeline.jobs.default_stages import default_registry
    from pipeline.jobs.runner import Runner, StageRegistry
    from pipeline.store import Store

    home = tmp_path_factory.mktemp("img") / "home"
    sim = contimg("simulate", "--home", str(home), "--transit-of", "3C48", "--minutes", "5",
                  "--antennas", "12", "--channels-per-subband", "2", "--no-noise",
                  "--no-gains", "--seed", "3")
    assert sim.returncode == 0, sim.stderr
    shipped = default_registry()
    # convert only: the stages after it are not what is tested here
    registry = StageRegistry(stages={"convert": shipped.stages["convert"]}, tasks=shipped.tasks)
    h = Home.resolve(home)
    with Store.open(h) as store:
        Runner(store, h, registry).run_once(rescan_after_s=0.1)
    (ms,) = sorted(home.glob("ms/*.ms"))
    return ms


def test_reader_gives_stokes_i_that_images_3c48_where_it_is(sim_ms, tmp_path):
    d = read_imaging_data(sim_ms)
    assert d.column == "DATA"  # no CORRECTED_DATA yet: the fallback
    assert d.vis.dtype == np.complex64 and d.weight.dtype == np.float32
    assert d.vis.shape == d.weight.shape == (d.uvw.shape[0], d.freq.size)
    assert d.n_antennas == 12 and d.uvw.shape[0] == 12 * 11 // 2 * 24
    assert d.freq.size == 32 and d.channel_width_hz == pytest.approx(5.859375e6)
    assert d.integration_s == pytest.approx(12.884901888)
    # the phase centre: the ICRS meridian through 3C48
    assert 61000 < d.mid_mjd < 62000 and d.dec_deg == pytest.approx(33.15975, abs=0.01)
    with table(str(sim_ms), ack=False) as t:
        raw = t.getcol("DATA")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
    cross = raw[a1 != a2]
    np.testing.assert_allclose(d.vis, 0.5 * (cross[:, :, 0] + cross[:, :, 1]), rtol=1e-6)

    px = np.radians(10.0 / 3600)
    img = gridding.vis2dirty(uvw=d.uvw, freq=d.freq, vis=d.vis, wgt=d.weight, npix=128,
                             pixsize_rad=px, do_wgridding=True, backend=cpu_backend())
    ra, dec = np.radians(24.422083), np.radians(33.159750)   # 3C48, data/calibrators.csv
    ra0, dec0 = np.radians(d.ra_deg), np.radians(d.dec_deg)
    sl = np.cos(dec) * np.sin(ra - ra0)
    sm = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    assert abs(sl) > 3 * px  # far enough from the centre that a flipped axis would show
    i, j = np.unravel_index(np.argmax(img), img.shape)
    assert abs(i - (64 + sl / px)) <= 1 and abs(j - (64 + sm / px)) <= 1

    # flags zero the weights (and the visibilities) of both polarizations' Stokes I
    copy = Path(shutil.copytree(sim_ms, tmp_path / "flagged.ms"))
    with table(str(copy), readonly=False, ack=False) as t:
        flag = t.getcol("FLAG")
        flag[np.flatnonzero(a1 != a2)[:5], :, 1] = True
        t.putcol("FLAG", flag)
    f = read_imaging_data(copy)
    assert np.all(f.weight[:5] == 0) and np.all(f.vis[:5] == 0)
    assert np.all(f.weight[5:] == d.weight[5:])


def test_reader_errors(tmp_path):
    with pytest.raises(ImagingDataError, match="no such Measurement Set"):
        read_imaging_data(tmp_path / "missing.ms")
