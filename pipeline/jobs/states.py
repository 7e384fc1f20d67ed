"""The observation state machine: states and the stages that move between them."""

from __future__ import annotations

from dataclasses import dataclass

STATES: tuple[str, ...] = (
    "pending", "converting", "converted", "calibrating", "calibrated",
    "imaging", "imaged", "measuring", "complete", "failed",
)
JOB_STATES: tuple[str, ...] = ("queued", "running", "retry", "done", "quarantined")


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One step of the state machine: ``from_state`` → ``running_state`` → ``to_state``."""

    name: str
    from_state: str
    running_state: str
    to_state: str


STAGES: tuple[StageSpec, ...] = (
    StageSpec(name="convert", from_state="pending", running_state="converting",
              to_state="converted"),
    StageSpec(name="calibrate", from_state="converted", running_state="calibrating",
              to_state="calibrated"),
    StageSpec(name="image", from_state="calibrated", running_state="imaging",
              to_state="imaged"),
    StageSpec(name="measure", from_state="imaged", running_state="measuring",
              to_state="complete"),
)


def stage_spec(name: str) -> StageSpec:
    """The stage called ``name``; ValueError naming the known ones otherwise."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(s.name for s in STAGES)}")
