-- The toolkit's PostgreSQL backend, schema version 1: topics of partitions
-- holding CloudEvents, and queue groups consuming them.
--
-- Offsets are gap-free in commit order per partition: a publish locks its
-- partitions' rows of tidings_toolkit_partitions (in partition order), takes
-- its offsets from next_offset and writes it back in the same transaction, so
-- no other publish takes an offset of that partition until it commits. A
-- reader that has seen offset o of a partition has seen every offset under it:
-- a group's cursor never skips an event committed late.

CREATE FUNCTION tidings_toolkit_now_ms() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE tidings_toolkit_partitions (
    topic text NOT NULL,
    partition integer NOT NULL CHECK (partition >= 0),
    next_offset bigint NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE tidings_toolkit_events (
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    -- The CloudEvent's source and id: one event per pair and topic (publish
    -- dedup, without a window).
    source text NOT NULL,
    id text NOT NULL,
    -- Its partitionkey, for key ordering.
    key text,
    stored_at_ms bigint NOT NULL,
    -- The CloudEvent in the JSON event format.
    event text NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE UNIQUE INDEX tidings_toolkit_events_identity
    ON tidings_toolkit_events (topic, source, id);

CREATE TABLE tidings_toolkit_queues (
    name text PRIMARY KEY,
    topic text NOT NULL,
    ack_timeout_ms bigint NOT NULL CHECK (ack_timeout_ms > 0),
    max_deliveries integer NOT NULL CHECK (max_deliveries > 0),
    backoff_initial_ms bigint NOT NULL CHECK (backoff_initial_ms > 0),
    backoff_factor integer NOT NULL CHECK (backoff_factor BETWEEN 1 AND 10),
    backoff_max_ms bigint NOT NULL CHECK (backoff_max_ms >= backoff_initial_ms),
    key_ordering boolean NOT NULL
);

-- Per group and partition, the next offset not yet taken into the group's
-- pending events.
CREATE TABLE tidings_toolkit_cursors (
    queue text NOT NULL REFERENCES tidings_toolkit_queues (name) ON DELETE CASCADE,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (queue, partition)
);

-- Events a group has taken and not yet acked or dead-lettered. A row with a
-- lease whose lease_until_ms has passed is an attempt that ran out.
CREATE TABLE tidings_toolkit_pending (
    queue text NOT NULL REFERENCES tidings_toolkit_queues (name) ON DELETE CASCADE,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    key text,
    attempts integer NOT NULL DEFAULT 0,
    due_at_ms bigint NOT NULL DEFAULT 0,
    lease bigint,
    lease_until_ms bigint,
    last_error text,
    PRIMARY KEY (queue, partition, "offset")
);
CREATE INDEX tidings_toolkit_pending_due ON tidings_toolkit_pending (queue, due_at_ms);
CREATE INDEX tidings_toolkit_pending_key ON tidings_toolkit_pending (queue, partition, key, "offset");

