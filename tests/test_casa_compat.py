"""CASA opens our Measurement Sets and applies our calibration tables (DESIGN: "Files other
programs must open").

CASA never runs in this process (it bundles its own casacore, this process imports
python-casacore): tests/casa_child.py runs it in a child and answers with one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_IMAGING, contimg, write_settings

from pipeline.calibration.solve_ms import solve_calibrator_ms

CHILD = Path(__file__).with_name("casa_child.py")
CASA_PACKAGES = ("casatools", "casatasks", "casadata", "six")
RTOL = 1e-4   # float32 arithmetic on both sides, different order of operations


def _require_casa() -> None:
    # find_spec locates the packages without importing them (no CASA in this process)
    missing = [p for p in CASA_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed in {sys.prefix}: run `make test`, "
                    "which installs the test extra (casatools, casatasks, casadata, six)",
                    pytrace=False)


@pytest.fixture(scope="module")
def casa(tmp_path_factory) -> dict:
    """A solved noiseless 3C48 transit, and CASA's answer about it."""
    _require_casa()
    root = tmp_path_factory.mktemp("casa")
    home = root / "home"
    sim = contimg("simulate", "--home", str(home), "--transit-of", "3C48", "--minutes", "5",
                  "--antennas", "8", "--channels-per-subband", "2", "--seed", "5",
                  "--no-noise")
    assert sim.returncode == 0, sim.stderr
    write_settings(home, imaging=FAST_IMAGING)  # only the MS and tables are compared here
    run = contimg("process", "--once", "--home", str(home))
    assert run.returncode == 0, run.stderr
    (src,) = sorted(home.glob("ms/*.ms"))
    ms = Path(shutil.copytree(src, root / "solved" / src.name))
    result = solve_calibrator_ms(ms, calibrator="3C48", out_dir=root / "cal")
    child = subprocess.run(
        [sys.executable, str(CHILD), str(ms), str(result.b_table), str(result.g_table),
         str(root / "casa")],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert child.returncode == 0, f"CASA child failed:\n{child.stderr[-4000:]}"
    lines = child.stdout.splitlines()
    assert len(lines) == 1, f"the child's stdout is not one JSON line:\n{child.stdout[-2000:]}"
    answer = json.loads(lines[0])
    print(f"CASA: {answer}")
    return answer


def test_casa_runs_offline_on_casadata(casa):
    # our casasiteconfig.py was read: measures from casadata, never a download
    import casadata  # noqa: PLC0415  (plain data package, no casacore)

    assert casa["casatools"].startswith("6.7.0")
    assert casa["config_files"][-1].endswith("casasiteconfig.py")
    assert Path(casa["measurespath"]) == Path(casadata.datapath)


def test_applycal_gives_our_corrected_data(casa):
    assert casa["g_spw_nchan"] == [1]          # as CASA's gaincal writes a G table
    assert casa["flags_differ"] == 0, casa
    assert casa["n_compared"] >= 0.99 * casa["n_vis"], casa
    assert casa["max_rel_diff"] <= RTOL, casa


def test_casa_lists_our_ms(casa):
    assert casa["ms_nrows"] > 0               # casatools.ms opens it
    assert casa["listobs_error"] is None, (
        f"CASA's listobs refuses the MS (telescope {casa['telescope']}): "
        f"{casa['listobs_error']}")
    assert casa["listobs_nrows"] == casa["ms_nrows"] and casa["listobs_nfields"] >= 1
