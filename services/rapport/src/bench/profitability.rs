//! Cost to serve at scale, through the gateway: `GetProfitabilityReport`
//! over a whole customer base (the whale curve, deciles, breakdowns and value
//! destroyers), `GetCustomerProfitability` one customer at a time, and the
//! pricing that background re-scoring adds per batch of customers to keep
//! net CLV current. The report is measured computed at call time, computed
//! and kept, and served from what was kept (`max_staleness`).
//!
//! The valuation projection the report reads (customers with their rungs
//! and stages, purchases, and the interactions that cost) is written straight
//! into its schema with set-based SQL; how the service keeps it current from
//! the feeds is measured by the ingest scenario (its valuation consumer now
//! also records every contact). The baseline, measured in the same run, is a
//! plain aggregate of the same rows by customer (what reading them once
//! costs, before any pricing).

use std::time::{Duration, Instant};

use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::interaction::v1::{Channel, InteractionType};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{
    ContactRate, CostModel, GetCustomerProfitabilityRequest, GetProfitabilityReportRequest,
    SetCostModelRequest,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::stack::Stack;
use super::{Auth, Sizes, Table, count, millis, percentile, secs};

fn eur(cents: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    })
}

fn model(effective: chrono::DateTime<chrono::Utc>, call_cents: i64) -> CostModel {
    let rate = |kind: InteractionType, channel: Channel, cents: i64| ContactRate {
        r#type: kind as i32,
        channel: channel as i32,
        cost: eur(cents),
    };
    CostModel {
        effective_time: Some(rapport_kit::convert::timestamp(effective)),
        currency_code: "EUR".into(),
        contact_rates: vec![
            rate(InteractionType::Call, Channel::Unspecified, call_cents),
            rate(InteractionType::Email, Channel::Unspecified, 40),
            rate(InteractionType::SalesVisit, Channel::Field, 6_000),
            rate(InteractionType::CampaignSent, Channel::Email, 1),
        ],
        service_request_cost: eur(400),
        service_request_hour_cost: eur(5),
        complaint_cost: eur(800),
        return_handling_cost: eur(250),
        fixed_cost: eur(25),
        fixed_cost_period_days: 30,
        default_margin_rate_bps: 3_000,
        ..Default::default()
    }
}

/// Writes `n` customers into the valuation projection of `tenant`: three
/// purchases each over the last two years, and two priced interactions
/// each (calls, e-mails, field visits, campaign e-mails, service requests,
/// complaints and returns). Returns the ids of the first 5,000 (a
/// re-scoring batch) and the rows written.
async fn project(pool: &sqlx::PgPool, tenant: Uuid, n: usize) -> anyhow::Result<(Vec<Uuid>, i64)> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE bench_ids ON COMMIT DROP AS
         SELECT o, gen_random_uuid() AS c FROM generate_series(1, $1::int) AS o",
    )
    .bind(n as i32)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, first_seen, first_purchase, ladder_rung, stage)
         SELECT $1, c, now() - (700 - o % 600) * interval '1 day',
                now() - (700 - o % 600) * interval '1 day', (o % 5)::int2, (o % 6)::int2
         FROM bench_ids",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    let purchases = sqlx::query(
        "INSERT INTO purchases (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, currency, amount, margin)
         SELECT $1, gen_random_uuid(), c, c,
                now() - (700 - o % 600 - k * 150) * interval '1 day' + k * interval '1 hour',
                'EUR', (20 + (o * 7 + k * 13) % 400)::numeric + 0.99,
                CASE WHEN (o + k) % 2 = 0 THEN (5 + (o + k) % 100)::numeric END
         FROM bench_ids, generate_series(0, 2) AS k",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let activities = sqlx::query(
        "INSERT INTO activities (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, type, channel, currency, amount, resolve_time)
         SELECT $1, gen_random_uuid(), c, c, t, ty, ch,
                CASE WHEN ty = 2 THEN 'EUR' END, CASE WHEN ty = 2 THEN 15.5 END,
                CASE WHEN ty IN (8, 9) AND (o + k) % 4 <> 0 THEN t + interval '26 hours' END
         FROM (SELECT o, c, k, now() - ((o * 31 + k * 97) % 690) * interval '1 day' AS t,
                      (ARRAY[4, 4, 5, 3, 10, 10, 8, 9, 2, 5])[1 + (o + k * 3) % 10]::int2 AS ty,
                      (ARRAY[4, 5, 6, 5])[1 + (o + k) % 4]::int2 AS ch
               FROM bench_ids, generate_series(0, 1) AS k) AS x",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let sample: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT c FROM bench_ids ORDER BY o LIMIT 5000")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    for table in ["customers", "purchases", "activities"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(pool)
            .await?;
    }
    Ok((sample, (n as u64 + purchases + activities) as i64))
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let n = sizes.profit_customers;
    let tenant = stack.tenant("bench profitability").await?;
    let gateway = stack.channel("gateway").await?;
    let mut client = ValuationServiceClient::with_interceptor(gateway, Auth::gateway(&tenant.key)?)
        .max_decoding_message_size(64 << 20);
    let pool = stack.pool(rapport_valuation::SCHEMA).await?;
    let now = chrono::Utc::now();
    for (effective, call) in [
        (now - chrono::Duration::days(800), 450),
        (now - chrono::Duration::days(180), 600),
    ] {
        client
            .set_cost_model(SetCostModelRequest {
                cost_model: Some(model(effective, call)),
                etag: String::new(),
                request_id: String::new(),
            })
            .await?;
    }
    let started = Instant::now();
    let (sample, rows) = project(&pool, tenant.id, n).await?;
    println!(
        "\nprofitability: {} customers and {} rows written into the valuation projection in {}",
        count(n as u64),
        count(rows as u64),
        secs(started.elapsed())
    );

    // The baseline: every row of the window read once, summed by customer.
    let mut baseline = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let _: Vec<(i64,)> = sqlx::query_as(
            "SELECT count(*) FROM (
                 SELECT customer_id, sum(amount) FROM (
                     SELECT customer_id, amount FROM purchases
                      WHERE tenant_id = $1 AND occur_time >= now() - interval '365 days'
                     UNION ALL
                     SELECT customer_id, amount FROM activities
                      WHERE tenant_id = $1 AND occur_time >= now() - interval '365 days'
                     UNION ALL
                     SELECT customer_id, NULL FROM customers WHERE tenant_id = $1) AS x
                 GROUP BY customer_id) AS y",
        )
        .bind(tenant.id)
        .fetch_all(&pool)
        .await?;
        baseline.push(t.elapsed());
    }
    let mut reports = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = client
            .get_profitability_report(GetProfitabilityReportRequest {
                curve_intervals: 100,
                destroyer_count: 10,
                ..Default::default()
            })
            .await?
            .into_inner()
            .report;
        reports.push(t.elapsed());
        last = r;
    }
    let report = last.ok_or_else(|| anyhow::anyhow!("an empty report"))?;
    anyhow::ensure!(
        report.customer_count == n as i64,
        "the report counted {} customers of {n}",
        report.customer_count
    );
    // The kept report: computed and kept by the first request that accepts
    // an hour-old report, then served from what was kept, whatever its shape.
    let kept_ask = |intervals: i32, destroyers: i32| GetProfitabilityReportRequest {
        curve_intervals: intervals,
        destroyer_count: destroyers,
        max_staleness: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let kept = client
        .get_profitability_report(kept_ask(100, 10))
        .await?
        .into_inner()
        .report
        .ok_or_else(|| anyhow::anyhow!("an empty kept report"))?;
    let keep = t.elapsed();
    let mut served = Vec::new();
    for (intervals, destroyers) in [(100, 10), (1000, 100), (10, 1), (100, 10), (250, 20)] {
        let t = Instant::now();
        let r = client
            .get_profitability_report(kept_ask(intervals, destroyers))
            .await?
            .into_inner()
            .report
            .ok_or_else(|| anyhow::anyhow!("an empty kept report"))?;
        served.push(t.elapsed());
        anyhow::ensure!(
            r.compute_time == kept.compute_time && r.customer_count == n as i64,
            "a report within its max_staleness was not served from the kept one"
        );
        anyhow::ensure!(r.whale_curve.len() == intervals as usize + 1);
    }
    served.sort();
    baseline.sort();
    reports.sort();
    let (b, r) = (baseline[1], reports[1]);
    let mut table = Table::new(
        format!(
            "GetProfitabilityReport through the gateway over {} customers (last 365 days; median of 3)",
            count(n as u64)
        ),
        vec!["what", "took", "vs baseline"],
    );
    table.row(vec![
        "baseline: the same rows summed by customer in SQL".into(),
        secs(b),
        "1.00".into(),
    ]);
    table.row(vec![
        "the report (priced, ranked, whale curve, breakdowns)".into(),
        secs(r),
        format!("{:.2}", r.as_secs_f64() / b.as_secs_f64().max(1e-9)),
    ]);
    table.row(vec![
        "the report computed and kept (first request with max_staleness)".into(),
        secs(keep),
        format!("{:.2}", keep.as_secs_f64() / b.as_secs_f64().max(1e-9)),
    ]);
    let kept_p50 = served[served.len() / 2];
    table.row(vec![
        "the kept report served (max_staleness; 5 shapes, median)".into(),
        millis(kept_p50),
        format!("{:.3}", kept_p50.as_secs_f64() / b.as_secs_f64().max(1e-9)),
    ]);
    table.print();

    // One customer at a time, and the pricing of a re-scoring batch.
    let mut one = Vec::new();
    for id in sample.iter().take(200) {
        let t = Instant::now();
        client
            .get_customer_profitability(GetCustomerProfitabilityRequest {
                customer_id: id.to_string(),
                ..Default::default()
            })
            .await?;
        one.push(t.elapsed());
    }
    one.sort();
    let mut conn = pool.acquire().await?;
    let mut batch = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rapport_valuation::store::profitability::figures(
            &mut conn,
            tenant.id,
            now - chrono::Duration::days(365),
            now,
            "EUR",
            Some(&sample),
        )
        .await?;
        batch.push(t.elapsed());
    }
    batch.sort();
    let mut small = Table::new(
        "Pricing a few customers".to_string(),
        vec!["what", "p50", "p99 / max"],
    );
    small.row(vec![
        "GetCustomerProfitability through the gateway (200 calls)".into(),
        millis(percentile(&one, 0.5)),
        millis(percentile(&one, 0.99)),
    ]);
    small.row(vec![
        "the pricing one re-scoring batch of 5,000 customers adds (5 runs)".into(),
        millis(batch[2]),
        millis(*batch.last().unwrap_or(&Duration::ZERO)),
    ]);
    small.print();
    let peak = report.peak.clone().unwrap_or_default();
    println!(
        "  whale curve: the top {:.1} % of customers earn {:.0} % of the net profit; {} of {} lose money",
        peak.customer_share * 100.0,
        peak.profit_share * 100.0,
        count(report.unprofitable_customers as u64),
        count(n as u64),
    );
    Ok(json!({
        "customers": n,
        "rows": rows,
        "baseline_seconds": b.as_secs_f64(),
        "report_seconds": r.as_secs_f64(),
        "report_vs_baseline": r.as_secs_f64() / b.as_secs_f64().max(1e-9),
        "kept_report_compute_and_keep_seconds": keep.as_secs_f64(),
        "kept_report_served_p50_ms": kept_p50.as_secs_f64() * 1e3,
        "kept_report_served_max_ms": served.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        "customer_p50_ms": percentile(&one, 0.5).as_secs_f64() * 1e3,
        "customer_p99_ms": percentile(&one, 0.99).as_secs_f64() * 1e3,
        "rescore_batch_pricing_ms": batch[2].as_secs_f64() * 1e3,
        "peak_customer_share": peak.customer_share,
        "peak_profit_share": peak.profit_share,
        "unprofitable": report.unprofitable_customers,
    }))
}
