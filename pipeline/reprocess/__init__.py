"""Reprocessing: send a selection of observations back to a stage with other settings."""

from pipeline.reprocess.overrides import OVERRIDE_SECTIONS, OverrideError, validate_overrides
from pipeline.reprocess.service import Plan, Reprocessor, selection_from_saved_query

__all__ = ["OVERRIDE_SECTIONS", "OverrideError", "Plan", "Reprocessor",
           "selection_from_saved_query",
           "validate_overrides"]
