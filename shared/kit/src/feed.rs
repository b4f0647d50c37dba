//! Change feeds (ARCHITECTURE.md, "The path of an event").
//!
//! A feed is ordered per tenant: each tenant's events are numbered in commit
//! order, and writers of different tenants never wait on each other.
//!
//! * [`append`] writes events to the service's `outbox` in the caller's
//!   transaction, so an event exists if and only if its change committed.
//! * [`serve_watch`] serves any service's `WatchChanges` (one policy for all):
//!   each tenant's backlog first, then live events, woken by `LISTEN/NOTIFY`
//!   naming the tenant (with a slow poll as a safety net).
//! * [`PeerFeed`] reads a peer's feed over gRPC; [`Consumer`] follows it and
//!   applies each tenant's events in a batch, in one transaction of its own
//!   schema with that tenant's cursor, so after any restart it resumes where
//!   it stopped and never applies an event twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use prost_types::Any;
use rapport_proto::rapport::common::v1::{
    ChangeEvent, FeedPosition, RedactedEvent, RedactionReason,
};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{ApiError, Violations};
use crate::shutdown::Shutdown;

/// A service's feed envelope: the message of its `events.proto` whose `oneof`
/// holds one case per event type, carried in `ChangeEvent.event`.
pub trait FeedEnvelope: prost::Message + Default + Sized {
    /// The type URL of `ChangeEvent.event` for this envelope.
    const TYPE_URL: &'static str;
    /// The envelope's `redacted` case.
    fn redacted(r: RedactedEvent) -> Self;
}

macro_rules! envelope {
    ($ty:ty, $name:literal, $case:path) => {
        impl FeedEnvelope for $ty {
            const TYPE_URL: &'static str = concat!("type.googleapis.com/", $name);
            fn redacted(r: RedactedEvent) -> Self {
                Self {
                    event: Some($case(r)),
                }
            }
        }
    };
}

envelope!(
    rapport_proto::rapport::profile::v1::ProfileEvent,
    "rapport.profile.v1.ProfileEvent",
    rapport_proto::rapport::profile::v1::profile_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::interaction::v1::InteractionEvent,
    "rapport.interaction.v1.InteractionEvent",
    rapport_proto::rapport::interaction::v1::interaction_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::segmentation::v1::SegmentationEvent,
    "rapport.segmentation.v1.SegmentationEvent",
    rapport_proto::rapport::segmentation::v1::segmentation_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::valuation::v1::ValuationEvent,
    "rapport.valuation.v1.ValuationEvent",
    rapport_proto::rapport::valuation::v1::valuation_event::Event::Redacted
);

/// An event to append to the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant whose data changed.
    pub tenant_id: Uuid,
    /// What kind of thing changed, e.g. `customer`.
    pub aggregate_type: &'static str,
    /// Its id.
    pub aggregate_id: String,
    /// What happened, e.g. `CustomerCreated`: the name of the envelope's case.
    pub event_type: &'static str,
    /// The typed event: the service's envelope, encoded.
    pub event: Any,
}

impl NewEvent {
    /// An event whose data is `envelope`.
    pub fn new<E: FeedEnvelope>(
        tenant_id: Uuid,
        aggregate_type: &'static str,
        aggregate_id: impl Into<String>,
        event_type: &'static str,
        envelope: &E,
    ) -> Self {
        Self {
            tenant_id,
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            event_type,
            event: Any {
                type_url: E::TYPE_URL.to_string(),
                value: envelope.encode_to_vec(),
            },
        }
    }
}

/// The typed event of `event` as envelope `E`: `None` for an event appended
/// before typed events, or one of another envelope, or one that does not
/// decode (logged: the producer and this consumer disagree on the contract).
pub fn decode<E: FeedEnvelope>(event: &ChangeEvent) -> Option<E> {
    let any = event.event.as_ref()?;
    if any.type_url != E::TYPE_URL {
        tracing::warn!(
            sequence = event.sequence,
            type_url = %any.type_url,
            expected = E::TYPE_URL,
            "feed event of an unexpected type; skipped"
        );
        return None;
    }
    match E::decode(any.value.as_slice()) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(sequence = event.sequence, error = %err, "feed event does not decode; skipped");
            None
        }
    }
}

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

/// Where a reader stands on a feed: per tenant, the sequence of the last
/// event it has; `default` for every tenant not listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The sequence for tenants not in `tenants`.
    pub default: i64,
    /// Per tenant, the sequence of the last event it has.
    pub tenants: HashMap<Uuid, i64>,
}

impl Position {
    /// The position at `after` in every tenant.
    pub fn at(after: i64) -> Self {
        Self {
            default: after,
            tenants: HashMap::new(),
        }
    }

    /// The sequence of the last event of `tenant` the reader has.
    pub fn after(&self, tenant: Uuid) -> i64 {
        self.tenants.get(&tenant).copied().unwrap_or(self.default)
    }

    /// Notes that the reader has `tenant`'s events up to `sequence`.
    pub fn advance(&mut self, tenant: Uuid, sequence: i64) {
        let at = self.tenants.entry(tenant).or_insert(self.default);
        *at = (*at).max(sequence);
    }

    /// The `positions` of a `WatchChangesRequest`.
    pub fn positions(&self) -> Vec<FeedPosition> {
        let mut out: Vec<FeedPosition> = self
            .tenants
            .iter()
            .filter(|(_, s)| **s != self.default)
            .map(|(t, s)| FeedPosition {
                tenant_id: t.to_string(),
                after_sequence: *s,
            })
            .collect();
        out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        out
    }
}

/// Most entries of `WatchChangesRequest.positions`.
pub const MAX_POSITIONS: usize = 100_000;

/// The reader's position from a `WatchChangesRequest`, validated: field
/// violations name `after_sequence` and `positions[i]`. On a call made for
/// `tenant`, a position may name only that tenant.
pub fn position_of(
    after_sequence: i64,
    positions: &[FeedPosition],
    tenant: Option<Uuid>,
) -> Result<Position, ApiError> {
    let mut v = Violations::new();
    v.check(after_sequence < 0, "after_sequence", "must not be negative");
    if positions.len() > MAX_POSITIONS {
        v.add(
            "positions",
            format!("at most {MAX_POSITIONS} positions, one per tenant"),
        );
        return v.finish().map(|()| Position::default());
    }
    let mut out = Position::at(after_sequence.max(0));
    for (i, p) in positions.iter().enumerate() {
        let field = format!("positions[{i}]");
        v.check(
            p.after_sequence < 0,
            format!("{field}.after_sequence"),
            "must not be negative",
        );
        match Uuid::parse_str(&p.tenant_id) {
            Err(_) => v.add(format!("{field}.tenant_id"), "must be a tenant id (a UUID)"),
            Ok(t) if tenant.is_some_and(|own| own != t) => v.add(
                format!("{field}.tenant_id"),
                "a call made for a tenant reads that tenant's events only",
            ),
            Ok(t) => {
                if out.tenants.insert(t, p.after_sequence.max(0)).is_some() {
                    v.add(format!("{field}.tenant_id"), "tenant listed twice");
                }
            }
        }
    }
    v.finish()?;
    Ok(out)
}

/// How many events [`watch`] reads per tenant and query. A tenant's page is
/// sent whole before the next tenant's events, so a larger page holds
/// others back longer behind one tenant's backlog (a consumer's batches
/// grow from several pages in flight all the same).
pub const WATCH_BATCH: i64 = 1000;
/// How many tenants [`watch`] reads per query.
const TENANTS_PER_READ: usize = 16;
/// How long [`watch`] waits after a notification for others to arrive
/// before it reads: a few milliseconds of lag for far fewer, fuller reads
/// when many small transactions commit.
const COALESCE: Duration = Duration::from_millis(5);
/// How often [`watch`] looks at every tenant even without a notification.
const POLL: Duration = Duration::from_secs(5);

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
async fn read_tenants(
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
async fn heads(
    pool: &PgPool,
    scope: Option<Uuid>,
    only: Option<&HashSet<Uuid>>,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let only: Option<Vec<Uuid>> = only.map(|o| o.iter().copied().collect());
    let pending: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM outbox_commits
          WHERE first_sequence IS NULL
            AND ($1::uuid IS NULL OR tenant_id = $1)
            AND ($2::uuid[] IS NULL OR tenant_id = ANY($2))",
    )
    .bind(scope)
    .bind(&only)
    .fetch_all(pool)
    .await?;
    for tenant in pending {
        number_committed(pool, tenant).await?;
    }
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

/// Streams the feed of the pool's schema from `position` on: each tenant's
/// backlog, then live events (only `scope`'s when set). Ends when the
/// client goes away, the database fails (UNAVAILABLE, so the consumer
/// reconnects) or `shutdown` fires (UNAVAILABLE too: a drain is not a
/// normal end).
pub fn watch(
    pool: PgPool,
    schema: &str,
    scope: Option<Uuid>,
    position: Position,
    shutdown: Shutdown,
) -> ReceiverStream<Result<ChangeEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let channel = format!("{schema}_outbox");
    let span = tracing::info_span!("feed.watch", schema, tenant = ?scope);
    tokio::spawn(
        async move {
            let unavailable = |e: sqlx::Error| {
                tracing::warn!(error = %e, "change feed interrupted");
                Status::unavailable(
                    "the change feed is interrupted; reconnect with your last sequences",
                )
            };
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(unavailable(e))).await;
                    return;
                }
            };
            if let Err(e) = listener.listen(&channel).await {
                let _ = tx.send(Err(unavailable(e))).await;
                return;
            }
            let mut position = position;
            // The tenants to look at next; None: every tenant.
            let mut due: Option<HashSet<Uuid>> = None;
            let mut last_scan = std::time::Instant::now();
            loop {
                if due.is_none() {
                    last_scan = std::time::Instant::now();
                }
                let behind: Vec<(Uuid, i64)> = match heads(&pool, scope, due.as_ref()).await {
                    Ok(h) => h
                        .into_iter()
                        .filter(|(t, last)| *last > position.after(*t))
                        .map(|(t, _)| (t, position.after(t)))
                        .collect(),
                    Err(e) => {
                        let _ = tx.send(Err(unavailable(e))).await;
                        return;
                    }
                };
                if !behind.is_empty() {
                    // Tenants whose page was full: more of theirs waits.
                    let mut next: HashSet<Uuid> = HashSet::new();
                    for chunk in behind.chunks(TENANTS_PER_READ) {
                        let events = match read_tenants(&pool, chunk, WATCH_BATCH).await {
                            Ok(ev) => ev,
                            Err(e) => {
                                let _ = tx.send(Err(unavailable(e))).await;
                                return;
                            }
                        };
                        let mut read: HashMap<Uuid, i64> = HashMap::new();
                        for ev in events {
                            if let Ok(t) = Uuid::parse_str(&ev.tenant_id) {
                                position.advance(t, ev.sequence);
                                *read.entry(t).or_default() += 1;
                            }
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        next.extend(
                            read.into_iter()
                                .filter(|(_, n)| *n >= WATCH_BATCH)
                                .map(|(t, _)| t),
                        );
                    }
                    // Those tenants again, with every tenant named by a
                    // notification since (each commit is notified, so a
                    // tenant read to its head and named by none has nothing
                    // new): a tenant with a long backlog never holds back the
                    // others. And every tenant once per POLL, as when idle.
                    let unreadable = match received(&mut listener, scope, &mut next) {
                        Ok(u) => u,
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(e))).await;
                            return;
                        }
                    };
                    if unreadable || last_scan.elapsed() >= POLL {
                        due = None;
                        continue;
                    }
                    if !next.is_empty() {
                        due = Some(next);
                        continue;
                    }
                }
                // Wait for a notification naming a tenant of interest.
                due = loop {
                    tokio::select! {
                        n = listener.recv() => {
                            let n = match n {
                                Ok(n) => n,
                                Err(e) => {
                                    let _ = tx.send(Err(unavailable(e))).await;
                                    return;
                                }
                            };
                            let mut named = HashSet::new();
                            let first_unreadable = !note(n.payload(), scope, &mut named);
                            // Let the commits of the next moments join this
                            // read: under a stream of small transactions, one
                            // read then carries many of them.
                            tokio::time::sleep(COALESCE).await;
                            let unreadable = match received(&mut listener, scope, &mut named) {
                                Ok(u) => first_unreadable || u,
                                Err(e) => {
                                    let _ = tx.send(Err(unavailable(e))).await;
                                    return;
                                }
                            };
                            if unreadable {
                                break None;
                            }
                            if !named.is_empty() {
                                break Some(named);
                            }
                        }
                        _ = tokio::time::sleep(POLL) => break None,
                        _ = tx.closed() => return,
                        _ = shutdown.wait() => {
                            let _ = tx
                                .send(Err(Shutdown::stream_status("from your last position")))
                                .await;
                            return;
                        }
                    }
                };
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(rx)
}

/// Adds the tenant a notification names to `named` when it is in `scope`;
/// false when the payload is not a tenant id.
fn note(payload: &str, scope: Option<Uuid>, named: &mut HashSet<Uuid>) -> bool {
    match Uuid::parse_str(payload) {
        Ok(t) => {
            if scope.is_none_or(|s| s == t) {
                named.insert(t);
            }
            true
        }
        Err(_) => false,
    }
}

/// [`note`]s every notification `listener` has received by now, without
/// waiting; whether one of them was unreadable.
fn received(
    listener: &mut PgListener,
    scope: Option<Uuid>,
    named: &mut HashSet<Uuid>,
) -> Result<bool, sqlx::Error> {
    let mut unreadable = false;
    while let Some(n) = listener.recv().now_or_never() {
        unreadable |= !note(n?.payload(), scope, named);
    }
    Ok(unreadable)
}

/// The `WatchChanges` method of one service: its request and response
/// messages (the same shape in every service) and its path.
pub trait WatchMethod: Send + Sync + 'static {
    /// `WatchChangesRequest`.
    type Request: prost::Message + Default + Send + Sync + 'static;
    /// `WatchChangesResponse`.
    type Response: prost::Message + Default + Send + Sync + 'static;
    /// The service's name, for messages.
    const SERVICE: &'static str;
    /// The method's path, `/package.Service/WatchChanges`.
    const PATH: &'static str;
    /// A request for the events after `position`.
    fn request(position: &Position) -> Self::Request;
    /// `after_sequence` and `positions` of a request.
    fn parts(request: &Self::Request) -> (i64, &[FeedPosition]);
    /// A response carrying `event`.
    fn response(event: ChangeEvent) -> Self::Response;
    /// The event of a response.
    fn event(response: Self::Response) -> Option<ChangeEvent>;
}

macro_rules! watch_method {
    ($marker:ident, $module:ident, $service:literal, $path:literal) => {
        #[doc = concat!("`WatchChanges` of the ", $service, " service.")]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $marker;

        impl WatchMethod for $marker {
            type Request = rapport_proto::rapport::$module::v1::WatchChangesRequest;
            type Response = rapport_proto::rapport::$module::v1::WatchChangesResponse;
            const SERVICE: &'static str = $service;
            const PATH: &'static str = $path;
            fn request(position: &Position) -> Self::Request {
                Self::Request {
                    after_sequence: position.default,
                    positions: position.positions(),
                }
            }
            fn parts(request: &Self::Request) -> (i64, &[FeedPosition]) {
                (request.after_sequence, &request.positions)
            }
            fn response(event: ChangeEvent) -> Self::Response {
                Self::Response { event: Some(event) }
            }
            fn event(response: Self::Response) -> Option<ChangeEvent> {
                response.event
            }
        }
    };
}

watch_method!(
    ProfileFeed,
    profile,
    "profile",
    "/rapport.profile.v1.ProfileService/WatchChanges"
);
watch_method!(
    InteractionFeed,
    interaction,
    "interaction",
    "/rapport.interaction.v1.InteractionService/WatchChanges"
);
watch_method!(
    SegmentationFeed,
    segmentation,
    "segmentation",
    "/rapport.segmentation.v1.SegmentationService/WatchChanges"
);
watch_method!(
    ValuationFeed,
    valuation,
    "valuation",
    "/rapport.valuation.v1.ValuationService/WatchChanges"
);

/// The stream a `WatchChanges` handler answers with.
pub type WatchStream<R> = BoxStream<'static, Result<R, Status>>;

/// Serves any service's `WatchChanges`, with the one policy every contract
/// states: the caller holds the internal credential (checked by the server);
/// a call with a tenant in its metadata reads that tenant's events only,
/// one without reads every tenant's; positions are validated.
pub fn serve_watch<W: WatchMethod>(
    pool: PgPool,
    schema: &str,
    request: tonic::Request<W::Request>,
    shutdown: Shutdown,
) -> Result<WatchStream<W::Response>, ApiError> {
    let scope = match request.metadata().get(crate::context::TENANT_HEADER) {
        Some(_) => Some(crate::context::CallContext::from_metadata(request.metadata())?.tenant_id),
        None => None,
    };
    let (after, positions) = W::parts(request.get_ref());
    let position = position_of(after, positions, scope)?;
    Ok(watch(pool, schema, scope, position, shutdown)
        .map(|r| r.map(W::response))
        .boxed())
}

/// A stream of change events, as a feed source returns it.
pub type EventStream = BoxStream<'static, Result<ChangeEvent, Status>>;

/// Where a consumer reads a feed from: usually a peer's `WatchChanges`.
pub trait FeedSource: Send + Sync + 'static {
    /// Opens the feed after `position`.
    fn open(&self, position: Position) -> BoxFuture<'_, Result<EventStream, Status>>;
}

/// The feed of a peer service, read over its `WatchChanges` with the
/// internal credential: one source for any service.
pub struct PeerFeed<W> {
    channel: crate::peer::PeerChannel,
    max_message_bytes: usize,
    method: std::marker::PhantomData<W>,
}

impl<W> Clone for PeerFeed<W> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel.clone(),
            max_message_bytes: self.max_message_bytes,
            method: std::marker::PhantomData,
        }
    }
}

impl<W: WatchMethod> PeerFeed<W> {
    /// The feed of the peer behind `peer`.
    pub fn new(peer: &crate::peer::Peer) -> Self {
        Self {
            channel: peer.channel(),
            max_message_bytes: crate::peer::MAX_MESSAGE_BYTES,
            method: std::marker::PhantomData,
        }
    }
}

impl<W: WatchMethod> FeedSource for PeerFeed<W> {
    fn open(&self, position: Position) -> BoxFuture<'_, Result<EventStream, Status>> {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone())
                .max_decoding_message_size(self.max_message_bytes);
            grpc.ready().await.map_err(|e| {
                Status::unavailable(format!("the {} service is unreachable: {e}", W::SERVICE))
            })?;
            let codec = tonic_prost::ProstCodec::<W::Request, W::Response>::default();
            let path = http::uri::PathAndQuery::from_static(W::PATH);
            let stream = grpc
                .server_streaming(tonic::Request::new(W::request(&position)), path, codec)
                .await?
                .into_inner();
            Ok(stream
                .map(|r| {
                    r.and_then(|m| {
                        W::event(m).ok_or_else(|| {
                            Status::internal(format!(
                                "a {} feed message without an event",
                                W::SERVICE
                            ))
                        })
                    })
                })
                .boxed())
        })
    }
}

/// What a consumer does with events. Runs inside the consumer's transaction:
/// whatever it writes commits together with the cursor.
pub trait FeedHandler: Send + Sync + 'static {
    /// Applies events of one tenant, in sequence order, none of them applied
    /// before. A batch holds up to [`MAX_BATCH`] events: apply them with
    /// set-based statements, each customer's effect computed once.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tenant: Uuid,
        events: &'a [ChangeEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// Follows one feed and applies its events exactly once (see module docs).
pub struct Consumer {
    name: String,
    pool: PgPool,
    source: Arc<dyn FeedSource>,
    handler: Arc<dyn FeedHandler>,
    max_batch: usize,
}

/// The schema a pool's connections work in: the component a consumer runs for.
async fn current_schema(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await
        .unwrap_or_default()
}

/// Most events a consumer applies in one transaction. A consumer takes what
/// has arrived, so while it keeps up its batches stay small (and its lag
/// short); once behind, its batches grow, and the more of a customer's
/// events one batch holds, the less each costs: the customer's features,
/// classification and memberships are worked out once per batch. Below this
/// maximum a batch is held to about [`BATCH_TIME`] of work. (Measured in
/// `rapport bench ingest`, 2,000,000 events of 10,000 customers: with
/// batches of at most 10,000 held to 300 ms, segmentation applied 6,000
/// events/s and was not caught up 60 s after the last call; with 20,000 and
/// 1 s it caught up 37 s after it, at the cost of about 90 MiB more memory
/// at the peak of a backlog.)
pub const MAX_BATCH: usize = 20_000;

/// Fewest events a consumer's batch may take (a batch takes only what has
/// arrived, so fewer while it keeps up).
const MIN_BATCH: usize = 500;

/// About how long a consumer's batch should take to apply: a batch of one
/// tenant's backlog holds back every other tenant's events for that long
/// (their events are applied first in the next batch: the smallest groups
/// go first).
const BATCH_TIME: Duration = Duration::from_millis(1000);

/// The cap of the next batch after `applied` events took `took` under cap
/// `cap`: the events this consumer applies in [`BATCH_TIME`] at the rate
/// just seen, between [`MIN_BATCH`] and `max`. A batch too small to tell
/// (below half the cap) leaves the cap as it is.
fn next_cap(cap: usize, applied: usize, took: Duration, max: usize) -> usize {
    if applied * 2 < cap || took.is_zero() {
        return cap;
    }
    let rate = applied as f64 / took.as_secs_f64();
    ((rate * BATCH_TIME.as_secs_f64()) as usize).clamp(MIN_BATCH, max.max(MIN_BATCH))
}

/// Most distinct traces whose `feed.apply` span a batch records.
const MAX_TRACED: usize = 32;

impl Consumer {
    /// A consumer called `name` (its cursor's key) storing its cursor in `pool`'s schema.
    pub fn new(
        name: impl Into<String>,
        pool: PgPool,
        source: Arc<dyn FeedSource>,
        handler: Arc<dyn FeedHandler>,
    ) -> Self {
        Self {
            name: name.into(),
            pool,
            source,
            handler,
            max_batch: MAX_BATCH,
        }
    }

    /// Where consumer `name` stands: per tenant, the last sequence applied.
    pub async fn position(pool: &PgPool, name: &str) -> Result<Position, sqlx::Error> {
        let default: Option<i64> =
            sqlx::query_scalar("SELECT after_sequence FROM feed_cursors WHERE source = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        let tenants: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT tenant_id, after_sequence FROM feed_tenant_cursors WHERE source = $1",
        )
        .bind(name)
        .fetch_all(pool)
        .await?;
        Ok(Position {
            default: default.unwrap_or(0),
            tenants: tenants.into_iter().collect(),
        })
    }

    /// The last sequence of `tenant` applied by consumer `name` (0 before
    /// the first).
    pub async fn cursor(pool: &PgPool, name: &str, tenant: Uuid) -> Result<i64, sqlx::Error> {
        Ok(Self::position(pool, name).await?.after(tenant))
    }

    /// Runs until `shutdown` fires, reconnecting with backoff after errors.
    pub async fn run(self, shutdown: Shutdown) {
        let span = tracing::info_span!("feed.consumer", consumer = %self.name);
        async move {
            let mut backoff = Duration::from_millis(100);
            while !shutdown.is_triggered() {
                tokio::select! {
                    r = self.follow() => match r {
                        Ok(()) => backoff = Duration::from_millis(100),
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "feed consumer interrupted");
                        }
                    },
                    _ = shutdown.wait() => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        .instrument(span)
        .await
    }

    async fn follow(&self) -> Result<(), String> {
        sqlx::query("INSERT INTO feed_cursors (source, after_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(&self.name)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        let position = Self::position(&self.pool, &self.name)
            .await
            .map_err(|e| e.to_string())?;
        let component = current_schema(&self.pool).await;
        let stream = self
            .source
            .open(position)
            .await
            .map_err(|s| s.to_string())?;
        // Received ahead while a batch is applied, so that a consumer that
        // falls behind finds its next batch waiting, up to its cap.
        let mut feed = prefetch(stream, self.max_batch);
        // How many events the next batch may take: what the last batches
        // suggest this consumer applies in BATCH_TIME.
        let mut cap = MIN_BATCH;
        let mut received = Vec::new();
        // A batch takes what has arrived, up to the cap (at least one).
        while feed.recv_many(&mut received, cap).await > 0 {
            let mut events = Vec::with_capacity(received.len());
            let mut failure = None;
            for item in received.drain(..) {
                match item {
                    Ok(ev) => events.push(ev),
                    Err(s) => {
                        failure = Some(s.to_string());
                        break;
                    }
                }
            }
            let started = std::time::Instant::now();
            let applied = events.len();
            // The smallest groups first: a tenant with a few events is not
            // kept waiting while another's long backlog is applied.
            let mut groups = by_tenant(events);
            groups.sort_by_key(|(_, g)| g.len());
            for (tenant, group) in groups {
                self.apply_tenant(tenant, &group, &component)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            cap = next_cap(cap, applied, started.elapsed(), self.max_batch);
            if let Some(f) = failure {
                return Err(f);
            }
        }
        Err("the feed ended".into())
    }

    /// Applies one tenant's events in one transaction with the tenant's
    /// cursor.
    async fn apply_tenant(
        &self,
        tenant: Uuid,
        events: &[ChangeEvent],
        component: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A batch is applied by key; keep those lookups on their indexes
        // while a tenant grows faster than the statistics follow.
        crate::db::prefer_key_lookups(&mut tx).await?;
        // The row lock serialises replicas of this consumer for the tenant;
        // the stored cursor tells which events a replica (or an earlier
        // delivery) already applied.
        sqlx::query(
            "INSERT INTO feed_tenant_cursors (tenant_id, source, after_sequence)
             SELECT $1, $2, coalesce((SELECT after_sequence FROM feed_cursors WHERE source = $2), 0)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&self.name)
        .execute(&mut *tx)
        .await?;
        let stored: i64 = sqlx::query_scalar(
            "SELECT after_sequence FROM feed_tenant_cursors
              WHERE tenant_id = $1 AND source = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(&self.name)
        .fetch_one(&mut *tx)
        .await?;
        let fresh: Vec<ChangeEvent> = events
            .iter()
            .filter(|e| e.sequence > stored)
            .cloned()
            .collect();
        let Some(last) = fresh.last().map(|e| (e.sequence, e.commit_time)) else {
            return tx.rollback().await;
        };
        // Each event is applied in a span of the trace of the call that made
        // the change: one `feed.apply` span per distinct trace of the batch,
        // open while the batch is applied.
        let mut traces: Vec<&str> = fresh
            .iter()
            .map(|e| e.traceparent.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        traces.sort_unstable();
        traces.dedup();
        let spans: Vec<tracing::Span> = traces
            .iter()
            .take(MAX_TRACED)
            .map(|traceparent| {
                let span = tracing::info_span!(
                    "feed.apply",
                    component = %component,
                    consumer = %self.name,
                    tenant = %tenant,
                    events = fresh.len(),
                );
                crate::telemetry::adopt_traceparent(&span, traceparent);
                span
            })
            .collect();
        let batch_span = tracing::info_span!(
            "feed.batch",
            consumer = %self.name,
            tenant = %tenant,
            events = fresh.len(),
        );
        self.handler
            .apply(&mut tx, tenant, &fresh)
            .instrument(batch_span)
            .await?;
        sqlx::query(
            "UPDATE feed_tenant_cursors SET after_sequence = $3, update_time = now()
              WHERE tenant_id = $1 AND source = $2",
        )
        .bind(tenant)
        .bind(&self.name)
        .bind(last.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(spans);
        let consumer = self.name.clone();
        metrics::counter!("rapport_feed_consumer_events_total", "consumer" => consumer.clone())
            .increment(fresh.len() as u64);
        if let Some(committed) = last.1.as_ref().and_then(crate::convert::from_timestamp) {
            let lag = (chrono::Utc::now() - committed).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("rapport_feed_consumer_lag_seconds", "consumer" => consumer).set(lag);
        }
        Ok(())
    }
}

/// `stream` read ahead into a channel of up to `ahead` items by a task of
/// its own, so that the next batch is received (and decoded) while the last
/// one is applied. Without it a consumer's batch held only what the
/// transport had buffered (about 6,000 interaction events, whatever the
/// backlog and the cap), and each batch's fixed costs (the transaction,
/// each changed customer's rescoring and evaluation) were paid that much
/// more often. The task ends after the stream's first error (passed on), at
/// its end, or when the receiver is dropped. (A batch is taken from the
/// channel with `recv_many`: polling a stream until it is not ready stops at
/// the runtime's cooperative budget, about a hundred items.)
fn prefetch(
    mut stream: EventStream,
    ahead: usize,
) -> tokio::sync::mpsc::Receiver<Result<ChangeEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ahead.max(1));
    // Unconstrained: what has arrived is moved on at once, not a hundred
    // items per turn of the runtime (a batch would take a slice of it).
    tokio::spawn(tokio::task::unconstrained(
        async move {
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    // Dropped while the feed is idle: let the feed go.
                    _ = tx.closed() => return,
                };
                let Some(item) = item else { return };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }
        .in_current_span(),
    ));
    rx
}

/// Events grouped by tenant, in order of first appearance, each group in
/// the order received. Events without a valid tenant are dropped (logged).
fn by_tenant(events: Vec<ChangeEvent>) -> Vec<(Uuid, Vec<ChangeEvent>)> {
    let mut groups: Vec<(Uuid, Vec<ChangeEvent>)> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for ev in events {
        let Ok(t) = Uuid::parse_str(&ev.tenant_id) else {
            tracing::warn!(
                sequence = ev.sequence,
                "feed event without a tenant; skipped"
            );
            continue;
        };
        let i = *index.entry(t).or_insert_with(|| {
            groups.push((t, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(ev);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_while_cheap_and_shrink_when_slow() {
        let ms = Duration::from_millis;
        // 500 events in 50 ms: 10,000/s, so 10,000 in a second.
        assert_eq!(next_cap(500, 500, ms(50), MAX_BATCH), 10_000);
        // Capped at the maximum, and never below the minimum.
        assert_eq!(next_cap(3000, 3000, ms(10), MAX_BATCH), MAX_BATCH);
        assert_eq!(next_cap(3000, 3000, ms(30_000), MAX_BATCH), MIN_BATCH);
        // A batch of what happened to arrive says nothing of the rate.
        assert_eq!(next_cap(3000, 10, ms(300), MAX_BATCH), 3000);
        assert_eq!(next_cap(3000, 3000, Duration::ZERO, MAX_BATCH), 3000);
    }

    fn event(sequence: i64) -> Result<ChangeEvent, Status> {
        Ok(ChangeEvent {
            sequence,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn prefetch_reads_ahead_up_to_its_buffer_and_passes_the_end_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let polled = Arc::new(AtomicUsize::new(0));
        let seen = polled.clone();
        let source = futures::stream::iter((1..=10).map(event))
            .inspect(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            })
            .boxed();
        let mut ahead = prefetch(source, 4);
        // Nobody reads yet: four are buffered and a fifth waits to be sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(polled.load(Ordering::SeqCst), 5);
        let mut got = Vec::new();
        while let Some(item) = ahead.recv().await {
            got.push(item.map(|e| e.sequence).ok());
        }
        assert_eq!(got, (1..=10).map(Some).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn prefetch_stops_after_an_error_and_lets_an_idle_feed_go_when_dropped() {
        let source =
            futures::stream::iter(vec![event(1), Err(Status::unavailable("gone")), event(3)])
                .boxed();
        let mut ahead = prefetch(source, 8);
        let mut items = Vec::new();
        while let Some(item) = ahead.recv().await {
            items.push(item);
        }
        assert_eq!(items.len(), 2, "nothing after the error");
        assert_eq!(
            items[1].as_ref().err().map(Status::code),
            Some(tonic::Code::Unavailable)
        );

        // An idle feed (no item, no end) holding a guard: dropping the
        // prefetched stream drops the feed.
        let (guard, released) = tokio::sync::oneshot::channel::<()>();
        let idle = futures::stream::pending::<Result<ChangeEvent, Status>>()
            .map(move |i| {
                let _held = &guard;
                i
            })
            .boxed();
        drop(prefetch(idle, 8));
        let dropped = tokio::time::timeout(Duration::from_secs(5), released).await;
        assert!(
            matches!(dropped, Ok(Err(_))),
            "the idle feed was not released"
        );
    }

    #[test]
    fn positions_default_and_advance() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut p = Position::at(7);
        assert_eq!(p.after(a), 7);
        p.advance(a, 3);
        assert_eq!(p.after(a), 7, "never moves back");
        p.advance(a, 12);
        p.advance(b, 7);
        assert_eq!((p.after(a), p.after(b)), (12, 7));
        // Only the tenants away from the default are sent.
        let sent = p.positions();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].tenant_id, a.to_string());
        let back = position_of(p.default, &sent, None).unwrap();
        assert_eq!(back.after(a), 12);
        assert_eq!(back.after(b), 7);
    }

    #[test]
    fn positions_are_validated() {
        let a = Uuid::new_v4();
        let pos = |t: &str, s: i64| FeedPosition {
            tenant_id: t.into(),
            after_sequence: s,
        };
        let fields = |r: Result<Position, ApiError>| match r {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect::<Vec<_>>(),
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(fields(position_of(-1, &[], None)), ["after_sequence"]);
        assert_eq!(
            fields(position_of(
                0,
                &[
                    pos("nope", 1),
                    pos(&a.to_string(), -2),
                    pos(&a.to_string(), 3)
                ],
                None
            )),
            [
                "positions[0].tenant_id",
                "positions[1].after_sequence",
                "positions[2].tenant_id"
            ]
        );
        // A call made for a tenant names only that tenant.
        let own = Uuid::new_v4();
        assert_eq!(
            fields(position_of(0, &[pos(&a.to_string(), 1)], Some(own))),
            ["positions[0].tenant_id"]
        );
        assert_eq!(
            position_of(0, &[pos(&own.to_string(), 4)], Some(own))
                .unwrap()
                .after(own),
            4
        );
        let many = vec![pos(&a.to_string(), 0); MAX_POSITIONS + 1];
        assert_eq!(fields(position_of(0, &many, None)), ["positions"]);
    }

    #[test]
    fn batches_split_by_tenant_in_order() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let ev = |t: &Uuid, s: i64| ChangeEvent {
            tenant_id: t.to_string(),
            sequence: s,
            ..Default::default()
        };
        let got = by_tenant(vec![
            ev(&a, 1),
            ev(&b, 1),
            ev(&a, 2),
            ChangeEvent::default(),
            ev(&b, 2),
        ]);
        let flat: Vec<(Uuid, Vec<i64>)> = got
            .into_iter()
            .map(|(t, e)| (t, e.into_iter().map(|e| e.sequence).collect()))
            .collect();
        assert_eq!(flat, vec![(a, vec![1, 2]), (b, vec![1, 2])]);
    }
}
