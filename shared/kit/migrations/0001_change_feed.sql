-- The change feed every service keeps in its own schema (see DESIGN.md, "Change feeds").

-- Events this service emits, appended in the same transaction as the change.
-- Writers take a transaction-scoped advisory lock before appending, so
-- sequence order is commit order and a reader never skips a late committer.
CREATE TABLE outbox (
    tenant_id      uuid        NOT NULL,
    sequence       bigint      GENERATED ALWAYS AS IDENTITY,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    commit_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sequence)
);
CREATE INDEX outbox_sequence ON outbox (sequence);
CREATE INDEX outbox_aggregate ON outbox (tenant_id, aggregate_type, aggregate_id);

-- Where this service's consumers of other services' feeds have got to. The
-- cursor is updated in the same transaction as the effect of each event, so an
-- event is applied exactly once even though it may be delivered twice.
CREATE TABLE feed_cursors (
    source         text        PRIMARY KEY,
    after_sequence bigint      NOT NULL,
    update_time    timestamptz NOT NULL DEFAULT now()
);
