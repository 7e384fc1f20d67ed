"""Time and peak memory of `contimg simulate` for one full-size chunk and one small one.

Full size: 96 antennas (4560 cross-correlations + 96 autos), 768 channels, 24 integrations,
XX and YY. Prints figures; asserts nothing. Each case runs in a child process so that
its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "full chunk (96 ant, 48 ch/sb)": ["--antennas", "96", "--channels-per-subband", "48"],
    "small chunk (12 ant, 4 ch/sb)": ["--antennas", "12", "--channels-per-subband", "4"],
}

CHILD = """
import json, resource, sys, time
from app.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        cmd = [sys.executable, "-c", CHILD, "simulate", "--home", str(home),
               "--start", "2026-11-23T12:00:00", "--minutes", "5", "--dec", "33",
               "--seed", "1", *args]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(proc.stderr)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        files = sorted((home / "incoming").glob("*.hdf5"))
        out.update(wall_s=wall, n_files=len(files),
                   file_mb=[f.stat().st_size / 2**20 for f in files][:1],
                   total_mb=sum(f.stat().st_size for f in files) / 2**20)
        return out


def main() -> None:
    for label, args in CASES.items():
        r = run(args)
        print(f"{label}: {r['seconds']:.1f} s in simulate ({r['wall_s']:.1f} s with start-up), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['n_files']} files, "
              f"{r['file_mb'][0]:.1f} MB each, {r['total_mb']:.0f} MB in all")


if __name__ == "__main__":
    main()
