-- Saved queries belong to a user and are private, team or public: 0001's table had
-- neither owner nor visibility, and a name unique across everyone (two astronomers could
-- not both keep a "bright variables"). Rebuilt with an owner, a description, visibility,
-- the query it was forked from and an update time; a name is unique per owner and page.
-- Rows from before (none is written by any earlier contimg) keep their content, owned by
-- 'admin' and team-visible.
CREATE TEMP TABLE _old_queries AS SELECT * FROM saved_queries;
DROP TABLE saved_queries;

CREATE TABLE saved_queries (
    id           BIGINT PRIMARY KEY DEFAULT nextval('saved_queries_id_seq'),
    owner        VARCHAR NOT NULL,
    page         VARCHAR NOT NULL,          -- sources, images, pipeline
    name         VARCHAR NOT NULL,
    description  VARCHAR NOT NULL DEFAULT '',
    visibility   VARCHAR NOT NULL,          -- private, team, public
    spec         JSON NOT NULL,             -- the page's filter, as its URL carries it
    forked_from  BIGINT,
    created_utc  TIMESTAMP NOT NULL,
    updated_utc  TIMESTAMP NOT NULL,
    UNIQUE (owner, page, name)
);

INSERT INTO saved_queries (id, owner, page, name, visibility, spec, created_utc, updated_utc)
SELECT id, 'admin', page, name, 'team', spec, created_utc, created_utc FROM _old_queries;
DROP TABLE _old_queries;
