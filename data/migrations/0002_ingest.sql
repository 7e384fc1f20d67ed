-- Ingest and conversion: where an observation's data came from and what the MS holds,
-- and the quarantine of input files that could not be used.

ALTER TABLE observations ADD COLUMN files VARCHAR[];          -- subband files of the group
ALTER TABLE observations ADD COLUMN freq_min_hz DOUBLE;        -- lowest channel centre in the MS
ALTER TABLE observations ADD COLUMN freq_max_hz DOUBLE;        -- highest channel centre in the MS
ALTER TABLE observations ADD COLUMN n_channels INTEGER;
ALTER TABLE observations ADD COLUMN n_antennas INTEGER;
ALTER TABLE observations ADD COLUMN n_integrations INTEGER;

CREATE SEQUENCE quarantine_id_seq;

-- One row per file moved to quarantine/ (or group given up on), with the reason.
CREATE TABLE quarantine (
    id              BIGINT PRIMARY KEY DEFAULT nextval('quarantine_id_seq'),
    original_path   VARCHAR NOT NULL,
    quarantine_path VARCHAR,
    observation_id  VARCHAR,
    stage           VARCHAR NOT NULL,      -- ingest, convert, ...
    reason          VARCHAR NOT NULL,
    created_utc     TIMESTAMP NOT NULL
);
