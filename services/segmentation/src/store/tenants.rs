//! Tenants: their currency and the state of their RFM cut-offs.

use super::*;

/// The tenant's row, created on first use.
pub async fn ensure_tenant(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's currency (None before its first purchase).
pub async fn currency(conn: &mut PgConnection, tenant: Uuid) -> Result<Option<String>> {
    let c: Option<Option<String>> =
        sqlx::query_scalar("SELECT currency_code FROM tenants WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(conn)
            .await?;
    Ok(c.flatten())
}

/// Sets the tenant's currency unless it has one; returns the currency in force.
pub async fn claim_currency(conn: &mut PgConnection, tenant: Uuid, code: &str) -> Result<String> {
    // Only the first purchase writes the row (keeping lock order with the
    // tenant-wide recomputation: features rows first, then the tenant row).
    if let Some(c) = currency(conn, tenant).await? {
        return Ok(c);
    }
    ensure_tenant(conn, tenant).await?;
    sqlx::query_scalar(
        "UPDATE tenants SET currency_code = coalesce(currency_code, $2) WHERE tenant_id = $1
         RETURNING currency_code",
    )
    .bind(tenant)
    .bind(code)
    .fetch_one(conn)
    .await
}

/// The RFM state of a tenant.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct RfmState {
    pub rfm_compute_time: Option<DateTime<Utc>>,
    pub rfm_recency_cutoffs: Vec<i32>,
    pub rfm_frequency_cutoffs: Vec<i64>,
    pub rfm_monetary_cutoffs: Vec<Decimal>,
    pub rfm_scored: i64,
    pub rfm_dirty: bool,
}

/// The tenant's RFM cut-offs.
pub async fn rfm_state(conn: &mut PgConnection, tenant: Uuid) -> Result<RfmState> {
    let s: Option<RfmState> = sqlx::query_as(
        "SELECT rfm_compute_time, rfm_recency_cutoffs, rfm_frequency_cutoffs, rfm_monetary_cutoffs,
                rfm_scored, rfm_dirty
         FROM tenants WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    Ok(s.unwrap_or_default())
}

/// Marks the tenant's RFM scores as behind its purchases.
pub async fn mark_rfm_dirty(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    ensure_tenant(conn, tenant).await?;
    sqlx::query("UPDATE tenants SET rfm_dirty = true WHERE tenant_id = $1 AND NOT rfm_dirty")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tenants whose full RFM and classification computation is due: never
/// computed, or older than `max_age`.
pub async fn tenants_due(conn: &mut PgConnection, older_than: DateTime<Utc>) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM tenants
         WHERE rfm_compute_time IS NULL OR rfm_compute_time < $1
         ORDER BY rfm_compute_time NULLS FIRST LIMIT 100",
    )
    .bind(older_than)
    .fetch_all(conn)
    .await
}
