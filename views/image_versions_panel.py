"""An image's versions side by side: QA of each and the provenance diff (what changed).

A reprocess keeps the replaced image as an earlier version (Store.image_versions); this
panel shows the current one beside the one before it, and, under them, each setting,
caltable or build that differs between them.

In a notebook: ``ImageVersionsPanel(store=Store.open(home), image_id=3)``.
"""

from __future__ import annotations

import html

import pandas as pd
import panel as pn
import param

from pipeline.provenance import provenance_diff
from pipeline.store import Store

_QA_COLUMNS = ("version", "current", "rms_jy", "n_iter", "qa_passed", "qa_reason", "created_utc")


def versions_frame(versions: pd.DataFrame) -> pd.DataFrame:
    """Versions newest first with rms in mJy (the QA side by side)."""
    out = versions.reindex(columns=list(_QA_COLUMNS)).copy()
    out.insert(3, "rms_mjy", (out.pop("rms_jy").astype(float) * 1e3).round(3))
    return out


def diff_frame(old: dict | None, new: dict | None) -> pd.DataFrame:
    """The provenance diff of two versions as rows: field, old, new (as text)."""
    if old is None or new is None:
        return pd.DataFrame(columns=["field", "old", "new"])
    rows = [{"field": c["field"], "old": _text(c["old"]), "new": _text(c["new"])}
            for c in provenance_diff(old, new)]
    return pd.DataFrame(rows, columns=["field", "old", "new"])


def _text(value: object) -> str:
    return "—" if value is None else str(value)


class ImageVersionsPanel(pn.viewable.Viewer):
    """The versions of one image and what changed between the newest two."""

    store = param.ClassSelector(class_=Store, doc="Query methods over the catalog.")
    image_id = param.Integer(default=None, allow_None=True, doc="The image shown.")

    def __init__(self, **params):
        super().__init__(**params)
        self._title = pn.pane.Markdown(css_classes=["versions-title"])
        self._versions = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                              sizing_mode="stretch_width",
                                              css_classes=["versions-table"])
        self._diff = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                          sizing_mode="stretch_width",
                                          css_classes=["provenance-diff"])
        self._note = pn.pane.Markdown(css_classes=["versions-note"])
        # The parts join the layout only once there is something to show, never hidden
        # with ``visible``: a Tabulator given its rows while hidden draws none when shown
        # (Tabulator measures its rows in the page, and a hidden one has no size).
        self._layout = pn.Column(sizing_mode="stretch_width", css_classes=["image-versions"])
        self.param.watch(lambda *_: self.refresh(), "image_id")
        self.refresh()

    def refresh(self) -> None:
        """Re-read the image's versions and their provenance."""
        versions = (pd.DataFrame() if self.image_id is None
                    else self.store.image_versions(self.image_id))
        if versions.empty:
            self._layout.objects = []
            return
        self._versions.value = versions_frame(versions)
        self._title.object = (f"### Versions of image {html.escape(str(self.image_id))} "
                              f"({len(versions)})")
        if len(versions) < 2:
            self._note.object = "One version: nothing reprocessed yet."
            self._show([self._title, self._versions, self._note])
            return
        new_v, old_v = (int(v) for v in versions["version"].iloc[:2])
        diff = diff_frame(self.store.image_provenance(self.image_id, old_v),
                          self.store.image_provenance(self.image_id, new_v))
        self._note.object = (f"What changed from version {old_v} to {new_v}:"
                             if len(diff) else f"Versions {old_v} and {new_v}: same provenance")
        self._diff.value = diff
        self._show([self._title, self._versions, self._note, self._diff])

    def _show(self, parts: list) -> None:
        if list(self._layout.objects) != parts:
            self._layout.objects = parts

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout
