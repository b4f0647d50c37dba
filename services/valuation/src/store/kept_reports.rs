//! Kept profitability reports (`kept_reports`, `kept_report_ranks`): the
//! last report of each tenant's default window, with its customers ranked,
//! from which any whale curve and segment groups are drawn.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::profit::Ranked;

/// A kept report's fixed parts.
#[derive(Debug, sqlx::FromRow)]
pub struct Kept {
    /// When it was computed (its window's end).
    pub compute_time: DateTime<Utc>,
    /// The cost model's latest version then.
    pub cost_model_version: i32,
    /// The encoded report without curve and segments.
    pub body: Vec<u8>,
}

/// Serialises writers of a tenant's kept report.
pub async fn lock(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    super::tenant_lock(tx, "valuation.kept_reports", tenant).await
}

/// The tenant's kept report, if any.
pub async fn get(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Option<Kept>> {
    sqlx::query_as(
        "SELECT compute_time, cost_model_version, body FROM kept_reports WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await
}

/// Replaces the tenant's kept report (under [`lock`]): its fixed parts and
/// its ranked customers, written with COPY.
pub async fn replace(
    tx: &mut PgConnection,
    tenant: Uuid,
    kept: &Kept,
    ranks: impl Iterator<Item = Ranked>,
) -> sqlx::Result<()> {
    use std::fmt::Write as _;
    sqlx::query("DELETE FROM kept_report_ranks WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO kept_reports (tenant_id, compute_time, cost_model_version, body)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET compute_time = EXCLUDED.compute_time,
             cost_model_version = EXCLUDED.cost_model_version, body = EXCLUDED.body",
    )
    .bind(tenant)
    .bind(kept.compute_time)
    .bind(kept.cost_model_version)
    .bind(&kept.body)
    .execute(&mut *tx)
    .await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY kept_report_ranks (tenant_id, rank, customer_id, revenue, margin, cost, \
             cumulative) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(super::CHUNK * 120);
    let mut ranks = ranks.peekable();
    while ranks.peek().is_some() {
        buf.clear();
        for r in ranks.by_ref().take(super::CHUNK) {
            let _ = writeln!(
                buf,
                "{tenant}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.rank, r.customer, r.revenue, r.margin, r.cost, r.cumulative
            );
        }
        copy.send(buf.as_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// The cumulative net profit at each of `ranks` (1-based), as (rank,
/// cumulative).
pub async fn cumulative_at(
    conn: &mut PgConnection,
    tenant: Uuid,
    ranks: &[i64],
) -> sqlx::Result<Vec<(i64, Decimal)>> {
    sqlx::query_as(
        "SELECT rank, cumulative FROM kept_report_ranks
         WHERE tenant_id = $1 AND rank = ANY($2)",
    )
    .bind(tenant)
    .bind(ranks)
    .fetch_all(conn)
    .await
}

/// Totals over the kept customers among `members`: how many, and their
/// revenue, gross margin and cost to serve.
#[derive(Debug, sqlx::FromRow)]
pub struct Sums {
    /// Customers.
    pub customers: i64,
    /// Revenue.
    pub revenue: Decimal,
    /// Gross margin.
    pub margin: Decimal,
    /// Cost to serve.
    pub cost: Decimal,
}

/// [`Sums`] over the kept customers among `members`.
pub async fn sums_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    members: &[Uuid],
) -> sqlx::Result<Sums> {
    sqlx::query_as(
        "SELECT count(*) AS customers, COALESCE(sum(revenue), 0) AS revenue,
                COALESCE(sum(margin), 0) AS margin, COALESCE(sum(cost), 0) AS cost
         FROM kept_report_ranks WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(members)
    .fetch_one(conn)
    .await
}

/// Removes an erased customer's id from the tenant's kept ranks (its
/// figures stay in the totals); true when it was there. The caller removes
/// it from the kept body's value destroyers with [`set_body`].
pub async fn forget(tx: &mut PgConnection, tenant: Uuid, customer: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "UPDATE kept_report_ranks SET customer_id = NULL
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customer)
    .execute(tx)
    .await?
    .rows_affected()
        > 0)
}

/// Replaces the kept body.
pub async fn set_body(tx: &mut PgConnection, tenant: Uuid, body: &[u8]) -> sqlx::Result<()> {
    sqlx::query("UPDATE kept_reports SET body = $2 WHERE tenant_id = $1")
        .bind(tenant)
        .bind(body)
        .execute(tx)
        .await?;
    Ok(())
}

/// Deletes the tenant's kept report.
pub async fn discard(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    for table in ["kept_report_ranks", "kept_reports"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
