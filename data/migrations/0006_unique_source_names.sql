-- A name identifies one source: sources.name becomes UNIQUE. Stores written before this
-- can hold the reference catalog twice (two measure jobs seeded it at once), each name
-- under two ids and its lightcurve split between them. This repairs them: every name
-- keeps its lowest id, which takes the other ids' photometry (one row per image: where
-- both ids measured an image, the lower id's row stays), and the other ids go. Their
-- variability rows go too; the store's migration code (pipeline/store/core.py) then
-- recomputes the variability of every source left with photometry but none.
--
-- DuckDB 2.0 cannot add a unique index in the transaction that deleted the duplicates
-- (it still sees them), so sources is rebuilt with the constraint in its definition. The
-- columns are 0001's plus 0005's first_image_id (BY NAME below fails on any other).

CREATE TEMP TABLE _merge AS
    SELECT id AS old_id, keep_id
    FROM (SELECT id, min(id) OVER (PARTITION BY name) AS keep_id FROM sources)
    WHERE id <> keep_id;

-- A merged id's row on an image that a lower id of its name also measured is a copy.
DELETE FROM photometry WHERE rowid IN (
    SELECT rowid FROM (
        SELECT p.rowid, p.source_id,
               min(p.source_id) OVER (PARTITION BY coalesce(m.keep_id, p.source_id),
                                      p.image_id) AS first_id
        FROM photometry p LEFT JOIN _merge m ON m.old_id = p.source_id
        WHERE p.source_id IN (SELECT old_id FROM _merge UNION SELECT keep_id FROM _merge))
    WHERE source_id <> first_id);

-- Rows moving to another id leave their image's block out of source order: re-sort it.
UPDATE photometry_runs SET sorted = false
WHERE image_id IN (SELECT DISTINCT image_id FROM photometry
                   WHERE source_id IN (SELECT old_id FROM _merge));

UPDATE photometry SET source_id = m.keep_id FROM _merge m
WHERE photometry.source_id = m.old_id;

DELETE FROM variability
WHERE source_id IN (SELECT old_id FROM _merge UNION SELECT keep_id FROM _merge);

-- A detected source seen first in an image measured under a merged id keeps that image.
CREATE TEMP TABLE _sources_kept AS
    SELECT s.* REPLACE (least(s.first_image_id, f.first_image_id) AS first_image_id)
    FROM sources s
    LEFT JOIN (SELECT m.keep_id, min(o.first_image_id) AS first_image_id
               FROM _merge m JOIN sources o ON o.id = m.old_id GROUP BY m.keep_id) f
           ON f.keep_id = s.id
    WHERE s.id NOT IN (SELECT old_id FROM _merge);

DROP TABLE sources;

CREATE TABLE sources (
    id               BIGINT PRIMARY KEY DEFAULT nextval('sources_id_seq'),
    name             VARCHAR NOT NULL UNIQUE,
    ra_deg           DOUBLE NOT NULL,
    dec_deg          DOUBLE NOT NULL,
    catalog_flux_jy  DOUBLE,
    spectral_index   DOUBLE,
    origin           VARCHAR NOT NULL DEFAULT 'catalog',  -- catalog or detected
    created_utc      TIMESTAMP NOT NULL,
    first_image_id   BIGINT                               -- detected sources: where found
);

INSERT INTO sources BY NAME SELECT * FROM _sources_kept ORDER BY id;

DROP TABLE _sources_kept;
DROP TABLE _merge;
