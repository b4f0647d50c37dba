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
use rapport_kit::context::{INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, TENANT_HEADER};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use crate::auth::{Authenticator, require_scope};
use crate::routes::{Route, RouteTable};

/// The public services this gateway forwards today, each to its backend.
/// A service joins this list when its backend implements it, so reflection
/// never lists a method that would answer UNIMPLEMENTED.
pub const SERVED: [&str; 5] = [
    "rapport.profile.v1.ProfileService",
    "rapport.interaction.v1.InteractionService",
    "rapport.interaction.v1.CampaignService",
    "rapport.segmentation.v1.SegmentationService",
    "rapport.valuation.v1.ValuationService",
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
                    Endpoint::from_shared(u.trim().to_string())
                        .map(|e| {
                            e.connect_timeout(Duration::from_secs(5))
                                .http2_keep_alive_interval(Duration::from_secs(30))
                                .tcp_nodelay(true)
                        })
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
    use tonic_health::pb::health_check_response::ServingStatus;
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
        let mut client = tonic_health::pb::health_client::HealthClient::new(probe.clone());
        let healthy = matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                client.check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            )
            .await,
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
        );
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
}

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
            }),
        }
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
                status: response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                written: false,
            };
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(LoggedBody { inner: body, entry }),
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
    /// The gRPC status once known (headers of a trailers-only answer, or
    /// the trailers).
    status: Option<String>,
    written: bool,
}

impl AccessEntry {
    fn write(&mut self, ended: &str) {
        if self.written {
            return;
        }
        self.written = true;
        let status = self.status.as_deref().unwrap_or(ended);
        tracing::info!(
            target: "rapport::access",
            method = %self.method,
            tenant = %self.tenant,
            key = %self.key,
            status = %status,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            trace_id = self.trace_id.as_deref().unwrap_or(""),
            "call"
        );
    }
}

impl Drop for AccessEntry {
    fn drop(&mut self) {
        // Dropped before the trailers: the client went away.
        self.write("cancelled");
    }
}

/// A response body that writes the access log line when the call ends.
struct LoggedBody {
    inner: Body,
    entry: AccessEntry,
}

impl http_body::Body for LoggedBody {
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
                if let Some(status) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                {
                    this.entry.status = Some(status.to_string());
                    this.entry.write("0");
                }
            }
            Poll::Ready(Some(Err(_))) => this.entry.write("error"),
            Poll::Ready(None) => this.entry.write("0"),
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
        let principal = self
            .auth
            .authenticate(req.headers())
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

        let (mut parts, body) = req.into_parts();
        let headers = &mut parts.headers;
        headers.remove(http::header::AUTHORIZATION);
        headers.remove(INTERNAL_TOKEN_HEADER);
        headers.remove(TENANT_HEADER);
        headers.remove(PRINCIPAL_HEADER);
        if let Ok(v) = HeaderValue::from_str(&principal.tenant_id.to_string()) {
            headers.insert(TENANT_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&principal.key_id.to_string()) {
            headers.insert(PRINCIPAL_HEADER, v);
        }
        if let Some(t) = &self.internal_token {
            headers.insert(INTERNAL_TOKEN_HEADER, t.clone());
        }
        rapport_kit::telemetry::inject_current(headers);
        let req = http::Request::from_parts(parts, Body::new(body));
        match channel.oneshot(req).await {
            Ok(response) => {
                let response = match slot {
                    Some(slot) => response.map(|body| {
                        Body::new(HoldsSlot {
                            inner: body,
                            _slot: slot,
                        })
                    }),
                    None => response,
                };
                Ok((response, who))
            }
            Err(e) => {
                tracing::warn!(backend = area, error = %e, "backend unreachable");
                Err((
                    Status::unavailable(format!("the {area} service is unreachable; retry later")),
                    who,
                ))
            }
        }
    }
}

/// A response body that keeps its stream slot until the body is done with.
struct HoldsSlot {
    inner: Body,
    _slot: crate::auth::StreamSlot,
}

impl http_body::Body for HoldsSlot {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
