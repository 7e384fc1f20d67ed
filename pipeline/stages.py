"""The stages and periodic tasks this version of contimg ships, in one registry."""

from __future__ import annotations

from pipeline.calibration.stage import calibrate_stage, prepare_calibrate, record_calibrate
from pipeline.convert import convert_stage
from pipeline.imaging.stage import image_stage, record_image
from pipeline.ingest import IngestConfig, Ingester
from pipeline.photometry.stage import (
    RESORT_EVERY_S,
    measure_stage,
    prepare_measure,
    record_measure,
    resort_photometry_task,
)
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
    registry.register_stage("image", image_stage, record=record_image)
    registry.register_stage("measure", measure_stage, prepare=prepare_measure,
                            record=record_measure)
    # Lightcurves stay fast only while photometry is sorted by source (DESIGN).
    registry.register_task("resort-photometry", resort_photometry_task, every_s=RESORT_EVERY_S)
    return registry
