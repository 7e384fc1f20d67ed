"""The images page in real Chromium: filters, table, gallery, viewer with catalog overlay,
and the download route serving only files the store registered."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from datetime import timedelta

import numpy as np
import pytest
from astropy.io import fits
from conftest import ServedHome, run_async, test_api_key
from image_factory import SPECS, T_IMG, make_images
from playwright.sync_api import expect

from pipeline.home import Home
from pipeline.store import Store
from pipeline.store.images import ImageFilter
from views.image_viewer import (
    CLIPS,
    ImageViewer,
    beam_ellipse,
    clip_levels,
    scale_values,
    with_world,
)
from views.images_page import ImageBrowser, qa_label, table_frame


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgpage")
    home = Home.resolve(root / "home")
    outside = root / "secret.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(outside)
    with Store.open(home) as store:
        ids = make_images(store, home.images, SPECS)
        expected = {
            "all": store.count_images(),
            "passed": store.count_images(ImageFilter(qa=True)),
            "failed": store.count_images(ImageFilter(qa=False)),
            "dec": store.count_images(ImageFilter(dec_min=32.5, dec_max=37.0)),
            "dec_passed": store.count_images(ImageFilter(qa=True, dec_min=32.5, dec_max=37.0)),
        }
        sources = {i: len(store.reference_sources(i)) for i in ids}
        brightest = {i: tuple(store.reference_sources(i).iloc[0][["x", "y"]]) for i in ids}
        files = {i: store.image_file(i, "fits") for i in ids}
        # the gallery lists the filter's images in the store's order; the first with a
        # thumbnail is the first <img>
        dec_rows = store.images(ImageFilter(dec_min=32.5, dec_max=37.0))
        first_thumb = int(dec_rows[dec_rows.has_thumbnail.astype(bool)].id.iloc[0])
        thumb_file = store.image_file(first_thumb, "thumbnail")
    server = ServedHome(home, "--paused")
    server.ids, server.expected, server.sources, server.files = ids, expected, sources, files
    server.brightest = brightest
    server.first_thumb, server.thumb_file = first_thumb, thumb_file
    server.outside = outside
    server.key = test_api_key(home, "viewer")
    yield server
    assert server.stop() == 0


def get(url: str, key: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def n_shown(page) -> int:
    return int(page.locator(".n-images").get_attribute("data-n"))


DOC = "window.Bokeh.documents[0]"
# every catalog layer in the document as [rows, image id of its first row]; a replaced
# plot's models can linger in Bokeh's document, hence the image id column
CATALOG_JS = f"""() => {{
  if (!window.Bokeh || !Bokeh.documents.length) return [];
  const out = [];
  for (const m of {DOC}.all_models) {{
    const d = m.data_source && m.data_source.data;
    if (d && d.flux_mjy !== undefined)
      out.push([d.flux_mjy.length, d.flux_mjy.length ? d.image_id[0] : null]);
  }}
  return JSON.stringify(out);
}}"""
# the rasterized tile: its size, RA/Dec at the corners, and where its brightest pixel is
IMAGE_JS = f"""() => {{
  if (!window.Bokeh || !Bokeh.documents.length) return null;
  for (const m of {DOC}.all_models) {{
    const d = m.data_source && m.data_source.data;
    if (d && d.ra !== undefined && d.image !== undefined) {{
      const v = d.value[0], ra = d.ra[0], dec = d.dec[0];
      let best = 0;
      for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
      const w = d.image[0].shape ? d.image[0].shape[1] : Math.round(Math.sqrt(v.length));
      const h = v.length / w;
      return {{n: v.length, w: w, h: h, x0: d.x[0], y0: d.y[0], dw: d.dw[0], dh: d.dh[0],
               ra_first: ra[0], ra_last_in_row: ra[w - 1], dec_first: dec[0],
               dec_last_row: dec[v.length - 1],
               best_col: best % w, best_row: Math.floor(best / w), best_value: v[best]}};
    }}
  }}
  return null;
}}"""


@pytest.mark.ui
def test_filter_open_view_and_overlay(served, page):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    served.sign_in(page)
    page.goto(served.url + "/images")
    expect(page.locator(".n-images")).to_have_attribute("data-n", str(served.expected["all"]))
    rows = page.locator(".image-table .tabulator-row")
    expect(rows).to_have_count(served.expected["all"])

    # QA filter: the count and the rows follow the store's count for the same filter
    page.locator(".filter-qa button", has_text="failed").click()
    expect(page.locator(".n-images")).to_have_attribute("data-n",
                                                        str(served.expected["failed"]))
    expect(rows).to_have_count(served.expected["failed"])
    page.locator(".filter-qa button", has_text="passed").click()
    expect(rows).to_have_count(served.expected["passed"])

    # declination: type the bounds into the editable range slider's inputs
    inputs = page.locator(".filter-dec input")
    inputs.nth(0).fill("32.5")
    inputs.nth(0).press("Enter")
    inputs.nth(1).fill("37")
    inputs.nth(1).press("Enter")
    expect(page.locator(".n-images")).to_have_attribute("data-n",
                                                        str(served.expected["dec_passed"]))
    page.locator(".filter-qa button", has_text="all").click()
    expect(page.locator(".n-images")).to_have_attribute("data-n", str(served.expected["dec"]))

    # the gallery's thumbnails come through the download route and load
    thumbs = page.locator(".image-gallery figure.thumb")
    expect(thumbs).to_have_count(served.expected["dec"])
    img = page.locator(".image-gallery img").first
    expect(img).to_have_attribute("src", f"api/images/{served.first_thumb}/thumbnail")
    # and that route serves the very file the store registered for it
    status, _, png = get(f"{served.url}/api/images/{served.first_thumb}/thumbnail", served.key)
    assert status == 200 and png == served.thumb_file.read_bytes()
    img.scroll_into_view_if_needed()  # lazy-loaded
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())

    # open an image from the table: the viewer shows it with the catalog overlay (once the
    # table holds the filter's rows: a click on a row about to be redrawn is lost)
    expect(rows).to_have_count(served.expected["dec"])
    first_id = int(rows.first.locator('[tabulator-field="id"]').inner_text())
    rows.first.locator('[tabulator-field="observation"]').click()
    expect(page.locator(".viewer-title")).to_contain_text(f"image {first_id}")
    # the first image opened loads datashader on the server: allow it time on a busy machine
    expect(page.locator(".viewer-info")).to_contain_text(f"Image {first_id}", timeout=30_000)
    n_src = served.sources[first_id]
    assert n_src > 0
    page.wait_for_function(f"() => ({CATALOG_JS})() === '[[{n_src},{first_id}]]'")
    info = page.wait_for_function(f"() => ({IMAGE_JS})()").json_value()
    spec = SPECS[served.ids.index(first_id)]
    assert info["n"] > 1000
    # bottom-left first: RA falls to the right (east left), Dec rises upwards
    assert info["ra_first"] > spec.ra_deg > info["ra_last_in_row"]
    assert info["dec_first"] < spec.dec_deg < info["dec_last_row"]
    # the brightest displayed pixel sits on the brightest reference source
    bx = info["x0"] + (info["best_col"] + 0.5) * info["dw"] / info["w"]
    by = info["y0"] + (info["best_row"] + 0.5) * info["dh"] / info["h"]
    top = served.brightest[first_id]
    assert abs(bx - top[0]) < 2.5 and abs(by - top[1]) < 2.5, (bx, by, top)
    expect(page.locator(".viewer-plot canvas").first).to_be_visible()
    tooltips = page.evaluate(f"""() => Array.from({DOC}.all_models)
        .filter(m => m.tooltips !== undefined && m.renderers !== undefined)
        .map(m => JSON.stringify(m.tooltips)).join(' ')""")
    assert "RA (°)" in tooltips and "Dec (°)" in tooltips and "JY/BEAM" in tooltips

    # asinh lifts the faint end of the stretch; the pixel values underneath stay the same
    mean_js = (f"() => {{ const r = ({IMAGE_JS})(); const d = r && "
               f"Array.from({DOC}.all_models).find("
               "m => m.data_source && m.data_source.data.ra !== undefined).data_source.data;"
               " const a = d.image[0]; let s = 0; for (const v of a) s += v; return s / a.length;"
               " }")
    linear = page.evaluate(mean_js)
    page.locator(".viewer-scaling button", has_text="asinh").click()
    page.wait_for_function(f"() => ({mean_js})() > {linear} + 0.1")
    assert page.wait_for_function(f"() => ({IMAGE_JS})()").json_value()["best_value"] == \
        pytest.approx(info["best_value"])

    # the overlay toggle empties and refills the catalog layer
    page.locator(".catalog-toggle input").uncheck()
    page.wait_for_function(f"() => ({CATALOG_JS})() === '[[0,null]]'")
    page.locator(".catalog-toggle input").check()
    page.wait_for_function(f"() => ({CATALOG_JS})() === '[[{n_src},{first_id}]]'")

    # a thumbnail click opens that image instead
    other = thumbs.nth(1)
    other_id = int(other.get_attribute("data-image-id"))
    other.click()
    expect(page.locator(".viewer-title")).to_contain_text(f"image {other_id}")
    page.wait_for_function(f"() => ({CATALOG_JS})().includes("
                           f"'[{served.sources[other_id]},{other_id}]')")

    # the page's FITS link downloads a FITS file astropy reads
    link = page.locator(".download-fits").first
    assert link.get_attribute("href") == f"api/images/{other_id}/fits"
    with page.expect_download() as dl:
        link.click()
    with fits.open(dl.value.path()) as hdul:
        assert hdul[0].header["CTYPE1"] == "RA---SIN" and hdul[0].header["BUNIT"] == "JY/BEAM"
        assert hdul[0].data.shape[-2:] == (spec.npix, spec.npix)

    outside = [u for u in requests
               if not u.startswith((served.url, "blob:" + served.url, "data:"))]
    assert outside == []


@pytest.mark.ui
def test_download_route_serves_registered_fits(served):
    image_id = served.ids[0]
    status, headers, body = get(f"{served.url}/api/images/{image_id}/fits", served.key)
    assert status == 200
    assert headers["Content-Type"] == "application/fits"
    assert headers["Content-Disposition"] == (
        # colons (from the observation's ISO time) are not allowed in Windows file names
        f'attachment; filename="{served.files[image_id].name.replace(":", "_")}"')
    with fits.open(io.BytesIO(body)) as hdul:
        assert hdul[0].header["CTYPE2"] == "DEC--SIN"
        np.testing.assert_array_equal(hdul[0].data, fits.getdata(served.files[image_id]))
    status, headers, body = get(f"{served.url}/api/images/{image_id}/thumbnail", served.key)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG")
    assert "Content-Disposition" not in headers


@pytest.mark.ui
@pytest.mark.parametrize("tail", [
    "999999/fits",            # unknown id
    "{id}/psf",               # product the store has no file for
    "{id}/path",              # a column name, not a product
    "{id}/secret.fits",
    "abc/fits",
    "{id}%2F..%2F..%2Fsecret.fits/fits",
    "..%2F..%2Fsecret.fits/fits",
    "{id}/fits/../../secret.fits",
    "{outside}/fits",
])
def test_download_route_404s_what_the_store_does_not_know(served, tail):
    url = f"{served.url}/api/images/" + tail.format(id=served.ids[0], outside=served.outside)
    status, _, body = get(url, served.key)
    assert status == 404, url
    assert b"SIMPLE" not in body


# ---------------------------------------------------------------- no browser
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    with Store.open(root / "home") as store:
        make_images(store, root / "images", SPECS[:3])
        yield store


def test_scaling_maps_the_clip_range_onto_0_1():
    v = np.array([-5.0, 0.0, 0.5, 1.0, 7.0])
    for scaling in ("linear", "log", "asinh"):
        out = scale_values(v, lo=0.0, hi=1.0, scaling=scaling)
        assert out[0] == 0 and out[1] == 0 and out[3] == 1 and out[4] == 1
        assert np.all(np.diff(out) >= 0)
    mid = {s: scale_values(np.array([0.1]), lo=0, hi=1, scaling=s)[0]
           for s in ("linear", "log", "asinh")}
    assert mid["linear"] < mid["asinh"] < mid["log"]   # both stretch the faint end
    with pytest.raises(ValueError, match="scaling must be one of linear, log, asinh"):
        scale_values(v, lo=0, hi=1, scaling="sqrt")


def test_clip_levels_are_symmetric_percentiles():
    data = np.arange(1000, dtype=np.float32).reshape(40, 25)
    assert clip_levels(data, CLIPS["min–max"]) == (0.0, 999.0)
    lo, hi = clip_levels(data, CLIPS["99 %"])
    assert lo == pytest.approx(4.995) and hi == pytest.approx(994.005)
    assert clip_levels(np.full((4, 4), np.nan), 99.5) == (0.0, 1.0)
    lo, hi = clip_levels(np.ones((4, 4)), 99.5)
    assert hi > lo


def test_hover_world_coordinates_match_astropy(small_store):
    import holoviews as hv
    plane = small_store.image_plane(1)
    xs, ys = np.linspace(0, 127, 9), np.linspace(10, 100, 7)
    tile = hv.Image((xs, ys, np.random.default_rng(0).normal(size=(7, 9))), kdims=["x", "y"])
    out = with_world(tile, plane=plane, lo=-1, hi=1, scaling="linear")
    ra = out.dimension_values("ra", flat=False)
    dec = out.dimension_values("dec", flat=False)
    exp_ra, exp_dec = plane.wcs.wcs_pix2world(xs[None, :].repeat(7, 0),
                                              ys[:, None].repeat(9, 1), 0)
    np.testing.assert_allclose(ra, exp_ra)
    np.testing.assert_allclose(dec, exp_dec)
    np.testing.assert_array_equal(out.dimension_values("value", flat=False),
                                  tile.dimension_values(2, flat=False))


def test_beam_ellipse_sizes_in_pixels(small_store):
    plane = small_store.image_plane(1)
    beam = beam_ellipse(plane)
    cell = SPECS[0].cell_arcsec
    assert beam.width == pytest.approx(25 / cell) and beam.height == pytest.approx(40 / cell)
    assert beam.orientation == pytest.approx(np.radians(30))


def test_table_frame_and_qa_labels(small_store):
    frame = table_frame(small_store.images())
    assert list(frame.index) == [3, 2, 1]
    assert list(frame["QA"]) == ["failed", "passed", "passed"]
    assert list(frame["rms (mJy)"]) == [4.0, 2.0, 1.0]
    assert [qa_label(v) for v in (True, False, None, np.bool_(True), float("nan"))] == \
        ["passed", "failed", "—", "passed", "—"]


def test_viewer_and_browser_in_a_notebook(small_store):
    viewer = ImageViewer(store=small_store, image_id=2)
    shown = run_async(viewer._view(2, "fits"))
    assert "**Image 2**" in shown[0].object
    assert f"{len(small_store.reference_sources(2))} reference sources" in shown[0].object
    assert "api/images/2/fits" in shown[1].object
    missing = run_async(viewer._view(2, "psf"))
    assert "product psf: no file registered" in missing.object
    unknown = run_async(viewer._view(77, "fits"))
    assert "image 77: not in the store" in unknown.object
    browser = ImageBrowser(store=small_store, qa="passed")
    assert small_store.count_images(browser.filters()) == 2
    browser.__panel__()
    assert list(browser._table.value.index) == [2, 1]
    browser.qa = "failed"
    assert list(browser._table.value.index) == [3]
    browser.qa = "all"
    browser.time_range = (T_IMG + timedelta(minutes=4), T_IMG + timedelta(minutes=12))
    assert list(browser._table.value.index) == [3, 2]
    browser.rms_range = (0.0, 3.0)   # mJy
    assert list(browser._table.value.index) == [2]
    browser.image_id = 3
    assert browser.viewer.image_id == 3
