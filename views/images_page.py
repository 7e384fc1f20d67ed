"""Image browser: filters, a sortable table, a thumbnail gallery, and the viewer.

Filters by time, declination, rms and QA; choosing an image opens it in the viewer below.

In a notebook: ``ImageBrowser(store=Store.open(home))`` (thumbnails and downloads come from
a running server's /api, so they show only when served).
"""

from __future__ import annotations

import html
from datetime import datetime

import pandas as pd
import panel as pn
import param
from panel.reactive import ReactiveHTML

from pipeline.instrument.times import mjd_to_utc, utc_to_mjd
from pipeline.store.images import ImageFilter
from views.annotations_panel import AnnotationsPanel
from views.base import StorePage, on_event
from views.image_versions_panel import ImageVersionsPanel
from views.image_viewer import ImageViewer
from views.saved_queries_panel import SavedQueriesPanel

QA_CHOICES = ("all", "passed", "failed")
_QA_FILTER = {"all": None, "passed": True, "failed": False}
_GALLERY_CSS = """
.thumb-gallery {display: flex; flex-wrap: wrap; gap: 8px;}
.thumb {margin: 0; width: 132px; cursor: pointer; border: 2px solid #dee2e6;
  border-radius: 6px; padding: 3px; background: white; font-size: 0.78em; text-align: center;}
.thumb:hover {border-color: #0072b5;}
.thumb.failed {border-color: #dc3545;}
.thumb img, .thumb .none {width: 122px; height: 122px; object-fit: contain; display: block;
  background: #212529; color: #adb5bd; line-height: 122px;}
"""


class ThumbnailGallery(ReactiveHTML):
    """Clickable thumbnails; a click sets ``clicked`` to the image id."""

    items = param.List(default=[], doc="Dicts with id, url (or ''), label, failed.")
    clicked = param.Integer(default=None, allow_None=True, doc="Last image clicked.")

    _template = '<div id="gallery" class="thumb-gallery"></div>'
    # Built in the browser from ``items``: no per-card Bokeh model, and the images load
    # through the server's download route like any other file.
    _scripts = {
        "render": """
          gallery.innerHTML = "";
          for (const it of data.items) {
            const card = document.createElement("figure");
            card.className = "thumb" + (it.failed ? " failed" : "");
            card.dataset.imageId = it.id;
            let pic;
            if (it.url) {
              pic = document.createElement("img");
              pic.src = it.url;
              pic.alt = "image " + it.id;
              pic.loading = "lazy";
            } else {
              pic = document.createElement("div");
              pic.className = "none";
              pic.textContent = "no thumbnail";
            }
            const cap = document.createElement("figcaption");
            cap.textContent = it.label;
            card.appendChild(pic);
            card.appendChild(cap);
            card.addEventListener("click", () => { data.clicked = it.id; });
            gallery.appendChild(card);
          }""",
        "items": "self.render()",
    }


def qa_label(value: object) -> str:
    """passed, failed, or — for an image QA has not judged (NULL)."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return "passed" if bool(value) else "failed"


def table_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Images as the browser's table shows them, indexed by image id."""
    beam = [("—" if pd.isna(a) else f"{a * 3600:.0f}″×{b * 3600:.0f}″")
            for a, b in zip(rows["bmaj_deg"], rows["bmin_deg"], strict=True)]
    matched = [("—" if pd.isna(e) else f"{0 if pd.isna(m) else int(m)}/{int(e)}")
               for m, e in zip(rows["n_ref_matched"], rows["n_ref_expected"], strict=True)]
    qa = [qa_label(q) for q in rows["qa_passed"]]
    frame = pd.DataFrame({
        "id": rows["id"].astype(int), "mid UTC": rows["utc"],
        "observation": rows["observation_id"], "dec (°)": rows["dec_deg"].round(2),
        "rms (mJy)": (rows["rms_jy"] * 1e3).round(3), "peak (Jy)": rows["peak_jy"].round(3),
        "DR": rows["dynamic_range"].round(0), "beam": beam, "ref": matched,
        "backend": rows["backend"], "time (s)": rows["duration_s"].round(1), "QA": qa,
        "reason": rows["qa_reason"]})
    return frame.set_index("id")


def gallery_items(rows: pd.DataFrame, api_root: str, limit: int = 24) -> list[dict]:
    """Thumbnails of the first ``limit`` rows, through the download route."""
    return [{"id": int(r.id), "failed": qa_label(r.qa_passed) == "failed",
             "url": f"{api_root}/images/{int(r.id)}/thumbnail" if r.has_thumbnail else "",
             "label": f"#{int(r.id)} · {pd.Timestamp(r.utc):%m-%d %H:%M}"}
            for r in rows.head(limit).itertuples(index=False)]


class ImageBrowser(StorePage):
    """Find images by time, declination, noise and QA; open one in the viewer."""

    time_range = param.DateRange(default=None, doc="Mid-time range, UTC (None: all).")
    dec_range = param.Range(default=None, doc="Declination range, degrees (None: all).")
    rms_range = param.Range(default=None, doc="rms range, mJy/beam (None: all).")
    qa = param.Selector(objects=list(QA_CHOICES), default="all", doc="QA verdict shown.")
    tag = param.String(default="", doc="Only images users gave this tag ('' all).")
    image_id = param.Integer(default=None, allow_None=True, doc="The image open in the viewer.")
    limit = param.Integer(default=2000, bounds=(1, None), doc="Rows fetched at most.")
    api_root = param.String(default="api", doc="URL of the server's /api (relative to page).")
    live_period_ms = 3000

    def __init__(self, **params):
        super().__init__(**params)
        self.viewer = ImageViewer(store=self.store, api_root=self.api_root)

    def filters(self) -> ImageFilter:
        """The widgets' values as a store filter."""
        t0, t1 = self.time_range or (None, None)
        d0, d1 = self.dec_range or (None, None)
        r0, r1 = self.rms_range or (None, None)
        return ImageFilter(from_utc=t0, to_utc=t1, dec_min=d0, dec_max=d1,
                           rms_min=None if r0 is None else r0 / 1e3,
                           rms_max=None if r1 is None else r1 / 1e3, qa=_QA_FILTER[self.qa],
                           tag=self.tag)

    def _build(self) -> pn.viewable.Viewable:
        # Built here, not in __init__: the server sets the page's actor after making it.
        self.annotations = AnnotationsPanel(store=self.store, actor=self.actor, kind="image",
                                            target_id=self.image_id)
        self.versions = ImageVersionsPanel(store=self.store, image_id=self.image_id)
        self._rows = pd.DataFrame()
        self._count = pn.pane.Markdown(css_classes=["image-count"])
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, pagination="remote", page_size=12,
            sizing_mode="stretch_width", css_classes=["image-table"], selectable=1,
            header_filters=False)
        self._table.on_click(on_event(self._on_table_click))
        self._gallery = ThumbnailGallery(stylesheets=[_GALLERY_CSS], sizing_mode="stretch_width",
                                         css_classes=["image-gallery"])
        self._gallery.param.watch(on_event(self._on_thumbnail), "clicked")
        self._viewer_title = pn.pane.Markdown("### Viewer", css_classes=["viewer-title"])
        self.param.watch(on_event(self._refresh_store),
                         ["time_range", "dec_range", "rms_range", "qa", "tag"])
        self.annotations.param.watch(on_event(self._refresh_store), "changed")
        self.param.watch(on_event(self._open), "image_id")
        self._refresh_store()
        filters = self._with_queries(self._filter_widgets())
        return pn.Column(
            pn.pane.Markdown("## Images"),
            pn.Row(filters, pn.Column(self._count, self._table,
                                                     sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.pane.Markdown("### Thumbnails (first 24 matching)"), self._gallery,
            self._viewer_title, self.viewer, self.versions, self.annotations,
            sizing_mode="stretch_width")

    def _with_queries(self, filters: pn.Column) -> pn.Column:
        """The filters with the saved-queries panel under them; opens the URL's filter."""
        self._queries = SavedQueriesPanel(store=self.store, actor=self.actor, page="images",
                                          current_spec=self._query_spec,
                                          apply_spec=self._apply_query_spec)
        self._queries.open_from_url()
        self._queries.follow(self, ["time_range", "dec_range", "rms_range", "qa", "tag"])
        self._range_widgets = dict(zip(("time_range", "dec_range", "rms_range"),
                                       filters.objects[:3], strict=True))
        return pn.Column(filters, self._queries)

    def _query_spec(self) -> dict:
        """The filter as a saved query keeps it (ImageFilter's fields; times as MJD)."""
        f = self.filters()
        spec = {"from_mjd": None if f.from_utc is None else utc_to_mjd(f.from_utc),
                "to_mjd": None if f.to_utc is None else utc_to_mjd(f.to_utc),
                "dec_min": f.dec_min, "dec_max": f.dec_max, "rms_min": f.rms_min,
                "rms_max": f.rms_max, "qa": f.qa, "tag": f.tag or None}
        return {k: v for k, v in spec.items() if v is not None}

    def _apply_query_spec(self, spec: dict) -> None:
        """Filter by a saved spec, shown in the range widgets (an open end: the data's span)."""
        f = ImageFilter(**spec)
        t0, t1 = (None if m is None else mjd_to_utc(float(m)).to_pydatetime()
                  for m in (f.from_mjd, f.to_mjd))
        t0 = t0 if f.from_utc is None else pd.Timestamp(f.from_utc).to_pydatetime()
        t1 = t1 if f.to_utc is None else pd.Timestamp(f.to_utc).to_pydatetime()
        rms = [None if r is None else float(r) * 1e3 for r in (f.rms_min, f.rms_max)]

        def rng(lo, hi, name):
            return None if lo is None and hi is None else _open_range(lo, hi, name)
        for name, (lo, hi) in (("time_range", (t0, t1)), ("dec_range", (f.dec_min, f.dec_max)),
                               ("rms_range", tuple(rms))):
            first = self._initial[name]
            try:
                self._range_widgets[name].value = (first[0] if lo is None else lo,
                                                   first[1] if hi is None else hi)
            except ValueError:
                pass  # beyond what the widget can show; the filter below still applies
        self.param.update(time_range=rng(t0, t1, "time_range"),
                          dec_range=rng(f.dec_min, f.dec_max, "dec_range"),
                          rms_range=rng(*rms, "rms_range"),
                          qa={None: "all", True: "passed", False: "failed"}.get(f.qa, "all"),
                          tag=f.tag)

    def _filter_widgets(self) -> pn.Column:
        ranges = self.store.image_ranges()
        t = ranges["mid_mjd"]
        now = pd.Timestamp.now("UTC").tz_localize(None).floor("h")
        t_lo = (mjd_to_utc(t[0]) if t else now - pd.Timedelta(days=1)).floor("h")
        t_hi = (mjd_to_utc(t[1]) if t else now).ceil("h") + pd.Timedelta(hours=1)
        dec = ranges["dec_deg"] or (-90.0, 90.0)
        rms = ranges["rms_jy"] or (0.0, 0.1)
        time_w = pn.widgets.DatetimeRangeInput(
            label="Mid-time (UTC)", start=t_lo.to_pydatetime() - pd.Timedelta(days=365),
            end=t_hi.to_pydatetime() + pd.Timedelta(days=365),
            value=(t_lo.to_pydatetime(), t_hi.to_pydatetime()), width=250,
            css_classes=["filter-time"])
        dec_w = pn.widgets.EditableRangeSlider(
            label="Declination (°)", start=max(-90.0, dec[0] - 1), end=min(90.0, dec[1] + 1),
            value=(max(-90.0, dec[0] - 1), min(90.0, dec[1] + 1)), step=0.1, width=250,
            css_classes=["filter-dec"])
        rms_hi = round(rms[1] * 1e3 * 1.1 + 0.001, 3)
        rms_w = pn.widgets.EditableRangeSlider(
            label="rms (mJy/beam)", start=0.0, end=rms_hi, value=(0.0, rms_hi), step=0.01,
            width=250, css_classes=["filter-rms"])
        qa_w = pn.widgets.RadioButtonGroup.from_param(self.param.qa, name="QA",
                                                      css_classes=["filter-qa"])
        # The widgets start at the data's full span; only a narrowed bound filters, so an
        # image that arrives later outside the first span is still listed.
        time_w.param.watch(lambda e: self._set_range("time_range", e.new, time_w), "value")
        dec_w.param.watch(lambda e: self._set_range("dec_range", e.new, dec_w), "value")
        rms_w.param.watch(lambda e: self._set_range("rms_range", e.new, rms_w), "value")
        self._initial = {"time_range": time_w.value, "dec_range": dec_w.value,
                         "rms_range": rms_w.value}
        tags = ["", *self.store.tag_counts("image")["tag"]]
        self._tag_w = pn.widgets.Select.from_param(self.param.tag, name="Tag", options=tags,
                                                   css_classes=["filter-tag"])
        return pn.Column(time_w, dec_w, rms_w, pn.pane.Markdown("QA"), qa_w, self._tag_w,
                         width=280, css_classes=["image-filters"])

    def _set_range(self, name: str, value: tuple, _widget: pn.widgets.Widget) -> None:
        first = self._initial[name]
        lo = None if value[0] == first[0] else value[0]
        hi = None if value[1] == first[1] else value[1]
        setattr(self, name, None if lo is None and hi is None else _open_range(lo, hi, name))

    def _refresh_store(self, *_: object) -> None:
        flt = self.filters()
        self._rows = self.store.images(flt, limit=self.limit)
        total = self.store.count_images(flt)
        shown = f" (first {len(self._rows)})" if total > len(self._rows) else ""
        count = (f'<span class="n-images" data-n="{total}">{total}</span> '
                 f"image(s) match{shown}")
        if count != self._count.object:
            self._count.object = count
        frame = table_frame(self._rows)
        # the runner ticks often while it works: resend only what changed
        if not frame.equals(self._table.value):
            self._table.value = frame
        tags = ["", *self.store.tag_counts("image")["tag"]]
        if getattr(self, "_tag_w", None) is not None and tags != self._tag_w.options:
            self._tag_w.options = tags if self.tag in tags else [*tags, self.tag]
        items = gallery_items(self._rows, self.api_root)
        if items != self._gallery.items:
            self._gallery.items = items

    def _on_table_click(self, event) -> None:
        if event.row is None or event.row >= len(self._table.value):
            return
        self.image_id = int(self._table.value.index[event.row])

    def _on_thumbnail(self, event) -> None:
        if event.new is not None:
            self.image_id = int(event.new)
            self._gallery.clicked = None  # so that a second click on it counts again

    def _open(self, event) -> None:
        self._viewer_title.object = ("### Viewer" if event.new is None
                                     else f"### Viewer — image {html.escape(str(event.new))}")
        self.viewer.image_id = event.new
        self.annotations.target_id = event.new
        self.versions.image_id = event.new


def _open_range(lo: object, hi: object, name: str) -> tuple:
    """A range with an open end replaced by the widest value of its kind."""
    if name == "time_range":
        return (lo or datetime(1900, 1, 1), hi or datetime(2200, 1, 1))
    return (-1e30 if lo is None else lo, 1e30 if hi is None else hi)
