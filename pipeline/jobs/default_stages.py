"""The stages and periodic tasks this version of contimg ships, in one registry."""

from __future__ import annotations

from functools import partial

from pipeline.calibration.stage import calibrate_stage, prepare_calibrate, record_calibrate
from pipeline.convert.stage import convert_stage
from pipeline.imaging.stage import image_stage, record_image, stage_inputs
from pipeline.ingest.ingester import Ingester
from pipeline.jobs.runner import StageRegistry
from pipeline.photometry.stage import (
    RESORT_EVERY_S,
    measure_stage,
    prepare_measure,
    record_measure,
    resort_photometry_task,
)
from pipeline.provenance import ProvenanceRecorder
from pipeline.reprocess.hooks import finish_items, rollback_failed, run_overrides
from pipeline.settings import Settings

#: Seconds between scans of home/incoming.
INGEST_EVERY_S = 30.0


def default_registry(settings: Settings | None = None) -> StageRegistry:
    """Registry used by `contimg serve` and `contimg process`, configured by ``settings``.

    ``settings`` None means every default.
    """
    settings = settings or Settings()
    registry = StageRegistry()
    # One Ingester per registry: it remembers file sizes between its own scans.
    registry.register_task("ingest", Ingester(config=settings.ingest).scan,
                           every_s=INGEST_EVERY_S)
    registry.register_stage("convert", convert_stage)
    # The hooks take their config as a keyword: partial keeps their logic and hands the
    # operator's config both to the server-side hooks and (through ctx.inputs) the stage.
    registry.register_stage(
        "calibrate", calibrate_stage,
        prepare=partial(prepare_calibrate, config=settings.calibration),
        record=partial(record_calibrate, config=settings.calibration))
    registry.register_stage("image", image_stage, prepare=stage_inputs(settings.imaging),
                            record=record_image)
    registry.register_stage(
        "measure", measure_stage,
        prepare=partial(prepare_measure, config=settings.photometry),
        record=partial(record_measure, thresholds=settings.variability))
    # Lightcurves stay fast only while photometry is sorted by source (DESIGN).
    registry.register_task("resort-photometry", resort_photometry_task, every_s=RESORT_EVERY_S)
    with_reprocessing(registry)
    return registry


def with_reprocessing(registry: StageRegistry) -> StageRegistry:
    """Hook reprocess runs and provenance into ``registry``'s stages (in place; returned).

    An input hook hands every stage its reprocess run's overrides; after every record the
    product's provenance is written, and a run's observation is done at the last stage;
    one that fails (quarantined) rolls back to its products from before the run.
    """
    registry.input_hooks.append(run_overrides)
    registry.on_quarantine.append(rollback_failed)
    specs = registry.specs()
    registry.after_record.append(ProvenanceRecorder())
    if specs:
        registry.after_record.append(finish_items(specs[-1].name))
    return registry
