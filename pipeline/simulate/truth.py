"""What the simulator injected, written beside the data so later stages can be checked.

One JSON file per ``contimg simulate`` call: ``HOME/incoming/truth/<start>.json`` (outside
the ``*.hdf5`` glob). Keys:

- ``format``: ``contimg-sim-truth/1``; ``config``: every option of the call;
- ``site``, ``antennas`` (names and ECEF metres, in file order), ``dec_deg``;
- ``frequencies``: ``channel_width_hz`` as written, channel order (descending per file);
- ``noise``: ``sefd_jy`` and ``sigma_jy`` (per real/imag part of a written cross
  visibility, *before* gains: calibrated data have this sigma);
- ``gains``: :class:`~pipeline.simulate.gains.GainModel` parameters (recompute with
  :meth:`Truth.gains`); ``V_obs[a1, a2] = g[a1] conj(g[a2]) V``;
- ``sources``: every source that went into any chunk (name, ra_deg, dec_deg, flux_jy at
  1.4 GHz, spectral_index, kind, pb_coeffs, variability model);
- ``lightcurves``: for variable and transient sources, 1.4-GHz flux per integration;
- ``chunks``: true start, integration times (JD), file names with their name offsets;
- ``rfi``: injected channels and bursts (empty unless ``--rfi``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.instrument.sky import Sky
from pipeline.simulate.gains import GainModel

FORMAT = "contimg-sim-truth/1"
TRUTH_DIR = "truth"


@dataclass(frozen=True, kw_only=True, eq=False)
class Truth:
    """A loaded truth file: the raw dict plus helpers to recompute what was injected."""

    path: Path
    data: dict[str, Any]

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Every source simulated, as dicts."""
        return self.data["sources"]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The chunks written: start, times, files."""
        return self.data["chunks"]

    @property
    def antenna_names(self) -> list[str]:
        """Antenna names in the order of the gain arrays."""
        return self.data["antennas"]["names"]

    @property
    def gain_model(self) -> GainModel:
        """The gain parameters."""
        return GainModel.from_dict(self.data["gains"])

    def gains(self, times_jd, freqs_hz) -> np.ndarray:
        """(nant, ntime, nchan, 2) complex128 gains (XX, YY) applied at those times/freqs."""
        return self.gain_model.evaluate(times_jd, freqs_hz)

    def source(self, name: str) -> dict[str, Any]:
        """One source by name; KeyError naming the file if absent."""
        for s in self.sources:
            if s["name"] == name:
                return s
        raise KeyError(f"{self.path}: no source {name!r} in the truth file")

    def sky(self) -> Sky:
        """The simulated sources as a Sky (positions, spectra, variability)."""
        s = self.sources
        return Sky(names=tuple(x["name"] for x in s),
                   ra_deg=np.array([x["ra_deg"] for x in s], float),
                   dec_deg=np.array([x["dec_deg"] for x in s], float),
                   flux_jy=np.array([x["flux_jy"] for x in s], float),
                   spectral_index=np.array([x["spectral_index"] for x in s], float),
                   kind=tuple(x["kind"] for x in s),
                   pb_coeffs=tuple(tuple(x["pb_coeffs"]) for x in s),
                   variability=tuple(x["variability"] for x in s))

    def flux(self, name: str, freq_hz: float, mjd: float) -> float:
        """Flux density in Jy of source ``name`` at ``freq_hz`` and time ``mjd``."""
        sky = self.sky()
        i = sky.names.index(name)
        return float(sky.take([i]).spectrum(np.array([freq_hz]), mjd)[0, 0])


def truth_path(incoming: Path, start: datetime) -> Path:
    """Where the truth of a call starting at ``start`` goes."""
    return Path(incoming) / TRUTH_DIR / f"{start.strftime('%Y-%m-%dT%H:%M:%S')}.json"


def save_truth(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **data}, indent=1, default=_jsonable))
    os.replace(tmp, path)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, datetime | Path):
        return str(x)
    raise TypeError(f"truth: cannot write {type(x).__name__} as JSON")


def load_truth(where: str | Path, *, observation: str | None = None) -> Truth:
    """Load a truth file, given the file itself or a home (``HOME/incoming/truth/*.json``).

    With several truth files in the home, ``observation`` (a chunk start or a file-name
    timestamp, ``YYYY-MM-DDTHH:MM:SS``) picks the one that simulated it; without it, the
    home must hold exactly one.
    """
    where = Path(where)
    if where.is_file():
        return _read(where)
    folder = where / "incoming" / TRUTH_DIR
    if not folder.is_dir():
        folder = where / TRUTH_DIR   # handed the incoming folder itself
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{where}: no truth files under incoming/{TRUTH_DIR}/; "
                                "run contimg simulate first")
    if observation is None:
        if len(files) > 1:
            raise ValueError(f"{where}: {len(files)} truth files; pass observation= to "
                             "pick the one that simulated it")
        return _read(files[0])
    for f in files:
        truth = _read(f)
        for chunk in truth.chunks:
            if observation == chunk["start_utc"] or any(
                    observation in name for name in chunk["files"]):
                return truth
    raise KeyError(f"{where}: no truth file simulated observation {observation}")


def _read(path: Path) -> Truth:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a contimg truth file (format {data.get('format')!r}, "
                         f"expected {FORMAT!r})")
    return Truth(path=Path(path), data=data)
