//! Throughput and latency of the profile service over real gRPC, against a
//! throwaway PostgreSQL: CreateCustomer, GetCustomer and ResolveIdentity at a
//! fixed concurrency. Prints figures; asserts nothing.
//!
//! Run with `cargo bench -p rapport-profile`. Set `PROFILE_BENCH_OPS` to change
//! the number of calls per method (default 3,000) and
//! `PROFILE_BENCH_CONCURRENCY` the number of concurrent clients (default 16).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rapport_kit::config::ServiceConfig;
use rapport_kit::context::TENANT_HEADER;
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::*;
use tonic::transport::Channel;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = tenant.parse() {
        r.metadata_mut().insert(TENANT_HEADER, v);
    }
    r
}

fn new_person(i: usize) -> Customer {
    Customer {
        kind: CustomerKind::Person as i32,
        details: Some(customer::Details::Person(PersonDetails {
            given_name: format!("Given{i}"),
            family_name: format!("Family{i}"),
            birth_date: None,
        })),
        emails: vec![EmailAddress {
            address: format!("person{i}@bench.example"),
            primary: true,
            label: String::new(),
        }],
        phones: vec![PhoneNumber {
            number: format!("+3460{:07}", i % 10_000_000),
            primary: true,
            label: String::new(),
        }],
        country_code: "ES".into(),
        tags: vec!["bench".into()],
        ..Default::default()
    }
}

struct Report {
    name: &'static str,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Report {
    fn print(&mut self, concurrency: usize) {
        self.latencies.sort();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        println!(
            "{:<16} concurrency {:>3}  {:>6} calls  {:>8.0} calls/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            self.name,
            concurrency,
            self.ops,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            self.errors
        );
    }
}

/// Runs `ops` calls of `f(i)` on `concurrency` workers sharing one channel.
async fn run<F, Fut>(
    name: &'static str,
    ops: usize,
    concurrency: usize,
    channel: Channel,
    f: F,
) -> Report
where
    F: Fn(ProfileServiceClient<Channel>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let f = f.clone();
        let client = ProfileServiceClient::new(channel.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                if !f(client.clone(), i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(ops);
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    Report {
        name,
        ops,
        errors,
        elapsed: start.elapsed(),
        latencies,
    }
}

async fn bench() {
    let ops = env_usize("PROFILE_BENCH_OPS", 3000);
    let concurrency = env_usize("PROFILE_BENCH_CONCURRENCY", 16);
    let profile = rapport_testkit::service!(rapport_profile);
    let db = rapport_testkit::database().await;
    if let Err(e) = profile.migrate(&db).await {
        eprintln!("cannot migrate the benchmark database: {e}");
        return;
    }
    let running = profile
        .serve(ServiceConfig {
            db_max_connections: 32,
            ..rapport_testkit::service_config(&db)
        })
        .await;
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(endpoint) = tonic::transport::Endpoint::from_shared(running.endpoint())
            && let Ok(c) = endpoint.connect().await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(channel) = channel else {
        eprintln!("the service did not start");
        return;
    };
    let tenant: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    println!(
        "profile service in-process, called over gRPC on 127.0.0.1; throwaway PostgreSQL (fsync off); {ops} calls per method"
    );

    // CreateCustomer: a new person with an e-mail and a phone each time.
    let ids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let t = tenant.clone();
    let sink = ids.clone();
    let mut create = run(
        "CreateCustomer",
        ops,
        concurrency,
        channel.clone(),
        move |mut c, i| {
            let t = t.clone();
            let sink = sink.clone();
            async move {
                match c
                    .create_customer(request(
                        &t,
                        CreateCustomerRequest {
                            customer: Some(new_person(i)),
                            request_id: String::new(),
                        },
                    ))
                    .await
                {
                    Ok(r) => {
                        if let Some(cu) = r.into_inner().customer
                            && let Ok(mut s) = sink.lock()
                        {
                            s.push(cu.customer_id);
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    create.print(concurrency);

    // GetCustomer: random reads of the customers just created.
    let known: Arc<Vec<String>> = Arc::new(ids.lock().map(|v| v.clone()).unwrap_or_default());
    if known.is_empty() {
        eprintln!("no customer was created; stopping");
        running.stop().await;
        return;
    }
    let t = tenant.clone();
    let k = known.clone();
    let mut get = run(
        "GetCustomer",
        ops,
        concurrency,
        channel.clone(),
        move |mut c, i| {
            let t = t.clone();
            let id = k[(i * 7919) % k.len()].clone();
            async move {
                c.get_customer(request(&t, GetCustomerRequest { customer_id: id }))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    get.print(concurrency);

    // ResolveIdentity: half the calls name a known customer's e-mail and a
    // new loyalty id (found, identifier attached), half a new e-mail
    // (customer created).
    let t = tenant.clone();
    let mut resolve = run(
        "ResolveIdentity",
        ops,
        concurrency,
        channel.clone(),
        move |mut c, i| {
            let t = t.clone();
            let identifiers = if i % 2 == 0 {
                vec![
                    Identifier {
                        kind: IdentifierKind::Email as i32,
                        system: String::new(),
                        value: format!("person{}@bench.example", i / 2),
                    },
                    Identifier {
                        kind: IdentifierKind::External as i32,
                        system: "loyalty".into(),
                        value: format!("card-{i}"),
                    },
                ]
            } else {
                vec![Identifier {
                    kind: IdentifierKind::Email as i32,
                    system: String::new(),
                    value: format!("new{i}@bench.example"),
                }]
            };
            async move {
                c.resolve_identity(request(
                    &t,
                    ResolveIdentityRequest {
                        identifiers,
                        traits: None,
                        lookup_only: false,
                    },
                ))
                .await
                .is_ok()
            }
        },
    )
    .await;
    resolve.print(concurrency);
    running.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a
    // smoke test, which is not worth a database here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("profile benchmark: run with `cargo bench -p rapport-profile`");
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return;
        }
    };
    runtime.block_on(bench());
}
