//! Decisions, their outcomes, and the outcome counts the propensities are
//! learned from.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;

/// A stored decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub decision_id: Uuid,
    pub customer_id: Uuid,
    pub treatment_id: Uuid,
    pub treatment_version: i64,
    /// `treatment` or `control`.
    pub arm: String,
    pub channel: i32,
    pub rank: i32,
    pub propensity: f64,
    pub env_currency: String,
    pub env_units: i64,
    pub env_nanos: i32,
    pub ladder_rung: i32,
    pub decide_time: DateTime<Utc>,
    /// `pending`, `accepted`, `declined` or `ignored`.
    pub outcome: String,
    pub outcome_time: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "decision_id, customer_id, treatment_id, treatment_version, arm, channel, rank,
    propensity, env_currency, env_units, env_nanos, ladder_rung, decide_time, outcome, outcome_time";

/// Stores offered decisions, in one statement.
pub async fn insert_decisions(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[DecisionRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DecisionRow) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let ids = col(|d| d.decision_id);
    let customers = col(|d| d.customer_id);
    let treatments = col(|d| d.treatment_id);
    let versions: Vec<i64> = rows.iter().map(|d| d.treatment_version).collect();
    let arms: Vec<&str> = rows.iter().map(|d| d.arm.as_str()).collect();
    let channels: Vec<i32> = rows.iter().map(|d| d.channel).collect();
    let ranks: Vec<i32> = rows.iter().map(|d| d.rank).collect();
    let propensities: Vec<f64> = rows.iter().map(|d| d.propensity).collect();
    let currencies: Vec<&str> = rows.iter().map(|d| d.env_currency.as_str()).collect();
    let units: Vec<i64> = rows.iter().map(|d| d.env_units).collect();
    let nanos: Vec<i32> = rows.iter().map(|d| d.env_nanos).collect();
    let rungs: Vec<i32> = rows.iter().map(|d| d.ladder_rung).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|d| d.decide_time).collect();
    sqlx::query(
        "INSERT INTO decisions (tenant_id, decision_id, customer_id, treatment_id, treatment_version, arm,
                channel, rank, propensity, env_currency, env_units, env_nanos, ladder_rung, decide_time, outcome)
         SELECT $1, i, c, t, v, a, ch, r, p, cu, u, n, g, dt, 'pending'
           FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::int[], $8::int[],
                       $9::float8[], $10::text[], $11::bigint[], $12::int[], $13::int[], $14::timestamptz[])
             AS x(i, c, t, v, a, ch, r, p, cu, u, n, g, dt)
         ON CONFLICT (tenant_id, treatment_id, customer_id) WHERE arm = 'control' DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&treatments)
    .bind(&versions)
    .bind(&arms)
    .bind(&channels)
    .bind(&ranks)
    .bind(&propensities)
    .bind(&currencies)
    .bind(&units)
    .bind(&nanos)
    .bind(&rungs)
    .bind(&times)
    .execute(conn)
    .await?;
    Ok(())
}

/// The control-group records of (treatment, customer) pairs, by pair.
pub async fn control_ids(
    conn: &mut PgConnection,
    tenant: Uuid,
    pairs: &[(Uuid, Uuid)],
) -> Result<HashMap<(Uuid, Uuid), Uuid>> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let t: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
    let c: Vec<Uuid> = pairs.iter().map(|p| p.1).collect();
    let rows: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "SELECT d.treatment_id, d.customer_id, d.decision_id
           FROM unnest($2::uuid[], $3::uuid[]) AS x(t, c)
           JOIN decisions d ON d.tenant_id = $1 AND d.treatment_id = x.t AND d.customer_id = x.c
                           AND d.arm = 'control'",
    )
    .bind(tenant)
    .bind(&t)
    .bind(&c)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(t, c, d)| ((t, c), d)).collect())
}

/// A decision, locked for update when `lock`.
pub async fn decision(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<DecisionRow>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM decisions WHERE tenant_id = $1 AND decision_id = $2{lock}"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Sets a decision's outcome.
pub async fn set_outcome(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    outcome: &str,
    at: DateTime<Utc>,
) -> Result<DecisionRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE decisions SET outcome = $3, outcome_time = $4
          WHERE tenant_id = $1 AND decision_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .bind(outcome)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// Filters of ListDecisions.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    pub customer: Option<Uuid>,
    pub treatment: Option<Uuid>,
    pub outcome: Option<&'static str>,
}

/// A page of decisions, newest first, after (decide time, id).
pub async fn list_decisions(
    conn: &mut PgConnection,
    tenant: Uuid,
    f: &DecisionFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<DecisionRow>> {
    let (t, id) = after.unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM decisions
          WHERE tenant_id = $1
            AND ($2::uuid IS NULL OR customer_id = $2)
            AND ($3::uuid IS NULL OR treatment_id = $3)
            AND ($4::text IS NULL OR outcome = $4)
            AND ($5::timestamptz IS NULL OR (decide_time, decision_id) < ($5, $6))
          ORDER BY decide_time DESC, decision_id DESC LIMIT $7"
    )))
    .bind(tenant)
    .bind(f.customer)
    .bind(f.treatment)
    .bind(f.outcome)
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Outcome counts (accepted, refused) of treatments, per (treatment, rung).
pub async fn outcome_counts(
    conn: &mut PgConnection,
    tenant: Uuid,
    treatments: &[Uuid],
) -> Result<HashMap<(Uuid, i32), (i64, i64)>> {
    let rows: Vec<(Uuid, i32, i64, i64)> = sqlx::query_as(
        "SELECT treatment_id, ladder_rung, accepted, refused FROM propensities
          WHERE tenant_id = $1 AND treatment_id = ANY($2)",
    )
    .bind(tenant)
    .bind(treatments)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, g, a, r)| ((t, g), (a, r)))
        .collect())
}

/// Counts outcomes: (treatment, rung, accepted, refused) added.
pub async fn count_outcomes(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, i32, i64, i64)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let t: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let rung: Vec<i32> = rows.iter().map(|r| r.1).collect();
    let a: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let r: Vec<i64> = rows.iter().map(|r| r.3).collect();
    sqlx::query(
        "INSERT INTO propensities AS p (tenant_id, treatment_id, ladder_rung, accepted, refused)
         SELECT $1, t, g, sum(a), sum(r)
           FROM unnest($2::uuid[], $3::int[], $4::bigint[], $5::bigint[]) AS x(t, g, a, r)
          GROUP BY t, g
         ON CONFLICT (tenant_id, treatment_id, ladder_rung) DO UPDATE
            SET accepted = p.accepted + EXCLUDED.accepted, refused = p.refused + EXCLUDED.refused",
    )
    .bind(tenant)
    .bind(&t)
    .bind(&rung)
    .bind(&a)
    .bind(&r)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks as ignored, at most `limit` at a time, the offered decisions
/// still pending that were made before their tenant's outcome window;
/// returns (tenant, treatment, rung, count) of those marked.
pub async fn expire_pending(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    default_window_days: i32,
) -> Result<Vec<(Uuid, Uuid, i32, i64)>> {
    sqlx::query_as(
        "WITH due AS (
             SELECT d.tenant_id, d.decision_id
               FROM decisions d
               LEFT JOIN policies p ON p.tenant_id = d.tenant_id
              WHERE d.outcome = 'pending' AND d.arm = 'treatment'
                AND d.decide_time < $1 - make_interval(days =>
                        COALESCE((p.doc->>'outcome_window_days')::int, $3))
              LIMIT $2
              FOR UPDATE OF d SKIP LOCKED),
         marked AS (
             UPDATE decisions d SET outcome = 'ignored',
                    outcome_time = d.decide_time + make_interval(days =>
                        COALESCE((SELECT (p.doc->>'outcome_window_days')::int FROM policies p
                                   WHERE p.tenant_id = d.tenant_id), $3))
               FROM due WHERE d.tenant_id = due.tenant_id AND d.decision_id = due.decision_id
             RETURNING d.tenant_id, d.treatment_id, d.ladder_rung)
         SELECT tenant_id, treatment_id, ladder_rung, count(*) FROM marked
          GROUP BY tenant_id, treatment_id, ladder_rung",
    )
    .bind(now)
    .bind(limit)
    .bind(default_window_days)
    .fetch_all(conn)
    .await
}
