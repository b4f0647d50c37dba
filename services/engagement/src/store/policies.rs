//! The tenants' policies.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use crate::domain::policy::Policy;

/// A stored policy: its fields, version and last change.
pub struct PolicyRow {
    pub policy: Policy,
    /// 0 while the defaults apply.
    pub version: i64,
    pub update_time: Option<DateTime<Utc>>,
}

/// The tenant's policy (the defaults, version 0, when never set), locked
/// for update when `lock` and stored.
pub async fn policy(conn: &mut PgConnection, tenant: Uuid, lock: bool) -> Result<PolicyRow> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<(sqlx::types::Json<Policy>, i64, DateTime<Utc>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT doc, version, update_time FROM policies WHERE tenant_id = $1{lock}"
        )))
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some((doc, version, t)) => PolicyRow {
            policy: doc.0,
            version,
            update_time: Some(t),
        },
        None => PolicyRow {
            policy: Policy::default(),
            version: 0,
            update_time: None,
        },
    })
}

/// Stores the tenant's policy as its next version.
pub async fn save_policy(
    conn: &mut PgConnection,
    tenant: Uuid,
    p: &Policy,
    now: DateTime<Utc>,
) -> Result<PolicyRow> {
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO policies (tenant_id, doc, version, update_time) VALUES ($1, $2, 1, $3)
         ON CONFLICT (tenant_id) DO UPDATE
            SET doc = EXCLUDED.doc, version = policies.version + 1, update_time = EXCLUDED.update_time
         RETURNING version",
    )
    .bind(tenant)
    .bind(sqlx::types::Json(p))
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(PolicyRow {
        policy: p.clone(),
        version,
        update_time: Some(now),
    })
}

/// Serialises the first UpdatePolicy of a tenant with others.
pub async fn lock_policy(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('engagement.policy:' || $1::text, 0))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}
