//! A noisy neighbour, through the gateway. Tenant B reads (GetSegment) at a
//! steady rate, alone and then while tenant A uses everything its default
//! limits allow (100 calls/s with bursts of 200, 100 open streams): A holds
//! 90 membership watches open, reopens watches about 40 times a second and
//! sends previews over its customers about 60 times a second. Reported: B's
//! latency both times (target: p99 within 2x of alone, no errors), and how
//! A's calls were answered (shed calls are RESOURCE_EXHAUSTED, A's own).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{
    GetSegmentRequest, PreviewSegmentRequest, SegmentKind, WatchMembershipRequest,
    preview_segment_request,
};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use super::stack::Stack;
use super::{Auth, Authed, Sizes, Table, Tally, millis, note, percentile};

type Segments = SegmentationServiceClient<Authed>;

/// B's reads at `rate` per second for `seconds`, open loop: latencies of
/// the answered calls (sorted) and the codes of the failed ones.
async fn reads(
    client: &Segments,
    segment: &str,
    rate: u32,
    seconds: u64,
) -> (Vec<Duration>, Vec<tonic::Code>) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..u64::from(rate) * seconds {
        ticks.tick().await;
        let scheduled = start + period.mul_f64(i as f64);
        let (mut c, latencies, failed) = (client.clone(), latencies.clone(), failed.clone());
        let segment_id = segment.to_string();
        tasks.push(tokio::spawn(async move {
            let mut request = tonic::Request::new(GetSegmentRequest { segment_id });
            request.set_timeout(Duration::from_secs(2));
            match c.get_segment(request).await {
                Ok(_) => {
                    if let Ok(mut l) = latencies.lock() {
                        l.push(scheduled.elapsed());
                    }
                }
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        f.push(e.code());
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let f = failed.lock().map(|f| f.clone()).unwrap_or_default();
    (l, f)
}

/// Tenant A at its limits until `stop`: the codes its calls were answered with.
async fn flood(
    client: Segments,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> BTreeMap<String, u64> {
    use std::sync::atomic::Ordering;
    let codes = Tally::default();
    let watch = || WatchMembershipRequest {
        segment_id: String::new(),
        start: None,
    };
    // 90 watches held open.
    let mut held = Vec::new();
    for _ in 0..90 {
        match client.clone().watch_membership(watch()).await {
            Ok(s) => held.push(s.into_inner()),
            Err(e) => note(&codes, "watch", e.code()),
        }
    }
    let mut tasks = Vec::new();
    // Watches reopened about 40 times a second.
    {
        let (client, stop, codes) = (client.clone(), stop.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(25));
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let code = match client.clone().watch_membership(watch()).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(e) => e.code(),
                };
                note(&codes, "watch", code);
            }
        }));
    }
    // Previews about 60 times a second, open loop.
    {
        let (client, stop, codes) = (client.clone(), stop.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_micros(16_667));
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let (mut c, codes) = (client.clone(), codes.clone());
                calls.push(tokio::spawn(async move {
                    let r = c
                        .preview_segment(PreviewSegmentRequest {
                            rule_definition: Some(
                                preview_segment_request::RuleDefinition::RuleText(
                                    "purchases >= 2 and monetary > 100".into(),
                                ),
                            ),
                            sample_size: 10,
                        })
                        .await;
                    note(
                        &codes,
                        "preview",
                        r.map_or_else(|e| e.code(), |_| tonic::Code::Ok),
                    );
                }));
            }
            for c in calls {
                let _ = c.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(held);
    codes.lock().map(|c| c.clone()).unwrap_or_default()
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let gateway = stack.channel("gateway").await?;
    // A gets a tenant's default limits once its data is loaded.
    let a = stack.tenant("bench noisy neighbour").await?;
    let b = stack.tenant("bench quiet neighbour").await?;
    let a_key = Auth::gateway(&a.key)?;
    let b_key = Auth::gateway(&b.key)?;

    // A: customers with purchases, for previews that do real work.
    let customers = sizes.read_rate.min(2_000) as usize * 4;
    super::ingest::customers_with_history(&gateway, &a_key, "neighbours", customers, 5).await?;
    let mut a_segments = SegmentationServiceClient::with_interceptor(gateway.clone(), a_key);
    super::create_segment(
        &mut a_segments,
        "Buyers".into(),
        SegmentKind::Dynamic,
        "purchases >= 1",
    )
    .await?;
    // B is another client with its own connection, as two tenants' systems
    // would be: the neighbours share the gateway and the services, not a
    // client's HTTP/2 connection.
    let b_gateway = stack.channel("gateway").await?;
    let mut b_segments = SegmentationServiceClient::with_interceptor(b_gateway, b_key);
    let segment = super::create_segment(
        &mut b_segments,
        "Everyone".into(),
        SegmentKind::Dynamic,
        "purchases >= 0",
    )
    .await?
    .segment_id;

    stack.default_limits(a.id).await?;
    // The gateway reads limits again within its key cache's lifetime.
    tokio::time::sleep(rapport_gateway::auth::CACHE_TTL + Duration::from_secs(1)).await;

    let (rate, seconds) = (50, sizes.read_seconds);
    println!(
        "\nneighbours: tenant B reads {rate}/s for {seconds} s, alone, then beside tenant A at its limits"
    );
    reads(&b_segments, &segment, rate, 1).await;
    let (alone, alone_failed) = reads(&b_segments, &segment, rate, seconds).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy = tokio::spawn(flood(a_segments.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (beside, beside_failed) = reads(&b_segments, &segment, rate, seconds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let a_codes = noisy.await.unwrap_or_default();

    let p = |l: &[Duration], q| percentile(l, q);
    let ratio = p(&beside, 99.0).as_secs_f64() / p(&alone, 99.0).as_secs_f64().max(1e-9);
    let mut table = Table::new(
        format!(
            "Tenant B's GetSegment through the gateway, {rate}/s for {seconds} s (2 s deadline)"
        ),
        vec!["tenant A", "p50", "p99", "max", "B's errors"],
    );
    for (label, l, f) in [
        ("idle", &alone, &alone_failed),
        ("at its limits", &beside, &beside_failed),
    ] {
        table.row(vec![
            label.into(),
            millis(p(l, 50.0)),
            millis(p(l, 99.0)),
            millis(l.last().copied().unwrap_or_default()),
            f.len().to_string(),
        ]);
    }
    table.print();
    println!(
        "  B's p99 beside A / alone: {ratio:.2}x (target at most 2x, no errors); A's calls: {}",
        a_codes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(json!({
        "b_rate_per_second": rate,
        "seconds": seconds,
        "alone": {"p50_ms": p(&alone, 50.0).as_secs_f64() * 1000.0, "p99_ms": p(&alone, 99.0).as_secs_f64() * 1000.0, "errors": alone_failed.len()},
        "beside_noisy": {"p50_ms": p(&beside, 50.0).as_secs_f64() * 1000.0, "p99_ms": p(&beside, 99.0).as_secs_f64() * 1000.0, "errors": beside_failed.len()},
        "p99_ratio": ratio,
        "noisy_tenant_answers": a_codes,
    }))
}
