"""One image, interactively, with hover readout, beam, catalog overlay and downloads.

Datashader-rasterized pixels, colour map and scaling, RA/Dec hover, the restoring beam, a
reference-catalog overlay and download links.

In a notebook: ``ImageViewer(store=Store.open(home), image_id=3)``.
"""

from __future__ import annotations

import asyncio
import html
import math
from dataclasses import dataclass
from functools import cache

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from pipeline.errors import ContimgError
from pipeline.store import Store
from pipeline.store.image_files import ImagePlane

CMAPS = ("inferno", "gray", "viridis", "magma", "cividis", "coolwarm")
SCALINGS = ("linear", "log", "asinh")
#: display range: min–max, or symmetric percentiles of the pixel values
CLIPS = {"min–max": 100.0, "99.9 %": 99.9, "99.5 %": 99.5, "99 %": 99.0, "95 %": 95.0}
FITS_PRODUCTS = ("fits", "pbcor", "residual", "model", "psf")
PRODUCT_LABELS = {"fits": "restored", "pbcor": "PB-corrected", "residual": "residual",
                  "model": "model", "psf": "PSF", "thumbnail": "thumbnail PNG"}
_MAX_PERCENTILE_SAMPLES = 1_000_000


@cache
def warm_up() -> None:
    """Import the rasterizer and compile its kernels once per process (off the IO loop).

    The first datashader aggregation imports the plotting backend and compiles numba
    kernels: about 6 s on an idle 2-core machine, and several times that on a busy one.
    Done on the loop, that froze every session until the first image showed; the viewer
    awaits this in a worker thread, and ``contimg serve`` starts it in the background.
    """
    import holoviews.plotting.bokeh  # noqa: F401, PLC0415 — .opts() needs a backend
    from holoviews.operation.datashader import rasterize  # noqa: PLC0415

    tiny = hv.Image((np.arange(8), np.arange(8), np.ones((8, 8), np.float32)),
                    kdims=["x", "y"], vdims=["value"])
    rasterize(tiny, aggregator="mean", dynamic=False, width=4, height=4)


def clip_levels(data: np.ndarray, clip: float) -> tuple[float, float]:
    """(lo, hi) display limits: the (100-clip)/2 and (100+clip)/2 percentiles, NaNs ignored.

    A 4096² image is subsampled to about a million pixels: the percentiles of a regular
    subsample differ from the full ones far below one grey level.
    """
    flat = data.ravel()
    step = max(1, flat.size // _MAX_PERCENTILE_SAMPLES)
    sample = flat[::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [(100 - clip) / 2, (100 + clip) / 2])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def scale_values(values: np.ndarray, *, lo: float, hi: float, scaling: str) -> np.ndarray:
    """Pixel values → 0..1 for the colour map: clipped to [lo, hi], then stretched."""
    t = np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    if scaling == "linear":
        return t
    if scaling == "log":
        return np.log10(1.0 + 1000.0 * t) / np.log10(1001.0)
    if scaling == "asinh":
        return np.arcsinh(10.0 * t) / np.arcsinh(10.0)
    raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")


def with_world(raster: hv.Image, *, plane: ImagePlane, lo: float, hi: float,
               scaling: str) -> hv.Image:
    """A rasterized tile with the display value first, then pixel value, RA and Dec (deg)."""
    xs = raster.dimension_values(0, expanded=False)
    ys = raster.dimension_values(1, expanded=False)
    value = raster.dimension_values(2, flat=False)
    xx, yy = np.meshgrid(xs, ys)
    ra, dec = plane.world(xx, yy)  # only the tile's few hundred thousand pixels
    shown = scale_values(value, lo=lo, hi=hi, scaling=scaling)
    return hv.Image((xs, ys, shown, value, ra, dec), kdims=["x", "y"],
                    vdims=["display", "value", "ra", "dec"])


def beam_ellipse(plane: ImagePlane) -> hv.Ellipse | None:
    """The restoring beam, in pixels, in the image's bottom-left corner (None if no beam)."""
    if not (plane.bmaj_deg and plane.bmin_deg):
        return None
    sx, sy = plane.cell_deg
    major, minor = plane.bmaj_deg / sy, plane.bmin_deg / sx
    centre = max(major, 4.0) * 0.75 + 2
    # BPA counts from north towards east; east is left on the sky, i.e. counter-clockwise.
    return hv.Ellipse(centre - 0.5, centre - 0.5, (minor, major),
                      orientation=math.radians(plane.bpa_deg or 0.0))


def catalog_points(sources: pd.DataFrame, show: bool, image_id: int) -> hv.Points:
    """Reference sources as open circles (empty when hidden)."""
    frame = sources if show else sources.iloc[:0]
    data = pd.DataFrame({"x": frame.x, "y": frame.y, "name": frame.name,
                         "flux_mjy": frame.flux_jy * 1e3, "ra_deg": frame.ra_deg,
                         "dec_deg": frame.dec_deg, "image_id": image_id})
    return hv.Points(data, kdims=["x", "y"],
                     vdims=["name", "flux_mjy", "ra_deg", "dec_deg", "image_id"])


def products_html(image_id: int, products: list[str], api_root: str) -> str:
    """Download links for the products the store has files for."""
    links = [f'<a class="download-{p}" href="{api_root}/images/{image_id}/{p}"'
             f'{" download" if p != "thumbnail" else " target=_blank"}>'
             f"{PRODUCT_LABELS.get(p, p)}</a>" for p in products]
    return ('<div class="image-downloads">Download FITS: ' + " · ".join(links) + "</div>"
            if links else '<div class="image-downloads">No files on disk for this image.</div>')


def info_markdown(record: dict, plane: ImagePlane, n_sources: int, lo: float,
                  hi: float) -> str:
    """One paragraph about the image: time, centre, beam, noise, QA, backend."""
    def num(key: str, spec: str, scale: float = 1.0) -> str:
        v = record.get(key)
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else \
            format(float(v) * scale, spec)

    beam = ("—" if not plane.bmaj_deg else
            f'{plane.bmaj_deg * 3600:.1f}″ × {plane.bmin_deg * 3600:.1f}″ at '
            f'{plane.bpa_deg or 0:.0f}°')
    qa = {True: "passed", False: f"failed ({record.get('qa_reason') or 'no reason given'})"}
    return (f"**Image {record['id']}** · observation `{html.escape(str(record['observation_id']))}`"
            f" · {plane.date_obs or ''}  \n"
            f"{plane.shape[1]}×{plane.shape[0]} px · beam {beam} · "
            f"rms {num('rms_jy', '.2f', 1e3)} mJy/beam · peak {num('peak_jy', '.3f')} Jy · "
            f"QA {qa.get(record.get('qa_passed'), 'not judged')} · "
            f"{record.get('backend') or '?'} in {num('duration_s', '.1f')} s  \n"
            f"{n_sources} reference sources on the field · display range "
            f"{lo:.4g} … {hi:.4g} {plane.bunit or ''}")


@dataclass(frozen=True, kw_only=True)
class _Loaded:
    """One image product as read for the viewer."""

    record: dict
    plane: ImagePlane
    sources: pd.DataFrame
    levels: dict[str, tuple[float, float]]
    products: list[str]


class ImageViewer(pn.viewable.Viewer):
    """Zoomable view of one image with hover readout, beam and catalog overlay."""

    store = param.ClassSelector(class_=Store, doc="Query methods over the catalog.")
    image_id = param.Integer(default=None, allow_None=True, doc="The image shown.")
    product = param.Selector(objects=list(FITS_PRODUCTS), default="fits",
                             doc="Which FITS product to show.")
    cmap = param.Selector(objects=list(CMAPS), default="inferno", doc="Colour map.")
    scaling = param.Selector(objects=list(SCALINGS), default="linear", doc="Stretch.")
    clip = param.Selector(objects=list(CLIPS), default="99.5 %", doc="Display range.")
    show_catalog = param.Boolean(default=True, doc="Overlay the reference catalog.")
    api_root = param.String(default="api", doc="URL of the server's /api, for the download "
                            "links (relative to the page).")
    height = param.Integer(default=620, bounds=(200, None), doc="Plot height in pixels.")

    def __init__(self, **params):
        super().__init__(**params)
        self._layout: pn.viewable.Viewable | None = None

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is not None:  # built once: a second display mirrors the first
            return self._layout
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.product, name="Product", width=130),
            pn.widgets.Select.from_param(self.param.cmap, name="Colour map", width=130),
            pn.widgets.RadioButtonGroup.from_param(self.param.scaling, name="Scaling",
                                                   css_classes=["viewer-scaling"]),
            pn.widgets.Select.from_param(self.param.clip, name="Clip", width=110),
            pn.widgets.Checkbox.from_param(self.param.show_catalog, name="Catalog overlay",
                                           css_classes=["catalog-toggle"]),
            sizing_mode="stretch_width", css_classes=["viewer-controls"])
        # async: the plane is read in a worker thread while the loop serves everyone else,
        # and the body shows a loading spinner meanwhile; lazy: nothing is read for a
        # viewer that is not on screen
        body = pn.panel(pn.bind(self._view, self.param.image_id, self.param.product),
                        sizing_mode="stretch_width", loading_indicator=True, lazy=True)
        self._layout = pn.Column(controls, body, sizing_mode="stretch_width",
                                 css_classes=["image-viewer"])
        return self._layout

    def _load(self, image_id: int, product: str) -> _Loaded:
        """Everything the view needs from the store and the file (runs in a worker thread)."""
        record = self.store.image(image_id)
        plane = self.store.image_plane(image_id, product)
        # a PSF's WCS is centred on the source, not on the field: no catalog over it
        sources = (self.store.reference_sources(image_id, plane=plane) if product != "psf"
                   else pd.DataFrame(columns=["name", "ra_deg", "dec_deg", "flux_jy", "x", "y"]))
        levels = {name: clip_levels(plane.data, pct) for name, pct in CLIPS.items()}
        return _Loaded(record=record, plane=plane, sources=sources, levels=levels,
                       products=self.store.image_products(image_id))

    async def _view(self, image_id: int | None, product: str) -> pn.viewable.Viewable:
        if image_id is None:
            return pn.pane.Markdown("Choose an image in the table or the gallery.",
                                    css_classes=["viewer-empty"])
        try:
            # A 4096² plane is 64 MB read and sampled: never on the server's IO loop.
            loaded = await asyncio.to_thread(self._load, image_id, product)
            await asyncio.to_thread(warm_up)  # at once after the first time
        except ContimgError as exc:
            return pn.pane.Alert(str(exc), alert_type="warning", css_classes=["viewer-error"])
        plane = loaded.plane
        return pn.Column(
            pn.pane.Markdown(pn.bind(self._info, loaded, self.param.clip),
                             css_classes=["viewer-info"], sizing_mode="stretch_width"),
            pn.pane.HTML(products_html(image_id, loaded.products, self.api_root),
                         css_classes=["viewer-downloads"]),
            pn.pane.HoloViews(self._plot(plane, loaded.sources, image_id, loaded.levels),
                              css_classes=["viewer-plot"]),
            sizing_mode="stretch_width")

    def _info(self, loaded: _Loaded, clip: str) -> str:
        return info_markdown(loaded.record, loaded.plane, len(loaded.sources),
                             *loaded.levels[clip])

    def _plot(self, plane: ImagePlane, sources: pd.DataFrame, image_id: int,
              levels: dict[str, tuple[float, float]]) -> hv.Overlay:
        # Imported on first use (warm_up has imported them in a worker thread): datashader
        # and the plotting backend cost the server seconds at start-up; only this page uses them.
        import holoviews.plotting.bokeh  # noqa: F401, PLC0415 — .opts() needs a backend
        from holoviews.operation.datashader import rasterize  # noqa: PLC0415

        ny, nx = plane.shape
        # Coordinates given explicitly: an array alone would put FITS row 0 (the bottom,
        # south) at the top.
        base = hv.Image((np.arange(nx), np.arange(ny), plane.data), kdims=["x", "y"],
                        vdims=["value"])

        def decorate(raster: hv.Image, scaling: str, clip: str) -> hv.Image:
            lo, hi = levels[clip]
            return with_world(raster, plane=plane, lo=lo, hi=hi, scaling=scaling)

        # datashader keeps what reaches the browser at screen size however big the image
        shown = rasterize(base, aggregator="mean").apply(
            decorate, scaling=self.param.scaling, clip=self.param.clip)
        unit = plane.bunit or "value"
        shown = shown.apply.opts(cmap=self.param.cmap).opts(
            clim=(0.0, 1.0), tools=["hover"], colorbar=False,
            hover_tooltips=[("RA (°)", "@ra{0.00000}"), ("Dec (°)", "@dec{0.00000}"),
                            (unit, "@value{0.000000}"), ("pixel", "$x{0}, $y{0}")])
        points = hv.DynamicMap(pn.bind(catalog_points, sources, self.param.show_catalog,
                                           image_id)).opts(
            marker="circle", size=14, fill_alpha=0.0, line_color="#39ff14", line_width=1.5,
            tools=["hover"], hover_tooltips=[("source", "@name"), ("S1.4 (mJy)",
                                                                   "@flux_mjy{0.0}")])
        overlay = shown * points
        beam = beam_ellipse(plane)
        if beam is not None:
            overlay = overlay * beam.opts(color="#00e5ff", line_width=2)
        return overlay.opts(
            data_aspect=1, frame_height=self.height - 80, xlabel="x (pixel, RA increases left)",
            ylabel="y (pixel, Dec increases up)", active_tools=["wheel_zoom"],
            xlim=(-0.5, nx - 0.5), ylim=(-0.5, ny - 0.5))
