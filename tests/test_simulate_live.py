"""The live simulator: a planned run written file by file by background processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import h5py
import pytest

from pipeline.home import Home
from pipeline.ingest.ingester import Ingester
from pipeline.jobs.contract import TaskContext
from pipeline.simulate import SimConfig
from pipeline.simulate.live import load_plan, missing_files, resume_plan, save_plan
from pipeline.store import Store

# two chunks, six antennas, one channel per subband, no catalog: seconds, not minutes
CFG = SimConfig(start=datetime(2026, 11, 23, 12), minutes=10, dec_deg=33.0, n_antennas=6,
                channels_per_subband=1, seed=5, catalog=False)


class Watcher(threading.Thread):
    """Opens every final-named file as soon as it appears: a half file would not open."""

    def __init__(self, incoming):
        super().__init__(daemon=True)
        self.incoming = incoming
        self.opened: set[str] = set()
        self.broken: list[str] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for path in self.incoming.glob("*.hdf5"):
                if path.name in self.opened:
                    continue
                try:
                    with h5py.File(path, "r") as f:
                        f["Data/visdata"][()]
                    self.opened.add(path.name)
                except OSError as exc:
                    self.broken.append(f"{path.name}: {exc}")
            time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_plan_round_trips(tmp_path):
    save_plan(tmp_path, CFG)
    cfg, finished = load_plan(tmp_path)
    assert cfg == CFG and not finished
    assert len(missing_files(tmp_path / "incoming", CFG)) == 32


def test_interrupted_run_resumes_to_whole_groups_that_ingest_registers(tmp_path):
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    # Tiny files take a millisecond each: a loaded fresh clone's run saw the whole run
    # written between this test seeing the first files and its interrupt. So the workers
    # are paced as a correlator (0.15 s a file) and frozen (SIGSTOP) from the simulator's
    # own follower thread the moment it hears of the third file, not after a poll here.
    cfg = CFG
    total = cfg.n_chunks * 16
    save_plan(home.root, cfg)
    watcher = Watcher(home.incoming)
    watcher.start()
    pids: list[int] = []
    frozen = threading.Event()

    def freeze_at_three(written: int, _total: int) -> None:
        if written >= 3 and pids and not frozen.is_set():
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            frozen.set()

    sim = resume_plan(home.root, home.incoming, workers=2, file_interval_s=0.15,
                      progress=freeze_at_three)
    pids.extend(sim.pids())
    assert len(pids) == 2
    assert frozen.wait(120), "the simulator wrote no three files in 120 s"
    at_freeze = len(list(home.incoming.glob("*.hdf5")))
    assert 3 <= at_freeze < total
    # Ctrl-C in a terminal reaches every process of the group: the workers stop at once,
    # by themselves, mid-run, with no half file under a final name nor a temporary left
    for pid in pids:
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGCONT)
    assert sim.wait(30) is False, f"finished anyway ({at_freeze} files when frozen)"
    assert sim.error is None
    sim.stop()
    assert not any(alive(p) for p in pids)
    first = {p.name for p in home.incoming.glob("*.hdf5")}
    assert 3 <= len(first) < total
    assert not list(home.incoming.glob(".*.tmp"))
    assert not load_plan(home.root)[1]
    left = missing_files(home.incoming, cfg)
    assert len(left) == total - len(first)

    sim = resume_plan(home.root, home.incoming, workers=2)
    assert sim.wait(90), sim.error
    watcher.done.set()
    watcher.join()
    assert watcher.broken == []
    names = sorted(p.name for p in home.incoming.glob("*.hdf5"))
    assert len(names) == total and first <= set(names)   # nothing written twice or lost
    assert not list(home.incoming.glob(".*.tmp"))
    assert load_plan(home.root)[1]
    assert len(list((home.incoming / "truth").glob("*.json"))) == 1
    assert resume_plan(home.root, home.incoming) is None   # finished: nothing more to do

    with Store.open(home) as store:
        ingester = Ingester()
        registered = sum(ingester.scan(TaskContext(store=store, home=home,
                                                   now=datetime.now(UTC).replace(tzinfo=None)))
                         for _ in range(2))
        assert registered == cfg.n_chunks
        counts = store.counts_by_state()
    assert counts["pending"] == cfg.n_chunks


def test_a_plan_carries_no_extra_sources(tmp_path):
    with pytest.raises(ValueError, match="extra sources"):
        save_plan(tmp_path, replace(CFG, extra_sources=object()))
    assert not os.path.exists(tmp_path / "simulation-plan.json")
