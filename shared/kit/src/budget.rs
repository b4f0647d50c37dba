//! Per-tenant budgets at a service, so one tenant at its limits cannot take
//! the service's database pool from the others.
//!
//! Each tenant may have at most `calls` calls in progress at once (by
//! default the pool less a quarter of it, at least two connections: every
//! call may hold a connection, and the rest stay free for other tenants),
//! counted from the moment the call starts until its response body is done,
//! server-streaming exports included. A call over the budget waits up to
//! [`QUEUE`] for one of the tenant's own calls to end (it never waits behind
//! another tenant's calls), then is shed with RESOURCE_EXHAUSTED and a
//! RetryInfo. Long-lived streams (`Watch*` methods, which hold no connection
//! while they wait, and client-streaming uploads, which hold one per batch
//! only) count against a separate budget of `streams` open streams per
//! tenant, shed at once when it is full. Calls without a tenant (health,
//! reflection, the services' own feed consumers) are not counted.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use uuid::Uuid;

use crate::context::TENANT_HEADER;
use crate::error::ApiError;

/// How long a call over its tenant's budget waits for one of the tenant's
/// own calls to end before it is shed.
pub const QUEUE: Duration = Duration::from_secs(2);

/// The retry delay a shed call is given.
pub const RETRY: Duration = Duration::from_secs(1);

/// The calls one tenant may have in progress at a service whose pool holds
/// `pool` connections (every call may hold one): all but a quarter of them
/// (at least two) kept for the other tenants. A tenant alone keeps most of
/// the pool's throughput; another tenant always finds connections free.
pub fn calls_per_tenant(pool: usize) -> usize {
    pool.saturating_sub((pool / 4).max(2)).max(1)
}

/// Open watches a tenant may have at one service, unless configured.
pub const DEFAULT_STREAMS: usize = 256;

struct Tenant {
    calls: Arc<Semaphore>,
    streams: Arc<AtomicUsize>,
}

struct Budgets {
    component: String,
    calls: usize,
    streams: usize,
    /// Client-streaming methods (paths), counted as streams.
    uploads: std::collections::HashSet<String>,
    tenants: Mutex<HashMap<Uuid, Arc<Tenant>>>,
}

impl Budgets {
    fn tenant(&self, id: Uuid) -> Option<Arc<Tenant>> {
        let mut tenants = self.tenants.lock().ok()?;
        // Tenants with nothing in progress are forgotten now and then.
        if tenants.len() > 10_000 {
            tenants.retain(|_, t| {
                t.calls.available_permits() < self.calls || t.streams.load(Ordering::Acquire) > 0
            });
        }
        Some(
            tenants
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(Tenant {
                        calls: Arc::new(Semaphore::new(self.calls)),
                        streams: Arc::new(AtomicUsize::new(0)),
                    })
                })
                .clone(),
        )
    }

    fn shed(&self, kind: &'static str, message: String) -> http::Response<Body> {
        metrics::counter!("rapport_tenant_shed_total", "component" => self.component.clone(), "kind" => kind)
            .increment(1);
        let retry_after = (kind == "calls").then_some(RETRY);
        tonic::Status::from(ApiError::ResourceExhausted {
            message,
            retry_after,
        })
        .into_http()
    }
}

/// Applies per-tenant budgets to a service's calls.
#[derive(Clone)]
pub struct TenantBudgetLayer {
    budgets: Option<Arc<Budgets>>,
}

impl TenantBudgetLayer {
    /// At most `calls` calls in progress and `streams` open streams
    /// (watches and the client-streaming `uploads`, as paths) per tenant, for
    /// `component`'s log lines and metrics.
    pub fn new(
        component: &str,
        calls: usize,
        streams: usize,
        uploads: std::collections::HashSet<String>,
    ) -> Self {
        Self {
            budgets: Some(Arc::new(Budgets {
                component: component.to_string(),
                calls: calls.max(1),
                streams: streams.max(1),
                uploads,
                tenants: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// No budgets (a public port, where the tenant header is the client's).
    pub fn none() -> Self {
        Self { budgets: None }
    }
}

impl<S> tower::Layer<S> for TenantBudgetLayer {
    type Service = TenantBudget<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TenantBudget {
            inner,
            budgets: self.budgets.clone(),
        }
    }
}

/// The service made by [`TenantBudgetLayer`].
#[derive(Clone)]
pub struct TenantBudget<S> {
    inner: S,
    budgets: Option<Arc<Budgets>>,
}

/// Whether `path` is a long-lived watch (`/package.Service/Watch...`).
fn is_watch(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|m| m.starts_with("Watch"))
}

impl<S, B> tower::Service<http::Request<B>> for TenantBudget<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let tenant = req
            .headers()
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok());
        let (Some(budgets), Some(id)) = (self.budgets.clone(), tenant) else {
            return Box::pin(self.inner.call(req));
        };
        let Some(tenant) = budgets.tenant(id) else {
            return Box::pin(self.inner.call(req));
        };
        // The ready service goes with this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if is_watch(path) || budgets.uploads.contains(path) {
            let taken = tenant
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < budgets.streams).then_some(n + 1)
                })
                .is_ok();
            if !taken {
                let response = budgets.shed(
                    "streams",
                    format!(
                        "this tenant already has {} streams open at the {} service, its share; \
                         close one before opening another",
                        budgets.streams, budgets.component
                    ),
                );
                return Box::pin(std::future::ready(Ok(response)));
            }
            let slot = Slot::Stream(StreamSlot(tenant.streams.clone()));
            return Box::pin(async move {
                let response = inner.call(req).await?;
                Ok(response.map(|b| {
                    Body::new(Held {
                        inner: b,
                        _slot: slot,
                    })
                }))
            });
        }
        Box::pin(async move {
            let permit = match tokio::time::timeout(QUEUE, tenant.calls.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                _ => {
                    return Ok(budgets.shed(
                        "calls",
                        format!(
                            "this tenant already has {} calls in progress at the {} service, its share \
                             of the service's database connections; retry in {} s",
                            budgets.calls,
                            budgets.component,
                            RETRY.as_secs()
                        ),
                    ));
                }
            };
            let response = inner.call(req).await?;
            Ok(response.map(|b| {
                Body::new(Held {
                    inner: b,
                    _slot: Slot::Call(permit),
                })
            }))
        })
    }
}

/// A watch's place in its tenant's budget, given back when dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Slot {
    Call(#[allow(dead_code)] OwnedSemaphorePermit),
    Stream(#[allow(dead_code)] StreamSlot),
}

/// A response body that keeps its call's place in the budget until it is
/// done with.
struct Held {
    inner: Body,
    _slot: Slot,
}

impl http_body::Body for Held {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tower::{Layer, Service, ServiceExt};

    fn call(tenant: Uuid, path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(path)
            .header(TENANT_HEADER, tenant.to_string())
            .body(())
            .unwrap()
    }

    fn code(response: &http::Response<Body>) -> String {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| "0".into())
    }

    #[tokio::test]
    async fn a_tenant_over_its_share_is_shed_and_others_are_not_held_up() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        });
        let mut svc = TenantBudgetLayer::new(
            "test",
            1,
            1,
            ["/p.S/Upload".to_string()].into_iter().collect(),
        )
        .layer(slow);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = tokio::spawn(svc.ready().await.unwrap().call(call(a, "/p.S/Get")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A's second call waits for A's first, then is shed with a retry delay.
        let started = std::time::Instant::now();
        let second = tokio::spawn(svc.ready().await.unwrap().call(call(a, "/p.S/Get")));
        // B's call does not wait behind A's.
        let other = tokio::spawn(svc.ready().await.unwrap().call(call(b, "/p.S/Get")));
        let shed = second.await.unwrap().unwrap();
        assert_eq!(code(&shed), "8", "RESOURCE_EXHAUSTED");
        assert!(started.elapsed() >= QUEUE);
        let status = tonic::Status::from_header_map(shed.headers()).unwrap();
        use tonic_types::StatusExt;
        assert_eq!(
            status
                .get_error_details()
                .retry_info()
                .and_then(|r| r.retry_delay),
            Some(RETRY)
        );
        assert_eq!(code(&other.await.unwrap().unwrap()), "0");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(code(&first.await.unwrap().unwrap()), "0");
        // Streams have their own budget: one open upload, a second is shed at once.
        let upload = tokio::spawn(svc.ready().await.unwrap().call(call(a, "/p.S/Upload")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(call(a, "/p.S/WatchThings"))
            .await
            .unwrap();
        assert_eq!(code(&refused), "8");
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(upload);
    }

    #[test]
    fn a_tenant_leaves_a_quarter_of_the_pool_and_at_least_two_connections() {
        assert_eq!(calls_per_tenant(1), 1);
        assert_eq!(calls_per_tenant(4), 2);
        assert_eq!(calls_per_tenant(8), 6);
        assert_eq!(calls_per_tenant(16), 12);
        assert_eq!(calls_per_tenant(32), 24);
    }

    #[test]
    fn watches_are_told_by_their_method_name() {
        assert!(is_watch(
            "/rapport.segmentation.v1.SegmentationService/WatchMembership"
        ));
        assert!(is_watch("/rapport.profile.v1.ProfileService/WatchChanges"));
        assert!(!is_watch(
            "/rapport.interaction.v1.InteractionService/ExportSummaries"
        ));
        assert!(!is_watch(
            "/rapport.segmentation.v1.SegmentationService/GetSegment"
        ));
    }
}
