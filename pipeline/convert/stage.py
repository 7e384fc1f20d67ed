"""The ``convert`` stage: one chunk's subband UVH5 files → one Measurement Set.

Reads the group's metadata, phases it to the meridian at mid-time, then streams the
visibilities in row blocks — read, put in ascending frequency, w-phased, written — into
``ms/.tmp-<id>.ms.<token>`` (a name of this attempt's own, ``pipeline.jobs.scratch``),
which is renamed to ``ms/<id>.ms`` only once complete. The rename is the commit point: a
complete ``<id>.ms`` is never half-written, so a rerun after a crash reuses it. A
temporary MS left by a dead attempt is removed by the next one; one a live attempt is
still writing (a requeued job's first worker) is left alone. The stage takes paths and
returns results; it never writes the store.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore.tables import table
from pyuvdata import UVData

from pipeline.convert.ms_writer import write_ms_blocks
from pipeline.convert.uvh5_group import (
    block_rows,
    iter_phased_blocks,
    open_group,
    phase_inplace,
    phase_metadata,
)
from pipeline.errors import ObservationError
from pipeline.instrument.phasing import (
    meridian_icrs_deg,
    mid_jd,
    pointing_dec_deg,
    use_bundled_iers,
)
from pipeline.jobs.contract import StageContext, StageResult
from pipeline.jobs.scratch import attempt_path, legacy_temp_path, sweep_dead

log = logging.getLogger(__name__)
Progress = Callable[[float], None]

class ConversionError(ObservationError):
    """An observation's subband files cannot become a Measurement Set."""


@dataclass(frozen=True, kw_only=True)
class ConvertedMS:
    """What a finished Measurement Set holds, read back from the MS itself."""

    path: Path
    n_rows: int
    mid_mjd: float
    dec_deg: float
    freq_min_hz: float
    freq_max_hz: float
    n_channels: int
    n_antennas: int
    n_integrations: int
    reused: bool = False

    def updates(self) -> dict[str, float | int]:
        """Observation columns for StageResult.updates."""
        return {"mid_mjd": self.mid_mjd, "dec_deg": self.dec_deg,
                "freq_min_hz": self.freq_min_hz, "freq_max_hz": self.freq_max_hz,
                "n_channels": self.n_channels, "n_antennas": self.n_antennas,
                "n_integrations": self.n_integrations}


def ms_paths(ms_dir: Path, obs_id: str) -> tuple[Path, Path]:
    """(final, legacy temporary) Measurement Set paths of an observation.

    An attempt writes ``temp_paths(final)``'s own member; the legacy name is the one
    shared temporary path of earlier versions, swept like a dead attempt's.
    """
    final = Path(ms_dir) / f"{obs_id}.ms"
    return final, legacy_temp_path(final)


def phase_to_meridian(uvd: UVData, *, dec_deg: float, name: str) -> tuple[float, float]:
    """Phase unprojected ``uvd`` in place to the meridian at its mid-time; ICRS (ra, dec) deg.

    ``dec_deg`` is the pointing (apparent) declination; it is kept in
    ``extra_keywords["pointing_dec_deg"]`` because the ICRS phase centre differs from it.
    A ``uvd`` without data arrays (``open_group``'s) has only its uvw and phase centre
    changed.
    """
    ra, dec = meridian_icrs_deg(mid_jd(uvd.time_array), dec_deg, uvd.telescope.location)
    ra_deg, icrs_dec_deg = float(ra[0]), float(dec[0])
    uvd.extra_keywords["pointing_dec_deg"] = float(dec_deg)
    if uvd.data_array is None:  # metadata only: the caller applies the w-term per block
        phase_metadata(uvd, ra_deg=ra_deg, dec_deg=icrs_dec_deg, name=name)
    else:
        phase_inplace(uvd, ra_deg=ra_deg, dec_deg=icrs_dec_deg, name=name)
    return ra_deg, icrs_dec_deg


def describe_ms(path: Path) -> ConvertedMS:
    """Read back what a Measurement Set holds (rows, band, antennas, times, phase centre)."""
    with table(str(path), ack=False) as main:
        n_rows = main.nrows()
        time_s = main.getcol("TIME")
        ants = np.union1d(main.getcol("ANTENNA1"), main.getcol("ANTENNA2"))
        extra = main.getkeywords().get("pyuvdata_extra", {}) or {}
    with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = spw.getcol("CHAN_FREQ")
    with table(str(path / "FIELD"), ack=False) as field:
        phase_dir = field.getcol("PHASE_DIR")
    unique_t = np.unique(time_s)
    return ConvertedMS(
        path=path, n_rows=n_rows, mid_mjd=float((unique_t[0] + unique_t[-1]) / 2 / 86400.0),
        # The observation's declination is the pointing; the phase centre's is ICRS.
        dec_deg=float(extra.get("pointing_dec_deg", np.rad2deg(phase_dir[0, 0, 1]))),
        freq_min_hz=float(freqs.min()),
        freq_max_hz=float(freqs.max()), n_channels=int(freqs.size), n_antennas=int(ants.size),
        n_integrations=int(unique_t.size))


def convert_group(files: Sequence[str | Path], *, ms_dir: Path, obs_id: str,
                  dec_deg: float | None = None, progress: Progress = lambda f: None
                  ) -> ConvertedMS:
    """Convert one chunk's subband files to ``ms_dir/<obs_id>.ms``; reuse a complete one.

    A temporary MS of a dead attempt found here is removed; a live attempt's is left
    alone. ``dec_deg`` defaults to the files' pointing.
    """
    use_bundled_iers()
    final, _ = ms_paths(Path(ms_dir), obs_id)
    sweep_dead(final)
    if final.exists():
        try:
            done = describe_ms(final)
        except RuntimeError as exc:  # casacore's error for an unreadable table
            # A complete MS is only ever renamed in, so this one was damaged afterwards.
            raise ConversionError(obs_id, f"{final} exists but cannot be opened ({exc}); "
                                  "move it aside and retry") from exc
        log.info("%s: already converted, reusing it", final)
        progress(1.0)
        return ConvertedMS(**{**done.__dict__, "reused": True})

    t0 = time.perf_counter()
    uvd, layout = open_group(files, progress=lambda f: progress(0.1 * f))
    dec = dec_deg if dec_deg is not None else pointing_dec_deg(uvd, source=str(files[0]))
    phase_to_meridian(uvd, dec_deg=dec, name=obs_id)
    t_meta = time.perf_counter()
    # Unprojected data carry no w-term (old w = 0): the whole new w is applied.
    blocks = iter_phased_blocks(layout, delta_w_m=uvd.uvw_array[:, 2],
                                freqs_hz=uvd.freq_array, rows_per_block=block_rows(layout))
    with attempt_path(final) as tmp:
        write_ms_blocks(uvd, tmp, blocks=blocks, progress=lambda f: progress(0.1 + 0.89 * f))
        del uvd, blocks
        os.rename(tmp, final)
    _fsync_dir(final.parent)
    log.info("%s: metadata and uvw %.1f s, read-phase-write %.1f s", final.name,
             t_meta - t0, time.perf_counter() - t_meta)
    progress(1.0)
    return describe_ms(final)


def convert_stage(ctx: StageContext) -> StageResult:
    """The registered ``convert`` stage: the observation's files → ``home/ms/<id>.ms``."""
    obs = ctx.observation
    if not obs.files:
        raise ConversionError(obs.id, "no subband files recorded (was it registered by "
                              "ingest?)")
    missing = [f for f in obs.files if not Path(f).is_file()]
    if missing:
        raise ConversionError(obs.id, f"subband files missing: {', '.join(missing)}")
    with warnings.catch_warnings():
        # pyuvdata's notes on 'uncalib' units and unset history are expected for raw data.
        warnings.filterwarnings("ignore", message=".*units of the data are.*")
        # A reprocess run's MS goes beside the current one (which it replaces at record).
        tag = ctx.inputs.get("product_tag")
        ms_dir = ctx.home.ms / re.sub(r"[^A-Za-z0-9._-]", "_", str(tag)) if tag else ctx.home.ms
        ms_dir.mkdir(parents=True, exist_ok=True)
        result = convert_group(obs.files, ms_dir=ms_dir, obs_id=obs.id,
                               dec_deg=obs.dec_deg, progress=ctx.progress)
    return StageResult(ms_path=str(result.path), updates=result.updates())


def _fsync_dir(path: Path) -> None:
    # The rename is the commit point; make it durable before the store is told.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
