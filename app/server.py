"""`contimg serve`: the Panel pages, the runner, /metrics and /api on one Tornado server."""

from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import panel as pn
from bokeh.server.server import Server
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.web import RedirectHandler

from app.gate import Gate, NotSignedIn
from app.http import (
    ActionHandler,
    AuditHandler,
    HealthHandler,
    ImageFileHandler,
    MetricsHandler,
    ReprocessHandler,
    ReprocessPlanRoute,
    SavedQueriesHandler,
    SourcesExportHandler,
    TriggersHandler,
    WhoAmIHandler,
)
from app.metrics import metrics_registry
from app.session_pool import SessionOrderedPool
from app.sessions import SessionFigures
from app.sign_in import FIRST_ADMIN, AccountsAuthProvider, cookie_secret, ensure_first_admin
from pipeline.accounts import Accounts
from pipeline.actor import Actor
from pipeline.audit_spool import drain_spool
from pipeline.auth_config import AuthConfig
from pipeline.clock import utcnow
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.jobs.default_stages import default_registry
from pipeline.jobs.runner import Runner, RunnerConfig
from pipeline.jobs.runner_state import RunnerState
from pipeline.settings import Settings, load_settings
from pipeline.store import Store
from pipeline.triggers.service import TriggerService
from views.base import StorePage
from views.image_viewer import warm_up as warm_image_viewer
from views.pages import PAGES, PageSpec

log = logging.getLogger(__name__)

#: Panel's thread pool: session page builds (after load), browser events and periodic
#: callbacks run there, not on the IO loop that serves every page and /api/health; each
#: session's items in the order they came (app/session_pool.py)
SESSION_THREADS = 4
#: a session whose browser went away is freed this long after its last connection, ms
#: (Bokeh's default 15 s, checked every 17 s, kept dead pages' memory for half a minute)
UNUSED_SESSION_LIFETIME_MS = 10_000
CHECK_UNUSED_SESSIONS_MS = 2_000

#: how often the server moves the command line's spooled audit rows into the store, ms
AUDIT_DRAIN_MS = 5_000

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

    @property
    def gate(self) -> Gate:
        """Who may sign in, per the settings' [auth] and the home's credentials file."""
        return Gate(auth=self.settings.auth, accounts=Accounts.of_home(self.home.root))


def nav_html(current: str, actor: Actor | None = None) -> str:
    """Links to every page the actor may open, the current one marked."""
    links = "".join(
        f'<a href="./{p.slug}" data-slug="{p.slug}"'
        f'{" class=current aria-current=page" if p.slug == current else ""}>{p.title}</a>'
        for p in PAGES if actor is None or actor.may(p.role))
    return f'<nav class="nav">{links}</nav>'


def _who_html(actor: Actor, signed_in: bool) -> str:
    sign_out = ' · <a href="./logout" class="sign-out">sign out</a>' if signed_in else ""
    return (f'<div class="who" data-user="{actor.name}" data-role="{actor.role}">'
            f'{actor.name} ({actor.role}){sign_out}</div>')


def session_actor(ctx: AppContext) -> Actor:
    """The actor of the current page session, from its sign-in (NotSignedIn if none)."""
    return ctx.gate.actor_for_user(pn.state.user)


def build_page(page: PageSpec, ctx: AppContext,
               actor: Actor | None = None) -> pn.template.BaseTemplate:
    """One browser session's template around the page's view, shown as ``actor`` sees it."""
    actor = actor or Actor.notebook()
    # BootstrapTemplate: its design ships every asset with Panel (the Fast design asks
    # Google for fonts, which a closed observatory network refuses).
    template = pn.template.BootstrapTemplate(
        title=f"contimg · {page.title}", header_background="#0072b5", sidebar_width=230)
    template.sidebar.append(pn.pane.HTML(nav_html(page.slug, actor), stylesheets=[_NAV_CSS],
                                         sizing_mode="stretch_width"))
    template.sidebar.append(pn.pane.HTML(_who_html(actor, actor.via in ("password", "oauth")),
                                         styles={"font-size": "0.9em"}))
    template.sidebar.append(pn.pane.Markdown(f"home: `{ctx.home.root}`",
                                             styles={"font-size": "0.8em"}))
    if not actor.may(page.role):
        # Checked here, on the server: the link is hidden too, but a typed URL lands here.
        ctx.store.record_action(username=actor.name, role=actor.role, action="page.open",
                                target=page.slug, allowed=False, now=utcnow(),
                                detail=f"needs {page.role}")
        template.main.append(pn.pane.Alert(
            f"The {page.title} page is for the {page.role} role; you are signed in as "
            f"{actor.name} ({actor.role}).", alert_type="warning", css_classes=["refused"]))
        return template
    view = page.build(ctx.store, ctx.state, ctx.settings)
    if isinstance(view, StorePage):
        view.actor = actor
    template.main.append(view)
    return template


def _page_app(page: PageSpec, ctx: AppContext) -> Callable[[], pn.template.BaseTemplate]:
    # Panel calls a plain function once per session; it does not recognise functools.partial.
    def app() -> pn.template.BaseTemplate:
        # Pages are built after load, so the first document holds no Tabulator: ask for
        # its JavaScript up front or the page would fill in with tables that never draw.
        pn.extension("tabulator")
        try:
            actor = session_actor(ctx)
        except NotSignedIn as exc:  # a cookie of a user removed since it was signed
            return pn.pane.Alert(f"Not signed in ({exc}): <a href='./login'>sign in</a>",
                                 alert_type="danger")
        return build_page(page, ctx, actor)
    return app


def use_session_threads(n: int = SESSION_THREADS) -> None:
    """Give Panel its thread pool, in order per session (PANEL_NUM_THREADS overrides ``n``)."""
    if isinstance(pn.state._thread_pool, SessionOrderedPool):
        return
    if pn.config.nthreads is None:
        pn.config.nthreads = n  # Panel starts a pool and makes its param watchers thread-aware
    # a server stopped earlier in this process shut Panel's pool down without unsetting nthreads
    pool = pn.state._thread_pool or ThreadPoolExecutor(max_workers=pn.config.nthreads or None,
                                                       thread_name_prefix="session")
    pn.state._thread_pool = SessionOrderedPool(pool)


def make_server(ctx: AppContext, *, port: int, address: str,
                loop: IOLoop | None = None) -> Server:
    """The Bokeh/Tornado server with every page and the extra routes, not yet started."""
    use_session_threads()
    apps = {p.slug: _page_app(p, ctx) for p in PAGES}
    figures = SessionFigures()
    gate = ctx.gate
    store, state = ctx.store, ctx.state
    extra = [
        (r"/", RedirectHandler, {"url": "/overview"}),
        (r"/metrics", MetricsHandler,
         {"registry": metrics_registry(store, state, sessions=figures), "gate": gate}),
        (r"/api/health", HealthHandler,
         {"store": store, "state": state, "sessions": figures, "gate": gate}),
        (r"/api/whoami", WhoAmIHandler, {"gate": gate}),
        (r"/api/images/([^/]+)/([^/]+)", ImageFileHandler, {"store": store, "gate": gate}),
        (r"/api/sources\.([a-z]+)", SourcesExportHandler, {"store": store, "gate": gate}),
        (r"/api/pause", ActionHandler,
         {"store": store, "state": state, "action": "pause", "gate": gate}),
        (r"/api/resume", ActionHandler,
         {"store": store, "state": state, "action": "resume", "gate": gate}),
        (r"/api/observations/([^/]+)/retry", ActionHandler,
         {"store": store, "state": state, "action": "retry", "gate": gate}),
        (r"/api/audit", AuditHandler, {"store": store, "gate": gate}),
        (r"/api/reprocess(?:/(plan))?", ReprocessPlanRoute,
         {"store": store, "state": state, "gate": gate}),
        (r"/api/reprocess/(\d+)(?:/(cancel))?", ReprocessHandler,
         {"store": store, "state": state, "gate": gate}),
        (r"/api/triggers", TriggersHandler, {"store": store, "gate": gate}),
        (r"/api/triggers/(\d+)/fire", TriggersHandler, {"store": store, "gate": gate}),
        (r"/api/saved-queries", SavedQueriesHandler, {"store": store, "gate": gate}),
        (r"/api/saved-queries/([^/]+)", SavedQueriesHandler, {"store": store, "gate": gate}),
    ]
    origins = [f"{host}:{port}" for host in {address, "localhost", "127.0.0.1"}]
    try:
        server = pn.serve(apps, port=port, address=address, show=False, start=False,
                          title={p.slug: f"contimg · {p.title}" for p in PAGES},
                          websocket_origin=["*"] if address in ("0.0.0.0", "::") else origins,
                          extra_patterns=extra, threaded=False, loop=loop,
                          **auth_options(ctx.settings.auth, ctx.home, gate.accounts),
                          check_unused_sessions_milliseconds=CHECK_UNUSED_SESSIONS_MS,
                          unused_session_lifetime_milliseconds=UNUSED_SESSION_LIFETIME_MS)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(address, port) from None
        raise
    figures.tornado = server._tornado
    return server


def auth_options(auth: AuthConfig, home: Home, accounts: Accounts) -> dict:
    """pn.serve's sign-in arguments for the settings' [auth] mode (none when read-only)."""
    if auth.mode == "read-only":
        return {}
    options: dict = {"cookie_secret": cookie_secret(home.root)}
    if auth.mode == "password":
        options["auth_provider"] = AccountsAuthProvider(accounts)
        return options
    secret_file = Path(auth.oauth_secret_file).expanduser()
    if not secret_file.is_absolute():
        secret_file = home.root / secret_file
    try:
        secret = secret_file.read_text().strip()
    except OSError as exc:
        raise ContimgError(f"{secret_file}: the OAuth client secret (auth.oauth_secret_file) "
                           f"cannot be read: {exc.strerror}") from None
    options.update(oauth_provider=auth.oauth_provider, oauth_key=auth.oauth_key,
                   oauth_secret=secret)
    if auth.oauth_redirect_uri:
        options["oauth_redirect_uri"] = auth.oauth_redirect_uri
    if auth.oauth_provider == "generic":
        # An OIDC realm's endpoints (Keycloak's layout under .../realms/NAME)
        base = auth.oauth_url.rstrip("/") + "/protocol/openid-connect"
        options["oauth_extra_params"] = {
            "AUTHORIZE_URL": f"{base}/auth", "TOKEN_URL": f"{base}/token",
            "USER_URL": f"{base}/userinfo", "LOGOUT_URL": f"{base}/logout"}
    return options


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
    accounts = Accounts.of_home(home.root)
    if settings.auth.mode == "password":
        made = ensure_first_admin(home.root, accounts, now=utcnow())
        if made is not None:
            print(f"contimg: nobody could sign in, so user '{FIRST_ADMIN}' (admin) was made; "
                  f"its password is in {made} (readable only by you). Add people with "
                  "`contimg users add NAME --role viewer|operator|admin`.", flush=True)
    elif settings.auth.mode == "read-only":
        print("contimg: auth.mode = 'read-only': no sign-in, every visitor is a viewer and "
              "no operator action runs from the web", flush=True)
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
    triggers = TriggerService(store)
    triggers.start()
    loop = IOLoop.current()
    # `contimg users|apikey` spool their audit rows while this process holds the store
    drain = PeriodicCallback(lambda: drain_spool(home.root, store.record_action),
                             AUDIT_DRAIN_MS)
    drain_spool(home.root, store.record_action)
    drain.start()

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        loop.add_callback(loop.stop)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    server.start()
    # the first image opened would otherwise wait seconds for datashader to compile
    threading.Thread(target=warm_image_viewer, name="warm-viewer", daemon=True).start()
    print(f"contimg serving http://{address}:{server.port}/ (home {home.root})", flush=True)
    try:
        loop.start()
    finally:
        triggers.stop(wait=True)
        runner.stop(wait=True)
        server.stop()
        store.close()
