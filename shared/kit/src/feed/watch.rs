//! Serving a feed: `WatchChanges` for any service.

use super::outbox::{heads, read_tenants};
use super::*;

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
