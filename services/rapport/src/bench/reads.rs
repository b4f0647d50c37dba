//! Unary reads at a fixed offered rate (open loop: calls leave on schedule
//! whether or not earlier ones have answered, and each latency counts from
//! its scheduled start), direct to the service and through the gateway.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rapport_proto::rapport::engagement::v1::GetNextBestActionsRequest;
use rapport_proto::rapport::engagement::v1::engagement_service_client::EngagementServiceClient;
use rapport_proto::rapport::interaction::v1::GetCustomerSummaryRequest;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::profile::v1::GetCustomerRequest;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::stack::Stack;
use super::{Auth, Authed, Sizes, Table, millis, percentile};

/// One kind of call the read scenarios offer, with its client.
#[derive(Clone)]
pub enum Call {
    GetCustomer(ProfileServiceClient<Authed>),
    GetCustomerSummary(InteractionServiceClient<Authed>),
    /// GetNextBestActions, storing its decisions unless the flag says preview.
    NextBestActions(EngagementServiceClient<Authed>, bool),
}

impl Call {
    async fn once(&mut self, customer: Uuid) -> Result<(), tonic::Status> {
        match self {
            Call::NextBestActions(c, preview) => c
                .get_next_best_actions(GetNextBestActionsRequest {
                    customer_id: customer.to_string(),
                    limit: 3,
                    preview: *preview,
                    ..Default::default()
                })
                .await
                .map(drop),
            Call::GetCustomer(c) => c
                .get_customer(GetCustomerRequest {
                    customer_id: customer.to_string(),
                })
                .await
                .map(drop),
            Call::GetCustomerSummary(c) => c
                .get_customer_summary(GetCustomerSummaryRequest {
                    customer_id: customer.to_string(),
                    as_of: None,
                })
                .await
                .map(drop),
        }
    }
}

/// What one open-loop run measured.
pub struct Outcome {
    /// Latencies of the calls that succeeded, sorted.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub elapsed: Duration,
}

impl Outcome {
    /// Its latency cells (p50, p90, p99, max, achieved calls/s, errors) and
    /// the same figures as JSON fields.
    pub fn figures(&self) -> (Vec<String>, serde_json::Map<String, Value>) {
        let achieved = self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let (p50, p90, p99) = (
            percentile(&self.latencies, 50.0),
            percentile(&self.latencies, 90.0),
            percentile(&self.latencies, 99.0),
        );
        let max = self.latencies.last().copied().unwrap_or_default();
        let cells = vec![
            millis(p50),
            millis(p90),
            millis(p99),
            millis(max),
            format!("{achieved:.0}"),
            self.errors.to_string(),
        ];
        let json = json!({
            "p50_ms": p50.as_secs_f64() * 1000.0,
            "p90_ms": p90.as_secs_f64() * 1000.0,
            "p99_ms": p99.as_secs_f64() * 1000.0,
            "max_ms": max.as_secs_f64() * 1000.0,
            "achieved_per_second": achieved,
            "errors": self.errors,
        });
        (cells, json.as_object().cloned().unwrap_or_default())
    }
}

/// Offers `rate` calls per second for `seconds`, customers in turn.
pub async fn offer(call: &Call, customers: &[Uuid], rate: u32, seconds: u64) -> Outcome {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let total = u64::from(rate) * seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticks.tick().await;
        let scheduled = start + period.mul_f64(i as f64);
        let mut call = call.clone();
        let customer = customers[(i as usize) % customers.len()];
        let latencies = latencies.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let ok = call.once(customer).await.is_ok();
            let took = scheduled.elapsed();
            if ok {
                if let Ok(mut l) = latencies.lock() {
                    l.push(took);
                }
            } else if let Ok(mut e) = errors.lock() {
                *e += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_unstable();
    let errors = errors.lock().map_or(0, |e| *e);
    Outcome {
        latencies,
        errors,
        elapsed,
    }
}

pub async fn run(stack: &Stack, sizes: &Sizes) -> anyhow::Result<Value> {
    let tenant = stack.tenant("bench reads").await?;
    let gateway = stack.channel("gateway").await?;
    let profile_direct = stack.channel("profile").await?;
    let interaction_direct = stack.channel("interaction").await?;
    let by_key = Auth::gateway(&tenant.key)?;
    let by_token = Auth::direct(tenant.id, &stack.internal_token)?;

    // 500 customers with 20 interactions each: summaries with some history.
    let customers =
        super::ingest::customers_with_history(&gateway, &by_key, "reads", 500, 20).await?;

    let rate = sizes.read_rate;
    let seconds = sizes.read_seconds;
    println!("\nreads: {rate} calls/s offered for {seconds} s per path");
    let paths = [
        (
            "GetCustomer",
            "direct",
            Call::GetCustomer(ProfileServiceClient::with_interceptor(
                profile_direct,
                by_token.clone(),
            )),
        ),
        (
            "GetCustomer",
            "gateway",
            Call::GetCustomer(ProfileServiceClient::with_interceptor(
                gateway.clone(),
                by_key.clone(),
            )),
        ),
        (
            "GetCustomerSummary",
            "direct",
            Call::GetCustomerSummary(InteractionServiceClient::with_interceptor(
                interaction_direct,
                by_token,
            )),
        ),
        (
            "GetCustomerSummary",
            "gateway",
            Call::GetCustomerSummary(InteractionServiceClient::with_interceptor(gateway, by_key)),
        ),
    ];
    let mut table = Table::new(
        format!(
            "Unary reads, {rate} calls/s offered for {seconds} s (latency from each call's scheduled start)"
        ),
        vec![
            "method",
            "path",
            "p50",
            "p90",
            "p99",
            "max",
            "achieved calls/s",
            "errors",
        ],
    );
    let mut out = Vec::new();
    for (method, path, call) in paths {
        // Warm up connections, caches and the planner.
        offer(&call, &customers, rate, 1).await;
        let o = offer(&call, &customers, rate, seconds).await;
        let (cells, mut figures) = o.figures();
        table.row([vec![method.into(), path.into()], cells].concat());
        figures.insert("method".into(), json!(method));
        figures.insert("path".into(), json!(path));
        figures.insert("offered_per_second".into(), json!(rate));
        figures.insert("seconds".into(), json!(seconds));
        out.push(Value::Object(figures));
    }
    table.print();
    Ok(Value::Array(out))
}
