-- The interaction schema: every episode of the relationship, the campaigns
-- customers respond to, the idempotency keys of recordings, and what the
-- service knows of the profile service's customers (followed on its feed).
-- tenant_id leads every primary key and index.

-- Interactions, partitioned by the time they happened (one partition a year,
-- created ahead of time and on demand by ensure_interaction_partition; rows of
-- a year without a partition land in the default partition until one exists).
-- Money is exact: `numeric` amounts in the currency `currency`.
CREATE TABLE interactions (
    tenant_id            uuid        NOT NULL,
    interaction_id       uuid        NOT NULL,
    occur_time           timestamptz NOT NULL,
    -- The customer the interaction belongs to now (follows merges).
    customer_id          uuid        NOT NULL,
    -- The customer it was first recorded under (never changes).
    original_customer_id uuid        NOT NULL,
    type                 smallint    NOT NULL,
    custom_type          text,
    channel              smallint    NOT NULL DEFAULT 0,
    initiator            smallint    NOT NULL DEFAULT 0,
    currency             text,
    amount               numeric,
    margin               numeric,
    line_items           jsonb,
    campaign_id          uuid,
    agent_id             text,
    csat                 smallint,
    nps                  smallint,
    survey_comment       text,
    status               smallint    NOT NULL DEFAULT 0,
    resolve_time         timestamptz,
    attributes           jsonb,
    idempotency_key      text,
    create_time          timestamptz NOT NULL DEFAULT now(),
    update_time          timestamptz NOT NULL DEFAULT now(),
    version              bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, interaction_id, occur_time)
) PARTITION BY RANGE (occur_time);

CREATE TABLE interactions_default PARTITION OF interactions DEFAULT;

-- Timelines, summaries and exports: a customer's interactions in time order.
CREATE INDEX interactions_timeline ON interactions (tenant_id, customer_id, occur_time, interaction_id);
-- Unmerges and erasures find interactions by the customer first recorded.
CREATE INDEX interactions_original ON interactions (tenant_id, original_customer_id);
-- Purchase-history exports read purchases in customer order from this index
-- alone (no sort, no table access once the visibility map is set).
CREATE INDEX interactions_purchases ON interactions (tenant_id, customer_id, occur_time)
    INCLUDE (currency, amount, margin) WHERE type = 1;
-- Campaign reports.
CREATE INDEX interactions_campaign ON interactions (tenant_id, campaign_id, type) WHERE campaign_id IS NOT NULL;

-- Creates the partition of interactions for one calendar year (UTC), moving
-- any rows of that year out of the default partition first. Idempotent and
-- safe to call from several sessions at once.
CREATE FUNCTION ensure_interaction_partition(p_year integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('interactions_y%s', p_year);
    lo timestamptz := make_timestamptz(p_year, 1, 1, 0, 0, 0, 'UTC');
    hi timestamptz := make_timestamptz(p_year + 1, 1, 1, 0, 0, 0, 'UTC');
    parked text := format('interactions_parked_y%s', p_year);
BEGIN
    -- pg_class is read with a fresh snapshot per statement, so a partition
    -- created by a session this one waited for is seen.
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = part
               AND relnamespace = current_schema()::regnamespace) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('interaction.partitions'));
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = part
               AND relnamespace = current_schema()::regnamespace) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM interactions_default WHERE occur_time >= lo AND occur_time < hi) THEN
        EXECUTE format('CREATE TEMP TABLE %I ON COMMIT DROP AS
                        WITH moved AS (DELETE FROM interactions_default
                                       WHERE occur_time >= %L AND occur_time < %L RETURNING *)
                        SELECT * FROM moved', parked, lo, hi);
        EXECUTE format('CREATE TABLE %I PARTITION OF interactions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        EXECUTE format('INSERT INTO interactions SELECT * FROM %I', parked);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF interactions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    END IF;
EXCEPTION WHEN duplicate_table THEN
    -- Created by another session meanwhile: nothing to do.
    NULL;
END
$$;

-- Idempotency keys of recorded interactions, unique per tenant. Kept apart
-- from the partitioned table because a unique key there would have to
-- include the time. Deleted with their interaction when a customer is erased.
CREATE TABLE idempotency_keys (
    tenant_id       uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    interaction_id  uuid        NOT NULL,
    occur_time      timestamptz NOT NULL,
    content_hash    bytea       NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);

-- Marketing campaigns. Create requests are idempotent by request_id for 24 hours.
CREATE TABLE campaigns (
    tenant_id         uuid        NOT NULL,
    campaign_id       uuid        NOT NULL,
    name              text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    channel           smallint    NOT NULL,
    target_segment_id uuid,
    start_time        timestamptz,
    end_time          timestamptz,
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now(),
    version           bigint      NOT NULL DEFAULT 1,
    request_id        text,
    request_hash      bytea,
    PRIMARY KEY (tenant_id, campaign_id)
);
CREATE UNIQUE INDEX campaigns_request ON campaigns (tenant_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX campaigns_newest ON campaigns (tenant_id, create_time DESC, campaign_id DESC);

-- What the profile service's feed (and its answers) told us about customers:
-- that they exist, whom they were merged into, whether they were erased.
-- Each interaction belongs to whatever its original customer resolves to
-- through `merged_into`.
CREATE TABLE customers (
    tenant_id   uuid        NOT NULL,
    customer_id uuid        NOT NULL,
    merged_into uuid,
    erased      boolean     NOT NULL DEFAULT false,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE INDEX customers_merged_into ON customers (tenant_id, merged_into) WHERE merged_into IS NOT NULL;
