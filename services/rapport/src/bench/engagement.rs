//! The engagement service under load, through the gateway: GetNextBestActions
//! at a fixed offered rate (open loop), storing its decisions and as a
//! preview, and StreamNextBestActions over a whole segment.
//!
//! The projection the service decides from (customers with rungs, stages,
//! CLV, consents and contacts, and the segment's members) is written
//! straight into its schema with set-based SQL, so the figures are the
//! deciding alone; how the service keeps that projection current from the
//! feeds is measured by the ingest scenario (its engagement consumer).

use std::time::Instant;

use futures::StreamExt;
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::engagement::v1::engagement_service_client::EngagementServiceClient;
use rapport_proto::rapport::engagement::v1::{
    ContactChannel, CreateTreatmentRequest, StreamNextBestActionsRequest, Treatment, TreatmentKind,
    treatment,
};
use rapport_proto::rapport::profile::v1::ConsentPurpose;
use serde_json::{Value, json};
use uuid::Uuid;

use super::reads::{Call, offer};
use super::stack::Stack;
use super::{Auth, Sizes, Table, secs};

fn eur(units: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        units,
        nanos: 0,
    })
}

/// Ten treatments over every channel, goal, purpose and value form; the
/// first three target the segment.
fn treatments(segment: Uuid) -> Vec<Treatment> {
    let kinds = [
        TreatmentKind::Offer,
        TreatmentKind::CrossSell,
        TreatmentKind::Upsell,
        TreatmentKind::WinBack,
        TreatmentKind::Welcome,
        TreatmentKind::CheckInCall,
        TreatmentKind::LoyaltyReward,
        TreatmentKind::ServiceRecovery,
        TreatmentKind::Offer,
        TreatmentKind::CrossSell,
    ];
    let channels = [
        ContactChannel::Email,
        ContactChannel::Sms,
        ContactChannel::Push,
        ContactChannel::Phone,
        ContactChannel::FieldVisit,
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| Treatment {
            name: format!("bench treatment {i}"),
            kind: *kind as i32,
            channel: channels[i % channels.len()] as i32,
            ladder_goal: (i % 5) as i32,
            consent_purpose: if i % 2 == 0 {
                ConsentPurpose::Marketing
            } else {
                ConsentPurpose::Service
            } as i32,
            cost_per_contact: eur(1 + (i % 3) as i64),
            value: Some(if i % 3 == 0 {
                treatment::Value::ClvShareBps(500 + 100 * i as i32)
            } else {
                treatment::Value::FixedValue(eur(20 + 10 * i as i64).unwrap_or_default())
            }),
            priority_percent: 50 + 20 * i as i32,
            control_share_bps: if i % 4 == 0 { 1000 } else { 0 },
            target_segment_ids: if i < 3 {
                vec![segment.to_string()]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .collect()
}

/// Writes `n` customers into the engagement projection of `tenant`, every one
/// a member of `segment`: rungs and stages spread over their values, CLV for
/// nine in ten, e-mail marketing consent for half, a phone contact for a
/// third. Returns their ids, in order.
async fn project(
    stack: &Stack,
    tenant: Uuid,
    segment: Uuid,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let pool = stack.pool(rapport_engagement::SCHEMA).await?;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO segments (tenant_id, segment_id, name) VALUES ($1, $2, 'bench audience')",
    )
    .bind(tenant)
    .bind(segment)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, status, ladder_rung, stage, clv_currency, clv_units, clv_nanos, p_alive)
         SELECT $1, c, 'active', (o % 5)::int, (o % 6)::int,
                CASE WHEN o % 10 <> 0 THEN 'EUR' END, CASE WHEN o % 10 <> 0 THEN 50 + o % 900 END,
                CASE WHEN o % 10 <> 0 THEN 0 END, CASE WHEN o % 10 <> 0 THEN 0.5 END
           FROM unnest($2::uuid[]) WITH ORDINALITY AS x(c, o)",
    )
    .bind(tenant)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO memberships (tenant_id, customer_id, segment_id)
         SELECT $1, c, $3 FROM unnest($2::uuid[]) AS c",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(segment)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO consents (tenant_id, customer_id, channel, purpose, status, effective_time)
         SELECT $1, c, 1, 1, 1, now() - interval '30 days'
           FROM unnest($2::uuid[]) WITH ORDINALITY AS x(c, o) WHERE o % 2 = 0",
    )
    .bind(tenant)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO contacts (tenant_id, interaction_id, customer_id, channel, occur_time)
         SELECT $1, gen_random_uuid(), c, 4, now() - interval '2 days'
           FROM unnest($2::uuid[]) WITH ORDINALITY AS x(c, o) WHERE o % 3 = 0",
    )
    .bind(tenant)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for table in ["customers", "memberships", "consents", "contacts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&pool)
            .await?;
    }
    Ok(ids)
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let tenant = stack.tenant("bench engagement").await?;
    let gateway = stack.channel("gateway").await?;
    let by_key = Auth::gateway(&tenant.key)?;
    let mut client = EngagementServiceClient::with_interceptor(gateway.clone(), by_key.clone());
    let segment = Uuid::new_v4();
    let n = sizes.audience;
    let started = Instant::now();
    let customers = project(stack, tenant.id, segment, n).await?;
    println!(
        "\nengagement: {n} customers written into the engagement projection in {}",
        secs(started.elapsed())
    );
    for t in treatments(segment) {
        client
            .create_treatment(CreateTreatmentRequest {
                treatment: Some(t),
                request_id: String::new(),
            })
            .await?;
    }

    let rate = sizes.read_rate;
    let seconds = sizes.read_seconds;
    let mut table = Table::new(
        format!(
            "GetNextBestActions through the gateway, ten treatments, {rate} calls/s offered for {seconds} s (latency from each call's scheduled start)"
        ),
        vec![
            "decisions",
            "p50",
            "p90",
            "p99",
            "max",
            "achieved calls/s",
            "errors",
        ],
    );
    let mut calls = Vec::new();
    for (what, preview) in [("stored", false), ("preview", true)] {
        let call = Call::NextBestActions(
            EngagementServiceClient::with_interceptor(gateway.clone(), by_key.clone()),
            preview,
        );
        offer(&call, &customers, rate, 1).await;
        let o = offer(&call, &customers, rate, seconds).await;
        let (cells, mut figures) = o.figures();
        table.row([vec![what.into()], cells].concat());
        figures.insert("decisions".into(), json!(what));
        figures.insert("offered_per_second".into(), json!(rate));
        figures.insert("seconds".into(), json!(seconds));
        calls.push(Value::Object(figures));
    }
    table.print();

    let mut streams = Table::new(
        format!("StreamNextBestActions through the gateway over a segment of {n} members"),
        vec!["decisions", "customers", "actions", "took", "customers/s"],
    );
    let mut audience = Vec::new();
    for (what, preview) in [("stored", false), ("preview", true)] {
        let started = Instant::now();
        let mut stream = client
            .stream_next_best_actions(StreamNextBestActionsRequest {
                segment_id: segment.to_string(),
                limit_per_customer: 1,
                preview,
                ..Default::default()
            })
            .await?
            .into_inner();
        let (mut decided, mut actions) = (0i64, 0i64);
        while let Some(part) = stream.next().await {
            let part = part?;
            decided += part.customers.len() as i64;
            actions += part
                .customers
                .iter()
                .map(|c| c.actions.len() as i64)
                .sum::<i64>();
        }
        let took = started.elapsed();
        anyhow::ensure!(
            decided == n as i64,
            "the stream decided for {decided} of {n}"
        );
        let rate = decided as f64 / took.as_secs_f64().max(1e-9);
        streams.row(vec![
            what.into(),
            decided.to_string(),
            actions.to_string(),
            secs(took),
            format!("{rate:.0}"),
        ]);
        audience.push(json!({
            "decisions": what,
            "customers": decided,
            "actions": actions,
            "seconds": took.as_secs_f64(),
            "customers_per_second": rate,
        }));
    }
    streams.print();
    Ok(json!({
        "customers": n,
        "treatments": 10,
        "next_best_actions": calls,
        "stream": audience,
    }))
}
