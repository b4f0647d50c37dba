//! Faults, on loopback, each bounded in time:
//!
//! * PostgreSQL stopped and started under load: the services report
//!   NOT_SERVING, answer UNAVAILABLE (never INTERNAL), report SERVING again
//!   and resume without a restart of their own, and no acknowledged write is
//!   lost;
//! * the process killed during a streaming ingestion: the client sends the
//!   same interactions again with the same idempotency keys to the restarted
//!   process, and every interaction is stored exactly once;
//! * the feed consumers (segmentation and valuation following the interaction
//!   feed) killed mid-stream: after the restart they resume from their stored
//!   cursors, and their projections hold every interaction exactly once.
//!
//! Both run `rapport dev` against a PostgreSQL server the test owns, so the
//! database outlives (or dies apart from) the services.

mod support;

use std::time::{Duration, Instant};

use rapport_kit::pg::{PgOptions, PgServer, free_port};
use rapport_proto::rapport::common::v1::{CustomerRef, Money, customer_ref};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Interaction, InteractionType, ListInteractionsRequest, RecordInteractionsRequest,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, GetCustomerRequest,
};
use support::{DevStack, grpcurl_run};
use tonic::Code;
use tonic::transport::Channel;

const TENANT: &str = "0b7f3c1e-6a59-4d2b-9c57-0d6f3e9a1b42";

fn with_tenant<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("x-rapport-tenant", TENANT.parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn connect(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// The health status grpcurl reports for `service` at `addr`.
fn health(addr: &str, service: &str) -> String {
    let out = grpcurl_run(&[
        "-d",
        &format!(r#"{{"service": "{service}"}}"#),
        addr,
        "grpc.health.v1.Health/Check",
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for_health(addr: &str, service: &str, wanted: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let h = health(addr, service);
        if h.contains(&format!("\"{wanted}\"")) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{service} did not report {wanted} within {limit:?}; last: {h}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn own_postgres(dir: &std::path::Path, port: u16) -> PgServer {
    PgServer::start(&PgOptions {
        data_dir: dir.to_path_buf(),
        port: Some(port),
        throwaway: true,
    })
    .expect("start PostgreSQL")
}

fn person(name: &str) -> Customer {
    Customer {
        kind: CustomerKind::Person as i32,
        display_name: name.to_string(),
        ..Default::default()
    }
}

#[test]
fn postgres_stopped_and_started_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut pg = own_postgres(&dir.path().join("pg"), port);
    let url = pg.url("postgres");
    let stack = DevStack::start(&dir.path().join("data"), &["--database-url", &url], &[]);
    let profile_addr = stack.addr(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Load: customers created one after another by two writers until told to
    // stop; every acknowledged id is kept, every failure's code too.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let stop = stop.clone();
        let addr = profile_addr.clone();
        writers.push(runtime.spawn(async move {
            let mut client = ProfileServiceClient::new(connect(&addr).await);
            let (mut acked, mut codes) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = client
                    .create_customer(with_tenant(CreateCustomerRequest {
                        customer: Some(person(&format!("Writer {w} customer {n}"))),
                        request_id: format!("w{w}-{n}"),
                    }))
                    .await;
                match r {
                    Ok(r) => acked.push(r.into_inner().customer.unwrap().customer_id),
                    Err(s) => {
                        codes.push(s.code());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (acked, codes)
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    wait_for_health(
        &profile_addr,
        "rapport.profile.v1.ProfileService",
        "SERVING",
        Duration::from_secs(5),
    );

    // Every service of the stack and its gRPC service name.
    let services: Vec<(String, &str)> = vec![
        (profile_addr.clone(), "rapport.profile.v1.ProfileService"),
        (stack.addr(2), "rapport.interaction.v1.InteractionService"),
        (stack.addr(3), "rapport.segmentation.v1.SegmentationService"),
        (stack.addr(4), "rapport.valuation.v1.ValuationService"),
    ];

    // The database goes away: every service says so and keeps running.
    pg.stop();
    for (addr, name) in &services {
        wait_for_health(addr, name, "NOT_SERVING", Duration::from_secs(20));
    }
    // Longer than a pool waits for a connection (5 s): a writer that was
    // between calls when the database went sees the outage too, not only
    // one caught in the middle of a transaction.
    std::thread::sleep(Duration::from_secs(6));

    // It comes back on the same port: the services recover on their own.
    let _pg = own_postgres(&dir.path().join("pg"), port);
    for (addr, name) in &services {
        wait_for_health(addr, name, "SERVING", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut codes = Vec::new();
    for w in writers {
        let (a, c) = runtime.block_on(w).unwrap();
        acked.extend(a);
        codes.extend(c);
    }
    assert!(
        !codes.is_empty(),
        "the writers saw the outage (else the test proves nothing)"
    );
    for c in &codes {
        assert!(
            matches!(
                c,
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ),
            "an outage is UNAVAILABLE (retry), not {c:?}; all: {codes:?}"
        );
    }

    // Writes after the outage succeed, and every acknowledged write is there.
    runtime.block_on(async {
        let mut client = ProfileServiceClient::new(connect(&profile_addr).await);
        client
            .create_customer(with_tenant(CreateCustomerRequest {
                customer: Some(person("After the outage")),
                request_id: "after".into(),
            }))
            .await
            .expect("writes resume after the database returns");
        for id in &acked {
            client
                .get_customer(with_tenant(GetCustomerRequest {
                    customer_id: id.clone(),
                }))
                .await
                .unwrap_or_else(|s| panic!("acknowledged customer {id} is missing: {s:?}"));
        }
    });
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    stack.stop();
}

#[test]
fn a_quick_postgres_restart_is_reported_and_no_call_fails_once_serving_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut pg = own_postgres(&dir.path().join("pg"), port);
    let url = pg.url("postgres");
    let log = dir.path().join("stack.log");
    let stack = DevStack::start_logging_to(
        &dir.path().join("data"),
        &["--database-url", &url],
        &[("RAPPORT_LOG", "info")],
        Some(&log),
    );
    let addr = stack.addr(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Warm the pool: several connections idle in it when the server goes.
    runtime.block_on(async {
        let client = ProfileServiceClient::new(connect(&addr).await);
        let mut calls = Vec::new();
        for i in 0..8 {
            let mut c = client.clone();
            calls.push(tokio::spawn(async move {
                c.create_customer(with_tenant(CreateCustomerRequest {
                    customer: Some(person(&format!("Before {i}"))),
                    request_id: format!("before-{i}"),
                }))
                .await
                .unwrap();
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
    });

    // The health probes have their connections (they check every second).
    std::thread::sleep(Duration::from_secs(2));
    // A restart as an operator does it: stop, start at once.
    pg.stop();
    let _pg = own_postgres(&dir.path().join("pg"), port);
    // Reported, however short the outage: the probe's own connection broke.
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("database reachable again; serving") {
            assert!(text.contains("database unreachable; reporting NOT_SERVING"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restart was never reported:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_health(
        &addr,
        "rapport.profile.v1.ProfileService",
        "SERVING",
        Duration::from_secs(10),
    );
    // Once serving again, no call meets a stale pooled connection.
    runtime.block_on(async {
        let client = ProfileServiceClient::new(connect(&addr).await);
        let mut calls = Vec::new();
        for i in 0..32 {
            let mut c = client.clone();
            calls.push(tokio::spawn(async move {
                c.create_customer(with_tenant(CreateCustomerRequest {
                    customer: Some(person(&format!("After {i}"))),
                    request_id: format!("after-{i}"),
                }))
                .await
            }));
        }
        for c in calls {
            if let Err(status) = c.await.unwrap() {
                panic!("a call failed after the service reported SERVING again: {status:?}");
            }
        }
    });
    stack.stop();
}

fn purchases(customer: &str, range: std::ops::Range<usize>) -> Vec<Interaction> {
    range
        .map(|k| Interaction {
            customer: Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::CustomerId(customer.to_string())),
            }),
            r#type: InteractionType::Purchase as i32,
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_767_225_600 + (k as i64) * 60,
                nanos: 0,
            }),
            amount: Some(Money {
                currency_code: "EUR".into(),
                units: 10 + (k % 50) as i64,
                nanos: 0,
            }),
            idempotency_key: format!("order-{k}"),
            ..Default::default()
        })
        .collect()
}

#[test]
fn ingestion_interrupted_by_a_crash_and_retried_stores_each_interaction_once() {
    const TOTAL: usize = 6000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let pg = own_postgres(&dir.path().join("pg"), port);
    let url = pg.url("postgres");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let stack = DevStack::start(&dir.path().join("data"), &["--database-url", &url], &[]);
    let customer = runtime.block_on(async {
        let mut p = ProfileServiceClient::new(connect(&stack.addr(1)).await);
        p.create_customer(with_tenant(CreateCustomerRequest {
            customer: Some(person("Bulk buyer")),
            request_id: "bulk".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap()
        .customer_id
    });

    // A slow upload: 30 messages of 200, one every 100 ms; the process is
    // killed (SIGKILL) while it is under way.
    let addr = stack.addr(2);
    let c = customer.clone();
    let upload = runtime.spawn(async move {
        let mut client = InteractionServiceClient::new(connect(&addr).await);
        let all = purchases(&c, 0..TOTAL);
        let messages: Vec<RecordInteractionsRequest> = all
            .chunks(200)
            .map(|c| RecordInteractionsRequest {
                interactions: c.to_vec(),
            })
            .collect();
        let stream = futures::StreamExt::then(futures::stream::iter(messages), |m| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            m
        });
        let mut req = tonic::Request::new(stream);
        req.metadata_mut()
            .insert("x-rapport-tenant", TENANT.parse().unwrap());
        client.record_interactions(req).await
    });
    std::thread::sleep(Duration::from_millis(1500));
    drop(stack); // SIGKILL
    let interrupted = runtime.block_on(upload).unwrap();
    assert!(
        interrupted.is_err(),
        "the upload was cut by the crash: {interrupted:?}"
    );

    // The restarted process takes the whole upload again, same keys.
    let stack = DevStack::start(&dir.path().join("data"), &["--database-url", &url], &[]);
    let addr = stack.addr(2);
    let (accepted, duplicate, rejected, stored) = runtime.block_on(async {
        let mut client = InteractionServiceClient::new(connect(&addr).await);
        let messages: Vec<RecordInteractionsRequest> = purchases(&customer, 0..TOTAL)
            .chunks(500)
            .map(|c| RecordInteractionsRequest {
                interactions: c.to_vec(),
            })
            .collect();
        let mut req = tonic::Request::new(futures::stream::iter(messages));
        req.metadata_mut()
            .insert("x-rapport-tenant", TENANT.parse().unwrap());
        let r = client.record_interactions(req).await.unwrap().into_inner();
        // Read the customer's whole timeline back.
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_interactions(with_tenant(ListInteractionsRequest {
                    customer_id: customer.clone(),
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            for i in page.interactions {
                assert!(ids.insert(i.interaction_id), "an interaction listed twice");
                assert!(keys.insert(i.idempotency_key), "a key stored twice");
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        (
            r.accepted_count,
            r.duplicate_count,
            r.rejected_count,
            keys.len(),
        )
    });
    assert_eq!(rejected, 0);
    assert!(
        duplicate > 0,
        "part of the upload was committed before the crash"
    );
    assert_eq!(accepted + duplicate, TOTAL as i64);
    assert_eq!(stored, TOTAL, "each interaction stored exactly once");
    stack.stop();
    drop(pg);
}

/// Where `schema`'s consumer of the interaction feed stands, and the head
/// of the feed, each summed over the tenants (the feed is ordered per
/// tenant; the consumer has caught up when the two are equal).
async fn feed_positions(db: &sqlx::PgPool, schema: &str) -> (i64, i64) {
    let query = match schema {
        "segmentation" => {
            "SELECT coalesce(sum(after_sequence), 0)::bigint FROM segmentation.feed_tenant_cursors
              WHERE source = 'interaction'"
        }
        _ => {
            "SELECT coalesce(sum(after_sequence), 0)::bigint FROM valuation.feed_tenant_cursors
              WHERE source = 'interaction'"
        }
    };
    let cursor: i64 = sqlx::query_scalar(query).fetch_one(db).await.unwrap();
    let last: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(origin + issued), 0)::bigint FROM interaction.outbox_heads",
    )
    .fetch_one(db)
    .await
    .unwrap();
    (cursor, last)
}

#[test]
fn feed_consumers_killed_mid_stream_resume_from_their_cursors() {
    const CUSTOMERS: usize = 50;
    const PER_ROUND: usize = 60; // purchases per customer per round
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let pg = own_postgres(&dir.path().join("pg"), port);
    let url = pg.url("postgres");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap()
    });

    let mut stack = DevStack::start(&dir.path().join("data"), &["--database-url", &url], &[]);
    let customers: Vec<String> = runtime.block_on(async {
        let mut p = ProfileServiceClient::new(connect(&stack.addr(1)).await);
        let mut ids = Vec::new();
        for c in 0..CUSTOMERS {
            let r = p
                .create_customer(with_tenant(CreateCustomerRequest {
                    customer: Some(person(&format!("Feed customer {c}"))),
                    request_id: format!("feed-{c}"),
                }))
                .await
                .unwrap();
            ids.push(r.into_inner().customer.unwrap().customer_id);
        }
        ids
    });

    // Rounds of bulk purchases, each followed at once by a SIGKILL of the
    // whole process, until a kill lands while a consumer is still behind
    // the feed (the first one nearly always does).
    let mut rounds = 0usize;
    let mut caught_mid_stream = false;
    while !caught_mid_stream {
        assert!(rounds < 4, "no kill landed mid-stream in {rounds} rounds");
        let addr = stack.addr(2);
        let batch: Vec<Interaction> = customers
            .iter()
            .enumerate()
            .flat_map(|(c, id)| {
                let start = (rounds * CUSTOMERS + c) * PER_ROUND;
                purchases(id, start..start + PER_ROUND)
            })
            .collect();
        let accepted = runtime.block_on(async {
            let mut client = InteractionServiceClient::new(connect(&addr).await);
            let messages: Vec<RecordInteractionsRequest> = batch
                .chunks(1000)
                .map(|c| RecordInteractionsRequest {
                    interactions: c.to_vec(),
                })
                .collect();
            let mut req = tonic::Request::new(futures::stream::iter(messages));
            req.metadata_mut()
                .insert("x-rapport-tenant", TENANT.parse().unwrap());
            client
                .record_interactions(req)
                .await
                .unwrap()
                .into_inner()
                .accepted_count
        });
        assert_eq!(accepted as usize, batch.len());
        // Kill as soon as a consumer has committed part of this round.
        let (before, _) = runtime.block_on(feed_positions(&db, "segmentation"));
        let waiting = Instant::now();
        while runtime.block_on(feed_positions(&db, "segmentation")).0 == before
            && waiting.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stack); // SIGKILL, consumers and all
        rounds += 1;
        let (seg, last) = runtime.block_on(feed_positions(&db, "segmentation"));
        let (val, _) = runtime.block_on(feed_positions(&db, "valuation"));
        eprintln!("round {rounds}: segmentation at {seg}, valuation at {val}, feed at {last}");
        caught_mid_stream = (seg > before && seg < last) || (val > 0 && val < last);
        stack = DevStack::start(&dir.path().join("data"), &["--database-url", &url], &[]);
    }

    // After the restart both consumers reach the end of the feed ...
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (seg, last) = runtime.block_on(feed_positions(&db, "segmentation"));
        let (val, _) = runtime.block_on(feed_positions(&db, "valuation"));
        if seg == last && val == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumers did not catch up: segmentation at {seg}, valuation at {val}, feed at {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // ... and hold every purchase exactly once: the projections against the
    // interaction service's own rows, customer by customer.
    let expected = (rounds * PER_ROUND) as i64;
    runtime.block_on(async {
        let tenant: sqlx::types::Uuid = TENANT.parse().unwrap();
        let stored: Vec<(sqlx::types::Uuid, i64)> = sqlx::query_as(
            "SELECT customer_id, count(*) FROM interaction.interactions
              WHERE tenant_id = $1 GROUP BY customer_id",
        )
        .bind(tenant)
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(stored.len(), CUSTOMERS);
        assert!(stored.iter().all(|(_, n)| *n == expected), "{stored:?}");
        for (schema, query) in [
            (
                "segmentation events",
                "SELECT customer_id, count(*) FROM segmentation.events
                  WHERE tenant_id = $1 GROUP BY customer_id",
            ),
            (
                "segmentation features",
                "SELECT customer_id, purchases FROM segmentation.features WHERE tenant_id = $1",
            ),
            (
                "valuation purchases",
                "SELECT customer_id, count(*) FROM valuation.purchases
                  WHERE tenant_id = $1 GROUP BY customer_id",
            ),
        ] {
            let mut rows: Vec<(sqlx::types::Uuid, i64)> = sqlx::query_as(query)
                .bind(tenant)
                .fetch_all(&db)
                .await
                .unwrap();
            rows.sort();
            let mut want = stored.clone();
            want.sort();
            assert_eq!(rows, want, "{schema} differ from the stored interactions");
        }
    });
    stack.stop();
    drop(pg);
}
