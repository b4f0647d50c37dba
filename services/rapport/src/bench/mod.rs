//! `rapport bench`: the platform measured end to end on this machine.
//!
//! Starts a database of its own (an embedded throwaway PostgreSQL, or a new
//! database on the server of `--database-url`, dropped afterwards) and every
//! service as its own `rapport serve` process, then runs the scenarios:
//!
//! * `ingest` — interactions through `RecordInteractions`, via the gateway
//!   and direct, beside a raw `COPY` of the same rows in the same run, the
//!   feed consumers' pace meanwhile, and freshness: at a steady offered
//!   rate, the lag from a call's acknowledgement to the `WatchMembership`
//!   change it causes;
//! * `reads` — unary reads at a fixed offered rate, direct and via the
//!   gateway: latency percentiles and achieved throughput;
//! * `segments` — PreviewSegment, CreateSegment (first evaluation) and
//!   RefreshSegment over synthetic customer bases, beside hand-written SQL;
//! * `fit` — FitModel (BG/NBD and Gamma-Gamma) over customer bases drawn from
//!   the BG/NBD process, exported from the interaction service;
//! * `import` — ImportCustomers direct and through the gateway beside a raw
//!   `COPY` of the same rows, CreateCustomer with 16 in flight, and
//!   interaction streams of new customers beside known ones;
//! * `onboard` — a tenant from empty to segments through the gateway: its
//!   customers and interactions imported from CSV files, every consumer
//!   caught up, models fitted, customers scored, segments created, beside a
//!   raw `COPY` of the same rows;
//!
//! and the resident memory of every service at rest and at its peak in each
//! scenario. Each scenario prints a table; all figures go to a JSON file.

mod engagement;
mod fit;
mod freshness;
mod import;
mod ingest;
mod neighbours;
mod onboard;
mod profitability;
mod reads;
mod segments;
mod soak;
mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{CreateSegmentRequest, Segment, SegmentKind};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use stack::{MemorySampler, Stack};

/// In the order they run: ingestion and onboarding last, as the feed
/// consumers may still be applying their events when they end.
const SCENARIOS: [&str; 9] = [
    "reads",
    "neighbours",
    "segments",
    "fit",
    "import",
    "ingest",
    "onboard",
    "engagement",
    "profitability",
];

/// Scenarios run only when named: `soak` (mixed load with faults).
const ON_REQUEST: [&str; 1] = ["soak"];

/// Every scenario that can be named: the default ones, then [`ON_REQUEST`].
fn named() -> impl Iterator<Item = &'static str> {
    SCENARIOS.into_iter().chain(ON_REQUEST)
}

/// Options of `rapport bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run: reads, neighbours, segments, fit, import, ingest, onboard,
    /// engagement, profitability (default: all of these), and soak (mixed load
    /// with faults and an audit; only when named).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(named()))]
    scenarios: Vec<String>,
    /// Minutes of mixed load in the soak scenario.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Small sizes, for a smoke run in seconds (the figures mean little).
    #[arg(long)]
    quick: bool,
    /// Folder for the JSON results (`bench-<time>.json`).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Run on this PostgreSQL server instead of an embedded one: the bench
    /// creates a database of its own there and drops it at the end.
    #[arg(long, env = "RAPPORT_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Interactions to ingest (default 1,000,000; quick 5,000).
    #[arg(long)]
    interactions: Option<usize>,
    /// Customer base sizes for the segment scenario (default 100000,1000000).
    #[arg(long, value_delimiter = ',')]
    segment_sizes: Vec<usize>,
    /// Customer base sizes for the fit scenario (default 100000,1000000).
    #[arg(long, value_delimiter = ',')]
    fit_sizes: Vec<usize>,
    /// Customers to import in the import scenario (default 100,000; quick 2,000).
    #[arg(long)]
    import_customers: Option<usize>,
    /// Interactions of new (and of known) customers in the import scenario
    /// (default 20,000; quick 1,000).
    #[arg(long)]
    new_customer_interactions: Option<usize>,
    /// Offered rate of the read scenario, calls per second (default 500).
    #[arg(long)]
    read_rate: Option<u32>,
    /// Duration of each read run, seconds (default 10; quick 2).
    #[arg(long)]
    read_seconds: Option<u64>,
    /// Interactions per second offered in the freshness run (default 2,000;
    /// quick 200).
    #[arg(long)]
    freshness_rate: Option<usize>,
    /// Duration of the freshness run, seconds (default 10; quick 2).
    #[arg(long)]
    freshness_seconds: Option<u64>,
    /// Customers the onboarded tenant brings (default 100,000; quick 1,000).
    #[arg(long)]
    onboard_customers: Option<usize>,
    /// Interactions the onboarded tenant brings (default 1,000,000; quick
    /// 10,000).
    #[arg(long)]
    onboard_interactions: Option<usize>,
    /// Members of the segment the engagement scenario streams next best
    /// actions for (default 100,000; quick 2,000).
    #[arg(long)]
    audience: Option<usize>,
    /// Customers of the profitability scenario (default 1,000,000; quick
    /// 5,000).
    #[arg(long)]
    profit_customers: Option<usize>,
}

/// The sizes a run uses.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub interactions: usize,
    pub segment_sizes: Vec<usize>,
    pub fit_sizes: Vec<usize>,
    pub read_rate: u32,
    pub read_seconds: u64,
    pub import_customers: usize,
    pub new_customer_interactions: usize,
    pub freshness_rate: usize,
    pub freshness_seconds: u64,
    pub onboard_customers: usize,
    pub onboard_interactions: usize,
    pub audience: usize,
    pub profit_customers: usize,
}

impl BenchArgs {
    fn sizes(&self) -> Sizes {
        let or = |given: &Vec<usize>, quick: usize, full: &[usize]| {
            if !given.is_empty() {
                given.clone()
            } else if self.quick {
                vec![quick]
            } else {
                full.to_vec()
            }
        };
        Sizes {
            interactions: self
                .interactions
                .unwrap_or(if self.quick { 5_000 } else { 1_000_000 }),
            segment_sizes: or(&self.segment_sizes, 2_000, &[100_000, 1_000_000]),
            fit_sizes: or(&self.fit_sizes, 2_000, &[100_000, 1_000_000]),
            read_rate: self.read_rate.unwrap_or(if self.quick { 200 } else { 500 }),
            read_seconds: self.read_seconds.unwrap_or(if self.quick { 2 } else { 10 }),
            import_customers: self.import_customers.unwrap_or(if self.quick {
                2_000
            } else {
                100_000
            }),
            new_customer_interactions: self.new_customer_interactions.unwrap_or(if self.quick {
                1_000
            } else {
                20_000
            }),
            freshness_rate: self
                .freshness_rate
                .unwrap_or(if self.quick { 200 } else { 2_000 }),
            freshness_seconds: self
                .freshness_seconds
                .unwrap_or(if self.quick { 2 } else { 10 }),
            onboard_customers: self.onboard_customers.unwrap_or(if self.quick {
                1_000
            } else {
                100_000
            }),
            onboard_interactions: self.onboard_interactions.unwrap_or(if self.quick {
                10_000
            } else {
                1_000_000
            }),
            audience: self
                .audience
                .unwrap_or(if self.quick { 2_000 } else { 100_000 }),
            profit_customers: self.profit_customers.unwrap_or(if self.quick {
                5_000
            } else {
                1_000_000
            }),
        }
    }
}

/// Credentials a client presents: an API key to the gateway, or the tenant
/// and internal credential on a service's own port.
#[derive(Clone)]
pub enum Auth {
    Gateway(MetadataValue<Ascii>),
    Direct {
        tenant: MetadataValue<Ascii>,
        token: MetadataValue<Ascii>,
    },
}

impl Auth {
    fn gateway(key: &str) -> anyhow::Result<Auth> {
        Ok(Auth::Gateway(format!("Bearer {key}").parse()?))
    }
    fn direct(tenant: Uuid, token: &str) -> anyhow::Result<Auth> {
        Ok(Auth::Direct {
            tenant: tenant.to_string().parse()?,
            token: token.parse()?,
        })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        match self {
            Auth::Gateway(bearer) => {
                md.insert("authorization", bearer.clone());
            }
            Auth::Direct { tenant, token } => {
                md.insert(rapport_kit::context::TENANT_HEADER, tenant.clone());
                md.insert(rapport_kit::context::INTERNAL_TOKEN_HEADER, token.clone());
                md.insert(
                    rapport_kit::context::PRINCIPAL_HEADER,
                    MetadataValue::from_static("rapport-bench"),
                );
            }
        }
        Ok(req)
    }
}

/// A channel with credentials.
pub type Authed = InterceptedService<Channel, Auth>;

/// Calls answered, by what and code (`"watch Ok"`, `"FitModel Unavailable"`).
pub type Tally = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Counts one answer of `what` with `code` in `tally`.
pub fn note(tally: &Tally, what: &str, code: tonic::Code) {
    if let Ok(mut t) = tally.lock() {
        *t.entry(format!("{what} {code:?}")).or_default() += 1;
    }
}

/// One scenario's printed table.
pub struct Table {
    pub title: String,
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: Vec<&'static str>) -> Table {
        Table {
            title: title.into(),
            header,
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        println!("\n{}", self.title);
        let line = |cells: Vec<String>| {
            let parts: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect();
            println!("  {}", parts.join("  ").trim_end());
        };
        line(self.header.iter().map(|h| h.to_string()).collect());
        line(widths.iter().map(|w| "-".repeat(*w)).collect());
        for r in &self.rows {
            line(r.clone());
        }
    }
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Creates segment `name` of `kind` with `rule` through `client`.
async fn create_segment(
    client: &mut SegmentationServiceClient<InterceptedService<Channel, Auth>>,
    name: String,
    kind: SegmentKind,
    rule: &str,
) -> anyhow::Result<Segment> {
    client
        .create_segment(CreateSegmentRequest {
            segment: Some(Segment {
                name,
                kind: kind as i32,
                rule_text: rule.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .context("CreateSegment")?
        .into_inner()
        .segment
        .context("CreateSegment answered no segment")
}

/// The last sequence of `tenant` on the feed of service `producer` (the
/// schema's committed events numbered first, as a consumer's read would).
async fn feed_head(pool: &sqlx::PgPool, producer: &str, tenant: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {producer}.outbox_number_committed($1)"
    )))
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

/// Milliseconds with two decimals.
pub fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The `p`th percentile (0..=100, nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A count with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Runs `rapport bench`.
/// Waits for Ctrl-C or SIGTERM; the signal's name.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let sizes = args.sizes();
    let selected: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        named()
            .filter(|s| args.scenarios.iter().any(|a| a == s))
            .collect()
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    println!(
        "rapport bench: {} on {cores} cores (load average {load}); sizes {sizes:?}",
        selected.join(", ")
    );
    if cfg!(debug_assertions) {
        println!(
            "note: an unoptimised build; `./rapport bench` (a release build) gives the figures that mean something"
        );
    }
    if load.parse::<f64>().is_ok_and(|l| l > 1.0) {
        println!("note: the machine is busy; figures will be lower than on a quiet one");
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let log = args.out.join(format!("bench-{stamp}-services.log"));
    let started = Instant::now();
    let mut stack = Stack::start(args.database_url.as_deref(), &log).await?;
    println!(
        "platform up in {} ({}; every service its own process, logging to {})",
        secs(started.elapsed()),
        if stack.embedded {
            "embedded throwaway PostgreSQL: fsync off"
        } else {
            "PostgreSQL of --database-url, in a database of the bench's own"
        },
        log.display()
    );
    let pids = stack.pids();
    // At rest: started, connected, nothing asked yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest: BTreeMap<&str, u64> = pids
        .iter()
        .filter_map(|(name, pid)| stack::memory_kib(*pid).map(|(rss, _)| (*name, rss)))
        .collect();
    let sampler = MemorySampler::start(pids.clone());

    let mut results = serde_json::Map::new();
    let mut peaks: Vec<(&str, BTreeMap<&str, u64>)> = Vec::new();
    let scenarios = async {
        for scenario in &selected {
            sampler.take();
            let value = match *scenario {
                "ingest" => ingest::run(&stack, &sizes).await?,
                "reads" => reads::run(&stack, &sizes).await?,
                "neighbours" => neighbours::run(&stack, &sizes).await?,
                "segments" => segments::run(&stack, &sizes).await?,
                "import" => import::run(&stack, &sizes).await?,
                "onboard" => onboard::run(&stack, &sizes).await?,
                "engagement" => engagement::run(&stack, &sizes).await?,
                "profitability" => profitability::run(&stack, &sizes).await?,
                "soak" => soak::run(&mut stack, args.minutes).await?,
                _ => fit::run(&stack, &sizes).await?,
            };
            results.insert(scenario.to_string(), value);
            peaks.push((scenario, sampler.take()));
        }
        anyhow::Ok(())
    };
    // Ctrl-C or SIGTERM ends the run but still stops the services and
    // drops the bench's database.
    let outcome = tokio::select! {
        r = scenarios => r,
        s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}; the platform and its database are stopped")),
    };
    sampler.stop();

    let mut memory = Table::new(
        "Resident memory of each service (VmRSS; peak sampled every 100 ms)",
        std::iter::once("service")
            .chain(std::iter::once("at rest"))
            .chain(peaks.iter().map(|(s, _)| *s))
            .collect(),
    );
    let mut memory_json = serde_json::Map::new();
    for (name, _) in &pids {
        let mut row = vec![
            name.to_string(),
            rest.get(name).copied().map_or("-".into(), mib),
        ];
        let mut per = serde_json::Map::new();
        per.insert("rest_kib".into(), json!(rest.get(name)));
        for (scenario, p) in &peaks {
            row.push(p.get(name).copied().map_or("-".into(), mib));
            per.insert(format!("{scenario}_peak_kib"), json!(p.get(name)));
        }
        memory.row(row);
        memory_json.insert(name.to_string(), Value::Object(per));
    }
    memory.print();
    results.insert("memory".into(), Value::Object(memory_json));
    stack.stop().await;
    outcome?;

    let now = chrono::Utc::now();
    let report = json!({
        "time": now.to_rfc3339(),
        "cores": cores,
        "load_average_at_start": load,
        "quick": args.quick,
        "embedded_postgres": args.database_url.is_none(),
        "sizes": {
            "interactions": sizes.interactions,
            "segment_sizes": sizes.segment_sizes,
            "fit_sizes": sizes.fit_sizes,
            "read_rate": sizes.read_rate,
            "read_seconds": sizes.read_seconds,
            "import_customers": sizes.import_customers,
            "new_customer_interactions": sizes.new_customer_interactions,
            "freshness_rate": sizes.freshness_rate,
            "freshness_seconds": sizes.freshness_seconds,
            "onboard_customers": sizes.onboard_customers,
            "onboard_interactions": sizes.onboard_interactions,
            "profit_customers": sizes.profit_customers,
        },
        "results": results,
    });
    let file = args.out.join(format!("bench-{stamp}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "\nresults in {} (total {})",
        file.display(),
        secs(started.elapsed())
    );
    Ok(())
}
