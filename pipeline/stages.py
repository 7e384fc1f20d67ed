"""The stages and periodic tasks this version of contimg ships, in one registry."""

from __future__ import annotations

from pipeline.calibration.stage import calibrate_stage, prepare_calibrate, record_calibrate
from pipeline.convert import convert_stage
from pipeline.ingest import IngestConfig, Ingester
from pipeline.runner import StageRegistry

#: Seconds between scans of home/incoming.
INGEST_EVERY_S = 30.0


def default_registry(*, ingest: IngestConfig | None = None) -> StageRegistry:
    """Registry used by `contimg serve` and `contimg process`."""
    registry = StageRegistry()
    # One Ingester per registry: it remembers file sizes between its own scans.
    registry.register_task("ingest", Ingester(config=ingest or IngestConfig()).scan,
                           every_s=INGEST_EVERY_S)
    registry.register_stage("convert", convert_stage)
    registry.register_stage("calibrate", calibrate_stage, prepare=prepare_calibrate,
                            record=record_calibrate)
    return registry
