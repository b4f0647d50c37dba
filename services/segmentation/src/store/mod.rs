//! Every SQL statement of the segmentation service. Values are always bound
//! as parameters; the rule compiler's SQL (`rule::Sql`) is spliced as a
//! condition only, with its own parameters bound after the tenant.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use rapport_kit::convert::timestamp;
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::segmentation::v1::{
    self as pb, MembershipChangeReason, segmentation_event,
};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::domain::classify::{Inputs, Rank};
use crate::rule::{Sql, SqlParam};

pub mod projection;

pub use projection::*;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// A decimal from a JSON number or string of a stored row (exact for
/// strings), normalised.
pub fn decimal(v: &Value) -> Option<Decimal> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()
        .map(|d| d.normalize())
}

/// The NOTIFY channel of the membership change log.
pub const MEMBERSHIP_CHANNEL: &str = "segmentation_membership";

/// The interaction types that count as contacts.
pub const CONTACT_TYPES: [&str; 7] = [
    "sales_visit",
    "call",
    "email",
    "meeting",
    "chat",
    "service_request",
    "complaint",
];

/// Campaign responses: opened, clicked, converted.
pub const RESPONSE_TYPES: [&str; 3] = ["campaign_opened", "campaign_clicked", "campaign_converted"];

// ---------------------------------------------------------------------------
// Binding the rule compiler's parameters.

fn bind_param<'q>(
    q: sqlx::query::Query<'q, Postgres, PgArguments>,
    p: &'q SqlParam,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    match p {
        SqlParam::Uuid(u) => q.bind(*u),
        SqlParam::Text(s) => q.bind(s.as_str()),
        SqlParam::TextArray(v) => q.bind(v.as_slice()),
        SqlParam::Decimal(d) => q.bind(*d),
        SqlParam::Int(i) => q.bind(*i),
        SqlParam::Bool(b) => q.bind(*b),
        SqlParam::Time(t) => q.bind(*t),
    }
}

/// A query over `text` with the tenant as $1 and the rule's parameters after.
fn rule_query<'q>(
    text: String,
    tenant: Uuid,
    sql: &'q Sql,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    // The condition comes from the rule compiler, which binds every value.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(text)).bind(tenant);
    for p in &sql.params {
        q = bind_param(q, p);
    }
    q
}

/// The number of the first parameter after the rule's.
fn next_param(sql: &Sql) -> usize {
    sql.params.len() + 2
}

// ---------------------------------------------------------------------------
// Tenants.

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

// ---------------------------------------------------------------------------
// The projection: customers.

/// Whether the customer was deleted, erased or merged.
pub async fn is_removed(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<bool> {
    let r: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM removed_customers WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_optional(conn)
    .await?;
    Ok(r.is_some())
}

/// Whether the service has features for the customer.
pub async fn is_known(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<bool> {
    let r: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM features WHERE tenant_id = $1 AND customer_id = $2")
            .bind(tenant)
            .bind(customer)
            .fetch_optional(conn)
            .await?;
    Ok(r.is_some())
}

/// Which of `ids` have features.
pub async fn known_among(conn: &mut PgConnection, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    // One key lookup per id (a lateral subquery the planner cannot flatten),
    // whatever the statistics say about a fast-growing tenant.
    sqlx::query_scalar(
        "SELECT f.customer_id FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT customer_id FROM features
                                WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) f",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// The profile part of a customer's features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileFacts {
    pub kind: Option<String>,
    pub country: Option<String>,
    pub tags: Vec<String>,
    pub profile_stage: Option<String>,
    pub attributes: Value,
    pub consents: Value,
}

/// Attribute types seen on a snapshot, for attributes the catalogue lacks.
pub async fn note_attribute_types(
    conn: &mut PgConnection,
    tenant: Uuid,
    types: &[(String, &'static str)],
) -> Result<()> {
    if types.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
    let kinds: Vec<&str> = types.iter().map(|(_, t)| *t).collect();
    sqlx::query(
        "INSERT INTO attribute_fields (tenant_id, name, type)
         SELECT $1, n, t FROM unnest($2::text[], $3::text[]) AS x(n, t)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&kinds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces attribute fields with the profile service's definitions.
pub async fn save_attribute_definitions(
    conn: &mut PgConnection,
    tenant: Uuid,
    defs: &[crate::peers::AttributeDef],
) -> Result<()> {
    if defs.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let kinds: Vec<&str> = defs.iter().map(|d| d.ty).collect();
    let descs: Vec<&str> = defs.iter().map(|d| d.description.as_str()).collect();
    sqlx::query(
        "INSERT INTO attribute_fields (tenant_id, name, type, description)
         SELECT $1, n, t, d FROM unnest($2::text[], $3::text[], $4::text[]) AS x(n, t, d)
         ON CONFLICT (tenant_id, name) DO UPDATE SET type = excluded.type, description = excluded.description",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&kinds)
    .bind(&descs)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attribute fields of the tenant: (name, type, description).
pub async fn attribute_fields(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT name, type, description FROM attribute_fields WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await
}

/// The custom interaction types seen for the tenant, in ascending order.
pub async fn custom_types(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT type FROM custom_types WHERE tenant_id = $1 ORDER BY type")
        .bind(tenant)
        .fetch_all(conn)
        .await
}

/// Removes a customer's features (deleted, erased or merged). Returns the
/// memberships it had: (segment id, segment name, segment kind).
pub async fn remove_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    state: &str,
    merged_into: Option<Uuid>,
) -> Result<Vec<(Uuid, String, String)>> {
    sqlx::query(
        "INSERT INTO removed_customers (tenant_id, customer_id, state, merged_into) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET state = excluded.state,
             merged_into = excluded.merged_into, update_time = now()",
    )
    .bind(tenant)
    .bind(customer)
    .bind(state)
    .bind(merged_into)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM features WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(
        "WITH gone AS (
             DELETE FROM memberships WHERE tenant_id = $1 AND customer_id = $2 RETURNING segment_id)
         SELECT s.segment_id, s.name, s.kind FROM gone g
         JOIN segments s ON s.tenant_id = $1 AND s.segment_id = g.segment_id
         ORDER BY s.name",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await
}

/// Forgets a removal (undelete, unmerge): the customer may have features again.
pub async fn restore_customer(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM removed_customers WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes every interaction of an erased customer.
pub async fn delete_events(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM events WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The projection: interactions.

/// Moves interactions from one customer to another (all of them, or the
/// listed ones). Idempotent.
pub async fn move_events(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
    only: Option<&[Uuid]>,
) -> Result<u64> {
    let r = sqlx::query(
        "WITH moved AS (
             DELETE FROM events WHERE tenant_id = $1 AND customer_id = $2
               AND ($4::uuid[] IS NULL OR interaction_id = ANY($4))
             RETURNING *)
         INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount, margin,
                             csat, nps, campaign_id, open)
         SELECT tenant_id, $3, interaction_id, type, occur_time, amount, margin, csat, nps, campaign_id, open
         FROM moved ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(only)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Valuation values of a customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueFacts {
    pub clv: Option<Decimal>,
    pub p_alive: Option<Decimal>,
    pub expected_purchases: Option<Decimal>,
    pub value_tier: Option<String>,
}

// ---------------------------------------------------------------------------
// RFM.

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

// ---------------------------------------------------------------------------
// Classification.

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

// ---------------------------------------------------------------------------
// Segments.

/// A segment as stored, with its member count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SegmentRow {
    pub segment_id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub marketing_approach: i16,
    pub rule: Option<Vec<u8>>,
    pub refresh_interval_seconds: Option<i64>,
    pub last_refresh_time: Option<DateTime<Utc>>,
    pub next_refresh_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
    pub member_count: i64,
}

const SEGMENT_COLUMNS: &str = "s.segment_id, s.name, s.description, s.kind, s.marketing_approach, s.rule,
    s.refresh_interval_seconds, s.last_refresh_time, s.next_refresh_time, s.create_time,
    s.update_time, s.version,
    (SELECT count(*) FROM memberships m WHERE m.tenant_id = s.tenant_id AND m.segment_id = s.segment_id) AS member_count";

/// One segment; `lock` locks its row for the transaction.
pub async fn segment(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<SegmentRow>> {
    let sql = format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments s WHERE s.tenant_id = $1 AND s.segment_id = $2{}",
        if lock { " FOR UPDATE OF s" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The tenant's segments of some kinds (every kind when empty), without
/// member counts.
pub async fn segments_of_kind(
    conn: &mut PgConnection,
    tenant: Uuid,
    kinds: &[&str],
) -> Result<Vec<SegmentRow>> {
    sqlx::query_as(
        "SELECT s.segment_id, s.name, s.description, s.kind, s.marketing_approach, s.rule,
                s.refresh_interval_seconds, s.last_refresh_time, s.next_refresh_time, s.create_time,
                s.update_time, s.version, 0::bigint AS member_count
         FROM segments s WHERE s.tenant_id = $1 AND (cardinality($2::text[]) = 0 OR s.kind = ANY($2))
         ORDER BY s.name",
    )
    .bind(tenant)
    .bind(kinds)
    .fetch_all(conn)
    .await
}

/// The tenant's segment names by id.
pub async fn segment_names(conn: &mut PgConnection, tenant: Uuid) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT segment_id, name FROM segments WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The tenant's reference graph: segment -> the segments its rule refers to.
pub async fn reference_graph(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT segment_id, referenced_id FROM segment_refs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(conn)
            .await?;
    let mut g: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (s, r) in rows {
        g.entry(s).or_default().push(r);
    }
    Ok(g)
}

/// Replaces a segment's references.
pub async fn set_refs(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    refs: &[Uuid],
) -> Result<()> {
    sqlx::query("DELETE FROM segment_refs WHERE tenant_id = $1 AND segment_id = $2")
        .bind(tenant)
        .bind(segment)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO segment_refs (tenant_id, segment_id, referenced_id)
         SELECT $1, $2, r FROM unnest($3::uuid[]) AS r ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(segment)
    .bind(refs)
    .execute(conn)
    .await?;
    Ok(())
}

/// The names of the segments whose rules refer to `segment`.
pub async fn referrers(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT s.name FROM segment_refs r JOIN segments s
             ON s.tenant_id = r.tenant_id AND s.segment_id = r.segment_id
         WHERE r.tenant_id = $1 AND r.referenced_id = $2 ORDER BY s.name",
    )
    .bind(tenant)
    .bind(segment)
    .fetch_all(conn)
    .await
}

/// A new segment's definition.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub segment_id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    pub marketing_approach: i16,
    pub rule: Option<Vec<u8>>,
    pub refresh_interval_seconds: Option<i64>,
}

/// Inserts a segment (unique violation on the name: the caller maps it).
pub async fn insert_segment(conn: &mut PgConnection, tenant: Uuid, s: &NewSegment) -> Result<()> {
    sqlx::query(
        "INSERT INTO segments (tenant_id, segment_id, name, description, kind, marketing_approach, rule,
                               refresh_interval_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(s.segment_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.kind)
    .bind(s.marketing_approach)
    .bind(&s.rule)
    .bind(s.refresh_interval_seconds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a changed definition and bumps the version.
pub async fn update_segment(conn: &mut PgConnection, tenant: Uuid, s: &SegmentRow) -> Result<()> {
    sqlx::query(
        "UPDATE segments SET name = $3, description = $4, marketing_approach = $5, rule = $6,
                refresh_interval_seconds = $7, next_refresh_time = $8, update_time = now(),
                version = version + 1
         WHERE tenant_id = $1 AND segment_id = $2",
    )
    .bind(tenant)
    .bind(s.segment_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.marketing_approach)
    .bind(&s.rule)
    .bind(s.refresh_interval_seconds)
    .bind(s.next_refresh_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a full evaluation's time and the next one's.
pub async fn set_refreshed(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    at: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "UPDATE segments SET last_refresh_time = $3, next_refresh_time = $4
         WHERE tenant_id = $1 AND segment_id = $2",
    )
    .bind(tenant)
    .bind(segment)
    .bind(at)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a segment with its membership, history and references.
pub async fn delete_segment(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<()> {
    for sql in [
        "DELETE FROM memberships WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM membership_log WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM segment_refs WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM segments WHERE tenant_id = $1 AND segment_id = $2",
    ] {
        sqlx::query(sql)
            .bind(tenant)
            .bind(segment)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// ListSegments: by name after `after`, optional kind and approach filters.
pub async fn list_segments(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: Option<&str>,
    approach: Option<i16>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<SegmentRow>> {
    let sql = format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments s
         WHERE s.tenant_id = $1 AND ($2::text IS NULL OR s.kind = $2)
           AND ($3::smallint IS NULL OR s.marketing_approach = $3)
           AND ($4::text IS NULL OR s.name COLLATE \"C\" > $4)
         ORDER BY s.name COLLATE \"C\" LIMIT $5"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(kind)
        .bind(approach)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Segments due for a scheduled full evaluation, oldest first.
pub async fn due_segments(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "SELECT tenant_id, segment_id FROM segments
         WHERE next_refresh_time IS NOT NULL AND next_refresh_time <= $1
         ORDER BY next_refresh_time LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

// ---------------------------------------------------------------------------
// Idempotency keys of CreateSegment.

/// The segment a request id created, with its fingerprint (keys older than
/// 24 hours are forgotten first).
pub async fn request_key(
    conn: &mut PgConnection,
    tenant: Uuid,
    request_id: &str,
) -> Result<Option<(String, Uuid)>> {
    sqlx::query(
        "DELETE FROM request_keys WHERE tenant_id = $1 AND request_id = $2
           AND create_time < now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(request_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "SELECT fingerprint, segment_id FROM request_keys WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(conn)
    .await
}

/// Remembers a request id; false when another call took it meanwhile.
pub async fn save_request_key(
    conn: &mut PgConnection,
    tenant: Uuid,
    request_id: &str,
    fingerprint: &str,
    segment: Uuid,
) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO request_keys (tenant_id, request_id, fingerprint, segment_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(request_id)
    .bind(fingerprint)
    .bind(segment)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() > 0)
}

// ---------------------------------------------------------------------------
// Evaluation.

/// Applies a rule to a segment's membership: customers matching enter (at
/// `now`), members no longer matching exit. With `scope`, only those
/// customers are considered. Returns (entered, exited).
pub async fn evaluate_into(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    sql: &Sql,
    scope: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let k = next_param(sql);
    let (seg, at, sc) = (k, k + 1, k + 2);
    let text = if scope.is_some() {
        // Customers of a feed batch: each one's match and membership are
        // looked up by key (subqueries per customer, which no estimate can
        // turn into a scan of the segment or of the tenant), members leave
        // by row address.
        format!(
            "WITH scope AS MATERIALIZED (
                 SELECT k.id,
                        EXISTS (SELECT 1 FROM features f
                                 WHERE f.tenant_id = $1 AND f.customer_id = k.id AND ({cond})) AS matches,
                        (SELECT m.ctid FROM memberships m
                          WHERE m.tenant_id = $1 AND m.segment_id = ${seg} AND m.customer_id = k.id) AS member
                   FROM unnest(${sc}::uuid[]) AS k (id)),
             gone AS (
                 DELETE FROM memberships m
                  WHERE m.ctid = ANY(ARRAY(SELECT member FROM scope WHERE member IS NOT NULL AND NOT matches))
                    AND m.tenant_id = $1 AND m.segment_id = ${seg}
                 RETURNING m.customer_id),
             came AS (
                 INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
                 SELECT $1, ${seg}, id, ${at} FROM scope WHERE matches AND member IS NULL
                 ON CONFLICT DO NOTHING
                 RETURNING customer_id)
             SELECT true AS entered, customer_id FROM came
             UNION ALL SELECT false, customer_id FROM gone",
            cond = sql.condition,
        )
    } else {
        format!(
            "WITH target AS MATERIALIZED (
                 SELECT f.customer_id FROM features f
                 WHERE f.tenant_id = $1 AND ({cond})),
             gone AS (
                 DELETE FROM memberships m
                 WHERE m.tenant_id = $1 AND m.segment_id = ${seg}
                   AND NOT EXISTS (SELECT 1 FROM target t WHERE t.customer_id = m.customer_id)
                 RETURNING m.customer_id),
             came AS (
                 INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
                 SELECT $1, ${seg}, t.customer_id, ${at} FROM target t
                 WHERE NOT EXISTS (SELECT 1 FROM memberships m
                                   WHERE m.tenant_id = $1 AND m.segment_id = ${seg} AND m.customer_id = t.customer_id)
                 ON CONFLICT DO NOTHING
                 RETURNING customer_id)
             SELECT true AS entered, customer_id FROM came
             UNION ALL SELECT false, customer_id FROM gone",
            cond = sql.condition,
        )
    };
    let mut q = rule_query(text, tenant, sql).bind(segment).bind(now);
    if let Some(s) = scope {
        q = q.bind(s);
    }
    // A full evaluation diffs two large sets: with the rule's estimates the
    // planner may pick nested-loop anti-joins (quadratic). Hash joins are
    // always right here, so nested loops are off for this statement only;
    // and it is planned for its values (its execution outweighs planning).
    if scope.is_none() {
        sqlx::query(
            "SELECT set_config('enable_nestloop', 'off', true),
                    set_config('plan_cache_mode', 'force_custom_plan', true)",
        )
        .execute(&mut *conn)
        .await?;
    }
    let rows = q.fetch_all(&mut *conn).await?;
    if scope.is_none() {
        sqlx::query(
            "SELECT set_config('enable_nestloop', 'on', true),
                    set_config('plan_cache_mode', 'force_generic_plan', true)",
        )
        .execute(&mut *conn)
        .await?;
    }
    let mut entered = Vec::new();
    let mut exited = Vec::new();
    for r in rows {
        use sqlx::Row;
        let e: bool = r.try_get(0)?;
        let c: Uuid = r.try_get(1)?;
        if e {
            entered.push(c);
        } else {
            exited.push(c);
        }
    }
    Ok((entered, exited))
}

/// PreviewSegment: the number of matching customers and a random sample.
pub async fn preview(
    conn: &mut PgConnection,
    tenant: Uuid,
    sql: &Sql,
    sample: i64,
) -> Result<(i64, Vec<Uuid>)> {
    let k = next_param(sql);
    let text = format!(
        "SELECT count(*) OVER () AS n, f.customer_id FROM features f
         WHERE f.tenant_id = $1 AND ({cond})
         ORDER BY random() LIMIT ${k}",
        cond = sql.condition
    );
    // Planned for its values: a count over the tenant outweighs planning.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    rapport_kit::db::custom_plans(&mut tx).await?;
    let rows = rule_query(text, tenant, sql)
        .bind(sample.max(1))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    use sqlx::Row;
    let mut count = 0;
    let mut ids = Vec::new();
    for r in rows {
        count = r.try_get::<i64, _>(0)?;
        ids.push(r.try_get::<Uuid, _>(1)?);
    }
    if sample == 0 {
        ids.clear();
    }
    Ok((count, ids))
}

/// The number of the tenant's customers (with features).
pub async fn customer_count(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM features WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(conn)
        .await
}

/// Inserts static members; returns those who entered.
pub async fn add_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
         SELECT $1, $2, c, $4 FROM unnest($3::uuid[]) AS c
         ON CONFLICT DO NOTHING RETURNING customer_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(ids)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Deletes members; returns those who exited.
pub async fn remove_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "DELETE FROM memberships WHERE tenant_id = $1 AND segment_id = $2 AND customer_id = ANY($3)
         RETURNING customer_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// The member count of a segment.
pub async fn member_count(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1 AND segment_id = $2")
        .bind(tenant)
        .bind(segment)
        .fetch_one(conn)
        .await
}

/// A membership: since when, or None.
pub async fn membership(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    customer: Uuid,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT enter_time FROM memberships WHERE tenant_id = $1 AND segment_id = $2 AND customer_id = $3",
    )
    .bind(tenant)
    .bind(segment)
    .bind(customer)
    .fetch_optional(conn)
    .await
}

/// ListMembers: by customer id after `after`.
pub async fn list_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT customer_id, enter_time FROM memberships
         WHERE tenant_id = $1 AND segment_id = $2 AND ($3::uuid IS NULL OR customer_id > $3)
         ORDER BY customer_id LIMIT $4",
    )
    .bind(tenant)
    .bind(segment)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// GetCustomerSegments: (segment id, name, enter time) by name after `after`.
pub async fn customer_segments(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT s.segment_id, s.name, m.enter_time FROM memberships m
         JOIN segments s ON s.tenant_id = m.tenant_id AND s.segment_id = m.segment_id
         WHERE m.tenant_id = $1 AND m.customer_id = $2 AND ($3::text IS NULL OR s.name COLLATE \"C\" > $3)
         ORDER BY s.name COLLATE \"C\" LIMIT $4",
    )
    .bind(tenant)
    .bind(customer)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The segments a customer is a member of.
pub async fn segments_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT segment_id FROM memberships WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await
}

// ---------------------------------------------------------------------------
// The membership change log.

/// One entry or exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub segment_id: Uuid,
    pub segment_name: String,
    pub customer_id: Uuid,
    pub entered: bool,
    pub reason: MembershipChangeReason,
}

/// Logs membership changes and emits `MembershipChanged` events (at most
/// 1,000 ids each). Returns the first and last sequence (None if nothing).
pub async fn record_changes(
    conn: &mut PgConnection,
    tenant: Uuid,
    changes: &[Change],
    time: DateTime<Utc>,
) -> Result<Option<(i64, i64)>> {
    if changes.is_empty() {
        return Ok(None);
    }
    // The tenant's numbers, under its row's lock until commit: a tenant's
    // sequence order is its commit order, and numbers say nothing about
    // other tenants.
    ensure_tenant(conn, tenant).await?;
    let last: i64 = sqlx::query_scalar(
        "UPDATE tenants SET membership_sequence = membership_sequence + $2 WHERE tenant_id = $1
         RETURNING membership_sequence",
    )
    .bind(tenant)
    .bind(changes.len() as i64)
    .fetch_one(&mut *conn)
    .await?;
    let mut next = last - changes.len() as i64 + 1;
    let mut seqs: Vec<i64> = Vec::with_capacity(changes.len());
    for chunk in changes.chunks(50_000) {
        let segs: Vec<Uuid> = chunk.iter().map(|c| c.segment_id).collect();
        let names: Vec<&str> = chunk.iter().map(|c| c.segment_name.as_str()).collect();
        let custs: Vec<Uuid> = chunk.iter().map(|c| c.customer_id).collect();
        let entered: Vec<bool> = chunk.iter().map(|c| c.entered).collect();
        let reasons: Vec<i16> = chunk.iter().map(|c| c.reason as i16).collect();
        let numbers: Vec<i64> = (next..next + chunk.len() as i64).collect();
        next += chunk.len() as i64;
        sqlx::query(
            "INSERT INTO membership_log (tenant_id, sequence, segment_id, segment_name, customer_id, entered, reason, change_time)
             SELECT $1, q, s, n, c, e, r, $8
             FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::uuid[], $6::bool[], $7::smallint[])
                  AS x(q, s, n, c, e, r)",
        )
        .bind(tenant)
        .bind(&numbers)
        .bind(&segs)
        .bind(&names)
        .bind(&custs)
        .bind(&entered)
        .bind(&reasons)
        .bind(time)
        .execute(&mut *conn)
        .await?;
        seqs.extend(numbers);
    }

    // Events: grouped by segment and reason, in order, 1,000 ids at most.
    type Group<'a> = ((Uuid, MembershipChangeReason), Vec<(usize, &'a Change)>);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let key = (c.segment_id, c.reason);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((i, c)),
            None => groups.push((key, vec![(i, c)])),
        }
    }
    let mut events = Vec::new();
    for ((segment, reason), list) in groups {
        for chunk in list.chunks(1000) {
            let entered: Vec<String> = chunk
                .iter()
                .filter(|(_, c)| c.entered)
                .map(|(_, c)| c.customer_id.to_string())
                .collect();
            let exited: Vec<String> = chunk
                .iter()
                .filter(|(_, c)| !c.entered)
                .map(|(_, c)| c.customer_id.to_string())
                .collect();
            let s: Vec<i64> = chunk
                .iter()
                .filter_map(|(i, _)| seqs.get(*i).copied())
                .collect();
            let event = pb::MembershipChanged {
                segment_id: segment.to_string(),
                entered,
                exited,
                reason: reason as i32,
                change_time: Some(timestamp(time)),
                first_sequence: s.iter().min().copied().unwrap_or(0),
                last_sequence: s.iter().max().copied().unwrap_or(0),
            };
            events.push(NewEvent::new(
                tenant,
                "segment",
                segment.to_string(),
                "MembershipChanged",
                &pb::SegmentationEvent {
                    event: Some(segmentation_event::Event::MembershipChanged(event)),
                },
            ));
        }
    }
    for chunk in events.chunks(1000) {
        feed::append(conn, chunk).await?;
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(MEMBERSHIP_CHANNEL)
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    let first = seqs.iter().min().copied().unwrap_or(0);
    let last = seqs.iter().max().copied().unwrap_or(0);
    Ok(Some((first, last)))
}

/// One logged change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub sequence: i64,
    pub segment_id: Uuid,
    pub segment_name: String,
    pub customer_id: Uuid,
    pub entered: bool,
    pub reason: i16,
    pub change_time: DateTime<Utc>,
}

/// Logged changes after `after` (one segment or all), in sequence order.
pub async fn log_after(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Option<Uuid>,
    after: i64,
    limit: i64,
) -> Result<Vec<LogRow>> {
    sqlx::query_as(
        "SELECT sequence, segment_id, segment_name, customer_id, entered, reason, change_time
         FROM membership_log
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR segment_id = $2) AND sequence > $3
         ORDER BY sequence LIMIT $4",
    )
    .bind(tenant)
    .bind(segment)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The last sequence before `time` (0 when none), for a start time.
pub async fn sequence_before(
    conn: &mut PgConnection,
    tenant: Uuid,
    time: Option<DateTime<Utc>>,
) -> Result<i64> {
    let s: Option<i64> = match time {
        Some(t) => sqlx::query_scalar(
            "SELECT max(sequence) FROM membership_log WHERE tenant_id = $1 AND change_time < $2",
        )
        .bind(tenant)
        .bind(t)
        .fetch_one(conn)
        .await?,
        None => {
            sqlx::query_scalar("SELECT max(sequence) FROM membership_log WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(conn)
                .await?
        }
    };
    Ok(s.unwrap_or(0))
}

/// Entries and exits of a segment per interval: (start, entered, exited).
pub async fn history(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: Duration,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>> {
    sqlx::query_as(
        "SELECT b.start, count(l.sequence) FILTER (WHERE l.entered),
                count(l.sequence) FILTER (WHERE NOT l.entered)
         FROM generate_series($3::timestamptz, $4::timestamptz - $5::interval, $5::interval) AS b(start)
         LEFT JOIN membership_log l ON l.tenant_id = $1 AND l.segment_id = $2
              AND l.change_time >= b.start AND l.change_time < b.start + $5::interval
         GROUP BY b.start ORDER BY b.start",
    )
    .bind(tenant)
    .bind(segment)
    .bind(start)
    .bind(end)
    .bind(step)
    .fetch_all(conn)
    .await
}

/// Entries minus exits of a segment at or after `from`.
pub async fn net_changes_since(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    from: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(CASE WHEN entered THEN 1 ELSE -1 END), 0)::bigint FROM membership_log
         WHERE tenant_id = $1 AND segment_id = $2 AND change_time >= $3",
    )
    .bind(tenant)
    .bind(segment)
    .bind(from)
    .fetch_one(conn)
    .await
}

/// Forgets log entries older than the retention.
pub async fn prune_log(conn: &mut PgConnection, before: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query("DELETE FROM membership_log WHERE change_time < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

// ---------------------------------------------------------------------------
// Facts for explanations.

/// The customer's features row as JSON (`to_jsonb(f)`).
pub async fn features_json(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Option<Value>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM features f WHERE f.tenant_id = $1 AND f.customer_id = $2",
        crate::rule::FEATURES_ROW_SQL
    )))
    .bind(tenant)
    .bind(customer)
    .fetch_optional(conn)
    .await
}

/// The customer's events.
pub async fn customer_events(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Vec<crate::rule::Event>> {
    type EventTuple = (
        String,
        DateTime<Utc>,
        Option<Decimal>,
        Option<Decimal>,
        Option<i32>,
        Option<i32>,
    );
    let rows: Vec<EventTuple> = sqlx::query_as(
        "SELECT type, occur_time, amount, margin, csat, nps FROM events
             WHERE tenant_id = $1 AND customer_id = $2 ORDER BY occur_time",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(kind, occur_time, amount, margin, csat, nps)| crate::rule::Event {
                kind,
                occur_time,
                amount,
                margin,
                csat,
                nps,
            },
        )
        .collect())
}

/// The SQL expression of a rankable field over `f`, if it is one
/// (attribute names are bound, never spliced).
fn ranked_expr(field: &str) -> Option<&'static str> {
    Some(match field {
        "purchases" => "f.purchases::numeric",
        "monetary" => "f.monetary",
        "avg_order_value" => "f.avg_order_value",
        "contacts" => "f.contacts::numeric",
        "open_service_requests" => "f.open_service_requests::numeric",
        "complaints" => "f.complaints::numeric",
        "open_complaints" => "f.open_complaints::numeric",
        "csat" => "f.csat::numeric",
        "nps" => "f.nps::numeric",
        "campaign_response_rate" => "f.campaign_response_rate",
        "clv" => "f.clv",
        "p_alive" => "f.p_alive",
        "expected_purchases" => "f.expected_purchases",
        "rfm.r" => "f.rfm_r::numeric",
        "rfm.f" => "f.rfm_f::numeric",
        "rfm.m" => "f.rfm_m::numeric",
        "rfm.fm" => "f.rfm_fm::numeric",
        _ => return None,
    })
}

/// The customer's standing on a numeric field among the tenant's customers
/// with a value: (greater, smaller, total); None when the customer has none.
pub async fn rank_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    field: &str,
) -> Result<Option<(i64, i64, i64)>> {
    let (expr, attr) = match (ranked_expr(field), field.strip_prefix("attr.")) {
        (Some(e), _) => (e.to_string(), None),
        (None, Some(name)) => (
            "(CASE WHEN jsonb_typeof(f.attributes -> $3) = 'string' AND (f.attributes ->> $3) ~ '^-?[0-9]+(\\.[0-9]+)?$'
                   THEN (f.attributes ->> $3)::numeric
                   WHEN jsonb_typeof(f.attributes -> $3) = 'number' THEN (f.attributes ->> $3)::numeric END)"
                .to_string(),
            Some(name.to_string()),
        ),
        _ => return Ok(None),
    };
    let text = format!(
        "WITH me AS (SELECT {expr} AS v FROM features f WHERE f.tenant_id = $1 AND f.customer_id = $2)
         SELECT count(*) FILTER (WHERE x.v > me.v), count(*) FILTER (WHERE x.v < me.v), count(x.v)
         FROM me, (SELECT {expr} AS v FROM features f WHERE f.tenant_id = $1) x
         WHERE me.v IS NOT NULL"
    );
    let q = sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(text))
        .bind(tenant)
        .bind(customer);
    let q = match attr.as_deref() {
        Some(a) => q.bind(a.to_string()),
        None => q,
    };
    let r = q.fetch_optional(conn).await?;
    Ok(r.filter(|(_, _, n)| *n > 0))
}
