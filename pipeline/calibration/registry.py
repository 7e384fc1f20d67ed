"""Which calibration tables calibrate an observation: validity windows, QA gate, selection.

Pure functions over plain records (no store, no files), so the rules are tested alone and
the server, a notebook and the calibration page all pick the same tables.

Rules: an accepted table is valid from ``window_h`` before to ``window_h`` after its
calibrator's transit. For an observation at time t the closest valid table is used; when
valid tables lie on both sides of t, gains are interpolated between the nearest one before
and the nearest one after (weights by time distance, summing to 1). With none valid, the
nearest accepted table within ``stale_limit_h`` is used with a warning; with none at all
(or only tables that failed QA) the observation waits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

HOURS_PER_DAY = 24.0

#: "chosen": a table an operator named for a reprocess run, instead of the rules' choice
SelectionKind = Literal["single", "interpolated", "stale", "chosen", "none"]


#: the RFI flaggers a calibration can run: pipeline.calibration.flagging's median/MAD
#: kernel, or Debian's ``aoflagger`` program
Flagger = Literal["robust", "aoflagger"]
FLAGGERS: tuple[str, ...] = get_args(Flagger)


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """Validity windows, the stale fallback and the QA gate of calibration tables."""

    window_h: float = 12.0
    stale_limit_h: float = 48.0
    min_snr: float = 10.0
    max_flagged_fraction: float = 0.3
    #: A calibrator this close to the pointing at mid-time makes an observation a transit.
    calibrator_radius_deg: float = 1.0
    #: Safety net for waiting observations; a registered table wakes them at once.
    wait_retry_s: float = 900.0
    #: RFI flagger before a solve: the median/MAD kernel or Debian's aoflagger program.
    flagger: Flagger = "robust"

    def __post_init__(self):
        if not self.window_h > 0:
            raise ValueError(f"calibration.window_h must be positive, got {self.window_h}")
        if self.stale_limit_h < self.window_h:
            raise ValueError("calibration.stale_limit_h must be at least window_h, got "
                             f"{self.stale_limit_h} < {self.window_h}")
        if not 0 <= self.max_flagged_fraction <= 1:
            raise ValueError("calibration.max_flagged_fraction must be within 0–1, got "
                             f"{self.max_flagged_fraction}")
        if self.flagger not in FLAGGERS:
            raise ValueError(f"calibration.flagger must be one of {', '.join(FLAGGERS)}, "
                             f"got {self.flagger!r}")
        if self.calibrator_radius_deg <= 0:
            raise ValueError("calibration.calibrator_radius_deg must be positive, got "
                             f"{self.calibrator_radius_deg}")


class QAFigures(Protocol):
    """What the QA gate reads (``pipeline.calibration.solve_ms.CalQA`` has these)."""

    snr: float
    flagged_fraction: float
    antennas_lost: int
    flux_ratio: float


@dataclass(frozen=True, kw_only=True)
class CaltableRecord:
    """One registered solve (bandpass + gain table pair) as selection sees it."""

    caltable_id: int
    calibrator: str
    transit_mjd: float
    valid_from_mjd: float
    valid_to_mjd: float
    qa_passed: bool
    b_path: str
    g_path: str

    def valid_at(self, mjd: float) -> bool:
        """Whether ``mjd`` lies inside this table's validity window (ends included)."""
        return self.valid_from_mjd <= mjd <= self.valid_to_mjd


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The tables that calibrate one observation.

    ``tables`` holds (caltable_id, b_path, g_path, weight); weights sum to 1. For
    "interpolated" the bandpass comes from the heavier table and gains are blended.
    ``warning`` says why a stale table was used, or why there is none.
    """

    kind: SelectionKind
    tables: tuple[tuple[int, str, str, float], ...] = ()
    warning: str | None = None

    def __post_init__(self):
        if (self.kind == "none") != (not self.tables):
            raise ValueError(f"selection {self.kind!r} with {len(self.tables)} table(s)")
        if self.tables and not math.isclose(sum(t[3] for t in self.tables), 1.0):
            raise ValueError(f"selection weights sum to {sum(t[3] for t in self.tables)}, "
                             "expected 1")

    @property
    def caltable_ids(self) -> tuple[int, ...]:
        """Ids of the tables used, heaviest first."""
        return tuple(t[0] for t in sorted(self.tables, key=lambda t: -t[3]))


def validity_window(transit_mjd: float, config: CalibrationConfig) -> tuple[float, float]:
    """(valid_from_mjd, valid_to_mjd) of a table solved on a transit at ``transit_mjd``."""
    half = config.window_h / HOURS_PER_DAY
    return transit_mjd - half, transit_mjd + half


def qa_verdict(qa: QAFigures, config: CalibrationConfig) -> tuple[bool, str | None]:
    """(passed, reason): reason names every figure outside the gate, None when passed."""
    problems = []
    if not qa.snr >= config.min_snr:  # NaN fails too
        problems.append(f"SNR {qa.snr:.1f} below {config.min_snr:g}")
    if not qa.flagged_fraction <= config.max_flagged_fraction:
        problems.append(f"flagged fraction {qa.flagged_fraction:.2f} above "
                        f"{config.max_flagged_fraction:g}")
    return (not problems, "; ".join(problems) or None)


def select_caltables(mjd: float, tables: Iterable[CaltableRecord],
                     config: CalibrationConfig) -> Selection:
    """The tables that calibrate an observation at ``mjd`` (mid-time, MJD)."""
    tables = list(tables)
    accepted = [t for t in tables if t.qa_passed]

    # Nearest first; at equal distance the later-registered table (re-solve) wins.
    def distance(t: CaltableRecord) -> tuple[float, int]:
        return abs(t.transit_mjd - mjd), -t.caltable_id

    valid = sorted((t for t in accepted if t.valid_at(mjd)), key=distance)
    if valid:
        before = [t for t in valid if t.transit_mjd <= mjd]
        after = [t for t in valid if t.transit_mjd > mjd]
        if before and after and before[0].transit_mjd < mjd:
            b, a = before[0], after[0]
            span = a.transit_mjd - b.transit_mjd
            w_before = (a.transit_mjd - mjd) / span
            return Selection(kind="interpolated", tables=(
                (b.caltable_id, b.b_path, b.g_path, w_before),
                (a.caltable_id, a.b_path, a.g_path, 1.0 - w_before)))
        best = valid[0]
        return Selection(kind="single", tables=((best.caltable_id, best.b_path, best.g_path,
                                                 1.0),))
    limit_d = config.stale_limit_h / HOURS_PER_DAY
    near = sorted((t for t in accepted if abs(t.transit_mjd - mjd) <= limit_d), key=distance)
    if near:
        best = near[0]
        hours = abs(best.transit_mjd - mjd) * HOURS_PER_DAY
        return Selection(
            kind="stale", tables=((best.caltable_id, best.b_path, best.g_path, 1.0),),
            warning=(f"caltable {best.caltable_id} ({best.calibrator}) is {hours:.1f} h from "
                     f"the observation, outside its ±{config.window_h:g} h window; used as "
                     f"the nearest within {config.stale_limit_h:g} h — solve a new "
                     "calibrator transit"))
    rejected = sum(not t.qa_passed and abs(t.transit_mjd - mjd) <= limit_d for t in tables)
    failed = f" ({rejected} failed QA)" if rejected else ""
    return Selection(kind="none", warning=(
        f"no accepted caltable within {config.stale_limit_h:g} h{failed}"))
