"""Simulate what a DSA-110-like correlator writes, chunk by chunk, with a truth file.

Per 5-minute chunk (24 integrations of 12.884901888 s) and subband: the sources whose
beam-attenuated flux reaches ``min_apparent_jy`` are predicted exactly (per-antenna
factorised DFT, :func:`pipeline.instrument.predict.predict`) at the 48 correlator
channels, the gains are applied, RFI added, channels averaged to ``channels_per_subband``,
and thermal noise added. Each integration is the instantaneous visibility at its mid-time
(a correlator that fringe-stops within the integration: no time smearing); averaging channels does
smear in bandwidth, as a real correlator does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ContimgError
from pipeline.instrument import telescope as inst
from pipeline.instrument.predict import PointSources, predict
from pipeline.instrument.sky import (
    DEFAULT_CALIBRATORS,
    DEFAULT_CATALOG,
    Sky,
    airy_power,
    load_calibrators,
    load_catalog,
    meridian_icrs,
    pointing_enu,
    source_enu,
)
from pipeline.simulate.gains import GainModel
from pipeline.simulate.truth import save_truth, truth_path
from pipeline.simulate.writer import (
    baseline_pairs,
    build_uvdata,
    make_telescope,
    offline_iers,
    write_atomic,
)

NAME_FORMAT = "%Y-%m-%dT%H:%M:%S"
GPS_L3_HZ = 1381.05e6


class SimulateError(ContimgError):
    """A simulation that cannot be made as asked (bad option, unusable input file)."""


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything one ``contimg simulate`` call needs."""

    start: datetime
    minutes: float
    dec_deg: float
    n_antennas: int | None = 96
    channels_per_subband: int = 48
    seed: int = 0
    sefd_jy: float = 5800.0
    rfi: bool = False
    noise: bool = True
    gains: bool = True
    catalog: bool = True
    calibrators: bool = True
    inject: bool = True
    autos: bool = True
    min_apparent_jy: float = 5e-4
    search_radius_deg: float = 10.0
    name_jitter_s: float = 15.0
    layout_path: Path = inst.DEFAULT_LAYOUT
    catalog_path: Path = DEFAULT_CATALOG
    calibrators_path: Path = DEFAULT_CALIBRATORS
    extra_sources: Sky | None = field(default=None, compare=False)

    def __post_init__(self):
        if not self.minutes > 0:
            raise ValueError(f"--minutes must be positive, got {self.minutes}")
        min_dec = inst.OVRO.lat_deg - 90.0 + 10.0
        if not min_dec <= self.dec_deg <= 90.0:
            raise ValueError(f"--dec must be between {min_dec:.1f} and 90 degrees (at least "
                             f"10 degrees above the horizon at OVRO), got {self.dec_deg}")
        if self.n_antennas is not None and not 2 <= self.n_antennas <= 117:
            raise ValueError(f"--antennas must be between 2 and 117 (pads in the layout), "
                             f"got {self.n_antennas}")
        if not inst.channels_per_subband_ok(self.channels_per_subband):
            raise ValueError("--channels-per-subband must divide 48 (1, 2, 3, 4, 6, 8, 12, "
                             f"16, 24 or 48), got {self.channels_per_subband}")
        if self.sefd_jy < 0:
            raise ValueError(f"--sefd must not be negative, got {self.sefd_jy}")
        if not 0 <= self.name_jitter_s <= 30:
            raise ValueError(f"name jitter must be within 0..30 s, got {self.name_jitter_s}")

    @property
    def n_chunks(self) -> int:
        """Chunks (of 309.24 s) needed to cover ``minutes``."""
        return max(1, math.ceil(self.minutes * 60.0 / inst.CHUNK_S - 1e-9))

    def chunk_start(self, k: int) -> datetime:
        """True start of chunk ``k``."""
        return self.start + timedelta(seconds=k * inst.CHUNK_S)


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """What a call wrote."""

    files: list[Path]
    truth: Path
    seconds: float


def _jd(t: datetime) -> float:
    from astropy.time import Time  # noqa: PLC0415
    return float(Time(t, scale="utc").jd)


def beam_crossing_s(dec_deg: float, freq_hz: float = 1.4e9) -> float:
    """Seconds a source at ``dec_deg`` takes to drift across the primary beam's FWHM."""
    fwhm_deg = math.degrees(1.02 * 299_792_458.0 / freq_hz / inst.DISH_DIAMETER_M)
    rate_deg_s = 360.0 / 86164.0905 * math.cos(math.radians(dec_deg))
    return fwhm_deg / max(rate_deg_s, 1e-9)


def injected_sources(cfg: SimConfig, rng: np.random.Generator) -> Sky:
    """Three variable sources and one transient that transit inside the beam during the run.

    A drift scan sees a source only while the sky carries it through the primary beam
    (~12 min at dec 30°), so each one varies *during its own passage*: the sinusoids turn
    over on the beam-crossing time with their steepest change at transit, the step falls at
    transit, and the transient is on as the source enters the beam and off from just
    before transit (a fading burst, seen on and then off in consecutive images).
    """
    t0 = _jd(cfg.start)
    dur_d = cfg.n_chunks * inst.CHUNK_S / 86400.0
    when = t0 + dur_d * np.array([0.25, 0.5, 0.75, 0.5])
    ra, dec = meridian_icrs(when, cfg.dec_deg, inst.OVRO)
    # offsets within the half-power radius (~1.3 deg) so they stay well inside the beam
    ddec = np.array([0.6, -0.8, 0.3, -0.4]) + rng.uniform(-0.1, 0.1, 4)
    dec = np.clip(dec + ddec, -89.9, 89.9)
    transit = when - 2400000.5
    cross_s = beam_crossing_s(cfg.dec_deg)
    flux = np.round(rng.uniform(0.08, 0.3, 4), 4)
    var = (
        {"model": "sinusoid", "amplitude": 0.4, "period_s": 1.6 * cross_s,
         "t0_mjd": float(transit[0])},
        {"model": "step", "ratio": 1.6, "t_step_mjd": float(transit[1])},
        {"model": "sinusoid", "amplitude": 0.35, "period_s": 2.4 * cross_s,
         "t0_mjd": float(transit[2])},
        {"model": "transient", "t_on_mjd": float(transit[3]) - 15.0 / 1440,
         "t_off_mjd": float(transit[3]) - 2.5 / 1440},
    )
    return Sky(names=("SIM-VAR-1", "SIM-VAR-2", "SIM-VAR-3", "SIM-TRN-1"), ra_deg=ra % 360,
               dec_deg=dec, flux_jy=flux, spectral_index=np.array([-0.7, -0.5, -0.9, -0.3]),
               kind=("variable",) * 3 + ("transient",), variability=var)


def full_sky(cfg: SimConfig, rng: np.random.Generator) -> Sky:
    """Catalog, calibrators, injected and extra sources, as configured."""
    parts: list[Sky] = []
    if cfg.catalog:
        parts.append(load_catalog(cfg.catalog_path))
    if cfg.calibrators:
        parts.append(load_calibrators(cfg.calibrators_path))
    if cfg.inject:
        parts.append(injected_sources(cfg, rng))
    if cfg.extra_sources is not None:
        parts.append(cfg.extra_sources)
    sky = Sky(names=(), ra_deg=np.zeros(0), dec_deg=np.zeros(0), flux_jy=np.zeros(0),
              spectral_index=np.zeros(0), kind=())
    for p in parts:
        sky = sky + p
    return sky


@dataclass(frozen=True, kw_only=True, eq=False)
class ChunkSky:
    """Sources of one chunk: directions (nsrc, ntime, 3) ENU and beam angle (nsrc, ntime)."""

    sky: Sky
    enu: np.ndarray
    theta: np.ndarray
    mjd: np.ndarray

    def apparent(self, freqs_hz: np.ndarray) -> np.ndarray:
        """(nsrc, ntime, nchan) beam-attenuated flux densities, Jy."""
        spec = np.stack([self.sky.spectrum(freqs_hz, m) for m in self.mjd], axis=1)
        return spec * airy_power(self.theta[:, :, None], freqs_hz[None, None, :])


def chunk_sky(cfg: SimConfig, sky: Sky, times_jd: np.ndarray, lst: np.ndarray) -> ChunkSky:
    """Sources near the beam during a chunk whose apparent flux reaches the cut."""
    ra_c, dec_c = meridian_icrs(times_jd[[0, -1]], cfg.dec_deg, inst.OVRO)
    ra0, d0 = np.radians(ra_c.mean()), np.radians(dec_c.mean())
    ra, dec = np.radians(sky.ra_deg), np.radians(sky.dec_deg)
    cos_sep = (np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - ra0))
    drift = np.radians(360.0 / 86164.1 * inst.CHUNK_S / 2) * np.cos(d0)
    near = np.flatnonzero(cos_sep >= np.cos(np.radians(cfg.search_radius_deg) + drift))
    cand = sky.take(near)
    enu = source_enu(cand.ra_deg, cand.dec_deg, times_jd, lst, inst.OVRO)
    theta = np.arccos(np.clip(enu @ pointing_enu(cfg.dec_deg, inst.OVRO), -1, 1))
    mjd = times_jd - 2400000.5
    cs = ChunkSky(sky=cand, enu=enu, theta=theta, mjd=mjd)
    edges = np.array([inst.subband_fine_frequencies(15)[-1], inst.subband_fine_frequencies(0)[0],
                      1.4e9])
    peak = cs.apparent(edges).max(axis=(1, 2)) if len(cand) else np.zeros(0)
    # Injected sources count at their nominal flux: a transient that is off during this
    # chunk is still in the beam, in the truth and (at zero flux) in the prediction.
    injected = np.array([k in ("variable", "transient") for k in cand.kind], bool)
    nominal = cand.flux_jy * airy_power(theta.min(axis=1), 1.4e9) if len(cand) else peak
    # A source bright enough at its transit stays in while it is above 1 % of the cut: a
    # per-chunk cut alone would switch a steady source off half-way through its passage
    # (a fake variable); at 1 % of the cut it is far below the noise.
    at_transit = cand.flux_jy * airy_power(np.radians(np.abs(cand.dec_deg - cfg.dec_deg)),
                                           1.4e9) if len(cand) else peak
    keep = np.flatnonzero((peak >= cfg.min_apparent_jy)
                          | (injected & (nominal >= cfg.min_apparent_jy))
                          | ((at_transit >= cfg.min_apparent_jy)
                             & (peak >= 0.01 * cfg.min_apparent_jy)))
    return ChunkSky(sky=cand.take(keep), enu=enu[keep], theta=theta[keep], mjd=mjd)


def draw_rfi(rng: np.random.Generator) -> dict[str, Any]:
    """Persistent narrow-band RFI channels (GPS L3 and three more) and their strengths."""
    fine = np.concatenate([inst.subband_fine_frequencies(sb) for sb in range(16)])
    chans = [int(np.argmin(np.abs(fine - GPS_L3_HZ)))]
    chans += rng.choice(len(fine), 3, replace=False).tolist()
    return {"channels_hz": fine[chans].tolist(),
            "amplitudes_jy": np.round(rng.uniform(50, 500, len(chans)), 1).tolist(),
            "bursts": []}


def chunk_bursts(rng: np.random.Generator, chunk: int, times_jd: np.ndarray) -> list[dict]:
    """One or two short broadband bursts in a chunk: (integration, frequency range, Jy)."""
    out = []
    for _ in range(int(rng.integers(1, 3))):
        lo = rng.uniform(1311.4e6, 1450e6)
        out.append({"chunk": chunk, "integration": int(rng.integers(0, len(times_jd))),
                    "time_jd": 0.0, "freq_lo_hz": lo, "freq_hi_hz": lo + rng.uniform(10e6, 50e6),
                    "amplitude_jy": float(np.round(rng.uniform(20, 100), 1))})
    for b in out:
        b["time_jd"] = float(times_jd[b["integration"]])
    return out


def _add_rfi(vis: np.ndarray, fine: np.ndarray, rfi: dict, bursts: list[dict],
             rng: np.random.Generator) -> None:
    """Add RFI to ``vis`` (ntime, nbl, nchan, npol) in place, random phase per baseline."""
    nt, nbl = vis.shape[:2]
    half = inst.CHANNEL_WIDTH_HZ / 2
    for f, amp in zip(rfi["channels_hz"], rfi["amplitudes_jy"], strict=True):
        hit = np.flatnonzero(np.abs(fine - f) < half)
        if hit.size:
            ph = rng.uniform(0, 2 * np.pi, (nt, nbl, 1, 1))
            vis[:, :, hit, :] += (amp * np.exp(1j * ph)).astype(vis.dtype)
    for b in bursts:
        hit = np.flatnonzero((fine >= b["freq_lo_hz"]) & (fine <= b["freq_hi_hz"]))
        if hit.size:
            ph = rng.uniform(0, 2 * np.pi, (nbl, 1, 1))
            vis[b["integration"], :, hit[0]:hit[-1] + 1, :] += \
                (b["amplitude_jy"] * np.exp(1j * ph)).astype(vis.dtype)


def simulate_subband(cfg: SimConfig, cs: ChunkSky, sb: int, *, ant_enu: np.ndarray,
                     a1: np.ndarray, a2: np.ndarray, gains: GainModel, times_jd: np.ndarray,
                     rng: np.random.Generator, rfi: dict | None = None,
                     bursts: list[dict] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Visibilities of one subband: (ntime, nbl, nchan_out, 2) complex64, and their freqs."""
    fine = inst.subband_fine_frequencies(sb)
    nt, nbl, nout = len(times_jd), len(a1), cfg.channels_per_subband
    apparent = cs.apparent(fine)                                       # (nsrc, nt, 48)
    model = np.empty((nt, nbl, fine.size), np.complex64)
    for t in range(nt):
        src = PointSources(l=cs.enu[:, t, 0], m=cs.enu[:, t, 1], w_coeff=cs.enu[:, t, 2],
                           flux=apparent[:, t, :])
        model[t] = predict(None, fine, src, antennas=(ant_enu, a1, a2))
    auto = a1 == a2
    if cfg.sefd_jy and auto.any():
        model[:, auto, :] += np.float32(cfg.sefd_jy)   # system noise power dominates autos
    g = gains.evaluate(times_jd, fine).astype(np.complex64)            # (nant, nt, 48, 2)
    gg = g[a1].transpose(1, 0, 2, 3) * g[a2].conj().transpose(1, 0, 2, 3)   # (nt, nbl, 48, 2)
    vis = gg * model[..., None]
    if rfi is not None:
        _add_rfi(vis, fine, rfi, bursts or [], rng)
    freqs = inst.average_channels(fine[None, :], nout, axis=1)[0]
    if nout < fine.size:
        vis = _average_delay_tracked(vis, fine, freqs, ant_enu, a1, a2,
                                     pointing_enu(cfg.dec_deg, inst.OVRO))
    if cfg.noise and cfg.sefd_jy > 0:
        width = inst.CHANNEL_WIDTH_HZ * (inst.CHANNELS_PER_SUBBAND // nout)
        sigma = cfg.sefd_jy / math.sqrt(2 * width * inst.INTEGRATION_S)
        noise = rng.standard_normal((nt, nbl, nout, 2, 2), dtype=np.float32) * np.float32(sigma)
        noise = noise[..., 0] + 1j * noise[..., 1]
        if auto.any():
            # autos are real total power P, with radiometer scatter P / sqrt(dnu tau)
            level = inst.average_channels(model[:, auto, :].real, nout, axis=2)
            noise[:, auto] = (noise[:, auto].real / sigma * level[..., None]
                              / math.sqrt(width * inst.INTEGRATION_S))
        # noise enters before the gains: calibrated data carry the radiometer sigma
        vis += inst.average_channels(gg, nout, axis=2) * noise
    if auto.any():
        vis[:, auto] = vis[:, auto].real   # autos are real by construction; drop round-off
    return vis.astype(np.complex64), freqs


def _average_delay_tracked(vis: np.ndarray, fine: np.ndarray, out: np.ndarray,
                           ant_enu: np.ndarray, a1: np.ndarray, a2: np.ndarray,
                           pointing: np.ndarray) -> np.ndarray:
    """Average channels as a correlator that delay-tracks the pointing centre does.

    Unprojected visibilities carry the full geometric delay (hundreds of metres on long
    baselines), which would decorrelate them over a few MHz. The correlator removes the
    delay towards the pointing before averaging; the file stays unprojected, so the
    delay is put back at the output channel centres.
    """
    w = (ant_enu[a2] - ant_enu[a1]) @ pointing                        # (nbl,) metres
    k = 2j * np.pi / 299_792_458.0
    track = np.exp(-k * w[:, None] * fine[None, :]).astype(np.complex64)
    avg = inst.average_channels(vis * track[None, :, :, None], out.size, axis=2)
    return avg * np.exp(k * w[:, None] * out[None, :]).astype(np.complex64)[None, :, :, None]


@dataclass(frozen=True, kw_only=True, eq=False)
class RunSetup:
    """What every chunk of a run shares: array, sky, gains, RFI and the file-name offsets."""

    layout: inst.Layout
    ant_idx: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    sky: Sky
    gains: GainModel
    rfi: dict | None
    telescope: Any
    ant_enu: np.ndarray
    ant_numbers: np.ndarray
    offsets: np.ndarray   # (n_chunks, 16) seconds each file's name is off its chunk's start


@dataclass(frozen=True, kw_only=True, eq=False)
class ChunkPlan:
    """One chunk's times, sources in the beam, RFI bursts and file names."""

    k: int
    start: datetime
    times_jd: np.ndarray
    sky: ChunkSky
    bursts: list[dict]
    names: list[str]


def run_setup(cfg: SimConfig) -> RunSetup:
    """Draw the run's sky, gains and RFI from the seed (call inside ``offline_iers``)."""
    layout = inst.load_layout(cfg.layout_path)
    ant_idx = layout.select(cfg.n_antennas)
    a1, a2 = baseline_pairs(len(ant_idx), autos=cfg.autos)
    seeds = np.random.SeedSequence(cfg.seed)
    rng_sky, rng_gain, rng_names, rng_rfi = (np.random.default_rng(s) for s in seeds.spawn(4))
    sky = full_sky(cfg, rng_sky)
    t0 = _jd(cfg.start)
    gains = (GainModel.draw(rng_gain, len(ant_idx), t_ref_jd=t0) if cfg.gains
             else GainModel.unit(len(ant_idx), t_ref_jd=t0))
    rfi = draw_rfi(rng_rfi) if cfg.rfi else None
    telescope = make_telescope(layout, ant_idx)
    # one draw of all chunks' offsets is the same stream as one draw per chunk
    offsets = rng_names.uniform(-cfg.name_jitter_s, cfg.name_jitter_s,
                                (cfg.n_chunks, inst.N_SUBBANDS))
    return RunSetup(layout=layout, ant_idx=ant_idx, a1=a1, a2=a2, sky=sky, gains=gains,
                    rfi=rfi, telescope=telescope, ant_enu=telescope.get_enu_antpos(),
                    ant_numbers=np.asarray(telescope.antenna_numbers), offsets=offsets)


def file_names(cfg: SimConfig, offsets: np.ndarray, k: int) -> list[str]:
    """Chunk ``k``'s 16 file names, sb00 first."""
    start_k = cfg.chunk_start(k)
    return [(start_k + timedelta(seconds=float(offsets[k, sb]))).strftime(NAME_FORMAT)
            + f"_sb{sb:02d}.hdf5" for sb in range(inst.N_SUBBANDS)]


def name_offsets(cfg: SimConfig) -> np.ndarray:
    """(n_chunks, 16) name offsets, as :func:`run_setup` draws them, without the rest."""
    rng_names = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[2])
    return rng_names.uniform(-cfg.name_jitter_s, cfg.name_jitter_s,
                             (cfg.n_chunks, inst.N_SUBBANDS))


def plan_chunk(cfg: SimConfig, setup: RunSetup, k: int) -> ChunkPlan:
    """Chunk ``k``'s times, sources and bursts (no visibilities yet)."""
    from pyuvdata.utils.times import get_lst_for_time  # noqa: PLC0415

    start_k = cfg.chunk_start(k)
    times = _jd(start_k) + (np.arange(inst.INTEGRATIONS_PER_CHUNK) + 0.5) \
        * inst.INTEGRATION_S / 86400.0
    lst = get_lst_for_time(times, telescope_loc=setup.layout.site.earth_location())
    cs = chunk_sky(cfg, setup.sky, times, lst)
    bursts = chunk_bursts(np.random.default_rng([cfg.seed, k, 7]), k, times) \
        if setup.rfi is not None else []
    return ChunkPlan(k=k, start=start_k, times_jd=times, sky=cs, bursts=bursts,
                     names=file_names(cfg, setup.offsets, k))


def write_subband(cfg: SimConfig, setup: RunSetup, chunk: ChunkPlan, sb: int,
                  incoming: Path) -> Path:
    """Predict and write one subband file of ``chunk`` (atomically); returns its path."""
    k = chunk.k
    rng = np.random.default_rng([cfg.seed, k, sb])
    vis, freqs = simulate_subband(cfg, chunk.sky, sb, ant_enu=setup.ant_enu, a1=setup.a1,
                                  a2=setup.a2, gains=setup.gains, times_jd=chunk.times_jd,
                                  rng=rng, rfi=setup.rfi, bursts=chunk.bursts)
    uvd = build_uvdata(
        telescope=setup.telescope, ant_numbers=setup.ant_numbers, a1=setup.a1, a2=setup.a2,
        times_jd=chunk.times_jd, freqs_hz=freqs, data=vis, dec_deg=cfg.dec_deg,
        channel_width_hz=inst.CHANNEL_WIDTH_HZ * 48 / cfg.channels_per_subband,
        extra={"subband": sb, "simulated": True, "sim_seed": cfg.seed},
        history=f"contimg simulate seed={cfg.seed} chunk={k} sb={sb:02d}")
    path = Path(incoming) / chunk.names[sb]
    write_atomic(uvd, path)
    return path


def _chunk_truth(chunk: ChunkPlan, offsets: np.ndarray) -> dict:
    return {"start_utc": chunk.start.strftime(NAME_FORMAT),
            "times_jd": chunk.times_jd.tolist(), "files": list(chunk.names),
            "name_offsets_s": offsets[chunk.k].tolist(), "sources": list(chunk.sky.sky.names)}


def write_truth(incoming: Path, cfg: SimConfig, setup: RunSetup | None = None) -> Path:
    """Write the run's truth file from the seed alone (no visibilities are predicted)."""
    with offline_iers():
        setup = setup if setup is not None else run_setup(cfg)
        used: dict[str, int] = {}
        chunks = []
        for k in range(cfg.n_chunks):
            chunk = plan_chunk(cfg, setup, k)
            _tally_chunk(chunk, setup, used)
            chunks.append(_chunk_truth(chunk, setup.offsets))
        truth = _truth_dict(cfg, setup.layout, setup.ant_idx, setup.sky, used, setup.gains,
                            setup.rfi, chunks)
    return save_truth(truth_path(Path(incoming), cfg.start), truth)


def simulate(home_incoming: Path, cfg: SimConfig, *,
             progress: Callable[[int, int], None] | None = None) -> SimResult:
    """Write every chunk's 16 subband files into ``home_incoming`` and the truth file."""
    import time  # noqa: PLC0415

    t_start = time.perf_counter()
    incoming = Path(home_incoming)
    incoming.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    used: dict[str, int] = {}
    chunks: list[dict] = []
    total = cfg.n_chunks * inst.N_SUBBANDS
    with offline_iers():
        setup = run_setup(cfg)
        for k in range(cfg.n_chunks):
            chunk = plan_chunk(cfg, setup, k)
            _tally_chunk(chunk, setup, used)
            for sb in range(inst.N_SUBBANDS):
                files.append(write_subband(cfg, setup, chunk, sb, incoming))
                if progress is not None:
                    progress(k * inst.N_SUBBANDS + sb + 1, total)
            chunks.append(_chunk_truth(chunk, setup.offsets))
        truth = _truth_dict(cfg, setup.layout, setup.ant_idx, setup.sky, used, setup.gains,
                            setup.rfi, chunks)
    out = save_truth(truth_path(incoming, cfg.start), truth)
    return SimResult(files=files, truth=out, seconds=time.perf_counter() - t_start)


def _tally_chunk(chunk, setup: RunSetup, used: dict[str, int]) -> None:
    """Count the chunk's sources into ``used`` and add its RFI bursts to the run's truth."""
    for name in chunk.sky.sky.names:
        used[name] = used.get(name, 0) + 1
    if setup.rfi is not None:
        setup.rfi["bursts"].extend(chunk.bursts)


def _truth_dict(cfg: SimConfig, layout: inst.Layout, ant_idx: np.ndarray, sky: Sky,
                used: dict[str, int], gains: GainModel, rfi: dict | None,
                chunks: list[dict]) -> dict[str, Any]:
    width = inst.CHANNEL_WIDTH_HZ * (inst.CHANNELS_PER_SUBBAND // cfg.channels_per_subband)
    config = {k: v for k, v in asdict(cfg).items() if k != "extra_sources"}
    sources, curves = [], {}
    for i, name in enumerate(sky.names):
        if name not in used:
            continue
        var = sky.variability[i]
        sources.append({"name": name, "ra_deg": float(sky.ra_deg[i]),
                        "dec_deg": float(sky.dec_deg[i]), "flux_jy": float(sky.flux_jy[i]),
                        "spectral_index": float(sky.spectral_index[i]), "kind": sky.kind[i],
                        "pb_coeffs": list(sky.pb_coeffs[i]), "variability": var,
                        "chunks": used[name]})
        if var is not None:
            one = sky.take([i])
            mjd = np.concatenate([np.asarray(c["times_jd"]) for c in chunks]) - 2400000.5
            curves[name] = {"mjd": mjd.tolist(),
                            "flux_jy": [float(one.flux_at(m)[0]) for m in mjd]}
    return {
        "config": config, "dec_deg": cfg.dec_deg,
        "site": asdict(layout.site),
        "antennas": {"names": [layout.names[i] for i in ant_idx],
                     "ecef_m": layout.ecef_m[ant_idx].tolist()},
        "frequencies": {"channel_width_hz": width, "channels_per_subband":
                        cfg.channels_per_subband, "order": "descending within a file; "
                        "sb00 highest", "band_low_edge_hz": inst.BAND_LOW_EDGE_HZ},
        "integration_s": inst.INTEGRATION_S, "autos": cfg.autos,
        "beam": {"model": "airy", "diameter_m": inst.DISH_DIAMETER_M},
        "noise": {"sefd_jy": cfg.sefd_jy, "enabled": cfg.noise,
                  "sigma_jy": (cfg.sefd_jy / math.sqrt(2 * width * inst.INTEGRATION_S)
                               if cfg.noise else 0.0),
                  "note": "per real/imag part of a cross visibility before gains"},
        "gains": {**gains.to_dict(), "enabled": cfg.gains,
                  "convention": "V_obs[a1,a2] = g[a1] conj(g[a2]) V; pols XX, YY"},
        "sources": sources, "lightcurves": curves, "chunks": chunks,
        "rfi": rfi or {"channels_hz": [], "amplitudes_jy": [], "bursts": []},
    }
