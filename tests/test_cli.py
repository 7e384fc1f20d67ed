"""The command line as an operator uses it: status, process, and one-line errors."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import duckdb
from conftest import ServedHome, add_observations, contimg

from pipeline.store import Store


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("contimg: error: ")
    for fragment in fragments:
        assert fragment in last, last


def test_status_json_reports_the_store(home):
    with Store.open(home) as store:
        add_observations(store, 4)
        add_observations(store, 2, state="failed", prefix="f-")
    result = contimg("status", "--json", "--home", str(home.root))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["observations"]["pending"] == 4
    assert report["observations"]["failed"] == 2
    assert report["home"] == str(home.root)


def test_home_from_environment(home):
    with Store.open(home) as store:
        add_observations(store, 1)
    result = contimg("status", env={"CONTIMG_HOME": str(home.root)})
    assert result.returncode == 0, result.stderr
    assert "pending 1" in result.stdout


def test_process_once_on_an_empty_home(home):
    result = contimg("process", "--once", "--home", str(home.root))
    assert result.returncode == 0, result.stderr
    assert "processed: nothing ready" in result.stdout


def test_corrupt_store_is_one_line_and_untouched(home):
    home.ensure()
    home.db.write_bytes(b"\x00garbage" * 1000)
    before = home.db.read_bytes()
    result = contimg("status", "--home", str(home.root))
    assert_one_line_error(result, str(home.db), "not a readable DuckDB database")
    assert home.db.read_bytes() == before


def test_newer_schema_is_one_line_and_untouched(home):
    Store.open(home).close()
    with duckdb.connect(str(home.db)) as con:
        con.execute("INSERT INTO schema_version VALUES (42, now()::TIMESTAMP)")
    before = home.db.read_bytes()
    result = contimg("serve", "--home", str(home.root), "--port", "0")
    assert_one_line_error(result, "schema version 42 is newer", "upgrade contimg")
    assert home.db.read_bytes() == before


def test_unwritable_home_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = contimg("status", "--home", str(blocker / "home"))
    assert_one_line_error(result, str(blocker / "home"), "cannot create folders")


def test_port_in_use_is_one_line(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = contimg("serve", "--home", str(home.root), "--port", str(port))
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc: no psutil in the environment)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_serve_answers_while_the_planned_simulation_arrives_and_stops_it(home):
    # 3 chunks of 6 antennas: the dashboard must not wait for the data's source
    r = contimg("simulate", "--home", str(home.root), "--start", "2026-11-23T12:00:00",
                "--dec", "33", "--minutes", "15", "--antennas", "6",
                "--channels-per-subband", "1", "--live", "--if-empty")
    assert r.returncode == 0 and "planned 3 chunks" in r.stdout, r.stderr
    assert not list(home.incoming.glob("*.hdf5"))
    served = ServedHome(home)
    try:
        # health answered (ServedHome waited for it) while most of the run is still to come
        assert len(list(home.incoming.glob("*.hdf5"))) < 48
        assert not json.loads((home.root / "simulation-plan.json").read_text())["finished"]
        workers = children(served.proc.pid)
        assert len(workers) >= 2   # the simulator's processes, under the server
    finally:
        assert served.stop() == 0, served.log.read_text()
    # Ctrl-C left nothing behind (spawn's resource tracker goes when its pipe closes)
    deadline = time.monotonic() + 10
    while [p for p in workers if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in workers if alive(p)}
    assert not left
    # a second plan on this home is refused politely by --if-empty
    r = contimg("simulate", "--home", str(home.root), "--start", "2026-11-23T12:00:00",
                "--dec", "33", "--minutes", "15", "--live", "--if-empty")
    assert r.returncode == 0 and "nothing simulated" in r.stdout
