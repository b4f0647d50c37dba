-- Events are numbered after their transaction has committed, by whoever
-- reads the feed, instead of during COMMIT.
--
-- Numbering during COMMIT (migration 0005) took a row lock on the tenant's
-- `outbox_heads` row, and a row lock is held until the commit is durable:
-- every write of one tenant waited for the previous one's WAL flush. With
-- durable commits that capped a tenant's writes at one per flush (about
-- 350 CreateCustomer calls per second on a disk that flushes in 2–3 ms),
-- whatever the number of connections.
--
-- Now a writer only announces its transaction's events in
-- `outbox_commits` (`first_sequence` NULL) and takes no lock. A reader calls
-- `outbox_number_committed(tenant)` before it looks at the tenant's head:
-- under the tenant's `outbox_heads` row lock, it gives the next ranges to
-- the announced transactions its snapshot sees — exactly the committed
-- ones — and commits. Numberers of one tenant take turns on that lock, and
-- each one looks for committed transactions only once it holds it, so a
-- range is given once, ranges never overlap, and a reader that sees
-- sequence s sees every earlier sequence of that tenant (they were
-- committed, and numbered no later than s). Writers never wait on readers
-- or on each other; one numbering commit covers every transaction that
-- committed since the last one.
--
-- Among the transactions a numberer finds, the order is the order of their
-- commits as far as it matters: each transaction draws from a sequence
-- during its COMMIT (a deferred trigger; drawing from a sequence waits for
-- no one), so a transaction that waited for another one (a row lock on the
-- same customer, say) draws after it, is visible only after it, and is
-- numbered after it.
--
-- A transaction never numbers its own events (it may still append more).

DROP TRIGGER outbox_number ON outbox_commits;
DROP FUNCTION outbox_number();

CREATE SEQUENCE outbox_commit_order;
ALTER TABLE outbox_commits ADD COLUMN commit_order bigint;

CREATE FUNCTION outbox_commit_order() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE outbox_commits SET commit_order = nextval('outbox_commit_order')
     WHERE tenant_id = NEW.tenant_id AND txid = NEW.txid;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER outbox_commit_order AFTER INSERT ON outbox_commits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION outbox_commit_order();

-- The transactions that still wait for their numbers.
CREATE INDEX outbox_commits_pending ON outbox_commits (tenant_id) WHERE first_sequence IS NULL;

-- Numbers the committed transactions of `p_tenant` that have no numbers
-- yet; returns the tenant's last sequence (0 before its first event).
CREATE FUNCTION outbox_number_committed(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    own xid8 := pg_current_xact_id_if_assigned();
    last bigint;
    added bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox_commits
                    WHERE tenant_id = p_tenant AND first_sequence IS NULL
                      AND txid IS DISTINCT FROM own) THEN
        SELECT origin + issued INTO last FROM outbox_heads WHERE tenant_id = p_tenant;
        RETURN coalesce(last, 0);
    END IF;
    INSERT INTO outbox_heads (tenant_id) VALUES (p_tenant) ON CONFLICT DO NOTHING;
    -- Each statement below sees what committed before the lock was granted.
    SELECT origin + issued INTO last FROM outbox_heads WHERE tenant_id = p_tenant FOR UPDATE;
    WITH pending AS (
        SELECT txid, events, sum(events) OVER (ORDER BY commit_order, txid) AS upto
          FROM outbox_commits
         WHERE tenant_id = p_tenant AND first_sequence IS NULL AND txid IS DISTINCT FROM own),
    numbered AS (
        UPDATE outbox_commits c SET first_sequence = last + p.upto - p.events + 1
          FROM pending p
         WHERE c.tenant_id = p_tenant AND c.txid = p.txid
        RETURNING c.events)
    SELECT coalesce(sum(events), 0) INTO added FROM numbered;
    IF added > 0 THEN
        UPDATE outbox_heads SET issued = issued + added WHERE tenant_id = p_tenant
            RETURNING origin + issued INTO last;
    END IF;
    RETURN last;
END
$$;
