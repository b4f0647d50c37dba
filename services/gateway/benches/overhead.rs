//! What the gateway adds to a call: unary calls to a trivial backend at a
//! fixed offered rate, direct and through the gateway (API key lookup, scope
//! check, rate limit, forwarding), in the same run. Prints latency
//! percentiles and achieved throughput for each, and the difference.
//!
//!     cargo bench -p rapport-gateway --bench overhead
//!     RAPPORT_BENCH_RATE=2000 RAPPORT_BENCH_SECONDS=10 cargo bench -p rapport-gateway --bench overhead
//!
//! Figures, not assertions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rapport_gateway::auth::Authenticator;
use rapport_gateway::front::{Backends, Front};
use rapport_gateway::routes::RouteTable;
use rapport_gateway::{keys, store};
use rapport_kit::server::{ServeOptions, ServerBuilder};
use tonic::{Request, Response, Status, Streaming};

mod gwtest {
    include!(concat!(env!("OUT_DIR"), "/gwtest/rapport.gwtest.v1.rs"));
}
use gwtest::echo_service_client::EchoServiceClient;
use gwtest::echo_service_server::{EchoService, EchoServiceServer};
use gwtest::{EchoRequest, EchoResponse};

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);

const INTERNAL: &str = "internal-credential-for-benchmarks";

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            text: req.into_inner().text,
            ..Default::default()
        }))
    }
    async fn collect(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::invalid_argument("not used by the benchmark"))
    }
    type ExpandStream = futures::stream::Empty<Result<EchoResponse, Status>>;
    async fn expand(
        &self,
        _: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        Err(Status::invalid_argument("not used by the benchmark"))
    }
    type ChatStream = futures::stream::Empty<Result<EchoResponse, Status>>;
    async fn chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::invalid_argument("not used by the benchmark"))
    }
}

fn options(internal: Option<&str>) -> ServeOptions {
    ServeOptions {
        internal_token: internal.map(str::to_string),
        request_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
    }
}

struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

/// Offers `rate` calls per second for `seconds`, each on its own task, over
/// one HTTP/2 connection per 16 calls in flight.
async fn offer(endpoint: String, key: Option<String>, rate: u32, seconds: u32) -> Run {
    let channels: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        v
    };
    let auth: Option<tonic::metadata::MetadataValue<_>> =
        key.map(|k| format!("Bearer {k}").parse().unwrap());
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        let channel = channels[i as usize % channels.len()].clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = EchoServiceClient::new(channel);
            let mut req = Request::new(EchoRequest {
                text: "ping".into(),
                ..Default::default()
            });
            if let Some(a) = auth {
                req.metadata_mut().insert("authorization", a);
            }
            let t = Instant::now();
            let ok = client.unary(req).await.is_ok();
            (t.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        if ok {
            latencies.push(d);
        } else {
            errors += 1;
        }
    }
    latencies.sort();
    Run {
        latencies,
        errors,
        elapsed: started.elapsed(),
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let rate: u32 = std::env::var("RAPPORT_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seconds: u32 = std::env::var("RAPPORT_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    let db = rapport_testkit::migrated(&[GATEWAY]).await;
    let pool = GATEWAY.pool(&db, 4).await;
    let tenant = uuid::Uuid::new_v4();
    store::create_tenant(&pool, tenant, "bench").await.unwrap();
    // Generous limits: the benchmark measures forwarding, not throttling.
    store::set_rate_limit(&pool, tenant, 100_000, 1_000_000)
        .await
        .unwrap();
    store::set_tenant_budget(&pool, tenant, 100_000, 1_000_000, 100_000)
        .await
        .unwrap();
    let key = keys::generate().unwrap();
    store::insert_key(&pool, tenant, &key, "bench", &["echo:*".to_string()], None)
        .await
        .unwrap();

    let backend = rapport_testkit::serve(|listener, shutdown| async move {
        let mut b = ServerBuilder::new("echo");
        b.add_service(EchoServiceServer::new(Echo));
        let _ = b.serve(listener, options(Some(INTERNAL)), shutdown).await;
    })
    .await;
    let table = RouteTable::new(vec![(
        "rapport.gwtest.v1.EchoService".into(),
        "echo",
        vec!["Unary".into()],
    )]);
    let backends = Backends::from_urls(&[("echo", Some(backend.endpoint().as_str()))]).unwrap();
    let front = Front::new(
        table,
        Arc::new(Authenticator::new(pool.clone())),
        backends,
        Some(INTERNAL),
    );
    let gateway = rapport_testkit::serve(move |listener, shutdown| async move {
        let mut b = ServerBuilder::new("gateway");
        b.public();
        b.fallback(tower::util::BoxCloneSyncService::new(front));
        let _ = b.serve(listener, options(None), shutdown).await;
    })
    .await;

    // Direct calls present the internal credential and a tenant, as the
    // gateway does; a short warm-up first on each path.
    let _ = offer_direct(backend.endpoint(), 200, 1).await;
    let direct = offer_direct(backend.endpoint(), rate, seconds).await;
    let _ = offer(gateway.endpoint(), Some(key.key.clone()), 200, 1).await;
    let through = offer(gateway.endpoint(), Some(key.key.clone()), rate, seconds).await;

    println!(
        "gateway overhead — unary calls at {rate}/s offered for {seconds} s, 2 cores, one process"
    );
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "path", "p50 ms", "p90 ms", "p99 ms", "calls/s", "errors"
    );
    for (name, r) in [("direct", &direct), ("gateway", &through)] {
        println!(
            "  {:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.0} {:>7}",
            name,
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.90),
            pct(&r.latencies, 0.99),
            r.latencies.len() as f64 / r.elapsed.as_secs_f64(),
            r.errors
        );
    }
    println!(
        "  added by the gateway: p50 {:+.3} ms, p99 {:+.3} ms (targets: under 0.5 ms and 2 ms at 2,000 calls/s)",
        pct(&through.latencies, 0.50) - pct(&direct.latencies, 0.50),
        pct(&through.latencies, 0.99) - pct(&direct.latencies, 0.99)
    );
}

/// Like [`offer`], straight to the backend with the internal credential.
async fn offer_direct(endpoint: String, rate: u32, seconds: u32) -> Run {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let credential = rapport_kit::context::InternalCredential::new(Some(INTERNAL));
    let tenant = uuid::Uuid::new_v4().to_string();
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        ticker.tick().await;
        let mut client = EchoServiceClient::with_interceptor(channel.clone(), credential.clone());
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = Request::new(EchoRequest {
                text: "ping".into(),
                ..Default::default()
            });
            req.metadata_mut()
                .insert("x-rapport-tenant", tenant.parse().unwrap());
            let t = Instant::now();
            let ok = client.unary(req).await.is_ok();
            (t.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        if ok {
            latencies.push(d);
        } else {
            errors += 1;
        }
    }
    latencies.sort();
    Run {
        latencies,
        errors,
        elapsed: started.elapsed(),
    }
}
