//! The audit trail: who changed what through the gateway, and how it ended.
//!
//! [`Audited`] wraps the front door, `AdminService` and `Customer360Service`.
//! For each call that changes something (a method of a forwarded service that
//! needs a write scope, or an admin action), and each export of a customer's
//! data, made with a known key, it keeps a copy of the
//! request's first message (up to [`CAPTURE_LIMIT`] bytes), watches the
//! answer for its status, and when the call ends hands an event to the
//! [`AuditLog`], which writes events in batches off the request path. Of the
//! request only its id fields are kept ([`named_ids`]), never its payload.
//! A dedicated task deletes events past the retention period.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::future::BoxFuture;
use prost_reflect::{DynamicMessage, Value};
use rapport_kit::connect::Contracts;
use rapport_kit::shutdown::Shutdown;
use sqlx::PgPool;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::ServiceExt as _;
use uuid::Uuid;

use crate::auth::{Authenticator, Principal};
use crate::front::{CallEnd, Watched, grpc_status};
use crate::routes::{Route, RouteTable};
use crate::store::audit::AuditRow;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest first request message kept to find the ids it names; a
/// larger one is recorded without a resource.
pub const CAPTURE_LIMIT: usize = 64 * 1024;

/// At most this many ids per event.
pub const MAX_IDS: usize = 10;

/// How long the writer gathers events before writing a batch under 1,000.
const GATHER: Duration = Duration::from_millis(250);

/// Events waiting to be written; beyond this, new events are dropped (and
/// counted) rather than slowing calls down.
const QUEUE: usize = 20_000;

/// The ids a request names, and its own `request_id`.
#[derive(Debug, Default, PartialEq)]
pub struct Named {
    /// `(field, id)` pairs, in field order, at most [`MAX_IDS`].
    pub ids: Vec<(String, String)>,
    pub request_id: String,
}

impl Named {
    /// `field=value` pairs separated by commas.
    pub fn resource(&self) -> String {
        self.ids
            .iter()
            .map(|(f, v)| format!("{f}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The ids `message` names: string fields whose names end in `_id` and
/// lists of strings whose names end in `_ids`, at the top level and in
/// singular message fields up to two levels down (never in repeated
/// messages: those are batches). `request_id` is the request's own id, not a
/// resource. Ids longer than 100 characters are not kept.
pub fn named_ids(message: &DynamicMessage) -> Named {
    let mut named = Named::default();
    collect(message, 0, &mut named);
    named
}

fn collect(message: &DynamicMessage, depth: usize, named: &mut Named) {
    for (field, value) in message.fields() {
        let name = field.name();
        match value {
            Value::String(s) if name == "request_id" && depth == 0 => {
                named.request_id = s.chars().take(100).collect();
            }
            Value::String(s) if name.ends_with("_id") => push(named, name, s),
            Value::List(items) if name.ends_with("_ids") => {
                for item in items {
                    if let Value::String(s) = item {
                        push(named, name.trim_end_matches('s'), s);
                    }
                }
            }
            Value::Message(inner) if depth < 2 => collect(inner, depth + 1, named),
            _ => {}
        }
    }
}

fn push(named: &mut Named, field: &str, id: &str) {
    if named.ids.len() < MAX_IDS && !id.is_empty() && id.len() <= 100 {
        named.ids.push((field.to_string(), id.to_string()));
    }
}

/// Whether a call to `path` is audited, and its service and method.
pub fn audited(routes: &RouteTable, path: &str) -> Option<(String, String)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let audited = if service == "rapport.gateway.v1.AdminService" {
        !(method.starts_with("Get") || method.starts_with("List"))
    } else if service == "rapport.gateway.v1.Customer360Service" {
        // A read, but of everything held on a person: who took it is kept.
        method == "ExportCustomerData"
    } else {
        matches!(routes.route(path), Route::Forward { scope, .. } if scope.ends_with(":write"))
    };
    audited.then(|| (service.to_string(), method.to_string()))
}

/// Where audit events go: a queue drained in batches by a writer task.
#[derive(Clone)]
pub struct AuditLog {
    queue: tokio::sync::mpsc::Sender<AuditRow>,
}

impl AuditLog {
    /// Starts the writer over `pool`, and the task that deletes events older
    /// than `retention` (hourly, and once at start). The writer ends when
    /// every handle is dropped and the queue is written; its task is
    /// returned, for the service to wait for at stop.
    pub fn start(
        pool: PgPool,
        retention: Duration,
        shutdown: Shutdown,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_events(pool.clone(), rx));
        tokio::spawn(expire_events(pool, retention, shutdown));
        (Self { queue }, writer)
    }

    /// Queues `event`; drops it (counted, and logged) when the queue is full.
    pub fn record(&self, event: AuditRow) {
        if self.queue.try_send(event).is_err() {
            metrics::counter!("rapport_audit_events_total", "outcome" => "dropped").increment(1);
            tracing::warn!("audit event dropped: the audit writer is behind");
        }
    }
}

/// Writes queued events, up to 1,000 per statement, until every sender is gone.
async fn write_events(pool: PgPool, mut rx: tokio::sync::mpsc::Receiver<AuditRow>) {
    let mut batch = Vec::with_capacity(1000);
    while rx.recv_many(&mut batch, 1000).await > 0 {
        // Gathered for a moment: one statement for the calls of a quarter
        // second, rather than one per call (each would be a transaction).
        if batch.len() < 1000 {
            tokio::time::sleep(GATHER).await;
            while batch.len() < 1000
                && let Ok(event) = rx.try_recv()
            {
                batch.push(event);
            }
        }
        let mut attempt = 0;
        loop {
            match crate::store::audit::insert(&pool, &batch).await {
                Ok(()) => {
                    metrics::counter!("rapport_audit_events_total", "outcome" => "written")
                        .increment(batch.len() as u64);
                    break;
                }
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "audit events not written yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(e) => {
                    metrics::counter!("rapport_audit_events_total", "outcome" => "dropped")
                        .increment(batch.len() as u64);
                    tracing::error!(error = %e, events = batch.len(), "audit events dropped: the database refused them");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Deletes events past `retention`, in batches, every hour.
async fn expire_events(pool: PgPool, retention: Duration, shutdown: Shutdown) {
    loop {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        loop {
            match crate::store::audit::expire(&pool, cutoff, 10_000).await {
                Ok(10_000) => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "audit events past retention deleted");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not delete audit events past retention; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// What an audited service needs: the log, the keys, the routes and the
/// contracts (to read a request's ids).
pub struct Auditor {
    pub log: AuditLog,
    pub auth: Arc<Authenticator>,
    pub routes: RouteTable,
    pub contracts: Contracts,
}

/// A request body type the audit can wrap and hand on.
pub trait Rewrap: http_body::Body<Data = Bytes> + Send + Unpin + Sized + 'static {
    /// `body` as this body type.
    fn rewrap(body: Replay<Self>) -> Self;
}

impl Rewrap for Body {
    fn rewrap(body: Replay<Self>) -> Self {
        Body::new(body)
    }
}

impl Rewrap for axum::body::Body {
    fn rewrap(body: Replay<Self>) -> Self {
        axum::body::Body::new(body)
    }
}

/// A service whose changing calls are audited (see the module docs).
#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    auditor: Arc<Auditor>,
}

impl<S> Audited<S> {
    pub fn new(inner: S, auditor: Arc<Auditor>) -> Self {
        Self { inner, auditor }
    }
}

impl<S: NamedService> NamedService for Audited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Audited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Rewrap,
    B::Error: Into<BoxError> + Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_string();
        let Some((service, method)) = audited(&self.auditor.routes, &path) else {
            return Box::pin(inner.oneshot(req));
        };
        let Ok(hash) = crate::auth::key_hash(req.headers()) else {
            return Box::pin(inner.oneshot(req));
        };
        let trace_id = rapport_kit::telemetry::current_trace_id().unwrap_or_default();
        let auditor = self.auditor.clone();
        Box::pin(async move {
            // Cached: the front door or the admin service looks the key up again.
            let Ok(principal) = auditor.auth.principal(&hash).await else {
                return inner.oneshot(req).await;
            };
            // The first message is read before the call goes on, so a call
            // refused unread (a missing scope, a rate limit) still names
            // what it asked for.
            let (parts, body) = req.into_parts();
            let (message, body) = first_message(body).await;
            let req = http::Request::from_parts(parts, B::rewrap(body));
            let answer = inner.oneshot(req).await?;
            let pending = Pending {
                auditor,
                principal,
                path,
                service,
                method,
                trace_id,
                message,
                status: grpc_status(answer.headers()),
                done: false,
            };
            Ok(answer.map(|body| Body::new(Watched::new(body, pending))))
        })
    }
}

/// Reads `body` up to the end of its first gRPC message: that message (when
/// it is uncompressed and at most [`CAPTURE_LIMIT`] bytes), and a body that
/// replays what was read and then goes on with the rest.
async fn first_message<B>(mut body: B) -> (Option<Bytes>, Replay<B>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    let mut replay = Replay {
        read: std::collections::VecDeque::new(),
        rest: None,
    };
    let mut seen = BytesMut::new();
    loop {
        match framed(&seen) {
            Framed::Message(m) => {
                replay.rest = Some(body);
                return (Some(m), replay);
            }
            Framed::Skipped => {
                replay.rest = Some(body);
                return (None, replay);
            }
            Framed::Partial => {}
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                }
                replay.read.push_back(Ok(frame));
            }
            Some(Err(e)) => {
                replay.read.push_back(Err(e));
                return (None, replay);
            }
            None => return (None, replay),
        }
    }
}

/// Where the start of a gRPC body stands.
#[derive(Debug, PartialEq)]
enum Framed {
    /// Its first message, whole.
    Message(Bytes),
    /// The first message is compressed or over [`CAPTURE_LIMIT`]: not kept.
    Skipped,
    /// More bytes are needed.
    Partial,
}

fn framed(seen: &[u8]) -> Framed {
    if seen.len() < 5 {
        return Framed::Partial;
    }
    let len = u32::from_be_bytes([seen[1], seen[2], seen[3], seen[4]]) as usize;
    if seen[0] != 0 || len > CAPTURE_LIMIT {
        Framed::Skipped
    } else if seen.len() >= 5 + len {
        Framed::Message(Bytes::copy_from_slice(&seen[5..5 + len]))
    } else {
        Framed::Partial
    }
}

/// A request body whose first frames were read ahead: those again, then the rest.
pub struct Replay<B: http_body::Body> {
    read: std::collections::VecDeque<Result<http_body::Frame<B::Data>, B::Error>>,
    rest: Option<B>,
}

// The frames read ahead are never pinned; the rest is pinned only when B is Unpin.
impl<B: http_body::Body + Unpin> Unpin for Replay<B> {}

impl<B> http_body::Body for Replay<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.read.pop_front() {
            return Poll::Ready(Some(frame));
        }
        match &mut this.rest {
            Some(rest) => std::pin::Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

/// An audited call waiting for its end.
struct Pending {
    auditor: Arc<Auditor>,
    principal: Principal,
    path: String,
    service: String,
    method: String,
    trace_id: String,
    message: Option<Bytes>,
    status: Option<i32>,
    done: bool,
}

impl Pending {
    /// Records the call, with `ended` as its code when no status came.
    fn record(&mut self, ended: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let code = tonic::Code::from_i32(self.status.unwrap_or(ended as i32));
        let named = self
            .message
            .take()
            .and_then(|bytes| {
                let method = self.auditor.contracts.method(&self.path)?;
                DynamicMessage::decode(method.input(), bytes).ok()
            })
            .map(|m| named_ids(&m))
            .unwrap_or_default();
        self.auditor.log.record(AuditRow {
            audit_event_id: Uuid::now_v7(),
            tenant_id: self.principal.tenant_id,
            time: Utc::now(),
            api_key_id: self.principal.key_id,
            api_key_prefix: self.principal.prefix.clone(),
            service: std::mem::take(&mut self.service),
            method: std::mem::take(&mut self.method),
            resource: named.resource(),
            resource_ids: named.ids.into_iter().map(|(_, id)| id).collect(),
            code: rapport_kit::metrics::code_name(code).to_string(),
            request_id: named.request_id,
            trace_id: std::mem::take(&mut self.trace_id),
        });
    }
}

impl CallEnd for Pending {
    fn status(&mut self, status: i32) {
        self.status = Some(status);
    }

    fn end(&mut self, ended: tonic::Code) {
        self.record(ended);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.record(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::profile::v1 as profile;

    fn decoded<M: prost::Message>(path: &str, m: &M) -> DynamicMessage {
        let contracts = Contracts::rapport().unwrap();
        let method = contracts.method(path).unwrap();
        DynamicMessage::decode(method.input(), m.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn ids_are_kept_and_payload_is_not() {
        let request = profile::UpdateCustomerRequest {
            customer: Some(profile::Customer {
                customer_id: "c-1".into(),
                display_name: "Ana López".into(),
                emails: vec![profile::EmailAddress {
                    address: "ana@example.com".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let named = named_ids(&decoded(
            "/rapport.profile.v1.ProfileService/UpdateCustomer",
            &request,
        ));
        assert_eq!(named.resource(), "customer_id=c-1");
        assert!(named.request_id.is_empty());
        let rendered = format!("{named:?}");
        assert!(!rendered.contains("Ana") && !rendered.contains("example.com"));
    }

    #[test]
    fn request_ids_and_lists_of_ids_are_read() {
        let request = profile::CreateCustomerRequest {
            customer: Some(profile::Customer {
                display_name: "Wen Bo".into(),
                ..Default::default()
            }),
            request_id: "req-7".into(),
        };
        let named = named_ids(&decoded(
            "/rapport.profile.v1.ProfileService/CreateCustomer",
            &request,
        ));
        assert_eq!(named.request_id, "req-7");
        assert!(named.ids.is_empty());

        let many = profile::BatchGetCustomersRequest {
            customer_ids: (0..15).map(|i| format!("c-{i}")).collect(),
        };
        let named = named_ids(&decoded(
            "/rapport.profile.v1.ProfileService/BatchGetCustomers",
            &many,
        ));
        assert_eq!(named.ids.len(), MAX_IDS);
        assert_eq!(named.ids[0], ("customer_id".to_string(), "c-0".to_string()));
    }

    #[test]
    fn writes_and_admin_actions_are_audited_reads_are_not() {
        let routes = RouteTable::public(&crate::front::SERVED);
        for (path, want) in [
            ("/rapport.profile.v1.ProfileService/UpdateCustomer", true),
            ("/rapport.profile.v1.ProfileService/EraseCustomer", true),
            (
                "/rapport.interaction.v1.InteractionService/RecordInteractions",
                true,
            ),
            ("/rapport.profile.v1.ProfileService/GetCustomer", false),
            (
                "/rapport.segmentation.v1.SegmentationService/WatchMembership",
                false,
            ),
            ("/rapport.gateway.v1.AdminService/CreateApiKey", true),
            ("/rapport.gateway.v1.AdminService/RevokeApiKey", true),
            ("/rapport.gateway.v1.AdminService/ListAuditEvents", false),
            ("/rapport.gateway.v1.AdminService/GetTenant", false),
            (
                "/rapport.gateway.v1.Customer360Service/ExportCustomerData",
                true,
            ),
            (
                "/rapport.gateway.v1.Customer360Service/GetCustomer360",
                false,
            ),
            ("/grpc.health.v1.Health/Check", false),
            ("/nonsense", false),
        ] {
            assert_eq!(audited(&routes, path).is_some(), want, "{path}");
        }
        assert_eq!(
            audited(&routes, "/rapport.profile.v1.ProfileService/MergeCustomers"),
            Some((
                "rapport.profile.v1.ProfileService".to_string(),
                "MergeCustomers".to_string()
            ))
        );
    }

    #[test]
    fn the_first_message_is_read_whole_and_large_ones_are_skipped() {
        assert_eq!(framed(&[0, 0, 0]), Framed::Partial);
        assert_eq!(framed(&[0, 0, 0, 0, 3, b'a']), Framed::Partial);
        assert_eq!(
            framed(&[0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0]),
            Framed::Message(Bytes::from_static(b"abc"))
        );
        assert_eq!(framed(&[0, 0, 0, 0, 0]), Framed::Message(Bytes::new()));
        assert_eq!(framed(&[1, 0, 0, 0, 3, b'a']), Framed::Skipped);
        let big = (CAPTURE_LIMIT as u32 + 1).to_be_bytes();
        assert_eq!(
            framed(&[0, big[0], big[1], big[2], big[3]]),
            Framed::Skipped
        );
    }

    #[tokio::test]
    async fn a_read_ahead_body_replays_every_byte() {
        use http_body_util::BodyExt as _;
        let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(&[0, 0, 0]))),
            Ok(http_body::Frame::data(Bytes::from_static(&[
                0, 2, b'h', b'i', 0,
            ]))),
            Ok(http_body::Frame::data(Bytes::from_static(&[
                0, 0, 0, 1, b'!',
            ]))),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let (message, replay) = first_message(body).await;
        assert_eq!(message.as_deref(), Some(&b"hi"[..]));
        let all = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], &[0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0, 1, b'!']);
    }
}
