-- What people say about an image or a source: threaded comments (Markdown, editable by
-- their author), free-text tags, and QA ratings (one per user per target; re-rating
-- replaces). A target is (target_kind, target_id) with kind 'image' or 'source'; no
-- foreign keys, since DuckDB's would block the pipeline's own rewrites of those tables.
-- Written by the store's AnnotationQueries only.
CREATE SEQUENCE comments_id_seq;

CREATE TABLE comments (
    id           BIGINT PRIMARY KEY DEFAULT nextval('comments_id_seq'),
    target_kind  VARCHAR NOT NULL,          -- image, source
    target_id    BIGINT NOT NULL,
    author       VARCHAR NOT NULL,
    body         VARCHAR NOT NULL,          -- Markdown, rendered with raw HTML escaped
    parent_id    BIGINT,                    -- the comment replied to, on the same target
    created_utc  TIMESTAMP NOT NULL,
    edited_utc   TIMESTAMP
);
CREATE INDEX comments_target ON comments (target_kind, target_id);

CREATE TABLE tags (
    target_kind  VARCHAR NOT NULL,
    target_id    BIGINT NOT NULL,
    tag          VARCHAR NOT NULL,          -- normalised: lower case, spaces as '-', no commas
    added_by     VARCHAR NOT NULL,
    added_utc    TIMESTAMP NOT NULL,
    PRIMARY KEY (target_kind, target_id, tag)
);

CREATE TABLE qa_ratings (
    target_kind  VARCHAR NOT NULL,
    target_id    BIGINT NOT NULL,
    username     VARCHAR NOT NULL,
    rating       VARCHAR NOT NULL,          -- good, uncertain, bad
    note         VARCHAR NOT NULL DEFAULT '',
    rated_utc    TIMESTAMP NOT NULL,
    PRIMARY KEY (target_kind, target_id, username)
);
