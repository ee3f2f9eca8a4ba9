-- Tidings event store, schema version 1.
--
-- The global order: tidings_head.next is the position the next event gets. An
-- append locks this one row first, takes its positions from it and writes it back
-- in the same transaction, so positions are handed out in commit order with no
-- gaps: once position p is visible, every position before it is too.

CREATE TABLE tidings_head (
    id smallint PRIMARY KEY CHECK (id = 0),
    next bigint NOT NULL CHECK (next >= 0)
);
INSERT INTO tidings_head (id, next) VALUES (0, 0);

CREATE TABLE tidings_streams (
    stream text PRIMARY KEY,
    -- Version of the last event ever written; NULL when none was.
    last_version bigint,
    -- Events below this version are soft-deleted.
    truncate_before bigint NOT NULL DEFAULT 0,
    max_count bigint,
    max_age_ms bigint
);

CREATE TABLE tidings_events (
    position bigint PRIMARY KEY,
    stream text NOT NULL,
    version bigint NOT NULL,
    category text NOT NULL,
    event_id text NOT NULL UNIQUE,
    event_type text NOT NULL,
    recorded_ms bigint NOT NULL,
    -- The whole CloudEvent in the CloudEvents JSON format.
    event bytea NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX tidings_events_by_category ON tidings_events (category, position);

CREATE TABLE tidings_snapshots (
    stream text PRIMARY KEY,
    version bigint NOT NULL,
    schema_version integer NOT NULL,
    state bytea NOT NULL
);

CREATE TABLE tidings_checkpoints (
    name text PRIMARY KEY,
    position bigint NOT NULL
);
