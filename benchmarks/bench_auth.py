"""A page's first render with sign-in against without (issue 14 target: <= 10 % slower).

Serves bench_sessions' demo home twice in turn, A B A B: once with the default sign-in
(password mode; the browser context signs in once, then every page checks its cookie and
the user's role) and once in read-only mode (no sign-in at all). In each round one fresh
signed-in Chromium context loads overview, sources, images and calibration ``--repeats``
times, each until the network is idle and the page's own content is drawn. Prints per
page the median first render in each mode and the ratio. Asserts nothing.
Run: .venv/bin/python benchmarks/bench_auth.py [--rounds 2 --repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sessions import (  # noqa: E402
    CACHE,
    PAGES,
    demo_home,
    ensure_bench_user,
    sign_in,
    stop_server,
)
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, wait_http  # noqa: E402

MODES = ("password", "read-only")


def set_mode(home: Path, mode: str, original: str) -> None:
    """The home's contimg.toml as it was, with [auth] mode = ``mode``."""
    (home / "contimg.toml").write_text(f'{original.rstrip()}\n\n[auth]\nmode = "{mode}"\n')


async def render_times(url: str, repeats: int) -> dict[str, list[float]]:
    """Seconds to each page's drawn content, ``repeats`` times, in one signed-in context."""
    from playwright.async_api import async_playwright
    out: dict[str, list[float]] = {slug: [] for slug in PAGES}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        await sign_in(context, url)
        page = await context.new_page()
        for _ in range(repeats):
            for slug, marker in PAGES.items():
                t = time.perf_counter()
                await page.goto(f"{url}/{slug}", wait_until="networkidle", timeout=120_000)
                await page.locator(marker).first.wait_for(timeout=120_000)
                out[slug].append(time.perf_counter() - t)
        await browser.close()
    return out


def serve_and_time(home: Path, mode: str, original: str, repeats: int) -> dict[str, list[float]]:
    """One server in ``mode``: a warm-up pass, then the timed passes."""
    set_mode(home, mode, original)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(CACHE / f"auth-{mode}-{port}.log", "w")  # noqa: SIM115 — closed below
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--home", str(home),
                             "--port", str(port), "--paused"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_http(url + "/api/health")
        asyncio.run(render_times(url, 1))  # imports and caches warm in this server
        return asyncio.run(render_times(url, repeats))
    finally:
        stop_server(proc)
        log.close()


def main() -> None:
    """Alternate the two modes and print the medians and their ratio per page."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs of servers")
    parser.add_argument("--repeats", type=int, default=5, help="timed loads of each page")
    args = parser.parse_args()
    home = demo_home()
    ensure_bench_user(home)
    original = (home / "contimg.toml").read_text()
    times: dict[str, dict[str, list[float]]] = {m: {s: [] for s in PAGES} for m in MODES}
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                for slug, ts in serve_and_time(home, mode, original, args.repeats).items():
                    times[mode][slug].extend(ts)
    finally:
        (home / "contimg.toml").write_text(original)
    print(f"{'page':<12} {'signed in s':>11} {'no sign-in s':>12} {'ratio':>6}  (medians, "
          f"{args.rounds * args.repeats} loads each)")
    ratios = []
    for slug in PAGES:
        a = statistics.median(times["password"][slug])
        b = statistics.median(times["read-only"][slug])
        ratios.append(a / b)
        print(f"{slug:<12} {a:>11.3f} {b:>12.3f} {a / b:>6.2f}")
    print(f"all pages: sign-in costs {100 * (statistics.median(ratios) - 1):+.0f} % "
          f"(median of the page ratios; target <= +10 %)")
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
