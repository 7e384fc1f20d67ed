-- Photometry and variability beyond 0001. No index on photometry: an ART index costs
-- 0.2–2 s per appended image at 100 M rows (DESIGN). Re-measuring an image deletes its
-- rows first; photometry_runs says which images have rows, so a first measurement
-- never scans the table. Rows go in sorted by source_id; the unsorted tail (runs with
-- sorted = false) is re-sorted nightly by Store.resort_photometry_tail.

ALTER TABLE photometry ADD COLUMN local_rms_jy DOUBLE;   -- noise at the position (PB-corrected)
ALTER TABLE photometry ADD COLUMN background_jy DOUBLE;  -- fitted local background, Jy/beam
ALTER TABLE photometry ADD COLUMN pb DOUBLE;             -- primary-beam power at the position
ALTER TABLE photometry ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;  -- bit 1 edge, bit 2 NaN

ALTER TABLE variability ADD COLUMN mean_jy DOUBLE;       -- unweighted mean flux
ALTER TABLE variability ADD COLUMN max_jy DOUBLE;
ALTER TABLE variability ADD COLUMN min_jy DOUBLE;
ALTER TABLE variability ADD COLUMN max_snr DOUBLE;
ALTER TABLE variability ADD COLUMN n_detected INTEGER;   -- measurements with SNR >= 5
ALTER TABLE variability ADD COLUMN first_mjd DOUBLE;
ALTER TABLE variability ADD COLUMN last_mjd DOUBLE;

ALTER TABLE sources ADD COLUMN first_image_id BIGINT;    -- detected sources: where found

-- One row per measured image.
CREATE TABLE photometry_runs (
    image_id      BIGINT PRIMARY KEY,
    observation_id VARCHAR NOT NULL,
    mjd           DOUBLE NOT NULL,
    n_forced      INTEGER NOT NULL,
    n_new         INTEGER NOT NULL,
    n_islands     INTEGER NOT NULL,
    sorted        BOOLEAN NOT NULL DEFAULT false,
    measured_utc  TIMESTAMP NOT NULL
);
