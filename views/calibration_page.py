"""Calibration: validity-window timeline of caltables, a table's QA and solutions, flux monitor."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd
import panel as pn
import param
from bokeh.models import (
    RELATIVE_DATETIME_CONTEXT,
    ColumnDataSource,
    DatetimeTickFormatter,
    HoverTool,
    LabelSet,
    Range1d,
    Span,
    TapTool,
)
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from pipeline.calibration.registry import CalibrationConfig
from pipeline.calibration.summary import SolutionsSummary
from pipeline.clock import utcnow
from pipeline.instrument.times import MS_PER_DAY, mjd_to_unix_ms, utc_to_mjd
from views.base import StorePage, on_event

COLOURS = {True: "#198754", False: "#dc3545"}
VERDICTS = {True: "accepted", False: "rejected"}
NO_OBSERVATION = "(none)"
_TIMELINE_COLUMNS = ("id", "calibrator", "left", "right", "transit", "bottom", "top", "lane",
                     "colour", "verdict", "label", "snr", "flagged_frac", "antennas_lost",
                     "flux_ratio", "qa_reason")
_DETAIL_CSS = """
.caltable-detail table {border-collapse: collapse; font-size: 0.95em;}
.caltable-detail td, .caltable-detail th {padding: 2px 10px; text-align: left;
  border-bottom: 1px solid #e9ecef;}
.caltable-detail .accepted {color: #198754; font-weight: 600;}
.caltable-detail .rejected {color: #dc3545; font-weight: 600;}
.caltable-detail .missing {color: #6c757d; font-style: italic;}
"""



def mjd_to_iso(mjd: float) -> str:
    """MJD → 'YYYY-MM-DD HH:MM' UTC, for text."""
    return pd.Timestamp(float(mjd_to_unix_ms(mjd)), unit="ms").strftime("%Y-%m-%d %H:%M")


def assign_lanes(starts: Sequence[float], ends: Sequence[float]) -> list[int]:
    """Lane per interval so that intervals sharing a lane never overlap (greedy, by start)."""
    lanes = [0] * len(starts)
    lane_end: list[float] = []
    for i in sorted(range(len(starts)), key=lambda i: (starts[i], ends[i])):
        for lane, end in enumerate(lane_end):
            if end < starts[i]:
                lanes[i], lane_end[lane] = lane, ends[i]
                break
        else:
            lanes[i] = len(lane_end)
            lane_end.append(ends[i])
    return lanes


def coverage_gaps(starts: Sequence[float], ends: Sequence[float], *, lo: float, hi: float
                  ) -> list[tuple[float, float]]:
    """Parts of [lo, hi] that no interval covers."""
    gaps, cursor = [], lo
    for s, e in sorted(zip(starts, ends, strict=True)):
        if s > cursor:
            gaps.append((cursor, min(s, hi)))
        cursor = max(cursor, e)
        if cursor >= hi:
            break
    if cursor < hi:
        gaps.append((cursor, hi))
    return [(a, b) for a, b in gaps if b > a]


def timeline_data(rows: pd.DataFrame) -> dict[str, list]:
    """Store.caltables rows → the timeline's ColumnDataSource columns, one bar per table."""
    if rows.empty:
        return {c: [] for c in _TIMELINE_COLUMNS}
    lanes = assign_lanes(list(rows.valid_from_mjd), list(rows.valid_to_mjd))
    passed = [bool(p) for p in rows.qa_passed]
    return {
        "id": [int(i) for i in rows.id], "calibrator": list(rows.calibrator),
        "left": list(mjd_to_unix_ms(rows.valid_from_mjd)),
        "right": list(mjd_to_unix_ms(rows.valid_to_mjd)),
        "transit": list(mjd_to_unix_ms(rows.transit_mjd)),
        "bottom": [lane - 0.38 for lane in lanes], "top": [lane + 0.38 for lane in lanes],
        "lane": lanes, "colour": [COLOURS[p] for p in passed],
        "verdict": [VERDICTS[p] for p in passed],
        "label": [f"{c} #{i}" for c, i in zip(rows.calibrator, rows.id, strict=True)],
        "snr": [_num(v) for v in rows.snr], "flagged_frac": [_num(v) for v in rows.flagged_frac],
        "antennas_lost": [_num(v) for v in rows.antennas_lost],
        "flux_ratio": [_num(v) for v in rows.flux_ratio],
        "qa_reason": ["" if _missing(r) else str(r) for r in rows.qa_reason],
    }


def flux_data(series: pd.DataFrame) -> tuple[dict[str, list], dict[str, list]]:
    """Store.calibrator_flux_series → (points, one line per calibrator) source columns."""
    names = sorted(set(series.calibrator))
    colour = {n: Category10_10[i % 10] for i, n in enumerate(names)}
    points = {"t": list(mjd_to_unix_ms(series.transit_mjd)),
              "ratio": list(series.ratio.astype(float)),
              "calibrator": list(series.calibrator),
              "colour": [colour[c] for c in series.calibrator],
              "fill_alpha": [1.0 if p else 0.0 for p in series.qa_passed],
              "verdict": [VERDICTS[bool(p)] for p in series.qa_passed]}
    lines: dict[str, list] = {"xs": [], "ys": [], "colour": [], "calibrator": []}
    for name in names:
        one = series[series.calibrator == name]
        lines["xs"].append(list(mjd_to_unix_ms(one.transit_mjd)))
        lines["ys"].append(list(one.ratio.astype(float)))
        lines["colour"].append(colour[name])
        lines["calibrator"].append(name)
    return points, lines


def qa_detail_html(row: pd.Series | None, missing: Sequence[str] = ()) -> str:
    """A table's QA figures, verdict and reason as HTML (and why solutions are absent)."""
    if row is None:
        return "<p class='missing'>Click a bar in the timeline to see its QA and solutions.</p>"
    passed = bool(row.qa_passed)
    cells = [
        ("caltable", f"#{int(row.id)} · {html.escape(str(row.calibrator))}"),
        ("solved from", html.escape(str(row.observation_id))),
        ("transit (UTC)", mjd_to_iso(row.transit_mjd)),
        ("valid (UTC)", f"{mjd_to_iso(row.valid_from_mjd)} – {mjd_to_iso(row.valid_to_mjd)}"),
        ("SNR", _fmt(row.snr, ".1f")), ("flagged fraction", _fmt(row.flagged_frac, ".3f")),
        ("antennas lost", _fmt(row.antennas_lost, ".0f")),
        ("flux ratio (measured / model)", _fmt(row.flux_ratio, ".3f")),
        ("verdict", f"<span class='{VERDICTS[passed]}'>{VERDICTS[passed]}</span>"),
        ("reason", html.escape(str(row.qa_reason)) if not _missing(row.qa_reason) else "—"),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
    notes = "".join(f"<p class='missing'>{html.escape(m)}</p>" for m in missing)
    return f"<table data-caltable='{int(row.id)}'>{body}</table>{notes}"


def selection_markdown(obs_id: str, mid_mjd: float, selection, applied: pd.DataFrame) -> str:
    """What calibrates the chosen observation now, and what did when it was processed."""
    lines = [f"**{obs_id}** (mid {mjd_to_iso(mid_mjd)} UTC) — tables for it now: "
             f"**{selection.kind}**"]
    if selection.tables:
        lines[0] += " · " + ", ".join(f"#{cid} × {w:.2f}" for cid, _, _, w in selection.tables)
    if selection.warning:
        lines.append(f"⚠ {selection.warning}")
    if not applied.empty:
        used = ", ".join(f"#{int(r.caltable_id)} × {r.weight:.2f}"
                         for r in applied.itertuples(index=False))
        lines.append(f"calibrated with ({applied.selection.iloc[0]}): {used}")
    return "  \n".join(lines)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _num(v) -> float:
    return float("nan") if _missing(v) else float(v)


def _fmt(v, spec: str) -> str:
    return "—" if _missing(v) else format(float(v), spec)


class CalibrationPage(StorePage):
    """Which caltables cover which time, how good each is, and calibrator flux over time."""

    config = param.ClassSelector(class_=CalibrationConfig, default=CalibrationConfig(),
                                 doc="Validity windows and QA gate used for selection.")
    observation = param.String(default=NO_OBSERVATION, doc="Observation marked on the timeline.")
    caltable_id = param.Integer(default=None, allow_None=True, doc="The table shown in detail.")
    live_period_ms = 2000

    # ------------------------------------------------------------------ layout
    def _build(self) -> pn.viewable.Viewable:
        self._rows = self.store.caltables()
        self._observations = self.store.observations(limit=500)
        if self.observation == NO_OBSERVATION and not self._observations.empty:
            self.observation = str(self._observations.id.iloc[0])
        self._obs_select = pn.widgets.Select(label="Observation", options=self._obs_options(),
                                             value=self.observation, width=260,
                                             css_classes=["observation-select"])
        self._obs_select.param.watch(on_event(self._on_observation), "value")
        self._obs_info = pn.pane.Markdown(css_classes=["observation-selection"],
                                          sizing_mode="stretch_width")
        self._auto_x: tuple[float, float] | None = None
        self._timeline = self._build_timeline()
        self._detail = pn.pane.HTML(qa_detail_html(None), stylesheets=[_DETAIL_CSS],
                                    css_classes=["caltable-detail"], sizing_mode="stretch_width")
        # The three solution plots appear only once a table is picked: built then, so a
        # page load (twenty users at once, issue 13) does not pay for three hidden figures.
        self._solutions = pn.Row(visible=False, css_classes=["caltable-solutions"])
        self._flux = self._build_flux()
        self._table = pn.widgets.Tabulator(
            self._table_frame(), show_index=False, disabled=True, pagination="local",
            page_size=10, sizing_mode="stretch_width", css_classes=["caltable-table"])
        self._update_observation()
        self._update_timeline()
        self._flux_series = None
        self._update_flux()
        return pn.Column(
            pn.pane.Markdown("## Calibration"),
            pn.pane.Markdown(
                f"Each bar is one solve's validity window (±{self.config.window_h:g} h around "
                "its calibrator's transit): green accepted, red rejected by QA; shaded red: "
                "no accepted table. Dashed: now; solid: the observation chosen.",
                styles={"color": "#495057"}),
            pn.Row(self._obs_select, self._obs_info, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self._timeline, sizing_mode="stretch_width"),
            pn.pane.Markdown("### Selected table"), self._detail, self._solutions,
            pn.pane.Markdown("### Calibrator flux: measured / model"),
            pn.pane.Bokeh(self._flux, sizing_mode="stretch_width"),
            pn.pane.Markdown("### All tables"), self._table,
            sizing_mode="stretch_width")

    def _build_timeline(self):
        self._bars = ColumnDataSource(timeline_data(self._rows.iloc[:0]), name="caltable-source")
        self._gaps = ColumnDataSource({"left": [], "right": []}, name="caltable-gaps-source")
        fig = figure(x_axis_type="datetime", height=280, sizing_mode="stretch_width",
                     tools="xpan,xwheel_zoom,reset", toolbar_location="above",
                     y_range=Range1d(-0.7, 0.7), name="caltable-timeline")
        self._gap_band = fig.quad(left="left", right="right", bottom=-0.7, top=0.7,
                                  source=self._gaps, fill_color="#dc3545", fill_alpha=0.10,
                                  line_alpha=0, name="coverage-gaps")
        bars = fig.quad(left="left", right="right", bottom="bottom", top="top",
                        source=self._bars, fill_color="colour", line_color="colour",
                        fill_alpha=0.55, legend_field="verdict", name="caltable-bars",
                        selection_fill_alpha=0.95, selection_line_color="black",
                        nonselection_fill_alpha=0.3)
        fig.add_layout(LabelSet(x="transit", y="lane", text="label", source=self._bars,
                                text_align="center", text_baseline="middle",
                                text_font_size="9pt", text_color="#212529"))
        self._now_line = Span(location=0, dimension="height", line_color="#495057",
                              line_dash="dashed", line_width=2, name="now-line")
        self._obs_line = Span(location=0, dimension="height", line_color="#0072b5",
                              line_width=2, name="observation-line", visible=False)
        fig.add_layout(self._now_line)
        fig.add_layout(self._obs_line)
        fig.add_tools(TapTool(renderers=[bars]), HoverTool(renderers=[bars], tooltips=[
            ("table", "@label"), ("transit", "@transit{%F %H:%M}"), ("verdict", "@verdict"),
            ("SNR", "@snr{0.0}"), ("flagged", "@flagged_frac{0.000}"), ("reason", "@qa_reason")],
            formatters={"@transit": "datetime"}))
        fig.yaxis.visible = False
        fig.ygrid.visible = False
        fig.xaxis.axis_label = "UTC"
        fig.xaxis.ticker.desired_num_ticks = 12  # hours matter across a ±12 h window
        fig.xaxis.formatter = DatetimeTickFormatter(hours="%H:%M", days="%b %d",
                                                    context=RELATIVE_DATETIME_CONTEXT())
        fig.legend.location = "top_left"
        fig.legend.orientation = "horizontal"
        self._x_range = fig.x_range = Range1d(0, 1)
        self._bars.selected.on_change("indices", self._on_tap)
        return fig

    def _build_solutions(self) -> list[pn.pane.Bokeh]:
        self._gain_src = ColumnDataSource({"antenna": [], "amp": [], "phase_deg": [],
                                           "colour": [], "pol": []}, name="gain-source")
        self._bp_src = ColumnDataSource({"freq_mhz": [], "amp_median": [], "amp_lo": [],
                                         "amp_hi": [], "pol": [], "colour": []},
                                        name="bandpass-source")
        amp = figure(height=220, width=330, title="gain amplitude per antenna",
                     tools="pan,wheel_zoom,reset", name="gain-amp")
        amp.scatter("antenna", "amp", source=self._gain_src, color="colour", size=6)
        amp.xaxis.axis_label, amp.yaxis.axis_label = "antenna", "|g|"
        phase = figure(height=220, width=330, title="gain phase per antenna",
                       tools="pan,wheel_zoom,reset", name="gain-phase")
        phase.scatter("antenna", "phase_deg", source=self._gain_src, color="colour", size=6)
        phase.xaxis.axis_label, phase.yaxis.axis_label = "antenna", "phase (°)"
        band = figure(height=220, width=420, title="bandpass amplitude (median, 10–90 %)",
                      tools="pan,wheel_zoom,reset", name="bandpass-amp")
        self._band_src = ColumnDataSource({"freq_mhz": [], "lo": [], "hi": []},
                                          name="bandpass-band")
        band.varea("freq_mhz", "lo", "hi", source=self._band_src, fill_color="#0072b5",
                   fill_alpha=0.15)
        band.scatter("freq_mhz", "amp_median", source=self._bp_src, color="colour", size=3)
        band.xaxis.axis_label, band.yaxis.axis_label = "frequency (MHz)", "|B|"
        return [pn.pane.Bokeh(amp), pn.pane.Bokeh(phase), pn.pane.Bokeh(band)]

    def _build_flux(self):
        self._flux_points = ColumnDataSource(flux_data(self.store.calibrator_flux_series()
                                                       .iloc[:0])[0], name="flux-points")
        self._flux_lines = ColumnDataSource({"xs": [], "ys": [], "colour": [],
                                             "calibrator": []}, name="flux-lines")
        fig = figure(x_axis_type="datetime", height=260, sizing_mode="stretch_width",
                     tools="xpan,xwheel_zoom,reset", name="flux-monitor")
        fig.multi_line("xs", "ys", source=self._flux_lines, line_color="colour", line_alpha=0.6)
        points = fig.scatter("t", "ratio", source=self._flux_points, color="colour", size=8,
                             fill_alpha="fill_alpha", legend_field="calibrator")
        fig.add_layout(Span(location=1.0, dimension="width", line_color="#212529",
                            line_dash="dotted", name="flux-unity"))
        fig.add_tools(HoverTool(renderers=[points], tooltips=[
            ("calibrator", "@calibrator"), ("time", "@t{%F %H:%M}"), ("ratio", "@ratio{0.000}"),
            ("QA", "@verdict")], formatters={"@t": "datetime"}))
        # one transit so far: two days around it, not milliseconds
        fig.x_range.default_span = 2 * 86_400_000
        fig.xaxis.axis_label, fig.yaxis.axis_label = "UTC", "measured / model"
        fig.legend.location = "top_left"
        fig.legend.orientation = "horizontal"
        return fig

    # ----------------------------------------------------------------- updates
    def _obs_options(self) -> list[str]:
        return [NO_OBSERVATION, *map(str, self._observations.id)]

    def _obs_mid_mjd(self) -> float | None:
        match = self._observations[self._observations.id == self.observation]
        return None if match.empty else float(match.mid_mjd.iloc[0])

    def _table_frame(self) -> pd.DataFrame:
        rows = self._rows
        return pd.DataFrame({
            "id": rows.id, "calibrator": rows.calibrator,
            "transit (UTC)": [mjd_to_iso(m) for m in rows.transit_mjd],
            "QA": [VERDICTS[bool(p)] for p in rows.qa_passed], "reason": rows.qa_reason,
            "SNR": rows.snr, "flagged": rows.flagged_frac, "ants lost": rows.antennas_lost,
            "flux ratio": rows.flux_ratio, "solved from": rows.observation_id})

    def _update_timeline(self) -> None:
        data = timeline_data(self._rows)
        now_ms = float(mjd_to_unix_ms(utc_to_mjd(utcnow())))
        self._now_line.location = now_ms
        obs_mjd = self._obs_mid_mjd()
        marks = list(data["left"]) + list(data["right"])
        if obs_mjd is not None:
            marks.append(float(mjd_to_unix_ms(obs_mjd)))
        if not marks:
            marks = [now_ms - MS_PER_DAY, now_ms + MS_PER_DAY]
        lo, hi = min(marks), max(marks)
        if lo - 3 * MS_PER_DAY <= now_ms <= hi + 3 * MS_PER_DAY:
            lo, hi = min(lo, now_ms), max(hi, now_ms)  # now only when it is near the data
        pad = max((hi - lo) * 0.04, 3_600_000.0)
        accepted = [i for i, v in enumerate(data["verdict"]) if v == "accepted"]
        gaps = coverage_gaps([data["left"][i] for i in accepted],
                             [data["right"][i] for i in accepted], lo=lo - pad, hi=hi + pad)
        n_lanes = max(data["lane"], default=0) + 1
        gap_data = {"left": [g[0] for g in gaps], "right": [g[1] for g in gaps]}
        if gap_data != dict(self._gaps.data):
            self._gaps.data = gap_data
        self._gap_band.glyph.top = n_lanes - 0.3
        self._gap_band.glyph.bottom = -0.7
        self._timeline.y_range.start, self._timeline.y_range.end = -0.7, n_lanes - 0.3
        self._timeline.height = 140 + 44 * n_lanes
        # The data's span only while the operator has not panned or zoomed: a range
        # the browser changed is theirs, and no refresh takes it back.
        current = (self._x_range.start, self._x_range.end)
        if self._auto_x is None or current == self._auto_x:
            self._auto_x = (lo - pad, hi + pad)
            if current != self._auto_x:
                self._x_range.start, self._x_range.end = self._auto_x
        if data != dict(self._bars.data):
            self._bars.data = data
        ids = data["id"]
        self._bars.selected.indices = ([ids.index(self.caltable_id)]
                                       if self.caltable_id in ids else [])

    def _update_flux(self) -> None:
        series = self.store.calibrator_flux_series()
        if self._flux_series is not None and series.equals(self._flux_series):
            return  # resending equal data would re-range a plot the operator zoomed
        self._flux_series = series
        points, lines = flux_data(series)
        self._flux_points.data = points
        self._flux_lines.data = lines

    def _update_observation(self) -> None:
        mid = self._obs_mid_mjd()
        self._obs_line.visible = mid is not None
        if mid is None:
            self._obs_info.object = "No observation chosen."
            return
        self._obs_line.location = float(mjd_to_unix_ms(mid))
        selection = self.store.caltable_selection(mid, self.config)
        text = selection_markdown(self.observation, mid, selection,
                                  self.store.calibration_applied(self.observation))
        if text != self._obs_info.object:
            self._obs_info.object = text

    def _show_detail(self) -> None:
        match = self._rows[self._rows.id == self.caltable_id]
        if self.caltable_id is None or match.empty:
            self._detail.object = qa_detail_html(None)
            self._solutions.visible = False
            return
        row = match.iloc[0]
        summary = self.store.caltable_solutions(int(row.id))
        self._detail.object = qa_detail_html(row, summary.missing)
        self._show_solutions(summary)

    def _show_solutions(self, summary: SolutionsSummary) -> None:
        pol_colour = {0: "#0072b5", 1: "#e66100"}
        g = summary.gains
        if g.empty and summary.bandpass.empty:
            self._solutions.visible = False
            return
        if not self._solutions.objects:
            self._solutions.objects = self._build_solutions()
        self._gain_src.data = {"antenna": list(g.antenna), "amp": list(g.amp),
                               "phase_deg": list(g.phase_deg), "pol": list(g.pol),
                               "colour": [pol_colour.get(int(p), "#555") for p in g.pol]}
        b = summary.bandpass
        self._bp_src.data = {"freq_mhz": list(b.freq_hz / 1e6), "amp_median": list(b.amp_median),
                             "amp_lo": list(b.amp_lo), "amp_hi": list(b.amp_hi),
                             "pol": list(b.pol),
                             "colour": [pol_colour.get(int(p), "#555") for p in b.pol]}
        # One band over both polarisations: a band per pol would fold back on itself.
        env = b.groupby("freq_hz").agg(lo=("amp_lo", "min"), hi=("amp_hi", "max"))
        self._band_src.data = {"freq_mhz": list(env.index / 1e6), "lo": list(env.lo),
                               "hi": list(env.hi)}
        self._solutions.visible = True

    # ---------------------------------------------------------------- events
    def _on_tap(self, _attr, _old, new) -> None:
        ids = self._bars.data["id"]
        chosen = ids[new[0]] if new and new[0] < len(ids) else None
        if chosen != self.caltable_id:
            self.caltable_id = chosen
            self._show_detail()

    def _on_observation(self, event) -> None:
        self.observation = event.new
        self._update_observation()
        self._update_timeline()

    def _refresh_store(self) -> None:
        rows = self.store.caltables()
        observations = self.store.observations(limit=500)
        tables_changed = not rows.equals(self._rows)
        obs_changed = not observations.equals(self._observations)
        self._rows, self._observations = rows, observations
        if obs_changed:
            options = self._obs_options()
            if options != self._obs_select.options:
                self._obs_select.options = options
        if tables_changed:
            self._table.value = self._table_frame()
        self._update_timeline()
        self._update_flux()
        self._update_observation()

    def _refresh_progress(self) -> None:
        now_ms = float(mjd_to_unix_ms(utc_to_mjd(utcnow())))
        if abs(now_ms - self._now_line.location) > 60_000:  # a minute moves it visibly
            self._now_line.location = now_ms
