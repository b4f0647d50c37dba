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

/// What authenticating a key needs: the key and its tenant's limits.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyAuthRow {
    /// The key's tenant.
    pub tenant_id: Uuid,
    /// The key's id.
    pub key_id: Uuid,
    /// Its visible prefix.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    pub expire_time: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<DateTime<Utc>>,
    /// The tenant's sustained rate per key.
    pub rate_limit_per_second: i32,
    /// The tenant's burst per key.
    pub rate_limit_burst: i32,
    /// Whether the tenant is the operator tenant.
    pub is_operator: bool,
}

/// The key with this hash and its tenant's limits.
pub async fn authenticate(
    pool: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<KeyAuthRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.tenant_id, k.key_id, k.prefix, k.scopes, k.expire_time, k.revoke_time,
                t.rate_limit_per_second, t.rate_limit_burst, t.is_operator
         FROM api_keys k JOIN tenants t USING (tenant_id)
         WHERE k.secret_hash = $1",
    )
    .bind(&hash[..])
    .fetch_optional(pool)
    .await
}

/// Records that a key was used (at most once per cache period per replica).
pub async fn touch_key(pool: &PgPool, tenant_id: Uuid, key_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_time = now() WHERE tenant_id = $1 AND key_id = $2")
        .bind(tenant_id)
        .bind(key_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Revokes a key (idempotent: an earlier revocation time is kept).
pub async fn revoke_key(pool: &PgPool, tenant_id: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE tenant_id = $1 AND key_id = $2",
    )
    .bind(tenant_id)
    .bind(key_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a tenant's per-key rate limit.
pub async fn set_rate_limit(
    pool: &PgPool,
    tenant_id: Uuid,
    per_second: i32,
    burst: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tenants SET rate_limit_per_second = $2, rate_limit_burst = $3, version = version + 1, update_time = now()
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(per_second)
    .bind(burst)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks `tenant_id` as the operator tenant (there is at most one).
pub async fn make_operator(pool: &PgPool, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET is_operator = true WHERE tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM tenants WHERE is_operator)")
        .bind(tenant_id)
        .execute(pool)
        .await?;
    Ok(())
}
