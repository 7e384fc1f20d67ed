"""Imaging: CLEAN, beam, primary beam, FITS products and QA; the accuracy claim on a simulated MS.

Kernels are checked on synthetic data against what they must give; the whole imager runs on
one real simulated, converted Measurement Set of a field of twelve catalog sources (24
antennas, 256 channels, 24 integrations, radiometer noise) whose truth is known.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pipeline.backend import cpu_backend, get_backend, gpu_status
from pipeline.imaging import gridding
from pipeline.imaging.beam import Beam, BeamFitError, fit_beam, gaussian_image, restore
from pipeline.imaging.clean import NothingToImage, clean, robust_rms
from pipeline.imaging.config import ImagingConfig, fast_even_size, synthesized_beam_rad
from pipeline.imaging.primary_beam import (
    PrimaryBeam,
    drift_scan_beam,
    pb_correct,
    radec_to_sin,
    sin_to_radec,
)
from pipeline.imaging.products import ImageGeometry, from_fits_array, thumbnail, write_fits
from pipeline.imaging.qa import ReferenceMatch, assess, theoretical_rms
from pipeline.imaging.stage import image_ms
from pipeline.instrument.phasing import meridian_icrs_deg, use_bundled_iers
from pipeline.instrument.sky import airy_power
from pipeline.instrument.telescope import CHUNK_S, OVRO
from pipeline.simulate import load_truth
from pipeline.simulate.run import SimConfig, simulate

HAVE_GPU = gpu_status()[0]
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no GPU: {gpu_status()[1]}")
BACKENDS = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_gpu])]
CPU = cpu_backend()
C = 299_792_458.0


# ------------------------------------------------------------------ synthetic data
def _uv_track(rng, nrow=3000, max_m=800.0):
    """Random baselines (a filled disc, small w) in the gridder's convention."""
    r = max_m * np.sqrt(rng.uniform(0.01, 1, nrow))
    a = rng.uniform(0, 2 * np.pi, nrow)
    return np.stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 5, nrow)], axis=1)


def _point_vis(uvw, freq, pixels, fluxes, npix, cell):
    """Exact visibilities of pixel-centred point sources, by ducc0's degridder."""
    model = np.zeros((npix, npix), np.float32)
    for (a, b), s in zip(pixels, fluxes, strict=True):
        model[a, b] = s
    return gridding.dirty2vis(uvw=uvw, freq=freq, dirty=model, wgt=None, pixsize_rad=cell,
                              do_wgridding=True, backend=CPU, epsilon=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clean_recovers_point_sources_and_reaches_the_noise(backend):
    be = get_backend(backend)
    rng = np.random.default_rng(1)
    freq = np.linspace(1.35e9, 1.45e9, 4)
    uvw = _uv_track(rng)
    npix, cell = 128, synthesized_beam_rad(uvw, freq) / 4
    pixels, fluxes = [(64, 64), (40, 90), (95, 30)], [1.0, 0.5, -0.3]
    sigma = 0.5
    vis = _point_vis(uvw, freq, pixels, fluxes, npix, cell)
    vis = vis + (sigma * (rng.standard_normal(vis.shape)
                          + 1j * rng.standard_normal(vis.shape))).astype(np.complex64)
    weight = np.ones(vis.shape, np.float32)
    config = ImagingConfig(npix=npix, niter=2000, psf_patch=npix // 2)
    out = clean(uvw=uvw, freq=freq, vis=vis, weight=weight, npix=npix, cell_rad=cell,
                config=config, backend=be)
    model = be.to_host(out.model)
    for (a, b), s in zip(pixels, fluxes, strict=True):
        # all of a pixel-centred source's flux lands on its pixel and its neighbours
        assert model[a - 1:a + 2, b - 1:b + 2].sum() == pytest.approx(s, abs=0.01)
    expected = sigma * math.sqrt(vis.size) / vis.size      # natural weights, real part
    assert out.rms_jy < 0.5 * out.dirty_rms_jy
    assert out.rms_jy == pytest.approx(expected, rel=0.15)
    assert out.n_major >= 2 and 0 < out.n_components <= 2000
    assert out.threshold_jy == pytest.approx(0.5 * out.rms_jy, rel=0.2)
    psf = be.to_host(out.psf)
    assert psf[npix // 2, npix // 2] == pytest.approx(1.0)


def test_clean_honours_niter_and_refuses_all_flagged():
    rng = np.random.default_rng(2)
    freq = np.array([1.4e9])
    uvw = _uv_track(rng, nrow=500)
    npix, cell = 64, synthesized_beam_rad(uvw, freq) / 4
    vis = _point_vis(uvw, freq, [(32, 32)], [1.0], npix, cell)
    out = clean(uvw=uvw, freq=freq, vis=vis, weight=np.ones(vis.shape, np.float32), npix=npix,
                cell_rad=cell, config=ImagingConfig(npix=npix, niter=7), backend=CPU)
    assert out.n_components == 7
    assert float(out.model.sum()) == pytest.approx(1 - 0.9 ** 7, rel=1e-3)
    with pytest.raises(NothingToImage, match="every visibility is flagged"):
        clean(uvw=uvw, freq=freq, vis=vis, weight=np.zeros(vis.shape, np.float32), npix=npix,
              cell_rad=cell, config=ImagingConfig(npix=npix), backend=CPU)


def test_theoretical_rms_matches_the_noise_of_a_dirty_image():
    rng = np.random.default_rng(3)
    freq = np.linspace(1.3e9, 1.5e9, 8)
    uvw = _uv_track(rng, nrow=4000)
    npix, cell = 128, synthesized_beam_rad(uvw, freq) / 4
    sefd, width, tau = 5800.0, 1e6, 10.0
    sigma = sefd / (2 * math.sqrt(width * tau))             # Stokes I, per real part
    vis = (sigma * (rng.standard_normal((4000, 8)) + 1j * rng.standard_normal((4000, 8))))
    data_w = np.ones(vis.shape, np.float32)
    # uneven imaging weights, as Briggs gives, raise the noise; the formula must follow
    imaging_w = rng.uniform(0.2, 1.0, vis.shape).astype(np.float32)
    dirty = gridding.vis2dirty(uvw=uvw, freq=freq, vis=vis.astype(np.complex64), wgt=imaging_w,
                               npix=npix, pixsize_rad=cell, do_wgridding=False,
                               backend=CPU) / imaging_w.sum()
    predicted = theoretical_rms(imaging_w, data_w, sefd_jy=sefd, channel_width_hz=width,
                                integration_s=tau, backend=CPU)
    assert robust_rms(dirty, backend=CPU) == pytest.approx(predicted, rel=0.05)


@pytest.mark.parametrize(("rms", "peak", "matched", "reason"), [
    (1.2e-3, 0.5, 9, None),
    (5e-3, 0.5, 9, "rms 5 mJy is 5.0× the radiometer value"),
    (5e-3, 10.0, 9, None),                # a 10 Jy calibrator: dynamic range 2000 is fine
    (1.2e-3, 0.5, 4, "4 of 10 reference sources found"),
    (float("nan"), 0.5, 9, "residual rms is nan"),
])
def test_qa_verdict(rms, peak, matched, reason):
    beam = Beam(bmaj_deg=0.006, bmin_deg=0.005, bpa_deg=0.0)
    qa = assess(rms_jy=rms, peak_jy=peak, theoretical_rms_jy=1e-3, beam=beam,
                match=ReferenceMatch(n_expected=10, n_matched=matched), config=ImagingConfig())
    assert qa.qa_passed is (reason is None)
    assert (qa.qa_reason is None) if reason is None else reason in qa.qa_reason
    assert qa.fields()["n_ref_expected"] == 10 and qa.fields()["qa_passed"] is qa.qa_passed


# ------------------------------------------------------------------- beam, restore
@pytest.mark.parametrize(("bmaj", "bmin", "bpa"), [(30.0, 20.0, 35.0), (25.0, 25.0, 0.0),
                                                   (40.0, 18.0, -70.0)])
def test_fit_beam_recovers_a_known_gaussian_psf(bmaj, bmin, bpa):
    cell = math.radians(5 / 3600)
    truth = Beam(bmaj_deg=bmaj / 3600, bmin_deg=bmin / 3600, bpa_deg=bpa)
    psf = gaussian_image(truth, 128, cell, backend=CPU)
    psf[::7, ::5] -= 0.01                  # sidelobe-like ripple far below the main lobe
    psf[64, 64] = 1.0
    fit = fit_beam(psf, cell, backend=CPU)
    assert fit.bmaj_deg == pytest.approx(truth.bmaj_deg, rel=0.02)
    assert fit.bmin_deg == pytest.approx(truth.bmin_deg, rel=0.02)
    if bmaj != bmin:
        assert (fit.bpa_deg - bpa + 90) % 180 - 90 == pytest.approx(0, abs=1.0)


def test_fit_beam_refuses_a_psf_without_a_main_lobe():
    with pytest.raises(BeamFitError, match="centre pixel is not positive"):
        fit_beam(np.zeros((64, 64), np.float32), 1e-5, backend=CPU)
    spike = np.zeros((64, 64), np.float32)
    spike[32, 32] = 1
    with pytest.raises(BeamFitError, match="narrower than the cell"):
        fit_beam(spike, 1e-5, backend=CPU)


def test_restore_turns_a_component_into_a_beam_of_its_flux():
    cell = math.radians(3 / 3600)
    beam = Beam(bmaj_deg=15 / 3600, bmin_deg=10 / 3600, bpa_deg=30.0)
    model = np.zeros((96, 96), np.float32)
    model[50, 40] = 0.7
    residual = np.full((96, 96), 0.01, np.float32)
    out = restore(model, residual, beam, cell, backend=CPU)
    assert np.unravel_index(np.argmax(out), out.shape) == (50, 40)
    assert out[50, 40] == pytest.approx(0.71, rel=1e-4)
    # the flux integrated over the beam area is the component's
    assert (out - 0.01).sum() / beam.area_pixels(cell) == pytest.approx(0.7, rel=1e-3)


# ---------------------------------------------------------------- primary beam
def test_primary_beam_is_the_simulators_airy_pattern():
    pb = PrimaryBeam(pointing_ra_deg=np.array([150.0]), pointing_dec_deg=np.array([40.0]),
                     freq_hz=np.array([1.4e9]), freq_weight=np.array([1.0]))
    offsets = np.array([0.0, 0.5, 1.0, 1.5])
    got = pb.response(np.full(4, 150.0), 40.0 + offsets)
    np.testing.assert_allclose(got, airy_power(np.radians(offsets), 1.4e9), rtol=1e-9)
    assert got[0] == pytest.approx(1.0)


def test_drift_scan_beam_averages_the_track_and_pb_correction_divides_by_it():
    use_bundled_iers()
    t0 = 61000.3
    times = t0 + np.arange(24) * 12.884901888 / 86400
    beam = drift_scan_beam(times_mjd=times, dec_deg=33.0, freq_hz=np.array([1.3e9, 1.5e9]))
    ra_c, dec_c = beam.centre_deg
    on_axis = beam.response(ra_c, dec_c)
    # the sky drifts ~1.05° through the beam: the centre sees less than the peak
    assert 0.9 < on_axis < 1.0
    assert beam.response(ra_c + 1.0, dec_c) < on_axis
    npix, cell = 200, math.radians(40 / 3600)
    image = np.ones((npix, npix), np.float32)
    pb = beam.image(npix=npix, cell_rad=cell, ra0_deg=ra_c, dec0_deg=dec_c)
    # the spline through the coarse lattice agrees with exact evaluation
    ra, dec = sin_to_radec((np.arange(npix) - 100)[:, None] * cell,
                           (np.arange(npix) - 100)[None, :] * cell, ra0_deg=ra_c, dec0_deg=dec_c)
    np.testing.assert_allclose(pb, beam.response(ra, dec), rtol=2e-3)
    out = pb_correct(image, pb, cutoff=0.5, backend=CPU)
    keep = pb >= 0.5
    np.testing.assert_allclose(out[keep], 1.0 / pb[keep], rtol=1e-6)
    assert np.isnan(out[~keep]).all() and (~keep).any()


# ---------------------------------------------------------------------- FITS
def _geometry(npix=64):
    return ImageGeometry(ra_deg=24.42, dec_deg=33.16, npix=npix, cell_rad=math.radians(3 / 3600),
                         freq_hz=1.405e9, bandwidth_hz=187.5e6, start_mjd=61002.2,
                         mid_mjd=61002.2018, object_name="2026-11-23T05:19:18")


def test_fits_wcs_puts_each_pixel_at_its_sky_position(tmp_path):
    geom = _geometry()
    image = np.zeros((64, 64), np.float32)
    a, b = 44, 20                     # 12 pixels east, 12 south of the centre
    image[a, b] = 1.0
    beam = Beam(bmaj_deg=0.005, bmin_deg=0.004, bpa_deg=10.0)
    path = write_fits(tmp_path / "x.image.fits", image, geom, kind="image", beam=beam)
    with fits.open(path) as hdul:
        data, header = hdul[0].data, hdul[0].header
    assert data.shape == (1, 1, 64, 64)
    np.testing.assert_array_equal(from_fits_array(data), image)
    y, x = np.unravel_index(np.argmax(data[0, 0]), (64, 64))
    world = WCS(header).celestial.pixel_to_world(x, y)
    ra, dec = sin_to_radec((a - 32) * geom.cell_rad, (b - 32) * geom.cell_rad,
                           ra0_deg=geom.ra_deg, dec0_deg=geom.dec_deg)
    assert world.separation(SkyCoord(float(ra), float(dec), unit="deg")).arcsec < 0.01
    assert float(ra) > geom.ra_deg and float(dec) < geom.dec_deg   # east is +l
    assert x < 32                      # and east is on the left
    centre = WCS(header).celestial.pixel_to_world(header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    assert centre.ra.deg == pytest.approx(geom.ra_deg)
    assert centre.dec.deg == pytest.approx(geom.dec_deg)


def test_bpa_runs_from_north_through_east_in_the_fits_image(tmp_path):
    geom = _geometry(npix=128)
    beam = Beam(bmaj_deg=60 / 3600, bmin_deg=20 / 3600, bpa_deg=30.0)
    path = write_fits(tmp_path / "b.fits", gaussian_image(beam, 128, geom.cell_rad, backend=CPU),
                      geom, kind="psf", beam=beam)
    data = fits.getdata(path)[0, 0]
    y, x = np.mgrid[:128, :128]
    w = data / data.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    cov = np.cov(np.stack([(x - mx).ravel(), (y - my).ravel()]), aweights=w.ravel())
    major = np.linalg.eigh(cov)[1][:, 1]
    # FITS pixels: north is +y, east is -x; PA 30° points up and to the left
    pa = math.degrees(math.atan2(-major[0], major[1]))
    assert (pa - 30 + 90) % 180 - 90 == pytest.approx(0, abs=0.5)


def test_fits_headers_have_what_ds9_and_carta_need(tmp_path):
    geom = _geometry()
    beam = Beam(bmaj_deg=0.005, bmin_deg=0.004, bpa_deg=10.0)
    for kind, unit in (("image", "JY/BEAM"), ("model", "JY/PIXEL"), ("pbcor", "JY/BEAM")):
        path = write_fits(tmp_path / f"x.{kind}.fits", np.zeros((64, 64)), geom, kind=kind,
                          beam=beam)
        h = fits.getheader(path)
        assert h["NAXIS"] == 4 and h["BITPIX"] == -32
        assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CTYPE4"]) == (
            "RA---SIN", "DEC--SIN", "FREQ", "STOKES")
        assert h["CDELT1"] < 0 < h["CDELT2"] and h["CDELT1"] == pytest.approx(-h["CDELT2"])
        assert h["BUNIT"] == unit and h["RADESYS"] == "ICRS"
        assert (h["BMAJ"], h["BMIN"], h["BPA"]) == (0.005, 0.004, 10.0)
        assert h["CRVAL3"] == 1.405e9 and h["CUNIT3"] == "Hz" and h["CRVAL4"] == 1
        assert Time(h["DATE-OBS"], format="isot").mjd == pytest.approx(geom.start_mjd)
        assert WCS(h).naxis == 4
    with pytest.raises(ValueError, match="unknown image product 'dirty'"):
        write_fits(tmp_path / "y.fits", np.zeros((8, 8)), geom, kind="dirty", beam=beam)


def test_thumbnail_is_a_north_up_png(tmp_path):
    from PIL import Image
    image = np.zeros((200, 200), np.float32)
    image[100, 180] = 5.0              # north of the centre: near the top of the PNG
    path = thumbnail(tmp_path / "t.png", image, size=100)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (100, 100)
        pixels = np.asarray(im)
    row, col = np.unravel_index(np.argmax(pixels), pixels.shape)
    assert row < 20 and 45 <= col <= 55


# -------------------------------------------------------------------- config
def test_config_geometry_follows_the_wsclean_defaults():
    freq = np.array([1.31e9, 1.5e9])
    uvw = np.array([[2500.0, 600.0, 10.0], [100.0, 50.0, 1.0]])
    config = ImagingConfig()
    npix, cell = config.geometry(uvw, freq)
    beam = C / 1.5e9 / math.hypot(2500, 600)
    assert cell == pytest.approx(beam / 5)
    assert npix % 2 == 0 and npix >= math.radians(3.5) / cell
    assert npix == fast_even_size(math.ceil(math.radians(3.5) / cell))
    assert (config.weighting, config.robust, config.niter, config.gain, config.mgain) == (
        "briggs", 0.0, 1000, 0.1, 0.8)
    assert (config.auto_mask_sigma, config.auto_threshold_sigma, config.do_wgridding) == (
        3.0, 0.5, True)
    assert fast_even_size(3797) == 3840 and fast_even_size(4097) == 4320
    assert ImagingConfig(npix=256, cell_arcsec=2.0).geometry(uvw, freq) == (
        256, pytest.approx(math.radians(2 / 3600)))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"npix": 255}, "npix must be even"),
    ({"cell_arcsec": 0.0}, "cell_arcsec must be positive"),
    ({"fov_deg": 0}, "fov_deg"),
    ({"cells_per_beam": 1.5}, "Nyquist"),
    ({"weighting": "robust"}, "weighting must be"),
    ({"robust": 3}, "robust must be"),
    ({"niter": -1}, "niter"),
    ({"gain": 0}, "gain"),
    ({"auto_mask_sigma": 0.2}, "auto_mask_sigma"),
    ({"backend": "tpu"}, "backend must be"),
    ({"pb_cutoff": 1.0}, "pb_cutoff"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImagingConfig(**kwargs)


# ------------------------------------------- the simulated field, imaged end to end
START = datetime(2026, 11, 23, 12, 0, 0)
DEC = 33.0
N_SRC = 12


def _field_catalog(path: Path) -> Path:
    """Twelve unconfused sources of 0.2–0.7 Jy (≥ 150σ, spectral index -0.7).

    The phase centre is the beam's ICRS centre at mid-time (pipeline/phasing.py). A source
    the beam sweeps over from one side changes by ~40 % within the chunk, which a CLEAN
    with one flux per pixel cannot follow (a few % lost); the sources therefore sit within
    0.17° of the phase centre, where the drift modulates them symmetrically.
    """
    use_bundled_iers()
    mid_jd = Time(START, scale="utc").jd + CHUNK_S / 2 / 86400
    ra0_arr, dec0_arr = meridian_icrs_deg(mid_jd, DEC, OVRO.earth_location())
    ra0, dec0 = float(ra0_arr[0]), float(dec0_arr[0])
    rng = np.random.default_rng(4)
    pos: list[tuple[float, float]] = []
    while len(pos) < N_SRC:
        r, a = 0.17 * math.sqrt(rng.uniform(0.02, 1)), rng.uniform(0, 2 * math.pi)
        p = (r * math.sin(a), r * math.cos(a))
        if all(math.hypot(p[0] - q[0], p[1] - q[1]) > 0.04 for q in pos):
            pos.append(p)
    flux = np.exp(rng.uniform(math.log(0.2), math.log(0.7), N_SRC))
    lines = ["name,ra_deg,dec_deg,flux_jy,spectral_index"]
    for i, (dx, dy) in enumerate(pos):
        lines.append(f"T{i:02d},{ra0 + dx / math.cos(math.radians(dec0)):.6f},{dec0 + dy:.6f},"
                     f"{flux[i]:.4f},-0.7")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def field_ms(tmp_path_factory):
    """A converted MS of the field, its catalog and its truth."""
    home = tmp_path_factory.mktemp("field") / "home"
    cat = _field_catalog(home.parent / "field.csv")
    cfg = SimConfig(start=START, minutes=5, dec_deg=DEC, n_antennas=24, channels_per_subband=16,
                    seed=11, gains=False, calibrators=False, inject=False, catalog_path=cat)
    simulate(home / "incoming", cfg)
    # convert (calibrate then waits: no calibrator, and the data need no gains)
    run = subprocess.run([sys.executable, "-m", "app.cli", "process", "--once", "--home",
                          str(home)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    (ms,) = sorted(home.glob("ms/*.ms"))
    return ms, cat, load_truth(next(home.glob("incoming/truth/*.json")))


@pytest.fixture(scope="module", params=BACKENDS)
def field(request, field_ms):
    """The field imaged by ``image_ms`` on the param's backend (keep_arrays)."""
    ms, cat, truth = field_ms
    config = ImagingConfig(npix=768, niter=3000, catalog_path=str(cat), backend=request.param)
    products, arrays = image_ms(ms, ms.parent.parent / f"images-{request.param}", name="field",
                                config=config, keep_arrays=True)
    return products, arrays, truth, request.param


def _fit_source(data: np.ndarray, x: int, y: int, beam: Beam, cell_deg: float, h: int = 5):
    """Integrated flux and (x, y) of a Gaussian fitted around FITS pixel (x, y)."""
    from scipy.optimize import least_squares
    pa = math.radians(beam.bpa_deg)
    ux, uy = -math.sin(pa), math.cos(pa)       # major axis in FITS pixels (east is -x)
    s_maj = beam.bmaj_deg / cell_deg / 2.3548
    s_min = beam.bmin_deg / cell_deg / 2.3548
    yy, xx = np.mgrid[y - h:y + h + 1, x - h:x + h + 1]
    box = data[y - h:y + h + 1, x - h:x + h + 1]

    def model(p):
        amp, x0, y0, f1, f2 = p
        dx, dy = xx - x0, yy - y0
        along, across = dx * ux + dy * uy, -dx * uy + dy * ux
        return amp * np.exp(-0.5 * ((along / (f1 * s_maj)) ** 2 + (across / (f2 * s_min)) ** 2))

    p = least_squares(lambda p: (model(p) - box).ravel(), [data[y, x], x, y, 1.0, 1.0]).x
    return p[0] * p[3] * p[4], p[1], p[2]


def _ten_brightest(products, truth):
    """(name, injected Jy at the image frequency, measured Jy, offset in beams) ×10."""
    with fits.open(products.fields["pbcor_path"]) as hdul:
        data, header = hdul[0].data[0, 0], hdul[0].header
    wcs = WCS(header).celestial
    freq = header["CRVAL3"]
    beam = products.beam
    sources = sorted(truth.sources, key=lambda s: -s["flux_jy"])
    rows = []
    for s in sources[:10]:
        injected = s["flux_jy"] * (freq / 1.4e9) ** s["spectral_index"]
        sky = SkyCoord(s["ra_deg"], s["dec_deg"], unit="deg")
        x, y = (int(round(float(v))) for v in wcs.world_to_pixel(sky))
        flux, fx, fy = _fit_source(data, x, y, beam, abs(header["CDELT1"]))
        offset = wcs.pixel_to_world(fx, fy).separation(sky).deg / beam.bmaj_deg
        rows.append((s["name"], injected, flux, offset))
    return rows


def test_sources_land_at_their_catalog_positions(field):
    products, _, truth, _ = field
    offsets = [r[3] for r in _ten_brightest(products, truth)]
    assert max(offsets) < 0.2, offsets


def test_ten_brightest_fluxes_within_3_percent_after_pb_correction(field):
    products, _, truth, _ = field
    rows = _ten_brightest(products, truth)
    ratios = {name: round(measured / injected, 4) for name, injected, measured, _ in rows}
    assert all(abs(r - 1) < 0.03 for r in ratios.values()), str(ratios)


def test_residual_rms_is_within_1p5_of_the_radiometer_value(field):
    products, arrays, _, _ = field
    f = products.fields
    assert f["rms_jy"] < 1.5 * f["theoretical_rms_jy"], (f["rms_jy"], f["theoretical_rms_jy"])
    # and CLEAN is what brought it there: the dirty image is sidelobe-limited
    assert arrays.clean.dirty_rms_jy > 3 * f["rms_jy"]
    # the auto-threshold is 0.5σ of the residual as the last major cycle began
    assert 0.45 * f["rms_jy"] < f["threshold_jy"] < 0.75 * f["rms_jy"]
    assert f["n_major"] >= 2 and f["n_iter"] > N_SRC


def test_products_and_qa_of_the_field(field):
    products, arrays, _, backend = field
    f = products.fields
    for key in ("path", "residual_path", "model_path", "psf_path", "pbcor_path"):
        assert Path(f.get(key, products.path)).is_file()
    assert Path(f["thumbnail_path"]).stat().st_size > 1000
    assert f["n_ref_expected"] == N_SRC and f["n_ref_matched"] == N_SRC
    assert f["qa_passed"] is True and f["qa_reason"] is None
    assert f["backend"] == backend
    assert f["weighting"] == "briggs(0)" and f["npix"] == 768
    assert f["dynamic_range"] == pytest.approx(f["peak_jy"] / f["rms_jy"])
    with fits.open(products.path) as hdul:
        h = hdul[0].header
        assert h["BMAJ"] == pytest.approx(f["bmaj_deg"]) and h["NITER"] == f["n_iter"]
    # the restoring beam matches the synthesized beam (λ/B ≈ 16–19″ for 2.6 km)
    assert 12 / 3600 < products.beam.bmin_deg <= products.beam.bmaj_deg < 25 / 3600
    # pbcor = restored / PB inside the cutoff
    ok = arrays.pb >= 0.1
    np.testing.assert_allclose(arrays.pbcor[ok], arrays.restored[ok] / arrays.pb[ok], rtol=1e-5)
    assert np.isfinite(arrays.restored).all()
    east, north = radec_to_sin(f["ra_deg"], f["dec_deg"], ra0_deg=f["ra_deg"],
                               dec0_deg=f["dec_deg"])
    assert (float(east), float(north)) == (0.0, 0.0)
