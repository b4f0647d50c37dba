//! Every SQL statement of the profile service, and the transactions that
//! make up each operation. Pure decisions (validation, merge rules, consent,
//! scoring) come from [`crate::domain`]; every change appends its change-feed
//! event in the same transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use prost::Message;
use rapport_kit::ApiError;
use rapport_kit::convert::timestamp;
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::common::v1::{Identifier, RedactionReason};
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use rapport_proto::rapport::profile::v1::{
    self as ev, AttributeDefinition, ConsentRecord, ContactLink, Customer, DuplicateCandidate,
    ProfileEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::attributes::{AttrValue, Definition, Definitions};
use crate::domain::consent::{self as consent_rules, MergeConsent, Rec};
use crate::domain::customer::{
    self as cust, EMAIL, EXTERNAL, Ident, MAX_EMAILS, MAX_EXTERNAL, MAX_PHONES, PHONE, Profile,
    Stored, Validated,
};
use crate::domain::duplicates::{self, Evidence};
use crate::domain::merge::{self as merge_rules, Taken};
use crate::domain::normalize::Date;
use crate::error::{Error, Result, customer_not_found, precondition};

/// Who recorded what the service writes itself.
pub const SERVICE_PRINCIPAL: &str = "rapport";
/// Most contact links per organisation.
pub const MAX_LINKS_PER_ORGANIZATION: i64 = 200;
/// Most contact links per person.
pub const MAX_LINKS_PER_PERSON: i64 = 50;

macro_rules! customer_cols {
    () => {
        "customer_id, kind, status, data, merged_into, version, create_time, update_time, delete_time, stage_set_time, erase_time"
    };
}

/// A `customers` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    /// Id.
    pub customer_id: Uuid,
    /// CustomerKind number.
    pub kind: i16,
    /// active, deleted, merged or erased.
    pub status: String,
    /// The profile document.
    pub data: Json<Profile>,
    /// The survivor, when merged.
    pub merged_into: Option<Uuid>,
    /// Version (etag).
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Soft-deleted.
    pub delete_time: Option<DateTime<Utc>>,
    /// Stage last changed.
    pub stage_set_time: Option<DateTime<Utc>>,
    /// Erased.
    pub erase_time: Option<DateTime<Utc>>,
}

/// An `identifiers` row.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct IdentRow {
    /// Holder.
    pub customer_id: Uuid,
    /// EMAIL, PHONE, EXTERNAL.
    pub kind: i16,
    /// Issuing system.
    pub system: String,
    /// Value.
    pub value: String,
    /// Order within its kind.
    pub position: i32,
    /// Primary within its kind.
    pub is_primary: bool,
    /// Label.
    pub label: String,
}

impl IdentRow {
    fn ident(&self) -> Ident {
        Ident {
            kind: self.kind,
            system: self.system.clone(),
            value: self.value.clone(),
            primary: self.is_primary,
            label: self.label.clone(),
        }
    }
}

/// A `consent_records` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsentRow {
    /// Id.
    pub consent_record_id: Uuid,
    /// Recorded for.
    pub customer_id: Uuid,
    /// Held by.
    pub holder_id: Uuid,
    /// Channel number.
    pub channel: i16,
    /// Purpose number.
    pub purpose: i16,
    /// Status number.
    pub status: i16,
    /// Source.
    pub source: String,
    /// Evidence.
    pub evidence: String,
    /// Effective.
    pub effective_time: DateTime<Utc>,
    /// Recorded.
    pub record_time: DateTime<Utc>,
    /// Recorded by.
    pub recorded_by: String,
}

impl ConsentRow {
    /// The contract's record.
    pub fn to_proto(&self) -> ConsentRecord {
        ConsentRecord {
            consent_record_id: self.consent_record_id.to_string(),
            customer_id: self.customer_id.to_string(),
            channel: i32::from(self.channel),
            purpose: i32::from(self.purpose),
            status: i32::from(self.status),
            source: self.source.clone(),
            evidence: self.evidence.clone(),
            effective_time: Some(timestamp(self.effective_time)),
            record_time: Some(timestamp(self.record_time)),
            recorded_by: self.recorded_by.clone(),
        }
    }

    /// What consent decisions need.
    pub fn rec(&self) -> Rec {
        Rec {
            status: i32::from(self.status),
            effective_time: self.effective_time,
            record_time: self.record_time,
            id: self.consent_record_id,
        }
    }
}

macro_rules! consent_cols {
    () => {
        "consent_record_id, customer_id, holder_id, channel, purpose, status, source, evidence, effective_time, record_time, recorded_by"
    };
}

/// A `contact_links` row.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct LinkRow {
    /// Id.
    pub contact_link_id: Uuid,
    /// The person.
    pub person_id: Uuid,
    /// The organisation.
    pub organization_id: Uuid,
    /// ContactRole number.
    pub role: i16,
    /// Job title.
    pub job_title: String,
    /// First day.
    pub start_date: Option<Json<Date>>,
    /// Last day.
    pub end_date: Option<Json<Date>>,
    /// Primary contact.
    pub is_primary: bool,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Changed.
    pub update_time: DateTime<Utc>,
}

macro_rules! link_cols {
    () => {
        "contact_link_id, person_id, organization_id, role, job_title, start_date, end_date, is_primary, create_time, update_time"
    };
}

impl LinkRow {
    /// The contract's link.
    pub fn to_proto(&self) -> ContactLink {
        let d = |d: &Option<Json<Date>>| {
            d.as_ref()
                .map(|d| rapport_proto::rapport::profile::v1::CalendarDate {
                    year: d.0.year,
                    month: d.0.month,
                    day: d.0.day,
                })
        };
        ContactLink {
            contact_link_id: self.contact_link_id.to_string(),
            person_customer_id: self.person_id.to_string(),
            organization_customer_id: self.organization_id.to_string(),
            role: i32::from(self.role),
            job_title: self.job_title.clone(),
            start_date: d(&self.start_date),
            end_date: d(&self.end_date),
            primary: self.is_primary,
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
        }
    }

    fn event(&self) -> NewEvent {
        NewEvent::new(
            Uuid::nil(),
            "contact_link",
            self.contact_link_id.to_string(),
            "ContactLinked",
            &ProfileEvent {
                event: Some(Ev::ContactLinked(ev::ContactLinked {
                    link: Some(self.to_proto()),
                })),
            },
        )
    }
}

/// A customer event: its type is the name of `event`'s case.
fn event(tenant: Uuid, aggregate_id: Uuid, event: Ev) -> NewEvent {
    let event_type = match &event {
        Ev::CustomerCreated(_) => "CustomerCreated",
        Ev::CustomerUpdated(_) => "CustomerUpdated",
        Ev::CustomerDeleted(_) => "CustomerDeleted",
        Ev::CustomerUndeleted(_) => "CustomerUndeleted",
        Ev::CustomerMerged(_) => "CustomerMerged",
        Ev::CustomerUnmerged(_) => "CustomerUnmerged",
        Ev::CustomerErased(_) => "CustomerErased",
        Ev::ConsentChanged(_) => "ConsentChanged",
        Ev::ContactLinked(_) => "ContactLinked",
        Ev::ContactUnlinked(_) => "ContactUnlinked",
        Ev::Redacted(_) => "Redacted",
    };
    NewEvent::new(
        tenant,
        "customer",
        aggregate_id.to_string(),
        event_type,
        &ProfileEvent { event: Some(event) },
    )
}

async fn append(conn: &mut PgConnection, events: Vec<NewEvent>) -> Result<()> {
    feed::append(conn, &events).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading customers.

/// The row of `id`, if the tenant has one.
pub async fn row(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Option<CustomerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM customers WHERE tenant_id = $1 AND customer_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The row of `id`, locked until the end of the transaction.
pub async fn lock_row(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<CustomerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// For each of `ids` the tenant has: the end of its chain of merges (itself
/// when not merged) and that customer's status.
pub async fn resolve_chains(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (Uuid, String)>> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "WITH RECURSIVE chain(start_id, cur_id, merged_into, status, depth) AS (
             SELECT c.customer_id, c.customer_id, c.merged_into, c.status, 0
               FROM unnest($2::uuid[]) AS k (id)
               CROSS JOIN LATERAL (SELECT customer_id, merged_into, status FROM customers
                                    WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c
             UNION ALL
             SELECT chain.start_id, c.customer_id, c.merged_into, c.status, chain.depth + 1
               FROM chain JOIN customers c
                 ON c.tenant_id = $1 AND c.customer_id = chain.merged_into
              WHERE chain.status = 'merged' AND chain.depth < 1000
         )
         SELECT start_id, cur_id, status FROM chain WHERE status <> 'merged'",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(s, c, st)| (s, (c, st))).collect())
}

/// Where `id` leads: the live customer (following merges), or NOT_FOUND for
/// an unknown or erased id.
pub async fn follow(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Uuid> {
    match resolve_chains(conn, tenant, &[id]).await?.get(&id) {
        Some((cur, status)) if status != "erased" => Ok(*cur),
        _ => Err(customer_not_found(id)),
    }
}

/// Locks the customer `id` leads to (following merges). NOT_FOUND for
/// unknown or erased ids.
pub async fn lock_following(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<CustomerRow> {
    let target = follow(conn, tenant, id).await?;
    match lock_row(conn, tenant, target).await? {
        Some(r) if r.status == "active" || r.status == "deleted" => Ok(r),
        // Merged in the meantime: follow again once.
        Some(r) if r.status == "merged" => {
            let target = follow(conn, tenant, r.customer_id).await?;
            match lock_row(conn, tenant, target).await? {
                Some(r) if r.status == "active" || r.status == "deleted" => Ok(r),
                _ => Err(customer_not_found(id)),
            }
        }
        _ => Err(customer_not_found(id)),
    }
}

/// Locks exactly `id`: NOT_FOUND when unknown or erased, FAILED_PRECONDITION
/// naming the survivor when merged.
pub async fn lock_exact(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<CustomerRow> {
    match lock_row(conn, tenant, id).await? {
        Some(r) if r.status == "merged" => {
            let survivor = follow(conn, tenant, id).await?;
            Err(precondition(format!(
                "customer {id} was merged into customer {survivor}; act on the survivor, or unmerge {id} first"
            )))
        }
        Some(r) if r.status == "erased" => Err(customer_not_found(id)),
        Some(r) => Ok(r),
        None => Err(customer_not_found(id)),
    }
}

/// Loads everything the contract shows of the live customers `ids`.
pub async fn load(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Stored>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CustomerRow> = sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT * FROM customers WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c
          WHERE status IN ('active', 'deleted')"
    ))
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let found: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let idents: Vec<IdentRow> = sqlx::query_as(
        "SELECT i.customer_id, i.kind, i.system, i.value, i.position, i.is_primary, i.label
           FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT * FROM identifiers WHERE tenant_id = $1 AND customer_id = k.id
                                ORDER BY kind, position, value) i
          ORDER BY i.customer_id, i.kind, i.position, i.value",
    )
    .bind(tenant)
    .bind(&found)
    .fetch_all(&mut *conn)
    .await?;
    let consents: Vec<ConsentRow> = sqlx::query_as(concat!(
        "SELECT r.* FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (
               SELECT DISTINCT ON (channel, purpose) ",
        consent_cols!(),
        "        FROM consent_records WHERE tenant_id = $1 AND holder_id = k.id
                ORDER BY channel, purpose, effective_time DESC, record_time DESC, consent_record_id DESC) r"
    ))
    .bind(tenant)
    .bind(&found)
    .fetch_all(&mut *conn)
    .await?;
    let merged = merged_into_each(conn, tenant, &found).await?;
    let mut by_id: HashMap<Uuid, Stored> = rows
        .into_iter()
        .map(|r| {
            (
                r.customer_id,
                Stored {
                    customer_id: r.customer_id,
                    kind: i32::from(r.kind),
                    deleted: r.status == "deleted",
                    profile: r.data.0,
                    idents: Vec::new(),
                    version: r.version,
                    create_time: r.create_time,
                    update_time: r.update_time,
                    delete_time: r.delete_time,
                    stage_set_time: r.stage_set_time,
                    consents: Vec::new(),
                    merged_ids: Vec::new(),
                },
            )
        })
        .collect();
    for i in idents {
        if let Some(s) = by_id.get_mut(&i.customer_id) {
            s.idents.push(i.ident());
        }
    }
    for c in consents {
        if let Some(s) = by_id.get_mut(&c.holder_id) {
            s.consents.push(c.to_proto());
        }
    }
    for (root, list) in merged {
        if let Some(s) = by_id.get_mut(&root) {
            s.merged_ids = list;
        }
    }
    Ok(by_id)
}

/// Loads one live customer, or NOT_FOUND.
pub async fn load_one(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Stored> {
    load(conn, tenant, &[id])
        .await?
        .remove(&id)
        .ok_or_else(|| customer_not_found(id))
}

/// For each of `roots`, the customers merged into it, directly or through a
/// chain, sorted.
async fn merged_into_each(
    conn: &mut PgConnection,
    tenant: Uuid,
    roots: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH RECURSIVE m(root, id, depth) AS (
             SELECT merged_into, customer_id, 0 FROM customers
              WHERE tenant_id = $1 AND status = 'merged' AND merged_into = ANY($2)
             UNION ALL
             SELECT m.root, c.customer_id, m.depth + 1 FROM customers c
               JOIN m ON c.tenant_id = $1 AND c.status = 'merged' AND c.merged_into = m.id
              WHERE m.depth < 1000
         )
         SELECT root, id FROM m ORDER BY root, id",
    )
    .bind(tenant)
    .bind(roots)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (root, id) in rows {
        out.entry(root).or_default().push(id);
    }
    Ok(out)
}

/// The tenant's attribute definitions.
pub async fn definitions(conn: &mut PgConnection, tenant: Uuid) -> Result<Definitions> {
    let rows: Vec<(String, i16, bool, i16)> = sqlx::query_as(
        "SELECT name, type, required, state FROM attribute_definitions WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, t, required, state)| {
            (
                name.clone(),
                Definition {
                    name,
                    attribute_type: i32::from(t),
                    required,
                    state: i32::from(state),
                },
            )
        })
        .collect())
}

/// The etag check of conditional writes.
pub fn check_etag(etag: &str, version: i64) -> Result<()> {
    if !etag.is_empty() && etag != cust::etag(version) {
        return Err(Error::Api(ApiError::Aborted(
            "the customer changed since this etag was read; read it again and reapply".into(),
        )));
    }
    Ok(())
}

/// Bumps the version and update time of `ids`.
async fn touch(conn: &mut PgConnection, tenant: Uuid, ids: &[Uuid]) -> Result<()> {
    sqlx::query(
        "UPDATE customers SET version = version + 1, update_time = now()
         WHERE tenant_id = $1 AND customer_id = ANY($2) AND status IN ('active', 'deleted')",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An identifier as the feed carries it.
fn identifier(kind: i32, system: &str, value: &str) -> Identifier {
    Identifier {
        kind,
        system: system.to_string(),
        value: value.to_string(),
    }
}

/// The customer snapshot the feed carries.
fn snapshot(s: &Stored) -> Option<Customer> {
    Some(cust::to_proto(s))
}

// ---------------------------------------------------------------------------
// Idempotency keys.

/// A request_id with the fingerprint of its request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The client's key.
    pub request_id: String,
    /// SHA-256 of the normalised request.
    pub fingerprint: String,
}

/// Claims `key` for `method` in the transaction: `Ok(None)` when this call is
/// the first, `Ok(Some(result))` for a retry (the first call's stored result).
async fn claim(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
) -> Result<Option<Value>> {
    let Some(key) = key else { return Ok(None) };
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND method = $2 AND request_id = $3
           AND create_time < now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .execute(&mut *conn)
    .await?;
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, method, request_id, fingerprint)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    let (fingerprint, result): (String, Option<Value>) = sqlx::query_as(
        "SELECT fingerprint, result FROM idempotency_keys
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .fetch_one(&mut *conn)
    .await?;
    if fingerprint != key.fingerprint {
        return Err(crate::error::invalid(
            "request_id",
            "this request_id was used for a different request in the last 24 hours",
        ));
    }
    match result {
        Some(r) => Ok(Some(r)),
        None => Err(Error::Api(ApiError::Aborted(
            "a request with this request_id is still in progress; retry".into(),
        ))),
    }
}

/// Stores the result of the first call with `key`.
async fn remember(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
    result: Value,
    customers: &[Uuid],
) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    sqlx::query(
        "UPDATE idempotency_keys SET result = $4, customer_ids = $5
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(result)
    .bind(customers)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`claim`] for a method whose result is known before it runs: the key is
/// claimed with its result in one statement (a key older than 24 hours is
/// taken over). `Ok(None)` when this call is the first; the first call's
/// result for a retry; INVALID_ARGUMENT when the key was used for other
/// content. A concurrent first call holding the key makes this one wait
/// until it ends.
async fn claim_done(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
    result: Value,
    customers: &[Uuid],
) -> Result<Option<Value>> {
    let Some(key) = key else { return Ok(None) };
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys AS k (tenant_id, method, request_id, fingerprint, result, customer_ids)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, method, request_id) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result,
                 customer_ids = EXCLUDED.customer_ids, create_time = now()
             WHERE k.create_time < now() - interval '24 hours'
         RETURNING 1",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .bind(&result)
    .bind(customers)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let (fingerprint, first): (String, Option<Value>) = sqlx::query_as(
        "SELECT fingerprint, result FROM idempotency_keys
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .fetch_one(&mut *conn)
    .await?;
    if fingerprint != key.fingerprint {
        return Err(crate::error::invalid(
            "request_id",
            "this request_id was used for a different request in the last 24 hours",
        ));
    }
    first.map(Some).ok_or_else(|| {
        Error::Api(ApiError::Aborted(
            "a request with this request_id is still in progress; retry".into(),
        ))
    })
}

// ---------------------------------------------------------------------------
// Identifiers.

/// For each of `idents` that some customer other than `except` holds: the
/// identifier's index in `idents` and its holder.
async fn holders(
    conn: &mut PgConnection,
    tenant: Uuid,
    idents: &[Ident],
) -> Result<Vec<(usize, Uuid)>> {
    if idents.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<i16> = idents.iter().map(|i| i.kind).collect();
    let systems: Vec<&str> = idents.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = idents.iter().map(|i| i.value.as_str()).collect();
    // The match key (a function of kind and value) is given too, so that
    // whichever of the two indexes on (tenant, kind, system, …) the planner
    // picks, every column of it is bound: one key lookup per identifier,
    // whatever the statistics say about a fast-growing tenant.
    let keys: Vec<String> = idents
        .iter()
        .map(|i| duplicates::match_key(i.kind, &i.value))
        .collect();
    let rows: Vec<(i32, Uuid)> = sqlx::query_as(
        "SELECT (q.ord - 1)::int4, i.customer_id
           FROM unnest($2::int2[], $3::text[], $4::text[], $5::text[])
                WITH ORDINALITY AS q(kind, system, value, match_key, ord)
           CROSS JOIN LATERAL (
               SELECT customer_id FROM identifiers
                WHERE tenant_id = $1 AND kind = q.kind AND system = q.system AND value = q.value
                  AND match_key = q.match_key
                LIMIT 1) i
          ORDER BY q.ord",
    )
    .bind(tenant)
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(i, c)| (usize::try_from(i).unwrap_or(0), c))
        .collect())
}

/// The request field of the `n`th identifier of a validated customer.
fn ident_field(prefix: &str, idents: &[Ident], n: usize) -> String {
    let Some(target) = idents.get(n) else {
        return prefix.to_string();
    };
    let index = idents[..n].iter().filter(|i| i.kind == target.kind).count();
    match target.kind {
        EMAIL => format!("{prefix}.emails[{index}].address"),
        PHONE => format!("{prefix}.phones[{index}].number"),
        _ => format!("{prefix}.external_identifiers[{index}].value"),
    }
}

/// Refuses identifiers another customer holds (ALREADY_EXISTS naming it).
async fn ensure_free(
    conn: &mut PgConnection,
    tenant: Uuid,
    owner: Option<Uuid>,
    idents: &[Ident],
    prefix: &str,
) -> Result<()> {
    for (n, holder) in holders(conn, tenant, idents).await? {
        if Some(holder) != owner {
            return Err(Error::IdentifierTaken {
                field: ident_field(prefix, idents, n),
                owner: holder,
            });
        }
    }
    Ok(())
}

/// Inserts identifiers for `customer`, positions counted per kind from
/// `start` (by kind). A unique violation (a concurrent writer took one) is
/// returned as the database error.
async fn insert_idents(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    idents: &[Ident],
    start: &HashMap<i16, i32>,
) -> std::result::Result<(), sqlx::Error> {
    if idents.is_empty() {
        return Ok(());
    }
    let mut next = start.clone();
    let rows: Vec<(Uuid, Ident, i32)> = idents
        .iter()
        .map(|i| {
            let p = next.entry(i.kind).or_insert(0);
            let pos = *p;
            *p += 1;
            (customer, i.clone(), pos)
        })
        .collect();
    insert_positioned(conn, tenant, &rows).await
}

fn unique_to_error(e: sqlx::Error) -> Error {
    if rapport_kit::error::is_unique_violation(&e, Some("identifiers_pkey")) {
        Error::Api(ApiError::AlreadyExists(
            "an identifier of this request was just given to another customer".into(),
        ))
    } else {
        e.into()
    }
}

// ---------------------------------------------------------------------------
// Create, read, update, delete.

/// Where a new customer came from, for `CustomerCreated.origin`.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// CreateCustomer.
    Create,
    /// ResolveIdentity.
    Resolve,
}

fn stage_time(stage: i32) -> Option<DateTime<Utc>> {
    (stage != 0).then(Utc::now)
}

async fn insert_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    v: &Validated,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
         VALUES ($1, $2, $3, 'active', $4, $5)",
    )
    .bind(tenant)
    .bind(id)
    .bind(v.kind as i16)
    .bind(Json(&v.profile))
    .bind(stage_time(v.profile.relationship_stage))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// CreateCustomer: stores a validated customer and emits CustomerCreated,
/// in five round trips: the idempotency key is claimed with its result (the
/// new id is known in advance), the customer and its identifiers are stored
/// in one statement (an identifier someone holds makes it come back short,
/// and the holder is then named), the answer is built from what was written
/// rather than read back, and the event is appended.
pub async fn create_customer(
    pool: &PgPool,
    tenant: Uuid,
    v: &Validated,
    key: Option<&RequestKey>,
) -> Result<Stored> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    if let Some(first) = claim_done(
        &mut tx,
        tenant,
        "CreateCustomer",
        key,
        json!({"customer_id": id.to_string()}),
        &[id],
    )
    .await?
    {
        let id = first["customer_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without customer_id"))?;
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let target = follow(&mut conn, tenant, id).await?;
        return load_one(&mut conn, tenant, target).await;
    }
    // Positions per kind, in the order given.
    let mut next: HashMap<i16, i32> = HashMap::new();
    let positions: Vec<i32> = v
        .idents
        .iter()
        .map(|i| {
            let p = next.entry(i.kind).or_insert(0);
            *p += 1;
            *p - 1
        })
        .collect();
    let kinds: Vec<i16> = v.idents.iter().map(|i| i.kind).collect();
    let systems: Vec<&str> = v.idents.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = v.idents.iter().map(|i| i.value.as_str()).collect();
    let primaries: Vec<bool> = v.idents.iter().map(|i| i.primary).collect();
    let labels: Vec<&str> = v.idents.iter().map(|i| i.label.as_str()).collect();
    let keys: Vec<String> = v
        .idents
        .iter()
        .map(|i| duplicates::match_key(i.kind, &i.value))
        .collect();
    let written: (i64, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "WITH c AS (
             INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
             VALUES ($1, $2, $3, 'active', $4, $5)
             RETURNING version, create_time, update_time, stage_set_time),
         i AS (
             INSERT INTO identifiers (tenant_id, customer_id, kind, system, value, position, is_primary, label, match_key)
             SELECT $1, $2, * FROM unnest($6::int2[], $7::text[], $8::text[], $9::int4[], $10::bool[], $11::text[], $12::text[])
             ON CONFLICT DO NOTHING
             RETURNING 1)
         SELECT c.version, c.create_time, c.update_time, c.stage_set_time, (SELECT count(*) FROM i) FROM c",
    )
    .bind(tenant)
    .bind(id)
    .bind(v.kind as i16)
    .bind(Json(&v.profile))
    .bind(stage_time(v.profile.relationship_stage))
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&positions)
    .bind(&primaries)
    .bind(&labels)
    .bind(&keys)
    .fetch_one(&mut *tx)
    .await?;
    let (version, create_time, update_time, stage_set_time, stored_idents) = written;
    if stored_idents != v.idents.len() as i64 {
        // Another customer holds one: name it (nothing of this call stays).
        ensure_free(&mut tx, tenant, Some(id), &v.idents, "customer").await?;
        return Err(Error::Api(ApiError::AlreadyExists(
            "an identifier of this request was just given to another customer".into(),
        )));
    }
    let mut idents = v.idents.clone();
    idents.sort_by_key(|i| i.kind);
    let stored = Stored {
        customer_id: id,
        kind: v.kind,
        deleted: false,
        profile: v.profile.clone(),
        idents,
        version,
        create_time,
        update_time,
        delete_time: None,
        stage_set_time,
        consents: Vec::new(),
        merged_ids: Vec::new(),
    };
    append(
        &mut tx,
        vec![event(
            tenant,
            id,
            Ev::CustomerCreated(ev::CustomerCreated {
                customer_id: id.to_string(),
                customer: snapshot(&stored),
                origin: ev::CustomerOrigin::Create as i32,
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// GetCustomer: the customer `id` leads to, and whether `id` was merged.
pub async fn get_customer(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<(Stored, bool)> {
    let mut conn = pool.acquire().await?;
    let target = follow(&mut conn, tenant, id).await?;
    let stored = load_one(&mut conn, tenant, target).await?;
    Ok((stored, target != id))
}

/// BatchGetCustomers: the customers the ids lead to, in first-mention order,
/// the ids that lead nowhere, and merged id -> survivor.
pub async fn batch_get(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<(Vec<Stored>, Vec<Uuid>, Vec<(Uuid, Uuid)>)> {
    let mut conn = pool.acquire().await?;
    let chains = resolve_chains(&mut conn, tenant, ids).await?;
    let targets: Vec<Uuid> = chains
        .values()
        .filter(|(_, s)| s != "erased")
        .map(|(c, _)| *c)
        .collect();
    let mut loaded = load(&mut conn, tenant, &targets).await?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut merged = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        match chains.get(id) {
            Some((target, status)) if status != "erased" => {
                if target != id {
                    merged.push((*id, *target));
                }
                if seen.insert(*target)
                    && let Some(s) = loaded.remove(target)
                {
                    found.push(s);
                }
            }
            _ => missing.push(*id),
        }
    }
    Ok((found, missing, merged))
}

/// What UpdateCustomer needs from the handler: how to compute the new
/// customer from the current one (validation included).
pub type Updater<'a> =
    dyn FnOnce(&Stored, &Definitions) -> std::result::Result<Validated, ApiError> + Send + 'a;

/// UpdateCustomer: applies `apply` to the locked customer and stores the
/// result when something changed (emitting CustomerUpdated).
pub async fn update_customer(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
    apply: Box<Updater<'_>>,
) -> Result<Stored> {
    let mut tx = pool.begin().await?;
    let r = lock_exact(&mut tx, tenant, id).await?;
    if r.status == "deleted" {
        return Err(precondition(format!(
            "customer {id} is deleted; undelete it first"
        )));
    }
    check_etag(etag, r.version)?;
    let current = load_one(&mut tx, tenant, id).await?;
    let defs = definitions(&mut tx, tenant).await?;
    let next = apply(&current, &defs)?;
    let before = cust::fields_to_proto(current.kind, &current.profile, &current.idents);
    let after = cust::fields_to_proto(current.kind, &next.profile, &next.idents);
    let changed = cust::changed_fields(&before, &after);
    if changed.is_empty() {
        tx.rollback().await?;
        return Ok(current);
    }
    let ident_kinds_changed = changed
        .iter()
        .any(|f| matches!(*f, "emails" | "phones" | "external_identifiers"));
    if ident_kinds_changed {
        ensure_free(&mut tx, tenant, Some(id), &next.idents, "customer").await?;
        sqlx::query("DELETE FROM identifiers WHERE tenant_id = $1 AND customer_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_idents(&mut tx, tenant, id, &next.idents, &HashMap::new())
            .await
            .map_err(unique_to_error)?;
    }
    let stage_changed = next.profile.relationship_stage != current.profile.relationship_stage;
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE WHEN $4 THEN now() ELSE stage_set_time END
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(Json(&next.profile))
    .bind(stage_changed)
    .execute(&mut *tx)
    .await?;
    let stored = load_one(&mut tx, tenant, id).await?;
    append(
        &mut tx,
        vec![event(
            tenant,
            id,
            Ev::CustomerUpdated(ev::CustomerUpdated {
                customer_id: id.to_string(),
                changed_fields: changed.iter().map(ToString::to_string).collect(),
                customer: snapshot(&stored),
            }),
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// DeleteCustomer (`delete` true) or UndeleteCustomer.
pub async fn set_deleted(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
    delete: bool,
) -> Result<Stored> {
    let mut tx = pool.begin().await?;
    let r = lock_exact(&mut tx, tenant, id).await?;
    check_etag(etag, r.version)?;
    let is_deleted = r.status == "deleted";
    if is_deleted == delete {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        return load_one(&mut conn, tenant, id).await;
    }
    sqlx::query(
        "UPDATE customers SET status = $3, delete_time = CASE WHEN $4 THEN now() END,
                version = version + 1, update_time = now()
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(if delete { "deleted" } else { "active" })
    .bind(delete)
    .execute(&mut *tx)
    .await?;
    let stored = load_one(&mut tx, tenant, id).await?;
    let ev = if delete {
        event(
            tenant,
            id,
            Ev::CustomerDeleted(ev::CustomerDeleted {
                customer_id: id.to_string(),
                delete_time: stored.delete_time.map(timestamp),
            }),
        )
    } else {
        event(
            tenant,
            id,
            Ev::CustomerUndeleted(ev::CustomerUndeleted {
                customer_id: id.to_string(),
                customer: snapshot(&stored),
            }),
        )
    };
    append(&mut tx, vec![ev]).await?;
    tx.commit().await?;
    Ok(stored)
}

// ---------------------------------------------------------------------------
// Listing and searching.

/// ListCustomers filters, normalised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListFilter {
    /// CustomerKind number; 0 every kind.
    pub kind: i32,
    /// JSON containment on the profile (tags, stage, country, owner, attributes).
    pub contains: Value,
    /// Updated at or after.
    pub updated_since: Option<DateTime<Utc>>,
    /// Order: 1 create asc, 2 create desc, 3 update asc, 4 update desc.
    pub order: i32,
    /// Include soft-deleted customers.
    pub show_deleted: bool,
}

/// A ListCustomers position: the last row's order time (microseconds) and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListCursor {
    /// Order time of the last row, in microseconds since the epoch.
    pub t: i64,
    /// Id of the last row.
    pub id: Uuid,
}

/// ListCustomers: one page, and the cursor of its last row when more follow.
pub async fn list_customers(
    pool: &PgPool,
    tenant: Uuid,
    f: &ListFilter,
    after: Option<&ListCursor>,
    limit: i64,
) -> Result<(Vec<Stored>, Option<ListCursor>)> {
    let (column, desc) = match f.order {
        2 => ("create_time", true),
        3 => ("update_time", false),
        4 => ("update_time", true),
        _ => ("create_time", false),
    };
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT customer_id, (extract(epoch FROM ");
    q.push(column)
        .push(")::numeric * 1000000)::int8 AS t FROM customers WHERE tenant_id = ")
        .push_bind(tenant);
    if f.show_deleted {
        q.push(" AND status IN ('active', 'deleted')");
    } else {
        q.push(" AND status = 'active'");
    }
    if f.kind != 0 {
        q.push(" AND kind = ").push_bind(f.kind as i16);
    }
    if f.contains.as_object().is_some_and(|o| !o.is_empty()) {
        q.push(" AND data @> ").push_bind(f.contains.clone());
    }
    if let Some(t) = f.updated_since {
        q.push(" AND update_time >= ").push_bind(t);
    }
    if let Some(c) = after {
        let t = DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default();
        q.push(format_args!(" AND ({column}, customer_id) "))
            .push(if desc { "<" } else { ">" })
            .push(" (")
            .push_bind(t)
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    let dir = if desc { "DESC" } else { "ASC" };
    q.push(format_args!(
        " ORDER BY {column} {dir}, customer_id {dir} LIMIT "
    ))
    .push_bind(limit + 1);
    let mut conn = pool.acquire().await?;
    let mut rows: Vec<(Uuid, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut loaded = load(&mut conn, tenant, &ids).await?;
    let page: Vec<Stored> = ids.iter().filter_map(|id| loaded.remove(id)).collect();
    let next = if more {
        rows.last().map(|(id, t)| ListCursor { t: *t, id: *id })
    } else {
        None
    };
    Ok((page, next))
}

/// A SearchCustomers position: the last hit's score and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchCursor {
    /// Score of the last hit.
    pub score: f64,
    /// Id of the last hit.
    pub id: Uuid,
}

/// How a search hit matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// E-mail, exactly.
    Email,
    /// Phone, exactly.
    Phone,
    /// External identifier value, exactly.
    External,
    /// Name similarity.
    Name,
}

/// The names expression the trigram index covers.
const NAMES: &str = "lower(coalesce(data->>'display_name', '') || ' ' || coalesce(data->'person'->>'given_name', '') || ' ' || coalesce(data->'person'->>'family_name', '') || ' ' || coalesce(data->'organization'->>'legal_name', ''))";

/// SearchCustomers: exact identifier hits (`email`, `phone` normalised by the
/// caller, `raw` against external values) rank first with score 1, then
/// names by trigram similarity down to 0.3.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    pool: &PgPool,
    tenant: Uuid,
    query: &str,
    email: Option<&str>,
    phone: Option<&str>,
    kind: i32,
    after: Option<&SearchCursor>,
    limit: i64,
) -> Result<(Vec<(Stored, f64, MatchKind)>, Option<SearchCursor>)> {
    let mut conn = pool.begin().await?;
    // The trigram index finds names with a word similarity of at least 0.3,
    // a superset of the per-name similarities ranked below.
    sqlx::query("SELECT set_config('pg_trgm.word_similarity_threshold', '0.3', true)")
        .execute(&mut *conn)
        .await?;
    let exact: Vec<(Uuid, i16)> = sqlx::query_as(
        "SELECT DISTINCT ON (customer_id) customer_id, kind FROM identifiers
          WHERE tenant_id = $1 AND ((kind = 1 AND value = $2) OR (kind = 2 AND value = $3) OR (kind = 3 AND value = $4))
          ORDER BY customer_id, kind",
    )
    .bind(tenant)
    .bind(email.unwrap_or(""))
    .bind(phone.unwrap_or(""))
    .bind(query)
    .fetch_all(&mut *conn)
    .await?;
    let exact_kind: HashMap<Uuid, MatchKind> = exact
        .iter()
        .map(|(id, k)| {
            (
                *id,
                match *k {
                    EMAIL => MatchKind::Email,
                    PHONE => MatchKind::Phone,
                    _ => MatchKind::External,
                },
            )
        })
        .collect();
    let exact_ids: Vec<Uuid> = exact_kind.keys().copied().collect();
    let lowered = query.to_lowercase();
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("WITH hits AS (SELECT customer_id, CASE WHEN customer_id = ANY(");
    q.push_bind(&exact_ids)
        .push(") THEN 1.0::float8 ELSE GREATEST(similarity(lower(coalesce(data->>'display_name', '')), ")
        .push_bind(&lowered)
        .push("), similarity(lower(concat_ws(' ', data->'person'->>'given_name', data->'person'->>'family_name')), ")
        .push_bind(&lowered)
        .push("), similarity(lower(coalesce(data->'organization'->>'legal_name', '')), ")
        .push_bind(&lowered)
        .push("))::float8 END AS score FROM customers WHERE tenant_id = ")
        .push_bind(tenant)
        .push(" AND status = 'active'");
    if kind != 0 {
        q.push(" AND kind = ").push_bind(kind as i16);
    }
    q.push(" AND (customer_id = ANY(")
        .push_bind(&exact_ids)
        .push(") OR ")
        .push_bind(&lowered)
        .push(format_args!(
            " <% {NAMES})) SELECT customer_id, score FROM hits WHERE score >= 0.3"
        ));
    if let Some(c) = after {
        q.push(" AND (score < ")
            .push_bind(c.score)
            .push(" OR (score = ")
            .push_bind(c.score)
            .push(" AND customer_id > ")
            .push_bind(c.id)
            .push("))");
    }
    q.push(" ORDER BY score DESC, customer_id LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<(Uuid, f64)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut loaded = load(&mut conn, tenant, &ids).await?;
    let hits = rows
        .iter()
        .filter_map(|(id, score)| {
            let kind = exact_kind.get(id).copied().unwrap_or(MatchKind::Name);
            loaded.remove(id).map(|s| (s, *score, kind))
        })
        .collect();
    let next = if more {
        rows.last().map(|(id, score)| SearchCursor {
            score: *score,
            id: *id,
        })
    } else {
        None
    };
    Ok((hits, next))
}

// ---------------------------------------------------------------------------
// Identity resolution.

/// What ResolveIdentity found.
#[derive(Debug)]
pub enum Resolution {
    /// One customer, found or created.
    Resolved {
        /// The customer.
        customer: Box<Stored>,
        /// Created by this call.
        created: bool,
        /// Identifiers attached by this call.
        attached: Vec<Ident>,
    },
    /// Several customers hold the identifiers: (customer, its identifiers).
    Conflict(Vec<(Uuid, Vec<Ident>)>),
}

/// How many times a resolution is retried after losing a race.
const RESOLVE_ATTEMPTS: usize = 8;

/// ResolveIdentity: finds the customer the identifiers describe, or creates
/// it from `traits`. The identifiers' primary key decides races: a loser's
/// insert fails, and it retries and finds the winner's customer.
pub async fn resolve_identity(
    pool: &PgPool,
    tenant: Uuid,
    idents: &[Ident],
    traits: &Validated,
    lookup_only: bool,
) -> Result<Resolution> {
    for _ in 0..RESOLVE_ATTEMPTS {
        let mut tx = pool.begin().await?;
        let held = holders(&mut tx, tenant, idents).await?;
        let holder_ids: Vec<Uuid> = held.iter().map(|(_, c)| *c).collect();
        let chains = resolve_chains(&mut tx, tenant, &holder_ids).await?;
        // Customers in the order of the request's identifiers.
        let mut order: Vec<Uuid> = Vec::new();
        let mut by_customer: HashMap<Uuid, Vec<Ident>> = HashMap::new();
        let mut held_index = HashSet::new();
        for (n, holder) in &held {
            let target = chains.get(holder).map_or(*holder, |(c, _)| *c);
            held_index.insert(*n);
            if !by_customer.contains_key(&target) {
                order.push(target);
            }
            by_customer
                .entry(target)
                .or_default()
                .push(idents[*n].clone());
        }
        match order.len() {
            0 => {
                if lookup_only {
                    return Err(Error::Api(ApiError::NotFound {
                        resource: "customer",
                        id: "for these identifiers".into(),
                    }));
                }
                let id = Uuid::now_v7();
                let mut v = traits.clone();
                let mut primary_seen = HashSet::new();
                v.idents = idents
                    .iter()
                    .map(|i| {
                        let mut i = i.clone();
                        i.primary = i.kind != EXTERNAL && primary_seen.insert(i.kind);
                        i
                    })
                    .collect();
                insert_customer(&mut tx, tenant, id, &v).await?;
                match insert_idents(&mut tx, tenant, id, &v.idents, &HashMap::new()).await {
                    Ok(()) => {}
                    Err(e) if rapport_kit::error::is_unique_violation(&e, None) => {
                        // Another call created the customer first: find it.
                        tx.rollback().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                let stored = load_one(&mut tx, tenant, id).await?;
                append(
                    &mut tx,
                    vec![event(
                        tenant,
                        id,
                        Ev::CustomerCreated(ev::CustomerCreated {
                            customer_id: id.to_string(),
                            customer: snapshot(&stored),
                            origin: ev::CustomerOrigin::Resolve as i32,
                        }),
                    )],
                )
                .await?;
                tx.commit().await?;
                return Ok(Resolution::Resolved {
                    customer: Box::new(stored),
                    created: true,
                    attached: Vec::new(),
                });
            }
            1 => {
                let id = order[0];
                let Some(r) = lock_row(&mut tx, tenant, id).await? else {
                    tx.rollback().await?;
                    continue;
                };
                if r.status == "merged" || r.status == "erased" {
                    // Changed under us: look again.
                    tx.rollback().await?;
                    continue;
                }
                let current = load_one(&mut tx, tenant, id).await?;
                let unheld: Vec<Ident> = idents
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !held_index.contains(n))
                    .map(|(_, i)| i.clone())
                    .collect();
                if lookup_only || r.status == "deleted" || unheld.is_empty() {
                    tx.rollback().await?;
                    return Ok(Resolution::Resolved {
                        customer: Box::new(current),
                        created: false,
                        attached: Vec::new(),
                    });
                }
                // Attach what fits within the customer's limits.
                let mut counts: HashMap<i16, usize> = HashMap::new();
                let mut has_primary: HashSet<i16> = HashSet::new();
                for i in &current.idents {
                    *counts.entry(i.kind).or_default() += 1;
                    if i.primary {
                        has_primary.insert(i.kind);
                    }
                }
                let mut attach = Vec::new();
                for mut i in unheld {
                    let limit = match i.kind {
                        EMAIL => MAX_EMAILS,
                        PHONE => MAX_PHONES,
                        _ => MAX_EXTERNAL,
                    };
                    let c = counts.entry(i.kind).or_default();
                    if *c >= limit {
                        continue;
                    }
                    *c += 1;
                    i.primary = i.kind != EXTERNAL && has_primary.insert(i.kind);
                    attach.push(i);
                }
                if attach.is_empty() {
                    tx.rollback().await?;
                    return Ok(Resolution::Resolved {
                        customer: Box::new(current),
                        created: false,
                        attached: Vec::new(),
                    });
                }
                let start = next_positions(&mut tx, tenant, id).await?;
                match insert_idents(&mut tx, tenant, id, &attach, &start).await {
                    Ok(()) => {}
                    Err(e) if rapport_kit::error::is_unique_violation(&e, None) => {
                        tx.rollback().await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                touch(&mut tx, tenant, &[id]).await?;
                let stored = load_one(&mut tx, tenant, id).await?;
                let mut changed: Vec<&str> = Vec::new();
                for (kind, name) in [
                    (EMAIL, "emails"),
                    (PHONE, "phones"),
                    (EXTERNAL, "external_identifiers"),
                ] {
                    if attach.iter().any(|i| i.kind == kind) {
                        changed.push(name);
                    }
                }
                append(
                    &mut tx,
                    vec![event(
                        tenant,
                        id,
                        Ev::CustomerUpdated(ev::CustomerUpdated {
                            customer_id: id.to_string(),
                            changed_fields: changed.iter().map(ToString::to_string).collect(),
                            customer: snapshot(&stored),
                        }),
                    )],
                )
                .await?;
                tx.commit().await?;
                return Ok(Resolution::Resolved {
                    customer: Box::new(stored),
                    created: false,
                    attached: attach,
                });
            }
            _ => {
                tx.rollback().await?;
                return Ok(Resolution::Conflict(
                    order
                        .into_iter()
                        .map(|c| {
                            let list = by_customer.remove(&c).unwrap_or_default();
                            (c, list)
                        })
                        .collect(),
                ));
            }
        }
    }
    Err(Error::Api(ApiError::Aborted(
        "the identifiers kept changing while they were resolved; retry".into(),
    )))
}

/// ResolveIdentities: resolves every set as ResolveIdentity would, in
/// request order, in one transaction with set-based SQL (see
/// [`crate::domain::resolution`]). Each set gets `None` when it is
/// `lookup_only` and no identifier is known. A unique violation (a
/// concurrent caller created or attached one of the identifiers first) or a
/// deadlock rolls the whole call back and retries it, so the winners'
/// customers are found.
pub async fn resolve_identities(
    pool: &PgPool,
    tenant: Uuid,
    sets: &[(Vec<Ident>, Validated, bool)],
) -> Result<Vec<Option<Resolution>>> {
    for _ in 0..RESOLVE_ATTEMPTS {
        let mut tx = pool.begin().await?;
        match resolve_identities_in(&mut tx, tenant, sets).await? {
            Some(done) => {
                tx.commit().await?;
                return Ok(done.results);
            }
            None => tx.rollback().await?,
        }
    }
    Err(Error::Api(ApiError::Aborted(
        "the identifiers kept changing while they were resolved; retry".into(),
    )))
}

/// A stage time as stored.
type StageTime = Option<DateTime<Utc>>;

/// What the database gave a new customer: version, create and update time,
/// stage time.
type Written = (i64, DateTime<Utc>, DateTime<Utc>, StageTime);

/// What [`resolve_identities_in`] did.
#[derive(Debug)]
pub struct BulkResolved {
    /// Each set's answer (`None`: lookup only, nothing known).
    pub results: Vec<Option<Resolution>>,
    /// Every customer a set resolved to, as it is now.
    pub customers: HashMap<Uuid, Stored>,
}

/// The work of [`resolve_identities`] in the caller's transaction. `None`
/// when a concurrent writer won a race (a unique violation or a deadlock,
/// or a customer merged meanwhile): the transaction is then aborted and the
/// caller rolls it back and tries again.
pub async fn resolve_identities_in(
    tx: &mut PgConnection,
    tenant: Uuid,
    sets: &[(Vec<Ident>, Validated, bool)],
) -> Result<Option<BulkResolved>> {
    use crate::domain::resolution::{self, Decision, Holder, Key, Set};
    rapport_kit::db::prefer_key_lookups(&mut *tx).await?;
    {
        // Every identifier of the call, once.
        let mut all: Vec<Ident> = Vec::new();
        let mut seen: HashSet<Key> = HashSet::new();
        for (idents, _, _) in sets {
            for i in idents {
                if seen.insert(i.key()) {
                    all.push(i.clone());
                }
            }
        }
        let held_raw = holders(&mut *tx, tenant, &all).await?;
        let holder_ids: Vec<Uuid> = held_raw.iter().map(|(_, c)| *c).collect();
        let chains = resolve_chains(&mut *tx, tenant, &holder_ids).await?;
        let mut held: HashMap<Key, Uuid> = HashMap::new();
        for (n, holder) in &held_raw {
            let target = chains.get(holder).map_or(*holder, |(c, _)| *c);
            held.insert(all[*n].key(), target);
        }
        // Lock the customers found, in id order (no deadlock between bulk
        // callers), and look again if one was merged or erased meanwhile.
        let mut targets: Vec<Uuid> = held.values().copied().collect();
        targets.sort_unstable();
        targets.dedup();
        let locked: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT c.customer_id, c.status FROM unnest($2::uuid[]) WITH ORDINALITY AS k (id, ord)
               CROSS JOIN LATERAL (SELECT customer_id, status FROM customers
                                    WHERE tenant_id = $1 AND customer_id = k.id FOR UPDATE) c
              ORDER BY k.ord",
        )
        .bind(tenant)
        .bind(&targets)
        .fetch_all(&mut *tx)
        .await?;
        if locked.len() != targets.len()
            || locked
                .iter()
                .any(|(_, st)| st == "merged" || st == "erased")
        {
            return Ok(None);
        }
        let current = load(&mut *tx, tenant, &targets).await?;
        let holders_now: HashMap<Uuid, Holder> = current
            .iter()
            .map(|(id, c)| {
                let mut h = Holder {
                    deleted: c.deleted,
                    ..Holder::default()
                };
                for i in &c.idents {
                    *h.counts.entry(i.kind).or_default() += 1;
                    if i.primary {
                        h.primaries.insert(i.kind);
                    }
                }
                (*id, h)
            })
            .collect();
        let plan_sets: Vec<Set<'_>> = sets
            .iter()
            .map(|(idents, _, lookup_only)| Set {
                idents,
                lookup_only: *lookup_only,
            })
            .collect();
        let decisions = resolution::plan(&plan_sets, &held, &holders_now, Uuid::now_v7);

        // New customers, then every new identifier in one statement each.
        let mut new_ids: Vec<Uuid> = Vec::new();
        let mut new_kinds: Vec<i16> = Vec::new();
        let mut new_data: Vec<String> = Vec::new();
        let mut new_stage: Vec<Option<DateTime<Utc>>> = Vec::new();
        let mut rows: Vec<(Uuid, Ident)> = Vec::new();
        let mut attached_to: BTreeMap<Uuid, Vec<i16>> = BTreeMap::new();
        for (d, (_, traits, _)) in decisions.iter().zip(sets) {
            match d {
                Decision::Create {
                    customer_id,
                    idents,
                } => {
                    new_ids.push(*customer_id);
                    new_kinds.push(traits.kind as i16);
                    new_data.push(
                        serde_json::to_string(&traits.profile)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    );
                    new_stage.push(stage_time(traits.profile.relationship_stage));
                    rows.extend(idents.iter().map(|i| (*customer_id, i.clone())));
                }
                Decision::Found {
                    customer_id,
                    attach,
                } if !attach.is_empty() => {
                    rows.extend(attach.iter().map(|i| (*customer_id, i.clone())));
                    if current.contains_key(customer_id) {
                        attached_to
                            .entry(*customer_id)
                            .or_default()
                            .extend(attach.iter().map(|i| i.kind));
                    }
                }
                _ => {}
            }
        }
        if rows.is_empty() {
            return Ok(Some(BulkResolved {
                results: bulk_results(decisions, &current),
                customers: current,
            }));
        }
        // What the database gives new customers (version and times), to
        // answer with them without reading them back.
        let mut written: HashMap<Uuid, Written> = HashMap::new();
        if !new_ids.is_empty() {
            #[derive(sqlx::FromRow)]
            struct New {
                customer_id: Uuid,
                version: i64,
                create_time: DateTime<Utc>,
                update_time: DateTime<Utc>,
                stage_set_time: StageTime,
            }
            let rows: Vec<New> =
                sqlx::query_as(
                    "INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
                     SELECT $1, t.id, t.kind, 'active', t.data::jsonb, t.stage
                       FROM unnest($2::uuid[], $3::int2[], $4::text[], $5::timestamptz[]) AS t (id, kind, data, stage)
                     RETURNING customer_id, version, create_time, update_time, stage_set_time",
                )
                .bind(tenant)
                .bind(&new_ids)
                .bind(&new_kinds)
                .bind(&new_data)
                .bind(&new_stage)
                .fetch_all(&mut *tx)
                .await?;
            written = rows
                .into_iter()
                .map(|n| {
                    (
                        n.customer_id,
                        (n.version, n.create_time, n.update_time, n.stage_set_time),
                    )
                })
                .collect();
        }
        let existing: Vec<Uuid> = attached_to.keys().copied().collect();
        let mut next: HashMap<(Uuid, i16), i32> = sqlx::query_as::<_, (Uuid, i16, i32)>(
            "SELECT k.id, i.kind, max(i.position) + 1 FROM unnest($2::uuid[]) AS k (id)
               CROSS JOIN LATERAL (SELECT kind, position FROM identifiers
                                    WHERE tenant_id = $1 AND customer_id = k.id OFFSET 0) i
              GROUP BY k.id, i.kind",
        )
        .bind(tenant)
        .bind(&existing)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(c, k, p)| ((c, k), p))
        .collect();
        let mut positioned: Vec<(Uuid, Ident, i32)> = rows
            .into_iter()
            .map(|(c, i)| {
                let p = next.entry((c, i.kind)).or_insert(0);
                let pos = *p;
                *p += 1;
                (c, i, pos)
            })
            .collect();
        // One order for every writer: concurrent calls wait for each other
        // on the identifiers' unique index instead of deadlocking.
        positioned.sort_by_key(|a| a.1.key());
        match insert_positioned(&mut *tx, tenant, &positioned).await {
            Ok(()) => {}
            Err(e)
                if rapport_kit::error::is_unique_violation(&e, None)
                    || e.as_database_error().and_then(|d| d.code()).as_deref() == Some("40P01") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        touch(&mut *tx, tenant, &existing).await?;
        // Existing customers as they are now; new ones as they were written:
        // their traits and every identifier given them, by kind and position.
        let existing_now: Vec<Uuid> = current.keys().copied().collect();
        let mut after = load(&mut *tx, tenant, &existing_now).await?;
        let mut idents_of: HashMap<Uuid, Vec<(i16, i32, Ident)>> = HashMap::new();
        for (c, i, pos) in &positioned {
            if written.contains_key(c) {
                idents_of
                    .entry(*c)
                    .or_default()
                    .push((i.kind, *pos, i.clone()));
            }
        }
        for (d, (_, traits, _)) in decisions.iter().zip(sets) {
            let Decision::Create { customer_id, .. } = d else {
                continue;
            };
            let Some((version, create_time, update_time, stage_set_time)) =
                written.get(customer_id).copied()
            else {
                continue;
            };
            let mut idents = idents_of.remove(customer_id).unwrap_or_default();
            idents.sort_by_key(|(kind, pos, _)| (*kind, *pos));
            after.insert(
                *customer_id,
                Stored {
                    customer_id: *customer_id,
                    kind: traits.kind,
                    deleted: false,
                    profile: traits.profile.clone(),
                    idents: idents.into_iter().map(|(_, _, i)| i).collect(),
                    version,
                    create_time,
                    update_time,
                    delete_time: None,
                    stage_set_time,
                    consents: Vec::new(),
                    merged_ids: Vec::new(),
                },
            );
        }
        let mut events = Vec::with_capacity(new_ids.len() + existing.len());
        for id in &new_ids {
            if let Some(stored) = after.get(id) {
                events.push(event(
                    tenant,
                    *id,
                    Ev::CustomerCreated(ev::CustomerCreated {
                        customer_id: id.to_string(),
                        customer: snapshot(stored),
                        origin: ev::CustomerOrigin::Resolve as i32,
                    }),
                ));
            }
        }
        for (id, kinds) in &attached_to {
            if let Some(stored) = after.get(id) {
                let changed = [
                    (EMAIL, "emails"),
                    (PHONE, "phones"),
                    (EXTERNAL, "external_identifiers"),
                ]
                .into_iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(_, name)| name.to_string())
                .collect();
                events.push(event(
                    tenant,
                    *id,
                    Ev::CustomerUpdated(ev::CustomerUpdated {
                        customer_id: id.to_string(),
                        changed_fields: changed,
                        customer: snapshot(stored),
                    }),
                ));
            }
        }
        append(&mut *tx, events).await?;
        Ok(Some(BulkResolved {
            results: bulk_results(decisions, &after),
            customers: after,
        }))
    }
}

/// The stored outcomes of import items by request_id (within 24 hours):
/// (fingerprint, outcome, customer).
pub async fn import_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    keys: &[&RequestKey],
) -> Result<HashMap<String, (String, String, Uuid)>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = keys.iter().map(|k| k.request_id.as_str()).collect();
    let rows: Vec<(String, String, Option<Value>)> = sqlx::query_as(
        // One key lookup per id (a lateral subquery the planner cannot
        // flatten), whatever the statistics say about the tenant.
        "SELECT k.request_id, k.fingerprint, k.result
           FROM unnest($3::text[]) AS r (id)
           CROSS JOIN LATERAL (
               SELECT request_id, fingerprint, result FROM idempotency_keys
                WHERE tenant_id = $1 AND method = $2 AND request_id = r.id
                  AND create_time >= now() - interval '24 hours'
                LIMIT 1) k",
    )
    .bind(tenant)
    .bind(method)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(rid, fp, result)| {
            let r = result?;
            let outcome = r.get("outcome")?.as_str()?.to_string();
            let id = Uuid::parse_str(r.get("customer_id")?.as_str()?).ok()?;
            Some((rid, (fp, outcome, id)))
        })
        .collect())
}

/// Remembers import items' outcomes under their request_ids, taking over
/// keys older than 24 hours, in one statement. False when a key was taken
/// meanwhile by a concurrent import (nothing then is to be kept: the
/// caller rolls back and tries again).
pub async fn remember_import_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    keys: &[(&RequestKey, Value, Uuid)],
) -> std::result::Result<bool, sqlx::Error> {
    if keys.is_empty() {
        return Ok(true);
    }
    let ids: Vec<&str> = keys.iter().map(|k| k.0.request_id.as_str()).collect();
    let fingerprints: Vec<&str> = keys.iter().map(|k| k.0.fingerprint.as_str()).collect();
    let results: Vec<String> = keys.iter().map(|k| k.1.to_string()).collect();
    let customers: Vec<Uuid> = keys.iter().map(|k| k.2).collect();
    let stored: i64 = sqlx::query_scalar(
        "WITH s AS (
             INSERT INTO idempotency_keys AS k (tenant_id, method, request_id, fingerprint, result, customer_ids)
             SELECT $1, $2, t.rid, t.fp, t.result::jsonb, ARRAY[t.customer]
               FROM unnest($3::text[], $4::text[], $5::text[], $6::uuid[]) AS t (rid, fp, result, customer)
             ON CONFLICT (tenant_id, method, request_id) DO UPDATE
                 SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result,
                     customer_ids = EXCLUDED.customer_ids, create_time = now()
                 WHERE k.create_time < now() - interval '24 hours'
             RETURNING 1)
         SELECT count(*) FROM s",
    )
    .bind(tenant)
    .bind(method)
    .bind(&ids)
    .bind(&fingerprints)
    .bind(&results)
    .bind(&customers)
    .fetch_one(&mut *conn)
    .await?;
    Ok(stored == keys.len() as i64)
}

/// Sets the new profiles of existing customers changed by an import, in one
/// statement, and publishes CustomerUpdated for each: (customer, its next
/// state, the fields that changed, whether its stage changed).
pub async fn apply_import_updates(
    conn: &mut PgConnection,
    tenant: Uuid,
    changes: &[(Uuid, &Validated, &[&'static str], bool)],
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let mut data = Vec::with_capacity(changes.len());
    for c in changes {
        data.push(
            serde_json::to_string(&c.1.profile).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    let stages: Vec<bool> = changes.iter().map(|c| c.3).collect();
    sqlx::query(
        "UPDATE customers c SET data = t.data::jsonb, version = c.version + 1, update_time = now(),
                stage_set_time = CASE WHEN t.stage THEN now() ELSE c.stage_set_time END
           FROM unnest($2::uuid[], $3::text[], $4::bool[]) AS t (id, data, stage)
          WHERE c.tenant_id = $1 AND c.customer_id = t.id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&data)
    .bind(&stages)
    .execute(&mut *conn)
    .await?;
    let after = load(conn, tenant, &ids).await?;
    let events = changes
        .iter()
        .filter_map(|(id, _, changed, _)| {
            let stored = after.get(id)?;
            Some(event(
                tenant,
                *id,
                Ev::CustomerUpdated(ev::CustomerUpdated {
                    customer_id: id.to_string(),
                    changed_fields: changed.iter().map(ToString::to_string).collect(),
                    customer: snapshot(stored),
                }),
            ))
        })
        .collect();
    append(conn, events).await
}

/// The answer of each set, with the customers as they are at the end of
/// the call.
fn bulk_results(
    decisions: Vec<crate::domain::resolution::Decision>,
    customers: &HashMap<Uuid, Stored>,
) -> Vec<Option<Resolution>> {
    use crate::domain::resolution::Decision;
    decisions
        .into_iter()
        .map(|d| match d {
            Decision::NotFound => None,
            Decision::Conflict(m) => Some(Resolution::Conflict(m)),
            Decision::Create { customer_id, .. } => {
                customers.get(&customer_id).map(|c| Resolution::Resolved {
                    customer: Box::new(c.clone()),
                    created: true,
                    attached: Vec::new(),
                })
            }
            Decision::Found {
                customer_id,
                attach,
            } => customers.get(&customer_id).map(|c| Resolution::Resolved {
                customer: Box::new(c.clone()),
                created: false,
                attached: attach,
            }),
        })
        .collect()
}

/// Inserts identifiers of several customers, each with its position.
async fn insert_positioned(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, Ident, i32)],
) -> std::result::Result<(), sqlx::Error> {
    let customers: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let kinds: Vec<i16> = rows.iter().map(|r| r.1.kind).collect();
    let systems: Vec<&str> = rows.iter().map(|r| r.1.system.as_str()).collect();
    let values: Vec<&str> = rows.iter().map(|r| r.1.value.as_str()).collect();
    let positions: Vec<i32> = rows.iter().map(|r| r.2).collect();
    let primaries: Vec<bool> = rows.iter().map(|r| r.1.primary).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.1.label.as_str()).collect();
    let keys: Vec<String> = rows
        .iter()
        .map(|r| duplicates::match_key(r.1.kind, &r.1.value))
        .collect();
    sqlx::query(
        "INSERT INTO identifiers (tenant_id, customer_id, kind, system, value, position, is_primary, label, match_key)
         SELECT $1, * FROM unnest($2::uuid[], $3::int2[], $4::text[], $5::text[], $6::int4[], $7::bool[], $8::text[], $9::text[])",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&positions)
    .bind(&primaries)
    .bind(&labels)
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The next free position of each identifier kind of a customer.
async fn next_positions(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<HashMap<i16, i32>> {
    let rows: Vec<(i16, i32)> = sqlx::query_as(
        "SELECT kind, max(position) + 1 FROM identifiers WHERE tenant_id = $1 AND customer_id = $2 GROUP BY kind",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Merge and unmerge.

/// What a merged customer brought, kept until the unmerge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergeSnapshot {
    /// Its identifiers as they were (positions, primary flags, labels).
    pub identifiers: Vec<IdentRow>,
    /// Its contact links as they were.
    pub links: Vec<LinkRow>,
    /// Ids of the links that moved to the survivor (the others were dropped
    /// because the survivor already had the same link).
    pub moved_links: Vec<Uuid>,
    /// The consent records whose history moved to the survivor.
    pub consent_record_ids: Vec<Uuid>,
    /// What the survivor's profile took.
    pub taken: Taken,
    /// Whether the survivor's stage came from the merged customer.
    pub stage_taken: bool,
}

async fn idents_of(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Vec<IdentRow>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, kind, system, value, position, is_primary, label FROM identifiers
          WHERE tenant_id = $1 AND customer_id = $2 ORDER BY kind, position, value",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

async fn links_of(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Vec<LinkRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        link_cols!(),
        " FROM contact_links WHERE tenant_id = $1 AND (person_id = $2 OR organization_id = $2)
          ORDER BY create_time, contact_link_id"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// The records in force of a holder, by (channel, purpose).
async fn in_force(
    conn: &mut PgConnection,
    tenant: Uuid,
    holder: Uuid,
) -> Result<BTreeMap<(i16, i16), ConsentRow>> {
    let rows: Vec<ConsentRow> = sqlx::query_as(concat!(
        "SELECT DISTINCT ON (channel, purpose) ",
        consent_cols!(),
        " FROM consent_records WHERE tenant_id = $1 AND holder_id = $2
          ORDER BY channel, purpose, effective_time DESC, record_time DESC, consent_record_id DESC"
    ))
    .bind(tenant)
    .bind(holder)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.channel, r.purpose), r))
        .collect())
}

fn consent_event(tenant: Uuid, r: &ConsentRow, previous: i32) -> NewEvent {
    let p = r.to_proto();
    event(
        tenant,
        r.holder_id,
        Ev::ConsentChanged(ev::ConsentChanged {
            customer_id: r.holder_id.to_string(),
            consent_record_id: r.consent_record_id.to_string(),
            channel: p.channel,
            purpose: p.purpose,
            status: i32::from(r.status),
            previous_status: previous,
            source: r.source.clone(),
            effective_time: Some(timestamp(r.effective_time)),
        }),
    )
}

#[allow(clippy::too_many_arguments)]
async fn insert_consent(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    holder: Uuid,
    channel: i16,
    purpose: i16,
    status: i16,
    source: &str,
    evidence: &str,
    effective_time: DateTime<Utc>,
    recorded_by: &str,
) -> Result<ConsentRow> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO consent_records (tenant_id, consent_record_id, customer_id, holder_id, channel, purpose, status, source, evidence, effective_time, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
        consent_cols!()
    ))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(customer)
    .bind(holder)
    .bind(channel)
    .bind(purpose)
    .bind(status)
    .bind(source)
    .bind(evidence)
    .bind(effective_time)
    .bind(recorded_by)
    .fetch_one(&mut *conn)
    .await?)
}

/// MergeCustomers: `merged` is absorbed into `survivor`.
pub async fn merge(
    pool: &PgPool,
    tenant: Uuid,
    survivor: Uuid,
    merged: Uuid,
    survivor_etag: &str,
    key: Option<&RequestKey>,
) -> Result<(Stored, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, tenant, "MergeCustomers", key).await? {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let target = follow(&mut conn, tenant, survivor).await?;
        let time = first["merge_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        return Ok((load_one(&mut conn, tenant, target).await?, time));
    }
    // Lock both in id order, so two merges of the same pair cannot deadlock.
    let (a, b) = if survivor < merged {
        (survivor, merged)
    } else {
        (merged, survivor)
    };
    let ra = lock_row(&mut tx, tenant, a).await?;
    let rb = lock_row(&mut tx, tenant, b).await?;
    let (rs, rm) = if a == survivor { (ra, rb) } else { (rb, ra) };
    let rs = match rs {
        Some(r) if r.status != "erased" => r,
        _ => return Err(customer_not_found(survivor)),
    };
    let rm = match rm {
        Some(r) if r.status != "erased" => r,
        _ => return Err(customer_not_found(merged)),
    };
    if rm.status == "merged" {
        if rm.merged_into == Some(survivor) && rs.status != "merged" {
            // Already done: the survivor, unchanged.
            let stored = load_one(&mut tx, tenant, survivor).await?;
            let time = sqlx::query_scalar(
                "SELECT merge_time FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
            )
            .bind(tenant)
            .bind(merged)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(rm.update_time);
            tx.rollback().await?;
            return Ok((stored, time));
        }
        let into = follow(&mut tx, tenant, merged).await?;
        return Err(precondition(format!(
            "customer {merged} was already merged into customer {into}"
        )));
    }
    if rs.status == "merged" {
        let into = follow(&mut tx, tenant, survivor).await?;
        return Err(precondition(format!(
            "customer {survivor} was merged into customer {into}; merge into the survivor instead"
        )));
    }
    if rs.kind != rm.kind {
        return Err(precondition(
            "a person and an organisation cannot be merged: the two customers differ in kind",
        ));
    }
    if rs.status == "deleted" || rm.status == "deleted" {
        return Err(precondition(
            "a soft-deleted customer cannot be merged; undelete it first",
        ));
    }
    check_etag(survivor_etag, rs.version)?;

    // Limits of the union.
    let s_idents = idents_of(&mut tx, tenant, survivor).await?;
    let m_idents = idents_of(&mut tx, tenant, merged).await?;
    for (kind, limit, name) in [
        (EMAIL, MAX_EMAILS, "e-mail addresses"),
        (PHONE, MAX_PHONES, "phone numbers"),
        (EXTERNAL, MAX_EXTERNAL, "external identifiers"),
    ] {
        let n = s_idents.iter().filter(|i| i.kind == kind).count()
            + m_idents.iter().filter(|i| i.kind == kind).count();
        if n > limit {
            return Err(precondition(format!(
                "together the two customers have {n} {name}, more than the {limit} a customer may have"
            )));
        }
    }
    let s_links = links_of(&mut tx, tenant, survivor).await?;
    let m_links = links_of(&mut tx, tenant, merged).await?;
    let same_link = |l: &LinkRow, s: &LinkRow| {
        l.role == s.role
            && if l.person_id == merged {
                s.person_id == survivor && s.organization_id == l.organization_id
            } else {
                s.organization_id == survivor && s.person_id == l.person_id
            }
    };
    let moving: Vec<&LinkRow> = m_links
        .iter()
        .filter(|l| !s_links.iter().any(|s| same_link(l, s)))
        .collect();
    let link_limit =
        if i32::from(rs.kind) == rapport_proto::rapport::profile::v1::CustomerKind::Person as i32 {
            MAX_LINKS_PER_PERSON
        } else {
            MAX_LINKS_PER_ORGANIZATION
        };
    let link_count = (s_links.len() + moving.len()) as i64;
    if link_count > link_limit {
        return Err(precondition(format!(
            "together the two customers have {link_count} contact links, more than the {link_limit} allowed"
        )));
    }

    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let s_before = load_one(&mut tx, tenant, survivor).await?;
    let m_before = load_one(&mut tx, tenant, merged).await?;

    // Identifiers: the merged customer's move, after the survivor's.
    let start = next_positions(&mut tx, tenant, survivor).await?;
    let s_has_primary: HashSet<i16> = s_idents
        .iter()
        .filter(|i| i.is_primary)
        .map(|i| i.kind)
        .collect();
    for i in &m_idents {
        sqlx::query(
            "UPDATE identifiers SET customer_id = $2, position = $3, is_primary = $4
              WHERE tenant_id = $1 AND kind = $5 AND system = $6 AND value = $7",
        )
        .bind(tenant)
        .bind(survivor)
        .bind(start.get(&i.kind).copied().unwrap_or(0) + i.position)
        .bind(i.is_primary && !s_has_primary.contains(&i.kind))
        .bind(i.kind)
        .bind(&i.system)
        .bind(&i.value)
        .execute(&mut *tx)
        .await?;
    }

    // Contact links.
    let survivor_has_primary_link = s_links
        .iter()
        .any(|l| l.organization_id == survivor && l.is_primary);
    let mut moved_links = Vec::new();
    for l in &m_links {
        let moves = moving
            .iter()
            .any(|m| m.contact_link_id == l.contact_link_id);
        if moves {
            let keep_primary =
                l.is_primary && !(l.organization_id == merged && survivor_has_primary_link);
            sqlx::query(
                "UPDATE contact_links SET
                    person_id = CASE WHEN person_id = $3 THEN $4 ELSE person_id END,
                    organization_id = CASE WHEN organization_id = $3 THEN $4 ELSE organization_id END,
                    is_primary = $5, update_time = now()
                  WHERE tenant_id = $1 AND contact_link_id = $2",
            )
            .bind(tenant)
            .bind(l.contact_link_id)
            .bind(merged)
            .bind(survivor)
            .bind(keep_primary)
            .execute(&mut *tx)
            .await?;
            moved_links.push(l.contact_link_id);
        } else {
            sqlx::query("DELETE FROM contact_links WHERE tenant_id = $1 AND contact_link_id = $2")
                .bind(tenant)
                .bind(l.contact_link_id)
                .execute(&mut *tx)
                .await?;
        }
    }

    // Consents: histories join; the most restrictive record in force wins.
    let s_force = in_force(&mut tx, tenant, survivor).await?;
    let m_force = in_force(&mut tx, tenant, merged).await?;
    let moved_records: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE consent_records SET holder_id = $3 WHERE tenant_id = $1 AND holder_id = $2
         RETURNING consent_record_id",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .fetch_all(&mut *tx)
    .await?;
    let mut keys: Vec<(i16, i16)> = s_force.keys().chain(m_force.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    let mut consent_events = Vec::new();
    for k in keys {
        let s = s_force.get(&k).map(ConsentRow::rec);
        let m = m_force.get(&k).map(ConsentRow::rec);
        if let MergeConsent::Append {
            status,
            effective_time,
        } = consent_rules::merge_decision(s.as_ref(), m.as_ref(), now)
        {
            let row = insert_consent(
                &mut tx,
                tenant,
                survivor,
                survivor,
                k.0,
                k.1,
                status as i16,
                "rapport:merge",
                &format!("merge of customer {merged}"),
                effective_time,
                SERVICE_PRINCIPAL,
            )
            .await?;
            let previous = s.map_or(0, |r| r.status);
            if previous != status {
                consent_events.push(consent_event(tenant, &row, previous));
            }
        }
    }

    // Profile fields.
    let (profile, taken) = merge_rules::merge_profiles(&s_before.profile, &m_before.profile);
    let stage_taken = profile.relationship_stage != s_before.profile.relationship_stage;
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE WHEN $4 THEN now() ELSE stage_set_time END
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(survivor)
    .bind(Json(&profile))
    .bind(stage_taken)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE customers SET status = 'merged', merged_into = $3, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .execute(&mut *tx)
    .await?;
    // Links' counterparts changed too.
    let counterparts: Vec<Uuid> = m_links
        .iter()
        .map(|l| {
            if l.person_id == merged {
                l.organization_id
            } else {
                l.person_id
            }
        })
        .collect();
    touch(&mut tx, tenant, &counterparts).await?;
    let (first, second) = if survivor < merged {
        (survivor, merged)
    } else {
        (merged, survivor)
    };
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *tx)
    .await?;
    let snapshot_doc = MergeSnapshot {
        identifiers: m_idents.clone(),
        links: m_links.clone(),
        moved_links,
        consent_record_ids: moved_records,
        taken,
        stage_taken,
    };
    sqlx::query(
        "INSERT INTO merges (tenant_id, merged_customer_id, survivor_customer_id, merge_time, snapshot)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .bind(now)
    .bind(Json(&snapshot_doc))
    .execute(&mut *tx)
    .await?;

    let stored = load_one(&mut tx, tenant, survivor).await?;
    let mut events = vec![event(
        tenant,
        merged,
        Ev::CustomerMerged(ev::CustomerMerged {
            survivor_customer_id: survivor.to_string(),
            merged_customer_id: merged.to_string(),
            merge_time: Some(timestamp(now)),
            moved_identifiers: m_idents
                .iter()
                .map(|i| identifier(i32::from(i.kind), &i.system, &i.value))
                .collect(),
            survivor: snapshot(&stored),
        }),
    )];
    events.extend(consent_events);
    append(&mut tx, events).await?;
    remember(
        &mut tx,
        tenant,
        "MergeCustomers",
        key,
        json!({"survivor_customer_id": survivor.to_string(), "merge_time": now.to_rfc3339()}),
        &[survivor, merged],
    )
    .await?;
    tx.commit().await?;
    Ok((stored, now))
}

/// UnmergeCustomers: `merged` comes back with what it brought.
pub async fn unmerge(
    pool: &PgPool,
    tenant: Uuid,
    merged: Uuid,
    key: Option<&RequestKey>,
) -> Result<(Stored, Stored)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, tenant, "UnmergeCustomers", key).await? {
        tx.rollback().await?;
        let survivor = first["survivor_customer_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without survivor"))?;
        let mut conn = pool.acquire().await?;
        let restored = follow(&mut conn, tenant, merged).await?;
        let survivor = follow(&mut conn, tenant, survivor).await?;
        let r = load_one(&mut conn, tenant, restored).await?;
        let s = load_one(&mut conn, tenant, survivor).await?;
        return Ok((r, s));
    }
    let rm = match lock_row(&mut tx, tenant, merged).await? {
        Some(r) if r.status != "erased" => r,
        _ => return Err(customer_not_found(merged)),
    };
    let Some(survivor) = rm.merged_into.filter(|_| rm.status == "merged") else {
        return Err(precondition(format!(
            "customer {merged} is not merged into another customer"
        )));
    };
    let rs = lock_row(&mut tx, tenant, survivor)
        .await?
        .ok_or_else(|| customer_not_found(survivor))?;
    if rs.status == "merged" {
        return Err(precondition(format!(
            "customer {merged} was merged into {survivor}, which was itself merged afterwards; unmerge {survivor} first"
        )));
    }
    let snap: Json<MergeSnapshot> = sqlx::query_scalar(
        "SELECT snapshot FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::internal(format!("merge of {merged} has no snapshot")))?;
    let snap = snap.0;

    // Identifiers: those still with the survivor go back; those nobody holds
    // are given back; those a third customer now holds stay there.
    let mut restored_idents = Vec::new();
    for i in &snap.identifiers {
        let holder: Option<Uuid> = sqlx::query_scalar(
            "SELECT customer_id FROM identifiers WHERE tenant_id = $1 AND kind = $2 AND system = $3 AND value = $4",
        )
        .bind(tenant)
        .bind(i.kind)
        .bind(&i.system)
        .bind(&i.value)
        .fetch_optional(&mut *tx)
        .await?;
        match holder {
            Some(h) if h == survivor => {
                sqlx::query(
                    "UPDATE identifiers SET customer_id = $2, position = $3, is_primary = $4, label = $5
                      WHERE tenant_id = $1 AND kind = $6 AND system = $7 AND value = $8",
                )
                .bind(tenant)
                .bind(merged)
                .bind(i.position)
                .bind(i.is_primary)
                .bind(&i.label)
                .bind(i.kind)
                .bind(&i.system)
                .bind(&i.value)
                .execute(&mut *tx)
                .await?;
                restored_idents.push(i.clone());
            }
            None => {
                let ident = i.ident();
                let start: HashMap<i16, i32> = [(i.kind, i.position)].into_iter().collect();
                insert_idents(&mut tx, tenant, merged, &[ident], &start)
                    .await
                    .map_err(unique_to_error)?;
                restored_idents.push(i.clone());
            }
            Some(_) => {}
        }
    }
    // The survivor keeps one primary per kind.
    sqlx::query(
        "UPDATE identifiers i SET is_primary = true
           FROM (SELECT DISTINCT ON (kind) kind, system, value FROM identifiers
                  WHERE tenant_id = $1 AND customer_id = $2 AND kind IN (1, 2)
                  ORDER BY kind, position, value) f
          WHERE i.tenant_id = $1 AND i.kind = f.kind AND i.system = f.system AND i.value = f.value
            AND NOT EXISTS (SELECT 1 FROM identifiers p WHERE p.tenant_id = $1 AND p.customer_id = $2
                             AND p.kind = f.kind AND p.is_primary)",
    )
    .bind(tenant)
    .bind(survivor)
    .execute(&mut *tx)
    .await?;

    // Contact links, as they were at the merge.
    for l in &snap.links {
        sqlx::query("DELETE FROM contact_links WHERE tenant_id = $1 AND contact_link_id = $2")
            .bind(tenant)
            .bind(l.contact_link_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO contact_links (tenant_id, contact_link_id, person_id, organization_id, role, job_title,
                                        start_date, end_date, end_day, is_primary, create_time, update_time)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
              WHERE EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $3 AND status IN ('active', 'deleted', 'merged'))
                AND EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $4 AND status IN ('active', 'deleted', 'merged'))
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(l.contact_link_id)
        .bind(l.person_id)
        .bind(l.organization_id)
        .bind(l.role)
        .bind(&l.job_title)
        .bind(l.start_date.as_ref())
        .bind(l.end_date.as_ref())
        .bind(l.end_date.as_ref().and_then(|d| d.0.naive()))
        .bind(l.is_primary)
        .bind(l.create_time)
        .bind(l.update_time)
        .execute(&mut *tx)
        .await?;
    }

    // Consent history goes back; the survivor keeps its records in force.
    sqlx::query(
        "UPDATE consent_records SET holder_id = $2 WHERE tenant_id = $1 AND consent_record_id = ANY($3)",
    )
    .bind(tenant)
    .bind(merged)
    .bind(&snap.consent_record_ids)
    .execute(&mut *tx)
    .await?;

    // Profile fields the survivor took and has not changed since.
    let current = load_one(&mut tx, tenant, survivor).await?;
    let profile = merge_rules::unmerge_profile(&current.profile, &snap.taken);
    let stage_back =
        snap.stage_taken && profile.relationship_stage != current.profile.relationship_stage;
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE WHEN $4 THEN NULL ELSE stage_set_time END
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(survivor)
    .bind(Json(&profile))
    .bind(stage_back && profile.relationship_stage == 0)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE customers SET status = 'active', merged_into = NULL, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .execute(&mut *tx)
    .await?;
    let counterparts: Vec<Uuid> = snap
        .links
        .iter()
        .map(|l| {
            if l.person_id == merged {
                l.organization_id
            } else {
                l.person_id
            }
        })
        .collect();
    touch(&mut tx, tenant, &counterparts).await?;
    sqlx::query("DELETE FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2")
        .bind(tenant)
        .bind(merged)
        .execute(&mut *tx)
        .await?;
    let restored = load_one(&mut tx, tenant, merged).await?;
    let survivor_now = load_one(&mut tx, tenant, survivor).await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    append(
        &mut tx,
        vec![event(
            tenant,
            merged,
            Ev::CustomerUnmerged(ev::CustomerUnmerged {
                survivor_customer_id: survivor.to_string(),
                restored_customer_id: merged.to_string(),
                unmerge_time: Some(timestamp(now)),
                restored_identifiers: restored_idents
                    .iter()
                    .map(|i| identifier(i32::from(i.kind), &i.system, &i.value))
                    .collect(),
                customer: snapshot(&restored),
                survivor: snapshot(&survivor_now),
            }),
        )],
    )
    .await?;
    remember(
        &mut tx,
        tenant,
        "UnmergeCustomers",
        key,
        json!({"survivor_customer_id": survivor.to_string()}),
        &[survivor, merged],
    )
    .await?;
    tx.commit().await?;
    Ok((restored, survivor_now))
}

/// MarkNotDuplicate: records the pair (ordered) and returns its first mark time.
pub async fn mark_not_duplicate(
    pool: &PgPool,
    tenant: Uuid,
    a: Uuid,
    b: Uuid,
) -> Result<(Uuid, Uuid, DateTime<Utc>)> {
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    let mut tx = pool.begin().await?;
    lock_exact(&mut tx, tenant, first).await?;
    lock_exact(&mut tx, tenant, second).await?;
    sqlx::query(
        "INSERT INTO not_duplicates (tenant_id, first_id, second_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *tx)
    .await?;
    let time: DateTime<Utc> = sqlx::query_scalar(
        "SELECT mark_time FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((first, second, time))
}

// ---------------------------------------------------------------------------
// Duplicates.

/// FindDuplicates: every candidate pair of the tenant (or of `only`) scoring
/// at least `min_score`, best first.
pub async fn find_duplicates(
    pool: &PgPool,
    tenant: Uuid,
    only: Option<Uuid>,
    min_score: f64,
) -> Result<Vec<DuplicateCandidate>> {
    let mut conn = pool.acquire().await?;
    // Equivalent identifiers of live customers of the same kind.
    let ident_pairs: Vec<(Uuid, Uuid, i16, String, String)> = sqlx::query_as(
        "SELECT a.customer_id, b.customer_id, a.kind, a.value, b.value
           FROM identifiers a
           JOIN identifiers b ON b.tenant_id = a.tenant_id AND b.kind = a.kind AND b.system = a.system
                             AND b.match_key = a.match_key AND a.customer_id < b.customer_id
           JOIN customers ca ON ca.tenant_id = a.tenant_id AND ca.customer_id = a.customer_id AND ca.status = 'active'
           JOIN customers cb ON cb.tenant_id = b.tenant_id AND cb.customer_id = b.customer_id AND cb.status = 'active'
          WHERE a.tenant_id = $1 AND ca.kind = cb.kind
            AND ($2::uuid IS NULL OR a.customer_id = $2 OR b.customer_id = $2)",
    )
    .bind(tenant)
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    // Similar names with a place in common (same city, same postal code).
    #[allow(clippy::type_complexity)]
    let name_pairs: Vec<(Uuid, Uuid, f64, String, String, bool, String, bool, String)> = sqlx::query_as(
        "WITH names AS (
             SELECT customer_id, kind, n.name
               FROM customers c,
                    LATERAL (VALUES (c.data->>'display_name'),
                                    (nullif(concat_ws(' ', c.data->'person'->>'given_name', c.data->'person'->>'family_name'), '')),
                                    (c.data->'organization'->>'legal_name')) AS n(name)
              WHERE c.tenant_id = $1 AND c.status = 'active' AND coalesce(n.name, '') <> ''
         ), places AS (
             SELECT DISTINCT c.customer_id, upper(coalesce(a->>'country_code', '')) AS country,
                    lower(coalesce(a->>'locality', '')) AS locality, coalesce(a->>'locality', '') AS locality_shown,
                    upper(coalesce(a->>'postal_code', '')) AS postal_code
               FROM customers c, jsonb_array_elements(coalesce(c.data->'postal_addresses', '[]')) a
              WHERE c.tenant_id = $1 AND c.status = 'active'
         ), pairs AS (
             SELECT pa.customer_id AS a, pb.customer_id AS b,
                    bool_or(pa.locality <> '' AND pa.locality = pb.locality) AS same_city,
                    coalesce(max(pa.locality_shown) FILTER (WHERE pa.locality <> '' AND pa.locality = pb.locality), '') AS city,
                    bool_or(pa.postal_code <> '' AND pa.postal_code = pb.postal_code) AS same_postal,
                    coalesce(max(pa.country || ' ' || pa.postal_code) FILTER (WHERE pa.postal_code <> '' AND pa.postal_code = pb.postal_code), '') AS postal
               FROM places pa JOIN places pb
                 ON pb.country = pa.country AND pa.customer_id < pb.customer_id
                AND ((pa.locality <> '' AND pa.locality = pb.locality)
                     OR (pa.postal_code <> '' AND pa.postal_code = pb.postal_code))
              WHERE ($2::uuid IS NULL OR pa.customer_id = $2 OR pb.customer_id = $2)
              GROUP BY pa.customer_id, pb.customer_id
         )
         SELECT DISTINCT ON (p.a, p.b) p.a, p.b, similarity(lower(na.name), lower(nb.name))::float8 AS sim,
                na.name, nb.name, p.same_city, p.city, p.same_postal, p.postal
           FROM pairs p
           JOIN names na ON na.customer_id = p.a
           JOIN names nb ON nb.customer_id = p.b AND nb.kind = na.kind
          WHERE similarity(lower(na.name), lower(nb.name)) >= 0.6
          ORDER BY p.a, p.b, sim DESC, na.name, nb.name",
    )
    .bind(tenant)
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    let marks: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT first_id, second_id FROM not_duplicates WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut evidence: BTreeMap<(Uuid, Uuid), Vec<Evidence>> = BTreeMap::new();
    for (a, b, kind, va, vb) in ident_pairs {
        evidence
            .entry((a.min(b), a.max(b)))
            .or_default()
            .push(Evidence::Identifier {
                kind,
                first: va,
                second: vb,
            });
    }
    for (a, b, sim, na, nb, same_city, city, same_postal, postal) in name_pairs {
        let entry = evidence.entry((a.min(b), a.max(b))).or_default();
        for (same, postal_code, place) in [(same_city, false, city), (same_postal, true, postal)] {
            if same {
                entry.push(Evidence::Name {
                    similarity: sim,
                    names: (na.clone(), nb.clone()),
                    same_postal_code: postal_code,
                    place,
                });
            }
        }
    }
    let mut out: Vec<DuplicateCandidate> = evidence
        .into_iter()
        .filter(|(pair, _)| !marks.contains(pair))
        .map(|((a, b), ev)| duplicates::score(a, b, &ev))
        .filter(|c| c.score >= min_score)
        .collect();
    out.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then_with(|| x.first_customer_id.cmp(&y.first_customer_id))
            .then_with(|| x.second_customer_id.cmp(&y.second_customer_id))
    });
    Ok(out)
}

/// True when the tenant has a live or deleted customer `id` leads to.
pub async fn exists(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<bool> {
    let mut conn = pool.acquire().await?;
    Ok(follow(&mut conn, tenant, id).await.is_ok())
}

// ---------------------------------------------------------------------------
// Erasure.

/// EraseCustomer: removes every piece of personal data of the customer and of
/// the customers merged into it, scrubs their feed payloads, keeps
/// tombstones, and emits CustomerErased for each. Returns the erased merged
/// ids and the erase time.
pub async fn erase(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    reference: &str,
) -> Result<(Vec<Uuid>, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    let r = match lock_row(&mut tx, tenant, id).await? {
        Some(r) => r,
        None => return Err(customer_not_found(id)),
    };
    if r.status == "erased" {
        tx.rollback().await?;
        return Ok((Vec::new(), r.erase_time.unwrap_or(r.update_time)));
    }
    if r.status == "merged" {
        let survivor = follow(&mut tx, tenant, id).await?;
        return Err(precondition(format!(
            "customer {id} was merged into customer {survivor}: erase the survivor (which erases {id} too), or unmerge {id} first"
        )));
    }
    let merged = merged_into_each(&mut tx, tenant, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let mut all = vec![id];
    all.extend(merged.iter().copied());
    let all_text: Vec<String> = all.iter().map(Uuid::to_string).collect();

    // Values to look for in feed payloads that belong to other aggregates.
    let values: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&all)
    .fetch_all(&mut *tx)
    .await?;
    let mut needles = all_text.clone();
    needles.extend(values.into_iter().filter(|v| v.chars().count() >= 5));

    sqlx::query("DELETE FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)")
        .bind(tenant)
        .bind(&all)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM consent_records WHERE tenant_id = $1 AND (holder_id = ANY($2) OR customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    let counterparts: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM contact_links WHERE tenant_id = $1 AND (person_id = ANY($2) OR organization_id = ANY($2))
         RETURNING CASE WHEN person_id = ANY($2) THEN organization_id ELSE person_id END",
    )
    .bind(tenant)
    .bind(&all)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM merges WHERE tenant_id = $1 AND (merged_customer_id = ANY($2) OR survivor_customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND (first_id = ANY($2) OR second_id = ANY($2))",
    )
    .bind(tenant)
    .bind(&all)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND customer_ids && $2")
        .bind(tenant)
        .bind(&all)
        .execute(&mut *tx)
        .await?;
    let now: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE customers SET status = 'erased', data = '{}', merged_into = NULL, delete_time = NULL,
                stage_set_time = NULL, erase_time = now(), version = version + 1, update_time = now(),
                erase_reference = CASE WHEN customer_id = $3 THEN nullif($4, '') END
          WHERE tenant_id = $1 AND customer_id = ANY($2) RETURNING erase_time",
    )
    .bind(tenant)
    .bind(&all)
    .bind(id)
    .bind(reference)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .next()
    .unwrap_or_else(Utc::now);
    let remaining: Vec<Uuid> = counterparts
        .into_iter()
        .filter(|c| !all.contains(c))
        .collect();
    touch(&mut tx, tenant, &remaining).await?;

    // The feed: the customers' own events, the contact-link events naming
    // them, and any other event that mentions them or their identifiers
    // become `redacted` (protobuf keeps strings as plain UTF-8, so a byte
    // search finds every id and identifier an encoded event holds).
    let mentioned: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT sequence, aggregate_type, aggregate_id, event FROM outbox_events
          WHERE tenant_id = $1 AND event IS NOT NULL AND sequence IS NOT NULL
            AND ((aggregate_type = 'customer' AND aggregate_id = ANY($2))
                 OR EXISTS (SELECT 1 FROM unnest($3::text[]) n
                             WHERE position(convert_to(n, 'UTF8') in event) > 0))",
    )
    .bind(tenant)
    .bind(&all_text)
    .bind(&needles)
    .fetch_all(&mut *tx)
    .await?;
    let (erased_events, mentioning) = erasure_redactions(&mentioned, &all_text);
    feed::redact::<ProfileEvent>(&mut tx, tenant, &erased_events, RedactionReason::Erased).await?;
    feed::redact::<ProfileEvent>(
        &mut tx,
        tenant,
        &mentioning,
        RedactionReason::MentionedErased,
    )
    .await?;
    // Events appended before typed events (JSON payloads).
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'customer' AND aggregate_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&all_text)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id',
                    CASE WHEN payload->>'person_customer_id' = ANY($2) THEN payload->>'person_customer_id'
                         ELSE payload->>'organization_customer_id' END, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'contact_link'
            AND (payload->>'person_customer_id' = ANY($2) OR payload->>'organization_customer_id' = ANY($2))",
    )
    .bind(tenant)
    .bind(&all_text)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'redacted', true)
          WHERE tenant_id = $1 AND event IS NULL
            AND NOT (aggregate_type = 'customer' AND aggregate_id = ANY($2))
            AND payload->'erased' IS NULL
            AND EXISTS (SELECT 1 FROM unnest($3::text[]) n WHERE strpos(payload::text, n) > 0)",
    )
    .bind(tenant)
    .bind(&all_text)
    .bind(&needles)
    .execute(&mut *tx)
    .await?;
    let events = all
        .iter()
        .map(|c| {
            event(
                tenant,
                *c,
                Ev::CustomerErased(ev::CustomerErased {
                    customer_id: c.to_string(),
                    erase_time: Some(timestamp(now)),
                }),
            )
        })
        .collect();
    append(&mut tx, events).await?;
    tx.commit().await?;
    Ok((merged, now))
}

/// A feed event to reduce: (sequence, subject id).
type Redaction = (i64, String);

/// Which feed events an erasure of `erased` (customer ids) reduces, given the
/// events that mention any of them or their identifiers: (events about an
/// erased customer, events of others that mention one), each as (sequence,
/// subject id). Already reduced events are left as they are.
fn erasure_redactions(
    mentioned: &[(i64, String, String, Vec<u8>)],
    erased: &[String],
) -> (Vec<Redaction>, Vec<Redaction>) {
    let mut about = Vec::new();
    let mut others = Vec::new();
    for (seq, aggregate_type, aggregate_id, body) in mentioned {
        if let Ok(ProfileEvent {
            event: Some(Ev::Redacted(_)),
        }) = ProfileEvent::decode(body.as_slice())
        {
            continue;
        }
        if aggregate_type == "customer" && erased.contains(aggregate_id) {
            about.push((*seq, aggregate_id.clone()));
            continue;
        }
        if aggregate_type == "contact_link" {
            let link = match ProfileEvent::decode(body.as_slice()) {
                Ok(ProfileEvent {
                    event: Some(Ev::ContactLinked(l)),
                }) => l
                    .link
                    .map(|l| (l.person_customer_id, l.organization_customer_id)),
                Ok(ProfileEvent {
                    event: Some(Ev::ContactUnlinked(u)),
                }) => Some((u.person_customer_id, u.organization_customer_id)),
                _ => None,
            };
            if let Some(id) =
                link.and_then(|(p, o)| [p, o].into_iter().find(|id| erased.contains(id)))
            {
                about.push((*seq, id));
                continue;
            }
        }
        others.push((*seq, aggregate_id.clone()));
    }
    (about, others)
}

// ---------------------------------------------------------------------------
// Contact links.

/// A link to create or update.
#[derive(Debug, Clone)]
pub struct LinkInput {
    /// The person (as requested).
    pub person: Uuid,
    /// The organisation (as requested).
    pub organization: Uuid,
    /// ContactRole number.
    pub role: i16,
    /// Job title.
    pub job_title: String,
    /// First day.
    pub start_date: Option<Date>,
    /// Last day.
    pub end_date: Option<Date>,
    /// Primary contact of the organisation.
    pub primary: bool,
}

/// LinkContact: creates or updates the (person, organisation, role) link.
pub async fn link_contact(pool: &PgPool, tenant: Uuid, l: &LinkInput) -> Result<(LinkRow, bool)> {
    use rapport_proto::rapport::profile::v1::CustomerKind;
    let mut tx = pool.begin().await?;
    let person = follow(&mut tx, tenant, l.person).await?;
    let org = follow(&mut tx, tenant, l.organization).await?;
    let (a, b) = if person < org {
        (person, org)
    } else {
        (org, person)
    };
    let ra = lock_row(&mut tx, tenant, a).await?;
    let rb = lock_row(&mut tx, tenant, b).await?;
    let (rp, ro) = if a == person { (ra, rb) } else { (rb, ra) };
    let rp = rp.ok_or_else(|| customer_not_found(l.person))?;
    let ro = ro.ok_or_else(|| customer_not_found(l.organization))?;
    if i32::from(rp.kind) != CustomerKind::Person as i32 {
        return Err(precondition(format!("customer {person} is not a person")));
    }
    if i32::from(ro.kind) != CustomerKind::Organization as i32 {
        return Err(precondition(format!(
            "customer {org} is not an organisation"
        )));
    }
    if rp.status != "active" || ro.status != "active" {
        return Err(precondition(
            "a soft-deleted customer cannot be linked; undelete it first",
        ));
    }
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT contact_link_id FROM contact_links WHERE tenant_id = $1 AND person_id = $2 AND organization_id = $3 AND role = $4",
    )
    .bind(tenant)
    .bind(person)
    .bind(org)
    .bind(l.role)
    .fetch_optional(&mut *tx)
    .await?;
    if existing.is_none() {
        let (per_org, per_person): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE organization_id = $2), count(*) FILTER (WHERE person_id = $3)
               FROM contact_links WHERE tenant_id = $1 AND (organization_id = $2 OR person_id = $3)",
        )
        .bind(tenant)
        .bind(org)
        .bind(person)
        .fetch_one(&mut *tx)
        .await?;
        if per_org >= MAX_LINKS_PER_ORGANIZATION || per_person >= MAX_LINKS_PER_PERSON {
            return Err(Error::Api(ApiError::ResourceExhausted {
                message: format!(
                    "an organisation has at most {MAX_LINKS_PER_ORGANIZATION} contact links and a person at most {MAX_LINKS_PER_PERSON}"
                ),
                retry_after: None,
            }));
        }
    }
    let today = Utc::now().date_naive();
    let current = l
        .end_date
        .and_then(|d| d.naive())
        .is_none_or(|d| d >= today);
    if l.primary && current {
        sqlx::query(
            "UPDATE contact_links SET is_primary = false, update_time = now()
              WHERE tenant_id = $1 AND organization_id = $2 AND is_primary
                AND NOT (person_id = $3 AND role = $4)",
        )
        .bind(tenant)
        .bind(org)
        .bind(person)
        .bind(l.role)
        .execute(&mut *tx)
        .await?;
    }
    let (row, created): (LinkRow, bool) = {
        let row: LinkRow = sqlx::query_as(concat!(
            "INSERT INTO contact_links (tenant_id, contact_link_id, person_id, organization_id, role, job_title,
                                        start_date, end_date, end_day, is_primary)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, person_id, organization_id, role) DO UPDATE SET
                job_title = EXCLUDED.job_title, start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
                end_day = EXCLUDED.end_day, is_primary = EXCLUDED.is_primary, update_time = now()
             RETURNING ",
            link_cols!()
        ))
        .bind(tenant)
        .bind(Uuid::now_v7())
        .bind(person)
        .bind(org)
        .bind(l.role)
        .bind(&l.job_title)
        .bind(l.start_date.map(Json))
        .bind(l.end_date.map(Json))
        .bind(l.end_date.and_then(|d| d.naive()))
        .bind(l.primary)
        .fetch_one(&mut *tx)
        .await?;
        (row, existing.is_none())
    };
    touch(&mut tx, tenant, &[person, org]).await?;
    let mut ev = row.event();
    ev.tenant_id = tenant;
    append(&mut tx, vec![ev]).await?;
    tx.commit().await?;
    Ok((row, created))
}

/// UnlinkContact: removes one link.
pub async fn unlink_contact(
    pool: &PgPool,
    tenant: Uuid,
    person: Uuid,
    organization: Uuid,
    role: i16,
) -> Result<LinkRow> {
    let mut tx = pool.begin().await?;
    let not_found = || {
        Error::Api(ApiError::not_found(
            "contact link",
            format!("{person}/{organization}"),
        ))
    };
    let person = follow(&mut tx, tenant, person)
        .await
        .map_err(|_| not_found())?;
    let org = follow(&mut tx, tenant, organization)
        .await
        .map_err(|_| not_found())?;
    let row: LinkRow = sqlx::query_as(concat!(
        "DELETE FROM contact_links WHERE tenant_id = $1 AND person_id = $2 AND organization_id = $3 AND role = $4
         RETURNING ",
        link_cols!()
    ))
    .bind(tenant)
    .bind(person)
    .bind(org)
    .bind(role)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(not_found)?;
    touch(&mut tx, tenant, &[person, org]).await?;
    append(
        &mut tx,
        vec![NewEvent::new(
            tenant,
            "contact_link",
            row.contact_link_id.to_string(),
            "ContactUnlinked",
            &ProfileEvent {
                event: Some(Ev::ContactUnlinked(ev::ContactUnlinked {
                    contact_link_id: row.contact_link_id.to_string(),
                    person_customer_id: person.to_string(),
                    organization_customer_id: org.to_string(),
                    role: i32::from(role),
                })),
            },
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// A links page position: creation time (microseconds) and link id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkCursor {
    /// Creation time of the last link, in microseconds.
    pub t: i64,
    /// Its id.
    pub id: Uuid,
}

/// ListContacts (`of_organization`) or ListOrganizations: the links of a
/// customer (`id` followed through merges), oldest first.
#[allow(clippy::too_many_arguments)]
pub async fn list_links(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    of_organization: bool,
    role: i16,
    include_ended: bool,
    after: Option<&LinkCursor>,
    limit: i64,
) -> Result<(Vec<LinkRow>, Option<LinkCursor>)> {
    use rapport_proto::rapport::profile::v1::CustomerKind;
    let mut conn = pool.acquire().await?;
    let target = follow(&mut conn, tenant, id).await?;
    let r = row(&mut conn, tenant, target)
        .await?
        .ok_or_else(|| customer_not_found(id))?;
    let wanted = if of_organization {
        CustomerKind::Organization
    } else {
        CustomerKind::Person
    };
    if i32::from(r.kind) != wanted as i32 {
        return Err(precondition(if of_organization {
            format!("customer {id} is not an organisation")
        } else {
            format!("customer {id} is not a person")
        }));
    }
    let column = if of_organization {
        "organization_id"
    } else {
        "person_id"
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        link_cols!(),
        " FROM contact_links WHERE tenant_id = "
    ));
    q.push_bind(tenant)
        .push(format_args!(" AND {column} = "))
        .push_bind(target);
    if role != 0 {
        q.push(" AND role = ").push_bind(role);
    }
    if !include_ended {
        q.push(" AND (end_day IS NULL OR end_day >= current_date)");
    }
    if let Some(c) = after {
        q.push(" AND (create_time, contact_link_id) > (")
            .push_bind(DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default())
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    q.push(" ORDER BY create_time, contact_link_id LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<LinkRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|l| LinkCursor {
            t: l.create_time.timestamp_micros(),
            id: l.contact_link_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

// ---------------------------------------------------------------------------
// Consent.

/// A decision to record.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentInput {
    /// As requested.
    pub customer: Uuid,
    /// Channel number.
    pub channel: i16,
    /// Purpose number.
    pub purpose: i16,
    /// Status number.
    pub status: i16,
    /// Source.
    pub source: String,
    /// Evidence.
    pub evidence: String,
    /// Effective time (None: now).
    pub effective_time: Option<DateTime<Utc>>,
}

/// SetConsent: appends a record; returns it and whether the status in force
/// changed.
pub async fn set_consent(
    pool: &PgPool,
    tenant: Uuid,
    principal: &str,
    c: &ConsentInput,
    key: Option<&RequestKey>,
) -> Result<(ConsentRow, bool)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, tenant, "SetConsent", key).await? {
        let id = first["consent_record_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without record"))?;
        let row: Option<ConsentRow> = sqlx::query_as(concat!(
            "SELECT ",
            consent_cols!(),
            " FROM consent_records WHERE tenant_id = $1 AND consent_record_id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.rollback().await?;
        let row = row.ok_or_else(|| customer_not_found(c.customer))?;
        return Ok((row, first["changed"].as_bool().unwrap_or(false)));
    }
    let r = lock_following(&mut tx, tenant, c.customer).await?;
    let holder = r.customer_id;
    let before = in_force(&mut tx, tenant, holder)
        .await?
        .remove(&(c.channel, c.purpose));
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let row = insert_consent(
        &mut tx,
        tenant,
        holder,
        holder,
        c.channel,
        c.purpose,
        c.status,
        &c.source,
        &c.evidence,
        c.effective_time.unwrap_or(now),
        principal,
    )
    .await?;
    let after = in_force(&mut tx, tenant, holder)
        .await?
        .remove(&(c.channel, c.purpose));
    let previous = before.as_ref().map_or(0, |b| i32::from(b.status));
    let changed = after.as_ref().is_some_and(|a| {
        a.consent_record_id == row.consent_record_id && i32::from(row.status) != previous
    });
    touch(&mut tx, tenant, &[holder]).await?;
    if changed {
        append(&mut tx, vec![consent_event(tenant, &row, previous)]).await?;
    }
    remember(
        &mut tx,
        tenant,
        "SetConsent",
        key,
        json!({"consent_record_id": row.consent_record_id.to_string(), "changed": changed}),
        &[holder],
    )
    .await?;
    tx.commit().await?;
    Ok((row, changed))
}

/// The records in force for CheckConsent: whether the customer is deleted,
/// the channel's own record and the ANY record for the purpose.
pub async fn consent_state(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    channel: i16,
    purpose: i16,
) -> Result<(bool, Option<ConsentRow>, Option<ConsentRow>)> {
    let mut conn = pool.acquire().await?;
    let target = follow(&mut conn, tenant, customer).await?;
    let r = row(&mut conn, tenant, target)
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    let mut force = in_force(&mut conn, tenant, target).await?;
    let any = rapport_proto::rapport::profile::v1::ConsentChannel::Any as i16;
    let own = if channel == any {
        None
    } else {
        force.remove(&(channel, purpose))
    };
    let blanket = force.remove(&(any, purpose));
    Ok((r.status == "deleted", own, blanket))
}

/// A consent history position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsentCursor {
    /// Effective time of the last record (microseconds).
    pub t: i64,
    /// Its id.
    pub id: Uuid,
}

/// ListConsentHistory: newest effective time first, ties by record id.
pub async fn consent_history(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    channel: i16,
    purpose: i16,
    after: Option<&ConsentCursor>,
    limit: i64,
) -> Result<(Vec<ConsentRow>, Option<ConsentCursor>)> {
    let mut conn = pool.acquire().await?;
    let target = follow(&mut conn, tenant, customer).await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        consent_cols!(),
        " FROM consent_records WHERE tenant_id = "
    ));
    q.push_bind(tenant)
        .push(" AND holder_id = ")
        .push_bind(target);
    if channel != 0 {
        q.push(" AND channel = ").push_bind(channel);
    }
    if purpose != 0 {
        q.push(" AND purpose = ").push_bind(purpose);
    }
    if let Some(c) = after {
        q.push(" AND (effective_time, consent_record_id) < (")
            .push_bind(DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default())
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    q.push(" ORDER BY effective_time DESC, consent_record_id DESC LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<ConsentRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|r| ConsentCursor {
            t: r.effective_time.timestamp_micros(),
            id: r.consent_record_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

// ---------------------------------------------------------------------------
// Attribute definitions.

/// An `attribute_definitions` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DefinitionRow {
    /// Name.
    pub name: String,
    /// AttributeType number.
    pub r#type: i16,
    /// Required.
    pub required: bool,
    /// Description.
    pub description: String,
    /// AttributeDefinitionState number.
    pub state: i16,
    /// Version (etag).
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Changed.
    pub update_time: DateTime<Utc>,
    /// Deprecated.
    pub deprecate_time: Option<DateTime<Utc>>,
}

macro_rules! definition_cols {
    () => {
        "name, type, required, description, state, version, create_time, update_time, deprecate_time"
    };
}

impl DefinitionRow {
    /// The contract's definition.
    pub fn to_proto(&self) -> AttributeDefinition {
        AttributeDefinition {
            name: self.name.clone(),
            r#type: i32::from(self.r#type),
            required: self.required,
            description: self.description.clone(),
            state: i32::from(self.state),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            deprecate_time: self.deprecate_time.map(timestamp),
            etag: cust::etag(self.version),
        }
    }
}

/// CreateAttributeDefinition.
pub async fn create_definition(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    attribute_type: i16,
    required: bool,
    description: &str,
) -> Result<DefinitionRow> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1::text || '/attribute_definitions'))")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attribute_definitions WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    if count >= crate::domain::attributes::MAX_DEFINITIONS {
        return Err(Error::Api(ApiError::ResourceExhausted {
            message: "a tenant has at most 500 attribute definitions, deprecated ones included"
                .into(),
            retry_after: None,
        }));
    }
    let row: std::result::Result<DefinitionRow, sqlx::Error> = sqlx::query_as(concat!(
        "INSERT INTO attribute_definitions (tenant_id, name, type, required, description)
         VALUES ($1, $2, $3, $4, $5) RETURNING ",
        definition_cols!()
    ))
    .bind(tenant)
    .bind(name)
    .bind(attribute_type)
    .bind(required)
    .bind(description)
    .fetch_one(&mut *tx)
    .await;
    let row = match row {
        Ok(r) => r,
        Err(e) if rapport_kit::error::is_unique_violation(&e, None) => {
            return Err(Error::Api(ApiError::AlreadyExists(format!(
                "an attribute definition named {name:?} already exists (names are never reused)"
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(row)
}

/// ListAttributeDefinitions: by ascending name, after `after`.
pub async fn list_definitions(
    pool: &PgPool,
    tenant: Uuid,
    show_deprecated: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<(Vec<DefinitionRow>, Option<String>)> {
    let mut rows: Vec<DefinitionRow> = sqlx::query_as(concat!(
        "SELECT ",
        definition_cols!(),
        " FROM attribute_definitions WHERE tenant_id = $1 AND ($2 OR state = 1) AND name > $3
          ORDER BY name LIMIT $4"
    ))
    .bind(tenant)
    .bind(show_deprecated)
    .bind(after.unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|r| r.name.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// UpdateAttributeDefinition (description only) or, with `deprecate`,
/// DeprecateAttributeDefinition.
pub async fn change_definition(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    description: Option<&str>,
    etag: &str,
) -> Result<DefinitionRow> {
    let mut tx = pool.begin().await?;
    let current: DefinitionRow = sqlx::query_as(concat!(
        "SELECT ",
        definition_cols!(),
        " FROM attribute_definitions WHERE tenant_id = $1 AND name = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::Api(ApiError::not_found("attribute definition", name)))?;
    if !etag.is_empty() && etag != cust::etag(current.version) {
        return Err(Error::Api(ApiError::Aborted(
            "the definition changed since this etag was read".into(),
        )));
    }
    let row = match description {
        Some(d) => {
            if d == current.description {
                return Ok(current);
            }
            sqlx::query_as(concat!(
                "UPDATE attribute_definitions SET description = $3, version = version + 1, update_time = now()
                  WHERE tenant_id = $1 AND name = $2 RETURNING ",
                definition_cols!()
            ))
            .bind(tenant)
            .bind(name)
            .bind(d)
            .fetch_one(&mut *tx)
            .await?
        }
        None => {
            if current.state == 2 {
                return Ok(current);
            }
            sqlx::query_as(concat!(
                "UPDATE attribute_definitions SET state = 2, deprecate_time = now(), version = version + 1, update_time = now()
                  WHERE tenant_id = $1 AND name = $2 RETURNING ",
                definition_cols!()
            ))
            .bind(tenant)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(row)
}

/// Today's date in UTC, for birth-date checks.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Five minutes: how far in the future an effective time may be.
pub fn consent_future_slack() -> Duration {
    Duration::minutes(5)
}

/// The stored attribute value type, re-exported for filters.
pub type StoredValue = AttrValue;
