//! Classification: the inputs of the ladder and the Dwyer stage per customer,
//! the rungs and stages stored, and the tenant's policy overrides.

use super::*;

#[derive(sqlx::FromRow)]
struct InputRow {
    customer_id: Uuid,
    first_purchase: Option<DateTime<Utc>>,
    last_purchase: Option<DateTime<Utc>>,
    purchases: i64,
    csat: Option<i32>,
    nps: Option<i32>,
    open_complaints: i64,
    tags: Vec<String>,
    rfm_f: Option<i32>,
    clv_greater: Option<i64>,
    clv_total: i64,
    monetary_greater: Option<i64>,
    monetary_total: i64,
    p_alive: Option<Decimal>,
    profile_stage: Option<String>,
    contacts: i64,
    responses: i64,
    active_periods: i64,
    recent_purchases: i64,
    recent_spend: Option<Decimal>,
    prior_purchases: i64,
    prior_spend: Option<Decimal>,
    ladder: Option<String>,
    stage: Option<String>,
}

/// The per-customer aggregates of recent purchases classification needs
/// (campaign responses are counted in `features`): only purchases of the
/// last year, or of two expansion periods when longer, are read. `{filter}`
/// restricts the customers. Parameters: $1 tenant, $2 now, $3 the expansion
/// period in days.
const EVENTS_SQL: &str = "
        SELECT e.customer_id, {aggregates}
        FROM events e
        WHERE e.tenant_id = $1{filter} AND e.type = 'purchase'
          AND e.occur_time > $2 - greatest(364, 2 * $3) * interval '1 day' AND e.occur_time <= $2
        GROUP BY e.customer_id";

/// [`EVENTS_SQL`] for the customer `k.id` of a lateral join: an index range
/// per customer, whatever the statistics say about a fast-growing tenant.
const EVENTS_SOME_SQL: &str = "
            SELECT {aggregates}
            FROM events e
            WHERE e.tenant_id = $1 AND e.customer_id = k.id AND e.type = 'purchase'
              AND e.occur_time > $2 - greatest(364, 2 * $3) * interval '1 day' AND e.occur_time <= $2";

/// The aggregates of [`EVENTS_SQL`], over purchases of the window.
const PURCHASE_AGGREGATES: &str = "
               count(DISTINCT floor(extract(epoch FROM ($2 - e.occur_time)) / (91 * 86400)))
                   FILTER (WHERE e.occur_time > $2 - interval '364 days') AS active_periods,
               count(*) FILTER (WHERE e.occur_time > $2 - $3 * interval '1 day') AS recent_purchases,
               sum(e.amount) FILTER (WHERE e.occur_time > $2 - $3 * interval '1 day') AS recent_spend,
               count(*) FILTER (WHERE e.occur_time > $2 - 2 * $3 * interval '1 day'
                                AND e.occur_time <= $2 - $3 * interval '1 day') AS prior_purchases,
               sum(e.amount) FILTER (WHERE e.occur_time > $2 - 2 * $3 * interval '1 day'
                                AND e.occur_time <= $2 - $3 * interval '1 day') AS prior_spend";

const INPUT_COLUMNS: &str =
    "s.customer_id, s.first_purchase, s.last_purchase, s.purchases, s.csat, s.nps,
           s.open_complaints, s.tags, s.rfm_f";

const EVENT_COLUMNS: &str = "s.p_alive, s.profile_stage, s.contacts,
           s.campaign_responses AS responses,
           coalesce(ev.active_periods, 0) AS active_periods,
           coalesce(ev.recent_purchases, 0) AS recent_purchases, ev.recent_spend,
           coalesce(ev.prior_purchases, 0) AS prior_purchases, ev.prior_spend,
           s.ladder, s.stage";

/// Every customer of the tenant: ranks by window functions over one scan of
/// the tenant's features (no self-join a plan could turn quadratic), and the
/// purchase aggregates computed once.
fn inputs_sql_all() -> String {
    format!(
        "WITH ev AS MATERIALIZED ({events})
         SELECT {cols},
                CASE WHEN s.clv IS NOT NULL THEN rank() OVER (ORDER BY s.clv DESC NULLS LAST) - 1 END
                    AS clv_greater,
                count(s.clv) OVER () AS clv_total,
                CASE WHEN s.monetary IS NOT NULL THEN rank() OVER (ORDER BY s.monetary DESC NULLS LAST) - 1 END
                    AS monetary_greater,
                count(s.monetary) OVER () AS monetary_total,
                {ecols}
         FROM features s
         LEFT JOIN ev ON ev.customer_id = s.customer_id
         WHERE s.tenant_id = $1",
        events = EVENTS_SQL
            .replace("{filter}", "")
            .replace("{aggregates}", PURCHASE_AGGREGATES),
        cols = INPUT_COLUMNS,
        ecols = EVENT_COLUMNS,
    )
}

/// Some customers ($5), ranks only where they can matter ($6: always, for
/// explanations; otherwise for partner candidates, $7 tenure days and $8
/// frequency score). For explanations a rank is exact: the customers with a
/// greater value, counted. Otherwise only the decision "in the top $9 %"
/// is needed, and it is taken against the value at the cut, found once per
/// statement (counting per customer would read a share of the tenant's
/// index for each): `greater` is then 0 for a customer in the top and the
/// number of top places for one outside, each a lower bound of the count
/// that gives the same decision. The tenant's counts of customers with a
/// value are kept in `feature_counts` by triggers (counting them read the
/// tenant's whole index at each batch).
fn inputs_sql_some() -> String {
    let needed =
        "($6 OR (s.first_purchase <= $2 - $7 * interval '1 day' AND coalesce(s.rfm_f, 0) >= $8))";
    let rank = |col: &str| {
        format!(
            "CASE WHEN s.{col} IS NOT NULL AND {needed} THEN
                 CASE WHEN $6 THEN (SELECT count(*) FROM features g WHERE g.tenant_id = $1 AND g.{col} > s.{col})
                      WHEN s.{col} >= (SELECT {col}_cut FROM cuts) THEN 0
                      ELSE (SELECT {col}_places FROM cuts) END END AS {col}_greater,
             CASE WHEN s.{col} IS NOT NULL AND {needed} THEN (SELECT {col}_n FROM cuts) ELSE 0 END AS {col}_total"
        )
    };
    let places = |col: &str| {
        format!("ceil(n.{col}_n * $9::float8 / 100::float8 - 1e-9)::bigint AS {col}_places")
    };
    let cut = |col: &str| {
        format!(
            "(SELECT {col} FROM features WHERE tenant_id = $1 AND {col} IS NOT NULL ORDER BY {col} DESC
               OFFSET greatest(t.{col}_places - 1, 0) LIMIT 1) AS {col}_cut"
        )
    };
    format!(
        "WITH n AS MATERIALIZED (SELECT {clv_n} AS clv_n, {monetary_n} AS monetary_n),
         t AS MATERIALIZED (SELECT n.*, {clv_places}, {monetary_places} FROM n),
         cuts AS MATERIALIZED (SELECT t.*, {clv_cut}, {monetary_cut} FROM t)
         SELECT {cols}, {clv_rank}, {monetary_rank}, {ecols}
         FROM unnest($5::uuid[]) AS k (id)
         CROSS JOIN LATERAL (SELECT * FROM features
                              WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) s
         CROSS JOIN LATERAL ({events}) ev",
        clv_n = crate::rule::kept_count_sql("clv"),
        monetary_n = crate::rule::kept_count_sql("monetary"),
        clv_places = places("clv"),
        monetary_places = places("monetary"),
        clv_cut = cut("clv"),
        monetary_cut = cut("monetary"),
        clv_rank = rank("clv"),
        monetary_rank = rank("monetary"),
        events = EVENTS_SOME_SQL.replace("{aggregates}", PURCHASE_AGGREGATES),
        cols = INPUT_COLUMNS,
        ecols = EVENT_COLUMNS,
    )
}

/// A customer's classification inputs with the stored ladder and stage.
pub struct Classifiable {
    pub customer_id: Uuid,
    pub inputs: Inputs,
    pub ladder: Option<String>,
    pub stage: Option<String>,
}

/// The classification inputs of some customers of the tenant (`None`: all).
pub async fn classification_inputs(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: Option<&[Uuid]>,
    policy: &crate::domain::policy::Policy,
    explain: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Classifiable>> {
    let period = f64::from(policy.expansion_period_days);
    let rows: Vec<InputRow> = match customers {
        None => {
            sqlx::query_as(sqlx::AssertSqlSafe(inputs_sql_all()))
                .bind(tenant)
                .bind(now)
                .bind(period)
                .bind(&RESPONSE_TYPES[..])
                .fetch_all(conn)
                .await?
        }
        Some(ids) => {
            sqlx::query_as(sqlx::AssertSqlSafe(inputs_sql_some()))
                .bind(tenant)
                .bind(now)
                .bind(period)
                .bind(&RESPONSE_TYPES[..])
                .bind(ids)
                .bind(explain)
                .bind(f64::from(policy.partner_min_tenure_days))
                .bind(policy.partner_min_frequency_score)
                .bind(policy.partner_clv_top_percent)
                .fetch_all(conn)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| Classifiable {
            customer_id: r.customer_id,
            inputs: Inputs {
                first_purchase: r.first_purchase,
                last_purchase: r.last_purchase,
                purchases: r.purchases,
                csat: r.csat,
                nps: r.nps,
                open_complaints: r.open_complaints,
                tags: r.tags,
                frequency_score: r.rfm_f,
                clv_rank: r.clv_greater.map(|g| Rank {
                    greater: g,
                    total: r.clv_total,
                }),
                monetary_rank: r.monetary_greater.map(|g| Rank {
                    greater: g,
                    total: r.monetary_total,
                }),
                p_alive: r
                    .p_alive
                    .and_then(|p| rust_decimal::prelude::ToPrimitive::to_f64(&p)),
                profile_stage: r.profile_stage,
                contacts: r.contacts,
                campaign_responses: r.responses,
                active_periods: r.active_periods as i32,
                recent_purchases: r.recent_purchases,
                recent_spend: r.recent_spend.unwrap_or_default(),
                prior_purchases: r.prior_purchases,
                prior_spend: r.prior_spend.unwrap_or_default(),
            },
            ladder: r.ladder,
            stage: r.stage,
        })
        .collect())
}

/// Stores new ladder rungs and stages: (customer, ladder, stage).
pub async fn set_classes(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, Option<String>, Option<String>)],
) -> Result<()> {
    for chunk in rows.chunks(10_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|r| r.0).collect();
        let ladders: Vec<Option<String>> = chunk.iter().map(|r| r.1.clone()).collect();
        let stages: Vec<Option<String>> = chunk.iter().map(|r| r.2.clone()).collect();
        sqlx::query(
            "UPDATE features f SET ladder = x.l, stage = x.s
             FROM unnest($2::uuid[], $3::text[], $4::text[]) AS x(c, l, s)
             WHERE f.tenant_id = $1 AND f.customer_id = x.c",
        )
        .bind(tenant)
        .bind(&ids)
        .bind(&ladders)
        .bind(&stages)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The tenant's policy overrides and version (0 when never changed).
pub async fn policy(
    conn: &mut PgConnection,
    tenant: Uuid,
    lock: bool,
) -> Result<(serde_json::Map<String, Value>, i64, Option<DateTime<Utc>>)> {
    let sql = if lock {
        "SELECT overrides, version, update_time FROM classification_policies WHERE tenant_id = $1 FOR UPDATE"
    } else {
        "SELECT overrides, version, update_time FROM classification_policies WHERE tenant_id = $1"
    };
    let row: Option<(Value, i64, DateTime<Utc>)> = sqlx::query_as(sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some((Value::Object(o), v, t)) => (o, v, Some(t)),
        Some((_, v, t)) => (serde_json::Map::new(), v, Some(t)),
        None => (serde_json::Map::new(), 0, None),
    })
}

/// Stores a tenant's overrides; returns the new version and time.
pub async fn save_policy(
    conn: &mut PgConnection,
    tenant: Uuid,
    overrides: &serde_json::Map<String, Value>,
) -> Result<(i64, DateTime<Utc>)> {
    sqlx::query_as(
        "INSERT INTO classification_policies (tenant_id, overrides) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET overrides = excluded.overrides,
             version = classification_policies.version + 1, update_time = now()
         RETURNING version, update_time",
    )
    .bind(tenant)
    .bind(Value::Object(overrides.clone()))
    .fetch_one(conn)
    .await
}
