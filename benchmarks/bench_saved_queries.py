"""How long the saved-query list takes with 10 000 queries in a real store.

Fills a temporary home with ``--n`` queries (default 10 000) from 50 owners over the three
pages and visibilities, then times ``Store.saved_queries(reader=..., page=...)`` and the
saved-queries panel's list refresh (the store query plus building the list's options),
and the Saved queries page's whole list (every page). Prints p50/p95 in ms beside the
load average (target: ≤ 50 ms); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from timing import p50_p95_ms  # noqa: E402


def main() -> None:
    from tqdm import tqdm

    from pipeline.actor import Actor
    from pipeline.store import Store
    from pipeline.store.saved_queries import PAGES, VISIBILITIES
    from views.queries_page import queries_html
    from views.saved_queries_panel import SavedQueriesPanel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--owners", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    t0 = datetime(2026, 12, 1)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "home") as store:
        for i in tqdm(range(args.n), desc="saving queries", unit="q", mininterval=2):
            store.save_query(owner=f"user{i % args.owners}", page=PAGES[i % 3],
                             name=f"query {i}", visibility=VISIBILITIES[(i // 3) % 3],
                             spec={"eta_min": 1.0 + i % 7, "sort_by": "eta"},
                             description=f"benchmark query {i}",
                             now=t0 + timedelta(seconds=i))
        reader = "user7"
        listed = len(store.saved_queries(reader=reader, page="sources"))
        store_p = p50_p95_ms(lambda: store.saved_queries(reader=reader, page="sources"),
                         args.repeat)
        panel = SavedQueriesPanel(store=store, actor=Actor(name=reader, role="viewer"),
                                  page="sources", current_spec=dict, apply_spec=lambda s: None)
        panel_p = p50_p95_ms(panel.refresh, args.repeat)
        all_p = p50_p95_ms(lambda: store.saved_queries(reader=reader), args.repeat)
        one_p = p50_p95_ms(lambda: store.saved_query(5000, reader=reader), args.repeat)
        every = store.saved_queries(reader=reader)
        html_p = p50_p95_ms(lambda: queries_html(every, reader), max(5, args.repeat // 8))
    load = os.getloadavg()
    print(f"{args.n} saved queries, {args.owners} owners; {reader} sees {listed} on sources; "
          f"load average {load[0]:.1f} {load[1]:.1f} on {os.cpu_count()} CPUs")
    for label, (p50, p95) in (("store.saved_queries(reader, page)", store_p),
                              ("panel list refresh", panel_p),
                              ("store.saved_queries(reader) (all pages)", all_p),
                              ("store.saved_query(id) (one, for scale)", one_p),
                              (f"queries page table ({len(every)} rows)", html_p)):
        print(f"  {label:42s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    print(f"  panel refresh / store query (p50): {panel_p[0] / store_p[0]:.2f}; target ≤ 50 ms")


if __name__ == "__main__":
    main()
