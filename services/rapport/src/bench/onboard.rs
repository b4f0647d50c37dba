//! A tenant onboarded, as a new customer of Rapport would do it: from an
//! empty tenant, through the gateway with an API key, import the customer
//! base from a CSV file and its interaction history from another
//! (`rapport import`, the same code as the command), wait until every feed
//! consumer has caught up, fit BG/NBD and Gamma-Gamma, score every
//! customer, and create a dynamic and a snapshot segment. Each phase is
//! timed, and the total ("time to insight") is set beside a raw `COPY` of
//! the same rows into the same tables in the same run.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{CustomerRef, Money, PeriodUnit, customer_ref};
use rapport_proto::rapport::interaction::v1::{Interaction, InteractionType};
use rapport_proto::rapport::segmentation::v1::SegmentKind;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{
    ActivateModelRequest, FitModelRequest, ModelKind, ScoreCustomersRequest,
};
use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::synthetic::BgNbdGenerator;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::stack::{Stack, Tenant};
use super::{Auth, Sizes, Table, count, create_segment, secs};

/// The purchase process of the generated base (per week).
const TRUTH: BgNbd = BgNbd {
    r: 0.25,
    alpha: 4.0,
    a: 0.8,
    b: 2.5,
};
const SPEND: GammaGamma = GammaGamma {
    p: 6.0,
    q: 4.0,
    gamma: 15.0,
};

/// Non-purchase interactions that fill each history up to its share.
const CONTACTS: [&str; 4] = ["web_visit", "email", "call", "chat"];

/// One interaction of the generated history: (customer index, type, day
/// before the end, hour of the day, amount in cents). No two rows of a
/// customer are alike (a file's row is its own idempotency key).
type Row = (usize, &'static str, i64, u32, Option<i64>);

/// The histories of `customers` customers, about `per_customer`
/// interactions each: purchases drawn from the BG/NBD process with
/// Gamma-Gamma spend, the rest contacts spread over the customer's life.
fn histories(customers: usize, per_customer: usize) -> anyhow::Result<Vec<Row>> {
    let generator = BgNbdGenerator::new(TRUTH, Some(SPEND), 1.0)?;
    let mut rng = StdRng::seed_from_u64(2026);
    let mut rows = Vec::with_capacity(customers * per_customer);
    for i in 0..customers {
        let age_weeks = 4.0 + (i % 100) as f64;
        let c = generator.draw(&mut rng, age_weeks);
        let first = (c.observation.age * 7.0).round() as i64;
        let last = (c.observation.recency * 7.0).round() as i64;
        let x = c.observation.frequency as i64;
        let cents = (c.mean_spend.unwrap_or(20.0) * 100.0).round().max(1.0) as i64;
        // Days after the first purchase: 0, then the repeats up to recency.
        let mut days = vec![0i64];
        for j in 1..=x {
            days.push(last * j / x.max(1));
        }
        for (k, d) in days.iter().enumerate() {
            rows.push((i, "purchase", first - d, 10, Some(cents + k as i64)));
        }
        for k in days.len()..per_customer {
            let day = first - (k as i64 * 7919) % (first + 1);
            // Hours 0..23 and minutes set by k: distinct within a customer.
            rows.push((i, CONTACTS[k % CONTACTS.len()], day, k as u32, None));
        }
    }
    Ok(rows)
}

fn email(i: usize) -> String {
    format!("onboard-{i}@bench.example.com")
}

/// The time of a row: `day` days before `end`'s day, `slot` minutes past
/// 08:00.
fn at(end: DateTime<Utc>, day: i64, slot: u32) -> DateTime<Utc> {
    end - chrono::Duration::days(day + 1)
        + chrono::Duration::hours(8)
        + chrono::Duration::minutes(i64::from(slot))
}

fn cents_text(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Writes the two files a tenant would bring: customers and interactions.
fn write_files(
    dir: &std::path::Path,
    customers: usize,
    rows: &[Row],
    end: DateTime<Utc>,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let people = dir.join("customers.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&people)?);
    writeln!(f, "email,given_name,family_name,country_code,tags")?;
    for i in 0..customers {
        let p = super::import::person("onboard", i);
        writeln!(
            f,
            "{},Customer {i},Import,{},{}",
            email(i),
            p.country_code,
            p.tags.join(";")
        )?;
    }
    f.flush()?;
    let history = dir.join("interactions.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&history)?);
    writeln!(f, "email,type,occur_time,amount,currency")?;
    for (i, kind, day, slot, cents) in rows {
        writeln!(
            f,
            "{},{kind},{},{},EUR",
            email(*i),
            at(end, *day, *slot).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cents.map(cents_text).unwrap_or_default()
        )?;
    }
    f.flush()?;
    Ok((people, history))
}

/// The same interactions as messages naming customers by id, for the
/// baseline's `COPY`.
fn as_interactions(rows: &[Row], ids: &[Uuid], end: DateTime<Utc>) -> Vec<Interaction> {
    rows.iter()
        .enumerate()
        .map(|(n, (i, kind, day, slot, cents))| Interaction {
            customer: Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::CustomerId(ids[*i].to_string())),
            }),
            r#type: InteractionType::from_str_name(&format!(
                "INTERACTION_TYPE_{}",
                kind.to_uppercase()
            ))
            .map_or(0, |t| t as i32),
            occur_time: Some(timestamp(at(end, *day, *slot))),
            amount: cents.map(|c| Money {
                currency_code: "EUR".into(),
                units: c / 100,
                nanos: ((c % 100) * 10_000_000) as i32,
            }),
            idempotency_key: format!("onboard-copy-{n}"),
            ..Default::default()
        })
        .collect()
}

/// `rapport import` as the command line gives it.
#[derive(Parser)]
enum ImportCommand {
    Import(crate::import::ImportArgs),
}

async fn import_file(
    what: &str,
    file: &std::path::Path,
    stack: &Stack,
    key: &str,
) -> anyhow::Result<crate::import::Totals> {
    let gateway = stack.endpoint("gateway")?;
    let ImportCommand::Import(args) = ImportCommand::try_parse_from([
        "rapport",
        "import",
        what,
        &file.display().to_string(),
        "--gateway",
        &gateway,
        "--api-key",
        key,
    ])
    .context("rapport import arguments")?;
    crate::import::import(&args).await
}

/// The feeds each consumer follows: (producer schema, consumer schema,
/// cursor name).
const FEEDS: [(&str, &str, &str); 9] = [
    ("profile", "interaction", "profile"),
    ("profile", "segmentation", "profile"),
    ("interaction", "segmentation", "interaction"),
    ("interaction", "valuation", "interaction"),
    ("valuation", "segmentation", "valuation"),
    ("profile", "engagement", "profile"),
    ("interaction", "engagement", "interaction"),
    ("segmentation", "engagement", "segmentation"),
    ("valuation", "engagement", "valuation"),
];

/// Waits until every consumer has applied the tenant's feeds up to their
/// heads now (at most `limit`).
async fn caught_up(admin: &PgPool, tenant: Uuid, limit: Duration) -> anyhow::Result<bool> {
    let started = Instant::now();
    loop {
        let mut behind = false;
        for (producer, consumer, source) in FEEDS {
            let head = super::feed_head(admin, producer, tenant).await?;
            let at: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT after_sequence FROM {consumer}.feed_tenant_cursors
                  WHERE tenant_id = $1 AND source = '{source}'"
            )))
            .bind(tenant)
            .fetch_optional(admin)
            .await?;
            if at.unwrap_or(0) < head {
                behind = true;
            }
        }
        if !behind {
            return Ok(true);
        }
        if started.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let customers = sizes.onboard_customers;
    let per_customer = (sizes.onboard_interactions / customers.max(1)).max(1);
    let tenant: Tenant = stack.tenant("bench onboard").await?;
    let admin = stack.admin_pool().await?;
    let dir = tempfile::tempdir()?;
    // Today's midnight (UTC): every interaction before it, and the
    // calibration end of the fits.
    let end = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |d| d.and_utc());
    let rows = histories(customers, per_customer)?;
    let purchases = rows.iter().filter(|r| r.1 == "purchase").count();
    println!(
        "\nonboard: {} customers and {} interactions ({} purchases) from CSV files, through the gateway",
        count(customers as u64),
        count(rows.len() as u64),
        count(purchases as u64)
    );
    let (people, history) = write_files(dir.path(), customers, &rows, end)?;
    let interaction_pool = stack.pool(rapport_interaction::SCHEMA).await?;
    let years: std::collections::BTreeSet<i32> = rows
        .iter()
        .map(|r| chrono::Datelike::year(&at(end, r.2, r.3)))
        .collect();
    for y in years {
        rapport_interaction::store::ensure_partition(&interaction_pool, y).await?;
    }

    // The baseline: the same rows, raw COPY into the same tables.
    let profile_pool = stack.pool(rapport_profile::SCHEMA).await?;
    let copy_customers = super::import::raw_copy(&profile_pool, customers).await?;
    let ids: Vec<Uuid> = (0..customers).map(|_| Uuid::now_v7()).collect();
    let copy_interactions =
        super::ingest::raw_copy(&interaction_pool, &as_interactions(&rows, &ids, end)).await?;
    let baseline = copy_customers + copy_interactions;
    println!(
        "  raw COPY: customers {}, interactions {}",
        secs(copy_customers),
        secs(copy_interactions)
    );

    let gateway = stack.channel("gateway").await?;
    let auth = Auth::gateway(&tenant.key)?;
    let mut valuation = ValuationServiceClient::with_interceptor(gateway.clone(), auth.clone());
    let mut segmentation = SegmentationServiceClient::with_interceptor(gateway, auth);
    let mut phases: Vec<(&str, Duration, String)> = Vec::new();
    let all = Instant::now();

    let started = Instant::now();
    let t = import_file("customers", &people, stack, &tenant.key).await?;
    phases.push((
        "import customers (rapport import, CSV)",
        started.elapsed(),
        format!(
            "{} created, {} rejected",
            count(t.created as u64),
            t.rejected
        ),
    ));
    println!("  customers imported: {}", secs(started.elapsed()));

    let started = Instant::now();
    let t = import_file("interactions", &history, stack, &tenant.key).await?;
    phases.push((
        "import interactions (rapport import, CSV)",
        started.elapsed(),
        format!(
            "{} recorded, {} rejected",
            count(t.created as u64),
            t.rejected
        ),
    ));
    println!("  interactions imported: {}", secs(started.elapsed()));

    let started = Instant::now();
    let done = caught_up(&admin, tenant.id, Duration::from_secs(600)).await?;
    phases.push((
        "every feed consumer caught up",
        started.elapsed(),
        if done {
            "yes".into()
        } else {
            "not within 10 minutes".into()
        },
    ));
    println!("  consumers caught up: {}", secs(started.elapsed()));

    for (kind, name) in [
        (ModelKind::BgNbd, "fit BG/NBD and activate"),
        (ModelKind::GammaGamma, "fit Gamma-Gamma and activate"),
    ] {
        let started = Instant::now();
        let mut request = tonic::Request::new(FitModelRequest {
            kind: kind as i32,
            calibration_end_time: Some(timestamp(end)),
            period_unit: PeriodUnit::Week as i32,
            currency_code: "EUR".into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(600));
        let model = valuation
            .fit_model(request)
            .await
            .context("FitModel")?
            .into_inner()
            .model
            .context("FitModel answered no model")?;
        valuation
            .activate_model(ActivateModelRequest {
                model_id: model.model_id.clone(),
            })
            .await
            .context("ActivateModel")?;
        let params = model
            .parameters
            .iter()
            .map(|p| format!("{} {:.3}", p.name, p.value))
            .collect::<Vec<_>>()
            .join(", ");
        phases.push((
            name,
            started.elapsed(),
            format!("{} customers; {params}", count(model.customer_count as u64)),
        ));
    }

    let started = Instant::now();
    let mut request = tonic::Request::new(ScoreCustomersRequest {
        transaction_model_kind: ModelKind::BgNbd as i32,
        horizon_periods: 52,
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(600));
    let scored = valuation
        .score_customers(request)
        .await
        .context("ScoreCustomers")?
        .into_inner();
    phases.push((
        "score every customer",
        started.elapsed(),
        format!("{} scored", count(scored.scored_customer_count as u64)),
    ));

    let started = Instant::now();
    let done = caught_up(&admin, tenant.id, Duration::from_secs(600)).await?;
    phases.push((
        "values reach segmentation",
        started.elapsed(),
        if done {
            "yes".into()
        } else {
            "not within 10 minutes".into()
        },
    ));

    for (kind, name, rule) in [
        (
            SegmentKind::Dynamic,
            "dynamic segment",
            "purchases >= 2 and clv in top 20% and p_alive >= 0.5",
        ),
        (
            SegmentKind::Snapshot,
            "snapshot segment",
            "purchases >= 1 and p_alive < 0.3",
        ),
    ] {
        let started = Instant::now();
        let segment =
            create_segment(&mut segmentation, format!("onboard {name}"), kind, rule).await?;
        phases.push((
            if kind == SegmentKind::Dynamic {
                "create a dynamic segment"
            } else {
                "create a snapshot segment"
            },
            started.elapsed(),
            format!(
                "{rule}: {} members",
                count(segment.member_count.max(0) as u64)
            ),
        ));
    }
    let total = all.elapsed();
    interaction_pool.close().await;
    profile_pool.close().await;
    admin.close().await;

    let mut t = Table::new(
        format!(
            "A tenant onboarded through the gateway: {} customers and {} interactions from CSV files to segments",
            count(customers as u64),
            count(rows.len() as u64)
        ),
        vec!["phase", "time", "result"],
    );
    for (name, took, what) in &phases {
        t.row(vec![name.to_string(), secs(*took), what.clone()]);
    }
    t.row(vec![
        "time to insight (total)".into(),
        secs(total),
        format!(
            "{:.1}x the raw COPY of the same rows",
            total.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
        ),
    ]);
    t.row(vec![
        "raw COPY of the same rows (baseline)".into(),
        secs(baseline),
        format!(
            "customers {}, interactions {}",
            secs(copy_customers),
            secs(copy_interactions)
        ),
    ]);
    t.print();
    Ok(json!({
        "customers": customers,
        "interactions": rows.len(),
        "purchases": purchases,
        "phases": phases.iter().map(|(n, d, w)| json!({"phase": n, "seconds": d.as_secs_f64(), "result": w})).collect::<Vec<_>>(),
        "total_seconds": total.as_secs_f64(),
        "copy_seconds": baseline.as_secs_f64(),
        "copy_customers_seconds": copy_customers.as_secs_f64(),
        "copy_interactions_seconds": copy_interactions.as_secs_f64(),
    }))
}
