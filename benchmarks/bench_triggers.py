"""Trigger evaluation overhead per scheduler tick with 100 triggers in a real store.

Fills a temporary home with ``--n`` triggers (default 100: 60 cron, 40 event over the five
event kinds) and 1 000 observations, then times ``TriggerService.tick`` at an injected
time with nothing due and nothing changed (the tick every second costs this), after an
observation completes (every event trigger looks for new subjects), and after one trigger
is edited (the rows are reread). The completing observation's and the edit's own writes,
and the actions the firings start, are outside the time. Beside them, a one-row store
query (``SELECT 1``) in the same run: under load the ratio says more than the
milliseconds. Prints p50/p95 in ms and the load average (target: ≤ 5 ms a tick); asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from timing import p50_p95_ms  # noqa: E402

T0 = datetime(2026, 3, 1, 12, 0, 20)


def main() -> None:
    """Print the figures."""
    from tqdm import tqdm

    from pipeline.store import Store
    from pipeline.triggers.actions import ACTION_FNS
    from pipeline.triggers.service import TriggerService
    from pipeline.triggers.spec import EVENT_KINDS, TriggerSpec

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="triggers")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "home") as store:
        kinds = list(EVENT_KINDS)
        for i in tqdm(range(args.n), desc="triggers", leave=False):
            if i % 5 < 3:
                spec = TriggerSpec(name=f"cron {i}", kind="cron", cron=f"{i % 60} */2 * * *",
                                   action="reprocess", time_zone="America/Los_Angeles")
            else:
                kind = kinds[i % len(kinds)]
                params = ({"dec_min": 20, "dec_max": 40, "n": 10}
                          if kind == "new images in strip" else {})
                spec = TriggerSpec(name=f"event {i}", kind="event", event_kind=kind,
                                   event_params=params, action="reprocess")
            store.add_trigger(spec, owner="otto", now=T0)
        for i in tqdm(range(1000), desc="observations", leave=False):
            now = T0 - timedelta(minutes=5 * i)
            store.add_observation(obs_id=f"o{i}", start_utc=now, mid_mjd=61000 + i / 288,
                                  dec_deg=30.0, n_subbands=16, now=now, state="complete")
        svc = TriggerService(store, autotick=False,
                             actions={**ACTION_FNS, "reprocess": lambda *a: "benchmark"})
        svc.tick(T0)
        svc.wait_idle()
        step = timedelta(milliseconds=1)  # never reaches a fire time: nothing due

        def idle(i: int = 0) -> None:
            svc.tick(T0 + i * step)

        def completion_at(i: int) -> datetime:
            return T0 + timedelta(seconds=1) + (i + 1) * step

        def complete_one(i: int) -> None:  # untimed: the runner's write, not the tick's
            now = completion_at(i)
            store.add_observation(obs_id=f"new{i}-{time.perf_counter_ns()}", start_utc=now,
                                  mid_mjd=61010.0, dec_deg=30.0, n_subbands=16, now=now,
                                  state="complete")

        def after_completion(i: int = -1) -> None:
            svc.tick(completion_at(i))  # finds it and starts its watchers' firings

        def edit_one(i: int) -> None:
            store.set_trigger_enabled(1, bool(i % 2), now=T0)

        def after_edit(i: int = -1) -> None:
            svc.tick(T0 + (i + 1) * step)

        def select_one(i: int = 0) -> None:
            store._cur.execute("SELECT 1").fetchone()

        cases = [("SELECT 1 (peer)", select_one, args.repeat, {}),
                 ("tick, nothing due or changed", idle, args.repeat, {}),
                 ("tick after an observation completes", after_completion, 50,
                  {"before": complete_one, "after": lambda i: svc.wait_idle()}),
                 ("tick after a trigger is edited", after_edit, 50, {"before": edit_one})]
        rows = [(what, *p50_p95_ms(fn, n, indexed=True, **kw)) for what, fn, n, kw in cases]

    load = os.getloadavg()[0]
    print(f"triggers: {args.n} ({args.n * 3 // 5} cron, {args.n - args.n * 3 // 5} event), "
          f"load average {load:.2f} on {os.cpu_count()} cores")
    peer = rows[0][1]
    for name, p50, p95 in rows:
        print(f"  {name:40s} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  ({p50 / peer:6.0f}x peer)")
    print("  target: <= 5 ms a tick (the writes that set a tick up are not timed)")


if __name__ == "__main__":
    main()
