//! Synthetic data and hand-written SQL baselines for benchmarks: a tenant of
//! projected customers filled in one statement, and the reference rule in
//! both the rule language and plain SQL, so that a benchmark can time the
//! service beside what a developer would write by hand.

use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A five-condition rule over projected features, the benchmarks' reference.
pub const RULE: &str = "purchases >= 3 and last_purchase within 180d and clv > 500 \
                    and country in [\"ES\", \"MX\", \"FR\"] and p_alive >= 0.5";

/// [`RULE`] written by hand in SQL over `features f`.
pub const HAND_CONDITION: &str = "f.purchases >= 3 AND f.last_purchase >= now() - interval '180 days' \
     AND f.last_purchase <= now() AND f.clv > 500 AND f.country = ANY(ARRAY['ES','MX','FR']) \
     AND f.p_alive >= 0.5";

/// A rule with an aggregate over purchase events.
pub const AGG_RULE: &str = "sum(purchase.amount, 365d) > 1000 and country = \"ES\"";

/// [`AGG_RULE`] written by hand in SQL.
pub const HAND_AGG_CONDITION: &str = "f.country = 'ES' AND (SELECT coalesce(sum(e.amount), 0) FROM events e \
     WHERE e.tenant_id = f.tenant_id AND e.customer_id = f.customer_id AND e.type = 'purchase' \
     AND e.occur_time > now() - interval '365 days' AND e.occur_time <= now()) > 1000";

/// Fills `features` with `n` projected customers of `tenant` (a tenant the
/// service has not seen) and `events` with up to three purchases each, by SQL
/// `generate_series`; returns the number of purchase events of the tenant.
pub async fn fill(pool: &PgPool, tenant: Uuid, n: usize) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO tenants (tenant_id, currency_code, rfm_compute_time) VALUES ($1, 'EUR', now())")
        .bind(tenant)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO features (tenant_id, customer_id, kind, country, tags, purchases, monetary,
             avg_order_value, first_purchase, last_purchase, contacts, nps, clv, p_alive,
             expected_purchases, value_tier, consents)
         SELECT $1, md5('customer-' || i)::uuid,
                CASE WHEN i % 10 = 0 THEN 'organization' ELSE 'person' END,
                (ARRAY['ES','MX','FR','DE','US','GB','IT','BR','AR','PT'])[1 + (i * 7) % 10],
                CASE WHEN i % 7 = 0 THEN ARRAY['vip'] ELSE '{}'::text[] END,
                p,
                CASE WHEN p > 0 THEN m END,
                CASE WHEN p > 0 THEN round(m / p, 2) END,
                CASE WHEN p > 0 THEN now() - (r1 * 720 + r2 * 720) * interval '1 day' END,
                CASE WHEN p > 0 THEN now() - r1 * 720 * interval '1 day' END,
                (i % 5),
                CASE WHEN r2 < 0.6 THEN (r2 * 16)::int END,
                CASE WHEN p > 0 AND r3 > 0.1 THEN round(m * (0.5 + r3), 2) END,
                CASE WHEN p > 0 THEN round(r3::numeric, 3) END,
                CASE WHEN p > 0 THEN round((r3 * 5)::numeric, 2) END,
                CASE WHEN p > 0 THEN (ARRAY['low','medium','high','top'])[1 + (r3 * 3.99)::int] END,
                CASE WHEN i % 3 = 0 THEN '{\"email:marketing\": {\"granted\": true, \"time\": \"2025-01-01T00:00:00Z\"}}'::jsonb
                     ELSE '{}'::jsonb END
         FROM (SELECT i,
                      (abs(hashint4(i)) % 13) AS p,
                      round(((abs(hashint4(i + 1)) % 200000) / 100.0)::numeric, 2) AS m,
                      (abs(hashint4(i + 2)) % 1000) / 1000.0 AS r1,
                      (abs(hashint4(i + 3)) % 1000) / 1000.0 AS r2,
                      (abs(hashint4(i + 4)) % 1000) / 1000.0 AS r3
               FROM generate_series(1, $2::int) AS i) g",
    )
    .bind(tenant)
    .bind(i32::try_from(n).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount)
         SELECT f.tenant_id, f.customer_id, md5(f.customer_id::text || k)::uuid, 'purchase',
                f.last_purchase - (k - 1) * interval '45 days', round(f.monetary / f.purchases, 2)
         FROM features f, generate_series(1, 3) AS k
         WHERE f.tenant_id = $1 AND k <= f.purchases",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    for table in ["features", "events"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(pool)
            .await?;
    }
    sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
}

/// The hand-written refresh: the same diff and writes as the service's, on
/// another membership set (`segment`, which needs no segment row); returns
/// (entered, exited).
pub async fn hand_refresh(
    pool: &PgPool,
    tenant: Uuid,
    segment: Uuid,
    condition: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let sql = format!(
        "WITH target AS MATERIALIZED (
             SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND {condition}),
         gone AS (
             DELETE FROM memberships m WHERE m.tenant_id = $1 AND m.segment_id = $2
               AND NOT EXISTS (SELECT 1 FROM target t WHERE t.customer_id = m.customer_id)
             RETURNING m.customer_id),
         came AS (
             INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
             SELECT $1, $2, t.customer_id, now() FROM target t
             WHERE NOT EXISTS (SELECT 1 FROM memberships m
                               WHERE m.tenant_id = $1 AND m.segment_id = $2 AND m.customer_id = t.customer_id)
             RETURNING customer_id),
         changes AS (
             SELECT customer_id, true AS entered FROM came
             UNION ALL SELECT customer_id, false FROM gone),
         numbers AS (
             UPDATE tenants SET membership_sequence = membership_sequence + (SELECT count(*) FROM changes)
              WHERE tenant_id = $1
             RETURNING membership_sequence - (SELECT count(*) FROM changes) AS base),
         log AS (
             INSERT INTO membership_log (tenant_id, sequence, segment_id, segment_name, customer_id, entered, reason, change_time)
             SELECT $1, n.base + row_number() OVER (), $2, 'hand', c.customer_id, c.entered, 3, now()
               FROM changes c, numbers n
             RETURNING entered)
         SELECT count(*) FILTER (WHERE entered), count(*) FILTER (WHERE NOT entered) FROM log"
    );
    let mut tx = pool.begin().await?;
    // As the service does: the planner's estimates can make the anti-joins
    // nested loops, quadratic in the members.
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(segment)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((row.get(0), row.get(1)))
}

/// The hand-written preview: the count and a random sample of ten.
pub async fn hand_preview(
    pool: &PgPool,
    tenant: Uuid,
    condition: &str,
) -> Result<(i64, usize), sqlx::Error> {
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM features f WHERE f.tenant_id = $1 AND {condition}"
    )))
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    let sample: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND {condition}
         ORDER BY random() LIMIT 10"
    )))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok((count, sample.len()))
}

/// Makes 5,000 members of `segment` stop qualifying for [`RULE`] (low
/// p_alive) and up to 15,000 non-members start (a recent purchase), then
/// analyses `features`: the input of a refresh after a day of changes.
pub async fn change_members(pool: &PgPool, tenant: Uuid, segment: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE features SET p_alive = 0.1
         WHERE tenant_id = $1 AND customer_id IN (
             SELECT customer_id FROM memberships WHERE tenant_id = $1 AND segment_id = $2 LIMIT 5000)",
    )
    .bind(tenant)
    .bind(segment)
    .execute(pool)
    .await?;
    sqlx::query(
        "UPDATE features SET last_purchase = now() - interval '1 day', p_alive = 0.9
         WHERE tenant_id = $1 AND customer_id IN (
             SELECT customer_id FROM features WHERE tenant_id = $1 AND purchases >= 3
               AND clv > 500 AND country IN ('ES', 'MX', 'FR') AND last_purchase < now() - interval '200 days'
             LIMIT 15000)",
    )
    .bind(tenant)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE features").execute(pool).await?;
    Ok(())
}
