//! Deadlines: a call ends with DEADLINE_EXCEEDED when the client's deadline
//! (the `grpc-timeout` header) or the server's own upper bound passes, which
//! ever comes first. The bound covers the work before the response starts:
//! the whole of a unary call, and the whole upload of a client stream. Client
//! streams (bulk ingestion) and the few unary methods documented as long
//! runs (model fits, scoring a whole tenant) are therefore exempt from the
//! server's bound and end only at the client's own deadline, if it sets one.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::FutureExt;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Applies deadlines to every call (see the module docs).
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    limit: Duration,
    exempt: Arc<HashSet<String>>,
}

impl DeadlineLayer {
    /// Calls last at most `limit`, or less when the client says so; the
    /// methods (paths) in `exempt` are bound by the client's deadline only.
    pub fn new(limit: Duration, exempt: HashSet<String>) -> Self {
        Self {
            limit,
            exempt: Arc::new(exempt),
        }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            limit: self.limit,
            exempt: self.exempt.clone(),
        }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
    exempt: Arc<HashSet<String>>,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let client = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let limit = if self.exempt.contains(req.uri().path()) {
            client
        } else {
            Some(client.map_or(self.limit, |c| c.min(self.limit)))
        };
        let call = self.inner.call(req);
        async move {
            let Some(limit) = limit else {
                return call.await;
            };
            match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "deadline of {} ms exceeded",
                    limit.as_millis()
                ))
                .into_http()),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_junk() {
        assert_eq!(parse_grpc_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "12", "1x", "123456789m", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod exempt_tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    fn slow() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = futures::future::BoxFuture<
            'static,
            Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
        >,
    > + Clone {
        tower::service_fn(|_req: http::Request<()>| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            }) as futures::future::BoxFuture<'static, _>
        })
    }

    fn status(r: &http::Response<tonic::body::Body>) -> Option<String> {
        r.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or("").to_string())
    }

    #[tokio::test]
    async fn the_server_bound_cuts_calls_but_not_client_streams() {
        let exempt: HashSet<String> = ["/svc/Upload".to_string()].into_iter().collect();
        let layer = DeadlineLayer::new(Duration::from_millis(50), exempt);
        let call = |path: &str, timeout: Option<&str>| {
            let mut req = http::Request::builder().uri(path);
            if let Some(t) = timeout {
                req = req.header("grpc-timeout", t);
            }
            layer.layer(slow()).oneshot(req.body(()).unwrap())
        };
        let cut = call("/svc/Get", None).await.unwrap();
        assert_eq!(status(&cut).as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        let upload = call("/svc/Upload", None).await.unwrap();
        assert_eq!(
            status(&upload),
            None,
            "an upload runs past the server's bound"
        );
        let upload = call("/svc/Upload", Some("20m")).await.unwrap();
        assert_eq!(
            status(&upload).as_deref(),
            Some("4"),
            "but not past the client's deadline"
        );
    }

    #[test]
    fn the_contracts_name_the_client_streams() {
        let paths = crate::server::unbounded_methods("rapport.interaction.v1.InteractionService");
        assert_eq!(
            paths,
            ["/rapport.interaction.v1.InteractionService/RecordInteractions"]
        );
        assert_eq!(
            crate::server::unbounded_methods("rapport.profile.v1.ProfileService"),
            ["/rapport.profile.v1.ProfileService/ImportCustomers"]
        );
        let mut valuation =
            crate::server::unbounded_methods("rapport.valuation.v1.ValuationService");
        valuation.sort();
        assert_eq!(
            valuation,
            [
                "/rapport.valuation.v1.ValuationService/FitModel",
                "/rapport.valuation.v1.ValuationService/ScoreCustomers"
            ]
        );
    }
}
