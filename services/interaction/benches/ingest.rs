//! Ingestion and export benchmark of the interaction service.
//!
//! 1. Builds N interactions (default 1,000,000; `RAPPORT_BENCH_INTERACTIONS`)
//!    for N/10 customers: purchases with line items, calls, e-mails, web
//!    visits, each with an idempotency key.
//! 2. Writes the same rows with one raw `COPY` into the interactions table
//!    (the baseline), then empties the table.
//! 3. Streams them through `RecordInteractions` over real gRPC to the service
//!    running in-process (validation, hashing, idempotency keys, COPY and
//!    feed events included), and prints both rates and their ratio.
//! 4. Loads M customers (default 1,000,000; `RAPPORT_BENCH_EXPORT_CUSTOMERS`,
//!    0 to skip) with three purchases each and times `ExportSummaries` over
//!    all of them.
//!
//! Runs on a throwaway PostgreSQL (`RAPPORT_TEST_DATABASE_URL`, or one the
//! test kit starts). `cargo bench -p rapport-interaction`.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use rapport_interaction::store;
use rapport_interaction::synthetic::{self, base, eur};
use rapport_proto::rapport::common::v1::{CustomerRef, PeriodUnit, customer_ref};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    ExportSummariesRequest, Interaction, InteractionType, RecordInteractionsRequest,
};
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = env_usize("RAPPORT_BENCH_INTERACTIONS", 1_000_000);
    let export_customers = env_usize("RAPPORT_BENCH_EXPORT_CUSTOMERS", 1_000_000);
    let interaction = rapport_testkit::service!(rapport_interaction);
    let db = rapport_testkit::database().await;
    interaction.migrate(&db).await?;
    let pool = rapport_kit::db::connect(&db.url, rapport_interaction::SCHEMA, 4).await?;
    for year in 2022..=2026 {
        store::ensure_partition(&pool, year).await?;
    }

    println!(
        "building {n} interactions for {} customers",
        (n / 10).max(1)
    );
    let customers: Vec<Uuid> = (0..(n / 10).max(1)).map(|_| Uuid::new_v4()).collect();
    let interactions: Vec<Interaction> = (0..n)
        .map(|k| synthetic::interaction(k, &customers, "bench"))
        .collect();

    // The baseline: the same rows, one raw COPY.
    let now = Utc::now();
    let raw_tenant = Uuid::new_v4();
    let buf = synthetic::copy_buffer(raw_tenant, &interactions, now)?;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn.copy_in_raw(store::COPY_STATEMENT).await?;
    copy.send(buf).await?;
    let copied = copy.finish().await?;
    let raw_time = started.elapsed();
    assert_eq!(copied as usize, n);
    sqlx::query("TRUNCATE interactions")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CHECKPOINT").execute(&mut *conn).await.ok();
    drop(conn);
    let raw_rate = rate(n, raw_time);
    println!(
        "raw COPY:            {n} rows in {:.2} s = {raw_rate:.0} interactions/s",
        raw_time.as_secs_f64()
    );

    // The service, in-process, over real gRPC.
    let running = interaction
        .serve(rapport_testkit::service_config(&db))
        .await;
    let channel = rapport_testkit::channel(&running).await;
    let mut client = InteractionServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let tenant = Uuid::new_v4();
    let messages: Vec<RecordInteractionsRequest> = interactions
        .chunks(1000)
        .map(|c| RecordInteractionsRequest {
            interactions: c.to_vec(),
        })
        .collect();
    drop(interactions);
    let started = Instant::now();
    let answer = client
        .record_interactions(rapport_testkit::for_tenant(
            tenant,
            futures::stream::iter(messages),
        ))
        .await?
        .into_inner();
    let grpc_time = started.elapsed();
    assert_eq!(
        answer.accepted_count as usize,
        n,
        "{:?}",
        answer.rejections.first()
    );
    let grpc_rate = rate(n, grpc_time);
    println!(
        "RecordInteractions:  {n} interactions in {:.2} s = {grpc_rate:.0} interactions/s",
        grpc_time.as_secs_f64()
    );
    println!(
        "ratio to raw COPY:   {:.2} (target >= 0.50); target >= 20000/s: {}",
        grpc_rate / raw_rate,
        if grpc_rate >= 20_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );

    if export_customers > 0 {
        let export_tenant = Uuid::new_v4();
        println!("loading {export_customers} customers with 3 purchases each for the export");
        let mut loaded = 0usize;
        let batch = 100_000usize;
        let mut conn = pool.acquire().await?;
        while loaded < export_customers {
            let count = batch.min(export_customers - loaded);
            let mut rows = Vec::with_capacity(count * 3);
            for c in 0..count {
                let customer = Uuid::new_v4();
                for p in 0..3usize {
                    let k = (loaded + c) * 3 + p;
                    rows.push(Interaction {
                        customer: Some(CustomerRef {
                            r#ref: Some(customer_ref::Ref::CustomerId(customer.to_string())),
                        }),
                        r#type: InteractionType::Purchase as i32,
                        occur_time: Some(rapport_kit::convert::timestamp(
                            base()
                                + chrono::Duration::seconds(
                                    ((k as i64) * 104_729) % (2 * 365 * 86_400),
                                ),
                        )),
                        amount: Some(eur(10 + (k % 90) as i64, 0)),
                        margin: Some(eur(3, 0)),
                        ..Default::default()
                    });
                }
            }
            let buf = synthetic::copy_buffer(export_tenant, &rows, now)?;
            let mut copy = conn.copy_in_raw(store::COPY_STATEMENT).await?;
            copy.send(buf).await?;
            copy.finish().await?;
            loaded += count;
        }
        sqlx::query("VACUUM ANALYZE interactions")
            .execute(&mut *conn)
            .await?;
        drop(conn);
        let started = Instant::now();
        let mut stream = client
            .export_summaries(rapport_testkit::for_tenant(
                export_tenant,
                ExportSummariesRequest {
                    calibration_end_time: Some(rapport_kit::convert::timestamp(
                        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
                            .single()
                            .unwrap_or_default(),
                    )),
                    period_unit: PeriodUnit::Week as i32,
                    holdout_end_time: None,
                    currency_code: "EUR".into(),
                    restriction: None,
                    with_opportunities: false,
                    columnar: false,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        let mut summaries = 0usize;
        while let Some(msg) = stream.next().await {
            summaries += msg?.summaries.len();
        }
        let export_time = started.elapsed();
        assert_eq!(summaries, export_customers);
        println!(
            "ExportSummaries:     {summaries} customers in {:.2} s = {:.0} summaries/s (target < 10 s: {})",
            export_time.as_secs_f64(),
            rate(summaries, export_time),
            if export_time < Duration::from_secs(10) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    running.stop().await;
    Ok(())
}
