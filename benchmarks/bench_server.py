"""Overview first render in Chromium and /metrics response time on a busy store.

Targets (issue #2): overview first render <= 2 s, /metrics <= 50 ms. Prints figures; it
asserts nothing. Run: .venv/bin/python benchmarks/bench_server.py [--observations N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import CHROMIUM, CHROMIUM_ARGS, ServedHome  # noqa: E402

from pipeline.home import Home  # noqa: E402
from pipeline.jobs.states import STATES  # noqa: E402
from pipeline.store import Store  # noqa: E402


def fill(home: Home, n_obs: int) -> None:
    """A store as after weeks of running: observations in every state, jobs, images."""
    t0 = datetime(2026, 1, 1)
    with Store.open(home) as store:
        cur = store._cur  # bulk load for the benchmark only
        cur.execute(
            "INSERT INTO observations (id, start_utc, mid_mjd, dec_deg, n_subbands, state, "
            "created_utc, updated_utc) SELECT 'obs-' || i, ?::TIMESTAMP + i * INTERVAL 5 MINUTE, "
            "61000 + i / 288.0, 33.0, 16, (?::VARCHAR[])[1 + i % ?], now(), now() "
            "FROM range(?) t(i)", [t0, list(STATES), len(STATES), n_obs])
        cur.execute(
            "INSERT INTO jobs (observation_id, stage, state, attempts, created_utc, started_utc, "
            "finished_utc, duration_s) SELECT 'obs-' || i, s.stage, 'done', 1, now(), now(), "
            "now(), 1 + (i * 7919 % 600) / 10.0 FROM range(?) t(i), "
            "(VALUES ('convert'), ('calibrate'), ('image'), ('measure')) s(stage)", [n_obs])
        cur.execute(
            "INSERT INTO images (observation_id, path, mid_mjd, rms_jy, created_utc) "
            "SELECT 'obs-' || i, '/img/' || i || '.fits', 61000 + i / 288.0, "
            "1e-4 + (i % 97) * 1e-5, now() FROM range(?) t(i)", [n_obs // 2])


def time_metrics(url: str, n: int = 100) -> dict[str, float]:
    for _ in range(5):
        urllib.request.urlopen(url).read()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        urllib.request.urlopen(url).read()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(0.95 * n) - 1]}


def time_overview(base: str, runs: int = 5) -> list[float]:
    from playwright.sync_api import expect, sync_playwright
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(runs + 1):
            page = browser.new_page()
            t = time.perf_counter()
            page.goto(base + "/overview")
            expect(page.locator('.state-card[data-state="failed"] .count')).not_to_have_text(
                "", timeout=30_000)
            expect(page.locator(".recent-jobs")).to_contain_text("done", timeout=30_000)
            out.append(time.perf_counter() - t)
            page.close()
        browser.close()
    return out[1:]  # the first run also warms Chromium's own caches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--observations", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home.resolve(Path(tmp) / "home")
        t = time.perf_counter()
        fill(home, args.observations)
        print(f"store: {args.observations} observations, {4 * args.observations} jobs, "
              f"{args.observations // 2} images (filled in {time.perf_counter() - t:.1f} s)")
        served = ServedHome(home, "--paused")
        try:
            metrics = time_metrics(served.url + "/metrics")
            health = time_metrics(served.url + "/api/health")
            static = time_metrics(served.url + "/static/js/bokeh.min.js", n=30)
            render = time_overview(served.url)
        finally:
            served.stop()
    print(f"/metrics      p50 {metrics['p50']:6.1f} ms  p95 {metrics['p95']:6.1f} ms  "
          f"(target <= 50 ms)")
    print(f"/api/health   p50 {health['p50']:6.1f} ms  p95 {health['p95']:6.1f} ms")
    print(f"static bokeh.min.js p50 {static['p50']:6.1f} ms  (peer: a static file, same server)")
    print(f"/metrics / static-file ratio: {metrics['p50'] / static['p50']:.1f}x")
    print(f"overview first render in Chromium: median {statistics.median(render):.2f} s, "
          f"max {max(render):.2f} s over {len(render)} runs (target <= 2 s)")


if __name__ == "__main__":
    main()
