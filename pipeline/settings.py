"""Operator settings: one config per stage, read from ``<home>/contimg.toml``.

The file is optional; each section names a stage's config dataclass and each key one
of its fields, so an operator changes only what differs from the defaults::

    [imaging]
    fov_deg = 2.0
    niter = 500

    [calibration]
    window_h = 6.0

A typo must not silently leave a default in force on a telescope: an unknown section or
key, a value of the wrong type, or one the config rejects stops the command with one line
naming the file, ``section.key`` and the remedy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.auth_config import AuthConfig
from pipeline.calibration.registry import CalibrationConfig
from pipeline.errors import ContimgError
from pipeline.home import Home
from pipeline.imaging.config import ImagingConfig
from pipeline.ingest.config import IngestConfig
from pipeline.jobs.runner_config import RunnerConfig
from pipeline.photometry.forced import PhotometryConfig
from pipeline.photometry.thresholds import VariabilityThresholds

SETTINGS_FILE = "contimg.toml"


class SettingsError(ContimgError):
    """The settings file cannot be used as written."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The effective configuration of every stage, the runner and the variability gate."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    variability: VariabilityThresholds = field(default_factory=VariabilityThresholds)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)


def sections() -> dict[str, type]:
    """Section name → the config dataclass it sets, in file order."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def settings_path(home: Home) -> Path:
    """Where a home's settings file lives."""
    return home.root / SETTINGS_FILE


def load_settings(home: Home) -> Settings:
    """The home's settings: ``contimg.toml`` over the defaults (all defaults if absent)."""
    path = settings_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(path, f"cannot be read ({exc}); fix its permissions or "
                                  "encoding (UTF-8), or remove it for the defaults") from None
    return parse_settings(text, path=path)


def parse_settings(text: str, *, path: Path) -> Settings:
    """Settings from TOML text; ``path`` is only used to name the file in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(path, f"is not valid TOML ({exc}); fix the line it names") from None
    known = sections()
    configs: dict[str, Any] = {}
    for name, body in doc.items():
        if not isinstance(body, dict):
            owners = [s for s, cls in known.items()
                      if name in {f.name for f in dataclasses.fields(cls)}]
            raise SettingsError(path, f"{name} = ... is outside any section; put it under "
                                      f"[{owners[0] if owners else 'SECTION'}] (valid "
                                      f"sections: {', '.join(known)})")
        if name not in known:
            raise SettingsError(path, f"unknown section [{name}]; valid sections: "
                                      f"{', '.join(known)}")
        configs[name] = _build(known[name], name, body, path)
    return Settings(**configs)


def _build(cls: type, section: str, body: dict[str, Any], path: Path) -> Any:
    """One config dataclass from its section's keys, each checked against the field type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = {}
    for key, value in body.items():
        if key not in names:
            raise SettingsError(path, f"unknown key {section}.{key}; valid keys of "
                                      f"[{section}]: {', '.join(names)}")
        values[key] = _coerce(value, hints[key], f"{section}.{key}", path)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        # The configs' own checks already name section.key in their message.
        raise SettingsError(path, f"[{section}]: {exc}; fix the value or remove the key "
                                  "for the default") from None


def _coerce(value: Any, hint: Any, where: str, path: Path) -> Any:
    """``value`` as the field type ``hint`` wants it, or a SettingsError naming ``where``."""
    options = _options(hint)
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        # TOML writes 2 for 2.0; a float field takes either.
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if isinstance(option, tuple) and value in option and not isinstance(value, bool):
            return value
    raise SettingsError(path, f"{where} = {value!r}: expected {_describe(options)}; "
                              "fix the value or remove the key for the default")


def _options(hint: Any) -> list[Any]:
    """The accepted value kinds of a field type: int, float, bool, str or a Literal's values.

    ``None`` is left out: TOML has no null, and leaving the key out keeps the default.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [o for arg in typing.get_args(hint) if arg is not type(None)
                for o in _options(arg)]
    if origin is Literal:
        return [tuple(typing.get_args(hint))]
    return [hint]


def _describe(options: list[Any]) -> str:
    words = []
    for option in options:
        if isinstance(option, tuple):
            words.append("one of " + ", ".join(repr(v) for v in option))
        else:
            words.append({bool: "true or false", int: "an integer", float: "a number",
                          str: "a string"}.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(words)


# --------------------------------------------------------------------------- writing
def toml_value(value: Any) -> str:
    """One value in TOML syntax (bool, int, float or str)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")


def sections_toml(tables: dict[str, dict[str, Any]]) -> str:
    """TOML text for ``{section: {key: value}}``; None values are written as comments."""
    lines: list[str] = []
    for section, body in tables.items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            # TOML has no null: an unset (derived) value is shown but not set.
            lines.append(f"# {key} = (unset)" if value is None
                         else f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def settings_tables(settings: Settings) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of every effective value."""
    return {name: {f.name: getattr(getattr(settings, name), f.name)
                   for f in dataclasses.fields(getattr(settings, name)) if f.init}
            for name in sections()}


def settings_toml(settings: Settings) -> str:
    """Every effective value as a TOML file that ``parse_settings`` reads back unchanged."""
    return sections_toml(settings_tables(settings))


def write_settings_file(home: Home, tables: dict[str, dict[str, Any]], *,
                        overwrite: bool = True) -> Path | None:
    """Write ``{section: {key: value}}`` to the home's settings file after checking it.

    Returns the path, or None when ``overwrite`` is false and a file is already there.
    """
    path = settings_path(home)
    if not overwrite and path.exists():
        return None
    text = sections_toml(tables)
    parse_settings(text, path=path)  # never leave a file behind that a command would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
