"""contimg pipeline: processing stages, the DuckDB store and the job runner (no UI)."""

__version__ = "0.1.0"
