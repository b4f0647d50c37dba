//! The outbox: appending events in the writer's transaction, numbering them
//! once committed, reading them by sequence, and redacting them.

use super::*;

/// Appends events to the outbox of the connection's schema, in the caller's
/// transaction, in one round trip, without taking any lock. Their sequences
/// are given once the transaction has committed, by the first reader that
/// looks (see [`number_committed`] and the kit's migration 0006): each
/// tenant's events of the transaction take the tenant's next range, in the
/// order appended, so writers never wait on each other.
pub async fn append(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut counts: BTreeMap<Uuid, i32> = BTreeMap::new();
    for e in events {
        *counts.entry(e.tenant_id).or_default() += 1;
    }
    let tenants: Vec<Uuid> = counts.keys().copied().collect();
    let numbers: Vec<i32> = counts.values().copied().collect();
    let all_tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.aggregate_type).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let urls: Vec<&str> = events.iter().map(|e| e.event.type_url.as_str()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.event.value.as_slice()).collect();
    // Every event of one append comes from the same call, hence one trace.
    let traceparent = crate::telemetry::current_traceparent();
    // Announce the transaction's events per tenant (a second append of the
    // same transaction adds to its count and continues its ordinals), store
    // them, and tell readers of each tenant (the notification is delivered
    // when the transaction commits).
    let stored: i64 = sqlx::query_scalar(
        "WITH announced AS (
             INSERT INTO outbox_commits AS c (tenant_id, txid, events)
             SELECT t.tenant, pg_current_xact_id(), t.n
               FROM unnest($1::uuid[], $2::int4[]) AS t (tenant, n) ORDER BY t.tenant
             ON CONFLICT (tenant_id, txid) DO UPDATE SET events = c.events + EXCLUDED.events
             RETURNING tenant_id, events - $2[array_position($1, tenant_id)] AS base),
         stored AS (
             INSERT INTO outbox (tenant_id, txid, ordinal, aggregate_type, aggregate_id, event_type,
                                 event_type_url, event, traceparent)
             SELECT e.tenant, pg_current_xact_id(),
                    a.base + row_number() OVER (PARTITION BY e.tenant ORDER BY e.ord) - 1,
                    e.agg, e.id, e.kind, e.url, e.body, $9
               FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])
                    WITH ORDINALITY AS e (tenant, agg, id, kind, url, body, ord)
               JOIN announced a ON a.tenant_id = e.tenant
             RETURNING 1),
         told AS (
             SELECT count(pg_notify(current_schema() || '_outbox', t::text)) AS n
               FROM unnest($1::uuid[]) AS t)
         SELECT (SELECT count(*) FROM stored) + 0 * (SELECT n FROM told)",
    )
    .bind(&tenants)
    .bind(&numbers)
    .bind(&all_tenants)
    .bind(&types)
    .bind(&ids)
    .bind(&kinds)
    .bind(&urls)
    .bind(&bodies)
    .bind(traceparent)
    .fetch_one(&mut *conn)
    .await?;
    if stored != events.len() as i64 {
        return Err(sqlx::Error::Protocol(format!(
            "the outbox stored {stored} of {} events",
            events.len()
        )));
    }
    Ok(())
}

/// Replaces the data of events already on the feed of the connection's
/// schema with their envelope's `redacted` case (erasure: no event keeps
/// personal data of an erased customer). `events` are (sequence, subject id)
/// pairs of tenant `tenant`; their sequence, type and aggregate stay.
pub async fn redact<E: FeedEnvelope>(
    conn: &mut PgConnection,
    tenant: Uuid,
    events: &[(i64, String)],
    reason: RedactionReason,
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = events.iter().map(|(s, _)| *s).collect();
    let bodies: Vec<Vec<u8>> = events
        .iter()
        .map(|(_, subject)| redacted_body::<E>(subject, reason))
        .collect();
    // Events numbered per transaction: found through their transaction's range.
    let numbered = sqlx::query(
        "UPDATE outbox o SET payload = NULL, event_type_url = $4, event = t.body
           FROM unnest($2::bigint[], $3::bytea[]) AS t (seq, body)
           CROSS JOIN LATERAL (
               SELECT txid, first_sequence FROM outbox_commits
                WHERE tenant_id = $1 AND first_sequence <= t.seq
                ORDER BY first_sequence DESC LIMIT 1) c
          WHERE o.tenant_id = $1 AND o.txid = c.txid AND o.ordinal = t.seq - c.first_sequence",
    )
    .bind(tenant)
    .bind(&seqs)
    .bind(&bodies)
    .bind(E::TYPE_URL)
    .execute(&mut *conn)
    .await?;
    // Events numbered before per-tenant order: by their own sequence.
    let legacy = sqlx::query(
        "UPDATE outbox o SET payload = NULL, event_type_url = $4, event = t.body
           FROM unnest($2::bigint[], $3::bytea[]) AS t (seq, body)
          WHERE o.tenant_id = $1 AND o.sequence = t.seq",
    )
    .bind(tenant)
    .bind(&seqs)
    .bind(&bodies)
    .bind(E::TYPE_URL)
    .execute(&mut *conn)
    .await?;
    Ok(numbered.rows_affected() + legacy.rows_affected())
}

fn redacted_body<E: FeedEnvelope>(subject: &str, reason: RedactionReason) -> Vec<u8> {
    E::redacted(RedactedEvent {
        subject_id: subject.to_string(),
        reason: reason as i32,
    })
    .encode_to_vec()
}

/// Redacts every event of tenant `tenant` whose aggregate is one of `ids` of
/// type `aggregate_type` (see [`redact`]), those of the caller's
/// transaction included; the subject is the aggregate id.
pub async fn redact_aggregates<E: FeedEnvelope>(
    conn: &mut PgConnection,
    tenant: Uuid,
    aggregate_type: &str,
    ids: &[String],
    reason: RedactionReason,
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let bodies: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| redacted_body::<E>(id, reason))
        .collect();
    let done = sqlx::query(
        "UPDATE outbox o SET payload = NULL, event_type_url = $5, event = t.body
           FROM unnest($3::text[], $4::bytea[]) AS t (id, body)
          WHERE o.tenant_id = $1 AND o.aggregate_type = $2 AND o.aggregate_id = t.id",
    )
    .bind(tenant)
    .bind(aggregate_type)
    .bind(ids)
    .bind(&bodies)
    .bind(E::TYPE_URL)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    sequence: i64,
    tenant_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    payload: Option<serde_json::Value>,
    event_type_url: Option<String>,
    event: Option<Vec<u8>>,
    commit_time: DateTime<Utc>,
    traceparent: Option<String>,
}

impl From<OutboxRow> for ChangeEvent {
    // `payload` is set only for events appended before typed events.
    #[allow(deprecated)]
    fn from(r: OutboxRow) -> Self {
        ChangeEvent {
            sequence: r.sequence,
            tenant_id: r.tenant_id.to_string(),
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            event_type: r.event_type,
            commit_time: Some(crate::convert::timestamp(r.commit_time)),
            payload: r.payload.map(crate::convert::json_to_struct),
            event: match (r.event_type_url, r.event) {
                (Some(type_url), Some(value)) => Some(Any { type_url, value }),
                _ => None,
            },
            traceparent: r.traceparent.unwrap_or_default(),
        }
    }
}

const OUTBOX_COLUMNS: &str = "sequence, tenant_id, aggregate_type, aggregate_id, event_type, payload, \
     event_type_url, event, commit_time, traceparent";

/// The events of tenant `$1` after sequence `$2`, at most `$3`, in
/// sequence order: those numbered per transaction (through their transactions'
/// ranges) after those numbered before per-tenant order (all lower).
const TENANT_EVENTS: &str = "
    (SELECT o.sequence, o.tenant_id, o.aggregate_type, o.aggregate_id, o.event_type, o.payload,
            o.event_type_url, o.event, o.commit_time, o.traceparent
       FROM outbox o
      WHERE o.tenant_id = $1 AND o.sequence > $2
      ORDER BY o.sequence LIMIT $3)
    UNION ALL
    (SELECT c.first_sequence + o.ordinal, o.tenant_id, o.aggregate_type, o.aggregate_id, o.event_type,
            o.payload, o.event_type_url, o.event, o.commit_time, o.traceparent
       FROM ((SELECT txid, first_sequence FROM outbox_commits
               WHERE tenant_id = $1 AND first_sequence <= $2 + 1
               ORDER BY first_sequence DESC LIMIT 1)
             UNION ALL
             (SELECT txid, first_sequence FROM outbox_commits
               WHERE tenant_id = $1 AND first_sequence > $2 + 1 AND first_sequence <= $2 + $3)) c
       CROSS JOIN LATERAL (
           SELECT * FROM outbox o
            WHERE o.tenant_id = $1 AND o.txid = c.txid AND o.ordinal > $2 - c.first_sequence
            ORDER BY o.ordinal LIMIT $3) o
      ORDER BY 1 LIMIT $3)
    ORDER BY 1 LIMIT $3";

/// Reads up to `limit` events of `tenant` after `after` from the outbox of
/// the pool's schema, in sequence order, once what has committed is
/// numbered.
pub async fn read_after(
    pool: &PgPool,
    tenant: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeEvent>, sqlx::Error> {
    number_committed(pool, tenant).await?;
    read_numbered(pool, tenant, after, limit).await
}

/// [`read_after`] without numbering first (the caller just did).
async fn read_numbered(
    pool: &PgPool,
    tenant: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeEvent>, sqlx::Error> {
    let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTBOX_COLUMNS} FROM ({TENANT_EVENTS}) e"
    )))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Up to `limit` events of each of `tenants` after its sequence, grouped by
/// tenant (in the order given) and in sequence order within each.
pub(super) async fn read_tenants(
    pool: &PgPool,
    tenants: &[(Uuid, i64)],
    limit: i64,
) -> Result<Vec<ChangeEvent>, sqlx::Error> {
    let mut out = Vec::new();
    for (tenant, after) in tenants {
        out.extend(read_numbered(pool, *tenant, *after, limit).await?);
    }
    Ok(out)
}

/// The last sequence of each tenant of the feed (of `only` when given, of
/// `scope` when set), once the events committed by then are numbered (see
/// [`number_committed`]).
pub(super) async fn heads(
    pool: &PgPool,
    scope: Option<Uuid>,
    only: Option<&HashSet<Uuid>>,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let only: Option<Vec<Uuid>> = only.map(|o| o.iter().copied().collect());
    number_pending(pool, scope, only.as_deref()).await?;
    sqlx::query_as(
        "SELECT tenant_id, origin + issued FROM outbox_heads
          WHERE ($1::uuid IS NULL OR tenant_id = $1)
            AND ($2::uuid[] IS NULL OR tenant_id = ANY($2))",
    )
    .bind(scope)
    .bind(only)
    .fetch_all(pool)
    .await
}

/// [`number_committed`] for every tenant with events waiting for their
/// sequences (of `only` when given, of `scope` when set), tenant by tenant.
pub async fn number_pending(
    pool: &PgPool,
    scope: Option<Uuid>,
    only: Option<&[Uuid]>,
) -> Result<(), sqlx::Error> {
    let pending: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM outbox_commits
          WHERE first_sequence IS NULL
            AND ($1::uuid IS NULL OR tenant_id = $1)
            AND ($2::uuid[] IS NULL OR tenant_id = ANY($2))",
    )
    .bind(scope)
    .bind(only)
    .fetch_all(pool)
    .await?;
    for tenant in pending {
        number_committed(pool, tenant).await?;
    }
    Ok(())
}

/// Numbers the events of `tenant` whose transactions have committed and
/// have no sequences yet, on the feed of the connection's schema; returns
/// the tenant's last sequence (0 before its first event).
///
/// Writers do not number their events: numbering during their commits
/// would make every write of a tenant wait for the previous one to be
/// durable. Readers number them before they look at a tenant's head
/// (numberers of one tenant take turns, and each numbers only what has
/// committed, in the order the transactions committed), so a change that
/// waited for another comes after it, and a reader that sees sequence `s`
/// sees every earlier one.
/// Anything that reads `outbox_events` by sequence calls this first.
pub async fn number_committed<'c, E>(conn: E, tenant: Uuid) -> Result<i64, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query_scalar("SELECT outbox_number_committed($1)")
        .bind(tenant)
        .fetch_one(conn)
        .await
}

/// The last sequence of `tenant` on the feed of the pool's schema (0 before
/// its first event), once what has committed is numbered.
pub async fn head(pool: &PgPool, tenant: Uuid) -> Result<i64, sqlx::Error> {
    number_committed(pool, tenant).await
}
