"""Forced photometry and blind detection on small real FITS images made here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from photometry_factory import FakeField, sky_model, write_image

from pipeline.photometry.detect import find_islands, new_source_candidates
from pipeline.photometry.forced import (
    FLAG_EDGE,
    ImageReadError,
    PhotometryConfig,
    beam_precision_px,
    fit_beam_amplitudes,
    fit_in_chunks,
    forced_photometry,
    read_image,
)

FIELD = FakeField()                      # 256 px of 4", beam 20" × 14" at PA 30°
SIGMA = 1e-3


@pytest.fixture(scope="module")
def sources():
    ra, dec = FIELD.positions_in(30, seed=1, min_sep_px=20)
    flux = np.geomspace(0.008, 0.2, ra.size)
    return ra, dec, flux


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, sources):
    ra, dec, flux = sources
    return write_image(tmp_path_factory.mktemp("img") / "field.fits", FIELD, ra, dec, flux,
                       sigma=SIGMA, seed=3)


def test_forced_flux_of_injected_gaussians_within_errors(image_files, sources):
    ra, dec, flux = sources
    image = read_image(image_files["path"])
    residual = fits.getdata(image_files["residual_path"])[0, 0]
    t = forced_photometry(image, ra, dec, residual=residual)
    assert len(t) == ra.size and np.array_equal(t.index, np.arange(ra.size))
    pull = (t.flux_jy - flux) / t.flux_err_jy
    assert np.all(np.abs(pull) < 4.5), pull
    assert 0.6 < np.std(pull) < 1.4
    # The local rms is the injected noise; SNR is flux over its error.
    np.testing.assert_allclose(t.local_rms_jy, SIGMA / t.pb, rtol=0.15)
    np.testing.assert_allclose(t.snr, t.flux_jy / t.flux_err_jy, rtol=1e-9)
    assert np.all(t.flags == 0)


def test_uncertainties_match_scatter_over_noise_realisations(tmp_path):
    field = dataclasses.replace(FIELD, npix=128)
    ra, dec = field.positions_in(8, seed=5, min_sep_px=20)
    flux = np.full(ra.size, 0.02)
    files = write_image(tmp_path / "a.fits", field, ra, dec, flux, sigma=SIGMA, seed=0,
                        pbcor=False, residual=False)
    image = read_image(files["path"])
    model = sky_model(field, ra, dec, flux)
    from photometry_factory import correlated_noise
    rng = np.random.default_rng(11)
    fluxes, errors = [], []
    for _ in range(60):
        noise = correlated_noise(field, SIGMA, rng)
        plane = dataclasses.replace(image, data=(model + noise).astype(np.float32))
        t = forced_photometry(plane, ra, dec, residual=noise.astype(np.float32))
        fluxes.append(t.flux_jy)
        errors.append(t.flux_err_jy)
    fluxes, errors = np.array(fluxes), np.array(errors)
    ratio = fluxes.std(axis=0).mean() / errors.mean()
    assert 0.85 < ratio < 1.15, ratio
    # ...and the fit is unbiased: the mean over realisations is the truth.
    np.testing.assert_allclose(fluxes.mean(axis=0), flux, atol=4 * errors.mean() / np.sqrt(60))


def test_kernel_matches_per_position_lstsq():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(40, 50)).astype(np.float32)
    p = beam_precision_px(np.diag([-1.0, 1.0]) / 3600 * 4, 20 / 3600, 14 / 3600, 30.0)
    x, y = np.array([10.3, 25.0, 47.6]), np.array([12.7, 20.2, 2.1])
    amp, bg, gain, flags = fit_beam_amplitudes(data, x, y, precision=p, half=6)
    for i in range(3):
        yy, xx = np.mgrid[-6:7, -6:7]
        yy, xx = yy + round(y[i]), xx + round(x[i])
        ok = (yy >= 0) & (yy < 40) & (xx >= 0) & (xx < 50)
        dx, dy = xx[ok] - x[i], yy[ok] - y[i]
        g = np.exp(-0.5 * (p[0, 0] * dx * dx + 2 * p[0, 1] * dx * dy + p[1, 1] * dy * dy))
        design = np.stack([g, np.ones_like(g)], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, data[yy[ok], xx[ok]].astype(float), rcond=None)
        assert amp[i] == pytest.approx(a, rel=1e-9, abs=1e-12)
        assert bg[i] == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert flags.tolist() == [0, 0, FLAG_EDGE]
    assert np.all(gain > 0)


FIT_RTOL = 1e-11   # ~5e4 ulps: far above rounding, far below any real difference


def _same_fit(a: tuple, b: tuple) -> bool:
    """Amplitude, background and noise gain within FIT_RTOL (NaN alike), flags equal."""
    return (all(np.allclose(u, v, rtol=FIT_RTOL, atol=0, equal_nan=True)
                for u, v in zip(a[:3], b[:3], strict=True))
            and np.array_equal(a[3], b[3]))


def test_chunks_give_the_same_fit_and_no_positions_give_an_empty_table(image_files,
                                                                       sources):
    ra, dec, _ = sources
    image = read_image(image_files["path"])
    x, y = image.wcs.all_world2pix(ra, dec, 0)
    p = beam_precision_px(image.cd, image.bmaj_deg, image.bmin_deg, image.bpa_deg)
    whole = fit_beam_amplitudes(image.data, x, y, precision=p, half=5)
    chunked = fit_in_chunks(image.data, x, y, precision=p, half=5, chunk=7)
    # The chunked and whole solves differ by an ulp (2.2e-16 on another CPU: BLAS picks
    # its kernel by matrix shape), so floats agree to FIT_RTOL; flags are integers.
    assert _same_fit(whole, chunked)
    assert _same_fit(whole, tuple(np.nextafter(a, np.inf) for a in chunked[:3]) + chunked[3:])
    # A chunk put back in the wrong order (positions 7-13 reversed) moves each of its
    # amplitudes by >= 25 %, backgrounds >= 55 %, noise gains >= 3.4e-4 of their size
    # (measured), over 1e7 x FIT_RTOL: the tolerance still catches a wrong chunk.
    order = np.r_[0:7, 13:6:-1, 14:x.size]
    wrong = tuple(a[order] for a in chunked)
    assert not _same_fit(whole, wrong)
    for a, b in zip(whole[:3], wrong[:3], strict=True):
        assert np.min(np.abs(a[7:14] - b[7:14])[[0, 1, 2, 4, 5, 6]]
                      / np.abs(a[7:14])[[0, 1, 2, 4, 5, 6]]) > 1e7 * FIT_RTOL
    empty = forced_photometry(image, ra + 10.0, dec)      # all off the image
    assert len(empty) == 0 and empty.flux_jy.shape == (0,)


def test_beam_precision_gives_the_header_fwhm():
    cd = np.array([[-4.0, 0.0], [0.0, 4.0]]) / 3600
    p = beam_precision_px(cd, 20 / 3600, 14 / 3600, 0.0)    # major axis north (+y)
    # exp(-½ d P d) = ½ at d = FWHM/2
    assert np.exp(-0.5 * p[1, 1] * (20 / 4 / 2) ** 2) == pytest.approx(0.5)
    assert np.exp(-0.5 * p[0, 0] * (14 / 4 / 2) ** 2) == pytest.approx(0.5)
    p90 = beam_precision_px(cd, 20 / 3600, 14 / 3600, 90.0)  # major axis east (−x)
    assert p90[0, 0] == pytest.approx(p[1, 1]) and p90[1, 1] == pytest.approx(p[0, 0])


def test_primary_beam_cutoff_and_correction(tmp_path):
    # 4.3° across: the Airy beam falls below 0.2 towards the corners.
    field = FakeField(npix=192, cell_arcsec=80.0, bmaj_arcsec=300.0, bmin_arcsec=240.0)
    ra, dec = field.positions_in(40, seed=9, min_sep_px=12, margin_px=8)
    flux = np.full(ra.size, 0.5)
    files = write_image(tmp_path / "wide.fits", field, ra, dec, flux, sigma=SIGMA, seed=1)
    image = read_image(files["path"])
    pb_true = field.pb_at(ra, dec)
    config = PhotometryConfig(pb_cutoff=0.3)
    airy = forced_photometry(image, ra, dec, config=config)
    pbcor = fits.getdata(files["pbcor_path"])[0, 0]
    from_pbcor = forced_photometry(image, ra, dec, config=config, pbcor=pbcor)
    assert set(airy.index) == set(np.flatnonzero(pb_true >= 0.3))
    assert 0 < len(airy) < ra.size
    for t in (airy, from_pbcor):
        np.testing.assert_allclose(t.pb, pb_true[t.index], rtol=2e-3)
        assert np.all(np.abs(t.flux_jy - 0.5) < 5 * t.flux_err_jy)


def test_five_sigma_unmatched_island_becomes_new_source(tmp_path, sources):
    ra, dec, flux = sources
    (x_new, y_new), (x_faint, y_faint) = _free_spots(ra, dec, 2)
    x_new += 0.4
    (ra_new,), (dec_new,) = FIELD.wcs().all_pix2world([x_new], [y_new], 0)
    (ra_faint,), (dec_faint,) = FIELD.wcs().all_pix2world([x_faint], [y_faint], 0)
    extra = sky_model(FIELD, [ra_new, ra_faint], [dec_new, dec_faint], [12 * SIGMA, 2 * SIGMA])
    files = write_image(tmp_path / "new.fits", FIELD, ra, dec, flux, sigma=SIGMA, seed=4,
                        extra=extra)
    image = read_image(files["path"])
    residual = fits.getdata(files["residual_path"])[0, 0]
    islands = find_islands(image, residual=residual)
    assert len(islands) >= 10          # the catalog sources above 5σ are islands too
    new, n_all = new_source_candidates(image, ra, dec, residual=residual)
    assert n_all == len(islands)
    assert len(new) == 1, (new.x, new.y)
    assert abs(new.x[0] - x_new) < 0.5 and abs(new.y[0] - y_new) < 0.5
    assert abs(new.flux_jy[0] - 12 * SIGMA) < 4 * new.flux_err_jy[0]
    assert new.snr[0] > 5
    # With the new source in the known list nothing is new any more.
    again, _ = new_source_candidates(image, np.append(ra, ra_new), np.append(dec, dec_new),
                                     residual=residual)
    assert len(again) == 0


def _free_spots(ra, dec, n: int) -> list[tuple[float, float]]:
    """``n`` pixel spots far (> 12 px) from every source and from each other."""
    x, y = FIELD.wcs().all_world2pix(ra, dec, 0)
    spots: list[tuple[float, float]] = []
    for gy in range(20, FIELD.npix - 20, 6):
        for gx in range(20, FIELD.npix - 20, 6):
            far = np.min(np.hypot(x - gx, y - gy)) > 12
            if far and all(np.hypot(gx - a, gy - b) > 12 for a, b in spots):
                spots.append((float(gx), float(gy)))
                if len(spots) == n:
                    return spots
    raise AssertionError("no free spot in the field")


def test_match_radius_is_a_parameter(image_files, sources):
    ra, dec, _ = sources
    image = read_image(image_files["path"])
    # Catalog positions moved 30" away: with a 10" radius every island is "new".
    shifted = dec + 30 / 3600
    lone = {"artefact_neighbours": 1000}     # these 30 sources are close enough to "crowd"
    tight, n = new_source_candidates(
        image, ra, shifted, config=PhotometryConfig(match_radius_arcsec=10.0, **lone))
    loose, _ = new_source_candidates(
        image, ra, shifted, config=PhotometryConfig(match_radius_arcsec=45.0, **lone))
    assert n >= 10 and len(tight) >= n - 2 and len(loose) == 0


def test_sidelobes_and_crowds_of_islands_are_not_new_sources(tmp_path):
    field = dataclasses.replace(FIELD, npix=200)
    # A 2 Jy known source; a lone 20σ island 60 px away is 1 % of it.
    (ra_b,), (dec_b,) = field.wcs().all_pix2world([100.0], [100.0], 0)
    (ra_l,), (dec_l,) = field.wcs().all_pix2world([160.3], [100.2], 0)
    # Four 15σ islands 12 px apart: a streak, far from everything else.
    xs, ys = np.full(4, 30.0), 20.0 + 12.0 * np.arange(4)
    ra_s, dec_s = field.wcs().all_pix2world(xs, ys, 0)
    extra = sky_model(field, np.r_[ra_l, ra_s], np.r_[dec_l, dec_s],
                      np.r_[20 * SIGMA, np.full(4, 15 * SIGMA)])
    files = write_image(tmp_path / "art.fits", field, [ra_b], [dec_b], [2.0], sigma=SIGMA,
                        seed=2, extra=extra)
    image = read_image(files["path"])
    residual = fits.getdata(files["residual_path"])[0, 0]
    config = PhotometryConfig(sidelobe_fraction=0.02)
    apparent = np.array([2.0 * field.pb_at([ra_b], [dec_b])[0]])
    plain, n = new_source_candidates(image, [ra_b], [dec_b], residual=residual, config=config)
    assert n == 6 and len(plain) == 1          # the streak is vetoed, the lone one is not
    vetoed, _ = new_source_candidates(image, [ra_b], [dec_b], residual=residual,
                                      config=config, known_apparent_jy=apparent)
    assert len(vetoed) == 0                    # ...until it is a sidelobe of the 2 Jy source
    assert abs(plain.x[0] - 160.3) < 0.5


def _text_file(p: Path) -> Path:
    p.write_text("not a FITS file\n")
    return p


def _no_beam(p: Path) -> Path:
    h = FIELD.header()
    del h["BMAJ"], h["BMIN"]
    fits.PrimaryHDU(np.zeros((1, 1, 8, 8), np.float32), header=h).writeto(p)
    return p


def _empty_hdu(p: Path) -> Path:
    fits.PrimaryHDU().writeto(p)
    return p


def _all_nan(p: Path) -> Path:
    fits.PrimaryHDU(np.full((1, 1, 8, 8), np.nan, np.float32), header=FIELD.header()).writeto(p)
    return p


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p, "no such file"),
    (_text_file, "not a readable FITS file"),
    (_no_beam, r"no restoring beam \(BMAJ, BMIN\).*write BMAJ/BMIN/BPA"),
    (_empty_hdu, "primary HDU holds no image"),
    (_all_nan, "every pixel is NaN"),
])
def test_bad_fits_gives_a_clear_error_naming_the_file(tmp_path, make, match):
    path = make(tmp_path / "bad.fits")
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_unexpected_bunit_warns(tmp_path):
    h = FIELD.header()
    h["BUNIT"] = "K"
    fits.PrimaryHDU(np.zeros((1, 1, 8, 8), np.float32), header=h).writeto(tmp_path / "k.fits")
    with pytest.warns(UserWarning, match="BUNIT is 'K'"):
        read_image(tmp_path / "k.fits")


@pytest.mark.parametrize(("kw", "match"), [
    ({"pb_cutoff": 0.0}, "pb_cutoff"), ({"pb_cutoff": 1.5}, "pb_cutoff"),
    ({"detect_sigma": -1}, "detect_sigma"), ({"match_radius_arcsec": 0}, "match_radius"),
])
def test_config_is_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        PhotometryConfig(**kw)


def test_an_island_on_a_psf_sidelobe_of_a_known_source_is_not_new(tmp_path):
    field = dataclasses.replace(FIELD, npix=200)
    (ra_b,), (dec_b,) = field.wcs().all_pix2world([100.0], [100.0], 0)
    # Two 20σ islands 60 px from a 2 Jy source (1 % of it): one due north, on the PSF's
    # N–S streak (a 20 % sidelobe there), one to the east where the PSF is quiet.
    xs, ys = np.array([100.2, 160.3]), np.array([160.1, 100.2])
    ra_i, dec_i = field.wcs().all_pix2world(xs, ys, 0)
    extra = sky_model(field, ra_i, dec_i, np.full(2, 20 * SIGMA))
    files = write_image(tmp_path / "psf.fits", field, [ra_b], [dec_b], [2.0], sigma=SIGMA,
                        seed=2, extra=extra)
    image = read_image(files["path"])
    residual = fits.getdata(files["residual_path"])[0, 0]
    psf = np.zeros((200, 200), np.float32)
    psf[100, 100] = 1.0
    psf[100 + 30:, 100] = 0.2                 # a streak north of the peak
    apparent = np.array([2.0 * field.pb_at([ra_b], [dec_b])[0]])
    # The fixed-fraction rule alone (0.5 %) keeps both; the PSF rule vetoes the one on
    # the streak (20 σ < 10 % of 20 % of 2 Jy) and keeps the one off it.
    kept, n = new_source_candidates(image, [ra_b], [dec_b], residual=residual,
                                    known_apparent_jy=apparent)
    assert n == 3 and len(kept) == 2
    kept, _ = new_source_candidates(image, [ra_b], [dec_b], residual=residual,
                                    known_apparent_jy=apparent, psf=psf)
    assert len(kept) == 1 and abs(kept.x[0] - 160.3) < 0.5


def test_islands_in_a_row_or_column_with_a_brighter_one_are_a_streak():
    from pipeline.photometry.detect import Islands, streaks

    def islands(xy_flux):
        xy_flux = np.asarray(xy_flux, float)
        n = len(xy_flux)
        one = np.ones(n)
        return Islands(ra_deg=xy_flux[:, 0], dec_deg=xy_flux[:, 1], x=xy_flux[:, 0],
                       y=xy_flux[:, 1], peak_jy_beam=xy_flux[:, 2], flux_jy=xy_flux[:, 2],
                       flux_err_jy=0.1 * one, snr=10 * one, local_rms_jy=0.01 * one, pb=one,
                       n_pixels=np.full(n, 5))

    bright = [500.0, 500.0, 1.0]
    row = [[500.0 + dx, 500.4, 0.02] for dx in (-300, -120, 80, 210, 400)]   # E–W streak
    column = [[499.7, 500.0 + dy, 0.02] for dy in (-250, 90, 260)]           # only 3 others
    lone = [[800.0, 200.0, 0.02]]
    every = islands([bright, *row, *column, *lone])
    veto = streaks(every, every, half_width_px=2.0, length_px=1000.0, members=4)
    assert not veto[0]                      # the streak's source is the brightest on it
    assert veto[1:6].all()                  # each row member has 4 others and the source
    assert not veto[6:9].any()              # a column of 3 + the source is too short
    assert not veto[9]                      # alone
    # no brighter island on the line: a row of equals is not a streak of anything
    equals = islands([[100.0 + 50 * k, 300.0, 0.05] for k in range(6)])
    assert not streaks(equals, equals, half_width_px=2.0, length_px=1000.0, members=4).any()
