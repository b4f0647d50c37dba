//! Every SQL statement of the valuation service. Values are always bound as
//! parameters; bulk writes go through `unnest` arrays.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::valuation::v1::ValuationEvent;
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

// Statements built with format! only splice the constant column lists
// and column names below, never values: those are always bound.
use uuid::Uuid;

pub mod summaries;

/// Rows per bulk statement.
const CHUNK: usize = 10_000;

// ---------------------------------------------------------------- models

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

// ---------------------------------------------------------------- scoring

/// The tenant's scoring lock (one ScoreCustomers run at a time), held until
/// the transaction ends. False when another run holds it.
pub async fn try_run_lock(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('valuation.run'), hashtext($1::text))",
    )
    .bind(tenant)
    .fetch_one(tx)
    .await
}

/// The tenant's value-writing lock, held until the transaction ends.
pub async fn write_lock(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('valuation.values'), hashtext($1::text))")
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}

/// The settings and models of the tenant's last run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateRow {
    /// Identifies the run.
    pub run_id: Uuid,
    /// Transaction model used.
    pub transaction_model_id: Uuid,
    /// Spend model used.
    pub spend_model_id: Uuid,
    /// Horizon.
    pub horizon_periods: i32,
    /// Period unit (proto value).
    pub period_unit: i16,
    /// Discount rate per period.
    pub discount_rate: f64,
    /// Margin ratio.
    pub margin_ratio: f64,
    /// Tier thresholds.
    pub top_threshold: Option<Decimal>,
    /// Tier thresholds.
    pub high_threshold: Option<Decimal>,
    /// Tier thresholds.
    pub medium_threshold: Option<Decimal>,
    /// The run's score time.
    pub score_time: DateTime<Utc>,
}

/// The tenant's scoring state.
pub async fn scoring_state(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> sqlx::Result<Option<StateRow>> {
    sqlx::query_as(
        "SELECT run_id, transaction_model_id, spend_model_id, horizon_periods, period_unit,
                discount_rate, margin_ratio, top_threshold, high_threshold, medium_threshold, score_time
         FROM scoring_state WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await
}

/// Replaces the tenant's scoring state.
pub async fn save_scoring_state(
    tx: &mut PgConnection,
    tenant: Uuid,
    s: &StateRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO scoring_state (tenant_id, run_id, transaction_model_id, spend_model_id,
             horizon_periods, period_unit, discount_rate, margin_ratio, top_threshold,
             high_threshold, medium_threshold, score_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (tenant_id) DO UPDATE SET run_id = EXCLUDED.run_id,
             transaction_model_id = EXCLUDED.transaction_model_id,
             spend_model_id = EXCLUDED.spend_model_id, horizon_periods = EXCLUDED.horizon_periods,
             period_unit = EXCLUDED.period_unit, discount_rate = EXCLUDED.discount_rate,
             margin_ratio = EXCLUDED.margin_ratio, top_threshold = EXCLUDED.top_threshold,
             high_threshold = EXCLUDED.high_threshold, medium_threshold = EXCLUDED.medium_threshold,
             score_time = EXCLUDED.score_time",
    )
    .bind(tenant)
    .bind(s.run_id)
    .bind(s.transaction_model_id)
    .bind(s.spend_model_id)
    .bind(s.horizon_periods)
    .bind(s.period_unit)
    .bind(s.discount_rate)
    .bind(s.margin_ratio)
    .bind(s.top_threshold)
    .bind(s.high_threshold)
    .bind(s.medium_threshold)
    .bind(s.score_time)
    .execute(tx)
    .await?;
    Ok(())
}

/// One stored customer value.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ValueRow {
    /// The customer.
    pub customer_id: Uuid,
    /// Currency of the amounts.
    pub currency_code: String,
    /// CLV.
    pub clv: Decimal,
    /// P(alive).
    pub p_alive: f64,
    /// Expected purchases.
    pub expected_purchases: f64,
    /// Expected order value.
    pub expected_order_value: Decimal,
    /// Historical value.
    pub historical_value: Decimal,
    /// Tier (proto value).
    pub value_tier: i16,
    /// Transaction model.
    pub transaction_model_id: Uuid,
    /// Spend model.
    pub spend_model_id: Uuid,
    /// Score time.
    pub score_time: DateTime<Utc>,
    /// Horizon.
    pub horizon_periods: i32,
    /// Unit (proto value).
    pub period_unit: i16,
    /// Discount rate.
    pub discount_rate: f64,
    /// Margin ratio.
    pub margin_ratio: f64,
    /// Model input x.
    pub frequency: i64,
    /// Model input t_x.
    pub recency: f64,
    /// Model input T.
    pub t: f64,
}

const VALUE_COLUMNS: &str = "customer_id, currency_code, clv, p_alive, expected_purchases, \
    expected_order_value, historical_value, value_tier, transaction_model_id, spend_model_id, \
    score_time, horizon_periods, period_unit, discount_rate, margin_ratio, frequency, recency, t";

/// What change detection compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Brief {
    /// CLV.
    pub clv: Decimal,
    /// P(alive).
    pub p_alive: f64,
    /// Expected purchases.
    pub expected_purchases: f64,
    /// Tier (proto value).
    pub value_tier: i16,
}

/// The tenant's stored values, briefly.
pub async fn briefs(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<HashMap<Uuid, Brief>> {
    let rows: Vec<(Uuid, Decimal, f64, f64, i16)> = sqlx::query_as(
        "SELECT customer_id, clv, p_alive, expected_purchases, value_tier
         FROM customer_values WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, clv, p, e, t)| {
            (
                id,
                Brief {
                    clv,
                    p_alive: p,
                    expected_purchases: e,
                    value_tier: t,
                },
            )
        })
        .collect())
}

/// Briefs of some customers.
pub async fn briefs_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Brief>> {
    let rows: Vec<(Uuid, Decimal, f64, f64, i16)> = sqlx::query_as(
        "SELECT customer_id, clv, p_alive, expected_purchases, value_tier
         FROM customer_values WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, clv, p, e, t)| {
            (
                id,
                Brief {
                    clv,
                    p_alive: p,
                    expected_purchases: e,
                    value_tier: t,
                },
            )
        })
        .collect())
}

/// Deletes every stored value of the tenant.
pub async fn delete_all_values(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM customer_values WHERE tenant_id = $1")
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}

/// Deletes some customers' values; returns those that had one.
pub async fn delete_values(
    tx: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "DELETE FROM customer_values WHERE tenant_id = $1 AND customer_id = ANY($2) RETURNING customer_id",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(tx)
    .await
}

/// Writes a run's values with COPY (the tenant's values were deleted in the
/// same transaction): much cheaper per row than inserts at a million rows.
/// Every field is a number, a UUID, a time or a currency code, so the text
/// format needs no escaping; floats print in Rust's shortest round-trip
/// form, which PostgreSQL reads back to the same double.
pub async fn copy_values(
    tx: &mut PgConnection,
    tenant: Uuid,
    rows: &[ValueRow],
) -> sqlx::Result<()> {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return Ok(());
    }
    // A currency code the text format would need to escape never reaches
    // here (models take ISO 4217 codes); insert such rows the slow way.
    if rows
        .iter()
        .any(|r| !r.currency_code.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return write_values(tx, tenant, rows, false).await;
    }
    let statement = format!("COPY customer_values (tenant_id, {VALUE_COLUMNS}) FROM STDIN");
    let mut copy = tx.copy_in_raw(&statement).await?;
    let mut buf = String::with_capacity(CHUNK * 320);
    for chunk in rows.chunks(CHUNK) {
        buf.clear();
        for r in chunk {
            let _ = writeln!(
                buf,
                "{tenant}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.customer_id,
                r.currency_code,
                r.clv,
                r.p_alive,
                r.expected_purchases,
                r.expected_order_value,
                r.historical_value,
                r.value_tier,
                r.transaction_model_id,
                r.spend_model_id,
                r.score_time.format("%Y-%m-%d %H:%M:%S%.6f+00"),
                r.horizon_periods,
                r.period_unit,
                r.discount_rate,
                r.margin_ratio,
                r.frequency,
                r.recency,
                r.t,
            );
        }
        copy.send(buf.as_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}

/// Inserts (or, with `upsert`, replaces) values, in chunks of unnest arrays.
pub async fn write_values(
    tx: &mut PgConnection,
    tenant: Uuid,
    rows: &[ValueRow],
    upsert: bool,
) -> sqlx::Result<()> {
    let conflict = if upsert {
        "ON CONFLICT (tenant_id, customer_id) DO UPDATE SET currency_code = EXCLUDED.currency_code,
           clv = EXCLUDED.clv, p_alive = EXCLUDED.p_alive,
           expected_purchases = EXCLUDED.expected_purchases,
           expected_order_value = EXCLUDED.expected_order_value,
           historical_value = EXCLUDED.historical_value, value_tier = EXCLUDED.value_tier,
           transaction_model_id = EXCLUDED.transaction_model_id,
           spend_model_id = EXCLUDED.spend_model_id, score_time = EXCLUDED.score_time,
           horizon_periods = EXCLUDED.horizon_periods, period_unit = EXCLUDED.period_unit,
           discount_rate = EXCLUDED.discount_rate, margin_ratio = EXCLUDED.margin_ratio,
           frequency = EXCLUDED.frequency, recency = EXCLUDED.recency, t = EXCLUDED.t"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO customer_values (tenant_id, {VALUE_COLUMNS})
         SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::numeric[], $5::float8[], $6::float8[],
             $7::numeric[], $8::numeric[], $9::int2[], $10::uuid[], $11::uuid[], $12::timestamptz[],
             $13::int4[], $14::int2[], $15::float8[], $16::float8[], $17::int8[], $18::float8[],
             $19::float8[])
         {conflict}"
    );
    for chunk in rows.chunks(CHUNK) {
        macro_rules! col {
            ($f:ident) => {
                chunk.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
            };
        }
        sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(tenant)
            .bind(col!(customer_id))
            .bind(col!(currency_code))
            .bind(col!(clv))
            .bind(col!(p_alive))
            .bind(col!(expected_purchases))
            .bind(col!(expected_order_value))
            .bind(col!(historical_value))
            .bind(col!(value_tier))
            .bind(col!(transaction_model_id))
            .bind(col!(spend_model_id))
            .bind(col!(score_time))
            .bind(col!(horizon_periods))
            .bind(col!(period_unit))
            .bind(col!(discount_rate))
            .bind(col!(margin_ratio))
            .bind(col!(frequency))
            .bind(col!(recency))
            .bind(col!(t))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The stored values of some customers.
pub async fn values_of(pool: &PgPool, tenant: Uuid, ids: &[Uuid]) -> sqlx::Result<Vec<ValueRow>> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {VALUE_COLUMNS} FROM customer_values WHERE tenant_id = $1 AND customer_id = ANY($2)"
    )))
    .bind(tenant)
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// What a ranking orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// CLV.
    Clv,
    /// P(alive).
    PAlive,
    /// Expected purchases.
    Expected,
}

/// Where a ranking page starts: after this key.
#[derive(Debug, Clone, PartialEq)]
pub enum RankKey {
    /// A CLV and customer id.
    Clv(Decimal, Uuid),
    /// A P(alive) or expected-purchases value and customer id.
    Float(f64, Uuid),
}

/// The page [`rank`] would read, over values held in memory (values as of
/// a past instant): highest first, ties by customer id, after `after`.
pub fn rank_rows(
    mut rows: Vec<ValueRow>,
    metric: Metric,
    after: Option<RankKey>,
    limit: i64,
) -> Vec<ValueRow> {
    let key = |r: &ValueRow| match metric {
        Metric::Clv => RankKey::Clv(r.clv, r.customer_id),
        Metric::PAlive => RankKey::Float(r.p_alive, r.customer_id),
        Metric::Expected => RankKey::Float(r.expected_purchases, r.customer_id),
    };
    // Descending by value, then ascending by id: "a comes first".
    let first = |a: &RankKey, b: &RankKey| match (a, b) {
        (RankKey::Clv(x, i), RankKey::Clv(y, j)) => y.cmp(x).then(i.cmp(j)),
        (RankKey::Float(x, i), RankKey::Float(y, j)) => y.total_cmp(x).then(i.cmp(j)),
        _ => std::cmp::Ordering::Equal,
    };
    rows.sort_by(|a, b| first(&key(a), &key(b)));
    rows.into_iter()
        .filter(|r| {
            after
                .as_ref()
                .is_none_or(|a| first(a, &key(r)) == std::cmp::Ordering::Less)
        })
        .take(usize::try_from(limit).unwrap_or(0))
        .collect()
}

/// A page of a ranking, highest first, ties by customer id.
pub async fn rank(
    pool: &PgPool,
    tenant: Uuid,
    metric: Metric,
    after: Option<RankKey>,
    limit: i64,
) -> sqlx::Result<Vec<ValueRow>> {
    let column = match metric {
        Metric::Clv => "clv",
        Metric::PAlive => "p_alive",
        Metric::Expected => "expected_purchases",
    };
    let base = format!("SELECT {VALUE_COLUMNS} FROM customer_values WHERE tenant_id = $1");
    let order = format!("ORDER BY {column} DESC, customer_id LIMIT $2");
    match after {
        None => {
            sqlx::query_as(AssertSqlSafe(format!("{base} {order}")))
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await
        }
        Some(RankKey::Clv(v, id)) => {
            sqlx::query_as(AssertSqlSafe(format!(
                "{base} AND ({column} < $3 OR ({column} = $3 AND customer_id > $4)) {order}"
            )))
            .bind(tenant)
            .bind(limit)
            .bind(v)
            .bind(id)
            .fetch_all(pool)
            .await
        }
        Some(RankKey::Float(v, id)) => {
            sqlx::query_as(AssertSqlSafe(format!(
                "{base} AND ({column} < $3 OR ({column} = $3 AND customer_id > $4)) {order}"
            )))
            .bind(tenant)
            .bind(limit)
            .bind(v)
            .bind(id)
            .fetch_all(pool)
            .await
        }
    }
}

/// Every stored CLV and historical value of a tenant.
#[derive(Debug, Clone, Default)]
pub struct Amounts {
    /// The CLVs.
    pub clv: Vec<Decimal>,
    /// The historical values, in the same order.
    pub historical: Vec<Decimal>,
    /// Their currency (None: nothing scored).
    pub currency: Option<String>,
    /// The latest score time.
    pub latest: Option<DateTime<Utc>>,
}

/// Every stored CLV and historical value of the tenant, their currency and
/// the latest score time.
pub async fn all_amounts(pool: &PgPool, tenant: Uuid) -> sqlx::Result<Amounts> {
    let rows: Vec<(Decimal, Decimal, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT clv, historical_value, currency_code, score_time FROM customer_values WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let currency = rows.first().map(|r| r.2.clone());
    let latest = rows.iter().map(|r| r.3).max();
    let (clv, historical) = rows.into_iter().map(|r| (r.0, r.1)).unzip();
    Ok(Amounts {
        clv,
        historical,
        currency,
        latest,
    })
}

/// Totals of the stored values of some customers.
#[derive(Debug, Clone, Default)]
pub struct ValueTotals {
    /// How many of them have a stored value.
    pub scored: i64,
    /// The sum of their CLVs.
    pub clv: Decimal,
    /// The sum of their P(alive).
    pub p_alive: f64,
    /// Their currency.
    pub currency: Option<String>,
}

/// Count, CLV sum, P(alive) sum and currency of the stored values of `ids`.
pub async fn value_totals(pool: &PgPool, tenant: Uuid, ids: &[Uuid]) -> sqlx::Result<ValueTotals> {
    let (mut n, mut clv, mut p, mut cur) = (0i64, Decimal::ZERO, 0.0f64, None);
    for chunk in ids.chunks(CHUNK) {
        let (cn, cc, cp, ccur): (i64, Option<Decimal>, Option<f64>, Option<String>) =
            sqlx::query_as(
                "SELECT count(*), sum(clv), sum(p_alive), min(currency_code)
             FROM customer_values WHERE tenant_id = $1 AND customer_id = ANY($2)",
            )
            .bind(tenant)
            .bind(chunk)
            .fetch_one(pool)
            .await?;
        n += cn;
        clv += cc.unwrap_or_default();
        p += cp.unwrap_or_default();
        cur = cur.or(ccur);
    }
    Ok(ValueTotals {
        scored: n,
        clv,
        p_alive: p,
        currency: cur,
    })
}

/// Any stored value's currency (all share the spend model's currency).
pub async fn values_currency(pool: &PgPool, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT currency_code FROM customer_values WHERE tenant_id = $1 LIMIT 1")
        .bind(tenant)
        .fetch_optional(pool)
        .await
}

/// A scored customer's repeat rate among the tenant's.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RepeatRateRank {
    /// Its repeat rate (x / T).
    pub rate: f64,
    /// The period unit of T (PeriodUnit number).
    pub period_unit: i16,
    /// How many scored customers have a smaller rate.
    pub smaller: i64,
    /// How many have the same rate.
    pub equal: i64,
    /// How many scored customers there are.
    pub total: i64,
}

/// For a scored customer: its repeat rate (x / T), and how many scored
/// customers of the tenant have a smaller and an equal rate, of how many.
pub async fn repeat_rate_rank(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
) -> sqlx::Result<Option<RepeatRateRank>> {
    sqlx::query_as(
        "WITH me AS (
             SELECT frequency / GREATEST(t, 1e-9) AS rate, period_unit FROM customer_values
             WHERE tenant_id = $1 AND customer_id = $2)
         SELECT me.rate, me.period_unit,
                count(*) FILTER (WHERE v.frequency / GREATEST(v.t, 1e-9) < me.rate) AS smaller,
                count(*) FILTER (WHERE v.frequency / GREATEST(v.t, 1e-9) = me.rate) AS equal,
                count(*) AS total
         FROM me, customer_values v WHERE v.tenant_id = $1
         GROUP BY me.rate, me.period_unit",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_optional(pool)
    .await
}

// ---------------------------------------------------------------- queue

/// Marks customers for re-scoring (keeping the latest reason given).
pub async fn enqueue(
    tx: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
    reason: Option<&str>,
) -> sqlx::Result<()> {
    // Each customer once, in one order: a row is upserted once per
    // statement, and concurrent writers lock rows in the same order.
    let mut customers = customers.to_vec();
    customers.sort_unstable();
    customers.dedup();
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rescore_queue (tenant_id, customer_id, reason)
         SELECT $1, c, $3 FROM unnest($2::uuid[]) AS c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE
         SET reason = EXCLUDED.reason, enqueue_time = clock_timestamp()",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Tenants with customers to re-score and a scoring run to do it with.
pub async fn queued_tenants(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT DISTINCT q.tenant_id FROM rescore_queue q
         JOIN scoring_state s ON s.tenant_id = q.tenant_id LIMIT 1000",
    )
    .fetch_all(pool)
    .await
}

/// A customer queued for re-scoring.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Queued {
    /// The customer.
    pub customer_id: Uuid,
    /// Why it was queued, when a reason was given.
    pub reason: Option<String>,
    /// When it was (last) queued.
    pub enqueue_time: DateTime<Utc>,
}

/// Up to `limit` queued customers of a tenant, oldest first.
pub async fn queued(pool: &PgPool, tenant: Uuid, limit: i64) -> sqlx::Result<Vec<Queued>> {
    sqlx::query_as(
        "SELECT customer_id, reason, enqueue_time FROM rescore_queue
         WHERE tenant_id = $1 ORDER BY enqueue_time LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Removes queued customers that were not queued again after `up_to`.
pub async fn dequeue(
    tx: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    up_to: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND customer_id = ANY($2) AND enqueue_time <= $3",
    )
    .bind(tenant)
    .bind(ids)
    .bind(up_to)
    .execute(tx)
    .await?;
    Ok(())
}

/// Removes every customer queued before `up_to` (a run scored them all);
/// returns the reasons of those queued with one.
pub async fn clear_queue(
    tx: &mut PgConnection,
    tenant: Uuid,
    up_to: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "DELETE FROM rescore_queue WHERE tenant_id = $1 AND enqueue_time <= $2 RETURNING customer_id, reason",
    )
    .bind(tenant)
    .bind(up_to)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, r)| r.map(|r| (id, r)))
        .collect())
}

// ---------------------------------------------------------------- purchases

/// One purchase received on the interaction feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    /// The interaction.
    pub interaction_id: Uuid,
    /// Its customer now.
    pub customer_id: Uuid,
    /// The customer it was first recorded under.
    pub original_customer_id: Uuid,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// Currency of amount and margin.
    pub currency: Option<String>,
    /// Amount.
    pub amount: Option<Decimal>,
    /// Margin.
    pub margin: Option<Decimal>,
}

/// Records purchases (idempotent: one already recorded is left alone);
/// returns the ids of those recorded now.
pub async fn record_purchases(
    tx: &mut PgConnection,
    tenant: Uuid,
    purchases: &[Purchase],
) -> sqlx::Result<Vec<Uuid>> {
    if purchases.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = purchases.iter().map(|p| p.interaction_id).collect();
    let customers: Vec<Uuid> = purchases.iter().map(|p| p.customer_id).collect();
    let originals: Vec<Uuid> = purchases.iter().map(|p| p.original_customer_id).collect();
    let times: Vec<DateTime<Utc>> = purchases.iter().map(|p| p.occur_time).collect();
    let currencies: Vec<Option<String>> = purchases.iter().map(|p| p.currency.clone()).collect();
    let amounts: Vec<Option<Decimal>> = purchases.iter().map(|p| p.amount).collect();
    let margins: Vec<Option<Decimal>> = purchases.iter().map(|p| p.margin).collect();
    sqlx::query_scalar(
        "INSERT INTO purchases (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, currency, amount, margin)
         SELECT $1, t.* FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[],
                                    $6::text[], $7::numeric[], $8::numeric[]) AS t
         ON CONFLICT DO NOTHING RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&originals)
    .bind(&times)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&margins)
    .fetch_all(tx)
    .await
}

/// Moves purchases from one customer to another: the listed ones, or
/// without a list every purchase of `from` (a merge) or those first recorded
/// under `to` (an unmerge).
pub async fn reassign(
    tx: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
    unmerge: bool,
    ids: Option<&[Uuid]>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE purchases SET customer_id = $3
         WHERE tenant_id = $1 AND customer_id = $2
           AND ($4::uuid[] IS NULL OR interaction_id = ANY($4))
           AND ($4::uuid[] IS NOT NULL OR NOT $5 OR original_customer_id = $3)",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(ids)
    .bind(unmerge)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes everything derived from an erased customer: purchases (and
/// their summary), queue entry and value (true when there was a value), and reduces the
/// customer's earlier feed events to `redacted` ones.
pub async fn erase_customer(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> sqlx::Result<bool> {
    summaries::uncount_customer(tx, tenant, customer).await?;
    sqlx::query("DELETE FROM purchases WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    summaries::rebuild(tx, tenant, &[customer]).await?;
    sqlx::query("DELETE FROM rescore_queue WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    let had = sqlx::query("DELETE FROM customer_values WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    // Every earlier event about the customer, typed or from before typed
    // events (its JSON payload is cleared too), becomes a `redacted` event
    // that keeps only the customer id.
    feed::redact_aggregates::<ValuationEvent>(
        tx,
        tenant,
        "customer",
        &[customer.to_string()],
        RedactionReason::Erased,
    )
    .await?;
    Ok(had)
}

/// The currency of most of the tenant's purchases.
pub async fn main_purchase_currency(pool: &PgPool, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT currency FROM purchases WHERE tenant_id = $1 AND currency IS NOT NULL
         GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Cohort sizes: (start of the acquisition period, customers).
pub async fn cohort_sizes(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, i64)>> {
    sqlx::query_as(
        "SELECT date_trunc($2, first, 'UTC') AS cohort, count(*)
         FROM (SELECT min(occur_time) AS first FROM purchases WHERE tenant_id = $1 GROUP BY customer_id) f
         GROUP BY 1",
    )
    .bind(tenant)
    .bind(field)
    .fetch_all(pool)
    .await
}

/// Per cohort and calendar period: (cohort start, period start, customers
/// buying, revenue in `currency`).
pub async fn cohort_activity(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
    currency: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, DateTime<Utc>, i64, Option<Decimal>)>> {
    sqlx::query_as(
        "WITH f AS (SELECT customer_id, date_trunc($2, min(occur_time), 'UTC') AS cohort
                    FROM purchases WHERE tenant_id = $1 GROUP BY customer_id)
         SELECT f.cohort, date_trunc($2, p.occur_time, 'UTC') AS period,
                count(DISTINCT p.customer_id), sum(p.amount) FILTER (WHERE p.currency = $3)
         FROM purchases p JOIN f ON f.customer_id = p.customer_id
         WHERE p.tenant_id = $1
         GROUP BY 1, 2",
    )
    .bind(tenant)
    .bind(field)
    .bind(currency)
    .fetch_all(pool)
    .await
}

/// Per cohort: (cohort start, scored customers, sum of historical values,
/// sum of CLVs).
pub async fn cohort_values(
    pool: &PgPool,
    tenant: Uuid,
    field: &str,
) -> sqlx::Result<Vec<(DateTime<Utc>, i64, Option<Decimal>, Option<Decimal>)>> {
    sqlx::query_as(
        "WITH f AS (SELECT customer_id, date_trunc($2, min(occur_time), 'UTC') AS cohort
                    FROM purchases WHERE tenant_id = $1 GROUP BY customer_id)
         SELECT f.cohort, count(*), sum(v.historical_value), sum(v.clv)
         FROM f JOIN customer_values v ON v.tenant_id = $1 AND v.customer_id = f.customer_id
         GROUP BY 1",
    )
    .bind(tenant)
    .bind(field)
    .fetch_all(pool)
    .await
}
