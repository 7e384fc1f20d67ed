-- photometry becomes a view over two tables: photometry_sorted (the re-sorted rows, read by
-- zone maps) and photometry_recent (the rows record_photometry appends, under an ART index
-- on source_id). Appended row groups each span ~12 images' source-id ranges, so zone maps
-- prune them poorly: a day of appends cost a lightcurve ~2.3 ms more at 100 M rows (p95
-- 8.3 ms, where 5 is the target); through the index it reads the source's rows alone.
-- resort_photometry_tail moves the rows of unsorted images, from either table, into
-- photometry_sorted in source order. An index on this day-sized table costs a few tens of
-- ms per image; on all of photometry, 0.2–2 s at 100 M rows (DESIGN).
--
-- Rows of images not re-sorted yet stay where they are (a store never re-sorted would
-- otherwise index its whole history here); the next re-sort moves them. Write rows into
-- photometry_recent (a view takes no INSERT).

ALTER TABLE photometry RENAME TO photometry_sorted;

CREATE TABLE photometry_recent (
    source_id     BIGINT NOT NULL,
    image_id      BIGINT NOT NULL,
    mjd           DOUBLE NOT NULL,
    flux_jy       DOUBLE NOT NULL,
    flux_err_jy   DOUBLE NOT NULL,
    snr           DOUBLE,
    forced        BOOLEAN NOT NULL,
    local_rms_jy  DOUBLE,
    background_jy DOUBLE,
    pb            DOUBLE,
    flags         INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX photometry_recent_source ON photometry_recent (source_id);

CREATE VIEW photometry AS
    SELECT * FROM photometry_sorted UNION ALL SELECT * FROM photometry_recent;
