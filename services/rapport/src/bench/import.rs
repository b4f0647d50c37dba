//! Bulk identity: customers imported with `ImportCustomers` (direct and
//! through the gateway) beside a raw `COPY` of the same rows into the
//! profile tables; `CreateCustomer` with 16 calls in flight; and
//! interaction streams in which every customer is new (each resolved by its
//! e-mail, in bulk) beside a stream of known customers.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rapport_interaction::synthetic;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, customer_ref,
};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{Interaction, RecordInteractionsRequest};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    Customer, CustomerKind, EmailAddress, ImportCustomerItem, ImportCustomersRequest,
    PersonDetails, customer,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::stack::Stack;
use super::{Auth, Authed, Sizes, Table, count, secs};

/// The `i`th customer of an import run named `run`.
pub(super) fn person(run: &str, i: usize) -> Customer {
    Customer {
        kind: CustomerKind::Person as i32,
        details: Some(customer::Details::Person(PersonDetails {
            given_name: format!("Customer {i}"),
            family_name: "Import".into(),
            ..Default::default()
        })),
        emails: vec![EmailAddress {
            address: format!("{run}-{i}@bench.example.com"),
            primary: true,
            ..Default::default()
        }],
        country_code: ["ES", "FR", "DE", "SE"][i % 4].into(),
        tags: vec![["newsletter", "vip", "b2c"][i % 3].into()],
        ..Default::default()
    }
}

async fn import(
    client: &mut ProfileServiceClient<Authed>,
    run: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let messages: Vec<ImportCustomersRequest> = (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| ImportCustomersRequest {
            items: c
                .iter()
                .map(|i| ImportCustomerItem {
                    customer: Some(person(run, *i)),
                    update_mask: None,
                    request_id: format!("{run}-{i}"),
                })
                .collect(),
        })
        .collect();
    let started = Instant::now();
    let answer = client
        .import_customers(futures::stream::iter(messages))
        .await
        .context("ImportCustomers")?
        .into_inner();
    let took = started.elapsed();
    anyhow::ensure!(
        answer.created_count as usize == n,
        "ImportCustomers created {} of {n}: {:?}",
        answer.created_count,
        answer.rejections.first()
    );
    Ok(took)
}

/// The baseline: the same customers and identifiers as raw `COPY`s into the
/// profile tables (for a throwaway tenant, deleted again).
pub(super) async fn raw_copy(pool: &PgPool, n: usize) -> anyhow::Result<Duration> {
    let tenant = Uuid::new_v4();
    let mut customers = Vec::with_capacity(n * 160);
    let mut identifiers = Vec::with_capacity(n * 120);
    for i in 0..n {
        let id = Uuid::now_v7();
        let c = person("copy", i);
        let data = json!({
            "display_name": "",
            "person": {"given_name": format!("Customer {i}"), "family_name": "Import"},
            "country_code": c.country_code,
            "tags": c.tags,
        });
        customers.extend_from_slice(format!("{tenant}\t{id}\t1\tactive\t{data}\t\\N\n").as_bytes());
        identifiers.extend_from_slice(
            format!(
                "{tenant}\t{id}\t1\t\tcopy-{i}@bench.example.com\t0\tt\t\tcopy-{i}@bench.example.com\n"
            )
            .as_bytes(),
        );
    }
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY customers (tenant_id, customer_id, kind, status, data, stage_set_time) FROM STDIN",
        )
        .await?;
    copy.send(customers).await?;
    copy.finish().await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY identifiers (tenant_id, customer_id, kind, system, value, position, is_primary, label, match_key) FROM STDIN",
        )
        .await?;
    copy.send(identifiers).await?;
    copy.finish().await?;
    let took = started.elapsed();
    for table in ["identifiers", "customers"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    }
    Ok(took)
}

/// `n` purchases, each by a customer no one knows yet (an e-mail of its own).
fn new_customer_stream(run: &str, n: usize) -> Vec<Interaction> {
    (0..n)
        .map(|k| {
            let mut i = synthetic::interaction(k * 10, &[], run);
            i.customer = Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
                    identifiers: vec![Identifier {
                        kind: IdentifierKind::Email as i32,
                        system: String::new(),
                        value: format!("{run}-{k}@new.bench.example.com"),
                    }],
                })),
            });
            i
        })
        .collect()
}

async fn record(
    client: &mut InteractionServiceClient<Authed>,
    rows: Vec<Interaction>,
) -> anyhow::Result<Duration> {
    let n = rows.len();
    let messages: Vec<RecordInteractionsRequest> = rows
        .chunks(1000)
        .map(|c| RecordInteractionsRequest {
            interactions: c.to_vec(),
        })
        .collect();
    let started = Instant::now();
    let answer = client
        .record_interactions(futures::stream::iter(messages))
        .await
        .context("RecordInteractions")?
        .into_inner();
    let took = started.elapsed();
    anyhow::ensure!(
        answer.accepted_count as usize == n,
        "RecordInteractions accepted {} of {n}: {:?}",
        answer.accepted_count,
        answer.rejections.first()
    );
    Ok(took)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let n = sizes.import_customers;
    let tenant = stack.tenant("bench import").await?;
    let other = stack.tenant("bench import direct").await?;
    let gateway = stack.channel("gateway").await?;
    let mut via_gateway =
        ProfileServiceClient::with_interceptor(gateway.clone(), Auth::gateway(&tenant.key)?);
    let mut direct = ProfileServiceClient::with_interceptor(
        stack.channel("profile").await?,
        Auth::direct(other.id, &stack.internal_token)?,
    );
    let mut interactions =
        InteractionServiceClient::with_interceptor(gateway, Auth::gateway(&tenant.key)?);
    let profile_pool = stack.pool(rapport_profile::SCHEMA).await?;

    println!("\nimport: {n} customers three ways, then new and known customers' interactions");
    let copy_time = raw_copy(&profile_pool, n).await?;
    println!("  raw COPY: {}", secs(copy_time));
    let direct_time = import(&mut direct, "direct", n).await?;
    println!("  ImportCustomers direct: {}", secs(direct_time));
    let gateway_time = import(&mut via_gateway, "gateway", n).await?;
    println!(
        "  ImportCustomers through the gateway: {}",
        secs(gateway_time)
    );
    profile_pool.close().await;

    let created = (n / 50).clamp(200, 2_000);
    let started = Instant::now();
    super::ingest::customers(&via_gateway, "create", created).await?;
    let create_time = started.elapsed();
    println!(
        "  CreateCustomer, 16 in flight: {} for {created}",
        secs(create_time)
    );

    // Interactions: every customer new, then the same count for known ones.
    let m = sizes.new_customer_interactions;
    let new_time = record(&mut interactions, new_customer_stream("new", m)).await?;
    let known_ids: Vec<Uuid> = {
        let mut ids =
            super::ingest::customers(&via_gateway, "known", (m / 100).clamp(10, 1000)).await?;
        ids.sort_unstable();
        ids
    };
    let known: Vec<Interaction> = (0..m)
        .map(|k| synthetic::interaction(k * 10, &known_ids, "known"))
        .collect();
    let known_time = record(&mut interactions, known).await?;
    println!(
        "  RecordInteractions, every customer new: {}; known customers: {}",
        secs(new_time),
        secs(known_time)
    );

    let copy_rate = rate(n, copy_time);
    let mut t = Table::new(
        format!(
            "Bulk identity: {} customers, and {} interactions of new and of known customers (whole platform running)",
            count(n as u64),
            count(m as u64)
        ),
        vec!["path", "time", "per second", "ratio"],
    );
    t.row(vec![
        "raw COPY into profile.customers and identifiers".into(),
        secs(copy_time),
        format!("{copy_rate:.0} customers"),
        "1.00 (baseline)".into(),
    ]);
    for (name, d) in [
        ("ImportCustomers direct", direct_time),
        ("ImportCustomers through the gateway", gateway_time),
    ] {
        t.row(vec![
            name.into(),
            secs(d),
            format!("{:.0} customers", rate(n, d)),
            format!("{:.2} of COPY", rate(n, d) / copy_rate),
        ]);
    }
    t.row(vec![
        "CreateCustomer through the gateway, 16 in flight".into(),
        secs(create_time),
        format!("{:.0} customers", rate(created, create_time)),
        "-".into(),
    ]);
    t.row(vec![
        "RecordInteractions, known customers (by id)".into(),
        secs(known_time),
        format!("{:.0} interactions", rate(m, known_time)),
        "1.00 (baseline)".into(),
    ]);
    t.row(vec![
        "RecordInteractions, every customer new (by e-mail)".into(),
        secs(new_time),
        format!("{:.0} interactions", rate(m, new_time)),
        format!("{:.2} of known", rate(m, new_time) / rate(m, known_time)),
    ]);
    t.print();
    Ok(json!({
        "customers": n,
        "copy": {"seconds": copy_time.as_secs_f64(), "per_second": copy_rate},
        "import_direct": {
            "seconds": direct_time.as_secs_f64(),
            "per_second": rate(n, direct_time),
            "ratio_to_copy": rate(n, direct_time) / copy_rate,
        },
        "import_gateway": {
            "seconds": gateway_time.as_secs_f64(),
            "per_second": rate(n, gateway_time),
            "ratio_to_copy": rate(n, gateway_time) / copy_rate,
        },
        "create_customer": {"customers": created, "per_second": rate(created, create_time)},
        "interactions": m,
        "new_customers_per_second": rate(m, new_time),
        "known_customers_per_second": rate(m, known_time),
        "new_to_known_ratio": rate(m, new_time) / rate(m, known_time),
    }))
}
