-- Cost to serve and profitability: the versions of each tenant's cost
-- model, the interactions that cost (returns, contacts, service requests,
-- complaints, campaign messages) as received on the interaction feed, and
-- what the service knows of each customer beyond its purchases (its first
-- interaction and first purchase, and the ladder rung and Dwyer stage
-- followed on segmentation's feed).

-- One row per version of a tenant's cost model. `body` is the encoded
-- rapport.valuation.v1.CostModel as set; the columns beside it are what
-- pricing reads. `version` orders versions; a version prices what happened
-- from its `effective_time` until the next version's (the first from the
-- beginning of time).
CREATE TABLE cost_models (
    tenant_id      uuid        NOT NULL,
    version        integer     NOT NULL,
    cost_model_id  uuid        NOT NULL,
    effective_time timestamptz NOT NULL,
    create_time    timestamptz NOT NULL,
    currency_code  text        NOT NULL,
    -- Fixed cost per customer per `fixed_days` days (0 and 1 without one).
    fixed_cost     numeric     NOT NULL,
    fixed_days     integer     NOT NULL CHECK (fixed_days > 0),
    -- Default margin rate, 0..=1.
    margin_rate    numeric     NOT NULL,
    body           bytea       NOT NULL,
    PRIMARY KEY (tenant_id, version),
    UNIQUE (tenant_id, cost_model_id)
);
CREATE INDEX cost_models_effective ON cost_models (tenant_id, effective_time, version);

-- A version's prices per interaction type (proto value) and channel (0: any
-- channel without its own row): `cost` per interaction, `hour_cost` per hour
-- open (service requests and complaints).
CREATE TABLE cost_rates (
    tenant_id uuid     NOT NULL,
    version   integer  NOT NULL,
    type      smallint NOT NULL,
    channel   smallint NOT NULL,
    cost      numeric  NOT NULL,
    hour_cost numeric  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, version, type, channel)
);

-- Interactions that cost, as received on the interaction feed (re-keyed by
-- InteractionsReassigned, deleted by CustomerInteractionsErased). Returns
-- carry their refund (`currency`, `amount`); service requests and
-- complaints their resolution time (NULL while open).
CREATE TABLE activities (
    tenant_id            uuid        NOT NULL,
    interaction_id       uuid        NOT NULL,
    customer_id          uuid        NOT NULL,
    original_customer_id uuid        NOT NULL,
    occur_time           timestamptz NOT NULL,
    type                 smallint    NOT NULL,
    channel              smallint    NOT NULL,
    currency             text,
    amount               numeric,
    resolve_time         timestamptz,
    PRIMARY KEY (tenant_id, interaction_id)
);
CREATE INDEX activities_customer ON activities (tenant_id, customer_id, occur_time);

-- The customers the service has received anything about: the first
-- purchase or priced interaction (NULL once everything moved away in a
-- merge), the first purchase, and segmentation's classification (proto
-- values, 0 when unclassified).
CREATE TABLE customers (
    tenant_id      uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    first_seen     timestamptz,
    first_purchase timestamptz,
    ladder_rung    smallint    NOT NULL DEFAULT 0,
    stage          smallint    NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, customer_id)
);
INSERT INTO customers (tenant_id, customer_id, first_seen, first_purchase)
SELECT tenant_id, customer_id, min(occur_time), min(occur_time)
FROM purchases GROUP BY tenant_id, customer_id;

-- Values net of the cost to serve (NULL without a cost model).
ALTER TABLE customer_values
    ADD COLUMN net_clv           numeric,
    ADD COLUMN cost_per_purchase numeric,
    ADD COLUMN cost_to_serve     numeric,
    ADD COLUMN net_profit        numeric,
    ADD COLUMN profit_decile     smallint NOT NULL DEFAULT 0;
CREATE INDEX customer_values_net_clv ON customer_values (tenant_id, net_clv DESC, customer_id)
    WHERE net_clv IS NOT NULL;

-- What background re-scoring prices with, from the last full run: the cost
-- per purchase of each ladder rung (and of everyone, under key "0"), and
-- the lowest net profit of deciles 1..9.
ALTER TABLE scoring_state
    ADD COLUMN cost_rates    jsonb,
    ADD COLUMN profit_bounds numeric[];

-- Contacts recorded before this migration are read again: the interaction
-- feed is followed from its start once more (purchases already recorded
-- are left as they are; their customers are re-scored once).
DELETE FROM feed_tenant_cursors WHERE source = 'interaction';
UPDATE feed_cursors SET after_sequence = 0 WHERE source = 'interaction';
