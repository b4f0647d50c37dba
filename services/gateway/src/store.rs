//! The gateway's SQL: tenants and API keys in the `gateway` schema.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::keys::NewKey;

/// A stored API key (without its secret, which is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// The key's tenant.
    pub tenant_id: Uuid,
    /// The key's id.
    pub key_id: Uuid,
    /// Its visible prefix.
    pub prefix: String,
    /// A name for people.
    pub display_name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    pub expire_time: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<DateTime<Utc>>,
}

/// Creates a tenant with the default limits.
pub async fn create_tenant(
    pool: &PgPool,
    tenant_id: Uuid,
    display_name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO tenants (tenant_id, display_name) VALUES ($1, $2)")
        .bind(tenant_id)
        .bind(display_name)
        .execute(pool)
        .await?;
    Ok(())
}

/// The id of the tenant called `display_name`, if one exists.
pub async fn tenant_by_name(
    pool: &PgPool,
    display_name: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM tenants WHERE display_name = $1 ORDER BY create_time LIMIT 1",
    )
    .bind(display_name)
    .fetch_optional(pool)
    .await
}

/// Stores a key (its hash) for `tenant_id`.
pub async fn insert_key(
    pool: &PgPool,
    tenant_id: Uuid,
    key: &NewKey,
    display_name: &str,
    scopes: &[String],
    expire_time: Option<DateTime<Utc>>,
) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO api_keys (tenant_id, key_id, prefix, secret_hash, display_name, scopes, expire_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING tenant_id, key_id, prefix, display_name, scopes, expire_time, revoke_time",
    )
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(&key.prefix)
    .bind(&key.hash[..])
    .bind(display_name)
    .bind(scopes)
    .bind(expire_time)
    .fetch_one(pool)
    .await
}

/// The key with this hash, if any (revoked and expired ones included).
pub async fn key_by_hash(pool: &PgPool, hash: &[u8; 32]) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, key_id, prefix, display_name, scopes, expire_time, revoke_time
         FROM api_keys WHERE secret_hash = $1",
    )
    .bind(&hash[..])
    .fetch_optional(pool)
    .await
}
