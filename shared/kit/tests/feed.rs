//! The change feed over real gRPC and a real PostgreSQL: events written by
//! concurrent transactions reach a consumer exactly once and in sequence
//! order, across a consumer restart and a producer restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use rapport_kit::db::{self, SchemaSpec};
use rapport_kit::feed::{
    self, Consumer, EventStream, FeedHandler, FeedSource, NewEvent, PeerFeed, Position, WatchMethod,
};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::common::v1::FeedPosition;
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

mod kittest {
    include!(concat!(env!("OUT_DIR"), "/kittest/rapport.kittest.v1.rs"));
}
use kittest::feed_test_service_client::FeedTestServiceClient;
use kittest::feed_test_service_server::{FeedTestService, FeedTestServiceServer};
use kittest::{WatchChangesRequest, WatchChangesResponse};
use rapport_testkit::{Answer, Refused};

/// A test event: any type URL and bytes go through the feed untouched.
fn thing(i: u64) -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/rapport.kittest.v1.Thing".into(),
        value: i.to_le_bytes().to_vec(),
    }
}

const PRODUCER: SchemaSpec = SchemaSpec::new("feedtest_producer", "rapport_feedtest_producer");
const CONSUMER: SchemaSpec = SchemaSpec::new("feedtest_consumer", "rapport_feedtest_consumer");
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

struct Producer {
    pool: PgPool,
    shutdown: Shutdown,
}

#[tonic::async_trait]
impl FeedTestService for Producer {
    type WatchChangesStream =
        futures::stream::BoxStream<'static, Result<WatchChangesResponse, Status>>;

    async fn watch_changes(
        &self,
        req: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let stream = feed::serve_watch::<KitFeed>(
            self.pool.clone(),
            PRODUCER.schema,
            req,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }
}

/// The test service's `WatchChanges`, for the kit's generic server and source.
struct KitFeed;

impl WatchMethod for KitFeed {
    type Request = WatchChangesRequest;
    type Response = WatchChangesResponse;
    const SERVICE: &'static str = "feed test";
    const PATH: &'static str = "/rapport.kittest.v1.FeedTestService/WatchChanges";
    fn request(position: &Position) -> Self::Request {
        WatchChangesRequest {
            after_sequence: position.default,
            positions: position.positions(),
        }
    }
    fn parts(request: &Self::Request) -> (i64, &[FeedPosition]) {
        (request.after_sequence, &request.positions)
    }
    fn response(event: ChangeEvent) -> Self::Response {
        WatchChangesResponse { event: Some(event) }
    }
    fn event(response: Self::Response) -> Option<ChangeEvent> {
        response.event
    }
}

async fn start_producer(pool: PgPool) -> rapport_testkit::Running {
    start_producer_with(pool, None).await
}

async fn start_producer_with(
    pool: PgPool,
    internal_token: Option<String>,
) -> rapport_testkit::Running {
    rapport_testkit::serve(move |listener, shutdown| async move {
        let svc = Producer {
            pool,
            shutdown: shutdown.clone(),
        };
        let mut b = rapport_kit::server::ServerBuilder::new("feedtest");
        b.add_service(FeedTestServiceServer::new(svc));
        let opts = rapport_kit::server::ServeOptions {
            internal_token,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(1),
        };
        let _ = b.serve(listener, opts, shutdown).await;
    })
    .await
}

/// Reads the producer's feed from wherever it currently listens.
struct GrpcSource {
    endpoint: Arc<Mutex<String>>,
}

impl FeedSource for GrpcSource {
    fn open(&self, position: Position) -> BoxFuture<'_, Result<EventStream, Status>> {
        let endpoint = self.endpoint.lock().unwrap().clone();
        Box::pin(async move {
            let peer = rapport_kit::peer::Peer::new("feed test", &endpoint, None)
                .map_err(Status::internal)?;
            PeerFeed::<KitFeed>::new(&peer).open(position).await
        })
    }
}

/// Records each applied event; the primary key makes a second application fail.
struct Recorder;

impl FeedHandler for Recorder {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tenant: Uuid,
        events: &'a [ChangeEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for event in events {
                assert_eq!(event.tenant_id, tenant.to_string());
                sqlx::query(
                    "INSERT INTO applied (tenant_id, sequence, aggregate_id) VALUES ($1, $2, $3)",
                )
                .bind(tenant)
                .bind(event.sequence)
                .bind(&event.aggregate_id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }
}

async fn write_events(pool: &PgPool, tenant: Uuid, from: usize, count: usize, writers: usize) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + w..from + count).step_by(writers) {
                let mut tx = pool.begin().await.unwrap();
                feed::append(
                    &mut tx,
                    &[NewEvent {
                        tenant_id: tenant,
                        aggregate_type: "thing",
                        aggregate_id: format!("thing-{i}"),
                        event_type: "ThingHappened",
                        event: thing(i as u64),
                    }],
                )
                .await
                .unwrap();
                // Hold some transactions open a little so commits interleave.
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn applied_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_for(pool: &PgPool, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while applied_count(pool).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer did not catch up to {n} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes the same numbers of events for each of `tenants` at once.
async fn write_all(pool: &PgPool, tenants: &[Uuid], from: usize, count: usize, writers: usize) {
    futures::future::join_all(
        tenants
            .iter()
            .map(|t| write_events(pool, *t, from, count, writers)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_event_lost_or_reordered_across_restarts() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    db::migrate(&db.url, CONSUMER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let producer_pool = db::connect(&db.url, PRODUCER, 16).await.unwrap();
    let consumer_pool = db::connect(&db.url, CONSUMER, 4).await.unwrap();
    sqlx::query(
        "CREATE TABLE applied (tenant_id uuid NOT NULL, sequence bigint NOT NULL, aggregate_id text NOT NULL,
                               ord bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (tenant_id, sequence))",
    )
    .execute(&consumer_pool)
    .await
    .unwrap();
    // Three tenants written at once, each by several concurrent writers.
    let tenants = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];

    // A backlog written before anyone listens.
    write_all(&producer_pool, &tenants, 0, 150, 4).await;

    let mut producer = start_producer(producer_pool.clone()).await;
    let endpoint = Arc::new(Mutex::new(producer.endpoint()));
    let start_consumer = || {
        let shutdown = Shutdown::new();
        let consumer = Consumer::new(
            "feedtest",
            consumer_pool.clone(),
            Arc::new(GrpcSource {
                endpoint: endpoint.clone(),
            }),
            Arc::new(Recorder),
        );
        let handle = tokio::spawn(consumer.run(shutdown.clone()));
        (shutdown, handle)
    };

    // Backlog, then live events while the consumer runs.
    let (stop, handle) = start_consumer();
    write_all(&producer_pool, &tenants, 150, 150, 4).await;
    wait_for(&consumer_pool, 900).await;

    // Consumer restart: stop it, write more, start it again.
    stop.trigger();
    handle.await.unwrap();
    write_all(&producer_pool, &tenants, 300, 100, 4).await;
    let (stop, handle) = start_consumer();
    wait_for(&consumer_pool, 1200).await;

    // Producer restart: the server goes away mid-stream, events are written
    // while it is down, and it comes back on another port.
    producer.stop().await;
    write_all(&producer_pool, &tenants, 400, 100, 4).await;
    producer = start_producer(producer_pool.clone()).await;
    *endpoint.lock().unwrap() = producer.endpoint();
    write_all(&producer_pool, &tenants, 500, 100, 4).await;
    wait_for(&consumer_pool, 1800).await;

    stop.trigger();
    handle.await.unwrap();
    producer.stop().await;

    // Per tenant: exactly its outbox, numbered 1, 2, 3…, applied once each
    // in sequence order.
    for t in tenants {
        feed::number_committed(&producer_pool, t).await.unwrap();
        let outbox: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM outbox_events WHERE tenant_id = $1 ORDER BY sequence",
        )
        .bind(t)
        .fetch_all(&producer_pool)
        .await
        .unwrap();
        assert_eq!(outbox, (1..=600).collect::<Vec<i64>>(), "no gaps");
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT sequence FROM applied WHERE tenant_id = $1 ORDER BY ord")
                .bind(t)
                .fetch_all(&consumer_pool)
                .await
                .unwrap();
        assert_eq!(
            applied, outbox,
            "applied in sequence order, each exactly once"
        );
        assert_eq!(
            Consumer::cursor(&consumer_pool, "feedtest", t)
                .await
                .unwrap(),
            600
        );
        assert_eq!(feed::head(&producer_pool, t).await.unwrap(), 600);
    }
    let ids: i64 = sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM applied")
        .fetch_one(&consumer_pool)
        .await
        .unwrap();
    assert_eq!(
        ids, 600,
        "aggregate ids repeat across tenants, not within one"
    );
}

fn event(tenant: Uuid, id: &str) -> NewEvent {
    NewEvent {
        tenant_id: tenant,
        aggregate_type: "thing",
        aggregate_id: id.into(),
        event_type: "ThingHappened",
        event: thing(0),
    }
}

/// The sequences and aggregate ids of a tenant's events, in order.
async fn numbered(pool: &PgPool, tenant: Uuid) -> Vec<(i64, String)> {
    feed::read_after(pool, tenant, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.sequence, e.aggregate_id))
        .collect()
}

#[tokio::test]
async fn events_are_numbered_once_committed_and_writers_never_wait_on_each_other() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let tenant = Uuid::new_v4();
    let other = Uuid::new_v4();

    // A transaction that appended first but commits last is numbered last;
    // the writer that appended after it does not wait for it.
    let mut slow = pool.begin().await.unwrap();
    feed::append(&mut slow, &[event(tenant, "slow")])
        .await
        .unwrap();
    let mut fast = pool.begin().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        feed::append(
            &mut fast,
            &[event(tenant, "fast-1"), event(tenant, "fast-2")],
        ),
    )
    .await
    .expect("a writer of the same tenant waited")
    .unwrap();
    tokio::time::timeout(Duration::from_secs(2), fast.commit())
        .await
        .expect("a commit waited for an open transaction")
        .unwrap();
    // Nor does a writer of another tenant.
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(other, "other-1"), event(other, "other-2")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        numbered(&pool, other).await,
        [(1, "other-1".to_string()), (2, "other-2".to_string())],
        "each tenant numbers its own events"
    );

    // While `slow` is open, readers see the committed events, numbered from
    // 1 with no gap; `slow` takes the next number when it commits.
    assert_eq!(
        numbered(&pool, tenant).await,
        [(1, "fast-1".to_string()), (2, "fast-2".to_string())]
    );
    assert_eq!(feed::head(&pool, tenant).await.unwrap(), 2);
    slow.commit().await.unwrap();
    assert_eq!(
        numbered(&pool, tenant).await,
        [
            (1, "fast-1".to_string()),
            (2, "fast-2".to_string()),
            (3, "slow".to_string())
        ]
    );
    assert_eq!(
        feed::read_after(&pool, tenant, 1, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [2],
        "reads resume inside a transaction's range"
    );

    // Several appends of one transaction, for several tenants, continue
    // each tenant's order; a rolled-back transaction takes no number.
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(other, "a"), event(tenant, "b")])
        .await
        .unwrap();
    feed::append(&mut tx, &[event(other, "c")]).await.unwrap();
    tx.commit().await.unwrap();
    let mut gone = pool.begin().await.unwrap();
    feed::append(&mut gone, &[event(tenant, "never")])
        .await
        .unwrap();
    gone.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(tenant, "d")]).await.unwrap();
    tx.commit().await.unwrap();
    let other_events = numbered(&pool, other).await;
    assert_eq!(
        &other_events[2..],
        [(3, "a".to_string()), (4, "c".to_string())]
    );
    let tenant_events = numbered(&pool, tenant).await;
    assert_eq!(
        &tenant_events[3..],
        [(4, "b".to_string()), (5, "d".to_string())]
    );

    // A transaction never numbers its own events (it may append more).
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(tenant, "e")]).await.unwrap();
    assert_eq!(feed::number_committed(&mut *tx, tenant).await.unwrap(), 5);
    feed::append(&mut tx, &[event(tenant, "f")]).await.unwrap();
    tx.commit().await.unwrap();

    // Writers take no lock on the feed's head: while a reader holds the
    // tenant's head to number it, a writer of that tenant still commits.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT issued FROM outbox_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *reader)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(tenant, "g")]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), tx.commit())
        .await
        .expect("a writer waited for the feed's head")
        .unwrap();
    reader.rollback().await.unwrap();
    let tenant_events = numbered(&pool, tenant).await;
    assert_eq!(
        &tenant_events[5..],
        [
            (6, "e".to_string()),
            (7, "f".to_string()),
            (8, "g".to_string())
        ]
    );

    // Transactions numbered together are in commit order, whatever order
    // they began in.
    let mut early = pool.begin().await.unwrap();
    feed::append(&mut early, &[event(tenant, "began-first")])
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(tenant, "committed-first")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    early.commit().await.unwrap();
    let tenant_events = numbered(&pool, tenant).await;
    assert_eq!(
        &tenant_events[8..],
        [
            (9, "committed-first".to_string()),
            (10, "began-first".to_string())
        ]
    );
}

#[tokio::test]
async fn a_call_made_for_a_tenant_sees_only_that_tenant() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    let mut tx = pool.begin().await.unwrap();
    feed::append(
        &mut tx,
        &[
            event(theirs, "t-1"),
            event(mine, "m-1"),
            event(theirs, "t-2"),
            event(mine, "m-2"),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let producer = start_producer(pool.clone()).await;
    let channel = rapport_testkit::channel(&producer).await;
    let mut client = FeedTestServiceClient::new(channel);
    let mut req = Request::new(WatchChangesRequest {
        after_sequence: 0,
        positions: vec![FeedPosition {
            tenant_id: mine.to_string(),
            after_sequence: 1,
        }],
    });
    req.metadata_mut()
        .insert("x-rapport-tenant", mine.to_string().parse().unwrap());
    let mut stream = client.watch_changes(req).await.answer();
    let first = stream.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!((first.aggregate_id.as_str(), first.sequence), ("m-2", 2));
    // Nothing else comes: the other tenant's events are not this call's.
    let more = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        more.is_err(),
        "another tenant's event reached the call: {more:?}"
    );

    // Naming another tenant, or a malformed one, is refused with the field.
    let mut req = Request::new(WatchChangesRequest {
        after_sequence: 0,
        positions: vec![FeedPosition {
            tenant_id: theirs.to_string(),
            after_sequence: 0,
        }],
    });
    req.metadata_mut()
        .insert("x-rapport-tenant", mine.to_string().parse().unwrap());
    let err = client
        .watch_changes(req)
        .await
        .refused(tonic::Code::InvalidArgument);
    assert!(err.message().contains("positions[0].tenant_id"), "{err:?}");

    // Without a tenant, every tenant's events, each tenant in order.
    let mut stream = client
        .watch_changes(WatchChangesRequest::default())
        .await
        .answer();
    let mut got: Vec<(String, i64)> = Vec::new();
    for _ in 0..4 {
        let e = stream.message().await.unwrap().unwrap().event.unwrap();
        got.push((e.aggregate_id, e.sequence));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("m-1".into(), 1),
            ("m-2".into(), 2),
            ("t-1".into(), 1),
            ("t-2".into(), 2)
        ]
    );
    producer.stop().await;
}

#[tokio::test]
async fn feeds_numbered_before_per_tenant_order_continue_above_every_old_sequence() {
    use sqlx::Connection;
    // A schema whose outbox was numbered service-wide (the migrations before
    // per-tenant order), and a consumer whose cursor is in the middle of it.
    let db = rapport_testkit::database().await;
    let all = sqlx::migrate!("./migrations");
    let before = sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version < 5)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE SCHEMA legacy_feed")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SET search_path TO legacy_feed")
        .execute(&mut conn)
        .await
        .unwrap();
    before.run(&mut conn).await.unwrap();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (i, t) in [a, b, a, b, a].iter().enumerate() {
        sqlx::query(
            "INSERT INTO outbox (tenant_id, aggregate_type, aggregate_id, event_type, event_type_url, event)
             VALUES ($1, 'thing', $2, 'ThingHappened', $3, $4)",
        )
        .bind(t)
        .bind(format!("old-{}", i + 1))
        .bind(&thing(0).type_url)
        .bind(thing(0).value)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // The consumer has applied sequences 1 to 3.
    sqlx::query("INSERT INTO feed_cursors (source, after_sequence) VALUES ('legacy', 3)")
        .execute(&mut conn)
        .await
        .unwrap();

    all.run(&mut conn).await.unwrap();

    // Every tenant, old or new, continues above sequence 5.
    let mut tx = conn.begin().await.unwrap();
    feed::append(
        &mut tx,
        &[event(a, "new-a"), event(b, "new-b"), event(c, "new-c")],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for t in [a, b, c] {
        feed::number_committed(&mut conn, t).await.unwrap();
    }
    // What the consumer still has to apply, with its old cursor as the
    // default position: nothing it applied, nothing it missed.
    let rest: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT tenant_id, sequence, aggregate_id FROM outbox_events
          WHERE sequence > (SELECT after_sequence FROM feed_cursors WHERE source = 'legacy')
          ORDER BY tenant_id, sequence",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let of = |t: Uuid| -> Vec<(i64, String)> {
        rest.iter()
            .filter(|r| r.0 == t)
            .map(|r| (r.1, r.2.clone()))
            .collect()
    };
    assert_eq!(of(a), [(5, "old-5".to_string()), (6, "new-a".to_string())]);
    assert_eq!(of(b), [(4, "old-4".to_string()), (6, "new-b".to_string())]);
    assert_eq!(of(c), [(6, "new-c".to_string())]);
}

#[tokio::test]
async fn internal_credential_guards_everything_but_health_and_reflection() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 2).await.unwrap();
    let token = "an-internal-credential-0123456789";
    let producer = start_producer_with(pool, Some(token.into())).await;
    let channel = rapport_testkit::channel(&producer).await;

    // No credential, or a wrong one: UNAUTHENTICATED.
    let mut bare = FeedTestServiceClient::new(channel.clone());
    bare.watch_changes(WatchChangesRequest::default())
        .await
        .refused(tonic::Code::Unauthenticated);
    let mut wrong = FeedTestServiceClient::with_interceptor(
        channel.clone(),
        rapport_kit::context::InternalCredential::new(Some("an-internal-credential-0123456780")),
    );
    wrong
        .watch_changes(WatchChangesRequest::default())
        .await
        .refused(tonic::Code::Unauthenticated);

    // The right credential passes.
    let mut client = FeedTestServiceClient::with_interceptor(
        channel.clone(),
        rapport_kit::context::InternalCredential::new(Some(token)),
    );
    assert!(
        client
            .watch_changes(WatchChangesRequest::default())
            .await
            .is_ok()
    );

    // Health needs no credential, and reports the hosted service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "rapport.kittest.v1.FeedTestService".into(),
        })
        .await
        .answer()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    producer.stop().await;
}

#[tokio::test]
async fn typed_events_cross_the_feed_exactly_and_erasure_redacts_them_in_place() {
    use rapport_proto::rapport::common::v1::{Money, RedactionReason};
    use rapport_proto::rapport::interaction::v1::{
        InteractionEvent, InteractionRecorded, InteractionType, interaction_event::Event,
    };
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let tenant = Uuid::new_v4();
    // Values a JSON double would round or an `as_i64` reader would drop.
    let recorded =
        |id: &str, units: i64, nanos: i32, csat: Option<i32>, nps: Option<i32>| InteractionEvent {
            event: Some(Event::InteractionRecorded(InteractionRecorded {
                interaction_id: id.into(),
                customer_id: "c-1".into(),
                r#type: InteractionType::Purchase as i32,
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    units,
                    nanos,
                }),
                csat,
                nps,
                ..Default::default()
            })),
        };
    let sent = [
        recorded("i-1", 10, 500_000_000, Some(2), Some(3)),
        recorded("i-2", i64::MAX, 999_999_999, Some(5), Some(0)),
        recorded("i-3", -7, -10_000_000, None, None),
    ];
    let mut tx = pool.begin().await.unwrap();
    let events: Vec<NewEvent> = sent
        .iter()
        .enumerate()
        .map(|(n, e)| {
            NewEvent::new(
                tenant,
                "interaction",
                format!("i-{}", n + 1),
                "InteractionRecorded",
                e,
            )
        })
        .collect();
    feed::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    let seqs: Vec<i64> = feed::read_after(&pool, tenant, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.sequence)
        .collect();

    // Read back over real gRPC, as a consumer does.
    let producer = start_producer(pool.clone()).await;
    let source = GrpcSource {
        endpoint: Arc::new(Mutex::new(producer.endpoint())),
    };
    let got: Vec<ChangeEvent> = source
        .open(Position::default())
        .await
        .unwrap()
        .take(3)
        .map(|r| r.unwrap())
        .collect()
        .await;
    for (ev, want) in got.iter().zip(&sent) {
        #[allow(deprecated)]
        let legacy = &ev.payload;
        assert!(legacy.is_none(), "typed events carry no Struct payload");
        assert_eq!(
            feed::decode::<InteractionEvent>(ev).as_ref(),
            Some(want),
            "{ev:?}"
        );
    }
    // Another envelope's type is not mistaken for this one.
    assert!(feed::decode::<rapport_proto::rapport::profile::v1::ProfileEvent>(&got[0]).is_none());

    // Redaction keeps sequence, type and aggregate, and drops the rest.
    let mut tx = pool.begin().await.unwrap();
    let n = feed::redact_aggregates::<InteractionEvent>(
        &mut tx,
        tenant,
        "interaction",
        &["i-1".to_string(), "i-3".to_string()],
        RedactionReason::Erased,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 2);
    let after = feed::read_after(&pool, tenant, 0, 10).await.unwrap();
    assert_eq!(after.iter().map(|e| e.sequence).collect::<Vec<_>>(), seqs);
    for (ev, want) in after.iter().zip(&sent) {
        assert_eq!(ev.event_type, "InteractionRecorded");
        let typed = feed::decode::<InteractionEvent>(ev).unwrap();
        if ev.aggregate_id == "i-2" {
            assert_eq!(&typed, want);
        } else {
            let Some(Event::Redacted(r)) = typed.event else {
                panic!("not redacted: {typed:?}");
            };
            assert_eq!(r.subject_id, ev.aggregate_id);
            assert_eq!(r.reason, RedactionReason::Erased as i32);
        }
    }
    // Nothing of another tenant is touched.
    let mut tx = pool.begin().await.unwrap();
    let other = feed::redact_aggregates::<InteractionEvent>(
        &mut tx,
        Uuid::new_v4(),
        "interaction",
        &["i-2".to_string()],
        RedactionReason::Erased,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(other, 0);
    producer.stop().await;
}

#[tokio::test]
async fn a_tenant_with_a_long_backlog_does_not_hold_back_the_others() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let (busy, quiet) = (Uuid::new_v4(), Uuid::new_v4());
    // A backlog of one tenant six reads long.
    let backlog = 6 * feed::WATCH_BATCH as usize;
    for chunk in 0..backlog / 1000 {
        let mut tx = pool.begin().await.unwrap();
        let events: Vec<NewEvent> = (0..1000)
            .map(|i| event(busy, &format!("busy-{}", chunk * 1000 + i)))
            .collect();
        feed::append(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut stream = feed::watch(
        pool.clone(),
        PRODUCER.schema,
        None,
        Position::default(),
        Shutdown::new(),
    );
    // The reader is busy with the backlog when the other tenant writes.
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.aggregate_id, "busy-0");
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(quiet, "quiet-1")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut busy_seen = 1;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the stream stalled")
            .unwrap()
            .unwrap();
        if e.aggregate_id == "quiet-1" {
            break;
        }
        busy_seen += 1;
    }
    assert!(
        busy_seen < backlog,
        "the other tenant's event came only after the whole backlog ({busy_seen} events)"
    );
}

#[tokio::test]
async fn a_watch_ends_unavailable_when_the_producer_shuts_down() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    feed::append(&mut tx, &[event(tenant, "a-1")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let producer = start_producer(pool.clone()).await;
    let channel = rapport_testkit::channel(&producer).await;
    let mut stream = FeedTestServiceClient::new(channel)
        .watch_changes(WatchChangesRequest::default())
        .await
        .answer();
    assert!(stream.message().await.unwrap().is_some());
    producer.shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the watch was still open 5 s after shutdown began");
    let err = ended.expect_err("the watch ended with OK: a consumer would take it for the end");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shutting down"), "{err:?}");
}

/// Delivers `events` at once on the first open, then nothing.
struct ReadySource(Mutex<Option<Vec<ChangeEvent>>>);

impl FeedSource for ReadySource {
    fn open(&self, _position: Position) -> BoxFuture<'_, Result<EventStream, Status>> {
        let events = self.0.lock().unwrap().take();
        Box::pin(async move {
            Ok(match events {
                Some(e) => futures::stream::iter(e.into_iter().map(Ok))
                    .chain(futures::stream::pending())
                    .boxed(),
                None => futures::stream::pending().boxed(),
            })
        })
    }
}

/// Records the tenant of each batch applied, in order.
struct TenantOrder(Arc<Mutex<Vec<(Uuid, usize)>>>);

impl FeedHandler for TenantOrder {
    fn apply<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        tenant: Uuid,
        events: &'a [ChangeEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        self.0.lock().unwrap().push((tenant, events.len()));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_tenant_with_few_events_is_applied_before_a_long_backlog_that_arrived_first() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, CONSUMER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, CONSUMER, 4).await.unwrap();
    let (busy, quiet) = (Uuid::new_v4(), Uuid::new_v4());
    let change = |tenant: Uuid, sequence: i64| ChangeEvent {
        tenant_id: tenant.to_string(),
        sequence,
        aggregate_type: "thing".into(),
        aggregate_id: format!("thing-{sequence}"),
        event_type: "ThingHappened".into(),
        ..Default::default()
    };
    // One delivery (one batch: fewer than a consumer's first batch takes): a
    // backlog of one tenant, then one event of another.
    let mut events: Vec<ChangeEvent> = (1..=300).map(|s| change(busy, s)).collect();
    events.push(change(quiet, 1));
    let order = Arc::new(Mutex::new(Vec::new()));
    let consumer = Consumer::new(
        "ordertest",
        pool.clone(),
        Arc::new(ReadySource(Mutex::new(Some(events)))),
        Arc::new(TenantOrder(order.clone())),
    );
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(consumer.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while order.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.trigger();
    handle.await.unwrap();
    assert_eq!(*order.lock().unwrap(), vec![(quiet, 1), (busy, 300)]);
}
