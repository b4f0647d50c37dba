//! RFM: the whole tenant scored and its cut-offs stored, and the report per
//! RFM segment.

use super::*;

/// Recomputes the tenant's RFM scores and cut-offs at `now`. Returns the
/// customers whose scores changed.
pub async fn rfm_full(
    conn: &mut PgConnection,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    ensure_tenant(conn, tenant).await?;
    // One scan of the tenant's features: scores by window functions over
    // the customers who bought (the others get none), compared with the
    // stored scores of the same row, so only changed rows are joined back
    // by key and no plan can make it quadratic.
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "WITH s AS (
             SELECT customer_id, rfm_r, rfm_f, rfm_m,
                    purchases > 0 AND last_purchase IS NOT NULL AS scored,
                    floor(extract(epoch FROM ($2 - last_purchase)) / 86400)::int AS rd,
                    purchases, coalesce(monetary, 0) AS m
             FROM features WHERE tenant_id = $1),
         k AS (
             SELECT customer_id, rfm_r, rfm_f, rfm_m, scored,
                    rank() OVER (PARTITION BY scored ORDER BY rd DESC) - 1 AS kr,
                    rank() OVER (PARTITION BY scored ORDER BY purchases) - 1 AS kf,
                    rank() OVER (PARTITION BY scored ORDER BY m) - 1 AS km,
                    count(*) OVER (PARTITION BY scored) AS n
             FROM s),
         new AS MATERIALIZED (
             SELECT customer_id, r, f, m FROM (
                 SELECT customer_id, rfm_r, rfm_f, rfm_m,
                        CASE WHEN scored THEN (1 + (5 * kr) / n)::int END AS r,
                        CASE WHEN scored THEN (1 + (5 * kf) / n)::int END AS f,
                        CASE WHEN scored THEN (1 + (5 * km) / n)::int END AS m
                 FROM k) x
             WHERE (rfm_r, rfm_f, rfm_m) IS DISTINCT FROM (r, f, m)),
         upd AS (
             UPDATE features f SET rfm_r = new.r, rfm_f = new.f, rfm_m = new.m,
                    rfm_fm = (new.f + new.m + 1) / 2,
                    rfm_segment = rfm_segment_name(new.r, (new.f + new.m + 1) / 2)
             FROM new
             WHERE f.tenant_id = $1 AND f.customer_id = new.customer_id
             RETURNING f.customer_id)
         SELECT customer_id FROM upd",
    )
    .bind(tenant)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    // The cut-offs: the best value that still scores below s, for s = 2..=5.
    sqlx::query(
        "WITH s AS (
             SELECT floor(extract(epoch FROM ($2 - last_purchase)) / 86400)::int AS rd,
                    purchases, coalesce(monetary, 0) AS m, rfm_r, rfm_f, rfm_m
             FROM features WHERE tenant_id = $1 AND rfm_r IS NOT NULL)
         UPDATE tenants SET
             rfm_recency_cutoffs = coalesce((SELECT array_remove(ARRAY[
                 min(rd) FILTER (WHERE rfm_r < 2), min(rd) FILTER (WHERE rfm_r < 3),
                 min(rd) FILTER (WHERE rfm_r < 4), min(rd) FILTER (WHERE rfm_r < 5)], NULL) FROM s), '{}'),
             rfm_frequency_cutoffs = coalesce((SELECT array_remove(ARRAY[
                 max(purchases) FILTER (WHERE rfm_f < 2), max(purchases) FILTER (WHERE rfm_f < 3),
                 max(purchases) FILTER (WHERE rfm_f < 4), max(purchases) FILTER (WHERE rfm_f < 5)], NULL) FROM s), '{}'),
             rfm_monetary_cutoffs = coalesce((SELECT array_remove(ARRAY[
                 max(m) FILTER (WHERE rfm_m < 2), max(m) FILTER (WHERE rfm_m < 3),
                 max(m) FILTER (WHERE rfm_m < 4), max(m) FILTER (WHERE rfm_m < 5)], NULL) FROM s), '{}'),
             rfm_scored = (SELECT count(*) FROM s),
             rfm_compute_time = $2,
             rfm_dirty = false
         WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(changed)
}

/// One row of the RFM report.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct RfmRow {
    pub rfm_segment: Option<String>,
    pub customers: i64,
    pub revenue: Option<Decimal>,
    pub clv_total: Option<Decimal>,
    pub valued: i64,
}

/// Counts, revenue and CLV per RFM segment, for the tenant or one segment's
/// members. The row with no RFM segment counts the unscored customers.
pub async fn rfm_report(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Option<Uuid>,
) -> Result<Vec<RfmRow>> {
    sqlx::query_as(
        "SELECT f.rfm_segment, count(*) AS customers, sum(f.monetary) AS revenue,
                sum(f.clv) AS clv_total, count(f.clv) AS valued
         FROM features f
         WHERE f.tenant_id = $1
           AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM memberships m
                 WHERE m.tenant_id = $1 AND m.segment_id = $2 AND m.customer_id = f.customer_id))
         GROUP BY f.rfm_segment",
    )
    .bind(tenant)
    .bind(segment)
    .fetch_all(conn)
    .await
}
