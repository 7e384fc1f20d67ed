"""The `contimg` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.runner import Runner, RunnerConfig
from pipeline.stages import default_registry
from pipeline.store import Store


def _home_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR",
                        help="runtime home (default $CONTIMG_HOME or ./var)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, each accepting --home."""
    home = _home_parent()
    parser = argparse.ArgumentParser(prog="contimg", parents=[home], description=(
        "Continuum imaging pipeline and dashboard for a DSA-110-style array."))
    parser.add_argument("--version", action="version", version=f"contimg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[home], help="dashboard + scheduler + /metrics + /api")
    serve.add_argument("--port", type=int, default=5006, help="TCP port (default 5006)")
    serve.add_argument("--address", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--workers", type=int, default=2, help="stage jobs run at once")
    serve.add_argument("--paused", action="store_true",
                       help="start with processing paused (resume from the overview page)")

    process = sub.add_parser("process", parents=[home],
                             help="run the pipeline over what is pending")
    process.add_argument("--once", action="store_true",
                         help="process what is ready now, then exit")
    process.add_argument("--workers", type=int, default=2, help="stage jobs run at once")

    status = sub.add_parser("status", parents=[home],
                            help="counts per state, jobs and open alerts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cmd_serve(args: argparse.Namespace, home: Home) -> int:
    """Run the dashboard and the scheduler until interrupted."""
    from app.server import serve  # Panel is heavy; status and process don't need it
    serve(home, port=args.port, address=args.address, paused=args.paused,
          config=RunnerConfig(workers=args.workers))
    return 0


def cmd_process(args: argparse.Namespace, home: Home) -> int:
    """Run the pipeline in the foreground: once, or on the scheduler until interrupted."""
    config = RunnerConfig(workers=args.workers)
    with Store.open(home) as store:
        runner = Runner(store, home, default_registry(), config=config)
        if args.once:
            outcomes = runner.run_once()
            counts = store.counts_by_state()
            print("processed: " + (", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
                                   or "nothing ready"))
            print("now: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
            return 0
        import threading
        runner.start()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            runner.stop(wait=True)
    return 0


def cmd_status(args: argparse.Namespace, home: Home) -> int:
    """Print observations per state, jobs and open alerts."""
    with Store.open(home) as store:
        report = {"home": str(home.root), "schema_version": store.schema_version,
                  "observations": store.counts_by_state(), "jobs": store.jobs_by_state(),
                  "alerts_open": store.open_alerts_by_severity()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"home {report['home']} (schema {report['schema_version']})")
    for title in ("observations", "jobs", "alerts_open"):
        figures = ", ".join(f"{k} {v}" for k, v in report[title].items())
        print(f"{title.replace('_', ' ')}: {figures}")
    return 0


COMMANDS = {"serve": cmd_serve, "process": cmd_process, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; errors print one line and exit 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per tick otherwise
    try:
        home = Home.resolve(getattr(args, "home", None))
        return COMMANDS[args.command](args, home)
    except ContimgError as exc:
        print(f"contimg: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
