"""The store's image queries on a real DuckDB file with real FITS products."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from image_factory import SPECS, T_IMG, make_images

from pipeline.errors import ContimgError
from pipeline.instrument.times import mjd_to_utc, utc_to_mjd
from pipeline.store import Store
from pipeline.store.image_files import ImageFileMissing, UnknownImage, UnreadableImage, read_plane
from pipeline.store.images import ImageFilter


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    root = tmp_path_factory.mktemp("store_images")
    with Store.open(root / "home") as store:
        ids = make_images(store, root / "images", SPECS)
        yield store, ids, root


def test_filters_match_a_plain_python_filter(filled):
    store, ids, _ = filled
    cases = [
        (ImageFilter(), lambda s: True),
        (ImageFilter(qa=True), lambda s: s.qa_passed),
        (ImageFilter(qa=False), lambda s: not s.qa_passed),
        (ImageFilter(dec_min=32, dec_max=34), lambda s: 32 <= s.dec_deg <= 34),
        (ImageFilter(rms_min=0.0015, rms_max=0.004), lambda s: 0.0015 <= s.rms_jy <= 0.004),
        (ImageFilter(from_utc=T_IMG + timedelta(minutes=5),
                     to_utc=T_IMG + timedelta(minutes=15)), lambda s: 5 <= s.minutes <= 15),
        (ImageFilter(qa=True, dec_min=35), lambda s: s.qa_passed and s.dec_deg >= 35),
    ]
    for flt, keep in cases:
        expected = {i for i, s in zip(ids, SPECS, strict=True) if keep(s)}
        got = store.images(flt)
        assert set(got.id) == expected, flt
        assert store.count_images(flt) == len(expected)


def test_mjd_and_utc_bounds_agree_and_tighter_wins(filled):
    store, _, _ = filled
    lo = utc_to_mjd(T_IMG + timedelta(minutes=10))
    by_mjd = store.images(ImageFilter(from_mjd=lo))
    by_utc = store.images(ImageFilter(from_utc=T_IMG + timedelta(minutes=10)))
    assert list(by_mjd.id) == list(by_utc.id) and len(by_mjd) == 4
    both = store.images(ImageFilter(from_mjd=lo, from_utc=T_IMG + timedelta(minutes=20)))
    assert len(both) == 2
    assert mjd_to_utc(lo) == T_IMG + timedelta(minutes=10)


def test_sorting_limit_and_offset(filled):
    store, _, _ = filled
    by_rms = store.images(order_by="rms_jy", descending=False)
    assert list(by_rms.rms_jy) == sorted(s.rms_jy for s in SPECS)
    page2 = store.images(order_by="rms_jy", descending=False, limit=2, offset=2)
    assert list(page2.id) == list(by_rms.id[2:4])
    newest = store.images(order_by="utc")
    assert list(newest.utc) == sorted(newest.utc, reverse=True)
    assert newest.utc.iloc[-1] == T_IMG


@pytest.mark.parametrize("kwargs, match", [
    ({"order_by": "rms_jy; DROP TABLE images"}, "cannot sort by"),
    ({"limit": -1}, "must be >= 0"),
])
def test_images_rejects_bad_arguments(filled, kwargs, match):
    store, _, _ = filled
    with pytest.raises(ValueError, match=match):
        store.images(**kwargs)


def test_image_file_serves_only_registered_existing_files(filled):
    store, ids, root = filled
    first = ids[0]
    assert store.image_file(first, "fits") == Path(store.image(first)["path"])
    assert store.image_file(str(first), "residual").name.endswith("-residual.fits")
    assert store.image_file(first, "thumbnail").suffix == ".png"
    no_thumb = ids[SPECS.index(next(s for s in SPECS if not s.thumbnail))]
    for image_id, product in [(first, "psf"),            # column is NULL
                              (no_thumb, "thumbnail"),   # column is NULL
                              (first, "path"),           # a column name, not a product
                              (first, "../../etc/passwd"),
                              (999, "fits"), ("1 OR 1=1", "fits"), ("../1", "fits"),
                              ("²", "fits"), (True, "fits")]:
        assert store.image_file(image_id, product) is None, (image_id, product)
    assert store.image_products(first) == ["fits", "residual", "model", "pbcor", "thumbnail"]


def test_image_file_is_none_once_the_file_is_gone(tmp_path):
    with Store.open(tmp_path / "home") as store:
        (image_id,) = make_images(store, tmp_path / "images", SPECS[:1])
        path = store.image_file(image_id, "model")
        path.unlink()
        assert store.image_file(image_id, "model") is None
        with pytest.raises(ImageFileMissing, match="product model: no file registered"):
            store.image_plane(image_id, "model")


def test_image_record_and_errors(filled):
    store, ids, _ = filled
    rec = store.image(ids[2])
    assert rec["qa_passed"] is False and rec["qa_reason"] == "rms too high"
    with pytest.raises(UnknownImage, match="image 12345: not in the store") as info:
        store.image(12345)
    assert isinstance(info.value, ContimgError)
    with pytest.raises(ImageFileMissing, match="not a FITS product"):
        store.image_plane(ids[0], "thumbnail")


def test_image_plane_reads_wcs_beam_and_pixels(filled):
    store, ids, _ = filled
    plane = store.image_plane(ids[0])
    spec = SPECS[0]
    assert plane.shape == (spec.npix, spec.npix)
    assert plane.data.dtype == np.float32
    assert plane.bunit == "JY/BEAM" and plane.freq_hz == pytest.approx(1.405e9)
    assert plane.bmaj_deg == pytest.approx(40 / 3600) and plane.bpa_deg == 30.0
    ra, dec = plane.world(np.array([spec.npix / 2]), np.array([spec.npix / 2]))
    assert ra[0] == pytest.approx(spec.ra_deg) and dec[0] == pytest.approx(spec.dec_deg)
    with fits.open(store.image_file(ids[0], "fits")) as hdul:
        np.testing.assert_array_equal(plane.data, hdul[0].data[0, 0])


def test_reference_sources_lie_on_the_image_and_sit_on_flux(filled):
    store, ids, _ = filled
    src = store.reference_sources(ids[0])
    plane = store.image_plane(ids[0])
    n = SPECS[0].npix
    assert len(src) > 5
    assert src.x.between(-0.5, n - 0.5).all() and src.y.between(-0.5, n - 0.5).all()
    assert list(src.flux_jy) == sorted(src.flux_jy, reverse=True)
    # the fabricated image put each source there: its pixel is brighter than the noise
    bright = src[(src.flux_jy > 0.03) & src.x.between(3, n - 4) & src.y.between(3, n - 4)]
    values = plane.data[np.round(bright.y).astype(int), np.round(bright.x).astype(int)]
    assert (values > 10 * SPECS[0].rms_jy).all()
    # every catalog source inside the footprint is listed: compare with a brute-force WCS test
    cat = store.reference_catalog()
    x, y = plane.pixel(cat.ra_deg, cat.dec_deg)
    inside = (x >= -0.5) & (x <= n - 0.5) & (y >= -0.5) & (y <= n - 0.5)
    assert len(src) == int(inside.sum())
    assert len(store.reference_sources(ids[0], min_flux_jy=0.05)) < len(src)


def test_recent_images_list_backend_and_duration(filled):
    store, ids, _ = filled
    recent = store.recent_images(limit=3)
    assert list(recent.id) == ids[::-1][:3]
    assert list(recent.backend) == [s.backend for s in SPECS[::-1][:3]]
    assert recent.duration_s.notna().all()
    assert "gpu" in set(store.recent_images().backend)


def test_ranges_and_empty_store(tmp_path, filled):
    store, _, _ = filled
    ranges = store.image_ranges()
    assert ranges["dec_deg"] == (30.0, 36.0) and ranges["rms_jy"] == (0.001, 0.008)
    with Store.open(tmp_path / "empty") as empty:
        assert empty.image_ranges() == {"mid_mjd": None, "dec_deg": None, "rms_jy": None}
        assert empty.images().empty and empty.count_images() == 0
        assert empty.recent_images().empty


def test_unreadable_fits_names_the_file(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(UnreadableImage, match="bad.fits: not a readable FITS file"):
        read_plane(bad)
    table_only = tmp_path / "table.fits"
    fits.PrimaryHDU(np.zeros(5)).writeto(table_only)
    with pytest.raises(UnreadableImage, match="primary HDU holds no image"):
        read_plane(table_only)
