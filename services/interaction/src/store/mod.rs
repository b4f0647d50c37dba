//! Every SQL statement of the interaction service (schema `interaction`).
//! Every statement names the tenant; nothing reads across tenants except the
//! feed consumer's, which acts on the tenant each profile event names.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::interaction::v1::InteractionEvent;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::btyd::Purchase;
use crate::domain::campaign::{AttributedPurchase, CampaignInput, ResponseCounts};
use crate::domain::model::{
    StoredCampaign, StoredInteraction, line_items_from_json, line_items_json,
};
use crate::domain::money::{Amount, decimal_to_nanos, nanos_to_decimal};
use crate::domain::summary::SummaryRow;

macro_rules! interaction_cols {
    () => {
        "interaction_id, customer_id, original_customer_id, type AS kind, custom_type, occur_time, \
         channel, initiator, currency, amount::text AS amount, margin::text AS margin, line_items, \
         campaign_id, agent_id, csat, nps, survey_comment, status, resolve_time, attributes, \
         idempotency_key, create_time, update_time, version"
    };
}

macro_rules! campaign_cols {
    () => {
        "campaign_id, name, description, channel, target_segment_id, start_time, end_time, \
         create_time, update_time, version"
    };
}

#[derive(sqlx::FromRow)]
struct InteractionRow {
    interaction_id: Uuid,
    customer_id: Uuid,
    original_customer_id: Uuid,
    kind: i16,
    custom_type: Option<String>,
    occur_time: DateTime<Utc>,
    channel: i16,
    initiator: i16,
    currency: Option<String>,
    amount: Option<String>,
    margin: Option<String>,
    line_items: Option<serde_json::Value>,
    campaign_id: Option<Uuid>,
    agent_id: Option<String>,
    csat: Option<i16>,
    nps: Option<i16>,
    survey_comment: Option<String>,
    status: i16,
    resolve_time: Option<DateTime<Utc>>,
    attributes: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    version: i64,
}

fn amount_of(currency: &Option<String>, text: &Option<String>) -> Option<Amount> {
    Some(Amount {
        currency: currency.clone()?,
        nanos: decimal_to_nanos(text.as_deref()?)?,
    })
}

impl From<InteractionRow> for StoredInteraction {
    fn from(r: InteractionRow) -> Self {
        StoredInteraction {
            interaction_id: r.interaction_id,
            customer_id: r.customer_id,
            original_customer_id: r.original_customer_id,
            kind: i32::from(r.kind),
            amount: amount_of(&r.currency, &r.amount),
            margin: amount_of(&r.currency, &r.margin),
            custom_type: r.custom_type,
            occur_time: r.occur_time,
            channel: i32::from(r.channel),
            initiator: i32::from(r.initiator),
            line_items: line_items_from_json(r.line_items.as_ref()),
            campaign_id: r.campaign_id,
            agent_id: r.agent_id,
            csat: r.csat.map(i32::from),
            nps: r.nps.map(i32::from),
            comment: r.survey_comment,
            status: i32::from(r.status),
            resolve_time: r.resolve_time,
            attributes: r.attributes,
            idempotency_key: r.idempotency_key,
            create_time: r.create_time,
            update_time: r.update_time,
            version: r.version,
        }
    }
}

// ---------------------------------------------------------------------------
// Customers known from the profile service.

/// What the service knows of one customer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCustomer {
    /// The customer the id resolves to through merges in force (itself when
    /// not merged).
    pub current: Uuid,
    /// The id, or the customer it resolves to, was erased.
    pub erased: bool,
}

/// Resolves `ids` through the merges in force. Ids the service has never
/// heard of are absent from the answer.
pub async fn known_customers(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, KnownCustomer>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // Most customers were never merged: one index probe each answers for
    // them, and only the merged ones have their chains followed.
    let direct: Vec<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(
        // One key lookup per id (a lateral subquery the planner cannot
        // flatten), whatever the statistics say about a fast-growing tenant.
        "SELECT c.customer_id, c.merged_into, c.erased FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT customer_id, merged_into, erased FROM customers
                                WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut known: HashMap<Uuid, KnownCustomer> = HashMap::with_capacity(direct.len());
    let mut merged: Vec<Uuid> = Vec::new();
    for (id, merged_into, erased) in direct {
        match merged_into {
            None => {
                known.insert(
                    id,
                    KnownCustomer {
                        current: id,
                        erased,
                    },
                );
            }
            Some(_) => merged.push(id),
        }
    }
    if merged.is_empty() {
        return Ok(known);
    }
    let rows: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(
        "WITH RECURSIVE chain (start, cur, erased, depth) AS (
             SELECT customer_id, customer_id, erased, 0
             FROM customers WHERE tenant_id = $1 AND customer_id = ANY($2)
           UNION ALL
             SELECT ch.start, c.customer_id, c.erased, ch.depth + 1
             FROM chain ch
             JOIN customers p ON p.tenant_id = $1 AND p.customer_id = ch.cur
             JOIN customers c ON c.tenant_id = $1 AND c.customer_id = p.merged_into
             WHERE ch.depth < 64
         )
         SELECT start, (array_agg(cur ORDER BY depth DESC))[1], bool_or(erased)
         FROM chain GROUP BY start",
    )
    .bind(tenant)
    .bind(&merged)
    .fetch_all(conn)
    .await?;
    known.extend(
        rows.into_iter()
            .map(|(start, current, erased)| (start, KnownCustomer { current, erased })),
    );
    Ok(known)
}

/// Records that the profile service knows these customers.
pub async fn remember_customers(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id)
         SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Taken (shared) by every recording transaction of the tenant before it
/// reads where customers resolve to; taken (exclusive) while a merge, unmerge
/// or erasure of the tenant is applied. So a recording never files an
/// interaction under a customer that a concurrent merge just emptied, and
/// tenants never wait on each other's merges.
pub async fn lock_customers_shared(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(hashtext('interaction.customers'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// See [`lock_customers_shared`].
pub async fn lock_customers_exclusive(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('interaction.customers'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// Customers created in the profile service.
pub async fn customers_created(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
) -> Result<(), sqlx::Error> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id)
         SELECT $1, c FROM unnest($2::uuid[]) AS c ORDER BY c ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(customers)
    .execute(conn)
    .await?;
    Ok(())
}

/// `merged` was merged into `survivor`: re-keys its interactions. Returns the
/// ids of the interactions moved.
pub async fn merge_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
    survivor: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, merged_into) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET merged_into = $3, update_time = now()",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .execute(&mut *conn)
    .await?;
    customers_created(&mut *conn, tenant, &[survivor]).await?;
    sqlx::query_scalar(
        "UPDATE interactions SET customer_id = $3, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND customer_id = $2
         RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .fetch_all(conn)
    .await
}

/// `restored` was unmerged: every interaction first recorded under it, or
/// under a customer still merged into it, goes back to it. Returns the ids
/// of the interactions moved.
pub async fn unmerge_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    restored: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id) VALUES ($1, $2)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET merged_into = NULL, update_time = now()",
    )
    .bind(tenant)
    .bind(restored)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "WITH RECURSIVE family (id, depth) AS (
             SELECT $2::uuid, 0
           UNION ALL
             SELECT c.customer_id, f.depth + 1 FROM customers c
             JOIN family f ON c.tenant_id = $1 AND c.merged_into = f.id
             WHERE f.depth < 64
         )
         UPDATE interactions SET customer_id = $2, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND original_customer_id IN (SELECT id FROM family)
           AND customer_id <> $2
         RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(restored)
    .fetch_all(conn)
    .await
}

/// `customer` was erased: deletes every interaction belonging to it or first
/// recorded under it, their idempotency keys, and reduces their earlier feed
/// events to `redacted` ones. Returns how many interactions were deleted.
pub async fn erase_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<usize, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, erased) VALUES ($1, $2, true)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET erased = true, update_time = now()",
    )
    .bind(tenant)
    .bind(customer)
    .execute(&mut *conn)
    .await?;
    let deleted: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "DELETE FROM interactions
         WHERE tenant_id = $1 AND (customer_id = $2 OR original_customer_id = $2)
         RETURNING interaction_id, idempotency_key",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(&mut *conn)
    .await?;
    let keys: Vec<&str> = deleted.iter().filter_map(|(_, k)| k.as_deref()).collect();
    if !keys.is_empty() {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = ANY($2)",
        )
        .bind(tenant)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    }
    let ids: Vec<String> = deleted.iter().map(|(id, _)| id.to_string()).collect();
    // Every earlier event about these interactions, typed or from before
    // typed events (its JSON payload is cleared too), becomes a `redacted`
    // event that keeps only the interaction id.
    feed::redact_aggregates::<InteractionEvent>(
        conn,
        tenant,
        "interaction",
        &ids,
        RedactionReason::Erased,
    )
    .await?;
    Ok(deleted.len())
}

// ---------------------------------------------------------------------------
// Recording.

/// The campaigns among `ids` that exist for the tenant.
pub async fn existing_campaigns(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT campaign_id FROM campaigns WHERE tenant_id = $1 AND campaign_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// Makes sure the partition of `year` exists.
pub async fn ensure_partition(pool: &PgPool, year: i32) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT ensure_interaction_partition($1)")
        .bind(year)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A key to claim for a new interaction.
pub struct KeyClaim<'a> {
    /// The idempotency key.
    pub key: &'a str,
    /// The interaction it will name.
    pub interaction_id: Uuid,
    /// Its time.
    pub occur_time: DateTime<Utc>,
    /// Its content hash.
    pub hash: &'a [u8],
}

/// Claims idempotency keys (in byte order of the keys, so concurrent
/// claimers never deadlock: the rows are inserted in array order, which is
/// sorted here rather than by an `ORDER BY` that would compare under the
/// database's collation). Returns the keys claimed by this call; the others already
/// belong to an interaction (committed, or committed by a concurrent
/// transaction this one waited for).
pub async fn claim_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    claims: &[KeyClaim<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sorted: Vec<&KeyClaim<'_>> = claims.iter().collect();
    sorted.sort_unstable_by_key(|c| c.key);
    let keys: Vec<&str> = sorted.iter().map(|c| c.key).collect();
    let ids: Vec<Uuid> = sorted.iter().map(|c| c.interaction_id).collect();
    let times: Vec<DateTime<Utc>> = sorted.iter().map(|c| c.occur_time).collect();
    let hashes: Vec<&[u8]> = sorted.iter().map(|c| c.hash).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, idempotency_key, interaction_id, occur_time, content_hash)
         SELECT $1, k, i, t, h FROM unnest($2::text[], $3::uuid[], $4::timestamptz[], $5::bytea[]) AS u (k, i, t, h)
         ON CONFLICT DO NOTHING
         RETURNING idempotency_key",
    )
    .bind(tenant)
    .bind(&keys)
    .bind(&ids)
    .bind(&times)
    .bind(&hashes)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// An interaction an idempotency key already names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedKey {
    /// The key.
    pub idempotency_key: String,
    /// The interaction.
    pub interaction_id: Uuid,
    /// Its time.
    pub occur_time: DateTime<Utc>,
    /// Its content hash.
    pub content_hash: Vec<u8>,
}

/// The interactions `keys` already name.
pub async fn claimed_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    keys: &[&str],
) -> Result<HashMap<String, ClaimedKey>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<ClaimedKey> = sqlx::query_as(
        "SELECT c.idempotency_key, c.interaction_id, c.occur_time, c.content_hash
           FROM unnest($2::text[]) AS k (key)
           CROSS JOIN LATERAL (SELECT idempotency_key, interaction_id, occur_time, content_hash
                                 FROM idempotency_keys
                                WHERE tenant_id = $1 AND idempotency_key = k.key LIMIT 1) c",
    )
    .bind(tenant)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.idempotency_key.clone(), r))
        .collect())
}

/// The columns [`copy_text`] writes, in order.
pub const COPY_STATEMENT: &str = "COPY interactions (tenant_id, interaction_id, occur_time, customer_id, \
     original_customer_id, type, custom_type, channel, initiator, currency, amount, margin, line_items, \
     campaign_id, agent_id, csat, nps, survey_comment, status, resolve_time, attributes, idempotency_key, \
     create_time, update_time, version) FROM STDIN";

fn copy_escape(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

fn copy_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"\\N"),
        Some(s) => copy_escape(out, s),
    }
}

fn copy_time(t: DateTime<Utc>) -> String {
    // RFC 3339 with microseconds, which COPY reads as timestamptz; chrono's
    // dedicated writer is several times faster than a format string.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends `rows` to `out` in COPY text format (see [`COPY_STATEMENT`]).
pub fn copy_text(out: &mut Vec<u8>, tenant: Uuid, rows: &[StoredInteraction]) {
    let mut s = String::with_capacity(512);
    for r in rows {
        s.clear();
        let currency = r.amount.as_ref().map(|a| a.currency.as_str());
        let _ = write!(
            s,
            "{tenant}\t{}\t{}\t{}\t{}\t{}\t",
            r.interaction_id,
            copy_time(r.occur_time),
            r.customer_id,
            r.original_customer_id,
            r.kind
        );
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, r.custom_type.as_deref());
        s.clear();
        let _ = write!(s, "\t{}\t{}\t", r.channel, r.initiator);
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, currency);
        out.push(b'\t');
        copy_opt(
            out,
            r.amount
                .as_ref()
                .map(|a| nanos_to_decimal(a.nanos))
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(
            out,
            r.margin
                .as_ref()
                .map(|a| nanos_to_decimal(a.nanos))
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(
            out,
            line_items_json(&r.line_items)
                .map(|v| v.to_string())
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(out, r.campaign_id.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.agent_id.as_deref());
        out.push(b'\t');
        copy_opt(out, r.csat.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.nps.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.comment.as_deref());
        s.clear();
        let _ = write!(s, "\t{}\t", r.status);
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, r.resolve_time.map(copy_time).as_deref());
        out.push(b'\t');
        copy_opt(out, r.attributes.as_ref().map(|v| v.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.idempotency_key.as_deref());
        s.clear();
        let _ = writeln!(
            s,
            "\t{}\t{}\t{}",
            copy_time(r.create_time),
            copy_time(r.update_time),
            r.version
        );
        out.extend_from_slice(s.as_bytes());
    }
}

/// Writes interactions with COPY.
pub async fn copy_interactions(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[StoredInteraction],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut buf = Vec::with_capacity(rows.len() * 400);
    copy_text(&mut buf, tenant, rows);
    let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
    copy.send(buf).await?;
    copy.finish().await
}

// ---------------------------------------------------------------------------
// Reading interactions.

/// One interaction of the tenant by id.
pub async fn get_interaction(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// One interaction of the tenant by id and time (the time narrows the
/// search to one partition).
pub async fn get_interaction_at(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    occur_time: DateTime<Utc>,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2 AND occur_time = $3"
    ))
    .bind(tenant)
    .bind(id)
    .bind(occur_time)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Filters of a timeline.
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// Only these types (empty: all).
    pub types: Vec<i16>,
    /// Only these custom types for CUSTOM interactions (empty: all).
    pub custom_types: Vec<String>,
    /// Only these channels (empty: all).
    pub channels: Vec<i16>,
    /// occur_time >= this.
    pub start: Option<DateTime<Utc>>,
    /// occur_time < this.
    pub end: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

/// A page of a customer's timeline after `after` (exclusive), in the
/// filter's order.
pub async fn list_interactions(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    f: &TimelineFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<StoredInteraction>, sqlx::Error> {
    const NEWEST: &str = concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2
           AND (cardinality($3::smallint[]) = 0 OR type = ANY($3))
           AND (cardinality($4::text[]) = 0 OR type <> 17 OR custom_type = ANY($4))
           AND (cardinality($5::smallint[]) = 0 OR channel = ANY($5))
           AND ($6::timestamptz IS NULL OR occur_time >= $6)
           AND ($7::timestamptz IS NULL OR occur_time < $7)
           AND ($8::timestamptz IS NULL OR (occur_time, interaction_id) < ($8, $9::uuid))
         ORDER BY occur_time DESC, interaction_id DESC LIMIT $10"
    );
    const OLDEST: &str = concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2
           AND (cardinality($3::smallint[]) = 0 OR type = ANY($3))
           AND (cardinality($4::text[]) = 0 OR type <> 17 OR custom_type = ANY($4))
           AND (cardinality($5::smallint[]) = 0 OR channel = ANY($5))
           AND ($6::timestamptz IS NULL OR occur_time >= $6)
           AND ($7::timestamptz IS NULL OR occur_time < $7)
           AND ($8::timestamptz IS NULL OR (occur_time, interaction_id) > ($8, $9::uuid))
         ORDER BY occur_time ASC, interaction_id ASC LIMIT $10"
    );
    let rows: Vec<InteractionRow> = sqlx::query_as(if f.oldest_first { OLDEST } else { NEWEST })
        .bind(tenant)
        .bind(customer)
        .bind(&f.types)
        .bind(&f.custom_types)
        .bind(&f.channels)
        .bind(f.start)
        .bind(f.end)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Locks one interaction for an update.
pub async fn lock_interaction(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Writes a service request's new status, resolve time and agent.
pub async fn update_status(
    conn: &mut PgConnection,
    tenant: Uuid,
    current: &StoredInteraction,
    status: i32,
    resolve_time: Option<DateTime<Utc>>,
    agent_id: Option<&str>,
) -> Result<StoredInteraction, sqlx::Error> {
    let row: InteractionRow = sqlx::query_as(concat!(
        "UPDATE interactions SET status = $4, resolve_time = $5, agent_id = $6,
                update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND interaction_id = $2 AND occur_time = $3
         RETURNING ",
        interaction_cols!()
    ))
    .bind(tenant)
    .bind(current.interaction_id)
    .bind(current.occur_time)
    .bind(status as i16)
    .bind(resolve_time)
    .bind(agent_id)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

#[derive(sqlx::FromRow)]
struct SummarySqlRow {
    interaction_id: Uuid,
    kind: i16,
    occur_time: DateTime<Utc>,
    currency: Option<String>,
    amount: Option<String>,
    margin: Option<String>,
    campaign_id: Option<Uuid>,
    status: i16,
    resolve_time: Option<DateTime<Utc>>,
    csat: Option<i16>,
    nps: Option<i16>,
}

/// What a customer's summary needs of its interactions up to `as_of`.
pub async fn summary_rows(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    let rows: Vec<SummarySqlRow> = sqlx::query_as(
        "SELECT interaction_id, type AS kind, occur_time, currency, amount::text AS amount,
                margin::text AS margin, campaign_id, status, resolve_time, csat, nps
         FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2 AND occur_time <= $3 AND type <> 17",
    )
    .bind(tenant)
    .bind(customer)
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SummaryRow {
            interaction_id: r.interaction_id,
            kind: i32::from(r.kind),
            occur_time: r.occur_time,
            amount: r.amount.as_deref().and_then(decimal_to_nanos),
            margin: r.margin.as_deref().and_then(decimal_to_nanos),
            currency: r.currency,
            campaign_id: r.campaign_id,
            status: i32::from(r.status),
            resolve_time: r.resolve_time,
            csat: r.csat.map(i32::from),
            nps: r.nps.map(i32::from),
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Export.

/// The tenant's most frequent currency among purchases before `before`.
pub async fn main_currency(
    conn: &mut PgConnection,
    tenant: Uuid,
    before: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT currency FROM interactions
         WHERE tenant_id = $1 AND type = 1 AND occur_time < $2 AND currency IS NOT NULL
         GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 1",
    )
    .bind(tenant)
    .bind(before)
    .fetch_optional(conn)
    .await
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    /// The tenant.
    pub tenant: Uuid,
    /// End of the calibration period (exclusive).
    pub calibration_end: DateTime<Utc>,
    /// End of the holdout period (exclusive), if any.
    pub holdout_end: Option<DateTime<Utc>>,
    /// The export currency.
    pub currency: String,
    /// Only these customers (current ids).
    pub customers: Option<Vec<Uuid>>,
}

#[derive(sqlx::FromRow)]
struct ExportRow {
    customer_id: Uuid,
    occur_time: DateTime<Utc>,
    amount: Option<String>,
    margin: Option<String>,
}

/// Streams the purchases an export needs, in (customer id, time) order:
/// every purchase before the holdout end (or the calibration end), with its
/// amount and margin when it is in the export currency. Run it in a
/// repeatable-read transaction for one consistent snapshot.
pub fn export_purchases<'a>(
    conn: &'a mut PgConnection,
    q: &'a ExportQuery,
) -> BoxStream<'a, Result<(Uuid, Purchase), sqlx::Error>> {
    sqlx::query_as::<_, ExportRow>(
        "SELECT customer_id, occur_time,
                CASE WHEN currency = $3 THEN amount::text END AS amount,
                CASE WHEN currency = $3 THEN margin::text END AS margin
         FROM interactions
         WHERE tenant_id = $1 AND type = 1 AND occur_time < $2
           AND ($4::uuid[] IS NULL OR customer_id = ANY($4))
         ORDER BY customer_id, occur_time",
    )
    .bind(q.tenant)
    .bind(q.holdout_end.unwrap_or(q.calibration_end))
    .bind(&q.currency)
    .bind(q.customers.as_deref())
    .fetch(conn)
    .map(|r| {
        r.map(|r| {
            let amount = r.amount.as_deref().and_then(decimal_to_nanos);
            (
                r.customer_id,
                Purchase {
                    occur_time: r.occur_time,
                    currency: if amount.is_some() {
                        q.currency.clone()
                    } else {
                        String::new()
                    },
                    amount: amount.unwrap_or(0),
                    margin: r.margin.as_deref().and_then(decimal_to_nanos),
                },
            )
        })
    })
    .boxed()
}

// ---------------------------------------------------------------------------
// Campaigns.

#[derive(sqlx::FromRow)]
struct CampaignRow {
    campaign_id: Uuid,
    name: String,
    description: String,
    channel: i16,
    target_segment_id: Option<Uuid>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    version: i64,
}

impl From<CampaignRow> for StoredCampaign {
    fn from(r: CampaignRow) -> Self {
        StoredCampaign {
            campaign_id: r.campaign_id,
            name: r.name,
            description: r.description,
            channel: i32::from(r.channel),
            target_segment_id: r.target_segment_id,
            start_time: r.start_time,
            end_time: r.end_time,
            create_time: r.create_time,
            update_time: r.update_time,
            version: r.version,
        }
    }
}

/// A campaign created earlier with the same request id (within 24 hours),
/// with the hash of what it was created from.
pub async fn campaign_by_request(
    conn: &mut PgConnection,
    tenant: Uuid,
    request_id: &str,
) -> Result<Option<(StoredCampaign, Vec<u8>)>, sqlx::Error> {
    // Request ids are kept for 24 hours: older ones are released first.
    sqlx::query(
        "UPDATE campaigns SET request_id = NULL, request_hash = NULL
         WHERE tenant_id = $1 AND request_id = $2 AND create_time < now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(request_id)
    .execute(&mut *conn)
    .await?;
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        c: CampaignRow,
        request_hash: Option<Vec<u8>>,
    }
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        campaign_cols!(),
        ", request_hash FROM campaigns WHERE tenant_id = $1 AND request_id = $2"
    ))
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.c.into(), r.request_hash.unwrap_or_default())))
}

/// Inserts a campaign. Returns None when another call took the request id
/// at the same moment.
pub async fn insert_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    c: &CampaignInput,
    request: Option<(&str, &[u8])>,
) -> Result<Option<StoredCampaign>, sqlx::Error> {
    let row: Option<CampaignRow> = sqlx::query_as(concat!(
        "INSERT INTO campaigns (tenant_id, campaign_id, name, description, channel, target_segment_id,
                                start_time, end_time, request_id, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING
         RETURNING ",
        campaign_cols!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(c.channel as i16)
    .bind(c.target_segment_id)
    .bind(c.start_time)
    .bind(c.end_time)
    .bind(request.map(|r| r.0))
    .bind(request.map(|r| r.1))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// One campaign of the tenant.
pub async fn get_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Option<StoredCampaign>, sqlx::Error> {
    let sql = if for_update {
        concat!(
            "SELECT ",
            campaign_cols!(),
            " FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            campaign_cols!(),
            " FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2"
        )
    };
    let row: Option<CampaignRow> = sqlx::query_as(sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Into::into))
}

/// Writes a campaign's new fields.
pub async fn update_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    c: &CampaignInput,
) -> Result<StoredCampaign, sqlx::Error> {
    let row: CampaignRow = sqlx::query_as(concat!(
        "UPDATE campaigns SET name = $3, description = $4, channel = $5, target_segment_id = $6,
                start_time = $7, end_time = $8, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND campaign_id = $2
         RETURNING ",
        campaign_cols!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(c.channel as i16)
    .bind(c.target_segment_id)
    .bind(c.start_time)
    .bind(c.end_time)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Filters of a campaign listing.
#[derive(Debug, Clone, Default)]
pub struct CampaignFilter {
    /// Only this channel.
    pub channel: Option<i16>,
    /// Only this target segment.
    pub target_segment_id: Option<Uuid>,
    /// Only campaigns running at this time.
    pub active_time: Option<DateTime<Utc>>,
}

/// A page of the tenant's campaigns, newest first, after `after`.
pub async fn list_campaigns(
    pool: &PgPool,
    tenant: Uuid,
    f: &CampaignFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<StoredCampaign>, sqlx::Error> {
    let rows: Vec<CampaignRow> = sqlx::query_as(concat!(
        "SELECT ",
        campaign_cols!(),
        " FROM campaigns
         WHERE tenant_id = $1
           AND ($2::smallint IS NULL OR channel = $2)
           AND ($3::uuid IS NULL OR target_segment_id = $3)
           AND ($4::timestamptz IS NULL OR (start_time <= $4 AND (end_time IS NULL OR end_time > $4)))
           AND ($5::timestamptz IS NULL OR (create_time, campaign_id) < ($5, $6::uuid))
         ORDER BY create_time DESC, campaign_id DESC LIMIT $7"
    ))
    .bind(tenant)
    .bind(f.channel)
    .bind(f.target_segment_id)
    .bind(f.active_time)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Distinct customers per response type of a campaign.
pub async fn campaign_counts(
    pool: &PgPool,
    tenant: Uuid,
    campaign: Uuid,
) -> Result<ResponseCounts, sqlx::Error> {
    let rows: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT type, count(DISTINCT customer_id) FROM interactions
         WHERE tenant_id = $1 AND campaign_id = $2 AND type BETWEEN 10 AND 14
         GROUP BY type",
    )
    .bind(tenant)
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    let mut c = ResponseCounts::default();
    for (t, n) in rows {
        match t {
            10 => c.sent = n,
            11 => c.opened = n,
            12 => c.clicked = n,
            13 => c.converted = n,
            14 => c.unsubscribed = n,
            _ => {}
        }
    }
    Ok(c)
}

/// The purchases made within `window_seconds` after a click or conversion of
/// the campaign by the same customer.
pub async fn attributed_purchases(
    pool: &PgPool,
    tenant: Uuid,
    campaign: Uuid,
    window_seconds: f64,
) -> Result<Vec<AttributedPurchase>, sqlx::Error> {
    type Row = (Uuid, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.customer_id, p.currency, p.amount::text, p.margin::text
         FROM interactions p
         WHERE p.tenant_id = $1 AND p.type = 1
           AND p.customer_id IN (SELECT customer_id FROM interactions
                                 WHERE tenant_id = $1 AND campaign_id = $2 AND type IN (12, 13))
           AND EXISTS (SELECT 1 FROM interactions t
                       WHERE t.tenant_id = $1 AND t.campaign_id = $2 AND t.type IN (12, 13)
                         AND t.customer_id = p.customer_id
                         AND t.occur_time <= p.occur_time
                         AND t.occur_time >= p.occur_time - make_interval(secs => $3))",
    )
    .bind(tenant)
    .bind(campaign)
    .bind(window_seconds)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(customer_id, currency, amount, margin)| {
            Some(AttributedPurchase {
                customer_id,
                currency: currency?,
                amount: decimal_to_nanos(amount.as_deref()?)?,
                margin: margin.as_deref().and_then(decimal_to_nanos),
            })
        })
        .collect())
}
