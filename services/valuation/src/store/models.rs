//! Fitted models: versions, activation and the run locks.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

/// A stored model: its encoded immutable body and mutable activation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelRow {
    /// The model's id.
    pub model_id: Uuid,
    /// Encoded `rapport.valuation.v1.Model`.
    pub body: Vec<u8>,
    /// Whether it is active.
    pub active: bool,
    /// When it was last activated.
    pub activate_time: Option<DateTime<Utc>>,
    /// When it was fitted.
    pub create_time: DateTime<Utc>,
}

/// Serialises fits of one kind for a tenant (version numbers) until the
/// transaction ends.
pub async fn lock_kind(tx: &mut PgConnection, tenant: Uuid, kind: i16) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('valuation.models'), hashtext($1::text || $2::text))")
        .bind(tenant)
        .bind(i32::from(kind))
        .execute(tx)
        .await?;
    Ok(())
}

/// The next version number of `kind` for the tenant.
pub async fn next_version(tx: &mut PgConnection, tenant: Uuid, kind: i16) -> sqlx::Result<i32> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(version), 0) + 1 FROM models WHERE tenant_id = $1 AND kind = $2",
    )
    .bind(tenant)
    .bind(kind)
    .fetch_one(tx)
    .await
}

/// Stores a new model.
#[allow(clippy::too_many_arguments)]
pub async fn insert_model(
    tx: &mut PgConnection,
    tenant: Uuid,
    model_id: Uuid,
    kind: i16,
    version: i32,
    body: &[u8],
    create_time: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO models (tenant_id, model_id, kind, version, body, create_time)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(model_id)
    .bind(kind)
    .bind(version)
    .bind(body)
    .bind(create_time)
    .execute(tx)
    .await?;
    Ok(())
}

const MODEL_COLUMNS: &str = "model_id, body, active, activate_time, create_time";

/// One model of the tenant.
pub async fn get_model(
    conn: &mut PgConnection,
    tenant: Uuid,
    model_id: Uuid,
) -> sqlx::Result<Option<ModelRow>> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE tenant_id = $1 AND model_id = $2"
    )))
    .bind(tenant)
    .bind(model_id)
    .fetch_optional(conn)
    .await
}

/// The tenant's active model of `kind`.
pub async fn active_model(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: i16,
) -> sqlx::Result<Option<ModelRow>> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {MODEL_COLUMNS} FROM models WHERE tenant_id = $1 AND kind = $2 AND active"
    )))
    .bind(tenant)
    .bind(kind)
    .fetch_optional(conn)
    .await
}

/// A page of models, newest first, after the keyset `after`.
pub async fn list_models(
    pool: &PgPool,
    tenant: Uuid,
    kind: Option<i16>,
    active_only: bool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<ModelRow>> {
    let (t, id) = after.unzip();
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {MODEL_COLUMNS} FROM models
         WHERE tenant_id = $1
           AND ($2::smallint IS NULL OR kind = $2)
           AND (NOT $3 OR active)
           AND ($4::timestamptz IS NULL OR (create_time, model_id) < ($4, $5))
         ORDER BY create_time DESC, model_id DESC
         LIMIT $6"
    )))
    .bind(tenant)
    .bind(kind)
    .bind(active_only)
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Makes `model_id` the active model of `kind`, deactivating the previous
/// one; returns the previous active model's id.
pub async fn activate(
    tx: &mut PgConnection,
    tenant: Uuid,
    kind: i16,
    model_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    let previous: Option<Uuid> = sqlx::query_scalar(
        "UPDATE models SET active = false
         WHERE tenant_id = $1 AND kind = $2 AND active AND model_id <> $3
         RETURNING model_id",
    )
    .bind(tenant)
    .bind(kind)
    .bind(model_id)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE models SET active = true, activate_time = $3 WHERE tenant_id = $1 AND model_id = $2",
    )
    .bind(tenant)
    .bind(model_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(previous)
}
