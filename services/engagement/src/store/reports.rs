//! Purchases (from the interaction feed) and the figures of treatment
//! reports.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;

/// A purchase: (interaction, customer, time, currency, amount nanos, margin nanos).
pub type PurchaseFact = (Uuid, Uuid, DateTime<Utc>, String, i64, Option<i64>);

/// Stores purchases (a redelivered one once).
pub async fn add_purchases(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[PurchaseFact],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let customers: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.2).collect();
    let currencies: Vec<String> = rows.iter().map(|r| r.3.clone()).collect();
    let amounts: Vec<i64> = rows.iter().map(|r| r.4).collect();
    let margins: Vec<Option<i64>> = rows.iter().map(|r| r.5).collect();
    sqlx::query(
        "INSERT INTO purchases (tenant_id, interaction_id, customer_id, occur_time, currency, amount_nanos, margin_nanos)
         SELECT $1, i, c, t, cu, a, m
           FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[], $6::bigint[], $7::bigint[])
             AS x(i, c, t, cu, a, m)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&times)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&margins)
    .execute(conn)
    .await?;
    Ok(())
}

/// A treatment's decisions in a window: [start, end).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub treatment: Uuid,
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
}

/// Offers of the window by outcome: (offers, accepted, declined, ignored, pending).
pub async fn offer_counts(
    conn: &mut PgConnection,
    tenant: Uuid,
    w: Window,
) -> Result<(i64, i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE outcome = 'accepted'),
                count(*) FILTER (WHERE outcome = 'declined'), count(*) FILTER (WHERE outcome = 'ignored'),
                count(*) FILTER (WHERE outcome = 'pending')
           FROM decisions
          WHERE tenant_id = $1 AND treatment_id = $2 AND arm = 'treatment'
            AND ($3::timestamptz IS NULL OR decide_time >= $3) AND decide_time < $4",
    )
    .bind(tenant)
    .bind(w.treatment)
    .bind(w.start)
    .bind(w.end)
    .fetch_one(conn)
    .await
}

/// Revenue and margin (nanos, in `currency`) of the customers who accepted,
/// within `days` after their first accepted decision of the window.
pub async fn revenue_after_acceptance(
    conn: &mut PgConnection,
    tenant: Uuid,
    w: Window,
    days: i32,
    currency: &str,
) -> Result<(i64, i64)> {
    sqlx::query_as(
        "WITH accepted AS (
             SELECT DISTINCT ON (customer_id) customer_id, decide_time FROM decisions
              WHERE tenant_id = $1 AND treatment_id = $2 AND arm = 'treatment' AND outcome = 'accepted'
                AND ($3::timestamptz IS NULL OR decide_time >= $3) AND decide_time < $4
              ORDER BY customer_id, decide_time)
         SELECT coalesce(sum(p.amount_nanos), 0)::bigint, coalesce(sum(p.margin_nanos), 0)::bigint
           FROM accepted a JOIN purchases p
             ON p.tenant_id = $1 AND p.customer_id = a.customer_id AND p.currency = $6
            AND p.occur_time >= a.decide_time AND p.occur_time < a.decide_time + make_interval(days => $5)",
    )
    .bind(tenant)
    .bind(w.treatment)
    .bind(w.start)
    .bind(w.end)
    .bind(days)
    .bind(currency)
    .fetch_one(conn)
    .await
}

/// One arm's customers, from their first decision of the window.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ArmFigures {
    /// `treatment` or `control`.
    pub arm: String,
    /// Customers whose outcome window has ended.
    pub measured: i64,
    /// Of those, customers with a purchase within it.
    pub converted: i64,
    /// Their revenue within it, in nanos of the currency asked.
    pub revenue: i64,
    /// Customers whose window has not ended.
    pub pending: i64,
}

/// Conversion and revenue of both arms of a treatment's experiment.
pub async fn arm_figures(
    conn: &mut PgConnection,
    tenant: Uuid,
    w: Window,
    days: i32,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ArmFigures>> {
    sqlx::query_as(
        "WITH first AS (
             SELECT DISTINCT ON (arm, customer_id) arm, customer_id, decide_time FROM decisions
              WHERE tenant_id = $1 AND treatment_id = $2
                AND ($3::timestamptz IS NULL OR decide_time >= $3) AND decide_time < $4
              ORDER BY arm, customer_id, decide_time),
         measured AS (
             SELECT f.arm, f.decide_time + make_interval(days => $5) <= $7 AS done,
                    coalesce(sum(1) FILTER (WHERE p.interaction_id IS NOT NULL), 0) AS n,
                    coalesce(sum(p.amount_nanos) FILTER (WHERE p.currency = $6), 0) AS revenue
               FROM first f LEFT JOIN purchases p
                 ON p.tenant_id = $1 AND p.customer_id = f.customer_id
                AND p.occur_time >= f.decide_time AND p.occur_time < f.decide_time + make_interval(days => $5)
              GROUP BY f.arm, f.customer_id, f.decide_time)
         SELECT arm, count(*) FILTER (WHERE done) AS measured,
                count(*) FILTER (WHERE done AND n > 0) AS converted,
                coalesce(sum(revenue) FILTER (WHERE done), 0)::bigint AS revenue,
                count(*) FILTER (WHERE NOT done) AS pending
           FROM measured GROUP BY arm",
    )
    .bind(tenant)
    .bind(w.treatment)
    .bind(w.start)
    .bind(w.end)
    .bind(days)
    .bind(currency)
    .bind(now)
    .fetch_all(conn)
    .await
}
