//! The queue of customers to re-score.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Marks customers for re-scoring (keeping the latest reason given).
pub async fn enqueue(
    tx: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
    reason: Option<&str>,
) -> sqlx::Result<()> {
    // Each customer once, in one order: a row is upserted once per
    // statement, and concurrent writers lock rows in the same order.
    let mut customers = customers.to_vec();
    customers.sort_unstable();
    customers.dedup();
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rescore_queue (tenant_id, customer_id, reason)
         SELECT $1, c, $3 FROM unnest($2::uuid[]) AS c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE
         SET reason = EXCLUDED.reason, enqueue_time = clock_timestamp()",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Tenants with customers to re-score and a scoring run to do it with.
pub async fn queued_tenants(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT DISTINCT q.tenant_id FROM rescore_queue q
         JOIN scoring_state s ON s.tenant_id = q.tenant_id LIMIT 1000",
    )
    .fetch_all(pool)
    .await
}

/// A customer queued for re-scoring.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Queued {
    /// The customer.
    pub customer_id: Uuid,
    /// Why it was queued, when a reason was given.
    pub reason: Option<String>,
    /// When it was (last) queued.
    pub enqueue_time: DateTime<Utc>,
}

/// Up to `limit` queued customers of a tenant, oldest first.
pub async fn queued(pool: &PgPool, tenant: Uuid, limit: i64) -> sqlx::Result<Vec<Queued>> {
    sqlx::query_as(
        "SELECT customer_id, reason, enqueue_time FROM rescore_queue
         WHERE tenant_id = $1 ORDER BY enqueue_time LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Removes queued customers that were not queued again after `up_to`.
pub async fn dequeue(
    tx: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    up_to: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND customer_id = ANY($2) AND enqueue_time <= $3",
    )
    .bind(tenant)
    .bind(ids)
    .bind(up_to)
    .execute(tx)
    .await?;
    Ok(())
}

/// Removes every customer queued before `up_to` (a run scored them all);
/// returns the reasons of those queued with one.
pub async fn clear_queue(
    tx: &mut PgConnection,
    tenant: Uuid,
    up_to: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND enqueue_time <= $2 RETURNING customer_id, reason",
    )
    .bind(tenant)
    .bind(up_to)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, r)| r.map(|r| (id, r)))
        .collect())
}
