//! The change feed over real gRPC and a real PostgreSQL: events written by
//! concurrent transactions reach a consumer exactly once and in sequence
//! order, across a consumer restart and a producer restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use rapport_kit::db::{self, SchemaSpec};
use rapport_kit::feed::{self, Consumer, EventStream, FeedHandler, FeedSource, NewEvent};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::ChangeEvent;
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

mod kittest {
    include!(concat!(env!("OUT_DIR"), "/kittest/rapport.kittest.v1.rs"));
}
use kittest::feed_test_service_client::FeedTestServiceClient;
use kittest::feed_test_service_server::{FeedTestService, FeedTestServiceServer};
use kittest::{WatchChangesRequest, WatchChangesResponse};

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
        let after = req.into_inner().after_sequence;
        let stream = feed::watch(
            self.pool.clone(),
            PRODUCER.schema,
            after,
            self.shutdown.clone(),
        )
        .map(|r| r.map(|event| WatchChangesResponse { event: Some(event) }));
        Ok(Response::new(stream.boxed()))
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
    fn open(&self, after_sequence: i64) -> BoxFuture<'_, Result<EventStream, Status>> {
        let endpoint = self.endpoint.lock().unwrap().clone();
        Box::pin(async move {
            let mut client = FeedTestServiceClient::connect(endpoint)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let stream = client
                .watch_changes(WatchChangesRequest { after_sequence })
                .await?
                .into_inner();
            Ok(stream
                .map(|r| r.and_then(|m| m.event.ok_or_else(|| Status::internal("empty event"))))
                .boxed())
        })
    }
}

/// Records each applied event; the primary key makes a second application fail.
struct Recorder;

impl FeedHandler for Recorder {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO applied (sequence, aggregate_id) VALUES ($1, $2)")
                .bind(event.sequence)
                .bind(&event.aggregate_id)
                .execute(&mut *tx)
                .await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_event_lost_or_reordered_across_restarts() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    db::migrate(&db.url, CONSUMER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let producer_pool = db::connect(&db.url, PRODUCER, 8).await.unwrap();
    let consumer_pool = db::connect(&db.url, CONSUMER, 4).await.unwrap();
    sqlx::query("CREATE TABLE applied (sequence bigint PRIMARY KEY, aggregate_id text NOT NULL, ord bigint GENERATED ALWAYS AS IDENTITY)")
        .execute(&consumer_pool)
        .await
        .unwrap();
    let tenant = Uuid::new_v4();

    // A backlog written by eight concurrent writers before anyone listens.
    write_events(&producer_pool, tenant, 0, 300, 8).await;

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
    write_events(&producer_pool, tenant, 300, 300, 8).await;
    wait_for(&consumer_pool, 600).await;

    // Consumer restart: stop it, write more, start it again.
    stop.trigger();
    handle.await.unwrap();
    write_events(&producer_pool, tenant, 600, 200, 4).await;
    let (stop, handle) = start_consumer();
    wait_for(&consumer_pool, 800).await;

    // Producer restart: the server goes away mid-stream, events are written
    // while it is down, and it comes back on another port.
    producer.stop().await;
    write_events(&producer_pool, tenant, 800, 200, 4).await;
    producer = start_producer(producer_pool.clone()).await;
    *endpoint.lock().unwrap() = producer.endpoint();
    write_events(&producer_pool, tenant, 1000, 200, 4).await;
    wait_for(&consumer_pool, 1200).await;

    stop.trigger();
    handle.await.unwrap();
    producer.stop().await;

    // Exactly the outbox, once each, applied in sequence order.
    let outbox: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM outbox ORDER BY sequence")
        .fetch_all(&producer_pool)
        .await
        .unwrap();
    let applied: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM applied ORDER BY ord")
        .fetch_all(&consumer_pool)
        .await
        .unwrap();
    assert_eq!(outbox.len(), 1200);
    assert_eq!(
        applied, outbox,
        "applied in sequence order, each exactly once"
    );
    let ids: i64 = sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM applied")
        .fetch_one(&consumer_pool)
        .await
        .unwrap();
    assert_eq!(ids, 1200);
    assert_eq!(
        Consumer::cursor(&consumer_pool, "feedtest").await.unwrap(),
        *outbox.last().unwrap()
    );
}

#[tokio::test]
async fn sequence_order_is_commit_order() {
    // A transaction that appended first but commits last must not be overtaken:
    // its event gets the lower sequence only if it commits first, because the
    // outbox lock is held until commit.
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, PRODUCER, &NO_MIGRATIONS)
        .await
        .unwrap();
    let pool = db::connect(&db.url, PRODUCER, 4).await.unwrap();
    let tenant = Uuid::new_v4();
    let event = move |id: &str| NewEvent {
        tenant_id: tenant,
        aggregate_type: "thing",
        aggregate_id: id.into(),
        event_type: "ThingHappened",
        event: thing(0),
    };
    let mut slow = pool.begin().await.unwrap();
    let first = feed::append(&mut slow, &[event("slow")]).await.unwrap()[0];
    let pool2 = pool.clone();
    let fast = tokio::spawn(async move {
        let mut tx = pool2.begin().await.unwrap();
        let seq = feed::append(&mut tx, &[event("fast")]).await.unwrap()[0];
        tx.commit().await.unwrap();
        seq
    });
    // While `slow` is open, a reader sees nothing: nothing can be skipped later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(feed::read_after(&pool, 0, 10).await.unwrap().is_empty());
    slow.commit().await.unwrap();
    let second = fast.await.unwrap();
    assert!(first < second);
    let seen: Vec<String> = feed::read_after(&pool, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(seen, ["slow", "fast"]);
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
    let err = bare
        .watch_changes(WatchChangesRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = FeedTestServiceClient::with_interceptor(
        channel.clone(),
        rapport_kit::context::InternalCredential::new(Some("an-internal-credential-0123456780")),
    );
    let err = wrong
        .watch_changes(WatchChangesRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // The right credential passes.
    let mut client = FeedTestServiceClient::with_interceptor(
        channel.clone(),
        rapport_kit::context::InternalCredential::new(Some(token)),
    );
    assert!(
        client
            .watch_changes(WatchChangesRequest { after_sequence: 0 })
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
        .unwrap()
        .into_inner()
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
    let seqs = feed::append(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    // Read back over real gRPC, as a consumer does.
    let producer = start_producer(pool.clone()).await;
    let source = GrpcSource {
        endpoint: Arc::new(Mutex::new(producer.endpoint())),
    };
    let got: Vec<ChangeEvent> = source
        .open(0)
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
    let after = feed::read_after(&pool, 0, 10).await.unwrap();
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
