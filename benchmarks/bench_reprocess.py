"""How long planning (and launching) a reprocess of 10 000 observations takes in a real store.

Fills a temporary home with ``--n`` complete observations (default 10 000), each with its
four done jobs, then times ``Reprocessor.plan`` over every observation, over a time range
and over a declination strip with an override, and one ``launch`` of everything (the
run's rows, the set-aside jobs and the state change, one transaction). Prints p50/p95 in
ms beside the load average (target: plan ≤ 1 s); asserts nothing.
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


def main() -> None:
    import pandas as pd

    from pipeline.actor import Actor
    from pipeline.jobs.runner_state import RunnerState
    from pipeline.jobs.states import STAGES
    from pipeline.operator_actions import OperatorActions
    from pipeline.reprocess import Reprocessor
    from pipeline.store import Store
    from pipeline.store.reprocess import Selection

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    t0 = datetime(2026, 12, 1)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "home") as store:
        obs = pd.DataFrame({
            "id": [f"obs{i:06d}" for i in range(args.n)],
            "start_utc": [t0 + timedelta(seconds=309 * i) for i in range(args.n)],
            "dec_deg": [20.0 + (i % 40) for i in range(args.n)]})
        cur = store._cur
        cur.register("bench_obs", obs)
        cur.execute("INSERT INTO observations (id, start_utc, mid_mjd, dec_deg, n_subbands, "
                    "state, created_utc, updated_utc) SELECT id, start_utc, 61000.0, dec_deg, "
                    "16, 'complete', start_utc, start_utc FROM bench_obs")
        for spec in STAGES:
            cur.execute("INSERT INTO jobs (observation_id, stage, state, attempts, created_utc) "
                        "SELECT id, ?, 'done', 1, start_utc FROM bench_obs", [spec.name])
        cur.unregister("bench_obs")
        rp = Reprocessor(store, OperatorActions(store, RunnerState()))
        cases = {
            "all, from image": (Selection(), "image", None),
            "a day, from calibrate": (Selection(from_utc=t0, to_utc=t0 + timedelta(days=1)),
                                      "calibrate", {"calibration.flagger": "robust"}),
            "dec strip, imaging.niter": (Selection(dec_min=30.0, dec_max=35.0), "image",
                                         {"imaging": {"niter": 500}}),
        }
        load = os.getloadavg()[0]
        print(f"{args.n} observations; load average {load:.2f} on {os.cpu_count()} cores")
        for name, (sel, stage, ov) in cases.items():
            p50, p95 = p50_p95_ms(lambda s=sel, st=stage, o=ov: rp.plan(s, st, o), args.repeat)
            plan = rp.plan(sel, stage, ov)
            print(f"plan {name:26s} {plan.eligible:6d} obs {plan.jobs:6d} jobs: "
                  f"p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (target <= 1000 ms)")
        t1 = time.perf_counter()
        run_id, n = rp.launch(Actor(name="bench", role="operator"), Selection(), "image")
        print(f"launch of all {n} from image (run {run_id}): "
              f"{(time.perf_counter() - t1) * 1e3:.0f} ms")
        t1 = time.perf_counter()
        dropped = rp.cancel(Actor(name="bench", role="operator"), run_id)
        print(f"cancel ({dropped} restored): {(time.perf_counter() - t1) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
