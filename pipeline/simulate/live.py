"""Simulated data arriving live: a planned run written file by file in the background.

``contimg simulate --live`` records the run (its resolved :class:`SimConfig`) as a plan
in the home; ``contimg serve`` finds an unfinished plan and writes it with a pool of
worker processes, subbands in time order, each file under a hidden temporary name renamed
into place (:func:`~pipeline.simulate.writer.write_atomic`), so ingest sees chunks arrive
as a correlator's would and never a half file. A file already there is never written
again: a run interrupted anywhere resumes where it stopped, without duplicates. When every
file is there the truth file is written and the plan marked finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.instrument.telescope import N_SUBBANDS
from pipeline.simulate.run import (
    SimConfig,
    file_names,
    name_offsets,
    plan_chunk,
    run_setup,
    write_subband,
    write_truth,
)
from pipeline.simulate.writer import offline_iers

log = logging.getLogger(__name__)

PLAN_NAME = "simulation-plan.json"
INTERRUPTED = 130  # a worker's exit code after Ctrl-C, as a shell's
_PATH_FIELDS = ("layout_path", "catalog_path", "calibrators_path")


def plan_path(home_root: Path) -> Path:
    """Where a home keeps its live simulation plan."""
    return Path(home_root) / PLAN_NAME


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # a plan is never half-written


def save_plan(home_root: Path, cfg: SimConfig) -> Path:
    """Record ``cfg`` as the home's live simulation plan (not yet finished)."""
    if cfg.extra_sources is not None:
        raise ValueError("a live simulation plan cannot carry extra sources")
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "extra_sources"}
    config["start"] = cfg.start.isoformat()
    for name in _PATH_FIELDS:
        config[name] = str(config[name])
    path = plan_path(home_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"config": config, "finished": False})
    return path


def load_plan(home_root: Path) -> tuple[SimConfig, bool] | None:
    """(config, finished) of the home's plan, or None when it has none."""
    path = plan_path(home_root)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    config: dict[str, Any] = dict(data["config"])
    config["start"] = datetime.fromisoformat(config["start"])
    for name in _PATH_FIELDS:
        config[name] = Path(config[name])
    return SimConfig(**config), bool(data.get("finished"))


def _mark_finished(home_root: Path) -> None:
    path = plan_path(home_root)
    data = json.loads(path.read_text())
    _write_json(path, {**data, "finished": True})


def missing_files(incoming: Path, cfg: SimConfig) -> list[tuple[int, int]]:
    """(chunk, subband) of every planned file not yet in ``incoming``, in time order."""
    offsets = name_offsets(cfg)
    out = []
    for k in range(cfg.n_chunks):
        names = file_names(cfg, offsets, k)
        out += [(k, sb) for sb in range(N_SUBBANDS) if not (incoming / names[sb]).exists()]
    return out


def _prepare_resume(incoming: Path, cfg: SimConfig, missing: list[tuple[int, int]]) -> None:
    """Drop stale temporaries; make an interrupted chunk's files look freshly arrived.

    Ingest registers a group short of subbands as partial once its newest file is older
    than its timeout; a chunk interrupted long ago would be registered without the
    subbands about to be written, and those then quarantined as late.
    """
    for tmp in incoming.glob(".*.hdf5.tmp"):
        tmp.unlink(missing_ok=True)
    offsets = name_offsets(cfg)
    for k in sorted({k for k, _ in missing}):
        for name in file_names(cfg, offsets, k):
            with contextlib.suppress(FileNotFoundError):
                os.utime(incoming / name)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when its parent dies (no orphans after a kill -9)."""
    import ctypes  # noqa: PLC0415

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(0)


class _CtrlC:
    """A worker's SIGINT: raise at once, except while a file is being written.

    Raised inside HDF5's writer, KeyboardInterrupt could leave the library's state broken
    (a worker died of SIGSEGV on exit) or be swallowed by a finalizer running at that
    moment (the worker went on and wrote the whole run); so during a write it is only
    noted, and the worker stops as soon as that file is complete.
    """

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.writing = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        self.asked.set()
        if not self.writing:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Stop here if Ctrl-C came during the last write."""
        if self.asked.is_set():
            raise KeyboardInterrupt


def _worker(cfg: SimConfig, incoming: Path, tasks: Any, done: Any, parent_pid: int,
            nice: int, file_interval_s: float = 0.0) -> None:
    """A pool process: set the run up once, then write the subbands it is handed.

    Ctrl-C in a terminal reaches the whole process group: a worker then stops at once
    (or when the file it is writing is complete), not after the server has waited for its
    running stage jobs; a signal to the server alone stops the workers from there.
    """
    _die_with_parent(parent_pid)
    if nice:
        os.nice(nice)  # the dashboard and the pipeline come before the data's source
    ctrl_c = _CtrlC()
    try:
        with offline_iers():
            setup = run_setup(cfg)
            chunk = None
            while (task := tasks.get()) is not None:
                ctrl_c.check()
                k, sb = task
                if chunk is None or chunk.k != k:
                    chunk = plan_chunk(cfg, setup, k)
                began = time.monotonic()
                ctrl_c.writing = True
                try:
                    path = write_subband(cfg, setup, chunk, sb, incoming)
                finally:
                    ctrl_c.writing = False
                done.put(("file", k, sb, path.name))
                ctrl_c.check()
                ctrl_c.asked.wait(max(0.0, file_interval_s - (time.monotonic() - began)))
                ctrl_c.check()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 — reported to the parent, which logs and stops
        done.put(("error", repr(exc)))


def _truth_worker(cfg: SimConfig, incoming: Path, home_root: Path, parent_pid: int,
                  nice: int) -> None:
    """Write the truth file, then mark the plan finished."""
    _die_with_parent(parent_pid)
    if nice:
        os.nice(nice)
    try:
        write_truth(incoming, cfg)
        _mark_finished(home_root)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)


class LiveSimulator:
    """Write a home's planned simulation in the background; ``stop`` ends every worker."""

    def __init__(self, home_root: Path, incoming: Path, cfg: SimConfig, *, workers: int = 2,
                 nice: int = 5, progress: Callable[[int, int], None] | None = None,
                 file_interval_s: float = 0.0):
        self.home_root = Path(home_root)
        self.incoming = Path(incoming)
        self.cfg = cfg
        self.workers = workers
        self.nice = nice
        self.progress = progress
        #: the least time each worker takes per file: a correlator's pace rather than the
        #: CPU's (0: as fast as it can)
        self.file_interval_s = file_interval_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._procs: list[Any] = []
        self._lock = threading.Lock()
        # spawn, not fork: the server process has threads (scheduler, IO loop) by now
        self._ctx = mp.get_context("spawn")
        self._thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        """True once every file and the truth are written."""
        return self._finished.is_set()

    def start(self) -> LiveSimulator:
        """Start the workers for what is missing and a thread that follows them."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        missing = missing_files(self.incoming, self.cfg)
        total = self.cfg.n_chunks * N_SUBBANDS
        if missing:
            _prepare_resume(self.incoming, self.cfg, missing)
            log.info("simulator: %d of %d files to write (%d chunks) into %s", len(missing),
                     total, len({k for k, _ in missing}), self.incoming)
        ctx = self._ctx
        tasks, done = ctx.Queue(), ctx.Queue()
        # kept: a started Process drops its args, and a queue collected before a spawned
        # child has unpickled it leaves the child without its semaphore
        self._queues = (tasks, done)
        for task in missing:
            tasks.put(task)
        n = min(self.workers, len(missing))
        for _ in range(n):
            tasks.put(None)
        self._procs = [ctx.Process(target=_worker, name=f"contimg-simulate-{i}", daemon=True,
                                   args=(self.cfg, self.incoming, tasks, done, os.getpid(),
                                         self.nice, self.file_interval_s))
                       for i in range(n)]
        with self._lock:
            for p in self._procs:
                p.start()
        self._thread = threading.Thread(target=self._follow, args=(missing, total, done),
                                        name="contimg-simulate", daemon=True)
        self._thread.start()
        return self

    def _follow(self, missing: list[tuple[int, int]], total: int, done: Any) -> None:
        import queue  # noqa: PLC0415

        left = {k: 0 for k, _ in missing}
        for k, _ in missing:
            left[k] += 1
        written = total - len(missing)
        if self.progress is not None:
            self.progress(written, total)
        while written < total and not self._stop.is_set():
            try:
                msg = done.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in self._procs):
                    if all(p.exitcode == INTERRUPTED for p in self._procs):
                        log.info("simulator interrupted with %d of %d files written; the "
                                 "next `contimg serve` goes on from there", written, total)
                        return
                    self.error = self.error or "simulator workers ended early"
                    break
                continue
            if msg[0] == "error":
                self.error = msg[1]
                break
            _, k, _, _ = msg
            written += 1
            left[k] -= 1
            if self.progress is not None:
                self.progress(written, total)
            if left[k] == 0:
                log.info("simulator: chunk %d of %d written (%s)", k + 1, self.cfg.n_chunks,
                         self.cfg.chunk_start(k).isoformat(timespec="seconds"))
        if self._stop.is_set():
            return  # stop() ends the workers
        if self.error is not None:
            log.error("simulator stopped: %s", self.error)
            self._end_workers()
            return
        self._end_workers(timeout=10)
        # the truth re-plans every chunk (seconds of NumPy): in a process of its own, not
        # in the server's, whose IO loop would wait on the GIL meanwhile
        truth = self._ctx.Process(target=_truth_worker, name="contimg-simulate-truth",
                                  daemon=True, args=(self.cfg, self.incoming, self.home_root,
                                                     os.getpid(), self.nice))
        with self._lock:
            if self._stop.is_set():
                return
            truth.start()
            self._procs = [truth]
        truth.join()
        if truth.exitcode == INTERRUPTED:
            log.info("simulator interrupted before the truth file; the next `contimg serve` "
                     "writes it")
        elif truth.exitcode == 0:
            log.info("simulator: all %d chunks written; truth in %s", self.cfg.n_chunks,
                     self.incoming / "truth")
            self._finished.set()
        elif not self._stop.is_set():
            self.error = f"writing the truth file failed (exit code {truth.exitcode})"
            log.error("simulator: %s", self.error)

    def _end_workers(self, timeout: float = 0.0) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            p.join(timeout)
            if p.is_alive():
                p.terminate()  # a half-written file stays under its hidden temporary name
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to finish; True if it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished

    def stop(self) -> None:
        """Stop now: end the workers (what they had not renamed into place is not there)."""
        with self._lock:
            self._stop.set()
        self._end_workers()
        if self._thread is not None:
            self._thread.join(10)

    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and the log)."""
        with self._lock:
            return [p.pid for p in self._procs if p.pid is not None]


def resume_plan(home_root: Path, incoming: Path, **kw: Any) -> LiveSimulator | None:
    """Start writing the home's unfinished plan; None when it has none or it is finished."""
    plan = load_plan(home_root)
    if plan is None or plan[1]:
        return None
    return LiveSimulator(home_root, incoming, plan[0], **kw).start()


__all__ = ["LiveSimulator", "load_plan", "missing_files", "plan_path",
           "resume_plan", "save_plan"]
