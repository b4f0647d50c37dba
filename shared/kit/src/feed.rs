//! Change feeds (DESIGN.md, "Change feeds").
//!
//! * [`append`] writes an event to the service's `outbox` in the caller's
//!   transaction, so an event exists if and only if its change committed.
//! * [`watch`] serves `WatchChanges(after_sequence)`: the backlog first, then
//!   live events, woken by `LISTEN/NOTIFY` (with a slow poll as a safety net).
//! * [`Consumer`] follows another service's feed, applies each batch of events
//!   and advances its cursor in one transaction of its own schema, so after any
//!   restart it resumes where it stopped and never applies an event twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use prost_types::Any;
use rapport_proto::rapport::common::v1::{ChangeEvent, RedactedEvent, RedactionReason};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

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

/// Appends events to the outbox of the connection's schema, in its transaction.
/// Returns the sequences assigned. Call inside a transaction: the lock that
/// keeps sequence order equal to commit order is held until it ends.
pub async fn append(conn: &mut PgConnection, events: &[NewEvent]) -> Result<Vec<i64>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.outbox'))")
        .execute(&mut *conn)
        .await?;
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.aggregate_type).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let urls: Vec<&str> = events.iter().map(|e| e.event.type_url.as_str()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.event.value.as_slice()).collect();
    // Every event of one append comes from the same call, hence one trace.
    let traceparent = crate::telemetry::current_traceparent();
    let seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO outbox (tenant_id, aggregate_type, aggregate_id, event_type, event_type_url, event, traceparent)
         SELECT t.tenant, t.agg, t.id, t.kind, t.url, t.body, $7
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
              AS t (tenant, agg, id, kind, url, body)
         RETURNING sequence",
    )
    .bind(&tenants)
    .bind(&types)
    .bind(&ids)
    .bind(&kinds)
    .bind(&urls)
    .bind(&bodies)
    .bind(traceparent)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify(current_schema() || '_outbox', '')")
        .execute(&mut *conn)
        .await?;
    Ok(seqs)
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
        .map(|(_, subject)| {
            E::redacted(RedactedEvent {
                subject_id: subject.clone(),
                reason: reason as i32,
            })
            .encode_to_vec()
        })
        .collect();
    let done = sqlx::query(
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
    Ok(done.rows_affected())
}

/// Redacts every event of tenant `tenant` whose aggregate is one of `ids` of
/// type `aggregate_type` (see [`redact`]); the subject is the aggregate id.
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
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT sequence, aggregate_id FROM outbox
          WHERE tenant_id = $1 AND aggregate_type = $2 AND aggregate_id = ANY($3)",
    )
    .bind(tenant)
    .bind(aggregate_type)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    redact::<E>(conn, tenant, &rows, reason).await
}

/// How many events [`watch`] reads per query.
const BATCH: i64 = 1000;
/// How often [`watch`] looks for events even without a notification.
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

/// Reads up to `limit` events after `after` from the outbox of the pool's schema.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<ChangeEvent>, sqlx::Error> {
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT sequence, tenant_id, aggregate_type, aggregate_id, event_type, payload, event_type_url,
                event, commit_time, traceparent
         FROM outbox WHERE sequence > $1 ORDER BY sequence LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Streams the feed of the pool's schema from `after_sequence` on: backlog, then
/// live. Ends when the client goes away, the database fails (UNAVAILABLE, so
/// the consumer reconnects) or `shutdown` fires.
pub fn watch(
    pool: PgPool,
    schema: &str,
    after_sequence: i64,
    shutdown: Shutdown,
) -> ReceiverStream<Result<ChangeEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let channel = format!("{schema}_outbox");
    let span = tracing::info_span!("feed.watch", schema, after_sequence);
    tokio::spawn(
        async move {
            let unavailable = |e: sqlx::Error| {
                tracing::warn!(error = %e, "change feed interrupted");
                Status::unavailable(
                    "the change feed is interrupted; reconnect with your last sequence",
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
            let mut cursor = after_sequence;
            loop {
                let events = match read_after(&pool, cursor, BATCH).await {
                    Ok(ev) => ev,
                    Err(e) => {
                        let _ = tx.send(Err(unavailable(e))).await;
                        return;
                    }
                };
                let full = events.len() as i64 == BATCH;
                for ev in events {
                    cursor = ev.sequence;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    n = listener.recv() => {
                        if let Err(e) = n {
                            let _ = tx.send(Err(unavailable(e))).await;
                            return;
                        }
                    }
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.wait() => return,
                }
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(rx)
}

/// A stream of change events, as a feed source returns it.
pub type EventStream = BoxStream<'static, Result<ChangeEvent, Status>>;

/// Where a consumer reads a feed from: usually a gRPC client's `WatchChanges`.
pub trait FeedSource: Send + Sync + 'static {
    /// Opens the feed after `after_sequence`.
    fn open(&self, after_sequence: i64) -> BoxFuture<'_, Result<EventStream, Status>>;
}

/// What a consumer does with events. Runs inside the consumer's transaction:
/// whatever it writes commits together with the cursor.
pub trait FeedHandler: Send + Sync + 'static {
    /// Applies one event.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Called once after the events of a batch were applied, in the same
    /// transaction, before the cursor moves: work that depends on the
    /// combined effect of the batch (e.g. recomputing each changed customer
    /// once rather than once per event) belongs here.
    fn finish_batch<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }
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
            max_batch: 500,
        }
    }

    /// The last sequence applied by consumer `name` (0 before the first).
    pub async fn cursor(pool: &PgPool, name: &str) -> Result<i64, sqlx::Error> {
        let c: Option<i64> =
            sqlx::query_scalar("SELECT after_sequence FROM feed_cursors WHERE source = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        Ok(c.unwrap_or(0))
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
        let after = Self::cursor(&self.pool, &self.name)
            .await
            .map_err(|e| e.to_string())?;
        let component = current_schema(&self.pool).await;
        let stream = self.source.open(after).await.map_err(|s| s.to_string())?;
        let mut batches = stream.ready_chunks(self.max_batch);
        while let Some(batch) = batches.next().await {
            let mut events = Vec::with_capacity(batch.len());
            let mut failure = None;
            for item in batch {
                match item {
                    Ok(ev) => events.push(ev),
                    Err(s) => {
                        failure = Some(s.to_string());
                        break;
                    }
                }
            }
            self.apply_batch(&events, &component)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(f) = failure {
                return Err(f);
            }
        }
        Err("the feed ended".into())
    }

    async fn apply_batch(
        &self,
        events: &[ChangeEvent],
        component: &str,
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // The row lock serialises replicas of this consumer; the stored cursor
        // tells which events a replica (or an earlier delivery) already applied.
        let stored: i64 = sqlx::query_scalar(
            "SELECT after_sequence FROM feed_cursors WHERE source = $1 FOR UPDATE",
        )
        .bind(&self.name)
        .fetch_one(&mut *tx)
        .await?;
        let mut last = stored;
        for ev in events {
            if ev.sequence <= last {
                continue;
            }
            // Each event is applied in a span of the trace of the call that
            // made the change.
            let span = tracing::info_span!(
                "feed.apply",
                component = %component,
                consumer = %self.name,
                event_type = %ev.event_type,
                sequence = ev.sequence,
            );
            crate::telemetry::adopt_traceparent(&span, &ev.traceparent);
            self.handler.apply(&mut tx, ev).instrument(span).await?;
            last = ev.sequence;
        }
        if last != stored {
            self.handler.finish_batch(&mut tx).await?;
        }
        if let Some(ev) = events.last() {
            let consumer = self.name.clone();
            metrics::gauge!("rapport_feed_consumer_sequence", "consumer" => consumer.clone())
                .set(ev.sequence as f64);
            metrics::counter!("rapport_feed_consumer_events_total", "consumer" => consumer.clone())
                .increment(events.len() as u64);
            if let Some(committed) = ev
                .commit_time
                .as_ref()
                .and_then(crate::convert::from_timestamp)
            {
                let lag =
                    (chrono::Utc::now() - committed).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::gauge!("rapport_feed_consumer_lag_seconds", "consumer" => consumer)
                    .set(lag);
            }
        }
        if last != stored {
            sqlx::query("UPDATE feed_cursors SET after_sequence = $2, update_time = now() WHERE source = $1")
                .bind(&self.name)
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}
