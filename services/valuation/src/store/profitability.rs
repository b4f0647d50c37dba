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
/// cost model's currency; for some customers, `{only_*}` restrict each part
/// to $5 (see [`statement`]), otherwise every customer seen before the
/// window's end counts. Hours open run from the opening to the
/// resolution or the window's end, whichever is first.
///
/// Every contribution (the customer itself with its fixed cost, its
/// purchases per UTC day, its priced activities, its value tier) is one row
/// of a `UNION ALL` aggregated once by customer: no join between per-customer
/// aggregates, so the plan stays linear in the rows even before the tables
/// have statistics (a nested loop over two aggregates is quadratic).
const FIGURES: &str = "
WITH v AS MATERIALIZED (
    SELECT version,
           CASE WHEN row_number() OVER w = 1 THEN '-infinity'::timestamptz
                ELSE effective_time END AS vf,
           COALESCE(lead(effective_time) OVER w, 'infinity'::timestamptz) AS vt,
           fixed_cost, fixed_days, margin_rate
    FROM cost_models WHERE tenant_id = $1
    WINDOW w AS (ORDER BY effective_time, version)
),
x AS (
    -- k 0: the customer, its classification and fixed cost.
    SELECT c.customer_id, 0 AS k, 0::smallint AS type, 0::bigint AS n, true AS in_cur,
           NULL::numeric AS amount, NULL::numeric AS margin, NULL::numeric AS unit,
           NULL::numeric AS hours, NULL::numeric AS hour_cost, NULL::numeric AS rate,
           (SELECT sum(EXTRACT(epoch FROM LEAST(v.vt, $3) - GREATEST(v.vf, c.first_seen, $2))
                       / 86400 * v.fixed_cost / v.fixed_days)
              FROM v WHERE v.vt > GREATEST(c.first_seen, $2) AND v.vf < $3
                AND v.fixed_cost > 0) AS fixed,
           c.first_purchase, c.ladder_rung, c.stage, 0::smallint AS value_tier
    FROM customers c
    WHERE c.tenant_id = $1 AND c.first_seen < $3
      {only_c}
    UNION ALL
    -- k 1: purchases, one row per customer, UTC day and currency match.
    SELECT p.customer_id, 1, 0::smallint, count(*), p.currency IS NOT DISTINCT FROM $4,
           sum(p.amount), sum(COALESCE(p.margin, p.amount * v.margin_rate)), NULL, NULL, NULL,
           NULL, NULL, NULL, 0::smallint, 0::smallint, 0::smallint
    FROM purchases p
    JOIN v ON p.occur_time >= v.vf AND p.occur_time < v.vt
    WHERE p.tenant_id = $1 AND p.occur_time >= $2 AND p.occur_time < $3
      {only_p}
    GROUP BY p.customer_id, (p.occur_time AT TIME ZONE 'UTC')::date,
             p.currency IS NOT DISTINCT FROM $4
    UNION ALL
    -- k 2: activities, priced by the version in effect when they happened.
    SELECT a.customer_id, 2, a.type, 1, a.currency IS NOT DISTINCT FROM $4,
           a.amount, NULL, COALESCE(rc.cost, rg.cost, 0),
           GREATEST(EXTRACT(epoch FROM LEAST(COALESCE(a.resolve_time, $3), $3) - a.occur_time), 0)
               / 3600,
           COALESCE(rg.hour_cost, 0), v.margin_rate, NULL, NULL, 0::smallint, 0::smallint,
           0::smallint
    FROM activities a
    JOIN v ON a.occur_time >= v.vf AND a.occur_time < v.vt
    LEFT JOIN cost_rates rc ON rc.tenant_id = $1 AND rc.version = v.version
        AND rc.type = a.type AND rc.channel = a.channel AND a.channel <> 0
    LEFT JOIN cost_rates rg ON rg.tenant_id = $1 AND rg.version = v.version
        AND rg.type = a.type AND rg.channel = 0
    WHERE a.tenant_id = $1 AND a.occur_time >= $2 AND a.occur_time < $3
      {only_a}
    UNION ALL
    -- k 3: the value tier.
    SELECT cv.customer_id, 3, 0::smallint, 0, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, 0::smallint, 0::smallint, cv.value_tier
    FROM customer_values cv
    WHERE cv.tenant_id = $1 {only_cv}
)
SELECT customer_id,
       COALESCE(sum(n) FILTER (WHERE k = 1 AND in_cur), 0)::bigint AS purchases,
       count(*) FILTER (WHERE k = 1 AND in_cur) AS purchase_days,
       COALESCE(sum(amount) FILTER (WHERE k = 1 AND in_cur), 0) AS revenue,
       round(COALESCE(sum(margin) FILTER (WHERE k = 1 AND in_cur), 0), 12) AS margin,
       count(*) FILTER (WHERE k = 2 AND type = 2) AS returns,
       COALESCE(sum(amount) FILTER (WHERE k = 2 AND type = 2 AND in_cur), 0) AS refunds,
       round(COALESCE(sum(amount * rate) FILTER (WHERE k = 2 AND type = 2 AND in_cur), 0), 12)
           AS refund_margin,
       count(*) FILTER (WHERE k = 2 AND type IN (3, 4, 5, 6, 7)) AS contacts_n,
       COALESCE(sum(unit) FILTER (WHERE k = 2 AND type IN (3, 4, 5, 6, 7)), 0) AS contacts_cost,
       count(*) FILTER (WHERE k = 2 AND type = 10) AS campaigns_n,
       COALESCE(sum(unit) FILTER (WHERE k = 2 AND type = 10), 0) AS campaigns_cost,
       count(*) FILTER (WHERE k = 2 AND type = 8) AS requests_n,
       COALESCE(sum(hours) FILTER (WHERE k = 2 AND type = 8), 0)::float8 AS requests_hours,
       round(COALESCE(sum(unit + hours * hour_cost) FILTER (WHERE k = 2 AND type = 8), 0), 12)
           AS requests_cost,
       count(*) FILTER (WHERE k = 2 AND type = 9) AS complaints_n,
       COALESCE(sum(hours) FILTER (WHERE k = 2 AND type = 9), 0)::float8 AS complaints_hours,
       round(COALESCE(sum(unit + hours * hour_cost) FILTER (WHERE k = 2 AND type = 9), 0), 12)
           AS complaints_cost,
       COALESCE(sum(unit) FILTER (WHERE k = 2 AND type = 2), 0) AS returns_cost,
       round(COALESCE(max(fixed), 0), 12) AS fixed_cost,
       (COALESCE(sum(n) FILTER (WHERE k = 1 AND NOT in_cur), 0)
          + count(*) FILTER (WHERE k = 2 AND type = 2 AND NOT in_cur))::bigint AS other,
       max(first_purchase) AS first_purchase,
       max(ladder_rung) AS ladder_rung,
       max(stage) AS stage,
       max(value_tier) AS value_tier
FROM x
GROUP BY customer_id
HAVING bool_or(k = 0)";

/// [`FIGURES`] over every customer, or restricted to the customers in $5:
/// two statements, so that each is planned for what it reads (an index
/// lookup per customer, or the tenant's rows in one pass), never a generic
/// plan for both.
fn statement(some: bool) -> String {
    let only = |alias: &str| {
        if some {
            format!("AND {alias}.customer_id = ANY($5)")
        } else {
            String::new()
        }
    };
    FIGURES
        .replace("{only_c}", &only("c"))
        .replace("{only_p}", &only("p"))
        .replace("{only_a}", &only("a"))
        .replace("{only_cv}", &only("cv"))
}

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
    use futures::TryStreamExt;
    let sql = statement(customers.is_some());
    let query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(tenant)
        .bind(start)
        .bind(end)
        .bind(currency);
    let query = match customers {
        Some(ids) => query.bind(ids),
        None => query,
    };
    // Row by row: a million customers' figures are held once, not twice.
    let mut rows = query.fetch(conn);
    let mut out = Priced::default();
    while let Some(r) = rows.try_next().await? {
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
