-- Provenance of every product, reprocess runs, and earlier versions of images.
--
-- images stays one row per observation, the current version: every existing query keeps
-- returning it. A rerun that replaces an image first copies the old row into
-- image_versions (same image id, its version number, the whole row as JSON), all in the
-- transaction that records the new one; photometry keeps pointing at the image id, so a
-- remeasurement replaces its rows instead of adding to them.

CREATE SEQUENCE provenance_id_seq;
CREATE SEQUENCE reprocess_runs_id_seq;

ALTER TABLE images ADD COLUMN version INTEGER DEFAULT 1;

-- One row per product a stage recorded: what it was made with and from.
CREATE TABLE provenance (
    id               BIGINT PRIMARY KEY DEFAULT nextval('provenance_id_seq'),
    observation_id   VARCHAR NOT NULL,
    stage            VARCHAR NOT NULL,      -- convert calibrate image measure
    product_kind     VARCHAR NOT NULL,      -- ms calibrated_ms image photometry
    product_id       VARCHAR,               -- image id, MS path, ...
    product_version  INTEGER,               -- the image's version (image, photometry)
    run_id           BIGINT,                -- the reprocess run, NULL for the first pass
    settings         JSON NOT NULL,         -- the stage config in force, every field
    caltables        JSON NOT NULL,         -- [{caltable_id, weight, calibrator, ...}]
    inputs           JSON NOT NULL,         -- ids and times of what it was made from
    contimg_version  VARCHAR NOT NULL,
    git_commit       VARCHAR NOT NULL,      -- 'not a git checkout' for an installed copy
    created_utc      TIMESTAMP NOT NULL
);
CREATE INDEX provenance_observation ON provenance (observation_id);

-- An image replaced by a rerun: the row it had, kept as the earlier version.
CREATE TABLE image_versions (
    image_id        BIGINT NOT NULL,
    observation_id  VARCHAR NOT NULL,
    version         INTEGER NOT NULL,
    path            VARCHAR NOT NULL,
    rms_jy          DOUBLE,
    n_iter          INTEGER,
    qa_passed       BOOLEAN,
    qa_reason       VARCHAR,
    created_utc     TIMESTAMP NOT NULL,
    superseded_utc  TIMESTAMP NOT NULL,
    row_json        JSON NOT NULL,
    PRIMARY KEY (image_id, version)
);

-- A reprocess launched by an operator: a selection sent back to a stage with overrides.
CREATE TABLE reprocess_runs (
    id            BIGINT PRIMARY KEY DEFAULT nextval('reprocess_runs_id_seq'),
    created_by    VARCHAR NOT NULL,
    created_utc   TIMESTAMP NOT NULL,
    selection     JSON NOT NULL,
    from_stage    VARCHAR NOT NULL,
    overrides     JSON NOT NULL,            -- {section: {key: value}}
    state         VARCHAR NOT NULL DEFAULT 'running',  -- running cancelled
    cancelled_utc TIMESTAMP,
    cancelled_by  VARCHAR
);

-- One observation of a run. state: queued (sent back) → done (its last stage recorded),
-- or cancelled (dropped before its first stage started; its old products stand).
CREATE TABLE reprocess_items (
    run_id          BIGINT NOT NULL,
    observation_id  VARCHAR NOT NULL,
    state           VARCHAR NOT NULL DEFAULT 'queued',
    prior_state     VARCHAR NOT NULL,
    prior_error     VARCHAR,
    prior_quarantined BOOLEAN NOT NULL DEFAULT false,
    updated_utc     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, observation_id)
);
CREATE INDEX reprocess_items_observation ON reprocess_items (observation_id);

-- The job rows a launch took out of the queue (the from-stage's and later ones), put
-- back by a cancel that drops the observation before it started.
CREATE TABLE reprocess_saved_jobs AS SELECT * FROM jobs LIMIT 0;
ALTER TABLE reprocess_saved_jobs ADD COLUMN run_id BIGINT;
