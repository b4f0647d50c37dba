//! Ingestion: the same interactions through the gateway, direct to the
//! interaction service, and as one raw `COPY` into the same table.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use rapport_interaction::{store, synthetic};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{Interaction, RecordInteractionsRequest};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, EmailAddress, PersonDetails, customer,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::stack::{Stack, Tenant};
use super::{Auth, Authed, Sizes, Table, count, secs};

/// Creates `n` people through `gateway` with `auth`, then records `each`
/// synthetic interactions per customer for them; their ids.
pub async fn customers_with_history(
    gateway: &tonic::transport::Channel,
    auth: &Auth,
    prefix: &str,
    n: usize,
    each: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let profile = ProfileServiceClient::with_interceptor(gateway.clone(), auth.clone());
    let ids = customers(&profile, prefix, n).await?;
    let messages: Vec<RecordInteractionsRequest> = (0..ids.len() * each)
        .map(|k| synthetic::interaction(k, &ids, prefix))
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| RecordInteractionsRequest {
            interactions: c.to_vec(),
        })
        .collect();
    InteractionServiceClient::with_interceptor(gateway.clone(), auth.clone())
        .record_interactions(futures::stream::iter(messages))
        .await
        .context("RecordInteractions")?;
    Ok(ids)
}

/// Creates `n` people through the gateway, 16 calls in flight; their ids.
pub async fn customers(
    profile: &ProfileServiceClient<Authed>,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let created: Vec<anyhow::Result<Uuid>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = profile.clone();
            let prefix = prefix.to_string();
            async move {
                let answer = client
                    .create_customer(CreateCustomerRequest {
                        customer: Some(Customer {
                            kind: CustomerKind::Person as i32,
                            details: Some(customer::Details::Person(PersonDetails {
                                given_name: format!("Customer {i}"),
                                family_name: "Bench".into(),
                                ..Default::default()
                            })),
                            emails: vec![EmailAddress {
                                address: format!("{prefix}-{i}@bench.example.com"),
                                primary: true,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        request_id: format!("{prefix}-{i}"),
                    })
                    .await
                    .context("CreateCustomer")?
                    .into_inner();
                let id = answer.customer.map(|c| c.customer_id).unwrap_or_default();
                Ok(Uuid::parse_str(&id)?)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    created.into_iter().collect()
}

async fn record(
    client: &mut InteractionServiceClient<Authed>,
    rows: Vec<Interaction>,
) -> anyhow::Result<(Duration, i64)> {
    let n = rows.len();
    let messages: Vec<RecordInteractionsRequest> = rows
        .chunks(1000)
        .map(|c| RecordInteractionsRequest {
            interactions: c.to_vec(),
        })
        .collect();
    drop(rows);
    let started = Instant::now();
    let answer = client
        .record_interactions(futures::stream::iter(messages))
        .await
        .context("RecordInteractions")?
        .into_inner();
    let took = started.elapsed();
    if answer.accepted_count as usize != n {
        anyhow::bail!(
            "RecordInteractions accepted {} of {n}: {:?}",
            answer.accepted_count,
            answer.rejections.first()
        );
    }
    Ok((took, answer.accepted_count))
}

/// The baseline: the rows the service would store, as one raw `COPY` into
/// the same table of the same database (then deleted again).
pub(super) async fn raw_copy(pool: &PgPool, rows: &[Interaction]) -> anyhow::Result<Duration> {
    let tenant = Uuid::new_v4();
    let buf = synthetic::copy_buffer(tenant, rows, chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("generated data: {e}"))?;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn.copy_in_raw(store::COPY_STATEMENT).await?;
    copy.send(buf).await?;
    let copied = copy.finish().await?;
    let took = started.elapsed();
    anyhow::ensure!(copied as usize == rows.len(), "COPY wrote {copied} rows");
    sqlx::query("DELETE FROM interactions WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM ANALYZE interactions")
        .execute(&mut *conn)
        .await?;
    Ok(took)
}

/// The tenant's last sequence on the interaction feed and each consumer's
/// position in it.
async fn positions(pool: &PgPool, tenant: Uuid) -> anyhow::Result<(i64, [i64; CONSUMERS.len()])> {
    let last = super::feed_head(pool, "interaction", tenant).await?;
    let mut at = [0i64; CONSUMERS.len()];
    for (k, schema) in CONSUMERS.iter().enumerate() {
        let cursor: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT after_sequence FROM {schema}.feed_tenant_cursors
              WHERE source = 'interaction' AND tenant_id = $1"
        )))
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
        at[k] = cursor.unwrap_or(0);
    }
    Ok((last, at))
}

/// The services that follow the interaction feed.
const CONSUMERS: [&str; 3] = ["segmentation", "valuation", "engagement"];

/// How each feed consumer kept up: polls until both have applied every
/// event or `limit` has passed since the last call returned.
async fn follow_consumers(
    pool: &PgPool,
    tenant: Uuid,
    start: (i64, [i64; CONSUMERS.len()]),
    started: Instant,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let waiting = Instant::now();
    let mut done: [Option<Duration>; CONSUMERS.len()] = [None; CONSUMERS.len()];
    let (last, at) = loop {
        let (last, at) = positions(pool, tenant).await?;
        for (d, a) in done.iter_mut().zip(at) {
            if d.is_none() && a >= last {
                *d = Some(waiting.elapsed());
            }
        }
        if done.iter().all(Option::is_some) || waiting.elapsed() > limit {
            break (last, at);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    Ok(CONSUMERS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            // Of this run's events (after `start.0`, in order), and of all
            // it applied meanwhile (it may have started behind).
            let events = last - start.0;
            let applied = (at[k] - start.0).clamp(0, events);
            let applied_meanwhile = at[k] - start.1[k];
            json!({
                "consumer": name,
                "events": events,
                "applied": applied,
                "caught_up_after_last_call_seconds": done[k].map(|d| d.as_secs_f64()),
                "events_per_second": applied_meanwhile as f64 / elapsed.max(1e-9),
            })
        })
        .collect())
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let n = sizes.interactions;
    let tenant: Tenant = stack.tenant("bench ingest").await?;
    let gateway = stack.channel("gateway").await?;
    let direct = stack.channel("interaction").await?;
    let profile =
        ProfileServiceClient::with_interceptor(gateway.clone(), Auth::gateway(&tenant.key)?);
    let mut via_gateway =
        InteractionServiceClient::with_interceptor(gateway, Auth::gateway(&tenant.key)?);
    let mut via_direct = InteractionServiceClient::with_interceptor(
        direct,
        Auth::direct(tenant.id, &stack.internal_token)?,
    );
    let interaction_pool = stack.pool(rapport_interaction::SCHEMA).await?;
    let admin = stack.admin_pool().await?;

    let c = (n / 100).clamp(10, 10_000);
    println!("\ningest: creating {c} customers, then {n} interactions three ways");
    let started = Instant::now();
    let ids = customers(&profile, "ingest", c).await?;
    let create_time = started.elapsed();

    let rows: Vec<Interaction> = (0..n)
        .map(|k| synthetic::interaction(k, &ids, "gateway"))
        .collect();
    let copy_time = raw_copy(&interaction_pool, &rows).await?;
    println!("  raw COPY: {}", secs(copy_time));
    let feed_start = positions(&admin, tenant.id).await?;
    let feed_started = Instant::now();
    let (gateway_time, _) = record(&mut via_gateway, rows).await?;
    println!("  through the gateway: {}", secs(gateway_time));
    let rows: Vec<Interaction> = (0..n)
        .map(|k| synthetic::interaction(k, &ids, "direct"))
        .collect();
    let (direct_time, _) = record(&mut via_direct, rows).await?;
    println!(
        "  direct: {}; following the feed consumers for up to 60 s",
        secs(direct_time)
    );
    let consumers = follow_consumers(
        &admin,
        tenant.id,
        feed_start,
        feed_started,
        Duration::from_secs(60),
    )
    .await?;
    interaction_pool.close().await;
    admin.close().await;

    let copy_rate = rate(n, copy_time);
    let gateway_rate = rate(n, gateway_time);
    let direct_rate = rate(n, direct_time);
    let mut t = Table::new(
        format!(
            "Ingestion of {} interactions for {} customers (segmentation and valuation follow the feed meanwhile)",
            count(n as u64),
            count(c as u64)
        ),
        vec!["path", "time", "interactions/s", "ratio to COPY"],
    );
    t.row(vec![
        "raw COPY into interaction.interactions".into(),
        secs(copy_time),
        format!("{copy_rate:.0}"),
        "1.00".into(),
    ]);
    t.row(vec![
        "RecordInteractions through the gateway".into(),
        secs(gateway_time),
        format!("{gateway_rate:.0}"),
        format!("{:.2}", gateway_rate / copy_rate),
    ]);
    t.row(vec![
        "RecordInteractions direct".into(),
        secs(direct_time),
        format!("{direct_rate:.0}"),
        format!("{:.2}", direct_rate / copy_rate),
    ]);
    t.row(vec![
        format!("CreateCustomer through the gateway (16 in flight)"),
        secs(create_time),
        format!("{:.0} customers/s", rate(c, create_time)),
        "-".into(),
    ]);
    t.print();
    let mut f = Table::new(
        "The feed consumers meanwhile (they apply both runs' events while the calls go on)",
        vec!["consumer", "events", "applied", "events/s", "caught up"],
    );
    for c in &consumers {
        f.row(vec![
            c["consumer"].as_str().unwrap_or_default().to_string(),
            count(c["events"].as_u64().unwrap_or(0)),
            count(c["applied"].as_u64().unwrap_or(0)),
            format!("{:.0}", c["events_per_second"].as_f64().unwrap_or(0.0)),
            c["caught_up_after_last_call_seconds"]
                .as_f64()
                .map_or("not within 60 s of the last call".into(), |s| {
                    format!("{s:.1} s after the last call")
                }),
        ]);
    }
    f.print();
    let freshness =
        super::freshness::run(stack, sizes.freshness_rate, sizes.freshness_seconds, None).await?;
    // The same beside another tenant's bulk load of ten times as many.
    let backlog = 10 * sizes.freshness_rate * sizes.freshness_seconds as usize;
    let beside_backlog = super::freshness::run(
        stack,
        sizes.freshness_rate,
        sizes.freshness_seconds,
        Some(backlog),
    )
    .await?;
    Ok(json!({
        "interactions": n,
        "customers": c,
        "create_customer_per_second": rate(c, create_time),
        "copy": {"seconds": copy_time.as_secs_f64(), "per_second": copy_rate},
        "gateway": {
            "seconds": gateway_time.as_secs_f64(),
            "per_second": gateway_rate,
            "ratio_to_copy": gateway_rate / copy_rate,
        },
        "direct": {
            "seconds": direct_time.as_secs_f64(),
            "per_second": direct_rate,
            "ratio_to_copy": direct_rate / copy_rate,
        },
        "feed_consumers": consumers,
        "freshness": freshness,
        "freshness_beside_backlog": beside_backlog,
    }))
}
