//! The scoring state and the stored per-customer values: writes, reads,
//! rankings and totals.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use super::*;

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
    super::tenant_lock(tx, "valuation.values", tenant).await
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
    /// Cost per purchase by ladder rung (key "0": everyone), as decimal
    /// strings; None when the run had no cost model.
    pub cost_rates: Option<serde_json::Value>,
    /// The lowest net profit of deciles 1..=9 at the run.
    pub profit_bounds: Option<Vec<Option<Decimal>>>,
}

/// The tenant's scoring state.
pub async fn scoring_state(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> sqlx::Result<Option<StateRow>> {
    sqlx::query_as(
        "SELECT run_id, transaction_model_id, spend_model_id, horizon_periods, period_unit,
                discount_rate, margin_ratio, top_threshold, high_threshold, medium_threshold, score_time,
                cost_rates, profit_bounds
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
             high_threshold, medium_threshold, score_time, cost_rates, profit_bounds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (tenant_id) DO UPDATE SET run_id = EXCLUDED.run_id,
             transaction_model_id = EXCLUDED.transaction_model_id,
             spend_model_id = EXCLUDED.spend_model_id, horizon_periods = EXCLUDED.horizon_periods,
             period_unit = EXCLUDED.period_unit, discount_rate = EXCLUDED.discount_rate,
             margin_ratio = EXCLUDED.margin_ratio, top_threshold = EXCLUDED.top_threshold,
             high_threshold = EXCLUDED.high_threshold, medium_threshold = EXCLUDED.medium_threshold,
             score_time = EXCLUDED.score_time, cost_rates = EXCLUDED.cost_rates,
             profit_bounds = EXCLUDED.profit_bounds",
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
    .bind(&s.cost_rates)
    .bind(&s.profit_bounds)
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
    /// CLV net of the cost to serve (None without a cost model).
    pub net_clv: Option<Decimal>,
    /// Expected cost per purchase.
    pub cost_per_purchase: Option<Decimal>,
    /// Cost to serve over the 365 days before the score time.
    pub cost_to_serve: Option<Decimal>,
    /// Net profit over those days.
    pub net_profit: Option<Decimal>,
    /// Profit decile, 1..=10; 0 unset.
    pub profit_decile: i16,
}

const VALUE_COLUMNS: &str = "customer_id, currency_code, clv, p_alive, expected_purchases, \
    expected_order_value, historical_value, value_tier, transaction_model_id, spend_model_id, \
    score_time, horizon_periods, period_unit, discount_rate, margin_ratio, frequency, recency, t, \
    net_clv, cost_per_purchase, cost_to_serve, net_profit, profit_decile";

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
    /// Net CLV.
    pub net_clv: Option<Decimal>,
    /// Profit decile.
    pub profit_decile: i16,
}

type BriefRow = (Uuid, Decimal, f64, f64, i16, Option<Decimal>, i16);

fn brief((id, clv, p, e, t, net, d): BriefRow) -> (Uuid, Brief) {
    (
        id,
        Brief {
            clv,
            p_alive: p,
            expected_purchases: e,
            value_tier: t,
            net_clv: net,
            profit_decile: d,
        },
    )
}

/// The tenant's stored values, briefly.
pub async fn briefs(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<HashMap<Uuid, Brief>> {
    let rows: Vec<BriefRow> = sqlx::query_as(
        "SELECT customer_id, clv, p_alive, expected_purchases, value_tier, net_clv, profit_decile
         FROM customer_values WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(brief).collect())
}

/// Briefs of some customers.
pub async fn briefs_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Brief>> {
    let rows: Vec<BriefRow> = sqlx::query_as(
        "SELECT customer_id, clv, p_alive, expected_purchases, value_tier, net_clv, profit_decile
         FROM customer_values WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(brief).collect())
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

/// An optional amount in COPY's text format (`\N` for NULL).
struct Nullable(Option<Decimal>);

impl std::fmt::Display for Nullable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{d}"),
            None => f.write_str("\\N"),
        }
    }
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
                "{tenant}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
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
                Nullable(r.net_clv),
                Nullable(r.cost_per_purchase),
                Nullable(r.cost_to_serve),
                Nullable(r.net_profit),
                r.profit_decile,
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
           frequency = EXCLUDED.frequency, recency = EXCLUDED.recency, t = EXCLUDED.t,
           net_clv = EXCLUDED.net_clv, cost_per_purchase = EXCLUDED.cost_per_purchase,
           cost_to_serve = EXCLUDED.cost_to_serve, net_profit = EXCLUDED.net_profit,
           profit_decile = EXCLUDED.profit_decile"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO customer_values (tenant_id, {VALUE_COLUMNS})
         SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::numeric[], $5::float8[], $6::float8[],
             $7::numeric[], $8::numeric[], $9::int2[], $10::uuid[], $11::uuid[], $12::timestamptz[],
             $13::int4[], $14::int2[], $15::float8[], $16::float8[], $17::int8[], $18::float8[],
             $19::float8[], $20::numeric[], $21::numeric[], $22::numeric[], $23::numeric[],
             $24::int2[])
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
            .bind(col!(net_clv))
            .bind(col!(cost_per_purchase))
            .bind(col!(cost_to_serve))
            .bind(col!(net_profit))
            .bind(col!(profit_decile))
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
    /// Net CLV (customers without one are left out).
    NetClv,
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
        Metric::NetClv => RankKey::Clv(r.net_clv.unwrap_or_default(), r.customer_id),
    };
    // Descending by value, then ascending by id: "a comes first".
    let first = |a: &RankKey, b: &RankKey| match (a, b) {
        (RankKey::Clv(x, i), RankKey::Clv(y, j)) => y.cmp(x).then(i.cmp(j)),
        (RankKey::Float(x, i), RankKey::Float(y, j)) => y.total_cmp(x).then(i.cmp(j)),
        _ => std::cmp::Ordering::Equal,
    };
    if metric == Metric::NetClv {
        rows.retain(|r| r.net_clv.is_some());
    }
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
        Metric::NetClv => "net_clv",
    };
    let base = format!(
        "SELECT {VALUE_COLUMNS} FROM customer_values WHERE tenant_id = $1 AND {column} IS NOT NULL"
    );
    let order = format!("ORDER BY {column} DESC, customer_id LIMIT $2");
    let Some(after) = after else {
        return sqlx::query_as(AssertSqlSafe(format!("{base} {order}")))
            .bind(tenant)
            .bind(limit)
            .fetch_all(pool)
            .await;
    };
    let query = sqlx::query_as(AssertSqlSafe(format!(
        "{base} AND ({column} < $3 OR ({column} = $3 AND customer_id > $4)) {order}"
    )))
    .bind(tenant)
    .bind(limit);
    // The key binds as the metric's column type: numeric or double.
    let query = match after {
        RankKey::Clv(v, id) => query.bind(v).bind(id),
        RankKey::Float(v, id) => query.bind(v).bind(id),
    };
    query.fetch_all(pool).await
}

/// Every stored CLV and historical value of a tenant.
#[derive(Debug, Clone, Default)]
pub struct Amounts {
    /// The CLVs.
    pub clv: Vec<Decimal>,
    /// The historical values, in the same order.
    pub historical: Vec<Decimal>,
    /// The net CLVs of the customers that have one.
    pub net: Vec<Decimal>,
    /// Their currency (None: nothing scored).
    pub currency: Option<String>,
    /// The latest score time.
    pub latest: Option<DateTime<Utc>>,
}

/// Every stored CLV and historical value of the tenant, their currency and
/// the latest score time.
pub async fn all_amounts(pool: &PgPool, tenant: Uuid) -> sqlx::Result<Amounts> {
    type AmountRow = (Decimal, Decimal, String, DateTime<Utc>, Option<Decimal>);
    let rows: Vec<AmountRow> = sqlx::query_as(
        "SELECT clv, historical_value, currency_code, score_time, net_clv
         FROM customer_values WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let currency = rows.first().map(|r| r.2.clone());
    let latest = rows.iter().map(|r| r.3).max();
    let net = rows.iter().filter_map(|r| r.4).collect();
    let (clv, historical) = rows.into_iter().map(|r| (r.0, r.1)).unzip();
    Ok(Amounts {
        clv,
        historical,
        net,
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
