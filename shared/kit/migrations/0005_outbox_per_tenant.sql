-- The feed is ordered per tenant: each tenant's events are numbered 1, 2, 3…
-- in commit order, and writers of different tenants never wait on each other
-- (the schema-wide advisory lock that every writer used to take is gone).
--
-- Events are numbered when their transaction commits, not when they are
-- written: a transaction's events of one tenant are stored with the
-- transaction's id and their ordinal, and one row of `outbox_commits`
-- announces them. A deferred constraint trigger on that row runs during
-- COMMIT: it takes the next range of the tenant's sequences from
-- `outbox_heads` (a row lock held until the commit completes) and records
-- where the range starts. So a tenant's sequence order is its commit order,
-- a reader that sees sequence s has been able to see every earlier one of
-- that tenant, and writers of one tenant wait on each other only for the
-- instant of their commits, never across a round trip to a client.
--
-- Sequences continue above every sequence given so far (`origin`), for every
-- tenant including those that have no event yet, so a consumer's cursor from
-- before this migration stays valid for each tenant. Events written before
-- it keep their `sequence`.

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

-- One row per transaction and tenant that appended events: how many, and
-- (set at commit) the sequence of the first; the others follow in ordinal
-- order.
CREATE TABLE outbox_commits (
    tenant_id      uuid    NOT NULL,
    txid           xid8    NOT NULL,
    events         integer NOT NULL,
    first_sequence bigint,
    PRIMARY KEY (tenant_id, txid)
);
CREATE UNIQUE INDEX outbox_commits_sequence ON outbox_commits (tenant_id, first_sequence);

ALTER TABLE outbox ALTER COLUMN sequence DROP IDENTITY;
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ALTER COLUMN sequence DROP NOT NULL;
DROP INDEX outbox_sequence;
ALTER TABLE outbox ADD COLUMN txid xid8;
ALTER TABLE outbox ADD COLUMN ordinal integer;
-- Events before this migration: by sequence. Later ones: by transaction.
CREATE UNIQUE INDEX outbox_legacy ON outbox (tenant_id, sequence) WHERE sequence IS NOT NULL;
CREATE UNIQUE INDEX outbox_numbered ON outbox (tenant_id, txid, ordinal) WHERE txid IS NOT NULL;
ALTER TABLE outbox ADD CONSTRAINT outbox_numbered_or_legacy CHECK ((sequence IS NULL) = (txid IS NOT NULL AND ordinal IS NOT NULL));

-- Numbers a transaction's events of one tenant during its commit.
CREATE FUNCTION outbox_number() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n integer;
    last bigint;
BEGIN
    SELECT events INTO n FROM outbox_commits WHERE tenant_id = NEW.tenant_id AND txid = NEW.txid;
    INSERT INTO outbox_heads AS h (tenant_id, issued) VALUES (NEW.tenant_id, n)
        ON CONFLICT (tenant_id) DO UPDATE SET issued = h.issued + EXCLUDED.issued
        RETURNING h.origin + h.issued INTO last;
    UPDATE outbox_commits SET first_sequence = last - n + 1
     WHERE tenant_id = NEW.tenant_id AND txid = NEW.txid;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER outbox_number AFTER INSERT ON outbox_commits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION outbox_number();

-- Every event with its sequence, whichever way it was numbered.
CREATE VIEW outbox_events AS
    SELECT o.tenant_id, coalesce(o.sequence, c.first_sequence + o.ordinal) AS sequence,
           o.aggregate_type, o.aggregate_id, o.event_type, o.payload, o.event_type_url, o.event,
           o.commit_time, o.traceparent, o.txid, o.ordinal
      FROM outbox o
      LEFT JOIN outbox_commits c ON c.tenant_id = o.tenant_id AND c.txid = o.txid;

-- A consumer's position per tenant of the feed it follows. `feed_cursors`
-- keeps one row per followed feed: its `after_sequence` is where the
-- consumer stands in every tenant that has no row here (0 for a consumer
-- started after this migration; its old global cursor for one started
-- before).
CREATE TABLE feed_tenant_cursors (
    tenant_id      uuid        NOT NULL,
    source         text        NOT NULL,
    after_sequence bigint      NOT NULL,
    update_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source)
);
CREATE INDEX feed_tenant_cursors_source ON feed_tenant_cursors (source);
