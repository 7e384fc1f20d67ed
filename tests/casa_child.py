"""CASA's view of our products, run as a child process by tests/test_casa_compat.py.

Usage: python tests/casa_child.py MS B_TABLE G_TABLE WORKDIR

CASA (casatools/casatasks) must never share a process with python-casacore: both bundle
their own casacore, so this script runs alone under the venv's python. It

1. writes WORKDIR/casasiteconfig.py (measurespath = casadata's data, measures and data
   auto-update off, log into WORKDIR) and points CASASITECONFIG at it, and HOME at
   WORKDIR so no user ~/.casa/config.py is read, before anything imports casaconfig;
2. opens MS with casatools.ms and runs casatasks.listobs on it;
3. copies MS to WORKDIR, runs casatasks.applycal(gaintable=[B, G],
   interp=['nearest', 'linear'], calwt=False) on the copy;
4. prints ONE JSON line on stdout (CASA's own output goes to stderr): CASA's
   CORRECTED_DATA against ours (the MS's) over the visibilities both leave unflagged,
   and how the flags agree.

casaconfig reads sys.argv for --configfile/--noconfig/--nositeconfig (argparse, prefixes
allowed), so the arguments here are positional only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def _site_config(work: Path) -> Path:
    import casadata  # noqa: PLC0415  (plain data package: no casacore in it)

    path = work / "casasiteconfig.py"
    path.write_text(
        "# written by tests/casa_child.py: casadata's bundled data, never a download\n"
        f"measurespath = {casadata.datapath!r}\n"
        f"datapath = [{casadata.datapath!r}]\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        "skipnetworkcheck = True\n"
        f"logfile = {str(work / 'casa.log')!r}\n"
        "nogui = True\n"
        "agg = True\n"
    )
    return path


def main(argv: list[str]) -> dict:
    ms, b_table, g_table, work = (Path(a).resolve() for a in argv)
    work.mkdir(parents=True, exist_ok=True)
    site = _site_config(work)
    # casaconfig: CASASITECONFIG, a fully qualified path, wins over /opt/casa, /home/casa
    # and a `casasiteconfig` module on sys.path; ~/.casa/config.py is read after it.
    os.environ["CASASITECONFIG"] = str(site)
    os.environ["HOME"] = str(work)
    sys.path.insert(0, str(work))
    stats: dict = {}
    t0 = time.perf_counter()

    import casatools  # noqa: PLC0415
    from casaconfig import config  # noqa: PLC0415

    stats["casatools"] = casatools.version_string()
    stats["config_files"] = config.load_success()
    stats["measurespath"] = config.measurespath
    import numpy as np  # noqa: PLC0415
    from casatasks import applycal, listobs  # noqa: PLC0415

    stats["import_s"] = round(time.perf_counter() - t0, 2)

    # (a) CASA accepts the MS
    mst = casatools.ms()
    mst.open(str(ms))
    stats["ms_nrows"] = int(mst.nrow())
    mst.close()
    # listobs needs the telescope in CASA's Observatories table (a name it does not know
    # is an exception); report it and go on to applycal, which does not
    try:
        obs = listobs(vis=str(ms), listfile=str(work / "listobs.txt"), overwrite=True)
        stats["listobs_error"] = None if obs else "listobs returned nothing"
        stats["listobs_nfields"] = int(obs.get("nfields", 0)) if obs else 0
        stats["listobs_nrows"] = int(obs.get("numrecords", 0)) if obs else 0
    except RuntimeError as exc:
        stats["listobs_error"] = str(exc).splitlines()[0]

    # ours, before CASA touches anything
    tb = casatools.table()
    tb.open(str(ms))
    ours, our_flag = tb.getcol("CORRECTED_DATA"), tb.getcol("FLAG")
    tb.close()
    tb.open(str(ms) + "/OBSERVATION")
    stats["telescope"] = [str(n) for n in tb.getcol("TELESCOPE_NAME")]
    tb.close()
    tb.open(str(g_table) + "/SPECTRAL_WINDOW")
    stats["g_spw_nchan"] = [int(n) for n in tb.getcol("NUM_CHAN")]
    tb.close()

    # (b) CASA applies our tables to a copy; FLAG as it was before our apply is unknown,
    # so CASA starts from our FLAG (OR-ing solution flags in, as we do)
    vis = work / ms.name
    if vis.exists():
        shutil.rmtree(vis)
    shutil.copytree(ms, vis)
    t1 = time.perf_counter()
    applycal(vis=str(vis), gaintable=[str(b_table), str(g_table)],
             interp=["nearest", "linear"], calwt=False, flagbackup=False,
             applymode="calflag")
    stats["applycal_s"] = round(time.perf_counter() - t1, 2)
    tb.open(str(vis))
    casa, casa_flag = tb.getcol("CORRECTED_DATA"), tb.getcol("FLAG")
    tb.close()

    # (c) agreement over data neither flags
    both = ~our_flag & ~casa_flag
    diff = np.abs(casa[both] - ours[both])
    ref = np.abs(ours[both])
    rel = diff / np.maximum(ref, np.finfo(np.float32).tiny)
    stats.update(
        n_vis=int(our_flag.size),
        n_compared=int(both.sum()),
        our_flagged=int(our_flag.sum()),
        casa_flagged=int(casa_flag.sum()),
        flags_differ=int((our_flag != casa_flag).sum()),
        max_rel_diff=float(rel.max()) if rel.size else None,
        median_rel_diff=float(np.median(rel)) if rel.size else None,
        max_abs_diff=float(diff.max()) if diff.size else None,
        max_abs_ours=float(ref.max()) if ref.size else None,
        casa_log_severe=sum("SEVERE" in line for line in
                            (work / "casa.log").read_text(errors="replace").splitlines())
        if (work / "casa.log").exists() else None,
    )
    return stats


if __name__ == "__main__":
    # CASA chatters on stdout (Python and C++ alike): send fd 1 to stderr while it works,
    # so stdout carries exactly one line, the JSON
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result = main(sys.argv[1:])
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # CASA 6.7.0 can crash in its C++ teardown (SIGSEGV at exit after a task raised, e.g.
    # listobs on a telescope it does not know); the answer is out, skip the teardown
    os._exit(0)
