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

/// Stores offered decisions.
pub async fn insert_decisions(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[DecisionRow],
) -> Result<()> {
    for d in rows {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO decisions (tenant_id, {COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        )))
        .bind(tenant)
        .bind(d.decision_id)
        .bind(d.customer_id)
        .bind(d.treatment_id)
        .bind(d.treatment_version)
        .bind(&d.arm)
        .bind(d.channel)
        .bind(d.rank)
        .bind(d.propensity)
        .bind(&d.env_currency)
        .bind(d.env_units)
        .bind(d.env_nanos)
        .bind(d.ladder_rung)
        .bind(d.decide_time)
        .bind(&d.outcome)
        .bind(d.outcome_time)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Stores the control-group record of a customer and treatment, once:
/// returns the id of the record, new or earlier.
pub async fn control_record(
    conn: &mut PgConnection,
    tenant: Uuid,
    d: &DecisionRow,
) -> Result<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO decisions (tenant_id, {COLUMNS})
         VALUES ($1, $2, $3, $4, $5, 'control', $6, 0, $7, $8, 0, 0, $9, $10, 'pending', NULL)
         ON CONFLICT (tenant_id, treatment_id, customer_id) WHERE arm = 'control'
            DO UPDATE SET decision_id = decisions.decision_id
         RETURNING decision_id"
    )))
    .bind(tenant)
    .bind(d.decision_id)
    .bind(d.customer_id)
    .bind(d.treatment_id)
    .bind(d.treatment_version)
    .bind(d.channel)
    .bind(d.propensity)
    .bind(&d.env_currency)
    .bind(d.ladder_rung)
    .bind(d.decide_time)
    .fetch_one(conn)
    .await
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

/// Outcome counts (accepted, refused) of treatments for one ladder rung.
pub async fn outcome_counts(
    conn: &mut PgConnection,
    tenant: Uuid,
    treatments: &[Uuid],
    rung: i32,
) -> Result<HashMap<Uuid, (i64, i64)>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT treatment_id, accepted, refused FROM propensities
          WHERE tenant_id = $1 AND treatment_id = ANY($2) AND ladder_rung = $3",
    )
    .bind(tenant)
    .bind(treatments)
    .bind(rung)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(t, a, r)| (t, (a, r))).collect())
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
