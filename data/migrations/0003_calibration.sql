-- Calibration. From here on one caltables row is one solve: its bandpass (B) and gain (G)
-- tables together, kind 'BG', path = the B table (unique: registering it again updates
-- the row), g_path = the G table. The calibrator's model and measured flux feed the flux
-- monitor; calibration_applied says which tables calibrated each observation.

ALTER TABLE caltables ADD COLUMN g_path VARCHAR;
ALTER TABLE caltables ADD COLUMN model_flux_jy DOUBLE;     -- Perley-Butler at 1.4 GHz
ALTER TABLE caltables ADD COLUMN measured_flux_jy DOUBLE;  -- model × QA flux ratio
CREATE UNIQUE INDEX caltables_path ON caltables (path);

CREATE TABLE calibration_applied (
    observation_id  VARCHAR NOT NULL,
    caltable_id     BIGINT NOT NULL,
    selection       VARCHAR NOT NULL,    -- single, interpolated, stale (registry.Selection)
    weight          DOUBLE NOT NULL,     -- of this table's gains; a selection's sum to 1
    applied_utc     TIMESTAMP NOT NULL
);
