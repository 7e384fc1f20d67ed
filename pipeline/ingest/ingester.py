"""The ``ingest`` task: group arriving subband files into observations, quarantine bad ones.

Every scan of ``home/incoming`` (a periodic task in the server process):

- files named ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` are candidates; anything else is ignored;
- timestamps within ``group_window_s`` of a group's earliest belong to that chunk (the
  16 files of one chunk jitter by up to ±30 s);
- a file is complete when its size and mtime are unchanged since the previous scan (or
  it has not been touched for ``settle_s``, so a restart or ``process --once`` need not
  wait) and it opens (a metadata-only pyuvdata read) with finite visibilities;
- every file, once complete, has its header checked against the instrument (telescope
  and site, band and channel layout, polarizations, integration time, antennas against
  ``data/``'s layout; :mod:`pipeline.ingest.instrument_check`): a file another telescope
  wrote is quarantined at once, before grouping, so it neither forms a group of its own
  nor joins, renames or splits one. A group whose subband it claimed to be waits for the
  real one like any group short of a subband, and goes on as partial after the timeout;
- a complete 16-subband group is registered as one pending observation; a group still
  short of subbands ``partial_timeout_s`` after its newest file appeared is registered
  with what is there, marked partial;
- an unreadable or inconsistent file is moved to ``home/quarantine`` with its reason in
  the store; the rest of its group goes on. Nothing else is moved or deleted.

The task's memory (sizes seen, files already checked) lives in an ``Ingester`` instance,
whose bound ``scan`` method is what the registry runs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
from pyuvdata import UVData

from pipeline.ingest.config import IngestConfig
from pipeline.ingest.instrument_check import (
    HeaderRecord,
    Instrument,
    header_record,
    instrument_problems,
)
from pipeline.instrument.phasing import mid_jd, pointing_dec_deg, use_bundled_iers
from pipeline.instrument.telescope import N_SUBBANDS
from pipeline.jobs.contract import TaskContext
from pipeline.store import Store

log = logging.getLogger(__name__)

NAME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_NAME = re.compile(r"^(?P<stamp>.+)_sb(?P<sb>[^_.]+)\.hdf5$")
_NAN_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True, kw_only=True)
class SubbandFile:
    """A candidate file: its name's timestamp and subband, and what was last seen of it."""

    path: Path
    stamp: datetime
    subband: int


@dataclass(frozen=True, kw_only=True)
class FileInfo:
    """What a readable subband file holds (from its metadata)."""

    n_channels: int
    antennas: frozenset[str]
    n_times: int
    polarizations: tuple[int, ...]
    freq_min_hz: float
    freq_max_hz: float
    time_min_jd: float
    time_max_jd: float
    int_time_s: float
    mid_jd: float
    dec_deg: float


@dataclass(frozen=True, kw_only=True)
class _Seen:
    size: int
    mtime_ns: int
    first_seen: datetime


class BadFile(ValueError):
    """A subband file that cannot be used; the message names the file and the problem."""


def parse_name(path: Path, *, n_subbands: int = N_SUBBANDS) -> SubbandFile | None:
    """The candidate a file name describes; None if it is not ``*_sbNN.hdf5``.

    Raises BadFile for a subband file with an unknown subband or a bad timestamp.
    """
    match = _NAME.match(path.name)
    if match is None:
        return None
    sb = match.group("sb")
    if not (sb.isdigit() and len(sb) == 2 and int(sb) < n_subbands):
        raise BadFile(f"{path}: unknown subband 'sb{sb}' (expected sb00–sb{n_subbands - 1:02d})")
    try:
        stamp = datetime.strptime(match.group("stamp"), NAME_FORMAT)
    except ValueError:
        raise BadFile(f"{path}: timestamp {match.group('stamp')!r} is not "
                      "YYYY-MM-DDTHH:MM:SS") from None
    return SubbandFile(path=path, stamp=stamp, subband=int(sb))


class Unreadable(BadFile):
    """A subband file whose header cannot be read (broken, or perhaps still being written)."""


def read_header(path: Path, *, subband: int | None = None) -> tuple[UVData, HeaderRecord]:
    """A subband file's metadata (no data arrays) and its instrument record; Unreadable if not."""
    uvd = UVData()
    try:
        uvd.read(str(path), file_type="uvh5", read_data=False, run_check=False,
                 check_extra=False, run_check_acceptability=False, fix_old_proj=False,
                 background_lsts=False)
        record = header_record(uvd, source=path, subband=subband)
    except Exception as exc:  # h5py and pyuvdata raise many kinds for a broken file
        raise Unreadable(f"{path}: not a readable UVH5 file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return uvd, record


def misfit_reason(record: HeaderRecord, instrument: Instrument) -> str | None:
    """The quarantine reason of a file ``instrument`` did not write; None if it fits."""
    problems = instrument_problems(record, instrument)
    if not problems:
        return None
    return (f"{record.source}: {'; '.join(problems)} — not {instrument.name} data; if it is, "
            "correct the writer (or data/antennas.csv) and put the file back in incoming/")


def file_info(uvd: UVData, path: Path) -> FileInfo:
    """What ingest keeps of a file's metadata; BadFile if it has no pointing declination."""
    try:
        dec = pointing_dec_deg(uvd, source=str(path))
    except ValueError as exc:
        raise BadFile(str(exc)) from None
    ants = np.union1d(uvd.ant_1_array, uvd.ant_2_array)
    names = dict(zip(uvd.telescope.antenna_numbers, uvd.telescope.antenna_names, strict=True))
    return FileInfo(
        n_channels=int(uvd.Nfreqs), antennas=frozenset(str(names[a]) for a in ants),
        n_times=int(uvd.Ntimes), polarizations=tuple(int(p) for p in uvd.polarization_array),
        freq_min_hz=float(uvd.freq_array.min()), freq_max_hz=float(uvd.freq_array.max()),
        time_min_jd=float(uvd.time_array.min()), time_max_jd=float(uvd.time_array.max()),
        int_time_s=float(np.median(uvd.integration_time)), mid_jd=mid_jd(uvd.time_array),
        dec_deg=dec)


def inspect_file(path: Path, *, instrument: Instrument | None = None) -> FileInfo:
    """Read a subband file's metadata, check it and scan it for NaNs; BadFile if unusable.

    ``instrument`` None skips the instrument check (the group-consistency checks remain).
    """
    parsed = _NAME.match(path.name)
    sb = parsed.group("sb") if parsed else ""
    uvd, record = read_header(path, subband=int(sb) if sb.isdigit() else None)
    if instrument is not None and (reason := misfit_reason(record, instrument)):
        raise BadFile(reason)
    info = file_info(uvd, path)
    _check_finite(path)
    return info


def _check_finite(path: Path) -> None:
    """BadFile if the visibilities cannot be read to the end or hold NaN/Inf."""
    try:
        with h5py.File(path, "r") as f:
            vis = f["Data/visdata"]
            if vis.dtype.names:  # integer (r, i) compound: always finite, still read it all
                kinds = None
            else:
                kinds = vis.dtype
            row_bytes = max(1, int(np.prod(vis.shape[1:])) * vis.dtype.itemsize)
            step = max(1, _NAN_BLOCK_BYTES // row_bytes)
            for start in range(0, vis.shape[0], step):
                block = vis[start:start + step]
                if kinds is not None and not np.isfinite(block).all():
                    bad = int(np.count_nonzero(~np.isfinite(block)))
                    raise BadFile(f"{path}: visibilities hold NaN or Inf ({bad} values "
                                  f"from row {start})")
    except BadFile:
        raise
    except Exception as exc:
        raise BadFile(f"{path}: visibilities cannot be read ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None


def group_by_time(files: list[SubbandFile], *, window_s: float) -> list[list[SubbandFile]]:
    """Chunks: files sorted by time, a new group whenever one is > ``window_s`` after the first."""
    groups: list[list[SubbandFile]] = []
    for f in sorted(files, key=lambda f: (f.stamp, f.subband, f.path.name)):
        if groups and (f.stamp - groups[-1][0].stamp).total_seconds() <= window_s:
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


@dataclass(kw_only=True)
class Ingester:
    """The ingest task and what it remembers between scans (sizes, checked files)."""

    config: IngestConfig = field(default_factory=IngestConfig)
    #: what a file must fit; None: DSA-110 with the shipped layout, built at the first scan
    instrument: Instrument | None = None
    _seen: dict[Path, _Seen] = field(default_factory=dict, repr=False)
    _headers: dict[tuple[Path, int, int], FileInfo] = field(default_factory=dict, repr=False)
    _checked: dict[tuple[Path, int, int], FileInfo] = field(default_factory=dict, repr=False)
    _registered: set[str] = field(default_factory=set, repr=False)

    def scan(self, ctx: TaskContext) -> int:
        """Scan ``home/incoming`` once; returns how many observations were registered."""
        use_bundled_iers()
        if self.instrument is None:
            self.instrument = Instrument.default()
        store, now = ctx.store, ctx.now
        candidates = self._candidates(ctx.home.incoming, store=store,
                                      quarantine=ctx.home.quarantine, now=now)
        # Stability is judged once per scan: a second look would find any file unchanged.
        stability: dict[Path, tuple[bool, datetime, os.stat_result]] = {}
        for f in candidates:
            try:
                stability[f.path] = self._stable(f, now)
            except FileNotFoundError:
                continue
        ours = [f for f in candidates if f.path in stability
                and self._fits(f, stability[f.path], store=store,
                               quarantine=ctx.home.quarantine, now=now)]
        registered = 0
        for group in group_by_time(ours, window_s=self.config.group_window_s):
            registered += self._consider(group, stability, store=store,
                                         quarantine=ctx.home.quarantine, now=now)
        return registered

    __call__ = scan

    # ------------------------------------------------------------ steps
    def _candidates(self, incoming: Path, *, store: Store, quarantine: Path,
                    now: datetime) -> list[SubbandFile]:
        found: list[SubbandFile] = []
        try:
            entries = sorted(p for p in incoming.iterdir() if p.is_file())
        except FileNotFoundError:
            return []
        new = [p for p in entries if str(p) not in self._registered]
        self._registered |= store.registered_files([str(p) for p in new])
        for path in new:
            if str(path) in self._registered:
                continue
            try:
                parsed = parse_name(path, n_subbands=self.config.n_subbands)
            except BadFile as exc:
                self._quarantine(path, str(exc), store=store, quarantine=quarantine, now=now)
                continue
            if parsed is not None:
                found.append(parsed)
        present = {f.path for f in found}
        for gone in set(self._seen) - present:  # moved away or registered: forget it
            del self._seen[gone]
        self._checked = {k: v for k, v in self._checked.items() if k[0] in present}
        self._headers = {k: v for k, v in self._headers.items() if k[0] in present}
        return found

    def _fits(self, f: SubbandFile, stable: tuple[bool, datetime, os.stat_result], *,
              store: Store, quarantine: Path, now: datetime) -> bool:
        """False (and quarantined) if a complete file's header is not this instrument's.

        A file still being written, or whose header does not read yet, is left in: the
        group's judgement reads it again once the group is whole.
        """
        ok, _, st = stable
        key = (f.path, st.st_size, st.st_mtime_ns)
        if not ok or key in self._headers:
            return True
        try:
            uvd, record = read_header(f.path, subband=f.subband)
        except Unreadable:
            return True
        reason = misfit_reason(record, self.instrument)
        try:
            if reason is not None:
                raise BadFile(reason)
            self._headers[key] = file_info(uvd, f.path)
        except BadFile as exc:
            self._quarantine(f.path, str(exc), store=store, quarantine=quarantine, now=now)
            return False
        return True

    def _stable(self, f: SubbandFile, now: datetime) -> tuple[bool, datetime, os.stat_result]:
        """(complete, when it appeared, stat): unchanged since the last scan, or settled."""
        st = f.path.stat()
        mtime = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC).replace(tzinfo=None)
        before = self._seen.get(f.path)
        first_seen = before.first_seen if before else now
        self._seen[f.path] = _Seen(size=st.st_size, mtime_ns=st.st_mtime_ns,
                                   first_seen=first_seen)
        unchanged = (before is not None and before.size == st.st_size
                     and before.mtime_ns == st.st_mtime_ns)
        settled = (now - mtime).total_seconds() >= self.config.settle_s
        return unchanged or settled, min(first_seen, mtime), st

    def _consider(self, group: list[SubbandFile],
                  stability: dict[Path, tuple[bool, datetime, os.stat_result]], *,
                  store: Store, quarantine: Path, now: datetime) -> int:
        cfg = self.config
        stable: list[tuple[SubbandFile, os.stat_result]] = []
        waiting = False
        newest = datetime.min
        for f in group:
            ok, appeared, st = stability[f.path]
            newest = max(newest, appeared)
            waiting |= not ok
            if ok:
                stable.append((f, st))
        if not stable:
            return 0
        late = store.observation_starting_near(group[0].stamp, within_s=cfg.group_window_s)
        if late is not None:
            for f, _ in stable:
                self._quarantine(f.path, f"{f.path}: arrived after observation {late} was "
                                 "registered without it", store=store, quarantine=quarantine,
                                 now=now, obs_id=late)
            return 0

        timed_out = (now - newest).total_seconds() >= cfg.partial_timeout_s
        all_named = len({f.subband for f in group}) >= cfg.n_subbands
        # Judge a group only once every subband is there and written, or it is overdue:
        # a majority vote over half a group could quarantine the wrong files.
        if (waiting or not all_named) and not timed_out:
            return 0

        ready: list[tuple[SubbandFile, FileInfo]] = []
        for f, st in stable:
            key = (f.path, st.st_size, st.st_mtime_ns)
            if key not in self._checked:
                try:
                    if key in self._headers:  # header read and checked when it settled
                        _check_finite(f.path)
                        self._checked[key] = self._headers[key]
                    else:
                        self._checked[key] = inspect_file(f.path, instrument=self.instrument)
                except BadFile as exc:
                    self._quarantine(f.path, str(exc), store=store, quarantine=quarantine,
                                     now=now)
                    continue
            ready.append((f, self._checked[key]))
        members = self._consistent(ready, store=store, quarantine=quarantine, now=now)
        if not members:
            return 0
        partial = len(members) < cfg.n_subbands
        return int(self._register(members, partial=partial, store=store, now=now))

    def _consistent(self, members: list[tuple[SubbandFile, FileInfo]], *, store: Store,
                    quarantine: Path, now: datetime) -> list[tuple[SubbandFile, FileInfo]]:
        """Quarantine files that disagree with the group's majority or repeat a subband."""
        checks = (
            ("channel count", lambda i: i.n_channels, lambda v: f"{v} channels"),
            ("antenna set", lambda i: i.antennas, lambda v: f"{len(v)} antennas"),
            ("integration count", lambda i: i.n_times, lambda v: f"{v} integrations"),
            ("polarizations", lambda i: i.polarizations, lambda v: f"polarizations {list(v)}"),
        )
        kept = sorted(members, key=lambda m: (m[0].subband, m[0].stamp, m[0].path.name))
        for what, key, show in checks:
            counts = Counter(key(info) for _, info in kept)
            if len(counts) < 2:
                continue
            usual = counts.most_common(1)[0][0]
            for f, info in [m for m in kept if key(m[1]) != usual]:
                detail = show(key(info))
                if what == "antenna set":
                    odd = sorted(key(info) ^ usual)
                    detail += f" (differs in {', '.join(odd[:5])}{'…' if len(odd) > 5 else ''})"
                self._quarantine(f.path, f"{f.path}: {what} differs from its group's "
                                 f"({detail}, the others have {show(usual)})", store=store,
                                 quarantine=quarantine, now=now)
            kept = [m for m in kept if key(m[1]) == usual]
        seen: set[int] = set()
        unique = []
        for f, info in kept:
            if f.subband in seen:
                self._quarantine(f.path, f"{f.path}: duplicate of subband sb{f.subband:02d} "
                                 "in the same chunk", store=store, quarantine=quarantine, now=now)
                continue
            seen.add(f.subband)
            unique.append((f, info))
        return unique

    def _register(self, members: list[tuple[SubbandFile, FileInfo]], *, partial: bool,
                  store: Store, now: datetime) -> bool:
        infos = [info for _, info in members]
        first = min(f.stamp for f, _ in members)
        obs_id = first.strftime(NAME_FORMAT)
        t_min = min(i.time_min_jd for i in infos) - infos[0].int_time_s / 2 / 86400
        start = _jd_to_datetime(t_min)
        files = [str(f.path) for f, _ in sorted(members, key=lambda m: m[0].subband)]
        added = store.add_ingested_observation(
            obs_id=obs_id, start_utc=start, mid_mjd=infos[0].mid_jd - 2400000.5,
            dec_deg=infos[0].dec_deg, files=files, now=now, partial=partial,
            freq_min_hz=min(i.freq_min_hz for i in infos),
            freq_max_hz=max(i.freq_max_hz for i in infos),
            n_channels=sum(i.n_channels for i in infos), n_antennas=len(infos[0].antennas),
            n_integrations=infos[0].n_times)
        self._registered.update(files)
        if added:
            log.info("registered observation %s: %d subbands%s", obs_id, len(files),
                     " (partial)" if partial else "")
        return added

    def _quarantine(self, path: Path, reason: str, *, store: Store, quarantine: Path,
                    now: datetime, obs_id: str | None = None) -> None:
        quarantine.mkdir(parents=True, exist_ok=True)
        target = quarantine / path.name
        n = 1
        while target.exists():
            target = quarantine / f"{path.stem}.{n}{path.suffix}"
            n += 1
        try:
            shutil.move(str(path), target)
        except FileNotFoundError:
            return  # gone meanwhile: nothing to keep
        store.add_quarantine(original_path=str(path), quarantine_path=str(target),
                             stage="ingest", reason=reason, now=now, observation_id=obs_id)
        self._seen.pop(path, None)
        log.warning("quarantined %s", reason)


def _jd_to_datetime(jd: float) -> datetime:
    # A float64 JD resolves ~20 µs; the correlator's clock ticks are far coarser than 1 ms.
    seconds = round((jd - 2440587.5) * 86400.0, 3)
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)
