//! The gateway's front door: every call that is not the gateway's own
//! (health, reflection) comes here. It authenticates the API key, checks the
//! scope the method needs, applies the key's rate limit, and forwards the call
//! unchanged to the backend that owns it — unary and streaming alike, with
//! metadata, status, trailers, deadline (`grpc-timeout`) and cancellation —
//! carrying the key's tenant and principal over the internal credential.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::HeaderValue;
use rapport_kit::context::{
    INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, TENANT_HEADER, TIME_ZONE_HEADER,
};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use crate::auth::{Authenticator, require_scope};
use crate::routes::{Route, RouteTable};

/// The public services this gateway forwards today, each to its backend.
/// A service joins this list when its backend implements it, so reflection
/// never lists a method that would answer UNIMPLEMENTED.
pub const SERVED: [&str; 6] = [
    "rapport.profile.v1.ProfileService",
    "rapport.interaction.v1.InteractionService",
    "rapport.interaction.v1.CampaignService",
    "rapport.segmentation.v1.SegmentationService",
    "rapport.valuation.v1.ValuationService",
    "rapport.engagement.v1.EngagementService",
];

/// Backends by area (`profile`, `interaction`, …).
#[derive(Clone, Default)]
pub struct Backends {
    channels: HashMap<&'static str, Channel>,
}

impl Backends {
    /// Channels to the configured backends. A URL may list several replicas,
    /// separated by commas: calls are spread over them by power-of-two-choices,
    /// and a replica whose health check fails is taken out of rotation until it
    /// passes again (checked every [`HEALTH_PROBE`]).
    pub fn from_urls(urls: &[(&'static str, Option<&str>)]) -> Result<Self, String> {
        let mut channels = HashMap::new();
        for (area, url) in urls {
            let Some(url) = url else { continue };
            let endpoints = url
                .split(',')
                .map(|u| {
                    rapport_kit::peer::endpoint(u.trim())
                        .map_err(|e| format!("RAPPORT_{}_URL: {e}", area.to_uppercase()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let channel = if endpoints.len() == 1 {
                endpoints[0].connect_lazy()
            } else {
                let (channel, changes) = Channel::balance_channel(endpoints.len() * 2 + 8);
                for endpoint in endpoints {
                    tokio::spawn(eject_when_unhealthy(endpoint, changes.clone()));
                }
                channel
            };
            channels.insert(*area, channel);
        }
        Ok(Self { channels })
    }

    /// The channel to `area`'s backend.
    pub fn get(&self, area: &str) -> Option<Channel> {
        self.channels.get(area).cloned()
    }
}

/// How often each replica of a backend is health-checked.
pub const HEALTH_PROBE: Duration = Duration::from_secs(1);

/// Keeps one replica in its backend's rotation while its health check
/// answers SERVING, and out of it otherwise. Ends when the channel goes away.
async fn eject_when_unhealthy(
    endpoint: Endpoint,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<http::Uri, Endpoint>>,
) {
    use tonic::transport::channel::Change;
    let key = endpoint.uri().clone();
    let probe = endpoint.connect_lazy();
    // In rotation from the start, so calls flow before the first check.
    let mut in_rotation = changes
        .send(Change::Insert(key.clone(), endpoint.clone()))
        .await
        .is_ok();
    loop {
        tokio::time::sleep(HEALTH_PROBE).await;
        if changes.is_closed() {
            return;
        }
        let healthy =
            rapport_kit::peer::reports_serving(probe.clone(), "", None, Duration::from_secs(1))
                .await;
        let change = match (healthy, in_rotation) {
            (true, false) => Change::Insert(key.clone(), endpoint.clone()),
            (false, true) => Change::Remove(key.clone()),
            _ => continue,
        };
        tracing::info!(replica = %key, healthy, "backend replica {}", if healthy { "back in rotation" } else { "taken out of rotation" });
        if changes.send(change).await.is_err() {
            return;
        }
        in_rotation = healthy;
    }
}

struct Inner {
    routes: RouteTable,
    auth: Arc<Authenticator>,
    backends: Backends,
    internal_token: Option<HeaderValue>,
    max_request_bytes: usize,
    shutdown: Option<rapport_kit::shutdown::Shutdown>,
}

/// How often the key of an open stream is checked again. With the key
/// cache's [`crate::auth::CACHE_TTL`], a revoked or expired key's streams end
/// within about three seconds (the contract promises five).
pub const STREAM_RECHECK: Duration = Duration::from_secs(1);

/// The largest request message forwarded unless configured otherwise
/// (`RAPPORT_MAX_REQUEST_BYTES`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The front-door service (a tower service over HTTP/2 requests).
#[derive(Clone)]
pub struct Front {
    inner: Arc<Inner>,
}

impl Front {
    /// A front door forwarding the services of `routes` to `backends`,
    /// authenticating with `auth` and presenting `internal_token` to backends.
    pub fn new(
        routes: RouteTable,
        auth: Arc<Authenticator>,
        backends: Backends,
        internal_token: Option<&str>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                routes,
                auth,
                backends,
                internal_token: internal_token.and_then(|t| HeaderValue::from_str(t).ok()),
                max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
                shutdown: None,
            }),
        }
    }

    /// Ends the streams still open when `shutdown` fires with UNAVAILABLE,
    /// so clients reconnect (to another replica) instead of taking the end
    /// for a normal one.
    pub fn with_shutdown(mut self, shutdown: rapport_kit::shutdown::Shutdown) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.shutdown = Some(shutdown);
        }
        self
    }

    /// Refuses request messages larger than `bytes` with RESOURCE_EXHAUSTED,
    /// at the gateway, before the backend sees them.
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_request_bytes = bytes;
        }
        self
    }
}

impl tower::Service<http::Request<axum::body::Body>> for Front {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let method = req.uri().path().to_string();
            let started = Instant::now();
            let (response, who) = match inner.forward(req).await {
                Ok((response, who)) => (response, who),
                Err((status, who)) => (status.into_http(), who),
            };
            // The access log line is written when the call ends: at once for
            // a call refused or failed in its headers, otherwise when the
            // response's trailers (or the client's cancellation) end it.
            let (tenant, key) = who.unwrap_or_default();
            let entry = AccessEntry {
                method,
                tenant,
                key,
                started,
                trace_id: rapport_kit::telemetry::current_trace_id(),
                status: grpc_status(response.headers()),
                written: false,
            };
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(Watched::new(body, entry)),
            ))
        })
    }
}

/// One call's access log line, written once when the call ends.
struct AccessEntry {
    method: String,
    tenant: String,
    key: String,
    started: Instant,
    trace_id: Option<String>,
    /// The gRPC status code once known (headers of a trailers-only answer,
    /// or the trailers).
    status: Option<i32>,
    written: bool,
}

impl AccessEntry {
    /// Writes the line, with `ended` as the code when none was received.
    fn write(&mut self, ended: tonic::Code) {
        if self.written {
            return;
        }
        self.written = true;
        let status = self.status.unwrap_or(ended as i32);
        tracing::info!(
            target: "rapport::access",
            method = %self.method,
            tenant = %self.tenant,
            key = %self.key,
            status,
            code = rapport_kit::metrics::code_name(tonic::Code::from_i32(status)),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            trace_id = self.trace_id.as_deref().unwrap_or(""),
            "call"
        );
    }
}

/// The `grpc-status` of headers or trailers, as a number.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Drop for AccessEntry {
    fn drop(&mut self) {
        // Dropped before the trailers: the client went away.
        self.write(tonic::Code::Cancelled);
    }
}

/// What is told how a call ended, once: its status when the trailers (or a
/// trailers-only head) carry one, and its end.
pub(crate) trait CallEnd: Send + 'static {
    /// The `grpc-status` the answer carried.
    fn status(&mut self, status: i32);
    /// The call ended; `ended` is its code when no status was carried.
    fn end(&mut self, ended: tonic::Code);
}

impl CallEnd for AccessEntry {
    fn status(&mut self, status: i32) {
        self.status = Some(status);
    }

    fn end(&mut self, ended: tonic::Code) {
        self.write(ended);
    }
}

/// A response body that tells `E` how the call ended as the answer passes.
/// (Dropped before its end, `E` learns nothing more: its own `Drop` says so.)
pub(crate) struct Watched<E: CallEnd> {
    inner: Body,
    end: E,
}

impl<E: CallEnd> Watched<E> {
    /// Watches `inner` for `end`.
    pub(crate) fn new(inner: Body, end: E) -> Self {
        Self { inner, end }
    }
}

impl<E: CallEnd + Unpin> http_body::Body for Watched<E> {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                    this.end.status(status);
                    this.end.end(tonic::Code::Ok);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end.end(tonic::Code::Unknown),
            Poll::Ready(None) => this.end.end(tonic::Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type Who = Option<(String, String)>;

impl Inner {
    async fn forward(
        &self,
        req: http::Request<axum::body::Body>,
    ) -> Result<(http::Response<Body>, Who), (Status, Who)> {
        let path = req.uri().path().to_string();
        let (area, scope, streaming) = match self.routes.route(&path) {
            Route::Forward {
                area,
                scope,
                streaming,
            } => (area, scope, streaming),
            Route::Internal => {
                return Err((
                    Status::unimplemented(
                        "change feeds are internal to Rapport's services and are not served by the gateway",
                    ),
                    None,
                ));
            }
            _ => {
                return Err((
                    Status::unimplemented(format!("unknown method {path}")),
                    None,
                ));
            }
        };
        let hash = crate::auth::key_hash(req.headers()).map_err(|e| (Status::from(e), None))?;
        let principal = self
            .auth
            .principal(&hash)
            .await
            .map_err(|e| (Status::from(e), None))?;
        let who = Some((principal.tenant_id.to_string(), principal.prefix.clone()));
        require_scope(&principal, &scope).map_err(|s| (s, who.clone()))?;
        self.auth
            .admit(&principal)
            .map_err(|e| (Status::from(e), who.clone()))?;
        // A streaming call holds one of the key's stream slots until it ends.
        let slot = if streaming {
            Some(
                self.auth
                    .open_stream(&principal)
                    .map_err(|e| (Status::from(e), who.clone()))?,
            )
        } else {
            None
        };
        let channel = self.backends.get(area).ok_or_else(|| {
            (
                Status::unavailable(format!(
                    "no {area} service is configured behind this gateway"
                )),
                who.clone(),
            )
        })?;

        // Whatever must end the call early (an oversized request message,
        // the key revoked or expired while a stream is open) is sent here.
        let (end_tx, mut end_rx) = tokio::sync::mpsc::unbounded_channel::<Status>();
        if streaming {
            tokio::spawn(watch_key(
                self.auth.clone(),
                hash,
                scope.clone(),
                end_tx.clone(),
                self.shutdown.clone(),
            ));
        }

        let (mut parts, body) = req.into_parts();
        let headers = &mut parts.headers;
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(INTERNAL_TOKEN_HEADER);
        headers.remove(TENANT_HEADER);
        headers.remove(PRINCIPAL_HEADER);
        headers.remove(TIME_ZONE_HEADER);
        if let Ok(v) = HeaderValue::from_str(&principal.tenant_id.to_string()) {
            headers.insert(TENANT_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&principal.time_zone) {
            headers.insert(TIME_ZONE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&principal.key_id.to_string()) {
            headers.insert(PRINCIPAL_HEADER, v);
        }
        if let Some(t) = &self.internal_token {
            headers.insert(INTERNAL_TOKEN_HEADER, t.clone());
        }
        rapport_kit::telemetry::inject_current(headers);
        let body = Inbound {
            inner: body,
            frames: Frames::new(self.max_request_bytes),
            end: end_tx,
        };
        let req = http::Request::from_parts(parts, Body::new(body));
        // A client-streaming call's answer comes only when the client is done:
        // the call can end early while its headers are still awaited.
        let answer = tokio::select! {
            biased;
            Some(status) = end_rx.recv() => return Err((status, who)),
            answer = channel.oneshot(req) => answer,
        };
        match answer {
            Ok(response) => {
                let response = response.map(|body| {
                    Body::new(Outbound {
                        inner: Some(body),
                        _slot: slot,
                        end: Some(end_rx),
                    })
                });
                Ok((response, who))
            }
            Err(e) => {
                // The request may have been cut short for a reason to report.
                if let Ok(status) = end_rx.try_recv() {
                    return Err((status, who));
                }
                tracing::warn!(backend = area, error = %e, "backend unreachable");
                Err((
                    Status::unavailable(format!("the {area} service is unreachable; retry later")),
                    who,
                ))
            }
        }
    }
}

/// Checks the key of an open stream every [`STREAM_RECHECK`]; when it has
/// been revoked or has expired (UNAUTHENTICATED) or no longer grants the
/// method's scope (PERMISSION_DENIED), says so on `end` and stops. Stops too
/// when the call has ended. A database that cannot be reached ends nothing:
/// the key is checked again at the next tick. When the gateway shuts down,
/// ends the stream with UNAVAILABLE.
async fn watch_key(
    auth: Arc<Authenticator>,
    hash: [u8; 32],
    scope: String,
    end: tokio::sync::mpsc::UnboundedSender<Status>,
    shutdown: Option<rapport_kit::shutdown::Shutdown>,
) {
    let stopping = async {
        match &shutdown {
            Some(s) => s.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STREAM_RECHECK) => {}
            _ = end.closed() => return,
            _ = &mut stopping => {
                let _ = end.send(rapport_kit::shutdown::Shutdown::stream_status(
                    "and resume from the last item received",
                ));
                return;
            }
        }
        let verdict = match auth.principal(&hash).await {
            Ok(p) => require_scope(&p, &scope).err(),
            Err(e @ rapport_kit::ApiError::Unauthenticated(_)) => Some(Status::from(e)),
            Err(e) => {
                tracing::debug!(error = %e, "could not check an open stream's key; will retry");
                None
            }
        };
        if let Some(status) = verdict {
            tracing::info!(code = ?status.code(), reason = %status.message(), "ending an open stream");
            let _ = end.send(status);
            return;
        }
    }
}

/// Where a request's gRPC framing stands: each message is a 5-byte prefix
/// (compression flag, big-endian length) and that many bytes.
struct Frames {
    limit: usize,
    /// Prefix bytes collected so far (a prefix may span chunks).
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to pass.
    remaining: usize,
}

impl Frames {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            prefix: [0; 5],
            have: 0,
            remaining: 0,
        }
    }

    /// Follows `chunk`; the length of the first message over the limit.
    fn follow(&mut self, mut chunk: &[u8]) -> Option<usize> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len());
                self.remaining -= n;
                chunk = &chunk[n..];
                continue;
            }
            let n = (5 - self.have).min(chunk.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&chunk[..n]);
            self.have += n;
            chunk = &chunk[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                if len > self.limit {
                    return Some(len);
                }
                self.remaining = len;
            }
        }
        None
    }
}

/// The request body on its way to the backend: refuses a message over the
/// gateway's limit (the call then ends with RESOURCE_EXHAUSTED and the
/// backend's copy of the request is aborted), and claims no exact length
/// (a gRPC-Web text body shrinks when it is decoded, so the length the
/// browser sent is not the length forwarded).
struct Inbound {
    inner: axum::body::Body,
    frames: Frames,
    end: tokio::sync::mpsc::UnboundedSender<Status>,
}

impl http_body::Body for Inbound {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Some(len) = this.frames.follow(data)
                {
                    let status = too_large(len, this.frames.limit);
                    let _ = this.end.send(status.clone());
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(Box::new(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// RESOURCE_EXHAUSTED for a request message of `len` bytes over `limit`.
fn too_large(len: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "request message of {len} bytes is larger than the gateway's limit of {limit} bytes; \
         send smaller messages (split the batch)"
    ))
}

/// The backend's answer on its way to the client. It keeps the call's stream
/// slot until the body is done with, and ends the call with the status sent
/// on `end` (the key revoked, a message too large) when one comes first,
/// dropping the backend's answer (which cancels the call there).
struct Outbound {
    inner: Option<Body>,
    _slot: Option<crate::auth::StreamSlot>,
    end: Option<tokio::sync::mpsc::UnboundedReceiver<Status>>,
}

impl http_body::Body for Outbound {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(end) = &mut this.end {
            match end.poll_recv(cx) {
                Poll::Ready(Some(status)) => {
                    this.end = None;
                    this.inner = None;
                    return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&status)))));
                }
                // Nothing can end the call early any more.
                Poll::Ready(None) => this.end = None,
                Poll::Pending => {}
            }
        }
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.end = None;
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_trailers()
        {
            this.end = None;
        }
        polled
    }

    // The backend's answer decides: a trailers-only answer (an error with no
    // message) must go out as one HEADERS frame that ends the stream, which
    // happens only when the body says at once that it is at its end. Nothing
    // is left to cut short then.
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The trailers that end a call with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}
