"""Setting overrides for one reprocess run, checked against the settings dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ContimgError
from pipeline.settings import Settings, SettingsError, parse_settings, sections, sections_toml

#: the stage each overridable settings section configures (what a run may change)
OVERRIDE_SECTIONS = {"calibration": "calibrate", "imaging": "image", "photometry": "measure"}
#: keys a run may set that are no setting of the file: ``calibration.caltable_id`` names
#: the registered caltable the run's calibrate stage applies instead of the registry's
#: choice (checked against the store at plan time, not by the settings parser)
RUN_KEYS = {"calibration": ("caltable_id",)}


class OverrideError(ContimgError):
    """An override that names no setting, or a value the setting refuses; names the key."""


def validate_overrides(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"imaging.niter": 50}`` or ``{"imaging": {"niter": 50}}`` → ``{section: {key: value}}``.

    Each key is checked as the settings file checks it (type, the config's own limits);
    an OverrideError names the first bad ``section.key``.
    """
    tables: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                _put(tables, f"{key}.{sub}", v)
        else:
            _put(tables, str(key), value)
    settings_part = {section: {k: v for k, v in values.items()
                               if k not in RUN_KEYS.get(section, ())}
                     for section, values in tables.items()}
    chosen = tables.get("calibration", {}).get("caltable_id")
    if chosen is not None and (isinstance(chosen, bool) or not isinstance(chosen, int)
                               or chosen <= 0):
        raise OverrideError(f"reprocess overrides: calibration.caltable_id = {chosen!r}: "
                            "expected the id of a registered caltable (a positive integer)")
    try:
        parse_settings(sections_toml(settings_part), path=Path("reprocess overrides"))
    except SettingsError as exc:
        raise OverrideError(str(exc)) from None
    except TypeError as exc:  # a value with no TOML form (a list, None)
        raise OverrideError(f"reprocess overrides: {exc}") from None
    return tables


def _put(tables: dict[str, dict[str, Any]], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if section not in OVERRIDE_SECTIONS or not key:
        raise OverrideError(f"reprocess overrides: {dotted!r} is not a setting a run can "
                            f"override; use section.key with section one of "
                            f"{', '.join(OVERRIDE_SECTIONS)}")
    known = {f.name for f in dataclasses.fields(sections()[section]) if f.init}
    known.update(RUN_KEYS.get(section, ()))
    if key not in known:
        raise OverrideError(f"reprocess overrides: unknown key {section}.{key}; valid keys "
                            f"of [{section}]: {', '.join(sorted(known))}")
    tables.setdefault(section, {})[key] = value


def apply_overrides(config: object, overrides: Mapping[str, Any]) -> object:
    """``config`` (a stage's config dataclass) with ``overrides`` replacing its fields.

    A run-only key (``RUN_KEYS``: no field of any config) is left out.
    """
    run_only = {k for keys in RUN_KEYS.values() for k in keys}
    fields = {k: v for k, v in overrides.items() if k not in run_only}
    if not fields or not dataclasses.is_dataclass(config):
        return config
    return dataclasses.replace(config, **fields)


def chosen_caltable(overrides: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The caltable id a run's overrides name for its calibrate stage, or None."""
    chosen = (overrides.get("calibration") or {}).get("caltable_id")
    return None if chosen is None else int(chosen)


def effective_settings(base: Settings, overrides: Mapping[str, Mapping[str, Any]]) -> Settings:
    """``base`` with a run's overrides applied (what the run's stages will use)."""
    return dataclasses.replace(base, **{
        section: apply_overrides(getattr(base, section), values)
        for section, values in overrides.items()})
