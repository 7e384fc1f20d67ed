-- Imaging. One images row per imaged observation: `path` is the restored (not
-- PB-corrected) image; the other products sit beside it. QA decides whether photometry
-- runs on it; a failed image is kept with its reason.

ALTER TABLE images ADD COLUMN residual_path  VARCHAR;
ALTER TABLE images ADD COLUMN model_path     VARCHAR;
ALTER TABLE images ADD COLUMN psf_path       VARCHAR;
ALTER TABLE images ADD COLUMN pbcor_path     VARCHAR;
ALTER TABLE images ADD COLUMN thumbnail_path VARCHAR;
ALTER TABLE images ADD COLUMN npix           INTEGER;     -- square images
ALTER TABLE images ADD COLUMN cell_arcsec    DOUBLE;
ALTER TABLE images ADD COLUMN weighting      VARCHAR;     -- natural, uniform, briggs(R)
ALTER TABLE images ADD COLUMN n_iter         INTEGER;     -- minor-cycle components
ALTER TABLE images ADD COLUMN n_major        INTEGER;
ALTER TABLE images ADD COLUMN threshold_jy   DOUBLE;      -- the automatic CLEAN threshold
ALTER TABLE images ADD COLUMN theoretical_rms_jy DOUBLE;  -- radiometer equation
ALTER TABLE images ADD COLUMN n_ref_expected INTEGER;     -- reference sources in the field
ALTER TABLE images ADD COLUMN n_vis          BIGINT;      -- unflagged visibilities gridded
ALTER TABLE images ADD COLUMN qa_passed      BOOLEAN;
ALTER TABLE images ADD COLUMN qa_reason      VARCHAR;
CREATE UNIQUE INDEX images_observation ON images (observation_id);
