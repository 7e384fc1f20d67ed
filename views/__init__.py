"""Panel pages of the contimg dashboard; each takes a store and the runner's state."""

from views.overview import OverviewPage
from views.pages import PAGES, PageSpec
from views.planned import PlannedPage

__all__ = ["PAGES", "OverviewPage", "PageSpec", "PlannedPage"]
