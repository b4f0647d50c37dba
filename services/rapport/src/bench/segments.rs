//! Segments over synthetic customer bases: PreviewSegment, CreateSegment
//! (the first full evaluation) and RefreshSegment through the gateway,
//! each beside hand-written SQL doing the same work on the same data.

use std::time::{Duration, Instant};

use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{
    CreateSegmentRequest, PreviewSegmentRequest, RefreshSegmentRequest, Segment, SegmentKind,
    preview_segment_request,
};
use rapport_segmentation::synthetic::{self, HAND_CONDITION, RULE};
use serde_json::{Value, json};
use uuid::Uuid;

use super::stack::Stack;
use super::{Auth, Sizes, Table, count, millis};

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let gateway = stack.channel("gateway").await?;
    let pool = stack.pool(rapport_segmentation::SCHEMA).await?;
    let mut table = Table::new(
        format!("Segments, rule `{RULE}` (service through the gateway vs hand-written SQL)"),
        vec![
            "customers",
            "step",
            "result",
            "service",
            "hand SQL",
            "ratio",
        ],
    );
    let mut out = Vec::new();
    for &n in &sizes.segment_sizes {
        let tenant = stack.tenant(&format!("bench segments {n}")).await?;
        println!(
            "\nsegments: loading {} synthetic customers",
            count(n as u64)
        );
        let started = Instant::now();
        let events = synthetic::fill(&pool, tenant.id, n).await?;
        let load = started.elapsed();
        let mut client = SegmentationServiceClient::with_interceptor(
            gateway.clone(),
            Auth::gateway(&tenant.key)?,
        );
        let mut steps = Vec::new();
        let mut step = |name: &str, result: String, service: Duration, hand: Duration| {
            table.row(vec![
                count(n as u64),
                name.into(),
                result.clone(),
                millis(service),
                millis(hand),
                ratio(service, hand),
            ]);
            steps.push(json!({
                "step": name,
                "result": result,
                "service_ms": service.as_secs_f64() * 1000.0,
                "hand_sql_ms": hand.as_secs_f64() * 1000.0,
            }));
        };

        // Preview: one warm-up, then the best of three, each way.
        let preview = PreviewSegmentRequest {
            rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                RULE.into(),
            )),
            sample_size: 10,
        };
        let mut service_best = Duration::MAX;
        let mut hand_best = Duration::MAX;
        let mut matched = 0;
        for run in 0..4 {
            let t = Instant::now();
            matched = client
                .preview_segment(preview.clone())
                .await?
                .into_inner()
                .match_count;
            let s = t.elapsed();
            let t = Instant::now();
            let (hand_count, _) = synthetic::hand_preview(&pool, tenant.id, HAND_CONDITION).await?;
            let h = t.elapsed();
            anyhow::ensure!(
                hand_count == matched,
                "preview counted {matched}, the hand-written SQL {hand_count}"
            );
            if run > 0 {
                service_best = service_best.min(s);
                hand_best = hand_best.min(h);
            }
        }
        step(
            "PreviewSegment (count + sample of 10)",
            format!("{matched} match"),
            service_best,
            hand_best,
        );

        // Create: the first full evaluation.
        let t = Instant::now();
        let created = client
            .create_segment(CreateSegmentRequest {
                segment: Some(Segment {
                    name: "Bench".into(),
                    kind: SegmentKind::Dynamic as i32,
                    rule_text: RULE.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .segment
            .unwrap_or_default();
        let s = t.elapsed();
        let hand_segment = Uuid::now_v7();
        let t = Instant::now();
        let (entered, _) =
            synthetic::hand_refresh(&pool, tenant.id, hand_segment, HAND_CONDITION).await?;
        let h = t.elapsed();
        anyhow::ensure!(
            entered == created.member_count,
            "CreateSegment has {} members, the hand-written SQL {entered}",
            created.member_count
        );
        step(
            "CreateSegment (first evaluation)",
            format!("{entered} entered"),
            s,
            h,
        );

        // A day of changes, then a refresh.
        let segment_id = Uuid::parse_str(&created.segment_id)?;
        synthetic::change_members(&pool, tenant.id, segment_id).await?;
        let refresh = RefreshSegmentRequest {
            segment_id: created.segment_id.clone(),
        };
        let t = Instant::now();
        let r = client.refresh_segment(refresh.clone()).await?.into_inner();
        let s = t.elapsed();
        let t = Instant::now();
        let hand = synthetic::hand_refresh(&pool, tenant.id, hand_segment, HAND_CONDITION).await?;
        let h = t.elapsed();
        anyhow::ensure!(
            hand == (r.entered_count, r.exited_count),
            "RefreshSegment: {} in, {} out; the hand-written SQL {hand:?}",
            r.entered_count,
            r.exited_count
        );
        step(
            "RefreshSegment after changes",
            format!("{} in, {} out", r.entered_count, r.exited_count),
            s,
            h,
        );

        // Nothing changed since.
        let t = Instant::now();
        client.refresh_segment(refresh).await?;
        let s = t.elapsed();
        let t = Instant::now();
        synthetic::hand_refresh(&pool, tenant.id, hand_segment, HAND_CONDITION).await?;
        let h = t.elapsed();
        step(
            "RefreshSegment, nothing changed",
            "0 in, 0 out".into(),
            s,
            h,
        );

        out.push(json!({
            "customers": n,
            "purchase_events": events,
            "load_seconds": load.as_secs_f64(),
            "steps": steps,
        }));
    }
    pool.close().await;
    table.print();
    Ok(json!({"rule": RULE, "hand_condition": HAND_CONDITION, "sizes": out}))
}
