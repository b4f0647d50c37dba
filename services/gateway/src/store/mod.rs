//! The gateway's SQL: tenants and API keys in the `gateway` schema, and the
//! audit trail ([`audit`]).

pub mod audit;

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
    /// When it was created.
    pub create_time: DateTime<Utc>,
    /// When it last authenticated a call.
    pub last_used_time: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "tenant_id, key_id, prefix, display_name, scopes, expire_time, revoke_time, create_time, last_used_time";

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
         RETURNING tenant_id, key_id, prefix, display_name, scopes, expire_time, revoke_time, create_time, last_used_time",
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
        "SELECT tenant_id, key_id, prefix, display_name, scopes, expire_time, revoke_time, create_time, last_used_time
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
    /// The tenant's open streams per key.
    pub max_concurrent_streams: i32,
    /// The tenant's sustained rate, all keys together.
    pub tenant_rate_limit_per_second: i32,
    /// The tenant's burst, all keys together.
    pub tenant_rate_limit_burst: i32,
    /// The tenant's open streams, all keys together.
    pub tenant_max_concurrent_streams: i32,
    /// Whether the tenant is the operator tenant.
    pub is_operator: bool,
    /// The tenant's time zone.
    pub time_zone: String,
}

/// The key with this hash and its tenant's limits.
pub async fn authenticate(
    pool: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<KeyAuthRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.tenant_id, k.key_id, k.prefix, k.scopes, k.expire_time, k.revoke_time,
                t.rate_limit_per_second, t.rate_limit_burst, t.max_concurrent_streams,
                t.tenant_rate_limit_per_second, t.tenant_rate_limit_burst,
                t.tenant_max_concurrent_streams, t.is_operator, t.time_zone
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

/// Sets the budgets shared by all keys of a tenant.
pub async fn set_tenant_budget(
    pool: &PgPool,
    tenant_id: Uuid,
    per_second: i32,
    burst: i32,
    streams: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tenants SET tenant_rate_limit_per_second = $2, tenant_rate_limit_burst = $3,
                tenant_max_concurrent_streams = $4, version = version + 1, update_time = now()
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .bind(per_second)
    .bind(burst)
    .bind(streams)
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

/// A stored tenant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Its id.
    pub tenant_id: Uuid,
    /// Its name.
    pub display_name: String,
    /// Per-key sustained rate.
    pub rate_limit_per_second: i32,
    /// Per-key burst.
    pub rate_limit_burst: i32,
    /// Per-key open streams.
    pub max_concurrent_streams: i32,
    /// Sustained rate of all keys together.
    pub tenant_rate_limit_per_second: i32,
    /// Burst of all keys together.
    pub tenant_rate_limit_burst: i32,
    /// Open streams of all keys together.
    pub tenant_max_concurrent_streams: i32,
    /// Whether it is the operator tenant.
    pub is_operator: bool,
    /// Its time zone (an IANA name).
    pub time_zone: String,
    /// Version, changed by every update (the etag).
    pub version: i64,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
}

const TENANT_COLUMNS: &str = "tenant_id, display_name, rate_limit_per_second, rate_limit_burst, \
     max_concurrent_streams, tenant_rate_limit_per_second, tenant_rate_limit_burst, \
     tenant_max_concurrent_streams, is_operator, time_zone, version, create_time, update_time";

/// A new tenant's settings.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Its name.
    pub display_name: String,
    /// Per-key sustained rate.
    pub rate_limit_per_second: i32,
    /// Per-key burst.
    pub rate_limit_burst: i32,
    /// Per-key open streams.
    pub max_concurrent_streams: i32,
    /// Sustained rate of all keys together.
    pub tenant_rate_limit_per_second: i32,
    /// Burst of all keys together.
    pub tenant_rate_limit_burst: i32,
    /// Open streams of all keys together.
    pub tenant_max_concurrent_streams: i32,
    /// Its time zone (an IANA name).
    pub time_zone: String,
}

/// Creates a tenant with explicit limits, in `tx`.
pub async fn insert_tenant(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    t: &NewTenant,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (tenant_id, display_name, rate_limit_per_second, rate_limit_burst,
                              max_concurrent_streams, tenant_rate_limit_per_second,
                              tenant_rate_limit_burst, tenant_max_concurrent_streams, time_zone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {TENANT_COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(&t.display_name)
    .bind(t.rate_limit_per_second)
    .bind(t.rate_limit_burst)
    .bind(t.max_concurrent_streams)
    .bind(t.tenant_rate_limit_per_second)
    .bind(t.tenant_rate_limit_burst)
    .bind(t.tenant_max_concurrent_streams)
    .bind(&t.time_zone)
    .fetch_one(tx)
    .await
}

/// One tenant.
pub async fn get_tenant(pool: &PgPool, tenant_id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1"
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// Tenants oldest first after the keyset cursor `after`, `only` one when set.
pub async fn list_tenants(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    only: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    let (t, id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_COLUMNS} FROM tenants
         WHERE ($1::timestamptz IS NULL OR (create_time, tenant_id) > ($1, $2))
           AND ($3::uuid IS NULL OR tenant_id = $3)
         ORDER BY create_time, tenant_id LIMIT $4"
    )))
    .bind(t)
    .bind(id)
    .bind(only)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Applies new values to a tenant if its version is still `expected` (when
/// given). `Ok(None)`: the tenant is gone or its version moved on.
pub async fn update_tenant(
    pool: &PgPool,
    tenant_id: Uuid,
    expected: Option<i64>,
    t: &NewTenant,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE tenants SET display_name = $3, rate_limit_per_second = $4, rate_limit_burst = $5,
                max_concurrent_streams = $6, tenant_rate_limit_per_second = $7,
                tenant_rate_limit_burst = $8, tenant_max_concurrent_streams = $9,
                time_zone = $10, version = version + 1, update_time = now()
         WHERE tenant_id = $1 AND ($2::bigint IS NULL OR version = $2)
         RETURNING {TENANT_COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(expected)
    .bind(&t.display_name)
    .bind(t.rate_limit_per_second)
    .bind(t.rate_limit_burst)
    .bind(t.max_concurrent_streams)
    .bind(t.tenant_rate_limit_per_second)
    .bind(t.tenant_rate_limit_burst)
    .bind(t.tenant_max_concurrent_streams)
    .bind(&t.time_zone)
    .fetch_optional(pool)
    .await
}

/// Stores a key in `tx`.
pub async fn insert_key_tx(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    key: &NewKey,
    display_name: &str,
    scopes: &[String],
    expire_time: Option<DateTime<Utc>>,
) -> Result<ApiKeyRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (tenant_id, key_id, prefix, secret_hash, display_name, scopes, expire_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    )))
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(&key.prefix)
    .bind(&key.hash[..])
    .bind(display_name)
    .bind(scopes)
    .bind(expire_time)
    .fetch_one(tx)
    .await
}

/// One key by id, within `tenant` (any tenant when `None`).
pub async fn get_key(
    pool: &PgPool,
    key_id: Uuid,
    tenant: Option<Uuid>,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
    )))
    .bind(key_id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// A tenant's keys, newest first after the keyset cursor `before`.
pub async fn list_keys(
    pool: &PgPool,
    tenant_id: Uuid,
    include_revoked: bool,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let (t, id) = before.map_or((None, None), |(t, id)| (Some(t), Some(id)));
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE tenant_id = $1 AND ($2 OR revoke_time IS NULL)
           AND ($3::timestamptz IS NULL OR (create_time, key_id) < ($3, $4))
         ORDER BY create_time DESC, key_id DESC LIMIT $5"
    )))
    .bind(tenant_id)
    .bind(include_revoked)
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Takes the idempotency lock for one key within a transaction, so two
/// concurrent retries cannot both create.
pub async fn lock_request(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    kind: &str,
    request_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2 || '/' || $3))")
        .bind(tenant_id.to_string())
        .bind(kind)
        .bind(request_id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Sets a tenant's limit of open streams per key.
pub async fn set_max_streams(pool: &PgPool, tenant_id: Uuid, max: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET max_concurrent_streams = $2, version = version + 1, update_time = now() WHERE tenant_id = $1")
        .bind(tenant_id)
        .bind(max)
        .execute(pool)
        .await?;
    Ok(())
}
