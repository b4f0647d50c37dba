//! The versions of each tenant's cost model (`cost_models`, with their
//! prices in `cost_rates`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::profit::CostModel;

/// One stored version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Version {
    /// 1, 2, ...
    pub version: i32,
    /// Its id (what a request id remembers).
    pub cost_model_id: Uuid,
    /// From when it prices.
    pub effective_time: DateTime<Utc>,
    /// When it was set.
    pub create_time: DateTime<Utc>,
    /// ISO 4217.
    pub currency_code: String,
    /// The encoded `CostModel` as set.
    pub body: Vec<u8>,
}

const COLUMNS: &str = "version, cost_model_id, effective_time, create_time, currency_code, body";

/// Serialises changes of the tenant's cost model until the transaction
/// ends.
pub async fn lock(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    super::tenant_lock(tx, "valuation.cost_models", tenant).await
}

/// The newest version (highest number).
pub async fn latest(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Option<Version>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM cost_models WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1"
    )))
    .bind(tenant)
    .fetch_optional(conn)
    .await
}

/// The version in effect at `at`: the last by effective time (then
/// number) that took effect by then, or the first when none had.
pub async fn in_effect(
    conn: &mut PgConnection,
    tenant: Uuid,
    at: DateTime<Utc>,
) -> sqlx::Result<Option<Version>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM cost_models WHERE tenant_id = $1
         ORDER BY effective_time <= $2 DESC,
                  CASE WHEN effective_time <= $2 THEN effective_time END DESC,
                  CASE WHEN effective_time <= $2 THEN version END DESC,
                  effective_time, version
         LIMIT 1"
    )))
    .bind(tenant)
    .bind(at)
    .fetch_optional(conn)
    .await
}

/// One version by number.
pub async fn by_version(
    conn: &mut PgConnection,
    tenant: Uuid,
    version: i32,
) -> sqlx::Result<Option<Version>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM cost_models WHERE tenant_id = $1 AND version = $2"
    )))
    .bind(tenant)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// One version by id.
pub async fn by_id(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Version>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM cost_models WHERE tenant_id = $1 AND cost_model_id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Versions below `before` (every one when None), newest first.
pub async fn list(
    conn: &mut PgConnection,
    tenant: Uuid,
    before: Option<i32>,
    limit: i64,
) -> sqlx::Result<Vec<Version>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM cost_models
         WHERE tenant_id = $1 AND ($2::int IS NULL OR version < $2)
         ORDER BY version DESC LIMIT $3"
    )))
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Stores version `version` of the tenant's cost model with its prices.
pub async fn insert(
    tx: &mut PgConnection,
    tenant: Uuid,
    version: i32,
    id: Uuid,
    model: &CostModel,
    body: &[u8],
) -> sqlx::Result<DateTime<Utc>> {
    let created: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO cost_models (tenant_id, version, cost_model_id, effective_time, create_time,
             currency_code, fixed_cost, fixed_days, margin_rate, body)
         VALUES ($1, $2, $3, $4, date_trunc('milliseconds', clock_timestamp()), $5, $6, $7, $8, $9)
         RETURNING create_time",
    )
    .bind(tenant)
    .bind(version)
    .bind(id)
    .bind(model.effective_time)
    .bind(&model.currency)
    .bind(model.fixed_cost)
    .bind(model.fixed_days)
    .bind(model.margin_rate)
    .bind(body)
    .fetch_one(&mut *tx)
    .await?;
    let kinds: Vec<i16> = model.rates.iter().map(|r| r.kind).collect();
    let channels: Vec<i16> = model.rates.iter().map(|r| r.channel).collect();
    let costs: Vec<Decimal> = model.rates.iter().map(|r| r.cost).collect();
    let hours: Vec<Decimal> = model.rates.iter().map(|r| r.hour_cost).collect();
    sqlx::query(
        "INSERT INTO cost_rates (tenant_id, version, type, channel, cost, hour_cost)
         SELECT $1, $2, t.* FROM unnest($3::smallint[], $4::smallint[], $5::numeric[], $6::numeric[]) AS t",
    )
    .bind(tenant)
    .bind(version)
    .bind(&kinds)
    .bind(&channels)
    .bind(&costs)
    .bind(&hours)
    .execute(tx)
    .await?;
    Ok(created)
}

/// The currency of the tenant's cost model, when it has one.
pub async fn currency(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT currency_code FROM cost_models WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await
}
