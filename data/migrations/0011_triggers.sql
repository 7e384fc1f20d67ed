-- Triggers: rules that act on a schedule (cron), on store events, or by hand, and the
-- history of every firing. ``revision`` grows on every change of a row (and the table's
-- row count changes on a delete), so the trigger service sees an edit without a restart
-- by reading one number. ``running_since`` is the no-pile-up claim: a firing takes it with
-- a conditional UPDATE and a firing that finds it taken is skipped.
-- 0001's placeholder table (a saved query and an action name; no contimg ever wrote a
-- row) is rebuilt; its trigger_runs stays unused (trigger_history replaces it).
DROP TABLE triggers;
CREATE SEQUENCE trigger_revision_seq;
CREATE SEQUENCE trigger_history_id_seq;

CREATE TABLE triggers (
    id             BIGINT PRIMARY KEY DEFAULT nextval('triggers_id_seq'),
    name           VARCHAR NOT NULL UNIQUE,
    kind           VARCHAR NOT NULL,            -- cron, event, manual
    cron           VARCHAR,                     -- five-field cron expression (kind cron)
    time_zone      VARCHAR NOT NULL DEFAULT 'UTC',
    event_kind     VARCHAR,                     -- kind event: see pipeline.triggers.spec
    event_params   JSON NOT NULL DEFAULT '{}',
    action         VARCHAR NOT NULL,
    action_params  JSON NOT NULL DEFAULT '{}',
    enabled        BOOLEAN NOT NULL DEFAULT true,
    missed_policy  VARCHAR NOT NULL DEFAULT 'run-once',   -- run-once, skip
    owner          VARCHAR NOT NULL,
    revision       BIGINT NOT NULL DEFAULT nextval('trigger_revision_seq'),
    running_since  TIMESTAMP,
    last_fired_utc TIMESTAMP,                   -- the schedule's last fire time handled
    created_utc    TIMESTAMP NOT NULL,
    updated_utc    TIMESTAMP NOT NULL
);

CREATE TABLE trigger_history (
    id          BIGINT PRIMARY KEY DEFAULT nextval('trigger_history_id_seq'),
    trigger_id  BIGINT NOT NULL,
    fired_utc   TIMESTAMP NOT NULL,
    fired_by    VARCHAR NOT NULL,               -- a user, 'schedule' or 'event:<what>'
    enqueued    VARCHAR NOT NULL DEFAULT '',    -- what the action enqueued or did
    outcome     VARCHAR NOT NULL,               -- ok, skipped, failed
    detail      VARCHAR NOT NULL DEFAULT ''
);
CREATE INDEX trigger_history_by_trigger ON trigger_history (trigger_id, fired_utc);

-- What an event trigger has already acted on (an observation, a caltable, an image), so
-- each fires once per subject.
CREATE TABLE trigger_seen (
    trigger_id  BIGINT NOT NULL,
    subject     VARCHAR NOT NULL,
    PRIMARY KEY (trigger_id, subject)
);
