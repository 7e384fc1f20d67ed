"""VOTable and CSV exports read back by astropy and pandas; cutouts from real FITS images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import WCS
from PIL import Image

from pipeline.cutouts import CutoutError, cutout, cutout_png
from pipeline.exports import ExportError, csv_bytes, votable_bytes, write_csv, write_votable
from pipeline.store.sources import FilterSpec


def write_image(path: Path, *, ra0: float, dec0: float, npix: int = 128, cell_arcsec: float = 10.0,
                sources: list[tuple[float, float, float]] = (), seed: int = 0,
                four_d: bool = True) -> Path:
    """A restored-image-like FITS file (SIN, Jy/beam, RA/Dec/FREQ/STOKES) with Gaussians."""
    w = WCS(naxis=4 if four_d else 2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"][: w.naxis]
    w.wcs.crval = [ra0, dec0, 1.4e9, 1.0][: w.naxis]
    w.wcs.crpix = [npix / 2 + 1, npix / 2 + 1, 1, 1][: w.naxis]
    w.wcs.cdelt = [-cell_arcsec / 3600, cell_arcsec / 3600, 1e6, 1][: w.naxis]
    w.wcs.cunit = ["deg", "deg", "Hz", ""][: w.naxis]
    img = np.random.default_rng(seed).normal(0, 1e-3, (npix, npix)).astype(np.float32)
    yy, xx = np.mgrid[:npix, :npix]
    sigma = 3.0
    for ra, dec, flux in sources:
        x, y = w.celestial.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg))
        img += flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    header = w.to_header()
    header["BUNIT"] = "JY/BEAM"
    header["BMAJ"] = header["BMIN"] = 2.355 * sigma * cell_arcsec / 3600
    header["BPA"] = 0.0
    header["DATE-OBS"] = "2026-11-23T12:00:00"
    data = img[None, None] if four_d else img
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


def source_frame(n: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "id": np.arange(1, n + 1), "name": [f"J{i:04d}+33" for i in range(n)],
        "ra_deg": rng.uniform(0, 360, n), "dec_deg": rng.uniform(28, 38, n),
        "catalog_flux_jy": rng.uniform(0.01, 2, n),
        "origin": ["catalog"] * (n - 1) + ["detected"],
        "n_meas": rng.integers(0, 50, n).astype("int32"),
        "wmean_jy": [np.nan] + list(rng.uniform(0.01, 2, n - 1)),
        "eta": [np.nan] + list(rng.lognormal(0, 1, n - 1)),
        "v": rng.uniform(0.001, 0.5, n), "vs_max": np.nan, "m_max": np.nan,
        "is_variable": [i % 4 == 0 for i in range(n)], "sep_arcsec": np.nan})


def lightcurve_frame() -> pd.DataFrame:
    return pd.DataFrame({"mjd": 61000 + np.arange(8) / 288, "flux_jy": np.linspace(0.1, 0.2, 8),
                         "flux_err_jy": np.full(8, 0.003), "snr": np.linspace(30, 60, 8),
                         "forced": [True, False] * 4, "image_id": np.arange(10, 18)})


def test_source_votable_parses_with_astropy_and_keeps_rows_units_and_nulls(tmp_path):
    frame = source_frame()
    path = tmp_path / "sources.vot"
    write_votable(frame, path, name="sources", description="eta >= 2")
    table = parse_single_table(str(path)).to_table()
    assert len(table) == len(frame)
    assert list(table.colnames) == list(frame.columns)
    assert list(table["name"]) == list(frame.name)
    np.testing.assert_array_equal(table["id"], frame.id)
    np.testing.assert_allclose(table["ra_deg"], frame.ra_deg, rtol=0, atol=0)
    assert table["ra_deg"].unit == u.deg and table["wmean_jy"].unit == u.Jy
    assert table["eta"].mask[0] and not table["eta"].mask[1:].any()
    np.testing.assert_allclose(table["eta"][1:], frame.eta[1:])
    assert list(table["is_variable"]) == list(frame.is_variable)
    vot = parse_single_table(str(path), verify="exception")  # any VOTable warning fails
    assert vot.get_field_by_id("ra_deg").ucd == "pos.eq.ra;meta.main"


def test_lightcurve_votable_and_csv_round_trip():
    lc = lightcurve_frame()
    table = parse_single_table(io.BytesIO(votable_bytes(lc, name="lightcurve"))).to_table()
    assert len(table) == 8
    np.testing.assert_allclose(table["flux_jy"], lc.flux_jy, rtol=0, atol=0)
    assert list(table["forced"]) == list(lc.forced)
    assert table["mjd"].unit == u.day
    back = pd.read_csv(io.BytesIO(csv_bytes(lc)))
    pd.testing.assert_frame_equal(back, lc, check_dtype=False)
    assert back.flux_jy.tolist() == lc.flux_jy.tolist()  # exact, not rounded


def test_csv_streams_chunks_with_one_header(tmp_path):
    frame = source_frame(40)
    chunks = [frame.iloc[:15], frame.iloc[15:30], frame.iloc[30:]]
    path = tmp_path / "sources.csv"
    assert write_csv(iter(chunks), path) == 40
    text = path.read_text()
    assert text.count("id,name,ra_deg") == 1
    back = pd.read_csv(path)
    assert back.id.tolist() == frame.id.tolist()
    np.testing.assert_array_equal(back.ra_deg, frame.ra_deg)
    assert back.eta.isna().tolist() == frame.eta.isna().tolist()


def test_store_export_to_votable_has_every_filtered_row(store):
    from test_store_sources import fill_sources
    rng = np.random.default_rng(9)
    fill_sources(store, ra=rng.uniform(10, 11, 120), dec=rng.uniform(33, 34, 120), n_epochs=4)
    spec = FilterSpec(n_meas_min=1, sort_by="eta")
    table = parse_single_table(io.BytesIO(votable_bytes(store.iter_sources(spec, chunk_rows=10)))
                               ).to_table()
    assert len(table) == store.count_sources(spec) == 120
    assert list(table["id"]) == list(store.export_sources(spec).id)


def test_empty_exports_keep_their_columns():
    empty = source_frame().iloc[:0]
    assert parse_single_table(io.BytesIO(votable_bytes(empty))).to_table().colnames == list(
        empty.columns)
    assert csv_bytes(empty).decode().startswith("id,name,")


def test_unwritable_paths_name_the_file(tmp_path):
    bad = tmp_path / "no" / "such" / "dir" / "x.vot"
    with pytest.raises(ExportError, match=r"x\.vot: cannot write"):
        write_votable(lightcurve_frame(), bad)
    with pytest.raises(ExportError, match=r"x\.csv: cannot write"):
        write_csv(lightcurve_frame(), bad.with_suffix(".csv"))


@pytest.mark.parametrize("four_d", [True, False])
def test_cutout_is_centred_on_the_source(tmp_path, four_d):
    ra0, dec0 = 359.95, 33.0  # across RA 0/360
    src = (0.02, 33.05, 0.5)
    path = write_image(tmp_path / "img.fits", ra0=ra0, dec0=dec0,
                       sources=[src, (359.9, 32.95, 0.3)], four_d=four_d)
    cut = cutout(path, src[0], src[1], size_arcsec=300)
    assert cut.data.shape == (30, 30) and cut.bunit == "JY/BEAM"
    peak = np.unravel_index(np.nanargmax(cut.data), cut.data.shape)
    x, y = cut.position_pix
    assert abs(peak[1] - x) <= 1 and abs(peak[0] - y) <= 1
    assert cut.data[peak] == pytest.approx(0.5, abs=0.05)
    sky = cut.wcs.pixel_to_world(x, y)
    assert sky.separation(SkyCoord(src[0] * u.deg, src[1] * u.deg)).arcsec < 1e-3


def test_cutout_png_and_partial_edges(tmp_path):
    path = write_image(tmp_path / "img.fits", ra0=150, dec0=45, sources=[(150, 45, 1.0)])
    png = cutout_png(path, 150, 45, size_arcsec=400, size_px=200)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (200, 200)
    grey = np.asarray(img.convert("L"), dtype=float)
    assert grey[95:105, 95:105].mean() > grey[:30, :30].mean() + 50  # the source is bright
    # Near the image's edge: the part outside is NaN, not an error.
    w = WCS(fits.getheader(path)).celestial
    edge = w.pixel_to_world(2, 64)
    cut = cutout(path, edge.ra.deg, edge.dec.deg, size_arcsec=300)
    assert np.isnan(cut.data).any() and np.isfinite(cut.data).any()


def test_cutout_errors_name_the_file(tmp_path):
    path = write_image(tmp_path / "img.fits", ra0=150, dec0=45)
    with pytest.raises(CutoutError, match=r"img\.fits: position .* outside the image"):
        cutout(path, 30.0, -20.0)
    with pytest.raises(CutoutError, match=r"gone\.fits: image file not found; .*re-image"):
        cutout(tmp_path / "gone.fits", 150, 45)
    junk = tmp_path / "junk.fits"
    junk.write_text("not a fits file")
    with pytest.raises(CutoutError, match=r"junk\.fits: not a readable FITS file"):
        cutout(junk, 150, 45)
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="D", array=np.zeros(3))])]).writeto(table)
    with pytest.raises(CutoutError, match=r"table\.fits: primary HDU holds no image"):
        cutout(table, 150, 45)


def test_votable_rows_read_back_as_astropys_own_writer_gives_them():
    from astropy.io.votable import from_table, parse

    from pipeline.exports import to_table
    frame = pd.DataFrame({
        "id": np.arange(5), "name": ["a&b", "<x>", "η Car", "", "J1+2"],
        "flux_jy": [0.1, np.nan, np.inf, -np.inf, 1e-300],
        "is_variable": [True, False, True, False, True],
        "origin": ["catalog", None, "detected", "catalog", "catalog"]})
    ours = parse(io.BytesIO(votable_bytes(frame)), verify="exception").get_first_table()
    reference = io.BytesIO()
    from_table(to_table(frame)).to_xml(reference)
    theirs = parse(io.BytesIO(reference.getvalue())).get_first_table()
    for col in frame.columns:
        a, b = ours.array[col], theirs.array[col]
        assert list(np.ma.getmaskarray(a)) == list(np.ma.getmaskarray(b)), col
        np.testing.assert_array_equal(np.ma.filled(a, a.dtype.type(0)) if a.dtype.kind != "U"
                                      else a.filled(""), np.ma.filled(b, b.dtype.type(0))
                                      if b.dtype.kind != "U" else b.filled(""))
    assert list(ours.array["name"]) == list(frame.name)
    assert np.ma.getmaskarray(ours.array["flux_jy"]).tolist() == [False, True, False, False,
                                                                  False]
    assert ours.array["flux_jy"][2] == np.inf and ours.array["flux_jy"][3] == -np.inf
