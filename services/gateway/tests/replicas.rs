//! A backend with two replicas behind the gateway: a replica that stops is
//! taken out of rotation, and put back when it serves again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rapport_gateway::auth::Authenticator;
use rapport_gateway::front::{Backends, Front, HEALTH_PROBE};
use rapport_gateway::routes::RouteTable;
use rapport_gateway::{keys, store};
use rapport_kit::server::{ServeOptions, ServerBuilder};
use rapport_kit::shutdown::Shutdown;
use tonic::{Request, Response, Status, Streaming};

mod gwtest {
    include!(concat!(env!("OUT_DIR"), "/gwtest/rapport.gwtest.v1.rs"));
}
use gwtest::echo_service_client::EchoServiceClient;
use gwtest::echo_service_server::{EchoService, EchoServiceServer};
use gwtest::{EchoRequest, EchoResponse};

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);

/// Answers with its own name, so the test sees which replica served.
struct Named(&'static str);

#[tonic::async_trait]
impl EchoService for Named {
    async fn unary(&self, _: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            text: self.0.to_string(),
            ..Default::default()
        }))
    }
    async fn collect(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::invalid_argument("unused"))
    }
    type ExpandStream = futures::stream::Empty<Result<EchoResponse, Status>>;
    async fn expand(
        &self,
        _: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        Err(Status::invalid_argument("unused"))
    }
    type ChatStream = futures::stream::Empty<Result<EchoResponse, Status>>;
    async fn chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        Err(Status::invalid_argument("unused"))
    }
}

fn options() -> ServeOptions {
    ServeOptions {
        internal_token: None,
        request_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_millis(200),
    }
}

async fn replica(
    name: &'static str,
    listener: tokio::net::TcpListener,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move {
        let mut b = ServerBuilder::new(name);
        b.add_service(EchoServiceServer::new(Named(name)));
        let _ = b.serve(listener, options(), s).await;
    });
    (shutdown, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_replicas_leave_the_rotation_and_come_back() {
    let db = rapport_testkit::migrated(&[GATEWAY]).await;
    let pool = GATEWAY.pool(&db, 2).await;
    let tenant = uuid::Uuid::new_v4();
    store::create_tenant(&pool, tenant, "t").await.unwrap();
    store::set_rate_limit(&pool, tenant, 10_000, 10_000)
        .await
        .unwrap();
    store::set_tenant_budget(&pool, tenant, 10_000, 10_000, 1_000)
        .await
        .unwrap();
    let k = keys::generate().unwrap();
    store::insert_key(&pool, tenant, &k, "k", &["echo:*".into()], None)
        .await
        .unwrap();

    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr_a, addr_b) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let (stop_a, handle_a) = replica("a", la).await;
    let (_stop_b, _handle_b) = replica("b", lb).await;

    let table = RouteTable::new(vec![(
        "rapport.gwtest.v1.EchoService".into(),
        "echo",
        vec!["Unary".into()],
    )]);
    let urls = format!("http://{addr_a},http://{addr_b}");
    let backends = Backends::from_urls(&[("echo", Some(urls.as_str()))]).unwrap();
    let front = Front::new(
        table,
        Arc::new(Authenticator::new(pool.clone())),
        backends,
        None,
    );
    let gateway = rapport_testkit::serve(move |listener, shutdown| async move {
        let mut b = ServerBuilder::new("gateway");
        b.public();
        b.fallback(tower::util::BoxCloneSyncService::new(front));
        let _ = b.serve(listener, options(), shutdown).await;
    })
    .await;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", k.key).parse().unwrap();
    let c = EchoServiceClient::with_interceptor(
        rapport_testkit::channel(&gateway).await,
        move |mut r: Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        },
    );
    let served = |n: usize| {
        let mut c = c.clone();
        async move {
            let mut seen = HashSet::new();
            let mut failures = 0;
            for _ in 0..n {
                match c.unary(EchoRequest::default()).await {
                    Ok(r) => {
                        seen.insert(r.into_inner().text);
                    }
                    Err(_) => failures += 1,
                }
            }
            (seen, failures)
        }
    };

    // Both replicas take calls.
    let (seen, failures) = served(60).await;
    assert_eq!(failures, 0);
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]));

    // Replica a stops: after a health check it is out, and every call succeeds on b.
    stop_a.trigger();
    handle_a.await.unwrap();
    tokio::time::sleep(HEALTH_PROBE * 3).await;
    let (seen, failures) = served(40).await;
    assert_eq!(failures, 0, "calls failed after replica a left");
    assert_eq!(seen, HashSet::from(["b".to_string()]));

    // Replica a serves again on its address: it is put back in rotation.
    let la = tokio::net::TcpListener::bind(addr_a).await.unwrap();
    let (_stop_a, _handle_a) = replica("a", la).await;
    tokio::time::sleep(HEALTH_PROBE * 3).await;
    let (seen, failures) = served(60).await;
    assert_eq!(failures, 0);
    assert!(seen.contains("a"), "replica a never came back: {seen:?}");
}
