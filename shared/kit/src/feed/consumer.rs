//! Following a peer's feed: read ahead, batched per tenant, applied with
//! the tenant's cursor in one transaction.

use super::*;

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

/// Implements [`FeedHandler`] for a type by calling one of its async methods
/// with the transaction, the tenant and the events (and any further
/// arguments given, evaluated at each batch):
///
/// ```ignore
/// rapport_kit::feed_handler!(ProfileFollower => apply_batch);
/// rapport_kit::feed_handler!(InteractionFollower => apply_batch, Utc::now());
/// ```
#[macro_export]
macro_rules! feed_handler {
    ($ty:ty => $method:ident $(, $extra:expr)* $(,)?) => {
        impl $crate::feed::FeedHandler for $ty {
            fn apply<'a>(
                &'a self,
                tx: &'a mut $crate::__private::PgConnection,
                tenant: $crate::__private::Uuid,
                events: &'a [$crate::__private::ChangeEvent],
            ) -> $crate::__private::BoxFuture<'a, ::std::result::Result<(), $crate::__private::SqlxError>> {
                ::std::boxed::Box::pin(self.$method(tx, tenant, events $(, $extra)*))
            }
        }
    };
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
        // The tenant's own row, else the consumer's default: what
        // `position(..).after(tenant)` gives, without reading every tenant.
        sqlx::query_scalar(
            "SELECT coalesce(
                 (SELECT after_sequence FROM feed_tenant_cursors WHERE source = $1 AND tenant_id = $2),
                 (SELECT after_sequence FROM feed_cursors WHERE source = $1),
                 0)",
        )
        .bind(name)
        .bind(tenant)
        .fetch_one(pool)
        .await
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
        // Labelled by the consuming component and the feed it follows.
        let labels = [
            ("consumer", component.to_string()),
            ("feed", self.name.clone()),
        ];
        metrics::counter!("rapport_feed_consumer_events_total", &labels)
            .increment(fresh.len() as u64);
        if let Some(committed) = last.1.as_ref().and_then(crate::convert::from_timestamp) {
            let lag = (chrono::Utc::now() - committed).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("rapport_feed_consumer_lag_seconds", &labels).set(lag);
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
