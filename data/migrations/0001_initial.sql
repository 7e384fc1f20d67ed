-- contimg schema, version 1. Times are UTC, stored as naive TIMESTAMP (columns end in _utc);
-- astronomical times as MJD (DOUBLE). Applied once by pipeline.store at open.

CREATE SEQUENCE jobs_id_seq;
CREATE SEQUENCE caltables_id_seq;
CREATE SEQUENCE images_id_seq;
CREATE SEQUENCE sources_id_seq;
CREATE SEQUENCE saved_queries_id_seq;
CREATE SEQUENCE triggers_id_seq;
CREATE SEQUENCE trigger_runs_id_seq;
CREATE SEQUENCE backups_id_seq;
CREATE SEQUENCE alerts_id_seq;

-- One 5-minute chunk of 16 subbands. state follows the pipeline's state machine.
CREATE TABLE observations (
    id            VARCHAR PRIMARY KEY,      -- chunk timestamp, e.g. 2026-11-23T19:50:00
    start_utc     TIMESTAMP NOT NULL,
    mid_mjd       DOUBLE NOT NULL,
    dec_deg       DOUBLE NOT NULL,
    n_subbands    INTEGER NOT NULL,
    partial       BOOLEAN NOT NULL DEFAULT false,
    state         VARCHAR NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,     -- attempts at the current stage
    next_try_utc  TIMESTAMP,
    error         VARCHAR,
    quarantined   BOOLEAN NOT NULL DEFAULT false,
    ms_path       VARCHAR,
    created_utc   TIMESTAMP NOT NULL,
    updated_utc   TIMESTAMP NOT NULL
);

-- One row per (observation, stage); attempts count retries of that stage.
CREATE TABLE jobs (
    id             BIGINT PRIMARY KEY DEFAULT nextval('jobs_id_seq'),
    observation_id VARCHAR NOT NULL,
    stage          VARCHAR NOT NULL,
    state          VARCHAR NOT NULL DEFAULT 'queued',  -- queued running retry done quarantined
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_try_utc   TIMESTAMP,
    claimed_by     VARCHAR,
    heartbeat_utc  TIMESTAMP,
    progress       DOUBLE NOT NULL DEFAULT 0,
    created_utc    TIMESTAMP NOT NULL,
    started_utc    TIMESTAMP,
    finished_utc   TIMESTAMP,
    duration_s     DOUBLE,
    error          VARCHAR,
    UNIQUE (observation_id, stage)   -- two enqueuers racing create one job, not two
);

CREATE TABLE caltables (
    id              BIGINT PRIMARY KEY DEFAULT nextval('caltables_id_seq'),
    observation_id  VARCHAR NOT NULL,
    calibrator      VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,           -- B or G
    path            VARCHAR NOT NULL,
    transit_mjd     DOUBLE NOT NULL,
    valid_from_mjd  DOUBLE NOT NULL,
    valid_to_mjd    DOUBLE NOT NULL,
    qa_passed       BOOLEAN NOT NULL,
    qa_reason       VARCHAR,
    snr             DOUBLE,
    flagged_frac    DOUBLE,
    antennas_lost   INTEGER,
    flux_ratio      DOUBLE,
    created_utc     TIMESTAMP NOT NULL
);

CREATE TABLE images (
    id              BIGINT PRIMARY KEY DEFAULT nextval('images_id_seq'),
    observation_id  VARCHAR NOT NULL,
    path            VARCHAR NOT NULL,
    mid_mjd         DOUBLE NOT NULL,
    ra_deg          DOUBLE,
    dec_deg         DOUBLE,
    freq_hz         DOUBLE,
    rms_jy          DOUBLE,
    peak_jy         DOUBLE,
    dynamic_range   DOUBLE,
    bmaj_deg        DOUBLE,
    bmin_deg        DOUBLE,
    bpa_deg         DOUBLE,
    n_ref_matched   INTEGER,
    backend         VARCHAR,
    duration_s      DOUBLE,
    created_utc     TIMESTAMP NOT NULL
);

CREATE TABLE sources (
    id               BIGINT PRIMARY KEY DEFAULT nextval('sources_id_seq'),
    name             VARCHAR NOT NULL,
    ra_deg           DOUBLE NOT NULL,
    dec_deg          DOUBLE NOT NULL,
    catalog_flux_jy  DOUBLE,
    spectral_index   DOUBLE,
    origin           VARCHAR NOT NULL DEFAULT 'catalog',  -- catalog or detected
    created_utc      TIMESTAMP NOT NULL
);

-- Grows by ~10k rows per image; kept sorted by source_id in the tail re-sort (see DESIGN).
CREATE TABLE photometry (
    source_id    BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    mjd          DOUBLE NOT NULL,
    flux_jy      DOUBLE NOT NULL,
    flux_err_jy  DOUBLE NOT NULL,
    snr          DOUBLE,
    forced       BOOLEAN NOT NULL
);

CREATE TABLE variability (
    source_id    BIGINT PRIMARY KEY,
    n_meas       INTEGER NOT NULL,
    wmean_jy     DOUBLE,
    eta          DOUBLE,
    v            DOUBLE,
    vs_max       DOUBLE,
    m_max        DOUBLE,
    is_variable  BOOLEAN NOT NULL DEFAULT false,
    updated_utc  TIMESTAMP NOT NULL
);

CREATE TABLE saved_queries (
    id           BIGINT PRIMARY KEY DEFAULT nextval('saved_queries_id_seq'),
    name         VARCHAR NOT NULL UNIQUE,
    page         VARCHAR NOT NULL,
    spec         JSON NOT NULL,
    created_utc  TIMESTAMP NOT NULL
);

CREATE TABLE triggers (
    id           BIGINT PRIMARY KEY DEFAULT nextval('triggers_id_seq'),
    name         VARCHAR NOT NULL UNIQUE,
    query_id     BIGINT,
    cron         VARCHAR,
    action       VARCHAR NOT NULL,
    enabled      BOOLEAN NOT NULL DEFAULT true,
    created_utc  TIMESTAMP NOT NULL
);

CREATE TABLE trigger_runs (
    id           BIGINT PRIMARY KEY DEFAULT nextval('trigger_runs_id_seq'),
    trigger_id   BIGINT NOT NULL,
    started_utc  TIMESTAMP NOT NULL,
    finished_utc TIMESTAMP,
    status       VARCHAR NOT NULL,
    n_matched    INTEGER,
    message      VARCHAR
);

CREATE TABLE backups (
    id            BIGINT PRIMARY KEY DEFAULT nextval('backups_id_seq'),
    path          VARCHAR NOT NULL,
    created_utc   TIMESTAMP NOT NULL,
    size_bytes    BIGINT,
    sha256        VARCHAR,
    validated_utc TIMESTAMP,
    valid         BOOLEAN
);

CREATE TABLE alerts (
    id            BIGINT PRIMARY KEY DEFAULT nextval('alerts_id_seq'),
    created_utc   TIMESTAMP NOT NULL,
    severity      VARCHAR NOT NULL,          -- info warning critical
    kind          VARCHAR NOT NULL,
    subject       VARCHAR,
    message       VARCHAR NOT NULL,
    acknowledged  BOOLEAN NOT NULL DEFAULT false
);

-- Free-form time series the pipeline records (stage timings, queue depth, ...).
CREATE TABLE metrics (
    ts_utc  TIMESTAMP NOT NULL,
    name    VARCHAR NOT NULL,
    labels  VARCHAR NOT NULL DEFAULT '',
    value   DOUBLE NOT NULL
);
