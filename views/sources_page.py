"""Sources & lightcurves: filtered source table, η–V scatter, lightcurve, cutouts, exports."""

from __future__ import annotations

import dataclasses
import html
import io
import math
import re
from functools import partial
from urllib.parse import quote

import numpy as np
import pandas as pd
import panel as pn
import param
from astropy import units as u
from astropy.coordinates import SkyCoord
from bokeh.models import ColumnDataSource, HoverTool, Span, TapTool
from bokeh.plotting import figure
from panel.reactive import ReactiveHTML

from pipeline.exports import csv_bytes, votable_bytes
from pipeline.instrument.times import mjd_to_unix_ms
from pipeline.photometry.thresholds import VariabilityThresholds
from pipeline.store.sources import FilterSpec, InvalidFilter
from views.annotations_panel import AnnotationsPanel
from views.base import StorePage, on_event, on_session_loop
from views.saved_queries_panel import SavedQueriesPanel

MAX_SCATTER_POINTS = 20_000  # a browser draws this many markers without stalling
KIND_STYLE = {"detected": ("circle", "#0072b5", 1.0), "forced": ("square", "#e66100", 0.0)}
SORT_LABELS = {"η": "eta", "V": "v", "mean flux": "wmean_jy", "catalog flux": "catalog_flux_jy",
               "measurements": "n_meas", "name": "name", "RA": "ra_deg", "Dec": "dec_deg",
               "separation": "sep_arcsec"}
_LC_COLUMNS = ("t", "mjd", "flux_mjy", "lo", "hi", "snr", "kind", "marker", "colour",
               "fill_alpha", "image_id")


_EXPORT_CSS = """
.export-link {display: inline-flex; align-items: center; gap: 6px; margin: 4px 6px 4px 0;}
.export-link .spinner {width: 14px; height: 14px; border: 2px solid #ced4da;
  border-top-color: #0072b5; border-radius: 50%; animation: spin 0.8s linear infinite;}
@keyframes spin {to {transform: rotate(360deg);}}
.export-link .status {font-size: 0.85em; color: #495057;}
"""


class ExportLink(ReactiveHTML):
    """A download button for the server's export route, with a spinner while it builds.

    Once the file has arrived it shows its size. The file never goes through the page's
    websocket: the browser fetches it over HTTP, and the server builds it in a worker
    thread.
    """

    url = param.String(default="", doc="The export route, with the filter in its query.")
    filename = param.String(default="sources.vot", doc="Name the browser saves it under.")
    label = param.String(default="Download", doc="The button's text.")

    _template = """
<div class="export-link">
  <button id="button" class="bk-btn bk-btn-default"
          onclick="${script('fetch_it')}">{{ label }}</button>
  <span id="spinner" class="spinner" style="display: none"></span>
  <span id="status" class="status"></span>
</div>"""
    _scripts = {
        "fetch_it": """
          spinner.style.display = "inline-block";
          status.textContent = "building…";
          status.dataset.state = "building";
          button.disabled = true;
          fetch(data.url).then(r => {
            if (!r.ok) throw new Error(r.status + " " + r.statusText);
            return r.blob();
          }).then(blob => {
            const a = document.createElement("a");
            a.href = URL.createObjectURL(blob);
            a.download = data.filename;
            document.body.appendChild(a);
            a.click();
            a.remove();
            status.textContent = (blob.size / 1e6).toFixed(1) + " MB";
            status.dataset.bytes = blob.size;
            status.dataset.state = "done";
          }).catch(e => {
            status.textContent = "failed: " + e.message;
            status.dataset.state = "failed";
          }).finally(() => {
            spinner.style.display = "none";
            button.disabled = false;
          });""",
    }


def export_url(api_root: str, fmt: str, spec: FilterSpec) -> str:
    """The export route's URL for a filter (relative to the page, like the other /api links)."""
    return f"{api_root}/sources.{fmt}?filter={quote(spec.to_json(), safe='')}"



def parse_position(text: str) -> tuple[float, float]:
    """'RA Dec' in degrees ('150.1 33.2') or sexagesimal ('10:00:24 +33:12:00') → degrees."""
    parts = text.replace(",", " ").split()
    sexagesimal = any(re.search(r"[:hms]", p) for p in parts) or len(parts) == 6
    try:
        if sexagesimal:
            c = SkyCoord(" ".join(parts), unit=(u.hourangle, u.deg), frame="icrs")
        elif len(parts) == 2:
            c = SkyCoord(float(parts[0]) * u.deg, float(parts[1]) * u.deg, frame="icrs")
        else:
            raise ValueError("expected two numbers")
    except ValueError as exc:
        raise InvalidFilter(f"position {text!r} not understood ({exc}); write 'RA Dec' in "
                            "degrees or as '10:00:24 +33:12:00'") from None
    return float(c.ra.deg), float(c.dec.deg)


def _none_if_nan(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def table_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Store.sources_page rows → the columns the table shows (fluxes in mJy)."""
    frame = pd.DataFrame({
        "id": rows.id.astype(int), "name": rows.name, "RA (°)": rows.ra_deg.round(5),
        "Dec (°)": rows.dec_deg.round(5), "catalog (mJy)": (rows.catalog_flux_jy * 1e3).round(2),
        "mean (mJy)": (rows.wmean_jy * 1e3).round(2), "n": rows.n_meas.astype(int),
        "η": rows.eta.round(3), "V": rows.v.round(4),
        "variable": rows.is_variable.astype(bool)})
    if rows.sep_arcsec.notna().any():
        frame["sep (″)"] = rows.sep_arcsec.round(1)
    return frame


def lightcurve_data(lc: pd.DataFrame) -> dict[str, list]:
    """Store.lightcurve rows → the lightcurve plot's source columns (mJy, ms since 1970)."""
    kinds = ["forced" if f else "detected" for f in lc.forced]
    flux, err = lc.flux_jy.to_numpy(float) * 1e3, lc.flux_err_jy.to_numpy(float) * 1e3
    return {"t": list(mjd_to_unix_ms(lc.mjd)), "mjd": list(lc.mjd.astype(float)),
            "flux_mjy": list(flux), "lo": list(flux - err), "hi": list(flux + err),
            "snr": [float("nan") if pd.isna(s) else float(s) for s in lc.snr], "kind": kinds,
            "marker": [KIND_STYLE[k][0] for k in kinds],
            "colour": [KIND_STYLE[k][1] for k in kinds],
            "fill_alpha": [KIND_STYLE[k][2] for k in kinds],
            "image_id": [int(i) for i in lc.image_id]}


def source_html(src: dict | None, n_points: int) -> str:
    """The selected source's figures, with data attributes a test or script can read."""
    if src is None:
        return ("<div class='none' data-source-id='' data-n-points='0'>Select a source in the "
                "table or the η–V plot.</div>")

    def fmt(v, spec):
        return "—" if _none_if_nan(v) is None else format(float(v), spec)

    cells = [("source", f"#{int(src['id'])} {html.escape(str(src['name']))} "
                        f"({html.escape(str(src['origin']))})"),
             ("position", f"RA {src['ra_deg']:.5f}° Dec {src['dec_deg']:+.5f}°"),
             ("catalog flux", f"{fmt(_mjy(src['catalog_flux_jy']), '.2f')} mJy"),
             ("mean flux", f"{fmt(_mjy(src['wmean_jy']), '.2f')} mJy"),
             ("measurements", f"{n_points}"), ("η", fmt(src["eta"], ".3g")),
             ("V", fmt(src["v"], ".3g")),
             ("variable", "yes" if src["is_variable"] else "no")]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
    return (f"<div data-source-id='{int(src['id'])}' data-n-points='{n_points}'>"
            f"<table>{body}</table></div>")


def _mjy(v):
    v = _none_if_nan(v)
    return None if v is None else v * 1e3


class SourcesPage(StorePage):
    """Find sources by variability, flux or position; see and export their lightcurves."""

    thresholds = param.ClassSelector(class_=VariabilityThresholds,
                                     default=VariabilityThresholds(),
                                     doc="η and V thresholds drawn on the scatter.")
    filter = param.ClassSelector(class_=FilterSpec, default=FilterSpec(),
                                 doc="The filter the table, scatter and exports show.")
    page_size = param.Integer(default=50, bounds=(5, 1000))
    offset = param.Integer(default=0, bounds=(0, None))
    source_id = param.Integer(default=None, allow_None=True, doc="The selected source.")
    api_root = param.String(default="api", doc="URL of the server's /api (relative to page).")
    live_period_ms = 5000

    def __init__(self, **params):
        super().__init__(**params)
        self._syncing = False

    # ------------------------------------------------------------------ layout
    def _build(self) -> pn.viewable.Viewable:
        filters = self._build_filters()
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(), show_index=False, disabled=True, selectable=1, pagination=None,
            # Header sorting would sort only the page on screen; "sort by" sorts the store.
            sortable=False,
            sizing_mode="stretch_width", height=420, css_classes=["sources-table"])
        self._table.param.watch(self._on_table_select, "selection")
        self._prev = pn.widgets.Button(label="◀ previous", width=110, css_classes=["page-prev"])
        self._next = pn.widgets.Button(label="next ▶", width=110, css_classes=["page-next"])
        self._prev.on_click(on_event(lambda _: self._turn_page(-1)))
        self._next.on_click(on_event(lambda _: self._turn_page(+1)))
        self._page_info = pn.pane.HTML(css_classes=["page-info"])
        self._scatter = self._build_scatter()
        self._lightcurve = self._build_lightcurve()
        self._detail = pn.pane.HTML(source_html(None, 0), css_classes=["source-detail"],
                                    sizing_mode="stretch_width")
        self._cutout = pn.pane.PNG(None, width=240, height=240, visible=False,
                                   css_classes=["source-cutout"])
        self._cutout_caption = pn.pane.HTML("<i>Click a lightcurve point to see the image "
                                            "around the source.</i>",
                                            css_classes=["cutout-caption"], width=260)
        downloads = self._build_downloads()
        self.annotations = AnnotationsPanel(store=self.store, actor=self.actor, kind="source",
                                            target_id=self.source_id)
        # a tag removed from a source the tag filter lists drops it from the table
        self.annotations.param.watch(
            on_event(lambda *_: self.filter.tag and self._refresh_table()), "changed")
        self._revision = self.store.sources_revision()
        self._refresh_table()
        self._refresh_scatter()
        self._show_source()
        filters = self._with_queries(filters)  # after the table: a URL's filter runs
        return pn.Column(
            pn.pane.Markdown("## Sources & lightcurves"),
            pn.Row(filters, pn.Column(self._table, pn.Row(self._prev, self._page_info,
                                                          self._next),
                                      downloads[0], sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.Row(pn.pane.Bokeh(self._scatter), pn.pane.Bokeh(self._lightcurve,
                                                               sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.Row(self._detail, pn.Column(self._cutout, self._cutout_caption),
                   downloads[1], sizing_mode="stretch_width"),
            self.annotations, sizing_mode="stretch_width")

    def _build_filters(self) -> pn.Column:
        def rng(label, css, cls=pn.widgets.FloatInput, **kw):
            lo = cls(label=f"{label} min", value=None, width=110, css_classes=[f"{css}-min"], **kw)
            hi = cls(label=f"{label} max", value=None, width=110, css_classes=[f"{css}-max"], **kw)
            return lo, hi

        self._eta = rng("η", "eta")
        self._v = rng("V", "v")
        self._flux = rng("flux (mJy)", "flux")
        self._nmeas = rng("measurements", "nmeas", pn.widgets.IntInput)
        self._name = pn.widgets.TextInput(label="name contains", css_classes=["name-search"],
                                          width=230)
        self._position = pn.widgets.TextInput(label="position (RA Dec)", width=230,
                                              placeholder="150.12 33.2 or 10:00:29 +33:12:00",
                                              css_classes=["position-search"])
        self._radius = pn.widgets.FloatInput(label="radius (″)", value=60.0, start=0.1,
                                             width=110, css_classes=["radius"])
        self._variable = pn.widgets.Checkbox(label="variable only", css_classes=["variable-only"])
        self._tag = pn.widgets.TextInput(label="tag", width=230, css_classes=["tag-filter"],
                                         placeholder="users' tag, e.g. extended")
        self._sort = pn.widgets.Select(label="sort by", options=list(SORT_LABELS), value="η",
                                       width=130, css_classes=["sort-by"])
        self._descending = pn.widgets.Checkbox(label="descending", value=True)
        self._filter_error = pn.pane.HTML("", css_classes=["filter-error"],
                                          styles={"color": "#dc3545"}, width=230)
        widgets = [*self._eta, *self._v, *self._flux, *self._nmeas, self._name, self._position,
                   self._radius, self._variable, self._tag, self._sort, self._descending]
        for w in widgets:
            w.param.watch(self._on_filter_input, "value")
        return pn.Column(
            pn.Row(*self._eta), pn.Row(*self._v), pn.Row(*self._flux), pn.Row(*self._nmeas),
            self._name, pn.Row(self._position), self._radius, self._variable, self._tag,
            pn.Row(self._sort, self._descending), self._filter_error, width=250)

    def _with_queries(self, filters: pn.Column) -> pn.Column:
        """The filters with the saved-queries panel under them; opens the URL's filter."""
        self._queries = SavedQueriesPanel(store=self.store, actor=self.actor, page="sources",
                                          current_spec=self._query_spec,
                                          apply_spec=self._apply_query_spec)
        self._queries.open_from_url()
        self._queries.follow(self, ["filter"])
        return pn.Column(filters, self._queries)

    def _query_spec(self) -> dict:
        """The filter as a saved query keeps it: only what differs from the default."""
        default = dataclasses.asdict(FilterSpec())
        return {k: v for k, v in dataclasses.asdict(self.filter).items() if v != default[k]}

    def _apply_query_spec(self, spec: dict) -> None:
        """Show a saved filter in the widgets, then run it (the widgets are the filter)."""
        f = FilterSpec(**spec)
        values = [(self._eta[0], f.eta_min), (self._eta[1], f.eta_max), (self._v[0], f.v_min),
                  (self._v[1], f.v_max), (self._flux[0], _mjy(f.flux_min_jy)),
                  (self._flux[1], _mjy(f.flux_max_jy)), (self._nmeas[0], f.n_meas_min),
                  (self._nmeas[1], f.n_meas_max), (self._name, f.name),
                  (self._position, "" if f.ra_deg is None else f"{f.ra_deg} {f.dec_deg}"),
                  (self._variable, f.variable_only), (self._descending, f.descending),
                  (self._tag, f.tag),
                  (self._sort, {v: k for k, v in SORT_LABELS.items()}.get(f.sort_by, "η"))]
        if f.radius_arcsec is not None:
            values.append((self._radius, f.radius_arcsec))
        for widget, value in values:
            widget.value = value
        self._apply_filter_inputs()

    def _build_scatter(self):
        self._points = ColumnDataSource({"id": [], "name": [], "eta": [], "v": [],
                                         "colour": []}, name="etav-source")
        fig = figure(x_axis_type="log", y_axis_type="log", width=460, height=380,
                     tools="pan,wheel_zoom,box_zoom,reset", title="η–V (click to select)",
                     name="etav-plot")
        dots = fig.scatter("eta", "v", source=self._points, color="colour", size=7, alpha=0.7,
                           selection_color="black", selection_alpha=1.0,
                           nonselection_alpha=0.25, name="etav-points")
        fig.add_layout(Span(location=self.thresholds.eta, dimension="height", line_dash="dashed",
                            line_color="#dc3545", name="eta-threshold"))
        fig.add_layout(Span(location=self.thresholds.v, dimension="width", line_dash="dashed",
                            line_color="#dc3545", name="v-threshold"))
        fig.add_tools(TapTool(renderers=[dots]), HoverTool(renderers=[dots], tooltips=[
            ("source", "@name"), ("η", "@eta{0.000}"), ("V", "@v{0.0000}")]))
        fig.xaxis.axis_label, fig.yaxis.axis_label = "η (weighted reduced χ²)", "V (σ / mean)"
        self._scatter_note = pn.pane.HTML("", css_classes=["scatter-note"])
        self._points.selected.on_change("indices", self._on_scatter_tap)
        return fig

    def _build_lightcurve(self):
        self._lc = ColumnDataSource({c: [] for c in _LC_COLUMNS}, name="lightcurve-source")
        fig = figure(x_axis_type="datetime", height=380, sizing_mode="stretch_width",
                     tools="pan,wheel_zoom,box_zoom,reset", title="lightcurve",
                     name="lightcurve-plot")
        fig.segment("t", "lo", "t", "hi", source=self._lc, line_color="colour", line_width=1.5,
                    name="lightcurve-errors")
        pts = fig.scatter("t", "flux_mjy", source=self._lc, marker="marker", color="colour",
                          fill_alpha="fill_alpha", size=9, line_width=2, legend_field="kind",
                          selection_line_color="black", nonselection_alpha=0.5,
                          name="lightcurve-points")
        self._catalog_line = Span(location=0, dimension="width", line_color="#6c757d",
                                  line_dash="dotted", line_width=2, visible=False,
                                  name="catalog-flux")
        fig.add_layout(self._catalog_line)
        fig.add_tools(TapTool(renderers=[pts]), HoverTool(renderers=[pts], tooltips=[
            ("time", "@t{%F %H:%M}"), ("flux", "@flux_mjy{0.00} mJy"), ("SNR", "@snr{0.0}"),
            ("kind", "@kind"), ("image", "@image_id")], formatters={"@t": "datetime"}))
        fig.xaxis.axis_label, fig.yaxis.axis_label = "UTC", "flux density (mJy)"
        fig.legend.location = "top_left"
        fig.legend.orientation = "horizontal"
        self._lc.selected.on_change("indices", self._on_point_tap)
        return fig

    def _build_downloads(self) -> tuple[pn.Row, pn.Column]:
        def button(label, css, fn, filename):
            return pn.widgets.FileDownload(callback=fn, filename=filename, label=label,
                                           width=200,
                                           css_classes=[css])
        self._export_vot = ExportLink(label="Filtered sources (VOTable)", filename="sources.vot",
                                      url=export_url(self.api_root, "vot", self.filter),
                                      stylesheets=[_EXPORT_CSS],
                                      css_classes=["download-sources-vot"])
        self._export_csv = ExportLink(label="Filtered sources (CSV)", filename="sources.csv",
                                      url=export_url(self.api_root, "csv", self.filter),
                                      stylesheets=[_EXPORT_CSS],
                                      css_classes=["download-sources-csv"])
        self.param.watch(self._on_filter_change, "filter")
        whole = pn.Row(self._export_vot, self._export_csv, self._scatter_note)
        self._lc_vot = button("Lightcurve (VOTable)", "download-lightcurve-vot",
                              self._lightcurve_votable, "lightcurve.vot")
        self._lc_csv = button("Lightcurve (CSV)", "download-lightcurve-csv",
                              self._lightcurve_csv, "lightcurve.csv")
        return whole, pn.Column(self._lc_vot, self._lc_csv)

    # ----------------------------------------------------------------- updates
    def _refresh_table(self) -> None:
        page = self.store.sources_page(self.filter, limit=self.page_size, offset=self.offset)
        if page.total and self.offset >= page.total:  # the filter shrank under this page
            self.offset = (page.total - 1) // self.page_size * self.page_size
            page = self.store.sources_page(self.filter, limit=self.page_size, offset=self.offset)
        self._rows = page.rows
        self._table.value = table_frame(page.rows)
        first = self.offset + 1 if page.total else 0
        last = self.offset + len(page.rows)
        self._page_info.object = (f"<span data-total='{page.total}'>rows {first}–{last} of "
                                  f"{page.total}</span>")
        self._prev.disabled = self.offset == 0
        self._next.disabled = last >= page.total
        self._sync_table_selection()

    def _refresh_scatter(self) -> None:
        pts = self.store.eta_v_points(self.filter, limit=MAX_SCATTER_POINTS)
        colour = np.where(pts.is_variable.astype(bool), "#dc3545", "#0072b5")
        self._points.data = {"id": [int(i) for i in pts.id], "name": list(pts.name),
                             "eta": list(pts.eta.astype(float)), "v": list(pts.v.astype(float)),
                             "colour": list(colour)}
        self._scatter_note.object = (
            f"<i>η–V shows the {MAX_SCATTER_POINTS} most variable by η</i>"
            if len(pts) >= MAX_SCATTER_POINTS else "")
        self._sync_scatter_selection()

    def _show_source(self) -> None:
        src = None if self.source_id is None else self.store.source(self.source_id)
        lc = (self.store.lightcurve(self.source_id) if src is not None
              else pd.DataFrame(columns=["mjd", "flux_jy", "flux_err_jy", "snr", "forced",
                                         "image_id"]))
        self._src, self._lc_rows = src, lc
        self._lc.selected.indices = []
        self._lc.data = lightcurve_data(lc)
        cat = None if src is None else _none_if_nan(src["catalog_flux_jy"])
        self._catalog_line.visible = cat is not None
        if cat is not None:
            self._catalog_line.location = cat * 1e3
        self._lightcurve.title.text = ("lightcurve" if src is None else
                                       f"lightcurve of {src['name']} (dotted: catalog flux)")
        self._detail.object = source_html(src, len(lc))
        self.annotations.target_id = None if src is None else self.source_id
        stem = "lightcurve" if src is None else f"lightcurve-{_safe(str(src['name']))}"
        self._lc_vot.filename, self._lc_csv.filename = f"{stem}.vot", f"{stem}.csv"
        self._lc_vot.disabled = self._lc_csv.disabled = src is None
        self._cutout.visible = False
        self._cutout_caption.object = ("<i>Click a lightcurve point to see the image around "
                                       "the source.</i>")

    def _sync_table_selection(self) -> None:
        ids = list(self._rows.id) if len(self._rows) else []
        self._syncing = True
        try:
            self._table.selection = [ids.index(self.source_id)] if self.source_id in ids else []
        finally:
            self._syncing = False

    def _sync_scatter_selection(self) -> None:
        ids = self._points.data["id"]
        self._syncing = True
        try:
            self._points.selected.indices = ([ids.index(self.source_id)]
                                             if self.source_id in ids else [])
        finally:
            self._syncing = False

    def _select(self, source_id: int | None) -> None:
        if source_id == self.source_id:
            return
        self.source_id = source_id
        self._show_source()
        self._sync_table_selection()
        self._sync_scatter_selection()

    def _show_cutout(self, index: int) -> None:
        image_id = int(self._lc.data["image_id"][index])
        mjd = float(self._lc.data["mjd"][index])
        if self._src is None:
            return
        cut = self.store.source_cutout(image_id, self._src["ra_deg"], self._src["dec_deg"])
        if cut.png is None:
            self._cutout.visible = False
            self._cutout_caption.object = (f"<b>image #{image_id}</b>: "
                                           f"{html.escape(cut.problem)}")
            return
        self._cutout.object = cut.png
        self._cutout.visible = True
        self._cutout_caption.object = (
            f"<span data-image-id='{image_id}'>image #{image_id}, MJD {mjd:.5f}<br>"
            f"<code>{html.escape(str(cut.path))}</code></span>")

    # ---------------------------------------------------------------- events
    def _on_filter_input(self, _event) -> None:
        on_session_loop(self._apply_filter_inputs)

    def _apply_filter_inputs(self) -> None:
        try:
            cone = {}
            if self._position.value.strip():
                ra, dec = parse_position(self._position.value)
                cone = {"ra_deg": ra, "dec_deg": dec, "radius_arcsec": self._radius.value}
            sort_by = SORT_LABELS[self._sort.value]
            spec = FilterSpec(
                eta_min=self._eta[0].value, eta_max=self._eta[1].value,
                v_min=self._v[0].value, v_max=self._v[1].value,
                flux_min_jy=_jy(self._flux[0].value), flux_max_jy=_jy(self._flux[1].value),
                n_meas_min=self._nmeas[0].value, n_meas_max=self._nmeas[1].value,
                name=self._name.value.strip(), variable_only=self._variable.value,
                tag=self._tag.value.strip(),
                sort_by=sort_by if cone or sort_by != "sep_arcsec" else "eta",
                descending=self._descending.value, **cone)
        except (InvalidFilter, TypeError) as exc:
            self._filter_error.object = html.escape(str(exc))
            return
        self._filter_error.object = ""
        self.filter, self.offset = spec, 0
        self._refresh_table()
        self._refresh_scatter()

    def _turn(self, step: int) -> None:
        on_session_loop(partial(self._turn_page, step))

    def _turn_page(self, step: int) -> None:
        self.offset = max(0, self.offset + step * self.page_size)
        self._refresh_table()

    def _on_table_select(self, event) -> None:
        if self._syncing or not event.new or not len(self._rows):
            return
        on_session_loop(partial(self._select, int(self._rows.id.iloc[event.new[0]])))

    def _on_scatter_tap(self, _attr, _old, new) -> None:
        if self._syncing:
            return
        ids = self._points.data["id"]
        if new and new[0] < len(ids):
            on_session_loop(partial(self._select, int(ids[new[0]])))

    def _on_point_tap(self, _attr, _old, new) -> None:
        if new and new[0] < len(self._lc.data["image_id"]):
            on_session_loop(partial(self._show_cutout, new[0]))

    def _refresh_store(self) -> None:
        # The runner ticks often; only new measurements are worth re-sending the plots.
        revision = self.store.sources_revision()
        if revision == self._revision:
            return
        self._revision = revision
        self._refresh_table()
        self._refresh_scatter()
        if self.source_id is not None:
            n_before = len(self._lc_rows)
            if len(self.store.lightcurve(self.source_id)) != n_before:
                self._show_source()

    # --------------------------------------------------------------- exports
    def _on_filter_change(self, event) -> None:
        self._export_vot.url = export_url(self.api_root, "vot", event.new)
        self._export_csv.url = export_url(self.api_root, "csv", event.new)

    def _lightcurve_votable(self) -> io.BytesIO:
        src = self._src or {}
        desc = (f"source #{src.get('id')} {src.get('name')} RA {src.get('ra_deg')} "
                f"Dec {src.get('dec_deg')}")
        return io.BytesIO(votable_bytes(self._lc_rows, name="lightcurve", description=desc))

    def _lightcurve_csv(self) -> io.BytesIO:
        return io.BytesIO(csv_bytes(self._lc_rows))


def _jy(mjy: float | None) -> float | None:
    return None if mjy is None else mjy / 1e3


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9+._-]", "_", name)
