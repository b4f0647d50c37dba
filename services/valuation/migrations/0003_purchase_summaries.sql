-- Per-customer purchase summaries kept current from the interaction feed,
-- so that a fit over every customer of a tenant reads one small row per
-- customer instead of exporting every purchase (see store/summaries.rs).
-- Days are UTC calendar days, numbered from 1970-01-01.
CREATE TABLE purchase_summaries (
    tenant_id             uuid        NOT NULL,
    customer_id           uuid        NOT NULL,
    first_time            timestamptz NOT NULL,
    last_time             timestamptz NOT NULL,
    first_day             int4        NOT NULL,
    last_day              int4        NOT NULL,
    -- Distinct purchase days.
    days                  int4        NOT NULL,
    purchases             int8        NOT NULL,
    -- The currency of every amount; NULL when no purchase has one.
    currency              text,
    -- Amounts in more than one currency: the values below are not usable.
    mixed                 boolean     NOT NULL,
    -- Sums of the amounts and margins, and the first day's amounts, in
    -- nanos; NULL when beyond int8.
    value_nanos           int8,
    first_day_value_nanos int8,
    margin_nanos          int8,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Per tenant, the latest purchase time ever summarised (an upper bound once
-- purchases are erased): a fit whose calibration end is after it can read
-- the summaries.
CREATE TABLE purchase_summary_tenants (
    tenant_id uuid        PRIMARY KEY,
    last_time timestamptz NOT NULL
);

-- Per tenant and currency, the purchases with an amount in it: the
-- tenant's main currency without scanning its purchases.
CREATE TABLE purchase_currencies (
    tenant_id uuid NOT NULL,
    currency  text NOT NULL,
    purchases int8 NOT NULL,
    PRIMARY KEY (tenant_id, currency)
);

-- The purchases recorded so far.
INSERT INTO purchase_summaries
SELECT tenant_id, customer_id, first_time, last_time, first_day, last_day, days, purchases,
       CASE WHEN low = high THEN low END, low IS DISTINCT FROM high,
       CASE WHEN abs(value) < 9e9 THEN (value * 1000000000)::int8 END,
       CASE WHEN abs(first_value) < 9e9 THEN (first_value * 1000000000)::int8 END,
       CASE WHEN abs(margin) < 9e9 THEN (margin * 1000000000)::int8 END
FROM (
    SELECT tenant_id, customer_id, min(first_time) AS first_time, max(last_time) AS last_time,
           min(day)::int4 AS first_day, max(day)::int4 AS last_day, count(*)::int4 AS days,
           sum(purchases)::int8 AS purchases, min(low) AS low, max(high) AS high,
           sum(value) AS value, (array_agg(value ORDER BY day))[1] AS first_value,
           sum(margin) AS margin
    FROM (
        SELECT tenant_id, customer_id,
               (occur_time AT TIME ZONE 'UTC')::date - DATE '1970-01-01' AS day,
               min(occur_time) AS first_time, max(occur_time) AS last_time,
               count(*) AS purchases, min(currency) AS low, max(currency) AS high,
               coalesce(sum(amount), 0) AS value,
               coalesce(sum(margin) FILTER (WHERE currency IS NOT NULL), 0) AS margin
        FROM purchases
        GROUP BY 1, 2, 3
    ) d
    GROUP BY tenant_id, customer_id
) c;

INSERT INTO purchase_summary_tenants
SELECT tenant_id, max(occur_time) FROM purchases GROUP BY tenant_id;

INSERT INTO purchase_currencies
SELECT tenant_id, currency, count(*) FROM purchases WHERE currency IS NOT NULL
GROUP BY tenant_id, currency;
