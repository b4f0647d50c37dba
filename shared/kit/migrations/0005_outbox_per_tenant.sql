-- The feed is ordered per tenant: each tenant's events are numbered 1, 2, 3…
-- in commit order, and writers of different tenants never wait on each other
-- (the schema-wide advisory lock that every writer used to take is gone). A
-- writer takes its tenant's row of `outbox_heads` (a row lock held until it
-- commits) to number its events, so a reader that sees a tenant's sequence s
-- has already been able to see every earlier one of that tenant.
--
-- Sequences continue above every sequence given so far (`origin`), for every
-- tenant including those that have no event yet, so a consumer's cursor from
-- before this migration stays valid for each tenant.

CREATE TABLE outbox_heads (
    tenant_id uuid PRIMARY KEY,
    -- Sequences issued to the tenant: its last sequence is origin + issued.
    issued bigint NOT NULL DEFAULT 0
);

DO $$
DECLARE
    origin bigint := (SELECT coalesce(max(sequence), 0) FROM outbox);
BEGIN
    EXECUTE format('ALTER TABLE outbox_heads ADD COLUMN origin bigint NOT NULL DEFAULT %s', origin);
END
$$;

INSERT INTO outbox_heads (tenant_id) SELECT DISTINCT tenant_id FROM outbox;

ALTER TABLE outbox ALTER COLUMN sequence DROP IDENTITY;
DROP INDEX outbox_sequence;

-- A consumer's position per tenant of the feed it follows. `feed_cursors`
-- keeps one row per followed feed: its lock serialises the consumer's
-- replicas, and its `after_sequence` is where the consumer stands in every
-- tenant that has no row here (0 for a consumer started after this
-- migration; its old global cursor for one started before).
CREATE TABLE feed_tenant_cursors (
    tenant_id      uuid        NOT NULL,
    source         text        NOT NULL,
    after_sequence bigint      NOT NULL,
    update_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source)
);
CREATE INDEX feed_tenant_cursors_source ON feed_tenant_cursors (source);
