"""Does a subband file come from this array? Its header checked against the instrument.

Ingest groups files by the time in their names and compares a group's files with each
other; neither notices a file that another telescope wrote (another site, band, channel
layout, antenna set) when it arrives alone or disagrees with nothing. Every file's header
is therefore checked on its own against what the instrument writes
(:mod:`pipeline.instrument.telescope` and the antenna layout in ``data/``):
``instrument_problems`` is a pure function of a ``HeaderRecord`` and an ``Instrument``;
``header_record`` makes the record from a metadata-only pyuvdata read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyuvdata import UVData
from pyuvdata import utils as uvutils

from pipeline.instrument import telescope as inst

#: A telescope location this far from the site is another observatory (the array spans
#: 2.5 km; a file may give another reference point on the same site).
SITE_TOLERANCE_M = 1000.0
#: An antenna this far from its pad's surveyed position is not that pad (pads are
#: metres apart; a resurvey moves one by centimetres).
POSITION_TOLERANCE_M = 1.0
#: Integration times are the correlator's clock count; anything else is another setup.
INTEGRATION_TOLERANCE_S = 1e-3
_SHOW = 4  # names listed in a message before "…"


@dataclass(frozen=True, kw_only=True, eq=False)
class HeaderRecord:
    """What one subband file's header says about the instrument that wrote it.

    freqs_hz, channel_widths_hz : (nchan,) Hz; integration_times_s : distinct values, s;
    antenna_ecef_m : (nant, 3) absolute ECEF metres of the antennas in the data, in the
    order of ``antenna_names``; site_ecef_m : (3,) the telescope location, ECEF metres.
    """

    source: str
    subband: int | None
    telescope_name: str
    site_ecef_m: np.ndarray
    freqs_hz: np.ndarray
    channel_widths_hz: np.ndarray
    polarizations: tuple[str, ...]
    integration_times_s: np.ndarray
    antenna_names: tuple[str, ...]
    antenna_ecef_m: np.ndarray
    n_rows: int
    n_reversed_rows: int  # rows with ant_1 > ant_2


@dataclass(frozen=True, kw_only=True, eq=False)
class Instrument:
    """What this array's subband files hold, and where its pads are.

    pad_ecef_m : (npad, 3) absolute ECEF metres of ``pad_names``; site_ecef_m : (3,).
    """

    name: str
    telescope_names: tuple[str, ...]
    site_ecef_m: np.ndarray
    band_hz: tuple[float, float]
    n_subbands: int
    fine_channels_per_subband: int
    subband_width_hz: float
    fine_channel_hz: float
    polarizations: tuple[str, ...]
    integration_s: float
    pad_names: tuple[str, ...]
    pad_ecef_m: np.ndarray
    layout_name: str

    @classmethod
    def from_layout(cls, layout: inst.Layout) -> Instrument:
        """The DSA-110 of :mod:`pipeline.instrument.telescope`, with ``layout``'s pads."""
        from astropy import units as u  # noqa: PLC0415

        loc = layout.site.earth_location()
        return cls(
            name="DSA-110", telescope_names=inst.TELESCOPE_NAMES,
            site_ecef_m=np.array([loc.x.to_value(u.m), loc.y.to_value(u.m),
                                  loc.z.to_value(u.m)]),
            band_hz=(inst.BAND_LOW_EDGE_HZ, inst.BAND_HIGH_EDGE_HZ),
            n_subbands=inst.N_SUBBANDS, fine_channels_per_subband=inst.CHANNELS_PER_SUBBAND,
            subband_width_hz=inst.SUBBAND_WIDTH_HZ, fine_channel_hz=inst.CHANNEL_WIDTH_HZ,
            polarizations=inst.POLARIZATIONS, integration_s=inst.INTEGRATION_S,
            pad_names=layout.names, pad_ecef_m=np.asarray(layout.ecef_m, float),
            layout_name=(f"{layout.path.parent.name}/{layout.path.name}" if layout.path
                         else "the antenna layout"))

    @classmethod
    def default(cls) -> Instrument:
        """The instrument with the shipped layout (``data/antennas.csv``)."""
        return cls.from_layout(inst.load_layout())

    def subband_edges_hz(self, sb: int) -> tuple[float, float]:
        """(lower, upper) edge of subband ``sb``; sb00 is the highest."""
        low = self.band_hz[0] + (self.n_subbands - 1 - sb) * self.subband_width_hz
        return low, low + self.subband_width_hz


def header_record(uvd: UVData, *, source: str | Path, subband: int | None) -> HeaderRecord:
    """The record of a UVData read without its data (``read(..., read_data=False)``)."""
    tel = uvd.telescope
    site = np.array([tel.location.x.to_value("m"), tel.location.y.to_value("m"),
                     tel.location.z.to_value("m")])
    used = np.union1d(uvd.ant_1_array, uvd.ant_2_array)
    index = {int(n): i for i, n in enumerate(tel.antenna_numbers)}
    rows = [index[int(a)] for a in used if int(a) in index]
    widths = np.broadcast_to(np.ravel(np.abs(uvd.channel_width)), np.ravel(uvd.freq_array).shape)
    return HeaderRecord(
        source=str(source), subband=subband, telescope_name=str(tel.name),
        site_ecef_m=site,
        freqs_hz=np.ravel(uvd.freq_array).astype(float), channel_widths_hz=widths.astype(float),
        polarizations=tuple(uvutils.polnum2str(int(p)).lower() for p in uvd.polarization_array),
        integration_times_s=np.unique(np.asarray(uvd.integration_time, float)),
        antenna_names=tuple(str(tel.antenna_names[i]) for i in rows),
        antenna_ecef_m=site + np.asarray(tel.antenna_positions, float)[rows],
        n_rows=int(uvd.Nblts),
        n_reversed_rows=int(np.count_nonzero(uvd.ant_1_array > uvd.ant_2_array)))


def _some(names: list[str]) -> str:
    return ", ".join(names[:_SHOW]) + ("…" if len(names) > _SHOW else "")


def _lat_lon(ecef_m: np.ndarray) -> str:
    lat, lon, _ = uvutils.LatLonAlt_from_XYZ(np.asarray(ecef_m, float))
    return f"lat {np.degrees(lat):.4f}°, lon {np.degrees(lon):.4f}°"


def _mhz(f: float) -> str:
    return f"{f / 1e6:.3f}"


def instrument_problems(rec: HeaderRecord, instrument: Instrument) -> list[str]:
    """Each field of ``rec`` that ``instrument`` never writes, as text naming it; [] if it fits."""
    ins = instrument
    out: list[str] = []
    if rec.telescope_name.upper() not in {n.upper() for n in ins.telescope_names}:
        out.append(f"telescope_name {rec.telescope_name!r} is not {ins.name} (its files say "
                   f"{' or '.join(repr(n) for n in ins.telescope_names)})")
    away = float(np.linalg.norm(rec.site_ecef_m - ins.site_ecef_m))
    if away > SITE_TOLERANCE_M:
        out.append(f"telescope location ({_lat_lon(rec.site_ecef_m)}) is {away / 1e3:.1f} km "
                   f"from {ins.name}'s site ({_lat_lon(ins.site_ecef_m)})")
    out += _channel_problems(rec, ins)
    if set(rec.polarizations) != set(ins.polarizations) or len(rec.polarizations) != len(
            ins.polarizations):
        out.append(f"polarization_array {list(rec.polarizations)} is not {ins.name}'s "
                   f"{list(ins.polarizations)}")
    off = [t for t in rec.integration_times_s
           if abs(t - ins.integration_s) > INTEGRATION_TOLERANCE_S]
    if off:
        out.append(f"integration_time {', '.join(f'{t:.3f}' for t in off[:_SHOW])} s is not "
                   f"{ins.name}'s {ins.integration_s:.3f} s")
    out += _antenna_problems(rec, ins)
    if rec.n_reversed_rows:
        out.append(f"ant_1_array > ant_2_array in {rec.n_reversed_rows} of {rec.n_rows} rows "
                   f"({ins.name}'s correlator writes every baseline with ant_1 <= ant_2)")
    return out


def _channel_problems(rec: HeaderRecord, ins: Instrument) -> list[str]:
    n, fine = rec.freqs_hz.size, ins.fine_channels_per_subband
    if n == 0:
        return [f"Nfreqs 0: the file holds no channels ({ins.name} writes {fine} per subband)"]
    out = []
    if fine % n:
        allowed = [k for k in range(fine, 0, -1) if fine % k == 0]
        out.append(f"Nfreqs {n} channels per subband: {ins.name}'s {fine} channels average "
                   f"only to {', '.join(map(str, allowed))}")
    else:
        want = ins.subband_width_hz / n
        bad = np.abs(rec.channel_widths_hz - want) > 1e-6 * want
        if bad.any():
            out.append(f"channel_width {rec.channel_widths_hz[bad][0] / 1e3:.3f} kHz is not "
                       f"{ins.name}'s {want / 1e3:.3f} kHz for {n} channels per subband")
    low = float(np.min(rec.freqs_hz - rec.channel_widths_hz / 2))
    high = float(np.max(rec.freqs_hz + rec.channel_widths_hz / 2))
    tol = ins.fine_channel_hz  # one correlator channel of slack for the edges
    band_lo, band_hi = ins.band_hz
    if low < band_lo - tol or high > band_hi + tol:
        out.append(f"freq_array {_mhz(low)}–{_mhz(high)} MHz is outside {ins.name}'s band "
                   f"{_mhz(band_lo)}–{_mhz(band_hi)} MHz")
    elif rec.subband is not None:
        sb_lo, sb_hi = ins.subband_edges_hz(rec.subband)
        if low < sb_lo - tol or high > sb_hi + tol:
            out.append(f"freq_array {_mhz(low)}–{_mhz(high)} MHz is not subband "
                       f"sb{rec.subband:02d}'s {_mhz(sb_lo)}–{_mhz(sb_hi)} MHz (the file "
                       "name's subband)")
    return out


def _antenna_problems(rec: HeaderRecord, ins: Instrument) -> list[str]:
    pads = {name: i for i, name in enumerate(ins.pad_names)}
    unknown = [n for n in rec.antenna_names if n not in pads]
    out = []
    if unknown:
        out.append(f"antenna_names: {len(unknown)} of {len(rec.antenna_names)} antennas are "
                   f"not pads of {ins.layout_name} ({_some(unknown)})")
    moved = []
    for name, xyz in zip(rec.antenna_names, rec.antenna_ecef_m, strict=True):
        if name in pads:
            d = float(np.linalg.norm(xyz - ins.pad_ecef_m[pads[name]]))
            if d > POSITION_TOLERANCE_M:
                moved.append(f"{name} {d:.1f} m")
    if moved:
        out.append(f"antenna_positions: {len(moved)} antennas are more than "
                   f"{POSITION_TOLERANCE_M:g} m from their pads in {ins.layout_name} "
                   f"({_some(moved)})")
    return out
