"""The dashboard's pages: slug, title and how to build each from the store and runner state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import panel as pn

from pipeline.jobs.runner_state import RunnerState
from pipeline.settings import Settings
from pipeline.store import Store
from views.audit_page import AuditPage
from views.calibration_page import CalibrationPage
from views.gpu_page import GpuPage
from views.images_page import ImageBrowser
from views.overview import OverviewPage
from views.pipeline_page import PipelinePage
from views.planned import PlannedPage
from views.queries_page import QueriesPage
from views.sources_page import SourcesPage
from views.triggers_page import TriggersPage


@dataclass(frozen=True, kw_only=True)
class PageSpec:
    """One navigation entry."""

    slug: str
    title: str
    build: Callable[[Store, RunnerState, Settings], pn.viewable.Viewer]
    #: the least role that may open the page (checked on the server)
    role: str = "viewer"


def _planned(title: str, summary: str, depends_on: str = "") -> Callable[..., PlannedPage]:
    def build(store: Store, state: RunnerState, settings: Settings) -> PlannedPage:
        return PlannedPage(title=title, summary=summary, depends_on=depends_on)
    return build


PAGES: tuple[PageSpec, ...] = (
    PageSpec(slug="overview", title="Overview",
             build=lambda store, state, settings: OverviewPage(store=store, state=state)),
    PageSpec(slug="pipeline", title="Pipeline & jobs",
             build=lambda store, state, settings: PipelinePage(store=store, state=state)),
    PageSpec(slug="images", title="Images",
             build=lambda store, state, settings: ImageBrowser(store=store, state=state)),
    PageSpec(slug="sources", title="Sources & lightcurves",
             build=lambda store, state, settings: SourcesPage(store=store, state=state)),
    PageSpec(slug="calibration", title="Calibration",
             build=lambda store, state, settings: CalibrationPage(
                 store=store, state=state, config=settings.calibration)),
    PageSpec(slug="mosaics", title="Mosaics", build=_planned(
        "Mosaics",
        "Quicklook (10 images), science (100) and deep (1000) mosaics, their coverage and "
        "noise.")),
    PageSpec(slug="triggers", title="Triggers",
             build=lambda store, state, settings: TriggersPage(store=store, state=state)),
    PageSpec(slug="queries", title="Saved queries",
             build=lambda store, state, settings: QueriesPage(store=store, state=state)),
    PageSpec(slug="gpu", title="GPU status",
             build=lambda store, state, settings: GpuPage(
                 store=store, state=state, backend_setting=settings.imaging.backend)),
    PageSpec(slug="backups", title="Backups", build=_planned(
        "Backups",
        "Store backups with size, checksum and validation result; create, validate and "
        "restore.")),
    PageSpec(slug="audit", title="Audit", role="admin",
             build=lambda store, state, settings: AuditPage(store=store, state=state)),
    PageSpec(slug="pointing", title="Pointing", build=_planned(
        "Pointing",
        "Local sidereal time at OVRO, the declination strip being observed, and upcoming "
        "calibrator and source transits.")),
)
