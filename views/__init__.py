"""Panel pages of the contimg dashboard; each takes a store and the runner's state."""

from views.base import StorePage
from views.calibration_page import CalibrationPage
from views.gpu_page import GpuPage
from views.image_viewer import ImageViewer
from views.images_page import ImageBrowser
from views.overview import OverviewPage
from views.pages import PAGES, PageSpec
from views.pipeline_page import PipelinePage
from views.planned import PlannedPage
from views.sources_page import SourcesPage

__all__ = ["PAGES", "CalibrationPage", "GpuPage", "ImageBrowser", "ImageViewer",
           "OverviewPage", "PageSpec", "PipelinePage", "PlannedPage", "SourcesPage", "StorePage"]
