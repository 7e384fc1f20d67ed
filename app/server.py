"""`contimg serve`: the Panel pages, the runner, /metrics and /api on one Tornado server."""

from __future__ import annotations

import errno
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import panel as pn
from bokeh.server.server import Server
from tornado.ioloop import IOLoop
from tornado.web import RedirectHandler

from app.http import HealthHandler, ImageFileHandler, MetricsHandler, SourcesExportHandler
from app.metrics import metrics_registry
from app.sessions import SessionFigures
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, RunnerConfig
from pipeline.jobs.runner_state import RunnerState
from pipeline.settings import Settings, load_settings
from pipeline.store import Store
from views.pages import PAGES, PageSpec

log = logging.getLogger(__name__)

#: Panel's thread pool: session page builds (after load), browser events and periodic
#: callbacks run there, not on the IO loop that serves every page and /api/health
SESSION_THREADS = 4
#: a session whose browser went away is freed this long after its last connection, ms
#: (Bokeh's default 15 s, checked every 17 s, kept dead pages' memory for half a minute)
UNUSED_SESSION_LIFETIME_MS = 10_000
CHECK_UNUSED_SESSIONS_MS = 2_000

#: the GIL switch interval of the serving process, seconds (Python's default: 0.005)
SWITCH_INTERVAL_S = 0.0005

_NAV_CSS = """
.nav a {display: block; padding: 6px 10px; border-radius: 4px; color: inherit;
  text-decoration: none;}
.nav a:hover {background: rgba(0,0,0,0.06);}
.nav a.current {background: #0072b5; color: white;}
"""


class PortInUse(ContimgError):
    """The chosen address and port are taken."""

    def __init__(self, address: str, port: int):
        super().__init__(f"port {port} on {address} is already in use; stop what holds it "
                         "or pass --port N")


@dataclass(frozen=True, kw_only=True)
class AppContext:
    """Process-wide objects every browser session shares."""

    home: Home
    store: Store
    state: RunnerState
    settings: Settings = field(default_factory=Settings)


def nav_html(current: str) -> str:
    """Links to every page, the current one marked."""
    links = "".join(
        f'<a href="./{p.slug}" data-slug="{p.slug}"'
        f'{" class=current aria-current=page" if p.slug == current else ""}>{p.title}</a>'
        for p in PAGES)
    return f'<nav class="nav">{links}</nav>'


def build_page(page: PageSpec, ctx: AppContext) -> pn.template.BaseTemplate:
    """One browser session's template around the page's view."""
    # BootstrapTemplate: its design ships every asset with Panel (the Fast design asks
    # Google for fonts, which a closed observatory network refuses).
    template = pn.template.BootstrapTemplate(
        title=f"contimg · {page.title}", header_background="#0072b5", sidebar_width=230)
    template.sidebar.append(pn.pane.HTML(nav_html(page.slug), stylesheets=[_NAV_CSS],
                                         sizing_mode="stretch_width"))
    template.sidebar.append(pn.pane.Markdown(f"home: `{ctx.home.root}`",
                                             styles={"font-size": "0.8em"}))
    template.main.append(page.build(ctx.store, ctx.state, ctx.settings))
    return template


def _page_app(page: PageSpec, ctx: AppContext) -> Callable[[], pn.template.BaseTemplate]:
    # Panel calls a plain function once per session; it does not recognise functools.partial.
    def app() -> pn.template.BaseTemplate:
        # Pages are built after load, so the first document holds no Tabulator: ask for
        # its JavaScript up front or the page would fill in with tables that never draw.
        pn.extension("tabulator")
        return build_page(page, ctx)
    return app


def use_session_threads(n: int = SESSION_THREADS) -> None:
    """Give Panel its thread pool (once per process; PANEL_NUM_THREADS overrides ``n``)."""
    if pn.state._thread_pool is None:
        pn.config.nthreads = pn.config.nthreads or n


def make_server(ctx: AppContext, *, port: int, address: str,
                loop: IOLoop | None = None) -> Server:
    """The Bokeh/Tornado server with every page and the extra routes, not yet started."""
    use_session_threads()
    apps = {p.slug: _page_app(p, ctx) for p in PAGES}
    figures = SessionFigures()
    extra = [
        (r"/", RedirectHandler, {"url": "/overview"}),
        (r"/metrics", MetricsHandler,
         {"registry": metrics_registry(ctx.store, ctx.state, sessions=figures)}),
        (r"/api/health", HealthHandler,
         {"store": ctx.store, "state": ctx.state, "sessions": figures}),
        (r"/api/images/([^/]+)/([^/]+)", ImageFileHandler, {"store": ctx.store}),
        (r"/api/sources\.([a-z]+)", SourcesExportHandler, {"store": ctx.store}),
    ]
    origins = [f"{host}:{port}" for host in {address, "localhost", "127.0.0.1"}]
    try:
        server = pn.serve(apps, port=port, address=address, show=False, start=False,
                          title={p.slug: f"contimg · {p.title}" for p in PAGES},
                          websocket_origin=["*"] if address in ("0.0.0.0", "::") else origins,
                          extra_patterns=extra, threaded=False, loop=loop,
                          check_unused_sessions_milliseconds=CHECK_UNUSED_SESSIONS_MS,
                          unused_session_lifetime_milliseconds=UNUSED_SESSION_LIFETIME_MS)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(address, port) from None
        raise
    figures.tornado = server._tornado
    return server


def serve(home: Home, *, port: int, address: str, config: RunnerConfig,
          paused: bool = False, settings: Settings | None = None) -> None:
    """Open the store, start the runner once, and serve until SIGINT/SIGTERM.

    ``settings`` None reads the home's contimg.toml (once, here).
    """
    settings = settings if settings is not None else load_settings(home)
    # Worker threads format exports and run stage code in Python; a request on the IO
    # loop waits up to one switch interval for the GIL each time it blocks, so the
    # default 5 ms made /api/health take 20-140 ms while a catalog export was built.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    store = Store.open(home)
    state = RunnerState(paused=paused)
    runner = Runner(store, home, default_registry(settings), config=config, state=state)
    try:
        server = make_server(AppContext(home=home, store=store, state=state,
                                        settings=settings),
                             port=port, address=address)
    except BaseException:
        store.close()
        raise
    runner.start()
    loop = IOLoop.current()

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        loop.add_callback(loop.stop)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    server.start()
    print(f"contimg serving http://{address}:{server.port}/ (home {home.root})", flush=True)
    try:
        loop.start()
    finally:
        runner.stop(wait=True)
        server.stop()
        store.close()
