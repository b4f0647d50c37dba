//! Writing the feature projection from the feeds, a batch at a time: every
//! function takes the customers of one batch and runs one statement (or two)
//! for all of them, so a consumer's cost grows with the batch, not with the
//! customers' histories.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    CONTACT_TYPES, ProfileFacts, RESPONSE_TYPES, Result, RfmState, ValueFacts, ensure_tenant,
};
use crate::domain::rfm;

/// Serialises the writers of one tenant's projection and memberships (feed
/// consumers, refreshes, segment and policy changes, recomputations): each
/// takes this lock first, in its own transaction, so they never deadlock on
/// one another's rows. Readers take no lock and never wait.
pub async fn lock_tenant(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('segmentation.tenant'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`lock_tenant`] unless another writer holds it: whether it was taken.
pub async fn try_lock_tenant(conn: &mut PgConnection, tenant: Uuid) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('segmentation.tenant'), hashtext($1::text))",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
}

/// Creates the features rows of customers that have none and were not
/// removed. Returns the customers that have features now.
pub async fn ensure_features_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
) -> Result<Vec<Uuid>> {
    if customers.is_empty() {
        return Ok(Vec::new());
    }
    ensure_tenant(conn, tenant).await?;
    let mut ids = customers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query(
        "INSERT INTO features (tenant_id, customer_id)
         SELECT $1, c FROM unnest($2::uuid[]) AS c
          WHERE NOT EXISTS (SELECT 1 FROM removed_customers r WHERE r.tenant_id = $1 AND r.customer_id = c)
          ORDER BY c
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    super::known_among(conn, tenant, &ids).await
}

/// Writes the profile part of customers' features (creating their rows),
/// except for removed customers. Returns the customers written.
pub async fn set_profiles(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, ProfileFacts)],
) -> Result<Vec<Uuid>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    ensure_tenant(conn, tenant).await?;
    let mut rows: Vec<&(Uuid, ProfileFacts)> = rows.iter().collect();
    rows.sort_by_key(|r| r.0);
    // Arrays of arrays (tags) do not unnest row by row: the batch travels
    // as JSON records.
    let records: Vec<serde_json::Value> = rows
        .iter()
        .map(|(c, p)| {
            serde_json::json!({
                "customer_id": c,
                "kind": p.kind,
                "country": p.country,
                "tags": p.tags,
                "profile_stage": p.profile_stage,
                "attributes": p.attributes,
                "consents": p.consents,
            })
        })
        .collect();
    sqlx::query_scalar(
        "INSERT INTO features (tenant_id, customer_id, kind, country, tags, profile_stage, attributes, consents)
         SELECT $1, x.customer_id, x.kind, x.country, coalesce(x.tags, '{}'), x.profile_stage,
                coalesce(x.attributes, '{}'), coalesce(x.consents, '{}')
           FROM jsonb_to_recordset($2::jsonb) AS x (customer_id uuid, kind text, country text, tags text[],
                                                   profile_stage text, attributes jsonb, consents jsonb)
          WHERE NOT EXISTS (SELECT 1 FROM removed_customers r
                             WHERE r.tenant_id = $1 AND r.customer_id = x.customer_id)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             kind = EXCLUDED.kind, country = EXCLUDED.country, tags = EXCLUDED.tags,
             profile_stage = EXCLUDED.profile_stage, attributes = EXCLUDED.attributes,
             consents = EXCLUDED.consents, update_time = now()
         RETURNING customer_id",
    )
    .bind(tenant)
    .bind(serde_json::Value::Array(records))
    .fetch_all(conn)
    .await
}

/// One consent decision: (customer, "channel:purpose", granted, effective time).
pub type ConsentRow = (Uuid, String, bool, DateTime<Utc>);

/// Records consent decisions, each unless a later one of its channel and
/// purpose is stored. Returns the customers whose features changed.
pub async fn set_consents(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[ConsentRow],
) -> Result<Vec<Uuid>> {
    // The latest decision per customer and key (the later of equal times).
    let mut latest: HashMap<(Uuid, &str), (bool, DateTime<Utc>)> = HashMap::new();
    for (c, k, g, t) in rows {
        let e = latest.entry((*c, k.as_str())).or_insert((*g, *t));
        if *t >= e.1 {
            *e = (*g, *t);
        }
    }
    if latest.is_empty() {
        return Ok(Vec::new());
    }
    let mut list: Vec<_> = latest.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let customers: Vec<Uuid> = list.iter().map(|((c, _), _)| *c).collect();
    let keys: Vec<&str> = list.iter().map(|((_, k), _)| *k).collect();
    let granted: Vec<bool> = list.iter().map(|(_, (g, _))| *g).collect();
    let times: Vec<DateTime<Utc>> = list.iter().map(|(_, (_, t))| *t).collect();
    let texts: Vec<String> = times
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .collect();
    sqlx::query_scalar(
        "UPDATE features f SET consents = f.consents || x.patch, update_time = now()
           FROM (SELECT u.c, jsonb_object_agg(u.k, jsonb_build_object('granted', u.g, 'time', u.tt)) AS patch
                   FROM unnest($2::uuid[], $3::text[], $4::bool[], $5::text[], $6::timestamptz[])
                        AS u (c, k, g, tt, t)
                   JOIN features g ON g.tenant_id = $1 AND g.customer_id = u.c
                  WHERE g.consents -> u.k IS NULL OR (g.consents -> u.k ->> 'time')::timestamptz <= u.t
                  GROUP BY u.c) x
          WHERE f.tenant_id = $1 AND f.customer_id = x.c
         RETURNING f.customer_id",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&keys)
    .bind(&granted)
    .bind(&texts)
    .bind(&times)
    .fetch_all(conn)
    .await
}

/// One interaction as the service keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub customer_id: Uuid,
    pub interaction_id: Uuid,
    pub kind: String,
    pub custom: bool,
    pub occur_time: DateTime<Utc>,
    pub amount: Option<Decimal>,
    pub margin: Option<Decimal>,
    pub csat: Option<i32>,
    pub nps: Option<i32>,
    pub campaign_id: Option<Uuid>,
    pub open: bool,
}

/// The latest of a kind of answer among rows: (value, time, interaction).
const LATEST: &str = "(array_agg({v} ORDER BY occur_time DESC, interaction_id DESC)
                           FILTER (WHERE type = 'survey_response' AND {f} IS NOT NULL))[1]";

/// Stores interactions and adds the new ones (not those stored before: a
/// redelivered event changes nothing) to their customers' features.
/// Returns the customers whose features changed, each with whether a
/// purchase was among its new interactions.
pub async fn record_interactions(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[EventRow],
) -> Result<Vec<(Uuid, bool)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut customs: Vec<&str> = rows
        .iter()
        .filter(|r| r.custom)
        .map(|r| r.kind.as_str())
        .collect();
    customs.sort_unstable();
    customs.dedup();
    if !customs.is_empty() {
        sqlx::query(
            "INSERT INTO custom_types (tenant_id, type) SELECT $1, t FROM unnest($2::text[]) AS t
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&customs)
        .execute(&mut *conn)
        .await?;
    }
    let latest = |v: &str, f: &str| LATEST.replace("{v}", v).replace("{f}", f);
    let newer = |what: &str| {
        format!(
            "EXCLUDED.{what}_time IS NOT NULL AND (f.{what}_time IS NULL
                 OR (EXCLUDED.{what}_time, EXCLUDED.{what}_interaction)
                    > (f.{what}_time, coalesce(f.{what}_interaction, '00000000-0000-0000-0000-000000000000')))"
        )
    };
    // The batch's new interactions are aggregated per customer and added to
    // the features by upsert: one probe of the primary key per customer,
    // whatever the statistics say about the tenant (a join would be planned
    // on estimates, and a fresh tenant's are a row or so).
    let sql = format!(
        "WITH input AS (
             SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[], $6::numeric[],
                                  $7::numeric[], $8::int[], $9::int[], $10::uuid[], $11::bool[])
                 AS t (customer_id, interaction_id, type, occur_time, amount, margin, csat, nps, campaign_id, open)),
         ins AS (
             INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount, margin,
                                 csat, nps, campaign_id, open)
             SELECT $1, customer_id, interaction_id, type, occur_time, amount, margin, csat, nps, campaign_id, open
               FROM input ORDER BY customer_id, interaction_id
             ON CONFLICT (tenant_id, customer_id, interaction_id) DO NOTHING
             RETURNING customer_id, interaction_id, type, occur_time, amount, csat, nps, campaign_id, open),
         a AS (
             SELECT customer_id,
                    count(*) FILTER (WHERE type = 'purchase') AS purchases,
                    min(occur_time) FILTER (WHERE type = 'purchase') AS first_purchase,
                    max(occur_time) FILTER (WHERE type = 'purchase') AS last_purchase,
                    sum(amount) FILTER (WHERE type = 'purchase') AS monetary,
                    count(amount) FILTER (WHERE type = 'purchase') AS priced,
                    count(*) FILTER (WHERE type = ANY($12)) AS contacts,
                    max(occur_time) FILTER (WHERE type = ANY($12)) AS last_contact,
                    count(*) FILTER (WHERE type = 'service_request' AND open) AS open_requests,
                    count(*) FILTER (WHERE type = 'complaint') AS complaints,
                    count(*) FILTER (WHERE type = 'complaint' AND open) AS open_complaints,
                    count(*) FILTER (WHERE type = ANY($13)) AS responses,
                    {csat} AS csat, {csat_time} AS csat_time, {csat_id} AS csat_id,
                    {nps} AS nps, {nps_time} AS nps_time, {nps_id} AS nps_id,
                    -- Campaigns sent to or responded to for the first time
                    -- (the statement sees the events stored before it).
                    count(DISTINCT i.campaign_id) FILTER (WHERE i.type = 'campaign_sent' AND NOT EXISTS (
                        SELECT 1 FROM events e WHERE e.tenant_id = $1 AND e.customer_id = i.customer_id
                           AND e.campaign_id = i.campaign_id AND e.type = 'campaign_sent')) AS sent,
                    count(DISTINCT i.campaign_id)
                        FILTER (WHERE i.type IN ('campaign_clicked', 'campaign_converted') AND NOT EXISTS (
                        SELECT 1 FROM events e WHERE e.tenant_id = $1 AND e.customer_id = i.customer_id
                           AND e.campaign_id = i.campaign_id
                           AND e.type IN ('campaign_clicked', 'campaign_converted'))) AS responded
               FROM ins i GROUP BY customer_id)
         INSERT INTO features AS f (
             tenant_id, customer_id, purchases, first_purchase, last_purchase, monetary, priced_purchases,
             avg_order_value, contacts, last_contact, open_service_requests, complaints, open_complaints,
             campaign_responses, csat, csat_time, csat_interaction, nps, nps_time, nps_interaction,
             campaigns_sent, campaigns_responded, campaign_response_rate)
         SELECT $1, customer_id, purchases, first_purchase, last_purchase,
                CASE WHEN purchases > 0 THEN coalesce(monetary, 0) END, priced,
                CASE WHEN priced > 0 THEN trim_scale(round(monetary / priced, 9)) END,
                contacts, last_contact, open_requests, complaints, open_complaints, responses,
                csat, csat_time, csat_id, nps, nps_time, nps_id, sent, responded,
                CASE WHEN sent > 0 THEN trim_scale(round(least(1, responded::numeric / sent), 9)) END
           FROM a ORDER BY customer_id
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             purchases = f.purchases + EXCLUDED.purchases,
             first_purchase = least(f.first_purchase, EXCLUDED.first_purchase),
             last_purchase = greatest(f.last_purchase, EXCLUDED.last_purchase),
             monetary = CASE WHEN f.purchases + EXCLUDED.purchases > 0
                             THEN coalesce(f.monetary, 0) + coalesce(EXCLUDED.monetary, 0) END,
             priced_purchases = f.priced_purchases + EXCLUDED.priced_purchases,
             avg_order_value = CASE WHEN f.priced_purchases + EXCLUDED.priced_purchases > 0
                 THEN trim_scale(round((coalesce(f.monetary, 0) + coalesce(EXCLUDED.monetary, 0))
                                       / (f.priced_purchases + EXCLUDED.priced_purchases), 9)) END,
             contacts = f.contacts + EXCLUDED.contacts,
             last_contact = greatest(f.last_contact, EXCLUDED.last_contact),
             open_service_requests = f.open_service_requests + EXCLUDED.open_service_requests,
             complaints = f.complaints + EXCLUDED.complaints,
             open_complaints = f.open_complaints + EXCLUDED.open_complaints,
             campaign_responses = f.campaign_responses + EXCLUDED.campaign_responses,
             csat = CASE WHEN {csat_newer} THEN EXCLUDED.csat ELSE f.csat END,
             csat_time = CASE WHEN {csat_newer} THEN EXCLUDED.csat_time ELSE f.csat_time END,
             csat_interaction = CASE WHEN {csat_newer} THEN EXCLUDED.csat_interaction ELSE f.csat_interaction END,
             nps = CASE WHEN {nps_newer} THEN EXCLUDED.nps ELSE f.nps END,
             nps_time = CASE WHEN {nps_newer} THEN EXCLUDED.nps_time ELSE f.nps_time END,
             nps_interaction = CASE WHEN {nps_newer} THEN EXCLUDED.nps_interaction ELSE f.nps_interaction END,
             campaigns_sent = f.campaigns_sent + EXCLUDED.campaigns_sent,
             campaigns_responded = f.campaigns_responded + EXCLUDED.campaigns_responded,
             campaign_response_rate = CASE WHEN f.campaigns_sent + EXCLUDED.campaigns_sent > 0
                 THEN trim_scale(round(least(1, (f.campaigns_responded + EXCLUDED.campaigns_responded)::numeric
                                                / (f.campaigns_sent + EXCLUDED.campaigns_sent)), 9))
                 ELSE f.campaign_response_rate END,
             update_time = now()
         RETURNING f.customer_id",
        csat = latest("csat", "csat"),
        csat_time = latest("occur_time", "csat"),
        csat_id = latest("interaction_id", "csat"),
        nps = latest("nps", "nps"),
        nps_time = latest("occur_time", "nps"),
        nps_id = latest("interaction_id", "nps"),
        csat_newer = newer("csat"),
        nps_newer = newer("nps"),
    );
    let customers: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.interaction_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.occur_time).collect();
    let amounts: Vec<Option<Decimal>> = rows.iter().map(|r| r.amount).collect();
    let margins: Vec<Option<Decimal>> = rows.iter().map(|r| r.margin).collect();
    let csats: Vec<Option<i32>> = rows.iter().map(|r| r.csat).collect();
    let npss: Vec<Option<i32>> = rows.iter().map(|r| r.nps).collect();
    let campaigns: Vec<Option<Uuid>> = rows.iter().map(|r| r.campaign_id).collect();
    let open: Vec<bool> = rows.iter().map(|r| r.open).collect();
    let changed: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(&customers)
        .bind(&ids)
        .bind(&kinds)
        .bind(&times)
        .bind(&amounts)
        .bind(&margins)
        .bind(&csats)
        .bind(&npss)
        .bind(&campaigns)
        .bind(&open)
        .bind(&CONTACT_TYPES[..])
        .bind(&RESPONSE_TYPES[..])
        .fetch_all(conn)
        .await?;
    // Whether a purchase was among a customer's interactions of the batch
    // (a purchase redelivered beside a new interaction counts too: it only
    // asks for a rescoring that changes nothing).
    let bought: std::collections::HashSet<Uuid> = rows
        .iter()
        .filter(|r| r.kind == "purchase")
        .map(|r| r.customer_id)
        .collect();
    Ok(changed
        .into_iter()
        .map(|c| (c, bought.contains(&c)))
        .collect())
}

/// Sets the open flag of service requests and complaints (the last given
/// per interaction wins) and moves their customers' open counts by the
/// difference. Returns the customers whose features changed.
pub async fn set_open_many(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, bool)],
) -> Result<Vec<Uuid>> {
    let mut last: HashMap<Uuid, bool> = HashMap::new();
    for (i, open) in rows {
        last.insert(*i, *open);
    }
    if last.is_empty() {
        return Ok(Vec::new());
    }
    let mut list: Vec<(Uuid, bool)> = last.into_iter().collect();
    list.sort_unstable();
    let ids: Vec<Uuid> = list.iter().map(|r| r.0).collect();
    let open: Vec<bool> = list.iter().map(|r| r.1).collect();
    sqlx::query_scalar(
        "WITH ch AS (
             UPDATE events e SET open = i.open
               FROM unnest($2::uuid[], $3::bool[]) AS i (interaction_id, open)
              WHERE e.tenant_id = $1 AND e.interaction_id = i.interaction_id AND e.open IS DISTINCT FROM i.open
             RETURNING e.customer_id, e.type, e.open),
         d AS (
             SELECT customer_id,
                    coalesce(sum(CASE WHEN open THEN 1 ELSE -1 END) FILTER (WHERE type = 'service_request'), 0) AS requests,
                    coalesce(sum(CASE WHEN open THEN 1 ELSE -1 END) FILTER (WHERE type = 'complaint'), 0) AS complaints
               FROM ch GROUP BY customer_id),
         upd AS (
             UPDATE features f SET open_service_requests = f.open_service_requests + d.requests,
                    open_complaints = f.open_complaints + d.complaints, update_time = now()
               FROM d WHERE f.tenant_id = $1 AND f.customer_id = d.customer_id
                        AND (d.requests <> 0 OR d.complaints <> 0)
             RETURNING f.customer_id)
         SELECT customer_id FROM upd",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&open)
    .fetch_all(conn)
    .await
}

/// Recomputes the interaction columns of customers' features from all
/// their events (after interactions moved between customers, or a customer
/// came back). Returns the customers that have features.
pub async fn recompute_summaries(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
) -> Result<Vec<Uuid>> {
    if customers.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = customers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let latest = |v: &str, f: &str| {
        format!(
            "(array_agg(e.{v} ORDER BY e.occur_time DESC, e.interaction_id DESC)
                  FILTER (WHERE e.type = 'survey_response' AND e.{f} IS NOT NULL))[1]"
        )
    };
    let sql = format!(
        "UPDATE features f SET
             first_purchase = a.first_purchase,
             last_purchase = a.last_purchase,
             purchases = a.purchases,
             monetary = CASE WHEN a.purchases > 0 THEN coalesce(a.monetary, 0) END,
             priced_purchases = a.priced,
             avg_order_value = CASE WHEN a.priced > 0 THEN trim_scale(round(a.monetary / a.priced, 9)) END,
             contacts = a.contacts,
             last_contact = a.last_contact,
             open_service_requests = a.open_requests,
             complaints = a.complaints,
             open_complaints = a.open_complaints,
             campaign_responses = a.responses,
             csat = a.csat, csat_time = a.csat_time, csat_interaction = a.csat_id,
             nps = a.nps, nps_time = a.nps_time, nps_interaction = a.nps_id,
             campaigns_sent = a.sent,
             campaigns_responded = a.responded,
             campaign_response_rate = CASE WHEN a.sent > 0
                 THEN trim_scale(round(least(1, a.responded::numeric / a.sent), 9)) END,
             update_time = now()
         FROM (
             SELECT c.customer_id,
                 min(e.occur_time) FILTER (WHERE e.type = 'purchase') AS first_purchase,
                 max(e.occur_time) FILTER (WHERE e.type = 'purchase') AS last_purchase,
                 count(*) FILTER (WHERE e.type = 'purchase') AS purchases,
                 sum(e.amount) FILTER (WHERE e.type = 'purchase') AS monetary,
                 count(e.amount) FILTER (WHERE e.type = 'purchase') AS priced,
                 count(*) FILTER (WHERE e.type = ANY($3)) AS contacts,
                 max(e.occur_time) FILTER (WHERE e.type = ANY($3)) AS last_contact,
                 count(*) FILTER (WHERE e.type = 'service_request' AND e.open) AS open_requests,
                 count(*) FILTER (WHERE e.type = 'complaint') AS complaints,
                 count(*) FILTER (WHERE e.type = 'complaint' AND e.open) AS open_complaints,
                 count(*) FILTER (WHERE e.type = ANY($4)) AS responses,
                 {csat} AS csat, {csat_time} AS csat_time, {csat_id} AS csat_id,
                 {nps} AS nps, {nps_time} AS nps_time, {nps_id} AS nps_id,
                 count(DISTINCT e.campaign_id) FILTER (WHERE e.type = 'campaign_sent') AS sent,
                 count(DISTINCT e.campaign_id)
                     FILTER (WHERE e.type IN ('campaign_clicked', 'campaign_converted')) AS responded
             FROM unnest($2::uuid[]) AS c (customer_id)
             LEFT JOIN events e ON e.tenant_id = $1 AND e.customer_id = c.customer_id
             GROUP BY c.customer_id
         ) a
         WHERE f.tenant_id = $1 AND f.customer_id = a.customer_id
         RETURNING f.customer_id",
        csat = latest("csat", "csat"),
        csat_time = latest("occur_time", "csat"),
        csat_id = latest("interaction_id", "csat"),
        nps = latest("nps", "nps"),
        nps_time = latest("occur_time", "nps"),
        nps_id = latest("interaction_id", "nps"),
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(&ids)
        .bind(&CONTACT_TYPES[..])
        .bind(&RESPONSE_TYPES[..])
        .fetch_all(conn)
        .await
}

/// Writes (or, with the default, clears) customers' valuation columns; the
/// last given per customer wins. Returns the customers whose values changed.
pub async fn set_values(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, ValueFacts)],
) -> Result<Vec<Uuid>> {
    let mut last: HashMap<Uuid, &ValueFacts> = HashMap::new();
    for (c, v) in rows {
        last.insert(*c, v);
    }
    if last.is_empty() {
        return Ok(Vec::new());
    }
    let mut list: Vec<(Uuid, &ValueFacts)> = last.into_iter().collect();
    list.sort_by_key(|r| r.0);
    let ids: Vec<Uuid> = list.iter().map(|r| r.0).collect();
    let clv: Vec<Option<Decimal>> = list.iter().map(|r| r.1.clv).collect();
    let p: Vec<Option<Decimal>> = list.iter().map(|r| r.1.p_alive).collect();
    let e: Vec<Option<Decimal>> = list.iter().map(|r| r.1.expected_purchases).collect();
    let t: Vec<Option<&str>> = list.iter().map(|r| r.1.value_tier.as_deref()).collect();
    let net: Vec<Option<Decimal>> = list.iter().map(|r| r.1.net_clv).collect();
    let cost: Vec<Option<Decimal>> = list.iter().map(|r| r.1.cost_to_serve).collect();
    let profit: Vec<Option<Decimal>> = list.iter().map(|r| r.1.net_profit).collect();
    let decile: Vec<Option<i16>> = list.iter().map(|r| r.1.profit_decile).collect();
    sqlx::query_scalar(
        "UPDATE features f SET clv = x.clv, p_alive = x.p, expected_purchases = x.e, value_tier = x.t,
                net_clv = x.net, cost_to_serve = x.cost, net_profit = x.profit,
                profit_decile = x.decile, update_time = now()
           FROM unnest($2::uuid[], $3::numeric[], $4::numeric[], $5::numeric[], $6::text[],
                       $7::numeric[], $8::numeric[], $9::numeric[], $10::int2[])
                AS x (c, clv, p, e, t, net, cost, profit, decile)
          WHERE f.tenant_id = $1 AND f.customer_id = x.c
            AND (f.clv, f.p_alive, f.expected_purchases, f.value_tier, f.net_clv, f.cost_to_serve,
                 f.net_profit, f.profit_decile)
                IS DISTINCT FROM (x.clv, x.p, x.e, x.t, x.net, x.cost, x.profit, x.decile)
         RETURNING f.customer_id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&clv)
    .bind(&p)
    .bind(&e)
    .bind(&t)
    .bind(&net)
    .bind(&cost)
    .bind(&profit)
    .bind(&decile)
    .fetch_all(conn)
    .await
}

/// Scores customers against the tenant's stored RFM cut-offs and stores the
/// scores that changed.
pub async fn rfm_some(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
    state: &RfmState,
    now: DateTime<Utc>,
) -> Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    // (customer, last purchase, purchases, monetary)
    type Row = (Uuid, Option<DateTime<Utc>>, i64, Option<Decimal>);
    // (customer, (R, F, M) when the customer has bought)
    type Scored = (Uuid, Option<(i32, i32, i32)>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT customer_id, last_purchase, purchases, monetary FROM features
          WHERE tenant_id = $1 AND customer_id = ANY($2) ORDER BY customer_id",
    )
    .bind(tenant)
    .bind(customers)
    .fetch_all(&mut *conn)
    .await?;
    let scored: Vec<Scored> = rows
        .into_iter()
        .map(|(c, last, purchases, monetary)| {
            let scores = match last {
                Some(l) if purchases > 0 => {
                    let rd = (now - l).num_seconds().div_euclid(86_400) as i32;
                    Some((
                        rfm::score_against(&rd, &state.rfm_recency_cutoffs, |a, b| a < b),
                        rfm::score_against(&purchases, &state.rfm_frequency_cutoffs, |a, b| a > b),
                        rfm::score_against(
                            &monetary.unwrap_or_default(),
                            &state.rfm_monetary_cutoffs,
                            |a, b| a > b,
                        ),
                    ))
                }
                _ => None,
            };
            (c, scores)
        })
        .collect();
    let ids: Vec<Uuid> = scored.iter().map(|s| s.0).collect();
    let r: Vec<Option<i32>> = scored.iter().map(|s| s.1.map(|x| x.0)).collect();
    let f: Vec<Option<i32>> = scored.iter().map(|s| s.1.map(|x| x.1)).collect();
    let m: Vec<Option<i32>> = scored.iter().map(|s| s.1.map(|x| x.2)).collect();
    let names: Vec<Option<&'static str>> = scored
        .iter()
        .map(|s| {
            s.1.map(|(r, f, m)| rfm::name(rfm::segment(r, rfm::fm(f, m))))
        })
        .collect();
    sqlx::query(
        "UPDATE features f SET rfm_r = x.r, rfm_f = x.f, rfm_m = x.m, rfm_fm = (x.f + x.m + 1) / 2,
                rfm_segment = x.n
           FROM unnest($2::uuid[], $3::int[], $4::int[], $5::int[], $6::text[]) AS x (c, r, f, m, n)
          WHERE f.tenant_id = $1 AND f.customer_id = x.c
            AND (f.rfm_r, f.rfm_f, f.rfm_m) IS DISTINCT FROM (x.r, x.f, x.m)",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&r)
    .bind(&f)
    .bind(&m)
    .bind(&names)
    .execute(conn)
    .await?;
    Ok(())
}
