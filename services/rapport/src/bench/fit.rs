//! Model fits over customer bases drawn from the BG/NBD process with
//! Gamma-Gamma spend (known parameters), loaded as purchase interactions and
//! fitted with FitModel through the gateway: the valuation service reads the
//! purchase summaries it keeps (built here by SQL, as the purchases are
//! loaded by COPY past the change feed) and maximises the likelihood. The
//! interaction service's export of the same data is timed beside it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rapport_interaction::{store, synthetic};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{CustomerRef, Money, PeriodUnit, customer_ref};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    ExportSummariesRequest, Interaction, InteractionType,
};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{
    FitModelRequest, FitOptions, Model, ModelKind, ScoreCustomersRequest,
};
use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::synthetic::BgNbdGenerator;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::stack::Stack;
use super::{Auth, Sizes, Table, count, secs};

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

fn euros(value: f64) -> Money {
    let cents = (value * 100.0).round().max(1.0) as i64;
    Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    }
}

/// The purchases of customer `i`, drawn from the process: first purchase
/// `age` weeks before `end`, repeats up to the drawn recency, each repeat
/// worth the drawn mean spend.
fn purchases(
    generator: &BgNbdGenerator,
    rng: &mut StdRng,
    i: usize,
    end: DateTime<Utc>,
) -> Vec<Interaction> {
    let age_weeks = 1.0 + (i % 52) as f64;
    let c = generator.draw(rng, age_weeks);
    let customer = Uuid::now_v7().to_string();
    let first_day = (c.observation.age * 7.0).round() as i64;
    // One day earlier than drawn, so that every purchase (at 10:00 on its
    // day) falls before `end`, the calibration end, and before the clock.
    let first = end - chrono::Duration::days(first_day + 1);
    let x = c.observation.frequency as i64;
    let last_day = (c.observation.recency * 7.0).round() as i64;
    let spend = c.mean_spend.unwrap_or(20.0);
    let mut days = vec![0i64];
    for j in 1..x {
        days.push(last_day * j / x);
    }
    if x > 0 {
        days.push(last_day);
    }
    days.iter()
        .enumerate()
        .map(|(k, day)| Interaction {
            customer: Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::CustomerId(customer.clone())),
            }),
            r#type: InteractionType::Purchase as i32,
            occur_time: Some(timestamp(
                first + chrono::Duration::days(*day) + chrono::Duration::hours(10),
            )),
            amount: Some(euros(spend)),
            idempotency_key: format!("fit-{i}-{k}"),
            ..Default::default()
        })
        .collect()
}

/// Loads `n` customers' purchases for `tenant` by COPY; the number of rows.
async fn load(pool: &PgPool, tenant: Uuid, n: usize, end: DateTime<Utc>) -> anyhow::Result<usize> {
    let generator = BgNbdGenerator::new(TRUTH, Some(SPEND), 1.0 / 7.0)?;
    let mut rng = StdRng::seed_from_u64(2005);
    let now = Utc::now();
    let mut rows = 0usize;
    let mut conn = pool.acquire().await?;
    let mut i = 0usize;
    while i < n {
        let chunk = (n - i).min(50_000);
        let purchases: Vec<Interaction> = (i..i + chunk)
            .flat_map(|k| purchases(&generator, &mut rng, k, end))
            .collect();
        rows += purchases.len();
        let buf = synthetic::copy_buffer(tenant, &purchases, now)
            .map_err(|e| anyhow::anyhow!("generated purchases: {e}"))?;
        let mut copy = conn.copy_in_raw(store::COPY_STATEMENT).await?;
        copy.send(buf).await?;
        copy.finish().await?;
        i += chunk;
    }
    sqlx::query("ANALYZE interactions")
        .execute(&mut *conn)
        .await?;
    Ok(rows)
}

/// The valuation service's projection of the purchases loaded by COPY
/// (which bypasses the change feed): its purchases and the kept summaries a
/// fit reads, built by the same statements a repair uses. Keeping them
/// current as purchases arrive on the feed is measured by the ingestion
/// scenario.
async fn summarise(stack: &Stack, tenant: Uuid) -> anyhow::Result<()> {
    let admin = stack.admin_pool().await?;
    let (v, i) = (
        rapport_valuation::SCHEMA.schema,
        rapport_interaction::SCHEMA.schema,
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {v}.purchases (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, currency, amount, margin)
         SELECT tenant_id, interaction_id, customer_id, original_customer_id, occur_time,
                currency, amount, margin
         FROM {i}.interactions WHERE tenant_id = $1 AND type = 1"
    )))
    .bind(tenant)
    .execute(&admin)
    .await?;
    admin.close().await;
    let pool = stack.pool(rapport_valuation::SCHEMA).await?;
    let mut tx = pool.begin().await?;
    rapport_valuation::store::summaries::rebuild_tenant(&mut tx, tenant).await?;
    tx.commit().await?;
    // As autovacuum would have left a table kept current over time.
    sqlx::query("VACUUM ANALYZE purchase_summaries")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

fn params(m: &Model) -> String {
    m.parameters
        .iter()
        .map(|p| format!("{} {:.3}", p.name, p.value))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let gateway = stack.channel("gateway").await?;
    let direct = stack.channel("interaction").await?;
    let pool = stack.pool(rapport_interaction::SCHEMA).await?;
    // Today's midnight (UTC): the calibration end may not be after the clock.
    let end = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |d| d.and_utc());
    let year = chrono::Datelike::year(&end);
    for y in year - 2..=year {
        store::ensure_partition(&pool, y).await?;
    }
    let mut table = Table::new(
        format!(
            "FitModel through the gateway (from the purchase summaries valuation keeps; the export alone beside it); data drawn with BG/NBD r {} alpha {} a {} b {}, Gamma-Gamma p {} q {} gamma {}",
            TRUTH.r, TRUTH.alpha, TRUTH.a, TRUTH.b, SPEND.p, SPEND.q, SPEND.gamma
        ),
        vec![
            "customers",
            "model",
            "FitModel",
            "ExportSummaries (columns) alone, direct",
            "converged",
            "parameters",
        ],
    );
    let mut out = Vec::new();
    for &n in &sizes.fit_sizes {
        let tenant = stack.tenant(&format!("bench fit {n}")).await?;
        println!("\nfit: loading {} customers' purchases", count(n as u64));
        let started = Instant::now();
        let rows = load(&pool, tenant.id, n, end).await?;
        let load_time = started.elapsed();
        let started = Instant::now();
        summarise(stack, tenant.id).await?;
        let summarise_time = started.elapsed();
        println!(
            "fit: {} purchases loaded in {}, summarised for valuation in {}",
            count(rows as u64),
            secs(load_time),
            secs(summarise_time)
        );

        // The export alone, direct: the part of FitModel spent reading.
        let mut export = InteractionServiceClient::with_interceptor(
            direct.clone(),
            Auth::direct(tenant.id, &stack.internal_token)?,
        )
        .max_decoding_message_size(64 << 20);
        let started = Instant::now();
        let mut stream = export
            .export_summaries(ExportSummariesRequest {
                calibration_end_time: Some(timestamp(end)),
                period_unit: PeriodUnit::Week as i32,
                holdout_end_time: None,
                currency_code: "EUR".into(),
                restriction: None,
                with_opportunities: false,
                columnar: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut exported = 0usize;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            exported += msg.summaries.len() + msg.columns.map_or(0, |c| c.frequency.len());
        }
        let export_time = started.elapsed();

        let mut client =
            ValuationServiceClient::with_interceptor(gateway.clone(), Auth::gateway(&tenant.key)?);
        let mut fits = Vec::new();
        for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
            let mut request = tonic::Request::new(FitModelRequest {
                kind: kind as i32,
                calibration_end_time: Some(timestamp(end)),
                period_unit: PeriodUnit::Week as i32,
                currency_code: "EUR".into(),
                options: Some(FitOptions {
                    activate_on_success: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(600));
            let started = Instant::now();
            let model = client
                .fit_model(request)
                .await?
                .into_inner()
                .model
                .unwrap_or_default();
            let took = started.elapsed();
            let name = match kind {
                ModelKind::BgNbd => "BG/NBD",
                _ => "Gamma-Gamma",
            };
            table.row(vec![
                count(n as u64),
                name.into(),
                secs(took),
                secs(export_time),
                model.converged.to_string(),
                params(&model),
            ]);
            fits.push(json!({
                "model": name,
                "seconds": took.as_secs_f64(),
                "customers_in_fit": model.customer_count,
                "converged": model.converged,
                "iterations": model.iterations,
                "log_likelihood": model.log_likelihood,
                "parameters": model.parameters.iter().map(|p| json!({"name": p.name, "value": p.value})).collect::<Vec<_>>(),
            }));
        }
        // Scoring every customer with the two models just activated.
        let mut request = tonic::Request::new(ScoreCustomersRequest::default());
        request.set_timeout(Duration::from_secs(600));
        let started = Instant::now();
        let scored = client.score_customers(request).await?.into_inner();
        let score_time = started.elapsed();
        println!(
            "fit: ScoreCustomers scored {} customers in {}",
            count(scored.scored_customer_count as u64),
            secs(score_time)
        );
        out.push(json!({
            "score_seconds": score_time.as_secs_f64(),
            "scored_customers": scored.scored_customer_count,
            "customers": n,
            "purchases": rows,
            "load_seconds": load_time.as_secs_f64(),
            "summarise_seconds": summarise_time.as_secs_f64(),
            "export_seconds": export_time.as_secs_f64(),
            "exported_summaries": exported,
            "fits": fits,
        }));
    }
    pool.close().await;
    table.print();
    Ok(json!({
        "truth": {"r": TRUTH.r, "alpha": TRUTH.alpha, "a": TRUTH.a, "b": TRUTH.b,
                  "p": SPEND.p, "q": SPEND.q, "gamma": SPEND.gamma},
        "sizes": out,
    }))
}
