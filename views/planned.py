"""A page whose issue has not landed yet: it says what it will show, with no fake data."""

from __future__ import annotations

import panel as pn
import param


class PlannedPage(pn.viewable.Viewer):
    """Placeholder that describes the page to come."""

    title = param.String(doc="Page title.")
    summary = param.String(doc="What the page will show, in Markdown.")
    depends_on = param.String(default="", doc="What has to land first.")

    def __panel__(self) -> pn.viewable.Viewable:
        note = f"\n\n*Not built yet — waits for {self.depends_on}.*" if self.depends_on else (
            "\n\n*Not built yet.*")
        return pn.Column(
            pn.pane.Markdown(f"## {self.title}\n\n{self.summary}{note}",
                             css_classes=["planned-page"], sizing_mode="stretch_width"),
            sizing_mode="stretch_width")
