//! A soak with faults: `rapport bench soak --minutes N`. Two tenants put
//! mixed load through the gateway (streaming ingestion of known and new
//! customers, reads, merges and unmerges, segment refreshes, fits activated
//! and every customer scored, API keys created and revoked) while a service is killed with
//! SIGKILL and started again every 30 s (each in turn), the database is
//! restarted once and the segmentation service's connections (its feed
//! consumers' included) are cut once. Writes are retried with their
//! idempotency keys and request ids, as a client would.
//!
//! Then it audits: every acknowledged interaction is stored exactly once;
//! every feed consumer has reached the head of every feed it follows (no
//! stuck cursor); segmentation's and valuation's projections (valuation's
//! kept purchase summaries too) hold exactly
//! the interactions the interaction service holds, under the customers it
//! holds them under (what a rebuild from the feeds would give); and no row
//! of one tenant refers to another tenant's customer. Any finding fails the
//! run.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rapport_interaction::synthetic;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, PeriodUnit, customer_ref,
};
use rapport_proto::rapport::gateway::v1::admin_service_client::AdminServiceClient;
use rapport_proto::rapport::gateway::v1::{CreateApiKeyRequest, RevokeApiKeyRequest};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{InteractionType, RecordInteractionsRequest};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, GetCustomerRequest, MergeCustomersRequest,
    UnmergeCustomersRequest,
};
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{RefreshSegmentRequest, SegmentKind};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{
    ActivateModelRequest, FitModelRequest, ModelKind, ScoreCustomersRequest,
};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use super::stack::{SERVICES, Stack, Tenant};
use super::{Auth, Authed, Table, Tally, count, note};

/// How often a service is killed.
const KILL_EVERY: Duration = Duration::from_secs(30);

/// Codes a client retries (the call may or may not have been applied; the
/// retry carries the same idempotency key or request id).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    )
}

/// Calls `f` until it answers, retrying transient failures until `until`;
/// every answer is tallied under `what`.
async fn retried<T, F, Fut>(tally: &Tally, what: &str, until: Instant, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match f().await {
            Ok(v) => {
                note(tally, what, Code::Ok);
                return Some(v);
            }
            Err(s) => {
                note(tally, what, s.code());
                if !transient(s.code()) || Instant::now() > until {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn timed<T>(message: T, seconds: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(Duration::from_secs(seconds));
    r
}

/// What one tenant's load acknowledged.
#[derive(Default)]
struct Acked {
    interaction_keys: HashSet<String>,
    customers: Vec<Uuid>,
}

struct Load {
    tenant: Tenant,
    tag: String,
    gateway: tonic::transport::Channel,
    tally: Tally,
    acked: Arc<Mutex<Acked>>,
    end: Instant,
}

impl Load {
    fn auth(&self) -> anyhow::Result<Auth> {
        Auth::gateway(&self.tenant.key)
    }
    fn profile(&self) -> anyhow::Result<ProfileServiceClient<Authed>> {
        Ok(ProfileServiceClient::with_interceptor(
            self.gateway.clone(),
            self.auth()?,
        ))
    }
    /// Writes may retry for a minute after the load ends.
    fn write_until(&self) -> Instant {
        self.end + Duration::from_secs(60)
    }

    async fn create_customer(&self, name: String) -> anyhow::Result<Option<Uuid>> {
        let profile = self.profile()?;
        let created = retried(&self.tally, "CreateCustomer", self.write_until(), || {
            let mut p = profile.clone();
            let name = name.clone();
            async move {
                p.create_customer(timed(
                    CreateCustomerRequest {
                        customer: Some(Customer {
                            kind: CustomerKind::Person as i32,
                            display_name: name.clone(),
                            ..Default::default()
                        }),
                        request_id: format!("soak-{name}"),
                    },
                    10,
                ))
                .await
            }
        })
        .await;
        let id = created
            .and_then(|r| r.into_inner().customer)
            .and_then(|c| Uuid::parse_str(&c.customer_id).ok());
        if let (Some(id), Ok(mut acked)) = (id, self.acked.lock()) {
            acked.customers.push(id);
        }
        Ok(id)
    }

    /// Batches of 100 interactions, half for known customers, half for new
    /// ones (an e-mail each), one call per batch, retried with the same keys.
    async fn ingest(self: Arc<Self>, known: Vec<Uuid>) -> anyhow::Result<()> {
        let client = InteractionServiceClient::with_interceptor(self.gateway.clone(), self.auth()?);
        let mut batch = 0usize;
        while Instant::now() < self.end {
            let rows: Vec<_> = (0..100)
                .map(|j| {
                    let k = batch * 100 + j;
                    let mut i = synthetic::interaction(k, &known, &format!("soak-{}", self.tag));
                    if j % 2 == 1 {
                        i.customer = Some(CustomerRef {
                            r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
                                identifiers: vec![Identifier {
                                    kind: IdentifierKind::Email as i32,
                                    system: String::new(),
                                    value: format!("soak-{}-{k}@new.example.com", self.tag),
                                }],
                            })),
                        });
                    }
                    i
                })
                .collect();
            let keys: Vec<String> = rows.iter().map(|r| r.idempotency_key.clone()).collect();
            let answer = retried(
                &self.tally,
                "RecordInteractions",
                self.write_until(),
                || {
                    let mut c = client.clone();
                    let message = RecordInteractionsRequest {
                        interactions: rows.clone(),
                    };
                    async move {
                        c.record_interactions(timed(futures::stream::iter([message]), 30))
                            .await
                    }
                },
            )
            .await;
            if let Some(answer) = answer {
                let refused: HashSet<String> = answer
                    .into_inner()
                    .rejections
                    .into_iter()
                    .map(|r| r.idempotency_key)
                    .collect();
                if let Ok(mut acked) = self.acked.lock() {
                    acked
                        .interaction_keys
                        .extend(keys.into_iter().filter(|k| !refused.contains(k)));
                }
            }
            batch += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn read(self: Arc<Self>, known: Vec<Uuid>) -> anyhow::Result<()> {
        let profile = self.profile()?;
        let mut i = 0usize;
        while Instant::now() < self.end {
            let id = known[i % known.len()];
            let r = profile
                .clone()
                .get_customer(timed(
                    GetCustomerRequest {
                        customer_id: id.to_string(),
                    },
                    5,
                ))
                .await;
            note(
                &self.tally,
                "GetCustomer",
                r.map_or_else(|e| e.code(), |_| Code::Ok),
            );
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn merge(self: Arc<Self>) -> anyhow::Result<()> {
        let profile = self.profile()?;
        let mut n = 0usize;
        while Instant::now() < self.end {
            n += 1;
            let (Some(survivor), Some(merged)) = (
                self.create_customer(format!("{}-survivor-{n}", self.tag))
                    .await?,
                self.create_customer(format!("{}-merged-{n}", self.tag))
                    .await?,
            ) else {
                continue;
            };
            let request_id = format!("soak-{}-merge-{n}", self.tag);
            let done = retried(&self.tally, "MergeCustomers", self.write_until(), || {
                let mut p = profile.clone();
                let request_id = request_id.clone();
                async move {
                    p.merge_customers(timed(
                        MergeCustomersRequest {
                            survivor_customer_id: survivor.to_string(),
                            merged_customer_id: merged.to_string(),
                            survivor_etag: String::new(),
                            request_id,
                        },
                        10,
                    ))
                    .await
                }
            })
            .await;
            if done.is_some() {
                let request_id = format!("soak-{}-unmerge-{n}", self.tag);
                retried(&self.tally, "UnmergeCustomers", self.write_until(), || {
                    let mut p = profile.clone();
                    let request_id = request_id.clone();
                    async move {
                        p.unmerge_customers(timed(
                            UnmergeCustomersRequest {
                                merged_customer_id: merged.to_string(),
                                request_id,
                            },
                            10,
                        ))
                        .await
                    }
                })
                .await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    async fn segments(self: Arc<Self>) -> anyhow::Result<()> {
        let mut client =
            SegmentationServiceClient::with_interceptor(self.gateway.clone(), self.auth()?);
        let mut segment = None;
        while segment.is_none() && Instant::now() < self.end {
            match super::create_segment(
                &mut client,
                format!("Soak buyers {}", Uuid::new_v4()),
                SegmentKind::Snapshot,
                "purchases >= 1",
            )
            .await
            {
                Ok(s) => segment = Some(s.segment_id),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        let Some(segment_id) = segment else {
            return Ok(());
        };
        while Instant::now() < self.end {
            let r = client
                .refresh_segment(timed(
                    RefreshSegmentRequest {
                        segment_id: segment_id.clone(),
                    },
                    20,
                ))
                .await;
            note(
                &self.tally,
                "RefreshSegment",
                r.map_or_else(|e| e.code(), |_| Code::Ok),
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    async fn fits(self: Arc<Self>) -> anyhow::Result<()> {
        let client = ValuationServiceClient::with_interceptor(self.gateway.clone(), self.auth()?);
        tokio::time::sleep(Duration::from_secs(10)).await;
        while Instant::now() < self.end {
            // Both models (scoring needs a spend model too), then scoring.
            let mut fitted = true;
            for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
                let r = client
                    .clone()
                    .fit_model(timed(
                        FitModelRequest {
                            kind: kind as i32,
                            calibration_end_time: Some(rapport_kit::convert::timestamp(
                                chrono::Utc::now(),
                            )),
                            period_unit: PeriodUnit::Week as i32,
                            currency_code: "EUR".into(),
                            ..Default::default()
                        },
                        60,
                    ))
                    .await;
                note(
                    &self.tally,
                    "FitModel",
                    r.as_ref().map_or_else(|e| e.code(), |_| Code::Ok),
                );
                // A fitted model scores once activated.
                let activated = match r.ok().and_then(|r| r.into_inner().model) {
                    Some(m) => {
                        let a = client
                            .clone()
                            .activate_model(timed(
                                ActivateModelRequest {
                                    model_id: m.model_id,
                                },
                                10,
                            ))
                            .await;
                        note(
                            &self.tally,
                            "ActivateModel",
                            a.as_ref().map_or_else(|e| e.code(), |_| Code::Ok),
                        );
                        a.is_ok()
                    }
                    None => false,
                };
                fitted &= activated;
            }
            if fitted {
                let r = client
                    .clone()
                    .score_customers(timed(
                        ScoreCustomersRequest {
                            transaction_model_kind: ModelKind::BgNbd as i32,
                            horizon_periods: 52,
                            ..Default::default()
                        },
                        60,
                    ))
                    .await;
                note(
                    &self.tally,
                    "ScoreCustomers",
                    r.map_or_else(|e| e.code(), |_| Code::Ok),
                );
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        Ok(())
    }

    async fn keys(self: Arc<Self>) -> anyhow::Result<()> {
        let admin = AdminServiceClient::with_interceptor(self.gateway.clone(), self.auth()?);
        while Instant::now() < self.end {
            let created = admin
                .clone()
                .create_api_key(timed(
                    CreateApiKeyRequest {
                        tenant_id: self.tenant.id.to_string(),
                        display_name: "soak".into(),
                        scopes: vec!["profile:read".into()],
                        expire_time: None,
                        request_id: String::new(),
                    },
                    5,
                ))
                .await;
            note(
                &self.tally,
                "CreateApiKey",
                created.as_ref().map_or_else(|e| e.code(), |_| Code::Ok),
            );
            if let Some(key) = created.ok().and_then(|r| r.into_inner().api_key) {
                let r = admin
                    .clone()
                    .revoke_api_key(timed(
                        RevokeApiKeyRequest {
                            api_key_id: key.api_key_id,
                        },
                        5,
                    ))
                    .await;
                note(
                    &self.tally,
                    "RevokeApiKey",
                    r.map_or_else(|e| e.code(), |_| Code::Ok),
                );
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(())
    }
}

/// One audit finding or its absence.
struct Check {
    what: String,
    problems: u64,
    detail: String,
}

/// Waits (up to two minutes) until every feed consumer has reached the head
/// of every feed it follows for the tenants; the cursors still behind.
async fn wait_for_consumers(pool: &sqlx::PgPool, tenants: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let mut behind = Vec::new();
        for consumer in [
            "profile",
            "interaction",
            "segmentation",
            "valuation",
            "engagement",
        ] {
            let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT tenant_id, source, after_sequence FROM {consumer}.feed_tenant_cursors
                 WHERE tenant_id = ANY($1)"
            )))
            .bind(tenants)
            .fetch_all(pool)
            .await?;
            for (tenant, source, at) in rows {
                if !["profile", "interaction", "segmentation", "valuation"]
                    .contains(&source.as_str())
                {
                    continue;
                }
                let head = super::feed_head(pool, &source, tenant).await?;
                if at < head {
                    behind.push(format!(
                        "{consumer} following {source} for tenant {tenant}: at {at} of {head}"
                    ));
                }
            }
        }
        if behind.is_empty() || started.elapsed() > Duration::from_secs(120) {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn audit(pool: &sqlx::PgPool, loads: &[Arc<Load>]) -> anyhow::Result<Vec<Check>> {
    let tenants: Vec<Uuid> = loads.iter().map(|l| l.tenant.id).collect();
    let mut checks = Vec::new();
    let behind = wait_for_consumers(pool, &tenants).await?;
    checks.push(Check {
        what: "every feed consumer at the head of every feed it follows".into(),
        problems: behind.len() as u64,
        detail: behind.join("; "),
    });
    for load in loads {
        let t = load.tenant.id;
        let (keys, customers) = match load.acked.lock() {
            Ok(a) => (
                a.interaction_keys.iter().cloned().collect::<Vec<_>>(),
                a.customers.clone(),
            ),
            Err(_) => anyhow::bail!("the tally of acknowledged writes is poisoned"),
        };
        let stored: Vec<(String, i64)> = sqlx::query_as(
            "SELECT idempotency_key, count(*) FROM interaction.interactions
             WHERE tenant_id = $1 AND idempotency_key = ANY($2) GROUP BY 1",
        )
        .bind(t)
        .bind(&keys)
        .fetch_all(pool)
        .await?;
        let doubled = stored.iter().filter(|(_, n)| *n > 1).count() as u64;
        let missing = keys.len() as u64 - stored.len() as u64;
        checks.push(Check {
            what: format!(
                "tenant {}: {} acknowledged interactions each stored once",
                load.tag,
                count(keys.len() as u64)
            ),
            problems: doubled + missing,
            detail: format!("{missing} missing, {doubled} stored more than once"),
        });
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM profile.customers WHERE tenant_id = $1 AND customer_id = ANY($2)",
        )
        .bind(t)
        .bind(&customers)
        .fetch_one(pool)
        .await?;
        checks.push(Check {
            what: format!(
                "tenant {}: {} acknowledged customers present",
                load.tag,
                count(customers.len() as u64)
            ),
            problems: customers.len() as u64 - found as u64,
            detail: format!("{} missing", customers.len() as i64 - found),
        });
        // Segmentation holds every interaction once, under the customer the
        // interaction service holds it under.
        let (absent, extra, moved): (i64, i64, i64) = sqlx::query_as(
            "SELECT
                (SELECT count(*) FROM interaction.interactions i WHERE i.tenant_id = $1
                   AND NOT EXISTS (SELECT 1 FROM segmentation.events e
                                   WHERE e.tenant_id = i.tenant_id AND e.interaction_id = i.interaction_id)),
                (SELECT count(*) FROM segmentation.events e WHERE e.tenant_id = $1
                   AND NOT EXISTS (SELECT 1 FROM interaction.interactions i
                                   WHERE i.tenant_id = e.tenant_id AND i.interaction_id = e.interaction_id)),
                (SELECT count(*) FROM segmentation.events e JOIN interaction.interactions i
                   ON i.tenant_id = e.tenant_id AND i.interaction_id = e.interaction_id
                 WHERE e.tenant_id = $1 AND e.customer_id <> i.customer_id)",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        checks.push(Check {
            what: format!("tenant {}: segmentation's projection equals the interactions", load.tag),
            problems: (absent + extra + moved) as u64,
            detail: format!("{absent} not projected, {extra} projected but not stored, {moved} under another customer"),
        });
        let (absent, extra, moved): (i64, i64, i64) = sqlx::query_as(
            "SELECT
                (SELECT count(*) FROM interaction.interactions i WHERE i.tenant_id = $1 AND i.type = $2
                   AND NOT EXISTS (SELECT 1 FROM valuation.purchases p
                                   WHERE p.tenant_id = i.tenant_id AND p.interaction_id = i.interaction_id)),
                (SELECT count(*) FROM valuation.purchases p WHERE p.tenant_id = $1
                   AND NOT EXISTS (SELECT 1 FROM interaction.interactions i
                                   WHERE i.tenant_id = p.tenant_id AND i.interaction_id = p.interaction_id)),
                (SELECT count(*) FROM valuation.purchases p JOIN interaction.interactions i
                   ON i.tenant_id = p.tenant_id AND i.interaction_id = p.interaction_id
                 WHERE p.tenant_id = $1 AND p.customer_id <> i.customer_id)",
        )
        .bind(t)
        .bind(InteractionType::Purchase as i16)
        .fetch_one(pool)
        .await?;
        // Segmentation's features, kept up to date event by event, equal
        // what a rebuild from its events gives.
        let (drifted, unfeatured): (i64, i64) = sqlx::query_as(
            "WITH rebuilt AS (
                 SELECT customer_id,
                     count(*) FILTER (WHERE type = 'purchase') AS purchases,
                     sum(amount) FILTER (WHERE type = 'purchase') AS monetary,
                     min(occur_time) FILTER (WHERE type = 'purchase') AS first_purchase,
                     max(occur_time) FILTER (WHERE type = 'purchase') AS last_purchase,
                     count(*) FILTER (WHERE type = 'complaint') AS complaints,
                     count(*) FILTER (WHERE type = 'service_request' AND open) AS open_requests
                 FROM segmentation.events WHERE tenant_id = $1 GROUP BY customer_id)
             SELECT
                 (SELECT count(*) FROM segmentation.features f LEFT JOIN rebuilt r USING (customer_id)
                  WHERE f.tenant_id = $1 AND (
                      f.purchases <> coalesce(r.purchases, 0)
                      OR f.monetary IS DISTINCT FROM
                         CASE WHEN r.purchases > 0 THEN coalesce(r.monetary, 0) END
                      OR f.first_purchase IS DISTINCT FROM r.first_purchase
                      OR f.last_purchase IS DISTINCT FROM r.last_purchase
                      OR f.complaints <> coalesce(r.complaints, 0)
                      OR f.open_service_requests <> coalesce(r.open_requests, 0))),
                 (SELECT count(*) FROM rebuilt r WHERE NOT EXISTS
                     (SELECT 1 FROM segmentation.features f
                      WHERE f.tenant_id = $1 AND f.customer_id = r.customer_id))",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        checks.push(Check {
            what: format!(
                "tenant {}: segmentation's features equal a rebuild from its events",
                load.tag
            ),
            problems: (drifted + unfeatured) as u64,
            detail: format!(
                "{drifted} customers' features differ from the rebuild, {unfeatured} customers with events have no features"
            ),
        });
        checks.push(Check {
            what: format!("tenant {}: valuation's purchases equal the interactions' purchases", load.tag),
            problems: (absent + extra + moved) as u64,
            detail: format!("{absent} not projected, {extra} projected but not stored, {moved} under another customer"),
        });
    }
    let crossed: (i64, i64, i64) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM interaction.interactions i JOIN profile.customers c
               ON c.customer_id = i.customer_id WHERE i.tenant_id = ANY($1) AND c.tenant_id <> i.tenant_id),
            (SELECT count(*) FROM segmentation.features f JOIN profile.customers c
               ON c.customer_id = f.customer_id WHERE f.tenant_id = ANY($1) AND c.tenant_id <> f.tenant_id),
            (SELECT count(*) FROM valuation.purchases p JOIN profile.customers c
               ON c.customer_id = p.customer_id WHERE p.tenant_id = ANY($1) AND c.tenant_id <> p.tenant_id)",
    )
    .bind(&tenants)
    .fetch_one(pool)
    .await?;
    checks.push(Check {
        what: "no row refers to another tenant's customer".into(),
        problems: (crossed.0 + crossed.1 + crossed.2) as u64,
        detail: format!(
            "interactions {}, segmentation features {}, valuation purchases {}",
            crossed.0, crossed.1, crossed.2
        ),
    });
    Ok(checks)
}

pub async fn run(stack: &mut Stack, minutes: f64) -> anyhow::Result<Value> {
    let total = Duration::from_secs_f64(minutes.max(0.25) * 60.0);
    let gateway = stack.channel("gateway").await?;
    let tally: Tally = Arc::default();
    let started = Instant::now();
    let end = started + total;
    println!(
        "\nsoak: {:.1} minutes of mixed load for two tenants; a service killed every {} s, PostgreSQL restarted once, segmentation's connections cut once",
        total.as_secs_f64() / 60.0,
        KILL_EVERY.as_secs()
    );
    let mut loads = Vec::new();
    for tag in ["a", "b"] {
        let tenant = stack.tenant(&format!("bench soak {tag}")).await?;
        loads.push(Arc::new(Load {
            tenant,
            tag: tag.into(),
            gateway: gateway.clone(),
            tally: tally.clone(),
            acked: Arc::default(),
            end,
        }));
    }
    let mut tasks = Vec::new();
    for load in &loads {
        let mut known = Vec::new();
        for i in 0..100 {
            if let Some(id) = load
                .create_customer(format!("{}-known-{i}", load.tag))
                .await?
            {
                known.push(id);
            }
        }
        anyhow::ensure!(!known.is_empty(), "no customer could be created");
        tasks.push(tokio::spawn(load.clone().ingest(known.clone())));
        tasks.push(tokio::spawn(load.clone().read(known)));
        tasks.push(tokio::spawn(load.clone().merge()));
        tasks.push(tokio::spawn(load.clone().segments()));
        tasks.push(tokio::spawn(load.clone().fits()));
        tasks.push(tokio::spawn(load.clone().keys()));
    }

    // Faults, on a schedule: consumers cut at a fifth of the run, the
    // database restarted at two fifths, a service killed every 30 s.
    let mut faults: Vec<(String, Duration)> = Vec::new();
    let cut_at = started + total / 5;
    let restart_at = started + total * 2 / 5;
    let (mut cut, mut restarted) = (false, false);
    let mut next_kill = started + KILL_EVERY;
    let offset = (std::process::id() as usize) % SERVICES.len();
    let mut kills = 0usize;
    while Instant::now() < end {
        let now = Instant::now();
        if !cut && now >= cut_at {
            cut = true;
            let ended = stack.drop_connections("segmentation").await?;
            faults.push((
                format!("segmentation's {ended} database connections cut"),
                Duration::ZERO,
            ));
        }
        if !restarted && now >= restart_at {
            restarted = true;
            let t = Instant::now();
            if stack.restart_postgres().await? {
                faults.push(("PostgreSQL restarted".into(), t.elapsed()));
            }
        }
        if now >= next_kill {
            let service = SERVICES[(offset + kills) % SERVICES.len()];
            kills += 1;
            let gone = stack.kill_and_restart(service).await?;
            faults.push((
                format!("{service} killed (SIGKILL) and started again"),
                gone,
            ));
            next_kill += KILL_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.await.context("a load task failed")??;
    }
    let load_time = started.elapsed();

    let pool = stack.admin_pool().await?;
    let mut checks = audit(&pool, &loads).await?;
    pool.close().await;
    // Valuation's kept purchase summaries, merged batch by batch while
    // services were killed, equal a rebuild from its purchases.
    let valuation = stack.pool(rapport_valuation::SCHEMA).await?;
    let mut conn = valuation.acquire().await?;
    for load in &loads {
        let (summaries, currencies) =
            rapport_valuation::store::summaries::drift(&mut conn, load.tenant.id).await?;
        checks.push(Check {
            what: format!(
                "tenant {}: valuation's kept purchase summaries equal a rebuild from its purchases",
                load.tag
            ),
            problems: (summaries + currencies) as u64,
            detail: format!(
                "{summaries} summaries and {currencies} currency counts differ from the rebuild"
            ),
        });
    }
    drop(conn);
    valuation.close().await;

    let mut table = Table::new("Faults", vec!["fault", "back in"]);
    for (what, took) in &faults {
        table.row(vec![what.clone(), super::secs(*took)]);
    }
    table.print();
    let mut table = Table::new("Calls answered (retries counted)", vec!["call", "answers"]);
    let answers = tally.lock().map(|t| t.clone()).unwrap_or_default();
    for (what, n) in &answers {
        table.row(vec![what.clone(), count(*n)]);
    }
    table.print();
    let mut table = Table::new("Audit", vec!["check", "result", "detail"]);
    for c in &checks {
        table.row(vec![
            c.what.clone(),
            if c.problems == 0 {
                "ok".into()
            } else {
                format!("FAILED ({})", c.problems)
            },
            c.detail.clone(),
        ]);
    }
    table.print();
    let failed: Vec<&Check> = checks.iter().filter(|c| c.problems > 0).collect();
    let internal: u64 = answers
        .iter()
        .filter(|(k, _)| k.ends_with(" Internal"))
        .map(|(_, n)| *n)
        .sum();
    let value = json!({
        "minutes": load_time.as_secs_f64() / 60.0,
        "faults": faults.iter().map(|(w, t)| json!({"fault": w, "back_in_s": t.as_secs_f64()})).collect::<Vec<_>>(),
        "answers": answers,
        "audit": checks.iter().map(|c| json!({"check": c.what, "problems": c.problems, "detail": c.detail})).collect::<Vec<_>>(),
    });
    anyhow::ensure!(
        failed.is_empty(),
        "the soak's audit failed: {}",
        failed
            .iter()
            .map(|c| format!("{} ({})", c.what, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    );
    anyhow::ensure!(
        internal == 0,
        "{internal} calls were answered INTERNAL during the soak"
    );
    Ok(value)
}
