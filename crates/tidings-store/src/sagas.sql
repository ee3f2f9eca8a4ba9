-- Sagas, schema version 1: each instance's state and status, its history of
-- transitions, and its pending timeouts. An instance is changed only by a
-- transaction holding its row (FOR UPDATE), so one input at a time applies
-- to it, and the change, its history row, its timeouts, the events it sends
-- (staged in the outbox) and the inbox's record of its input commit
-- together.

CREATE TABLE tidings_sagas (
    saga text NOT NULL,
    key text NOT NULL,
    -- running, completed, compensating, compensated or failed.
    status text NOT NULL,
    -- The saga's state, as JSON.
    state text NOT NULL,
    -- The compensations still to run, in the order they were added, as a
    -- JSON array of {"name", "data"}; run last first.
    compensations text NOT NULL DEFAULT '[]',
    -- The correlation id of the flow that started it, given to what it sends.
    correlation text NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga, key)
);
CREATE INDEX tidings_sagas_compensating ON tidings_sagas (saga) WHERE status = 'compensating';

CREATE TABLE tidings_saga_history (
    saga text NOT NULL,
    key text NOT NULL,
    version bigint NOT NULL,
    -- What was applied: "event <type> <id>", "timeout <name>",
    -- "compensation <name>".
    input text NOT NULL,
    status text NOT NULL,
    note text,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga, key, version)
);

CREATE TABLE tidings_saga_timeouts (
    saga text NOT NULL,
    key text NOT NULL,
    name text NOT NULL,
    due_at timestamptz NOT NULL,
    PRIMARY KEY (saga, key, name)
);
CREATE INDEX tidings_saga_timeouts_due ON tidings_saga_timeouts (saga, due_at);
