//! The gateway over real gRPC and real PostgreSQL: every streaming kind is
//! forwarded with tenant binding (its id and time zone), status, trailers and deadlines intact; keys,
//! scopes, revocation and rate limits are enforced.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rapport_gateway::auth::Authenticator;
use rapport_gateway::front::{Backends, Front};
use rapport_gateway::keys;
use rapport_gateway::routes::RouteTable;
use rapport_gateway::store;
use rapport_kit::context::CallContext;
use rapport_kit::server::{ServeOptions, ServerBuilder};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

mod gwtest {
    include!(concat!(env!("OUT_DIR"), "/gwtest/rapport.gwtest.v1.rs"));
}
use gwtest::echo_service_client::EchoServiceClient;
use gwtest::echo_service_server::{EchoService, EchoServiceServer};
use gwtest::{EchoRequest, EchoResponse};
use rapport_testkit::{Answer, Refused};

const GATEWAY: rapport_testkit::Service = rapport_testkit::service!(rapport_gateway);

const INTERNAL: &str = "internal-credential-for-tests-0123";

struct Echo;

fn answer<T>(req: &Request<T>, text: String) -> Result<EchoResponse, Status> {
    let ctx = CallContext::of(req)?;
    let deadline = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(EchoResponse {
        text,
        tenant: ctx.tenant_id.to_string(),
        principal: ctx.principal,
        deadline,
        time_zone: ctx.time_zone.unwrap_or_default(),
    })
}

fn failure(code: i32) -> Status {
    let mut status = Status::new(Code::from_i32(code), "asked to fail");
    status
        .metadata_mut()
        .insert("x-echo", MetadataValue::from_static("failed"));
    status
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let m = req.get_ref().clone();
        if m.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(m.delay_ms as u64)).await;
        }
        if m.fail_with != 0 {
            return Err(failure(m.fail_with));
        }
        let mut response = Response::new(answer(&req, m.text)?);
        response
            .metadata_mut()
            .insert("x-echo", MetadataValue::from_static("ok"));
        Ok(response)
    }

    async fn collect(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let ctx_req = Request::new(());
        let mut ctx_req = ctx_req;
        *ctx_req.metadata_mut() = req.metadata().clone();
        let mut stream = req.into_inner();
        let mut texts = Vec::new();
        while let Some(m) = stream.next().await {
            texts.push(m?.text);
        }
        Ok(Response::new(answer(&ctx_req, texts.join(","))?))
    }

    type ExpandStream = futures::stream::BoxStream<'static, Result<EchoResponse, Status>>;

    async fn expand(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<Self::ExpandStream>, Status> {
        let m = req.get_ref().clone();
        let one = answer(&req, m.text.clone())?;
        let items: Vec<_> = (0..m.repeat)
            .map(|i| {
                Ok(EchoResponse {
                    text: format!("{}-{i}", m.text),
                    ..one.clone()
                })
            })
            .collect();
        // With a delay, one item per `delay_ms`: a stream that stays open.
        let delay = Duration::from_millis(m.delay_ms.max(0) as u64);
        Ok(Response::new(
            futures::stream::iter(items)
                .then(move |item| async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    item
                })
                .boxed(),
        ))
    }

    type ChatStream = futures::stream::BoxStream<'static, Result<EchoResponse, Status>>;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let mut ctx_req = Request::new(());
        *ctx_req.metadata_mut() = req.metadata().clone();
        let one = answer(&ctx_req, String::new())?;
        let stream = req.into_inner().map(move |m| {
            m.map(|m| EchoResponse {
                text: m.text.to_uppercase(),
                ..one.clone()
            })
        });
        Ok(Response::new(stream.boxed()))
    }
}

struct Setup {
    gateway: rapport_testkit::Running,
    backend: rapport_testkit::Running,
    pool: sqlx::PgPool,
    tenant_a: Uuid,
    tenant_b: Uuid,
}

fn options(internal: Option<&str>, timeout: Duration) -> ServeOptions {
    ServeOptions {
        internal_token: internal.map(str::to_string),
        request_timeout: timeout,
        shutdown_grace: Duration::from_secs(1),
    }
}

async fn setup() -> Setup {
    setup_with(Duration::from_secs(30)).await
}

async fn setup_with(gateway_timeout: Duration) -> Setup {
    let db = rapport_testkit::migrated(&[GATEWAY]).await;
    let pool = GATEWAY.pool(&db, 4).await;
    let tenant_a = Uuid::new_v4();
    let tenant_b = Uuid::new_v4();
    store::create_tenant(&pool, tenant_a, "a").await.unwrap();
    store::create_tenant(&pool, tenant_b, "b").await.unwrap();

    // The backend insists on the internal credential.
    let backend = rapport_testkit::serve(|listener, shutdown| async move {
        let mut b = ServerBuilder::new("echo");
        b.add_service(EchoServiceServer::new(Echo));
        let _ = b
            .serve(
                listener,
                options(Some(INTERNAL), Duration::from_secs(30)),
                shutdown,
            )
            .await;
    })
    .await;

    let table = RouteTable::new(vec![(
        "rapport.gwtest.v1.EchoService".into(),
        "echo",
        vec!["Unary".into(), "Expand".into()],
    )])
    .with_streaming(&[
        "/rapport.gwtest.v1.EchoService/Collect",
        "/rapport.gwtest.v1.EchoService/Expand",
        "/rapport.gwtest.v1.EchoService/Chat",
    ]);
    let backends = Backends::from_urls(&[("echo", Some(backend.endpoint().as_str()))]).unwrap();
    let auth = Arc::new(Authenticator::new(pool.clone()));
    let front = Front::new(table, auth, backends, Some(INTERNAL));
    let gateway = rapport_testkit::serve(move |listener, shutdown| async move {
        let front = front.with_shutdown(shutdown.clone());
        let mut b = ServerBuilder::new("gateway");
        b.public();
        b.grpc_web(vec!["*".into()]);
        b.advertise("rapport.gwtest.v1.EchoService");
        b.fallback(tower::util::BoxCloneSyncService::new(front));
        let _ = b
            .serve(listener, options(Some(INTERNAL), gateway_timeout), shutdown)
            .await;
    })
    .await;
    Setup {
        gateway,
        backend,
        pool,
        tenant_a,
        tenant_b,
    }
}

async fn key(pool: &sqlx::PgPool, tenant: Uuid, scopes: &[&str]) -> String {
    expiring_key(pool, tenant, scopes, None).await.0
}

/// A new key of `tenant` and its id.
async fn expiring_key(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    scopes: &[&str],
    expire: Option<chrono::DateTime<chrono::Utc>>,
) -> (String, Uuid) {
    let k = keys::generate().unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let row = store::insert_key(pool, tenant, &k, "test", &scopes, expire)
        .await
        .unwrap();
    (k.key, row.key_id)
}

type Client = EchoServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

#[derive(Clone)]
struct Auth(Option<String>, Option<Uuid>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(k) = &self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        // A client trying to pose as another tenant.
        if let Some(t) = self.1 {
            req.metadata_mut()
                .insert("x-rapport-tenant", t.to_string().parse().unwrap());
            req.metadata_mut()
                .insert("x-rapport-internal-token", INTERNAL.parse().unwrap());
            req.metadata_mut()
                .insert("x-rapport-time-zone", "Pacific/Kiritimati".parse().unwrap());
        }
        Ok(req)
    }
}

async fn client(s: &Setup, key: Option<&str>, pose_as: Option<Uuid>) -> Client {
    let channel = rapport_testkit::channel(&s.gateway).await;
    EchoServiceClient::with_interceptor(channel, Auth(key.map(str::to_string), pose_as))
}

fn text(t: &str) -> EchoRequest {
    EchoRequest {
        text: t.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_streaming_kind_is_forwarded_for_the_keys_tenant_only() {
    let s = setup().await;
    sqlx::query("UPDATE tenants SET time_zone = 'Asia/Tokyo' WHERE tenant_id = $1")
        .bind(s.tenant_a)
        .execute(&s.pool)
        .await
        .unwrap();
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    // The client claims tenant B and even the internal credential: the
    // gateway strips both and the backend sees the key's tenant A.
    let mut c = client(&s, Some(&k), Some(s.tenant_b)).await;
    let a = s.tenant_a.to_string();

    let r = c.unary(text("hello")).await.unwrap();
    assert_eq!(
        r.metadata().get("x-echo").unwrap(),
        "ok",
        "response metadata passes through"
    );
    let r = r.into_inner();
    assert_eq!((r.text.as_str(), r.tenant.as_str()), ("hello", a.as_str()));
    // The tenant's time zone travels with the call, whatever the client sent.
    assert_eq!(r.time_zone, "Asia/Tokyo");
    assert!(
        Uuid::parse_str(&r.principal).is_ok(),
        "principal is the key id: {}",
        r.principal
    );

    let r = c
        .collect(futures::stream::iter(vec![text("a"), text("b"), text("c")]))
        .await
        .answer();
    assert_eq!((r.text.as_str(), r.tenant.as_str()), ("a,b,c", a.as_str()));

    let mut stream = c
        .expand(EchoRequest {
            text: "x".into(),
            repeat: 3,
            ..Default::default()
        })
        .await
        .answer();
    let mut got = Vec::new();
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        assert_eq!(m.tenant, a);
        got.push(m.text);
    }
    assert_eq!(got, ["x-0", "x-1", "x-2"]);

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .answer();
    for word in ["one", "two"] {
        tx.send(text(word)).await.unwrap();
        let m = replies.next().await.unwrap().unwrap();
        assert_eq!(
            (m.text.as_str(), m.tenant.as_str()),
            (word.to_uppercase().as_str(), a.as_str())
        );
    }
    drop(tx);
    assert!(replies.next().await.is_none());

    // Status, message and trailers of a failure come back unchanged.
    let err = c
        .unary(EchoRequest {
            fail_with: Code::NotFound as i32,
            ..text("x")
        })
        .await
        .refused(Code::NotFound);
    assert_eq!(err.message(), "asked to fail");
    assert_eq!(err.metadata().get("x-echo").unwrap(), "failed");

    // The client's deadline travels to the backend.
    let mut req = Request::new(text("timed"));
    req.set_timeout(Duration::from_secs(5));
    let r = c.unary(req).await.answer();
    assert!(!r.deadline.is_empty(), "the backend saw no deadline");

    // Nobody reaches the backend directly without the internal credential.
    let mut direct = EchoServiceClient::new(rapport_testkit::channel(&s.backend).await);
    assert_eq!(
        direct.unary(text("x")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn keys_and_scopes_are_enforced() {
    let s = setup().await;
    let mut anonymous = client(&s, None, None).await;
    let err = anonymous.unary(text("x")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "missing api key")
    );

    let forged = format!("rpk_0123abcd_{}", "A".repeat(43));
    let mut forger = client(&s, Some(&forged), None).await;
    let err = forger.unary(text("x")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "invalid api key")
    );

    // A read-only key reads but cannot write, and is told which scope it lacks.
    let reader = key(&s.pool, s.tenant_a, &["echo:read"]).await;
    let mut c = client(&s, Some(&reader), None).await;
    assert!(c.unary(text("x")).await.is_ok());
    let err = c
        .collect(futures::stream::iter(vec![text("a")]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "missing scope echo:write")
    );

    // A revoked key stops working within the cache period.
    let k = keys::parse(&reader).unwrap();
    let row = store::key_by_hash(&s.pool, &k.hash).await.unwrap().unwrap();
    assert!(
        store::revoke_key(&s.pool, row.tenant_id, row.key_id)
            .await
            .unwrap()
    );
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL + Duration::from_millis(200)).await;
    let err = c.unary(text("x")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "api key revoked")
    );

    // An expired key is refused.
    let e = keys::generate().unwrap();
    store::insert_key(
        &s.pool,
        s.tenant_a,
        &e,
        "old",
        &["echo:*".into()],
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await
    .unwrap();
    let mut expired = client(&s, Some(&e.key), None).await;
    let err = expired.unary(text("x")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "api key expired")
    );
}

#[tokio::test]
async fn rate_limits_kick_in_and_recover() {
    use tonic_types::StatusExt;
    let s = setup().await;
    store::set_rate_limit(&s.pool, s.tenant_a, 2, 3)
        .await
        .unwrap();
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut c = client(&s, Some(&k), None).await;
    for _ in 0..3 {
        c.unary(text("x")).await.unwrap();
    }
    let err = c.unary(text("x")).await.refused(Code::ResourceExhausted);
    assert!(
        err.message()
            .starts_with("rate limit exceeded for key rpk_"),
        "{}",
        err.message()
    );
    let retry = err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("retry info");
    assert!(retry <= Duration::from_millis(600), "{retry:?}");
    tokio::time::sleep(retry + Duration::from_millis(20)).await;
    c.unary(text("x")).await.unwrap();

    // Another key of the same tenant has its own bucket.
    let other = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    client(&s, Some(&other), None)
        .await
        .unary(text("x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tenants_keys_share_its_budget() {
    use tonic_types::StatusExt;
    let s = setup().await;
    // Each key alone could make 100 calls at once and hold 10 streams; the
    // tenant as a whole may make 4 calls at once and hold 2 streams.
    store::set_rate_limit(&s.pool, s.tenant_a, 100, 100)
        .await
        .unwrap();
    store::set_max_streams(&s.pool, s.tenant_a, 10)
        .await
        .unwrap();
    store::set_tenant_budget(&s.pool, s.tenant_a, 1, 4, 2)
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
        clients.push(client(&s, Some(&k), None).await);
    }
    let mut admitted = 0;
    let mut refused = None;
    for round in 0..3 {
        for c in clients.iter_mut() {
            match c.unary(text("x")).await {
                Ok(_) => admitted += 1,
                Err(e) if round > 0 || refused.is_none() => refused = Some(e),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    // Twelve calls over four keys, each far under its own limit: the
    // tenant's burst of 4 (and the token refilled meanwhile) lets few through.
    assert!((4..=6).contains(&admitted), "{admitted} calls admitted");
    let err = refused.expect("the tenant's budget refuses calls");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .starts_with(&format!("rate limit exceeded for tenant {}", s.tenant_a)),
        "{}",
        err.message()
    );
    assert!(err.get_details_retry_info().is_some(), "retry info");
    // Another tenant is not held back.
    let b = key(&s.pool, s.tenant_b, &["echo:*"]).await;
    let mut other = client(&s, Some(&b), None).await;
    for _ in 0..6 {
        other.unary(text("b")).await.unwrap();
    }

    // Streams: two keys hold the tenant's two; a third key is refused.
    store::set_tenant_budget(&s.pool, s.tenant_a, 1_000, 1_000, 2)
        .await
        .unwrap();
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL + Duration::from_millis(100)).await;
    let mut held = Vec::new();
    for c in clients.iter_mut().take(2) {
        held.push(open_chat(c).await);
    }
    let (_tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let err = clients[2]
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .starts_with(&format!("tenant {} already has 2 streams open", s.tenant_a)),
        "{}",
        err.message()
    );
    // Tenant B's streams are its own.
    let (_tx_b, rx_b) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    other
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx_b))
        .await
        .unwrap();
    // When one of A's streams ends, the third key may open one.
    let (tx, mut stream) = held.pop().unwrap();
    drop(tx);
    assert!(stream.next().await.is_none());
    drop(stream);
    assert!(
        opens_a_stream_soon(&mut clients[2]).await,
        "the tenant's slot was never given back"
    );
}

#[tokio::test]
async fn the_gateway_bounds_every_call() {
    // With a 300 ms bound on the gateway, a slow backend call ends with
    // DEADLINE_EXCEEDED from the gateway, whatever the client asked for.
    let s = setup_with(Duration::from_millis(300)).await;
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut c = client(&s, Some(&k), None).await;
    let started = std::time::Instant::now();
    let err = c
        .unary(EchoRequest {
            delay_ms: 3000,
            ..text("slow")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn open_streams_are_limited_per_key() {
    let s = setup().await;
    store::set_max_streams(&s.pool, s.tenant_a, 1)
        .await
        .unwrap();
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut c = client(&s, Some(&k), None).await;

    let (tx, mut first) = open_chat(&mut c).await;

    // The key's one stream is in use: a second is refused, unary calls are not.
    let (_tx2, rx2) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let err = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("streams open"), "{}", err.message());
    c.unary(text("still fine")).await.unwrap();

    // When the first stream ends, its slot is free again.
    drop(tx);
    assert!(first.next().await.is_none());
    drop(first);
    assert!(
        opens_a_stream_soon(&mut c).await,
        "the slot was never given back"
    );
}

/// A chat stream of `c`, shown working (one message echoed) and held open
/// while its sender lives.
async fn open_chat(
    c: &mut Client,
) -> (
    tokio::sync::mpsc::Sender<EchoRequest>,
    Streaming<EchoResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .answer();
    tx.send(text("hi")).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().text, "HI");
    (tx, stream)
}

/// Whether `c` can open a stream within a second (slots are given back
/// when a stream's call has ended at the gateway, shortly after the client
/// sees its end).
async fn opens_a_stream_soon(c: &mut Client) -> bool {
    for _ in 0..50 {
        let (_tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
        if c.chat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The status a stream ends with, reading past its messages; a stream that
/// ends with OK fails the test (a client would take it for the end).
async fn end_status(stream: &mut Streaming<EchoResponse>) -> Status {
    loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return e,
            None => panic!("the stream ended with OK"),
        }
    }
}

/// How long a test waits for an open stream to end after its key was
/// revoked: the contract's bound (admin.proto, RevokeApiKey).
const REVOCATION_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn revoking_a_key_ends_its_open_streams_of_every_kind() {
    let s = setup().await;
    let (k, key_id) = expiring_key(&s.pool, s.tenant_a, &["echo:*"], None).await;
    let other = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut c = client(&s, Some(&k), None).await;

    // Bidirectional: open and answering.
    let (_chat_tx, mut chat) = open_chat(&mut c).await;
    // Server streaming: one item every 50 ms for a minute.
    let mut expand = c
        .expand(EchoRequest {
            text: "x".into(),
            repeat: 1200,
            delay_ms: 50,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(expand.next().await.unwrap().unwrap().text, "x-0");
    // Client streaming: the answer only comes when the client is done, so
    // the call is still waiting for its response headers.
    let (collect_tx, collect_rx) = tokio::sync::mpsc::channel(4);
    let mut collecting = c.clone();
    let collect = tokio::spawn(async move {
        collecting
            .collect(tokio_stream::wrappers::ReceiverStream::new(collect_rx))
            .await
    });
    collect_tx.send(text("a")).await.unwrap();
    // Another key's stream is not touched.
    let mut bystander = client(&s, Some(&other), None)
        .await
        .expand(EchoRequest {
            text: "y".into(),
            repeat: 1200,
            delay_ms: 50,
            ..Default::default()
        })
        .await
        .answer();

    assert!(
        store::revoke_key(&s.pool, s.tenant_a, key_id)
            .await
            .unwrap()
    );
    let revoked = std::time::Instant::now();

    let ended = tokio::time::timeout(REVOCATION_BOUND, end_status(&mut chat))
        .await
        .expect("the bidirectional stream was still open 5 s after the revocation");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(ended.message(), "api key revoked");

    let ended = tokio::time::timeout(REVOCATION_BOUND, end_status(&mut expand))
        .await
        .expect("the server stream was still open 5 s after the revocation");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");

    let ended = tokio::time::timeout(REVOCATION_BOUND, collect)
        .await
        .expect("the client stream was still open 5 s after the revocation")
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(
        revoked.elapsed() < REVOCATION_BOUND,
        "{:?}",
        revoked.elapsed()
    );
    drop(collect_tx);

    // The other key's stream still flows.
    for _ in 0..3 {
        bystander.next().await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_expiring_key_ends_its_open_streams() {
    let s = setup().await;
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (k, _) = expiring_key(&s.pool, s.tenant_a, &["echo:*"], Some(expiry)).await;
    let mut stream = client(&s, Some(&k), None)
        .await
        .expand(EchoRequest {
            text: "x".into(),
            repeat: 1200,
            delay_ms: 50,
            ..Default::default()
        })
        .await
        .answer();
    let ended = tokio::time::timeout(
        Duration::from_secs(2) + REVOCATION_BOUND,
        end_status(&mut stream),
    )
    .await
    .expect("the stream was still open 5 s after the key expired");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(ended.message(), "api key expired");
    assert!(chrono::Utc::now() >= expiry);
}

#[tokio::test]
async fn request_messages_over_the_limit_are_refused_at_the_gateway() {
    let s = setup().await;
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut c = client(&s, Some(&k), None).await;
    // 3 MiB passes (the backend takes up to 4 MiB).
    let fine = c.unary(text(&"a".repeat(3 << 20))).await.unwrap();
    assert_eq!(fine.get_ref().text.len(), 3 << 20);
    // 4.3 MB is over the gateway's 4 MiB: refused there, not by the backend
    // (which would say OUT_OF_RANGE).
    for size in [4_300_000, 9_000_000] {
        let err = c.unary(text(&"a".repeat(size))).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().contains("gateway's limit of 4194304 bytes"),
            "{}",
            err.message()
        );
    }
    // Inside a stream: the stream ends with RESOURCE_EXHAUSTED.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut chat = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .answer();
    tx.send(text("small")).await.unwrap();
    assert_eq!(chat.next().await.unwrap().unwrap().text, "SMALL");
    tx.send(text(&"b".repeat(5 << 20))).await.unwrap();
    let err = end_status(&mut chat).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // The key is still good.
    c.unary(text("after")).await.unwrap();
}

/// One gRPC message frame (flag 0, big-endian length, bytes).
fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[tokio::test]
async fn grpc_web_text_calls_are_forwarded() {
    use base64::Engine as _;
    use prost::Message as _;
    use std::io::{Read, Write};
    let s = setup().await;
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let addr = s.gateway.addr;
    let body =
        base64::engine::general_purpose::STANDARD.encode(frame(&text("over text").encode_to_vec()));
    let raw = tokio::task::spawn_blocking(move || {
        let request = format!(
            "POST /rapport.gwtest.v1.EchoService/Unary HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/grpc-web-text\r\nAccept: application/grpc-web-text\r\n\
             X-Grpc-Web: 1\r\nAuthorization: Bearer {k}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    let text_response = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text_response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/grpc-web-text"),
        "{head}"
    );
    assert!(!head.contains("grpc-status: 14"), "{head}");
    // The body: base64 chunks (chunked transfer encoding), each decoding to
    // whole frames: the message, then the trailers frame.
    let mut encoded = String::new();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            encoded.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
    } else {
        encoded.push_str(rest);
    }
    let mut decoded = Vec::new();
    // Each chunk is base64 on its own, padded where it needs to be.
    let mut left = encoded.as_str();
    while !left.is_empty() {
        let end = match left.find('=') {
            Some(i) => i + left[i..].chars().take_while(|c| *c == '=').count(),
            None => left.len(),
        };
        decoded.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&left[..end])
                .unwrap(),
        );
        left = &left[end..];
    }
    assert_eq!(decoded[0], 0, "a message frame first");
    let len = u32::from_be_bytes(decoded[1..5].try_into().unwrap()) as usize;
    let response = EchoResponse::decode(&decoded[5..5 + len]).unwrap();
    assert_eq!(response.text, "over text");
    assert_eq!(response.tenant, s.tenant_a.to_string());
    let trailers = String::from_utf8_lossy(&decoded[5 + len + 5..]).to_string();
    assert_eq!(decoded[5 + len], 0x80, "then the trailers frame");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn open_streams_end_unavailable_when_the_gateway_shuts_down() {
    let s = setup().await;
    let k = key(&s.pool, s.tenant_a, &["echo:*"]).await;
    let mut stream = client(&s, Some(&k), None)
        .await
        .expand(EchoRequest {
            text: "x".into(),
            repeat: 1200,
            delay_ms: 50,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(stream.next().await.unwrap().unwrap().text, "x-0");
    s.gateway.shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(5), end_status(&mut stream))
        .await
        .expect("the stream was still open 5 s after shutdown began");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("shutting down"),
        "{}",
        ended.message()
    );
}
