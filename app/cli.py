"""The `contimg` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.accounts_cli import ACCOUNT_COMMANDS, add_account_commands
from pipeline import __version__
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.instrument.phasing import use_bundled_iers
from pipeline.jobs.runner_config import RunnerConfig
from pipeline.process_tuning import configure_process
from pipeline.settings import load_settings, settings_path, settings_tables, settings_toml
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.simulate.live import LiveSimulator  # heavy: imported when serving a plan


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
    serve.add_argument("--workers", type=int, default=None,
                       help="stage jobs run at once (default [runner] workers, 2)")
    serve.add_argument("--paused", action="store_true",
                       help="start with processing paused (resume from the overview page)")

    process = sub.add_parser("process", parents=[home],
                             help="run the pipeline over what is pending")
    process.add_argument("--once", action="store_true",
                         help="process what is ready now, then exit")
    process.add_argument("--workers", type=int, default=None,
                         help="stage jobs run at once (default [runner] workers, 2)")
    process.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                         help="requeue claims whose heartbeat is older than this (default "
                              "[runner] stale_after_s, 120; lower it to recover a crashed "
                              "run at once)")

    sim = sub.add_parser("simulate", parents=[home],
                         help="write simulated subband files (with a truth file) to incoming/")
    sim.add_argument("--start", metavar="ISO",
                     help="UTC start of the first chunk, e.g. 2026-11-23T12:00:00")
    sim.add_argument("--minutes", type=float, required=True,
                     help="minutes to cover (chunks of 309 s)")
    sim.add_argument("--dec", type=float, metavar="DEG",
                     help="pointing declination on the meridian, degrees")
    sim.add_argument("--transit-of", metavar="NAME",
                     help="centre the run on the last transit of this calibrator (3C286, "
                          "3C48, 3C147, 3C138) before --start or now; --dec defaults to its")
    sim.add_argument("--antennas", type=int, default=96,
                     help="antennas, spread along both arms (default 96, the active ones)")
    sim.add_argument("--channels-per-subband", type=int, default=48, metavar="N",
                     help="channels per subband file, dividing 48 (default 48)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--sefd", type=float, default=5800.0, metavar="JY",
                     help="system equivalent flux density, Jy (default 5800)")
    sim.add_argument("--rfi", action="store_true", help="add narrow-band RFI and bursts")
    sim.add_argument("--no-noise", action="store_true", help="no thermal noise")
    sim.add_argument("--no-gains", action="store_true", help="unit antenna gains")
    sim.add_argument("--transit-after", type=float, metavar="MINUTES",
                     help="with --transit-of: the transit falls this many minutes after the "
                          "start (default: mid-run)")
    sim.add_argument("--if-empty", action="store_true",
                     help="do nothing if incoming/ already holds .hdf5 files or a plan")
    sim.add_argument("--live", action="store_true",
                     help="write nothing now: plan the run in the home, and `contimg serve` "
                          "writes it file by file in the background as a correlator would "
                          "(resuming where an interrupted run stopped)")

    settings = sub.add_parser("settings", parents=[home],
                              help="print the effective settings (<home>/contimg.toml over "
                                   "the defaults)")
    settings.add_argument("--json", action="store_true", help="machine-readable output")

    status = sub.add_parser("status", parents=[home],
                            help="counts per state, jobs and open alerts")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_account_commands(sub, home)
    return parser


class CommandLineError(ContimgError):
    """An option value the pipeline cannot use."""

    def __init__(self, problem: str):
        super().__init__(f"command line: {problem}; change the option")


def runner_config(args: argparse.Namespace, base: RunnerConfig) -> RunnerConfig:
    """The settings' runner config with the command line's --workers/--stale-after over it."""
    changes: dict[str, float] = {}
    if getattr(args, "workers", None) is not None:
        changes["workers"] = args.workers
    if getattr(args, "stale_after", None) is not None:
        # A short lease needs a heartbeat well inside it.
        changes.update(stale_after_s=args.stale_after,
                       heartbeat_s=min(base.heartbeat_s, args.stale_after / 2))
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise CommandLineError(str(exc)) from None


def cmd_serve(args: argparse.Namespace, home: Home) -> int:
    """Run the dashboard and the scheduler until interrupted."""
    from app.server import serve  # Panel is heavy; status and process don't need it
    settings = load_settings(home)  # once, before anything starts: a bad file stops here
    settings = replace(settings, runner=runner_config(args, settings.runner))
    simulator = _start_planned_simulation(home)
    try:
        serve(home, port=args.port, address=args.address, paused=args.paused,
              config=settings.runner, settings=settings)
    finally:
        if simulator is not None:
            simulator.stop()  # Ctrl-C or a failed start: no simulator outlives the server
    return 0


def _start_planned_simulation(home: Home) -> LiveSimulator | None:
    """Start writing the home's unfinished `simulate --live` plan in the background, if any."""
    from pipeline.simulate.live import load_plan, resume_plan  # noqa: PLC0415

    plan = load_plan(home.root)
    if plan is None or plan[1]:
        return None
    from tqdm import tqdm  # noqa: PLC0415

    cfg = plan[0]
    # mininterval: a line every few seconds in a log, not one per file
    bar = tqdm(total=cfg.n_chunks * 16, unit="file", desc="demo data arriving",
               mininterval=5, file=sys.stderr)
    home.ensure()
    return resume_plan(home.root, home.incoming, workers=2,
                       progress=lambda done, total: bar.update(done - bar.n))


def cmd_process(args: argparse.Namespace, home: Home) -> int:
    """Run the pipeline in the foreground: once, or on the scheduler until interrupted."""
    # the stages pull in pyuvdata, casacore and ducc0: only the commands that run them pay
    from pipeline.jobs.default_stages import default_registry  # noqa: PLC0415
    from pipeline.jobs.runner import Runner  # noqa: PLC0415

    settings = load_settings(home)
    config = runner_config(args, settings.runner)
    with Store.open(home) as store:
        runner = Runner(store, home, default_registry(settings), config=config)
        if args.once:
            outcomes = runner.run_once(parallel=True)
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


def cmd_settings(args: argparse.Namespace, home: Home) -> int:
    """Print the effective settings: the home's contimg.toml over the defaults."""
    settings = load_settings(home)
    path = settings_path(home)
    source = str(path) if path.exists() else None
    if args.json:
        print(json.dumps({"file": source, "settings": settings_tables(settings)}, indent=2))
        return 0
    print(f"# effective settings: {source or 'defaults (no ' + str(path) + ')'}")
    print("# copy a section into that file and change what should differ")
    print(settings_toml(settings), end="")
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


def _simulation_window(args: argparse.Namespace) -> tuple[datetime, float]:
    """(start, dec) from --start/--dec, or centred on a calibrator's transit."""
    start = None
    if args.start:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        if start.tzinfo is not None:
            start = start.astimezone(UTC).replace(tzinfo=None)
    if args.transit_of:
        from pipeline.instrument.sky import load_calibrators  # noqa: PLC0415
        from pipeline.instrument.transits import apparent_position, previous_transit  # noqa: PLC0415
        cals = load_calibrators()
        names = {n.upper(): i for i, n in enumerate(cals.names)}
        if args.transit_of.upper() not in names:
            raise ValueError(f"--transit-of {args.transit_of}: not a calibrator in data/ "
                             f"({', '.join(cals.names)})")
        i = names[args.transit_of.upper()]
        ra, cal_dec = float(cals.ra_deg[i]), float(cals.dec_deg[i])
        transit = previous_transit(ra, cal_dec, start or datetime.now(UTC).replace(tzinfo=None))
        lead = args.minutes / 2 if args.transit_after is None else args.transit_after
        if not 0 <= lead <= args.minutes:
            raise ValueError(f"--transit-after must be within 0..{args.minutes:g} minutes, "
                             f"got {lead:g}")
        start = (transit - timedelta(minutes=lead)).replace(microsecond=0)
        # the array points at an apparent declination: the calibrator's, at its transit
        dec = args.dec if args.dec is not None else apparent_position(ra, cal_dec, transit)[1]
        return start, dec
    if args.transit_after is not None:
        raise ValueError("--transit-after goes with --transit-of NAME")
    if start is None or args.dec is None:
        raise ValueError("give --start and --dec, or --transit-of NAME")
    return start, args.dec


def cmd_simulate(args: argparse.Namespace, home: Home) -> int:
    """Write simulated DSA-110-like subband files and their truth into the home's incoming/."""
    from pipeline.simulate import SimConfig, SimulateError, simulate  # noqa: PLC0415 — heavy

    from pipeline.simulate.live import load_plan, plan_path, save_plan  # noqa: PLC0415

    home.ensure()
    existing = sorted(home.incoming.glob("*.hdf5"))
    plan = load_plan(home.root)
    if args.if_empty and (existing or plan is not None):
        what = (f"{len(existing)} .hdf5 files" if existing else "a planned simulation")
        print(f"{home.root} already holds {what}; nothing simulated"
              + ("" if plan is None or plan[1] else
                 " (`contimg serve` goes on writing the planned run)"))
        return 0
    try:
        start, dec = _simulation_window(args)
        config = SimConfig(start=start, minutes=args.minutes, dec_deg=dec,
                           n_antennas=args.antennas,
                           channels_per_subband=args.channels_per_subband, seed=args.seed,
                           sefd_jy=args.sefd, rfi=args.rfi, noise=not args.no_noise,
                           gains=not args.no_gains)
    except ValueError as exc:
        raise SimulateError(f"simulate: {exc}") from None
    if args.live:
        if plan is not None and not plan[1]:
            raise SimulateError(f"simulate: {plan_path(home.root)} already plans an unfinished "
                                "run; `contimg serve` finishes it (remove the file to drop it)")
        save_plan(home.root, config)
        print(f"planned {config.n_chunks} chunks from {config.start.isoformat()} in "
              f"{plan_path(home.root)}; `contimg serve` writes them to {home.incoming} "
              "in the background")
        return 0
    from tqdm import tqdm  # noqa: PLC0415

    with tqdm(total=config.n_chunks * 16, unit="file", desc="simulate",
              disable=None) as bar:
        result = simulate(home.incoming, config,
                          progress=lambda done, total: bar.update(done - bar.n))
    print(f"wrote {len(result.files)} files ({config.n_chunks} chunks) to {home.incoming} "
          f"in {result.seconds:.1f} s; truth: {result.truth}")
    return 0


COMMANDS = {"serve": cmd_serve, "process": cmd_process, "status": cmd_status,
            "settings": cmd_settings, "simulate": cmd_simulate, **ACCOUNT_COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; errors print one line and exit 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per tick otherwise
    use_bundled_iers()  # a closed observatory network: astropy must never try to download
    configure_process()  # before any stage thread starts (pipeline/process_tuning.py says why)
    try:
        home = Home.resolve(getattr(args, "home", None))
        return COMMANDS[args.command](args, home)
    except ContimgError as exc:
        print(f"contimg: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
