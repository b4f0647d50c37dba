//! Freshness: how long after a call is acknowledged its effect reaches a
//! client watching a segment. Purchases of customers that have never bought
//! arrive at a steady offered rate through the gateway (small
//! `RecordInteractions` calls, open loop); each makes its customer enter a
//! dynamic segment `purchases >= 1`, and a `WatchMembership` stream through
//! the gateway sees it enter. The lag of a customer is the time from its
//! call's acknowledgement to its `entered` change, as the client sees both.
//!
//! Run a second time while another tenant ingests a bulk load, it shows what
//! a tenant's freshness costs when someone else's backlog is on the feeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, Money, customer_ref,
};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Channel, Initiator, Interaction, InteractionType, RecordInteractionsRequest,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    ResolveIdentitiesRequest, ResolveIdentityRequest, resolve_identities_result,
};
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{
    MembershipChangeType, SegmentKind, WatchMembershipRequest,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::stack::{Stack, Tenant};
use super::{Auth, Table, count, create_segment, millis, percentile};

/// Interactions per call.
const PER_CALL: usize = 20;

/// Runs the freshness measurement at `rate` interactions per second for
/// `seconds`, in a tenant of its own; with `backlog`, while another tenant
/// records that many interactions in one stream, as fast as it can.
pub async fn run(
    stack: &Stack,
    rate: usize,
    seconds: u64,
    backlog: Option<usize>,
) -> anyhow::Result<Value> {
    let tenant: Tenant = stack
        .tenant(if backlog.is_some() {
            "bench freshness beside a backlog"
        } else {
            "bench freshness"
        })
        .await?;
    let gateway = stack.channel("gateway").await?;
    let auth = Auth::gateway(&tenant.key)?;
    let mut profile = ProfileServiceClient::with_interceptor(gateway.clone(), auth.clone());
    let interactions = InteractionServiceClient::with_interceptor(gateway.clone(), auth.clone());
    let mut segments = SegmentationServiceClient::with_interceptor(gateway, auth);
    let n = rate * seconds as usize;
    println!(
        "\nfreshness: {} interactions at {rate}/s offered, each a first purchase; lag to WatchMembership{}",
        count(n as u64),
        backlog.map_or(String::new(), |b| format!(
            ", while another tenant records {}",
            count(b as u64)
        ))
    );

    // Customers that have never bought, created in bulk.
    let mut customers: Vec<Uuid> = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let answer = profile
            .resolve_identities(ResolveIdentitiesRequest {
                requests: chunk
                    .iter()
                    .map(|i| ResolveIdentityRequest {
                        identifiers: vec![Identifier {
                            kind: IdentifierKind::Email as i32,
                            system: String::new(),
                            value: format!("fresh-{i}@bench.example.com"),
                        }],
                        traits: None,
                        lookup_only: false,
                    })
                    .collect(),
            })
            .await
            .context("ResolveIdentities")?
            .into_inner();
        for r in answer.results {
            let Some(resolve_identities_result::Result::Resolved(r)) = r.result else {
                anyhow::bail!("ResolveIdentities did not resolve a new e-mail: {r:?}");
            };
            let id = r.customer.map(|c| c.customer_id).unwrap_or_default();
            customers.push(Uuid::parse_str(&id)?);
        }
    }
    let segment = create_segment(
        &mut segments,
        "bought at least once".into(),
        SegmentKind::Dynamic,
        "purchases >= 1",
    )
    .await?;

    // The watcher: when each customer was seen entering.
    let mut watch = segments
        .watch_membership(WatchMembershipRequest {
            segment_id: segment.segment_id.clone(),
            start: None,
        })
        .await
        .context("WatchMembership")?
        .into_inner();
    let seen: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let seen_by_watcher = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(m)) = watch.next().await {
            let Some(change) = m.change else { continue };
            if change.r#type != MembershipChangeType::Entered as i32 {
                continue;
            }
            if let (Ok(c), Ok(mut seen)) =
                (Uuid::parse_str(&change.customer_id), seen_by_watcher.lock())
            {
                seen.entry(c).or_insert_with(Instant::now);
            }
        }
    });
    // Another tenant's bulk load, under way before the measured load starts
    // (its customers are created first, then one stream of interactions).
    let busy = match backlog {
        Some(b) => {
            let other = stack.tenant("bench backlog").await?;
            let gateway = stack.channel("gateway").await?;
            let auth = Auth::gateway(&other.key)?;
            let customers = (b / 200).max(1);
            let each = b.div_ceil(customers);
            let load = tokio::spawn(async move {
                super::ingest::customers_with_history(&gateway, &auth, "backlog", customers, each)
                    .await
                    .map(|_| ())
            });
            tokio::time::sleep(Duration::from_secs(3)).await;
            Some(load)
        }
        None => None,
    };
    // Let the stream settle before the load starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The load: one call every PER_CALL / rate seconds, open loop.
    let acked: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let interval = Duration::from_secs_f64(PER_CALL as f64 / rate as f64);
    let start = Instant::now();
    let now = chrono::Utc::now();
    let mut calls = Vec::new();
    let mut failures = 0usize;
    for (k, chunk) in customers.chunks(PER_CALL).enumerate() {
        let due = start + interval * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let chunk: Vec<Uuid> = chunk.to_vec();
        let mut client = interactions.clone();
        let acked = acked.clone();
        calls.push(tokio::spawn(async move {
            let items: Vec<Interaction> = chunk
                .iter()
                .map(|c| Interaction {
                    customer: Some(CustomerRef {
                        r#ref: Some(customer_ref::Ref::CustomerId(c.to_string())),
                    }),
                    r#type: InteractionType::Purchase as i32,
                    occur_time: Some(rapport_kit::convert::timestamp(now)),
                    channel: Channel::Web as i32,
                    initiator: Initiator::Customer as i32,
                    amount: Some(Money {
                        currency_code: "EUR".into(),
                        units: 25,
                        nanos: 500_000_000,
                    }),
                    idempotency_key: format!("fresh-{c}"),
                    ..Default::default()
                })
                .collect();
            let answer = client
                .record_interactions(futures::stream::iter([RecordInteractionsRequest {
                    interactions: items,
                }]))
                .await;
            let at = Instant::now();
            match answer {
                Ok(a) if a.get_ref().accepted_count as usize == chunk.len() => {
                    if let Ok(mut acked) = acked.lock() {
                        for c in chunk {
                            acked.insert(c, at);
                        }
                    }
                    None
                }
                Ok(a) => Some(format!(
                    "{} of {} accepted",
                    a.get_ref().accepted_count,
                    chunk.len()
                )),
                Err(s) => Some(format!("{:?}", s.code())),
            }
        }));
    }
    // Why calls failed: the status code (or partial acceptance), counted.
    let mut why: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for c in calls {
        if let Some(reason) = c.await.unwrap_or_else(|e| Some(format!("task: {e}"))) {
            failures += 1;
            *why.entry(reason).or_default() += 1;
        }
    }
    let offered_for = start.elapsed();
    // Wait for the last entries (at most 30 s).
    let waiting = Instant::now();
    loop {
        let done = {
            let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let acked = acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            acked.keys().all(|c| seen.contains_key(c))
        };
        if done || waiting.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    if let Some(load) = busy {
        load.await.context("the backlog tenant's load")??;
    }
    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let acked = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut lags: Vec<Duration> = acked
        .iter()
        .filter_map(|(c, at)| seen.get(c).map(|s| s.saturating_duration_since(*at)))
        .collect();
    lags.sort();
    let missing = acked.len() - lags.len();
    let (p50, p99, max) = (
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags.last().copied().unwrap_or_default(),
    );
    let achieved = acked.len() as f64 / offered_for.as_secs_f64().max(1e-9);
    let mut t = Table::new(
        format!(
            "Freshness: acknowledgement of a first purchase to its WatchMembership entry, {rate} interactions/s offered for {seconds} s (calls of {PER_CALL}, through the gateway){}",
            backlog.map_or(String::new(), |b| format!(
                ", while another tenant records {} interactions",
                count(b as u64)
            ))
        ),
        vec![
            "acknowledged",
            "achieved/s",
            "p50 lag",
            "p99 lag",
            "max lag",
            "never seen",
            "failed calls",
        ],
    );
    t.row(vec![
        count(acked.len() as u64),
        format!("{achieved:.0}"),
        millis(p50),
        millis(p99),
        millis(max),
        count(missing as u64),
        if why.is_empty() {
            "0".into()
        } else {
            why.iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    ]);
    t.print();
    Ok(json!({
        "offered_per_second": rate,
        "seconds": seconds,
        "beside_backlog_of": backlog,
        "acknowledged": acked.len(),
        "achieved_per_second": achieved,
        "lag_p50_ms": p50.as_secs_f64() * 1000.0,
        "lag_p99_ms": p99.as_secs_f64() * 1000.0,
        "lag_max_ms": max.as_secs_f64() * 1000.0,
        "never_seen": missing,
        "failed_calls": failures,
        "failed_calls_by_reason": why,
    }))
}
