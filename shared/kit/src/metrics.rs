//! Prometheus metrics: every process can serve them over HTTP
//! (`RAPPORT_METRICS_LISTEN`), and every gRPC server records its calls.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `rapport_grpc_requests_total` | component, method, code | calls by final status |
//! | `rapport_grpc_request_duration_seconds` | component, method | latency histogram (to the end of the response) |
//! | `rapport_grpc_requests_in_flight` | component | calls under way |
//! | `rapport_db_pool_connections` | component, state (idle, busy) | PostgreSQL pool use |
//! | `rapport_feed_consumer_lag_seconds` | consumer | age of the last event applied when it was applied |
//! | `rapport_feed_consumer_events_total` | consumer | events applied |

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets in seconds, from 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder and serves `/metrics` on `listen`.
/// Must run inside a tokio runtime; a second call in one process fails.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))
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
        let method = if code == tonic::Code::Unimplemented {
            "other".to_string()
        } else {
            self.method
        };
        let code = format!("{code:?}");
        metrics::counter!("rapport_grpc_requests_total", "component" => self.component.clone(), "method" => method.clone(), "code" => code)
            .increment(1);
        metrics::histogram!("rapport_grpc_request_duration_seconds", "component" => self.component.clone(), "method" => method)
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
