-- A reprocess run's observation that fails (quarantined) in one of the run's stages rolls
-- back to what it was before the run: its MS path, the calibration applied to it, its
-- current image. A launch keeps the first two here (the image's earlier version is in
-- image_versions already); the item keeps the error it failed with (state 'failed').

ALTER TABLE reprocess_items ADD COLUMN prior_ms_path VARCHAR;
ALTER TABLE reprocess_items ADD COLUMN error VARCHAR;

CREATE TABLE reprocess_saved_calibration AS SELECT * FROM calibration_applied LIMIT 0;
ALTER TABLE reprocess_saved_calibration ADD COLUMN run_id BIGINT;
