-- The segmentation schema: the projection of customer features kept current
-- from the profile, interaction and valuation feeds, the segments with their
-- rules and memberships, the membership change log, the classification
-- policies and the RFM cut-offs. tenant_id leads every primary key and index.

-- One row per known, live customer (deleted, erased and merged customers have
-- none). The rule compiler (src/rule) targets exactly these column names.
CREATE TABLE features (
    tenant_id   uuid NOT NULL,
    customer_id uuid NOT NULL,
    -- profile
    kind text,
    country text,
    tags text[] NOT NULL DEFAULT '{}',
    profile_stage text,
    attributes jsonb NOT NULL DEFAULT '{}',
    consents jsonb NOT NULL DEFAULT '{}',
    -- interaction
    first_purchase timestamptz,
    last_purchase timestamptz,
    purchases bigint NOT NULL DEFAULT 0,
    monetary numeric,
    avg_order_value numeric,
    contacts bigint NOT NULL DEFAULT 0,
    last_contact timestamptz,
    open_service_requests bigint NOT NULL DEFAULT 0,
    complaints bigint NOT NULL DEFAULT 0,
    open_complaints bigint NOT NULL DEFAULT 0,
    csat integer,
    nps integer,
    campaign_response_rate numeric,
    -- valuation
    clv numeric,
    p_alive numeric,
    expected_purchases numeric,
    value_tier text,
    -- segmentation (computed by the service)
    rfm_r integer, rfm_f integer, rfm_m integer, rfm_fm integer,
    rfm_segment text,
    ladder text,
    stage text,
    update_time timestamptz NOT NULL DEFAULT now(),
    -- When the service first learnt of the customer.
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE INDEX features_clv ON features (tenant_id, clv) WHERE clv IS NOT NULL;
CREATE INDEX features_monetary ON features (tenant_id, monetary) WHERE monetary IS NOT NULL;

-- What the service knows of customers that have no features row: removed
-- (deleted, erased) or merged into another one. Interactions of such
-- customers are kept in `events` (a deleted customer may come back) but give
-- no features.
CREATE TABLE removed_customers (
    tenant_id   uuid NOT NULL,
    customer_id uuid NOT NULL,
    state       text NOT NULL CHECK (state IN ('deleted', 'erased', 'merged')),
    merged_into uuid,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);

-- One row per interaction the service has seen (for aggregates and the
-- summary columns of features).
CREATE TABLE events (
    tenant_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    interaction_id uuid NOT NULL,
    type text NOT NULL,
    occur_time timestamptz NOT NULL,
    amount numeric,
    margin numeric,
    csat integer,
    nps integer,
    -- Campaign responses count per campaign.
    campaign_id uuid,
    -- Service requests and complaints: open or in progress.
    open boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, customer_id, interaction_id)
);
CREATE INDEX events_by_type ON events (tenant_id, customer_id, type, occur_time);
CREATE INDEX events_by_interaction ON events (tenant_id, interaction_id);

-- Per tenant: its currency (the first purchase's) and the RFM quintile
-- cut-offs of the last full computation.
CREATE TABLE tenants (
    tenant_id uuid PRIMARY KEY,
    currency_code text,
    rfm_compute_time timestamptz,
    -- Cut-offs: a customer scores 1 + the number of these values it beats.
    rfm_recency_cutoffs integer[] NOT NULL DEFAULT '{}',   -- days; fewer is better
    rfm_frequency_cutoffs bigint[] NOT NULL DEFAULT '{}',  -- purchases; more is better
    rfm_monetary_cutoffs numeric[] NOT NULL DEFAULT '{}',  -- amount; more is better
    -- How many customers the cut-offs were computed over.
    rfm_scored bigint NOT NULL DEFAULT 0,
    -- Purchases arrived since the cut-offs were computed.
    rfm_dirty boolean NOT NULL DEFAULT false,
    -- The latest full classification.
    classify_time timestamptz
);

-- The named RFM segment of R and FM (classification.proto, RfmSegment).
CREATE FUNCTION rfm_segment_name(r integer, fm integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN r >= 5 AND fm <= 1 THEN 'New Customers'
        WHEN r >= 5 AND fm <= 3 THEN 'Potential Loyalist'
        WHEN r >= 5 THEN 'Champions'
        WHEN r = 4 AND fm <= 1 THEN 'Promising'
        WHEN r = 4 AND fm <= 3 THEN 'Potential Loyalist'
        WHEN r = 4 THEN 'Loyal'
        WHEN r = 3 AND fm <= 2 THEN 'About to Sleep'
        WHEN r = 3 AND fm = 3 THEN 'Need Attention'
        WHEN r = 3 THEN 'Loyal'
        WHEN r = 2 AND fm <= 2 THEN 'Hibernating'
        WHEN r = 2 AND fm <= 4 THEN 'At Risk'
        WHEN r = 2 THEN 'Cannot Lose Them'
        WHEN fm <= 1 THEN 'Lost'
        WHEN fm = 2 THEN 'Hibernating'
        WHEN fm <= 4 THEN 'At Risk'
        ELSE 'Cannot Lose Them'
    END
$$;

-- Attribute fields of the catalogue: definitions read from the profile
-- service and types seen on customer snapshots.
CREATE TABLE attribute_fields (
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('string', 'decimal', 'bool', 'timestamp', 'string_list')),
    description text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, name)
);

-- Custom interaction types seen on the interaction feed.
CREATE TABLE custom_types (
    tenant_id uuid NOT NULL,
    type text NOT NULL,
    PRIMARY KEY (tenant_id, type)
);

CREATE TABLE segments (
    tenant_id uuid NOT NULL,
    segment_id uuid NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    kind text NOT NULL CHECK (kind IN ('dynamic', 'snapshot', 'static')),
    marketing_approach smallint NOT NULL DEFAULT 0,
    -- The rule in structured form (protobuf Rule, encoded), segment
    -- references resolved to ids. NULL for static segments.
    rule bytea,
    refresh_interval_seconds bigint,
    last_refresh_time timestamptz,
    next_refresh_time timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, segment_id),
    UNIQUE (tenant_id, name)
);
CREATE INDEX segments_due ON segments (next_refresh_time) WHERE next_refresh_time IS NOT NULL;

-- in_segment references: `segment_id`'s rule refers to `referenced_id`.
CREATE TABLE segment_refs (
    tenant_id uuid NOT NULL,
    segment_id uuid NOT NULL,
    referenced_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, referenced_id)
);
CREATE INDEX segment_refs_referenced ON segment_refs (tenant_id, referenced_id);

CREATE TABLE memberships (
    tenant_id uuid NOT NULL,
    segment_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    enter_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, customer_id)
);
CREATE INDEX memberships_by_customer ON memberships (tenant_id, customer_id);

-- Every entry and exit, kept 400 days. Writers take a transaction-scoped
-- advisory lock first, so sequence order is commit order.
CREATE TABLE membership_log (
    tenant_id uuid NOT NULL,
    sequence bigint GENERATED ALWAYS AS IDENTITY,
    segment_id uuid NOT NULL,
    segment_name text NOT NULL,
    customer_id uuid NOT NULL,
    entered boolean NOT NULL,
    reason smallint NOT NULL,
    change_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
CREATE INDEX membership_log_segment ON membership_log (tenant_id, segment_id, sequence);
CREATE INDEX membership_log_time ON membership_log (tenant_id, change_time);

-- Idempotency keys of CreateSegment (kept 24 hours).
CREATE TABLE request_keys (
    tenant_id uuid NOT NULL,
    request_id text NOT NULL,
    fingerprint text NOT NULL,
    segment_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id)
);

-- Tenants' overrides of the classification policy (JSON object of the
-- ClassificationPolicy fields set).
CREATE TABLE classification_policies (
    tenant_id uuid PRIMARY KEY,
    overrides jsonb NOT NULL DEFAULT '{}',
    version bigint NOT NULL DEFAULT 1,
    update_time timestamptz NOT NULL DEFAULT now()
);
