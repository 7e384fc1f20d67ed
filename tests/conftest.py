"""Shared fixtures: real stores in temporary homes, a controllable clock, Chromium."""

from __future__ import annotations

import faulthandler
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline.home import Home
from pipeline.process_tuning import configure_process
from pipeline.settings import write_settings_file
from pipeline.store import Store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
T0 = datetime(2026, 11, 23, 12, 0, 0)


#: Where a run that dies in C code (abort, segfault) leaves the test it was in and every
#: thread's stack; `make test` prints that test and the crashing thread from it. The
#: whole dump (all threads, then 5 kB of extension modules) is longer than the tail of a
#: CI log, which is all that shows otherwise.
CRASH_LOG_ENV = "CONTIMG_CRASH_LOG"
CRASH_LOG_KEY = pytest.StashKey()


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin, so this one holds
def pytest_configure(config: pytest.Config) -> None:
    configure_process()  # as contimg's processes run (pipeline/process_tuning.py)
    path = os.environ.get(CRASH_LOG_ENV)
    if path and os.environ.get("PYTEST_XDIST_WORKER"):
        path = f"{path}.{os.environ['PYTEST_XDIST_WORKER']}"  # one log per xdist worker
    if path:
        log = open(path, "w")  # noqa: SIM115 — open until the process ends
        config.stash[CRASH_LOG_KEY] = log
        faulthandler.enable(file=log, all_threads=True)


#: Files that take minutes, collected first: `make test` hands whole files to its workers
#: in collection order, and the 2-hour science run (7-8 min on a busy 2-core machine)
#: started last in alphabetical order, with the other worker idle through most of it.
SLOW_FILES_FIRST = ("test_science_sources.py", "test_end_to_end.py", "test_calibration.py",
                    "test_reprocess.py", "test_calibration_registry.py",
                    "test_queries_page_ui.py", "test_ui.py", "test_simulate_live.py",
                    "test_annotations_ui.py", "test_simulate.py", "test_imaging_stage.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as found


def pytest_runtest_setup(item: pytest.Item) -> None:
    log = item.config.stash.get(CRASH_LOG_KEY, None)
    if log is not None:
        log.seek(0)
        log.truncate()
        log.write(f"in {item.nodeid}\n")
        log.flush()


#: Imaging settings for tests whose observations must be imaged but where imaging is not
#: what they test: 256² cells of the default size and a short CLEAN (the default 3.5°
#: field is thousands of pixels on a side and ~30 s per observation on 2 cores).
FAST_IMAGING = {"npix": 256, "niter": 100, "backend": "cpu"}


def write_settings(home: Home | Path | str, **sections: dict) -> Path:
    """Write ``<home>/contimg.toml`` with these sections, e.g. ``imaging=FAST_IMAGING``.

    The file is checked as contimg would read it, so a test cannot write one that
    `contimg process` then refuses.
    """
    h = home if isinstance(home, Home) else Home.resolve(home)
    return write_settings_file(h, sections)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


@pytest.fixture
def store(home: Home) -> Iterator[Store]:
    with Store.open(home) as s:
        yield s


def add_observations(store: Store, n: int, *, state: str = "pending", start: datetime = T0,
                     prefix: str = "") -> list[str]:
    """Register ``n`` 5-minute chunks from ``start``; returns their ids."""
    ids = []
    for i in range(n):
        t = start + timedelta(minutes=5 * i)
        obs_id = prefix + t.strftime("%Y-%m-%dT%H:%M:%S")
        store.add_observation(obs_id=obs_id, start_utc=t, mid_mjd=61000.0 + i * 300 / 86400,
                              dec_deg=33.0, n_subbands=16, now=T0, state=state)
        ids.append(obs_id)
    return ids


def fail_one_observation(store: Store, home: Home, error: str, *, prefix: str = "bad-") -> str:
    """One observation whose convert stage really failed and the runner quarantined."""
    from pipeline.jobs.runner import Runner, RunnerConfig, StageRegistry
    [bad] = add_observations(store, 1, prefix=prefix)

    def convert(ctx):
        raise OSError(error)

    reg = StageRegistry()
    reg.register_stage("convert", convert)
    Runner(store, home, reg, config=RunnerConfig(max_attempts=1)).run_once()
    return bad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


#: Every served test home gets these users (add_test_users), all with TEST_PASSWORD.
TEST_PASSWORD = "test-password-1"
TEST_USERS = {"vera": "viewer", "val": "viewer", "otto": "operator", "ada": "admin"}


def add_test_users(home: Home) -> None:
    """Create TEST_USERS in the home's credentials file (those it lacks)."""
    from pipeline.accounts import Accounts
    accounts = Accounts.of_home(home.root)
    known = {u.name for u in accounts.users()}
    for name, role in TEST_USERS.items():
        if name not in known:
            accounts.add_user(name, role=role, password=TEST_PASSWORD, now=T0)


def test_api_key(home: Home, role: str, name: str = "") -> str:
    """A new API key's token for ``role`` in the home's credentials file."""
    from pipeline.accounts import Accounts
    _key, token = Accounts.of_home(home.root).create_api_key(name or f"test-{role}",
                                                             role=role, now=T0)
    return token


test_api_key.__test__ = False  # a helper, not a test


def sign_in(target, base_url: str, name: str, password: str = TEST_PASSWORD) -> None:
    """Sign a Playwright page or browser context in as ``name`` through the login form."""
    context = getattr(target, "context", target)
    response = context.request.post(f"{base_url}/login", max_redirects=0,
                                    form={"username": name, "password": password})
    if response.status not in (302, 303) or "error=" in response.headers.get("location", ""):
        raise AssertionError(f"sign-in as {name!r} refused: HTTP {response.status} "
                             f"{response.headers.get('location', '')}")


def audit_via_api(base_url: str, context) -> list[dict]:
    """The audit rows, read through GET /api/audit in a Playwright context (an admin's)."""
    response = context.request.get(base_url + "/api/audit")
    assert response.status == 200, response.text()
    return response.json()


_TOGGLE_JS = """([css, active]) => {
    const doc = window.Bokeh.documents[0];
    const models = doc.all_models ? [...doc.all_models] : [...doc._all_models.values()];
    const toggle = models.find(m => (m.css_classes || []).includes(css));
    if (toggle === undefined) return null;
    if (active !== null) toggle.active = active;
    return {active: toggle.active, visible: toggle.visible};
}"""


def forge_toggle(page, css_class: str, active: bool) -> bool | None:
    """Set a (maybe hidden) toggle in the page's Bokeh document as a browser event would;
    returns whether it is shown, None when the document has no such toggle."""
    found = page.evaluate(_TOGGLE_JS, [css_class, active])
    return None if found is None else found["visible"]


def toggle_active(page, css_class: str) -> bool | None:
    """The toggle's value as the browser holds it (None when there is none)."""
    found = page.evaluate(_TOGGLE_JS, [css_class, None])
    return None if found is None else found["active"]


def contimg(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the installed console script's module the way a user would.

    The timeout only stops a hang: a 30-minute simulation took over 120 s beside the
    science run on a busy fresh 2-core clone.
    """
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=900, **kw)


class ServedHome:
    """A `contimg serve` subprocess over a home; stopped with SIGINT like an operator would."""

    def __init__(self, home: Home, *extra: str, users: bool = True):
        self.home = home
        if users:
            add_test_users(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.root.parent / f"serve-{self.port}.log"
        self._log = open(self.log, "w")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--home", str(home.root),
             "--port", str(self.port), *extra], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.url + "/api/health")
        except OSError:
            self.stop()
            raise RuntimeError(
                f"contimg serve did not come up:\n{self.log.read_text()}") from None

    def sign_in(self, target, name: str = "ada") -> None:
        """Sign a Playwright page or context in as one of TEST_USERS (default the admin)."""
        sign_in(target, self.url, name)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


#: how long a browser assertion waits for the page (Playwright's own default, 5 s, was too
#: short for a save's round trip on a loaded 2-core machine)
EXPECT_TIMEOUT_MS = 20_000


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def run_async(coro):
    """Run a coroutine to its end from sync test code, even beside Playwright's own loop."""
    import asyncio
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_until(predicate, *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.05)


class InProcessServer:
    """The dashboard served from a thread of the test process (its runner and store too)."""

    def __init__(self, home: Home, store: Store, state) -> None:
        import asyncio

        from tornado.ioloop import IOLoop

        from app.server import AppContext, make_server

        add_test_users(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self.loop = IOLoop.current()
            server = make_server(AppContext(home=home, store=store, state=state),
                                 port=self.port, address="127.0.0.1", loop=self.loop)
            server.start()
            started.set()
            self.loop.start()
            server.stop()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the in-process server did not start within 30 s")

    def sign_in(self, target, name: str = "ada") -> None:
        """Sign a Playwright page or context in as one of TEST_USERS (default the admin)."""
        sign_in(target, self.url, name)

    def stop(self) -> None:
        self.loop.add_callback(self.loop.stop)
        self._thread.join(10)


class ViewQueryCounter:
    """Counts the store queries that page code (views/) issues, from any thread."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        frame = sys._getframe(2)
        while frame is not None:
            if "/views/" in frame.f_code.co_filename:
                with self._lock:
                    self.count += 1
                return
            frame = frame.f_back


def counting_store(home: Home, counter: ViewQueryCounter) -> Store:
    """A real Store whose every query made from views/ code is counted."""
    class CountingStore(Store):
        @property
        def _cur(self):
            counter()
            return Store._cur.fget(self)
    return CountingStore.open(home)


class SteppedConvert:
    """A convert stage the test drives: it says when it runs, steps its progress, and
    returns only when the test releases it (so no check can miss a job still running)."""

    def __init__(self, *, step_s: float = 0.0, steps: int = 0):
        self.gate = threading.Event()
        self.step_s, self.steps = step_s, steps
        self.started: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, ctx) -> None:
        with self._lock:
            self.started.add(ctx.observation.id)
        ctx.progress(0.4 if not self.steps else 0.0)
        for k in range(1, self.steps):
            if self.gate.wait(self.step_s):
                break
            ctx.progress(k / self.steps)
        if not self.gate.wait(120):
            raise TimeoutError("the test never released the convert stage")
