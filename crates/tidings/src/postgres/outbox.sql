-- The transactional outbox, schema version 1 (PostgreSQL 13 or later, for
-- xid8): events staged in the application's own transactions, read by the
-- relay in (txid, seq) order and deleted once published.
--
-- txid is the staging transaction's id. The relay reads only rows whose
-- txid is below the oldest transaction still in flight
-- (pg_snapshot_xmin(pg_current_snapshot())), so a transaction that commits
-- late is never passed over, and rows come in the same order whenever the
-- relay looks: by transaction, then in the order they were staged.

CREATE TABLE tidings_outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    topic text NOT NULL,
    -- The event's partitionkey, for whoever reads the table.
    partitionkey text,
    -- The CloudEvent in the JSON event format.
    event text NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tidings_outbox_order ON tidings_outbox (txid, seq);

-- Events a backend refused for good, with its reason: kept for an operator
-- to look at, fix and stage again.
CREATE TABLE tidings_outbox_dead (
    seq bigint PRIMARY KEY,
    topic text NOT NULL,
    partitionkey text,
    event text NOT NULL,
    staged_at timestamptz NOT NULL,
    reason text NOT NULL,
    dead_at timestamptz NOT NULL DEFAULT now()
);
