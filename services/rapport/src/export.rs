//! `rapport export customers|interactions|segment-members|values`: a tenant's
//! data read through the gateway with an API key, as any client would (the
//! public list methods, page by page), written as CSV or JSON Lines to a file
//! or standard output while it streams, with a progress bar on a terminal.
//!
//! JSON Lines holds each item whole, in the contracts' proto3 JSON (the form
//! grpcurl and the Connect protocol show); CSV holds a fixed set of columns
//! per kind, read from that same JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message;
use rapport_kit::connect::Contracts;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{ListInteractionsRequest, TimelineOrder};
use rapport_proto::rapport::profile::v1::ListCustomersRequest;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::segmentation::v1::ListMembersRequest;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{RankCustomersRequest, RankMetric};
use serde_json::Value;

use crate::seed::{Authed, api_key, connect};

/// Items per page asked of the services.
const PAGE: i32 = 1000;

/// Customers whose timelines are read at once (`export interactions`).
const TIMELINES_IN_FLIGHT: usize = 16;

/// `rapport export` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(subcommand)]
    what: What,
    /// csv or jsonl (default: from the output file's extension; jsonl on
    /// standard output).
    #[arg(long, global = true, value_parser = ["csv", "jsonl"])]
    format: Option<String>,
    /// The file to write (default: standard output).
    #[arg(long, short, global = true)]
    output: Option<PathBuf>,
    /// The gateway to read from.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    gateway: String,
    /// An API key with the read scope of what is exported (default: the
    /// development key of `rapport dev`).
    #[arg(long, global = true, env = "RAPPORT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Where `rapport dev` keeps its data (for its API key).
    #[arg(
        long,
        global = true,
        env = "RAPPORT_DATA_DIR",
        default_value = ".rapport"
    )]
    data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum What {
    /// Every customer (ProfileService.ListCustomers), oldest first.
    Customers,
    /// Every interaction of every customer (ListCustomers, then each
    /// customer's ListInteractions, oldest first).
    Interactions,
    /// The members of one segment (SegmentationService.ListMembers).
    SegmentMembers {
        /// The segment's id.
        segment_id: String,
    },
    /// Every scored customer's value, highest CLV first
    /// (ValuationService.RankCustomers).
    Values,
}

/// CSV columns per kind: header, and the path into the item's JSON (`.`
/// between names, a number for a list's element).
fn columns(what: &What) -> &'static [(&'static str, &'static str)] {
    match what {
        What::Customers => &[
            ("customer_id", "customerId"),
            ("kind", "kind"),
            ("state", "state"),
            ("display_name", "displayName"),
            ("given_name", "person.givenName"),
            ("family_name", "person.familyName"),
            ("legal_name", "organization.legalName"),
            ("email", "emails.0.address"),
            ("phone", "phones.0.number"),
            ("country_code", "countryCode"),
            ("locale", "locale"),
            ("tags", "tags"),
            ("create_time", "createTime"),
            ("update_time", "updateTime"),
        ],
        What::Interactions => &[
            ("interaction_id", "interactionId"),
            ("customer_id", "customerId"),
            ("type", "type"),
            ("custom_type", "customType"),
            ("occur_time", "occurTime"),
            ("channel", "channel"),
            ("currency", "amount.currencyCode"),
            ("amount_units", "amount.units"),
            ("amount_nanos", "amount.nanos"),
            ("margin_units", "margin.units"),
            ("margin_nanos", "margin.nanos"),
            ("campaign_id", "campaignId"),
            ("idempotency_key", "idempotencyKey"),
        ],
        What::SegmentMembers { .. } => {
            &[("customer_id", "customerId"), ("enter_time", "enterTime")]
        }
        What::Values => &[
            ("rank", "rank"),
            ("customer_id", "value.customerId"),
            ("currency", "value.clv.currencyCode"),
            ("clv_units", "value.clv.units"),
            ("clv_nanos", "value.clv.nanos"),
            ("p_alive", "value.pAlive"),
            ("expected_purchases", "value.expectedPurchases"),
            ("frequency", "value.frequency"),
            ("recency", "value.recency"),
            ("t", "value.t"),
            ("score_time", "value.scoreTime"),
        ],
    }
}

/// The value at `path` in `item`, as CSV text: strings as they are, lists of
/// scalars joined with `;`, nothing for what is absent.
pub fn cell(item: &Value, path: &str) -> String {
    let mut at = item;
    for step in path.split('.') {
        let next = match step.parse::<usize>() {
            Ok(i) => at.get(i),
            Err(_) => at.get(step),
        };
        match next {
            Some(v) => at = v,
            None => return String::new(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    }
}

/// The output, in its format.
enum Out {
    Jsonl(Box<dyn Write>),
    Csv(
        Box<csv::Writer<Box<dyn Write>>>,
        &'static [(&'static str, &'static str)],
    ),
}

/// Where items go, one at a time.
struct Sink {
    out: Out,
    contracts: Contracts,
    bar: ProgressBar,
    written: u64,
}

impl Sink {
    /// Writes `item` (a message of type `name`).
    fn item<M: Message>(&mut self, name: &str, item: &M) -> anyhow::Result<()> {
        let json = self
            .contracts
            .json_of(name, &item.encode_to_vec())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match &mut self.out {
            Out::Jsonl(out) => {
                serde_json::to_writer(&mut *out, &json)?;
                out.write_all(b"\n")?;
            }
            Out::Csv(writer, columns) => {
                writer.write_record(columns.iter().map(|(_, path)| cell(&json, path)))?;
            }
        }
        self.written += 1;
        self.bar.inc(1);
        Ok(())
    }
}

/// Runs `rapport export`. A reader that stops early (`| head`) ends it quietly.
pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    match export(args).await {
        Err(e) if broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether `e` comes from writing to a reader that went away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            Some(io.kind())
        } else if let Some(json) = cause.downcast_ref::<serde_json::Error>() {
            json.io_error_kind()
        } else if let Some(csv) = cause.downcast_ref::<csv::Error>() {
            match csv.kind() {
                csv::ErrorKind::Io(io) => Some(io.kind()),
                _ => None,
            }
        } else {
            None
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let key = api_key(args.api_key.as_deref(), &args.data_dir)?;
    let (channel, bearer) = connect(&args.gateway, &key).await?;
    let format = args.format.clone().unwrap_or_else(|| {
        match args.output.as_ref().and_then(|p| p.extension()) {
            Some(e) if e == "csv" => "csv".into(),
            _ => "jsonl".into(),
        }
    });
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let out = if format == "csv" {
        let columns = columns(&args.what);
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(columns.iter().map(|(h, _)| *h))?;
        Out::Csv(Box::new(writer), columns)
    } else {
        Out::Jsonl(out)
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} exported · {per_sec} · {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut sink = Sink {
        out,
        contracts: Contracts::rapport().map_err(|e| anyhow::anyhow!(e))?,
        bar,
        written: 0,
    };
    let started = std::time::Instant::now();
    match &args.what {
        What::Customers => customers(channel, bearer, &mut sink).await?,
        What::Interactions => interactions(channel, bearer, &mut sink).await?,
        What::SegmentMembers { segment_id } => {
            members(channel, bearer, segment_id, &mut sink).await?
        }
        What::Values => values(channel, bearer, &mut sink).await?,
    }
    match &mut sink.out {
        Out::Jsonl(out) => out.flush()?,
        Out::Csv(writer, _) => writer.flush()?,
    }
    sink.bar.finish_and_clear();
    eprintln!(
        "exported {} items in {:.1} s",
        sink.written,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

type Bearer = crate::seed::Bearer;

/// Writes every item of every page: `fetch(token)` answers a page's items
/// and the next page's token (empty after the last).
async fn write_pages<T, F, Fut>(sink: &mut Sink, name: &str, mut fetch: F) -> anyhow::Result<()>
where
    T: Message,
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await?;
        for item in &items {
            sink.item(name, item)?;
        }
        if next.is_empty() {
            return Ok(());
        }
        token = next;
    }
}

async fn customers(
    channel: tonic::transport::Channel,
    bearer: Bearer,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let client: ProfileServiceClient<Authed> =
        ProfileServiceClient::with_interceptor(channel, bearer);
    write_pages(sink, "rapport.profile.v1.Customer", |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_customers(ListCustomersRequest {
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                })
                .await
                .context("ListCustomers")?
                .into_inner();
            Ok((page.customers, page.next_page_token))
        }
    })
    .await
}

async fn interactions(
    channel: tonic::transport::Channel,
    bearer: Bearer,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let mut profiles: ProfileServiceClient<Authed> =
        ProfileServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let timelines: InteractionServiceClient<Authed> =
        InteractionServiceClient::with_interceptor(channel, bearer);
    let mut token = String::new();
    loop {
        let page = profiles
            .list_customers(ListCustomersRequest {
                page_size: PAGE,
                page_token: token,
                ..Default::default()
            })
            .await
            .context("ListCustomers")?
            .into_inner();
        // Each customer's whole timeline, several customers at once, written
        // in the customers' order.
        let mut read = futures::stream::iter(page.customers.iter().map(|c| {
            let mut client = timelines.clone();
            let id = c.customer_id.clone();
            async move {
                let mut items = Vec::new();
                let mut token = String::new();
                loop {
                    let page = client
                        .list_interactions(ListInteractionsRequest {
                            customer_id: id.clone(),
                            order: TimelineOrder::OldestFirst as i32,
                            page_size: PAGE,
                            page_token: token,
                            ..Default::default()
                        })
                        .await
                        .with_context(|| format!("ListInteractions of {id}"))?
                        .into_inner();
                    items.extend(page.interactions);
                    if page.next_page_token.is_empty() {
                        return anyhow::Ok(items);
                    }
                    token = page.next_page_token;
                }
            }
        }))
        .buffered(TIMELINES_IN_FLIGHT);
        while let Some(timeline) = read.next().await {
            for i in timeline? {
                sink.item("rapport.interaction.v1.Interaction", &i)?;
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        token = page.next_page_token;
    }
}

async fn members(
    channel: tonic::transport::Channel,
    bearer: Bearer,
    segment_id: &str,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let client: SegmentationServiceClient<Authed> =
        SegmentationServiceClient::with_interceptor(channel, bearer);
    write_pages(
        sink,
        "rapport.segmentation.v1.SegmentMember",
        |page_token| {
            let mut client = client.clone();
            let segment_id = segment_id.to_string();
            async move {
                let page = client
                    .list_members(ListMembersRequest {
                        segment_id,
                        page_size: PAGE,
                        page_token,
                    })
                    .await
                    .context("ListMembers")?
                    .into_inner();
                Ok((page.members, page.next_page_token))
            }
        },
    )
    .await
}

async fn values(
    channel: tonic::transport::Channel,
    bearer: Bearer,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let client: ValuationServiceClient<Authed> =
        ValuationServiceClient::with_interceptor(channel, bearer);
    write_pages(sink, "rapport.valuation.v1.RankedCustomer", |page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .rank_customers(RankCustomersRequest {
                    metric: RankMetric::Clv as i32,
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                })
                .await
                .context("RankCustomers")?
                .into_inner();
            Ok((page.customers, page.next_page_token))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_paths_into_the_json() {
        let item = serde_json::json!({
            "customerId": "c-1",
            "person": {"givenName": "Ana"},
            "emails": [{"address": "a@x.com"}, {"address": "b@x.com"}],
            "tags": ["vip", "b2b"],
            "amount": {"units": "40", "nanos": 500000000},
            "pAlive": 0.25,
        });
        assert_eq!(cell(&item, "customerId"), "c-1");
        assert_eq!(cell(&item, "person.givenName"), "Ana");
        assert_eq!(cell(&item, "emails.1.address"), "b@x.com");
        assert_eq!(cell(&item, "tags"), "vip;b2b");
        assert_eq!(cell(&item, "amount.units"), "40");
        assert_eq!(cell(&item, "amount.nanos"), "500000000");
        assert_eq!(cell(&item, "pAlive"), "0.25");
        assert_eq!(cell(&item, "phones.0.number"), "");
        assert_eq!(cell(&item, "person.familyName"), "");
    }
}
