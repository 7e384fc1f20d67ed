"""Many browser sessions at once against one `contimg serve` over a demo-like home.

Target (issue 13): twenty sessions at once, p95 <= 5 s a page, /api/health <= 100 ms
during the load, server memory bounded and freed when the sessions close.

Each session is its own Playwright context in Debian's Chromium and loads overview,
sources, images and calibration in turn, each until the network is idle and the page's
own content is drawn. Meanwhile a thread asks /api/health every 250 ms and another
samples the server's RSS. After the contexts close it waits (up to 60 s) for the
server's session count (/api/health "sessions") to fall to 0 and prints the RSS then.

The home (a 20-minute simulated run around 3C48's transit, processed with
`contimg process --once`) is built once and cached under /tmp. Prints figures; asserts
nothing. Run: .venv/bin/python benchmarks/bench_sessions.py [--sessions 1,5,20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, wait_http  # noqa: E402

CACHE = Path("/tmp/contimg-bench-sessions")
DEMO = ["--transit-of", "3C48", "--start", "2026-11-23T12:00:00", "--minutes", "20",
        "--antennas", "24", "--channels-per-subband", "4", "--seed", "1"]
#: each page and the element that shows its content was drawn
PAGES = {"overview": '.state-card[data-state="complete"] .count',
         "sources": ".sources-table",
         "images": ".image-count",
         "calibration": ".caltable-table"}
CONTIMG = str(Path(sys.executable).with_name("contimg"))


def demo_home(cache: Path = CACHE) -> Path:
    """The processed demo-like home, built on first use (a few minutes on 2 cores)."""
    home = cache / "home"
    done = cache / "built"
    if done.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    (home / "contimg.toml").write_text("[imaging]\ncells_per_beam = 3.0\n")
    print(f"building the demo home in {home} (once)...", flush=True)
    subprocess.run([CONTIMG, "simulate", "--home", str(home), "--if-empty", *DEMO], check=True)
    subprocess.run([CONTIMG, "process", "--home", str(home), "--once"], check=True)
    done.write_text("ok\n")
    return home


def stop_server(proc: subprocess.Popen) -> None:
    """SIGINT, as an operator's Ctrl-C; killed if it has not stopped in 30 s."""
    proc.send_signal(2)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def health(url: str) -> tuple[float, dict]:
    """One /api/health request: (milliseconds, body)."""
    t = time.perf_counter()
    with urllib.request.urlopen(url + "/api/health", timeout=60) as r:
        body = json.loads(r.read())
    return (time.perf_counter() - t) * 1000, body


class Sampler(threading.Thread):
    """Health latency every 250 ms and the server's peak RSS, until stopped."""

    def __init__(self, url: str, pid: int):
        super().__init__(daemon=True)
        self.url, self.pid = url, pid
        self.health_ms: list[float] = []
        self.peak_mb = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            try:
                self.health_ms.append(health(self.url)[0])
            except OSError:
                self.health_ms.append(float("inf"))


BENCH_USER, BENCH_PASSWORD = "bench", "bench-password"


def ensure_bench_user(home: Path) -> None:
    """A viewer the benchmark signs in as (the dashboard asks everyone to sign in)."""
    from datetime import datetime

    from pipeline.accounts import Accounts
    accounts = Accounts.of_home(home)
    if accounts.user(BENCH_USER) is None:
        accounts.add_user(BENCH_USER, role="viewer", password=BENCH_PASSWORD,
                          now=datetime(2026, 1, 1))


async def sign_in(context, url: str) -> None:
    """Post the login form in ``context`` (a read-only dashboard answers it with 404)."""
    await context.request.post(f"{url}/login", max_redirects=0,
                               form={"username": BENCH_USER, "password": BENCH_PASSWORD})


async def one_session(browser, url: str, timeout_ms: int) -> tuple[list[float], int]:
    """Load every page in one fresh context: (seconds per page, pages that failed)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await sign_in(context, url)
    page = await context.new_page()
    times, failed = [], 0
    try:
        for slug, marker in PAGES.items():
            t = time.perf_counter()
            try:
                await page.goto(f"{url}/{slug}", wait_until="networkidle", timeout=timeout_ms)
                await page.locator(marker).first.wait_for(timeout=timeout_ms)
                times.append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001 — a timed-out page is counted, not fatal
                failed += 1
    finally:
        await context.close()
    return times, failed


async def load(url: str, n: int, timeout_ms: int) -> tuple[list[float], int, float]:
    """N sessions at once: (every page's seconds, failures, wall seconds)."""
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        t = time.perf_counter()
        results = await asyncio.gather(*(one_session(browser, url, timeout_ms)
                                         for _ in range(n)))
        wall = time.perf_counter() - t
        await browser.close()
    return [s for r in results for s in r[0]], sum(r[1] for r in results), wall


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values; nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def run_level(url: str, pid: int, n: int, timeout_ms: int) -> dict:
    """One level of concurrency with its figures."""
    before = rss_mb(pid)
    sampler = Sampler(url, pid)
    sampler.start()
    times, failed, wall = asyncio.run(load(url, n, timeout_ms))
    sampler.stopping.set()
    sampler.join()
    deadline = time.monotonic() + 60
    sessions = -1
    while time.monotonic() < deadline:
        sessions = health(url)[1].get("sessions", -1)
        if sessions <= 0:  # -1: a server (an older checkout) that does not report them
            break
        time.sleep(1)
    return {"n": n, "pages": len(times), "failed": failed, "wall_s": wall,
            "p50_s": pct(times, 0.5), "p95_s": pct(times, 0.95),
            "health_p50_ms": pct(sampler.health_ms, 0.5),
            "health_max_ms": max(sampler.health_ms, default=float("nan")),
            "rss_before_mb": before, "rss_peak_mb": sampler.peak_mb,
            "rss_after_mb": rss_mb(pid), "sessions_after": sessions}


def main() -> None:
    """Serve the demo home and print the table for each level of concurrency."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="1,5,20", help="comma-separated levels")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a page may take")
    parser.add_argument("--src", type=Path, default=ROOT,
                        help="a checkout to serve from (e.g. an older commit, to compare)")
    args = parser.parse_args()
    home = demo_home()
    ensure_bench_user(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(CACHE / f"serve-{port}.log", "w")  # noqa: SIM115 — closed below
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--home", str(home),
                             "--port", str(port), "--paused"], cwd=args.src, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(url + "/api/health")
        asyncio.run(load(url, 1, int(args.timeout * 1000)))  # warm imports and caches
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'n':>3} {'pages':>5} {'fail':>4} {'wall s':>7} {'p50 s':>6} {'p95 s':>6} "
              f"{'health p50/max ms':>18} {'RSS before/peak/after MB':>25} {'sessions':>8}")
        for n in (int(x) for x in args.sessions.split(",")):
            r = run_level(url, proc.pid, n, int(args.timeout * 1000))
            print(f"{r['n']:>3} {r['pages']:>5} {r['failed']:>4} {r['wall_s']:>7.1f} "
                  f"{r['p50_s']:>6.2f} {r['p95_s']:>6.2f} "
                  f"{r['health_p50_ms']:>8.0f}/{r['health_max_ms']:<9.0f} "
                  f"{r['rss_before_mb']:>7.0f}/{r['rss_peak_mb']:.0f}/{r['rss_after_mb']:<7.0f} "
                  f"{r['sessions_after']:>8}", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} after")
    finally:
        stop_server(proc)
        log.close()
    errors = sum("ProtocolError" in line or "Traceback" in line
                 for line in (CACHE / f"serve-{port}.log").read_text().splitlines())
    print(f"server log: {errors} protocol errors / tracebacks")


if __name__ == "__main__":
    main()
