//! Customers' figures over a window, priced in SQL by the cost model
//! version in effect when each interaction happened (see
//! `rapport/valuation/v1/profitability.proto` for the definitions).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::money::round_nano;
use crate::domain::profit::{Figures, Line};

/// One customer's priced figures as the query returns them.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    customer_id: Uuid,
    purchases: i64,
    purchase_days: i64,
    revenue: Decimal,
    margin: Decimal,
    returns: i64,
    refunds: Decimal,
    refund_margin: Decimal,
    contacts_n: i64,
    contacts_cost: Decimal,
    campaigns_n: i64,
    campaigns_cost: Decimal,
    requests_n: i64,
    requests_hours: f64,
    requests_cost: Decimal,
    complaints_n: i64,
    complaints_hours: f64,
    complaints_cost: Decimal,
    returns_cost: Decimal,
    fixed_cost: Decimal,
    other: i64,
    first_purchase: Option<DateTime<Utc>>,
    ladder_rung: i16,
    stage: i16,
    value_tier: i16,
}

/// The pricing query. $1 tenant, $2 window start, $3 window end, $4 the
/// cost model's currency, $5 the customers (NULL: every customer seen
/// before the window's end). Hours open run from the opening to the
/// resolution or the window's end, whichever is first.
const FIGURES: &str = "
WITH v AS (
    SELECT version,
           CASE WHEN row_number() OVER w = 1 THEN '-infinity'::timestamptz
                ELSE effective_time END AS vf,
           COALESCE(lead(effective_time) OVER w, 'infinity'::timestamptz) AS vt,
           fixed_cost, fixed_days, margin_rate
    FROM cost_models WHERE tenant_id = $1
    WINDOW w AS (ORDER BY effective_time, version)
),
c AS (
    SELECT customer_id, first_seen, first_purchase, ladder_rung, stage
    FROM customers
    WHERE tenant_id = $1 AND first_seen < $3
      AND ($5::uuid[] IS NULL OR customer_id = ANY($5))
),
p AS (
    SELECT p.customer_id,
           count(*) FILTER (WHERE p.currency = $4) AS n,
           count(DISTINCT (p.occur_time AT TIME ZONE 'UTC')::date) FILTER (WHERE p.currency = $4) AS days,
           sum(p.amount) FILTER (WHERE p.currency = $4) AS revenue,
           sum(COALESCE(p.margin, p.amount * v.margin_rate)) FILTER (WHERE p.currency = $4) AS margin,
           count(*) FILTER (WHERE p.currency IS DISTINCT FROM $4) AS other
    FROM purchases p
    JOIN v ON p.occur_time >= v.vf AND p.occur_time < v.vt
    WHERE p.tenant_id = $1 AND p.occur_time >= $2 AND p.occur_time < $3
      AND ($5::uuid[] IS NULL OR p.customer_id = ANY($5))
    GROUP BY p.customer_id
),
a0 AS (
    SELECT a.customer_id, a.type, a.currency, a.amount, v.margin_rate,
           COALESCE(rc.cost, rg.cost, 0) AS unit,
           COALESCE(rg.hour_cost, 0) AS hour_cost,
           GREATEST(EXTRACT(epoch FROM LEAST(COALESCE(a.resolve_time, $3), $3) - a.occur_time), 0)
               / 3600 AS hours
    FROM activities a
    JOIN v ON a.occur_time >= v.vf AND a.occur_time < v.vt
    LEFT JOIN cost_rates rc ON rc.tenant_id = $1 AND rc.version = v.version
        AND rc.type = a.type AND rc.channel = a.channel AND a.channel <> 0
    LEFT JOIN cost_rates rg ON rg.tenant_id = $1 AND rg.version = v.version
        AND rg.type = a.type AND rg.channel = 0
    WHERE a.tenant_id = $1 AND a.occur_time >= $2 AND a.occur_time < $3
      AND ($5::uuid[] IS NULL OR a.customer_id = ANY($5))
),
a AS (
    SELECT customer_id,
           count(*) FILTER (WHERE type IN (3, 4, 5, 6, 7)) AS contacts_n,
           sum(unit) FILTER (WHERE type IN (3, 4, 5, 6, 7)) AS contacts_cost,
           count(*) FILTER (WHERE type = 10) AS campaigns_n,
           sum(unit) FILTER (WHERE type = 10) AS campaigns_cost,
           count(*) FILTER (WHERE type = 8) AS requests_n,
           sum(hours) FILTER (WHERE type = 8) AS requests_hours,
           sum(unit + hours * hour_cost) FILTER (WHERE type = 8) AS requests_cost,
           count(*) FILTER (WHERE type = 9) AS complaints_n,
           sum(hours) FILTER (WHERE type = 9) AS complaints_hours,
           sum(unit + hours * hour_cost) FILTER (WHERE type = 9) AS complaints_cost,
           count(*) FILTER (WHERE type = 2) AS returns_n,
           sum(unit) FILTER (WHERE type = 2) AS returns_cost,
           sum(amount) FILTER (WHERE type = 2 AND currency = $4) AS refunds,
           sum(amount * margin_rate) FILTER (WHERE type = 2 AND currency = $4) AS refund_margin,
           count(*) FILTER (WHERE type = 2 AND currency IS DISTINCT FROM $4) AS other
    FROM a0 GROUP BY customer_id
),
f AS (
    SELECT c.customer_id,
           sum(EXTRACT(epoch FROM LEAST(v.vt, $3) - GREATEST(v.vf, c.first_seen, $2))
               / 86400 * v.fixed_cost / v.fixed_days) AS fixed
    FROM c JOIN v ON v.vt > GREATEST(c.first_seen, $2) AND v.vf < $3 AND v.fixed_cost > 0
    GROUP BY c.customer_id
)
SELECT c.customer_id,
       COALESCE(p.n, 0) AS purchases,
       COALESCE(p.days, 0) AS purchase_days,
       COALESCE(p.revenue, 0) AS revenue,
       round(COALESCE(p.margin, 0), 12) AS margin,
       COALESCE(a.returns_n, 0) AS returns,
       COALESCE(a.refunds, 0) AS refunds,
       round(COALESCE(a.refund_margin, 0), 12) AS refund_margin,
       COALESCE(a.contacts_n, 0) AS contacts_n,
       COALESCE(a.contacts_cost, 0) AS contacts_cost,
       COALESCE(a.campaigns_n, 0) AS campaigns_n,
       COALESCE(a.campaigns_cost, 0) AS campaigns_cost,
       COALESCE(a.requests_n, 0) AS requests_n,
       COALESCE(a.requests_hours, 0)::float8 AS requests_hours,
       round(COALESCE(a.requests_cost, 0), 12) AS requests_cost,
       COALESCE(a.complaints_n, 0) AS complaints_n,
       COALESCE(a.complaints_hours, 0)::float8 AS complaints_hours,
       round(COALESCE(a.complaints_cost, 0), 12) AS complaints_cost,
       COALESCE(a.returns_cost, 0) AS returns_cost,
       round(COALESCE(f.fixed, 0), 12) AS fixed_cost,
       COALESCE(p.other, 0) + COALESCE(a.other, 0) AS other,
       c.first_purchase, c.ladder_rung, c.stage,
       COALESCE(cv.value_tier, 0::smallint) AS value_tier
FROM c
LEFT JOIN p ON p.customer_id = c.customer_id
LEFT JOIN a ON a.customer_id = c.customer_id
LEFT JOIN f ON f.customer_id = c.customer_id
LEFT JOIN customer_values cv ON cv.tenant_id = $1 AND cv.customer_id = c.customer_id";

/// Figures over a window, and the purchases and returns left out for
/// their currency.
#[derive(Debug, Default)]
pub struct Priced {
    /// One per customer.
    pub figures: Vec<Figures>,
    /// Left out for their currency.
    pub other_currency: i64,
}

/// The figures of `customers` (every customer seen before `end` when None)
/// over [start, end), in the cost model's `currency`.
pub async fn figures(
    conn: &mut PgConnection,
    tenant: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    currency: &str,
    customers: Option<&[Uuid]>,
) -> sqlx::Result<Priced> {
    let rows: Vec<Row> = sqlx::query_as(FIGURES)
        .bind(tenant)
        .bind(start)
        .bind(end)
        .bind(currency)
        .bind(customers)
        .fetch_all(conn)
        .await?;
    let mut out = Priced {
        figures: Vec::with_capacity(rows.len()),
        other_currency: 0,
    };
    for r in rows {
        out.other_currency += r.other;
        let line = |count: i64, hours: f64, cost: Decimal| Line {
            count,
            hours,
            cost: round_nano(cost),
        };
        let fixed = round_nano(r.fixed_cost);
        out.figures.push(Figures {
            customer: r.customer_id,
            purchases: r.purchases,
            purchase_days: r.purchase_days,
            revenue: r.revenue,
            returns: r.returns,
            refunds: r.refunds,
            margin: round_nano(r.margin) - round_nano(r.refund_margin),
            lines: [
                line(r.contacts_n, 0.0, r.contacts_cost),
                line(r.campaigns_n, 0.0, r.campaigns_cost),
                line(r.requests_n, r.requests_hours, r.requests_cost),
                line(r.complaints_n, r.complaints_hours, r.complaints_cost),
                line(r.returns, 0.0, r.returns_cost),
                line(i64::from(fixed > Decimal::ZERO), 0.0, fixed),
            ],
            first_purchase: r.first_purchase,
            rung: r.ladder_rung,
            stage: r.stage,
            tier: r.value_tier,
        });
    }
    Ok(out)
}
