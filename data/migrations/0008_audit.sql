-- Who did what: every operator or admin action through the dashboard, the API or the
-- command line (pause, resume, retry, rerun, settings, user changes), and every attempt
-- a role check refused, one row each. Written by the store's record_action only.
CREATE SEQUENCE audit_id_seq;

CREATE TABLE audit (
    id        BIGINT PRIMARY KEY DEFAULT nextval('audit_id_seq'),
    utc       TIMESTAMP NOT NULL,
    username  VARCHAR NOT NULL,          -- who (a user, an API key's name, or 'anonymous')
    role      VARCHAR NOT NULL,          -- their role then
    action    VARCHAR NOT NULL,          -- e.g. pause, retry, users.add
    target    VARCHAR NOT NULL DEFAULT '',
    allowed   BOOLEAN NOT NULL,          -- false: the role check refused it
    detail    VARCHAR NOT NULL DEFAULT ''
);
CREATE INDEX audit_utc ON audit (utc);
