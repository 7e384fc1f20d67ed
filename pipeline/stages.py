"""The stages and periodic tasks this version of contimg ships, in one registry."""

from __future__ import annotations

from pipeline.runner import StageRegistry


def default_registry() -> StageRegistry:
    """Registry used by `contimg serve` and `contimg process`."""
    return StageRegistry()
