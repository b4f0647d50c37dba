-- The valuation schema: fitted models, per-customer values, the state of the
-- last scoring run, the projection of purchases followed on the interaction
-- service's change feed, and the queue of customers to re-score.
-- tenant_id leads every primary key and index.

-- Fitted models. `body` is the encoded rapport.valuation.v1.Model as fitted
-- (immutable); `active` and `activate_time` are the only mutable parts and
-- live in their own columns.
CREATE TABLE models (
    tenant_id     uuid        NOT NULL,
    model_id      uuid        NOT NULL,
    kind          smallint    NOT NULL,
    version       integer     NOT NULL,
    body          bytea       NOT NULL,
    active        boolean     NOT NULL DEFAULT false,
    activate_time timestamptz,
    create_time   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, model_id),
    UNIQUE (tenant_id, kind, version)
);
-- At most one active model per tenant and kind.
CREATE UNIQUE INDEX models_active ON models (tenant_id, kind) WHERE active;
-- ListModels: newest first.
CREATE INDEX models_newest ON models (tenant_id, create_time DESC, model_id DESC);

-- FitModel idempotency keys (24 hours).
CREATE TABLE fit_requests (
    tenant_id    uuid        NOT NULL,
    request_id   text        NOT NULL,
    request_hash text        NOT NULL,
    model_id     uuid        NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id)
);

-- The settings, models and tier thresholds of the tenant's last
-- ScoreCustomers run: background re-scoring uses them.
CREATE TABLE scoring_state (
    tenant_id            uuid        NOT NULL,
    run_id               uuid        NOT NULL,
    transaction_model_id uuid        NOT NULL,
    spend_model_id       uuid        NOT NULL,
    horizon_periods      integer     NOT NULL,
    period_unit          smallint    NOT NULL,
    discount_rate        float8      NOT NULL,
    margin_ratio         float8      NOT NULL,
    -- CLV thresholds of the tiers: the smallest CLV in the top 5 %, 20 % and
    -- 50 % at the run (NULL when the tier was empty).
    top_threshold        numeric,
    high_threshold       numeric,
    medium_threshold     numeric,
    score_time           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);

-- Per-customer values. Money is exact (numeric, rounded to the nano) in
-- `currency_code`.
CREATE TABLE customer_values (
    tenant_id            uuid        NOT NULL,
    customer_id          uuid        NOT NULL,
    currency_code        text        NOT NULL,
    clv                  numeric     NOT NULL,
    p_alive              float8      NOT NULL,
    expected_purchases   float8      NOT NULL,
    expected_order_value numeric     NOT NULL,
    historical_value     numeric     NOT NULL,
    value_tier           smallint    NOT NULL,
    transaction_model_id uuid        NOT NULL,
    spend_model_id       uuid        NOT NULL,
    score_time           timestamptz NOT NULL,
    horizon_periods      integer     NOT NULL,
    period_unit          smallint    NOT NULL,
    discount_rate        float8      NOT NULL,
    margin_ratio         float8      NOT NULL,
    frequency            bigint      NOT NULL,
    recency              float8      NOT NULL,
    t                    float8      NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
-- RankCustomers by each metric, highest first, ties by customer id.
CREATE INDEX customer_values_clv ON customer_values (tenant_id, clv DESC, customer_id);
CREATE INDEX customer_values_p_alive ON customer_values (tenant_id, p_alive DESC, customer_id);
CREATE INDEX customer_values_expected ON customer_values (tenant_id, expected_purchases DESC, customer_id);

-- Purchases as received on the interaction feed (InteractionRecorded of
-- purchases, re-keyed by InteractionsReassigned, deleted by
-- CustomerInteractionsErased): the data of GetCohortReport.
CREATE TABLE purchases (
    tenant_id            uuid        NOT NULL,
    interaction_id       uuid        NOT NULL,
    customer_id          uuid        NOT NULL,
    original_customer_id uuid        NOT NULL,
    occur_time           timestamptz NOT NULL,
    currency             text,
    amount               numeric,
    margin               numeric,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX purchases_customer ON purchases (tenant_id, customer_id, occur_time);

-- Customers whose purchases changed since they were last scored.
CREATE TABLE rescore_queue (
    tenant_id    uuid        NOT NULL,
    customer_id  uuid        NOT NULL,
    -- Why the customer may lose its value: 'MERGED' for the customer a merge
    -- moved purchases away from; NULL otherwise.
    reason       text,
    enqueue_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, customer_id)
);
