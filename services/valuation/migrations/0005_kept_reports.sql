-- Kept profitability reports: the last report of each tenant's default
-- window (the 365 days before it was computed), served to requests of
-- GetProfitabilityReport that accept its age (`max_staleness`).

-- The report's fixed parts. `body` is the encoded
-- rapport.valuation.v1.ProfitabilityReport without its whale curve and
-- segment breakdown, with up to 100 value destroyers; `cost_model_version`
-- is the latest version when it was computed (a newer one makes it stale).
CREATE TABLE kept_reports (
    tenant_id          uuid        PRIMARY KEY,
    compute_time       timestamptz NOT NULL,
    cost_model_version integer     NOT NULL,
    body               bytea       NOT NULL
);

-- Its customers ranked by net profit (rank 1 the most profitable), with
-- what a whale curve point and a segment's group are drawn from:
-- `cumulative` is the net profit of ranks 1..=rank. An erased customer's
-- id becomes NULL; its figures stay in the totals.
CREATE TABLE kept_report_ranks (
    tenant_id   uuid    NOT NULL,
    rank        bigint  NOT NULL,
    customer_id uuid,
    revenue     numeric NOT NULL,
    margin      numeric NOT NULL,
    cost        numeric NOT NULL,
    cumulative  numeric NOT NULL,
    PRIMARY KEY (tenant_id, rank)
);
CREATE INDEX kept_report_ranks_customer ON kept_report_ranks (tenant_id, customer_id);
