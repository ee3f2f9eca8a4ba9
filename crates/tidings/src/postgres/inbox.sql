-- The inbox, schema version 1: the events each consumer group has handled,
-- whichever topic brought them (a retry topic, a redrive), each recorded in the transaction of the handler's own
-- writes, so an event delivered again is recognised and its effects are not
-- made twice. Rows older than the inbox's retention are deleted in bounded
-- batches.

CREATE TABLE tidings_inbox (
    consumer_group text NOT NULL,
    -- The event's identity: CloudEvents' source and id.
    source text NOT NULL,
    id text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, source, id)
);
CREATE INDEX tidings_inbox_age ON tidings_inbox (handled_at);
