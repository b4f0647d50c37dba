//! `rapport import customers FILE` and `rapport import interactions FILE`:
//! CSV or JSON Lines files sent through the gateway with an API key, as any
//! client would (`ImportCustomers` and `RecordInteractions`), with a progress
//! bar, a rejects file naming each refused row and why, and keys derived
//! from the rows, so a re-run after an interruption duplicates nothing.

pub mod rows;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rapport_proto::rapport::interaction::v1::RecordInteractionsRequest;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    AttributeType, CustomerKind, ImportCustomerItem, ImportCustomersRequest,
    ListAttributeDefinitionsRequest,
};
use serde_json::{Value, json};

use crate::seed::{Authed, api_key, connect};
use rows::{Mapping, Row};

/// Rows per message, the services' limit.
const PER_MESSAGE: usize = 1000;

/// `rapport import` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum What {
    /// Upsert customers by their identifiers (ProfileService.ImportCustomers).
    /// Fields: kind, email, phone, external_system, external_id, given_name,
    /// family_name, birth_date, display_name, legal_name, industry, website,
    /// country_code, locale, tags (separated by ';'), owner_id and
    /// attr.<name>; by default each is read from the column of its own name.
    Customers {
        #[command(flatten)]
        file: FileArgs,
        /// Kind of rows without a `kind` column: person or organization.
        #[arg(long, default_value = "person", value_parser = ["person", "organization"])]
        kind: String,
    },
    /// Record interactions (InteractionService.RecordInteractions), customers
    /// found or created by their identifiers. Fields: customer_id, email,
    /// phone, external_system, external_id, type (default purchase),
    /// custom_type, occur_time (RFC 3339 or YYYY-MM-DD), channel, amount,
    /// margin, currency, campaign_id, agent_id, csat, nps, idempotency_key
    /// (default: derived from the row).
    Interactions {
        #[command(flatten)]
        file: FileArgs,
        /// Currency of amounts without a `currency` column.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct FileArgs {
    /// The file: CSV with a header row, or JSON Lines (.jsonl, .ndjson).
    file: PathBuf,
    /// csv or jsonl (default: from the file's extension).
    #[arg(long, value_parser = ["csv", "jsonl"])]
    format: Option<String>,
    /// Read FIELD from COLUMN instead of the column named FIELD (repeatable).
    #[arg(long = "map", value_name = "FIELD=COLUMN", value_parser = rows::parse_pair)]
    map: Vec<(String, String)>,
    /// A mapping file: one FIELD=COLUMN per line (`#` starts a comment).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Where refused rows go, one JSON object per line with the reason
    /// (default: FILE.rejects.jsonl).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Rows per call (each call is a stream of messages of 1,000 rows).
    #[arg(long, default_value_t = 10_000)]
    rows_per_call: usize,
    /// The gateway to send to.
    #[arg(
        long,
        env = "RAPPORT_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    gateway: String,
    /// An API key with profile:write (customers) or interaction:write
    /// (interactions) (default: the development key of `rapport dev`).
    #[arg(long, env = "RAPPORT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Where `rapport dev` keeps its data (for its API key).
    #[arg(long, env = "RAPPORT_DATA_DIR", default_value = ".rapport")]
    data_dir: PathBuf,
}

/// Rows of a CSV or JSON Lines file, with their line numbers.
enum Source {
    Csv {
        reader: csv::Reader<File>,
        headers: Vec<String>,
    },
    Jsonl {
        lines: std::io::Lines<BufReader<File>>,
        line: u64,
    },
}

impl Source {
    fn open(path: &Path, format: &str) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(match format {
            "jsonl" => Source::Jsonl {
                lines: BufReader::new(file).lines(),
                line: 0,
            },
            _ => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let headers = reader
                    .headers()
                    .with_context(|| format!("{}: no header row", path.display()))?
                    .iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                Source::Csv { reader, headers }
            }
        })
    }

    /// The next row: (line number, the row, or why it cannot be read).
    fn next_row(&mut self) -> Option<(u64, Result<Row, String>)> {
        match self {
            Source::Csv { reader, headers } => {
                let mut record = csv::StringRecord::new();
                match reader.read_record(&mut record) {
                    Ok(false) => None,
                    Ok(true) => {
                        let line = record.position().map_or(0, csv::Position::line);
                        let row = headers
                            .iter()
                            .zip(record.iter())
                            .filter(|(_, v)| !v.trim().is_empty())
                            .map(|(h, v)| (h.clone(), v.to_string()))
                            .collect();
                        Some((line, Ok(row)))
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line);
                        Some((line, Err(format!("unreadable CSV: {e}"))))
                    }
                }
            }
            Source::Jsonl { lines, line } => loop {
                let text = match lines.next()? {
                    Ok(t) => t,
                    Err(e) => return Some((*line + 1, Err(format!("unreadable line: {e}")))),
                };
                *line += 1;
                if text.trim().is_empty() {
                    continue;
                }
                return Some((*line, json_row(&text)));
            },
        }
    }
}

/// A JSON object as a row: strings as they are, numbers and booleans as
/// their text, lists of strings joined with ';'.
fn json_row(text: &str) -> Result<Row, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("not a JSON object".into());
    };
    let mut row = Row::new();
    for (k, v) in map {
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(";"),
            other => other.to_string(),
        };
        row.insert(k, text);
    }
    Ok(row)
}

/// Counts the rows of a file (for the progress bar).
fn count_rows(path: &Path, format: &str) -> anyhow::Result<u64> {
    let mut s = Source::open(path, format)?;
    let mut n = 0;
    while s.next_row().is_some() {
        n += 1;
    }
    Ok(n)
}

/// The rejects file.
struct Rejects {
    out: BufWriter<File>,
    count: u64,
}

impl Rejects {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            out: BufWriter::new(file),
            count: 0,
        })
    }

    /// Writes the service's refusal of item `index` of `items` (line, row).
    fn refused<'a, T>(
        &mut self,
        items: &[(u64, Row, T)],
        index: i64,
        reason: &str,
        message: &str,
        fields: impl Iterator<Item = (&'a String, &'a String)>,
    ) {
        let Some((line, row, _)) = usize::try_from(index).ok().and_then(|i| items.get(i)) else {
            return;
        };
        let fields: Vec<Value> = fields
            .map(|(f, d)| json!({"field": f, "description": d}))
            .collect();
        self.write(*line, reason, message, json!(fields), Some(row));
    }

    fn write(&mut self, line: u64, reason: &str, message: &str, fields: Value, row: Option<&Row>) {
        self.count += 1;
        let v = json!({
            "line": line,
            "reason": reason,
            "message": message,
            "field_violations": fields,
            "row": row,
        });
        let _ = writeln!(self.out, "{v}");
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Rows read.
    pub rows: u64,
    /// Customers created (customers) or interactions accepted.
    pub created: i64,
    /// Customers updated.
    pub updated: i64,
    /// Customers unchanged, or interactions already recorded.
    pub unchanged: i64,
    /// Rows refused (locally or by the service).
    pub rejected: u64,
}

/// A progress bar on standard error (hidden when it is not a terminal).
pub(crate) fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(&format!(
        "{{bar:40}} {{human_pos}}/{{human_len}} {what} · {{per_sec}} · ETA {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Runs `rapport import`.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let (file, what) = match &args.what {
        What::Customers { file, .. } => (file, "customers"),
        What::Interactions { file, .. } => (file, "interactions"),
    };
    let started = Instant::now();
    let totals = import(&args).await?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let rate = totals.rows as f64 / secs;
    match what {
        "customers" => println!(
            "Imported {} rows of {} in {secs:.1} s ({rate:.0} rows/s): {} created, {} updated, {} unchanged, {} rejected.",
            totals.rows,
            file.file.display(),
            totals.created,
            totals.updated,
            totals.unchanged,
            totals.rejected
        ),
        _ => println!(
            "Imported {} rows of {} in {secs:.1} s ({rate:.0} rows/s): {} recorded, {} already recorded, {} rejected.",
            totals.rows,
            file.file.display(),
            totals.created,
            totals.unchanged,
            totals.rejected
        ),
    }
    if totals.rejected > 0 {
        println!(
            "Rejected rows and their reasons: {}",
            rejects_path(file).display()
        );
    }
    Ok(())
}

fn rejects_path(f: &FileArgs) -> PathBuf {
    f.rejects.clone().unwrap_or_else(|| {
        let mut p = f.file.clone().into_os_string();
        p.push(".rejects.jsonl");
        PathBuf::from(p)
    })
}

fn format_of(f: &FileArgs) -> String {
    f.format
        .clone()
        .unwrap_or_else(|| match f.file.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => "jsonl".into(),
            _ => "csv".into(),
        })
}

/// What to tell the user when the gateway refuses call `method`: what
/// went wrong in words, and what to do about it.
fn refused(method: &str, status: tonic::Status) -> anyhow::Error {
    let what = match status.code() {
        tonic::Code::Unauthenticated => {
            "the gateway refused the API key; pass a valid one with --api-key or RAPPORT_API_KEY"
        }
        tonic::Code::PermissionDenied => {
            "the API key lacks a scope: customers need profile:read and profile:write, interactions interaction:write"
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            "the platform did not answer; re-run the same command to continue (nothing is duplicated)"
        }
        _ => "re-run the same command to continue once fixed (nothing is duplicated)",
    };
    anyhow::anyhow!(
        "{method} failed with {:?}: {}; {what}",
        status.code(),
        status.message()
    )
}

/// Imports the file of `args`; the totals.
pub async fn import(args: &ImportArgs) -> anyhow::Result<Totals> {
    let (f, fields): (&FileArgs, &[&str]) = match &args.what {
        What::Customers { file, .. } => (file, &rows::CUSTOMER_FIELDS),
        What::Interactions { file, .. } => (file, &rows::INTERACTION_FIELDS),
    };
    if f.rows_per_call == 0 {
        bail!("--rows-per-call must be at least 1");
    }
    if let What::Interactions { currency, .. } = &args.what
        && (currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        bail!("--currency must be a three-letter ISO 4217 code such as EUR, not {currency:?}");
    }
    let mut overrides = Vec::new();
    if let Some(m) = &f.mapping {
        let text = std::fs::read_to_string(m)
            .with_context(|| format!("cannot read the mapping file {}", m.display()))?;
        overrides.extend(
            rows::parse_mapping_lines(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?,
        );
    }
    overrides.extend(f.map.iter().cloned());
    let mapping = Mapping::new(fields, &overrides).map_err(anyhow::Error::msg)?;
    let format = format_of(f);
    let total = count_rows(&f.file, &format)?;
    let key = api_key(f.api_key.as_deref(), &f.data_dir)?;
    let (channel, bearer) = connect(&f.gateway, &key).await?;
    let mut rejects = Rejects::create(&rejects_path(f))?;
    let mut source = Source::open(&f.file, &format)?;
    let bar = progress(total, "rows");
    let mut totals = Totals::default();
    match &args.what {
        What::Customers { kind, .. } => {
            let mut client = ProfileServiceClient::with_interceptor(channel, bearer);
            let types = attribute_types(&mut client).await?;
            let kind = if kind == "organization" {
                CustomerKind::Organization
            } else {
                CustomerKind::Person
            };
            let parse = |row: &Row| {
                let c = rows::customer(&mapping, row, kind, &types)?;
                Ok(ImportCustomerItem {
                    customer: Some(c),
                    update_mask: None,
                    request_id: rows::row_key("", row),
                })
            };
            let send = |items: Vec<ImportCustomerItem>| {
                let mut client = client.clone();
                let messages: Vec<ImportCustomersRequest> = items
                    .chunks(PER_MESSAGE)
                    .map(|c| ImportCustomersRequest { items: c.to_vec() })
                    .collect();
                async move {
                    let a = client
                        .import_customers(futures::stream::iter(messages))
                        .await
                        .map_err(|e| refused("ImportCustomers", e))?
                        .into_inner();
                    let rejections = a.rejections.into_iter().map(|r| {
                        let reason =
                            rapport_proto::rapport::profile::v1::ImportRejectionReason::try_from(
                                r.reason,
                            )
                            .ok()
                            .map(|x| x.as_str_name());
                        Refusal::new(
                            r.index,
                            (reason, "IMPORT_REJECTION_REASON_"),
                            r.message,
                            r.field_violations
                                .into_iter()
                                .map(|v| (v.field, v.description)),
                        )
                    });
                    Ok(Sent {
                        created: a.created_count,
                        updated: a.updated_count,
                        unchanged: a.unchanged_count,
                        rejected: a.rejected_count,
                        rejections: rejections.collect(),
                    })
                }
            };
            let mut upload = Upload {
                source: &mut source,
                totals: &mut totals,
                rejects: &mut rejects,
                bar: &bar,
            };
            upload.run(f.rows_per_call, parse, send).await?;
        }
        What::Interactions { currency, .. } => {
            let client = InteractionServiceClient::with_interceptor(channel, bearer);
            let parse = |row: &Row| rows::interaction(&mapping, row, currency);
            let send = |items: Vec<_>| {
                let mut client = client.clone();
                let messages: Vec<RecordInteractionsRequest> = items
                    .chunks(PER_MESSAGE)
                    .map(|c| RecordInteractionsRequest {
                        interactions: c.to_vec(),
                    })
                    .collect();
                async move {
                    let a = client
                        .record_interactions(futures::stream::iter(messages))
                        .await
                        .map_err(|e| refused("RecordInteractions", e))?
                        .into_inner();
                    let rejections = a.rejections.into_iter().map(|r| {
                        let reason =
                            rapport_proto::rapport::interaction::v1::RejectionReason::try_from(
                                r.reason,
                            )
                            .ok()
                            .map(|x| x.as_str_name());
                        Refusal::new(
                            r.index,
                            (reason, "REJECTION_REASON_"),
                            r.message,
                            r.field_violations
                                .into_iter()
                                .map(|v| (v.field, v.description)),
                        )
                    });
                    Ok(Sent {
                        created: a.accepted_count,
                        updated: 0,
                        unchanged: a.duplicate_count,
                        rejected: a.rejected_count,
                        rejections: rejections.collect(),
                    })
                }
            };
            let mut upload = Upload {
                source: &mut source,
                totals: &mut totals,
                rejects: &mut rejects,
                bar: &bar,
            };
            upload.run(f.rows_per_call, parse, send).await?;
        }
    }
    bar.finish_and_clear();
    rejects
        .out
        .flush()
        .context("cannot write the rejects file")?;
    Ok(totals)
}

/// Reads up to `n` rows and converts each with `convert`: the converted
/// rows with their line and row; rows that cannot be read or converted go
/// to the rejects file at once.
/// What the service answered for one chunk of rows.
struct Sent {
    created: i64,
    updated: i64,
    unchanged: i64,
    /// Items refused, as the service counts them.
    rejected: i64,
    rejections: Vec<Refusal>,
}

/// One item the service refused: its index in the chunk, the reason's
/// name, the message and the field violations.
struct Refusal {
    index: i64,
    reason: &'static str,
    message: String,
    fields: Vec<(String, String)>,
}

impl Refusal {
    /// `reason` is the enum value's name (None for a number this client does
    /// not know) and the prefix to drop from it.
    fn new(
        index: i64,
        (reason, prefix): (Option<&'static str>, &str),
        message: String,
        fields: impl Iterator<Item = (String, String)>,
    ) -> Self {
        Self {
            index,
            reason: reason.map_or("UNSPECIFIED", |r| r.trim_start_matches(prefix)),
            message,
            fields: fields.collect(),
        }
    }
}

/// Sends a file's rows in chunks, counting and writing refusals as it goes.
struct Upload<'a> {
    source: &'a mut Source,
    totals: &'a mut Totals,
    rejects: &'a mut Rejects,
    bar: &'a ProgressBar,
}

impl Upload<'_> {
    /// Parses up to `per_call` rows at a time into items with `parse` and
    /// sends each chunk with `send`, until the source is exhausted.
    async fn run<T: Clone, F>(
        &mut self,
        per_call: usize,
        parse: impl Fn(&Row) -> Result<T, String>,
        send: impl Fn(Vec<T>) -> F,
    ) -> anyhow::Result<()>
    where
        F: std::future::Future<Output = anyhow::Result<Sent>>,
    {
        loop {
            let items = next_chunk(
                self.source,
                per_call,
                self.totals,
                self.rejects,
                self.bar,
                &parse,
            );
            if items.is_empty() {
                return Ok(());
            }
            let n = items.len() as u64;
            let sent = send(items.iter().map(|(_, _, i)| i.clone()).collect()).await?;
            self.totals.created += sent.created;
            self.totals.updated += sent.updated;
            self.totals.unchanged += sent.unchanged;
            self.totals.rejected += u64::try_from(sent.rejected).unwrap_or(0);
            for r in &sent.rejections {
                let fields = r.fields.iter().map(|(f, d)| (f, d));
                self.rejects
                    .refused(&items, r.index, r.reason, &r.message, fields);
            }
            self.bar.inc(n);
        }
    }
}

fn next_chunk<T>(
    source: &mut Source,
    n: usize,
    totals: &mut Totals,
    rejects: &mut Rejects,
    bar: &ProgressBar,
    convert: impl Fn(&Row) -> Result<T, String>,
) -> Vec<(u64, Row, T)> {
    let mut items = Vec::new();
    while items.len() < n {
        let Some((line, row)) = source.next_row() else {
            break;
        };
        totals.rows += 1;
        match row.and_then(|row| convert(&row).map(|t| (row, t))) {
            Ok((row, t)) => items.push((line, row, t)),
            Err(e) => {
                rejects.write(line, "INVALID", &e, json!([]), None);
                totals.rejected += 1;
                bar.inc(1);
            }
        }
    }
    items
}

/// The tenant's attribute types by name, so attribute columns are sent
/// typed.
async fn attribute_types(
    client: &mut ProfileServiceClient<Authed>,
) -> anyhow::Result<HashMap<String, AttributeType>> {
    let mut out = HashMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_attribute_definitions(ListAttributeDefinitionsRequest {
                page_size: 100,
                page_token: token.clone(),
                show_deprecated: false,
            })
            .await
            .map_err(|e| refused("ListAttributeDefinitions", e))?
            .into_inner();
        for d in page.definitions {
            out.insert(
                d.name,
                AttributeType::try_from(d.r#type).unwrap_or(AttributeType::String),
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}
