//! Prometheus metrics: every process can serve them over HTTP
//! (`RAPPORT_METRICS_LISTEN`), and every gRPC server records its calls.
//! Every family has its `# HELP` and `# TYPE` ([`FAMILIES`]); status codes
//! are labelled by their canonical names (`OK`, `NOT_FOUND`), and a method by
//! its `service` (the full protobuf name) and `method` (the bare name).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `rapport_grpc_requests_total` | component, service, method, code | calls by final status |
//! | `rapport_grpc_request_duration_seconds` | component, service, method | latency histogram (to the end of the response) |
//! | `rapport_grpc_requests_in_flight` | component | calls under way |
//! | `rapport_db_pool_connections` | component, state (idle, busy) | PostgreSQL pool use |
//! | `rapport_feed_consumer_lag_seconds` | consumer, feed | age of the last event applied when it was applied |
//! | `rapport_feed_consumer_events_total` | consumer, feed | events applied |
//! | `rapport_build_info` | version, component | 1, for the running build |
//! | `rapport_audit_events_total` | outcome (written, dropped) | the gateway's audit trail |
//! | `process_*` | | CPU seconds, resident and virtual memory, open and maximum file descriptors, threads, start time |
//!
//! and the services' own families listed in [`FAMILIES`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets in seconds, from 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What kind of family a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// Every family Rapport's processes write, with its help text.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "rapport_audit_events_total",
        Kind::Counter,
        "Audit events, by outcome: written, or dropped (the writer fell behind or the database refused them).",
    ),
    (
        "rapport_grpc_requests_total",
        Kind::Counter,
        "gRPC calls served, by final status code.",
    ),
    (
        "rapport_grpc_request_duration_seconds",
        Kind::Histogram,
        "gRPC call latency, to the end of the response.",
    ),
    (
        "rapport_grpc_requests_in_flight",
        Kind::Gauge,
        "gRPC calls under way.",
    ),
    (
        "rapport_db_pool_connections",
        Kind::Gauge,
        "PostgreSQL pool connections, idle or busy.",
    ),
    (
        "rapport_feed_consumer_lag_seconds",
        Kind::Gauge,
        "Age of the last change-feed event a consumer applied, when it applied it.",
    ),
    (
        "rapport_feed_consumer_events_total",
        Kind::Counter,
        "Change-feed events a consumer applied.",
    ),
    (
        "rapport_build_info",
        Kind::Gauge,
        "1, labelled with the running build's version and component.",
    ),
    (
        "rapport_internal_auth_required",
        Kind::Gauge,
        "1 when the server requires the internal credential from its peers.",
    ),
    (
        "rapport_tenant_shed_total",
        Kind::Counter,
        "Calls refused to protect the server, by kind of limit.",
    ),
    (
        "rapport_interaction_ingested_total",
        Kind::Counter,
        "Interactions received by RecordInteractions, by outcome.",
    ),
    (
        "rapport_segmentation_recompute_seconds",
        Kind::Histogram,
        "Time to recompute changed customers' features and memberships.",
    ),
    (
        "rapport_segmentation_refresh_seconds",
        Kind::Histogram,
        "Time to refresh a segment, by kind.",
    ),
    (
        "rapport_segmentation_members_entered_total",
        Kind::Counter,
        "Customers who entered a segment.",
    ),
    (
        "rapport_segmentation_members_exited_total",
        Kind::Counter,
        "Customers who left a segment.",
    ),
    (
        "rapport_valuation_model_fit_seconds",
        Kind::Histogram,
        "Time to fit a model, by kind.",
    ),
    (
        "rapport_valuation_score_run_seconds",
        Kind::Histogram,
        "Time of a scoring run over a tenant.",
    ),
    (
        "rapport_valuation_customers_scored_total",
        Kind::Counter,
        "Customers scored by scoring runs.",
    ),
];

/// Installs the process-wide recorder and serves `/metrics` on `listen`,
/// with every family described, the build's info, and the process's own
/// figures refreshed every few seconds. Must run inside a tokio runtime; a
/// second call in one process fails.
pub fn install(listen: SocketAddr, component: &str) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    describe();
    metrics::gauge!("rapport_build_info", "version" => env!("CARGO_PKG_VERSION"), "component" => component.to_string())
        .set(1.0);
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            process.collect();
        }
    });
    Ok(())
}

/// Describes every family of [`FAMILIES`] to the installed recorder.
pub fn describe() {
    for (name, kind, help) in FAMILIES {
        let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
        match (kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(*name, *help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(*name, u, *help),
            (Kind::Gauge, None) => metrics::describe_gauge!(*name, *help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(*name, u, *help),
            (Kind::Histogram, None) => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// The canonical name of a gRPC status code, as the gRPC specification
/// writes it (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `service` and `method` of a gRPC path `/package.Service/Method`
/// (the whole path as the method, and no service, when it is not one).
pub fn split_path(path: &str) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.contains('/') => {
            (service.to_string(), method.to_string())
        }
        _ => (String::new(), path.to_string()),
    }
}

/// A tower layer recording every call of a gRPC server (see the module docs).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    component: String,
}

impl MetricsLayer {
    /// Records calls under the label `component`.
    pub fn new(component: impl Into<String>) -> Self {
        Self {
            component: component.into(),
        }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            component: self.component.clone(),
        }
    }
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    component: String,
}

impl<S, B> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let component = self.component.clone();
        let method = req.uri().path().to_string();
        let started = Instant::now();
        metrics::gauge!("rapport_grpc_requests_in_flight", "component" => component.clone())
            .increment(1.0);
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            match result {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let code = parts
                        .headers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok());
                    let body = MeteredBody {
                        inner: body,
                        record: Some(Record {
                            component,
                            method,
                            started,
                            code,
                        }),
                    };
                    Ok(http::Response::from_parts(
                        parts,
                        tonic::body::Body::new(body),
                    ))
                }
                Err(e) => {
                    Record {
                        component,
                        method,
                        started,
                        code: Some(tonic::Code::Unavailable as i32),
                    }
                    .finish(None);
                    Err(e)
                }
            }
        })
    }
}

struct Record {
    component: String,
    method: String,
    started: Instant,
    code: Option<i32>,
}

impl Record {
    fn finish(self, trailer_code: Option<i32>) {
        // A body dropped before its trailers: the client went away.
        let code = tonic::Code::from_i32(
            trailer_code
                .or(self.code)
                .unwrap_or(tonic::Code::Cancelled as i32),
        );
        // Unknown methods would let any client add label values: fold them.
        let (service, method) = if code == tonic::Code::Unimplemented {
            ("other".to_string(), "other".to_string())
        } else {
            split_path(&self.method)
        };
        let code = code_name(code);
        metrics::counter!("rapport_grpc_requests_total", "component" => self.component.clone(), "service" => service.clone(), "method" => method.clone(), "code" => code)
            .increment(1);
        metrics::histogram!("rapport_grpc_request_duration_seconds", "component" => self.component.clone(), "service" => service, "method" => method)
            .record(self.started.elapsed().as_secs_f64());
        metrics::gauge!("rapport_grpc_requests_in_flight", "component" => self.component)
            .decrement(1.0);
    }
}

/// A response body that records the call when it ends (or is dropped).
struct MeteredBody {
    inner: tonic::body::Body,
    record: Option<Record>,
}

impl HttpBody for MeteredBody {
    type Data = bytes_of::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let trailers_code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
            }),
            Poll::Ready(None) => Some(None),
            _ => None,
        };
        // Trailers, or the end of the body: the call is over.
        if let Some(code) = trailers_code
            && let Some(r) = self.record.take()
        {
            r.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.finish(None);
        }
    }
}

/// Bytes, as tonic's body carries them.
mod bytes_of {
    pub use tonic::codegen::Bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        // Every code by number, as tonic knows them.
        for n in 0..=16 {
            let c = tonic::Code::from_i32(n);
            assert_eq!(
                code_name(c),
                format!("{c:?}").chars().fold(String::new(), |mut s, ch| {
                    if ch.is_uppercase() && !s.is_empty() {
                        s.push('_');
                    }
                    s.push(ch.to_ascii_uppercase());
                    s
                }),
                "{n}"
            );
        }
    }

    #[test]
    fn a_path_splits_into_service_and_method() {
        assert_eq!(
            split_path("/rapport.gateway.v1.AdminService/GetTenant"),
            ("rapport.gateway.v1.AdminService".into(), "GetTenant".into())
        );
        assert_eq!(split_path("/odd"), (String::new(), "/odd".into()));
        assert_eq!(split_path("//x"), (String::new(), "//x".into()));
        assert_eq!(split_path("/a/b/c"), (String::new(), "/a/b/c".into()));
    }

    #[test]
    fn every_family_is_named_by_the_conventions() {
        for (name, kind, help) in FAMILIES {
            assert!(!help.is_empty());
            assert_eq!(name.ends_with("_total"), *kind == Kind::Counter, "{name}");
        }
    }
}
