//! Purchases received on the interaction feed, their reassignment and
//! erasure, and the cohort report's reads.

use chrono::{DateTime, Utc};
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::valuation::v1::ValuationEvent;
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::*;

/// One purchase received on the interaction feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    /// The interaction.
    pub interaction_id: Uuid,
    /// Its customer now.
    pub customer_id: Uuid,
    /// The customer it was first recorded under.
    pub original_customer_id: Uuid,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// Currency of amount and margin.
    pub currency: Option<String>,
    /// Amount.
    pub amount: Option<Decimal>,
    /// Margin.
    pub margin: Option<Decimal>,
}

/// Records purchases (idempotent: one already recorded is left alone);
/// returns the ids of those recorded now.
pub async fn record_purchases(
    tx: &mut PgConnection,
    tenant: Uuid,
    purchases: &[Purchase],
) -> sqlx::Result<Vec<Uuid>> {
    if purchases.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = purchases.iter().map(|p| p.interaction_id).collect();
    let customers: Vec<Uuid> = purchases.iter().map(|p| p.customer_id).collect();
    let originals: Vec<Uuid> = purchases.iter().map(|p| p.original_customer_id).collect();
    let times: Vec<DateTime<Utc>> = purchases.iter().map(|p| p.occur_time).collect();
    let currencies: Vec<Option<String>> = purchases.iter().map(|p| p.currency.clone()).collect();
    let amounts: Vec<Option<Decimal>> = purchases.iter().map(|p| p.amount).collect();
    let margins: Vec<Option<Decimal>> = purchases.iter().map(|p| p.margin).collect();
    sqlx::query_scalar(
        "INSERT INTO purchases (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, currency, amount, margin)
         SELECT $1, t.* FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[],
                                    $6::text[], $7::numeric[], $8::numeric[]) AS t
         ON CONFLICT DO NOTHING RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&originals)
    .bind(&times)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&margins)
    .fetch_all(tx)
    .await
}

/// Moves purchases and the interactions that cost (`activities`) from one
/// customer to another: the listed ones, or without a list everything of
/// `from` (a merge) or what was first recorded under `to` (an unmerge).
pub async fn reassign(
    tx: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
    unmerge: bool,
    ids: Option<&[Uuid]>,
) -> sqlx::Result<()> {
    // The table names are constants: only values are bound.
    for table in ["purchases", "activities"] {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET customer_id = $3
             WHERE tenant_id = $1 AND customer_id = $2
               AND ($4::uuid[] IS NULL OR interaction_id = ANY($4))
               AND ($4::uuid[] IS NOT NULL OR NOT $5 OR original_customer_id = $3)"
        )))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .bind(ids)
        .bind(unmerge)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Deletes everything derived from an erased customer: purchases (and
/// their summary), queue entry and value (true when there was a value), and reduces the
/// customer's earlier feed events to `redacted` ones.
pub async fn erase_customer(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> sqlx::Result<bool> {
    summaries::uncount_customer(tx, tenant, customer).await?;
    sqlx::query("DELETE FROM purchases WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    summaries::rebuild(tx, tenant, &[customer]).await?;
    sqlx::query("DELETE FROM rescore_queue WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    let had = sqlx::query("DELETE FROM customer_values WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    // Every earlier event about the customer, typed or from before typed
    // events (its JSON payload is cleared too), becomes a `redacted` event
    // that keeps only the customer id.
    feed::redact_aggregates::<ValuationEvent>(
        tx,
        tenant,
        "customer",
        &[customer.to_string()],
        RedactionReason::Erased,
    )
    .await?;
    Ok(had)
}

/// The currency of most of the tenant's purchases.
pub async fn main_purchase_currency(pool: &PgPool, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT currency FROM purchases WHERE tenant_id = $1 AND currency IS NOT NULL
         GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Cohort sizes: (start of the acquisition period, customers).
pub async fn cohort_sizes(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, i64)>> {
    sqlx::query_as(
        "SELECT date_trunc($2, first, 'UTC') AS cohort, count(*)
         FROM (SELECT min(occur_time) AS first FROM purchases WHERE tenant_id = $1 GROUP BY customer_id) f
         GROUP BY 1",
    )
    .bind(tenant)
    .bind(field)
    .fetch_all(pool)
    .await
}

/// Per cohort and calendar period: (cohort start, period start, customers
/// buying, revenue in `currency`).
pub async fn cohort_activity(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
    currency: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, DateTime<Utc>, i64, Option<Decimal>)>> {
    sqlx::query_as(
        "WITH f AS (SELECT customer_id, date_trunc($2, min(occur_time), 'UTC') AS cohort
                    FROM purchases WHERE tenant_id = $1 GROUP BY customer_id)
         SELECT f.cohort, date_trunc($2, p.occur_time, 'UTC') AS period,
                count(DISTINCT p.customer_id), sum(p.amount) FILTER (WHERE p.currency = $3)
         FROM purchases p JOIN f ON f.customer_id = p.customer_id
         WHERE p.tenant_id = $1
         GROUP BY 1, 2",
    )
    .bind(tenant)
    .bind(field)
    .bind(currency)
    .fetch_all(pool)
    .await
}

/// Per cohort: (cohort start, scored customers, sum of historical values,
/// sum of CLVs).
pub async fn cohort_values(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, i64, Option<Decimal>, Option<Decimal>)>> {
    sqlx::query_as(
        "WITH f AS (SELECT customer_id, date_trunc($2, min(occur_time), 'UTC') AS cohort
                    FROM purchases WHERE tenant_id = $1 GROUP BY customer_id)
         SELECT f.cohort, count(*), sum(v.historical_value), sum(v.clv)
         FROM f JOIN customer_values v ON v.tenant_id = $1 AND v.customer_id = f.customer_id
         GROUP BY 1",
    )
    .bind(tenant)
    .bind(field)
    .fetch_all(pool)
    .await
}
