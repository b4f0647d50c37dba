//! Scoring customers: the `ScoreCustomers` run over every customer of a
//! tenant, and the background re-scoring of customers whose purchases
//! changed (with the models and settings of the last run).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use rapport_kit::context::CallContext;
use rapport_kit::convert::timestamp;
use rapport_kit::error::ApiError;
use rapport_kit::feed::{self, NewEvent};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::interaction::v1::{
    CustomerIdList, ExportSummariesRequest, PurchaseHistorySummary, export_summaries_request,
};
use rapport_proto::rapport::valuation::v1::valuation_event::Event;
use rapport_proto::rapport::valuation::v1::{Model, ValueRemovalReason};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::discrete::Opportunities;
use crate::domain::events::{self, ValueChange};
use crate::domain::fitting::Kind;
use crate::domain::gamma_gamma::GammaGamma;
use crate::domain::money;
use crate::domain::scoring::{
    Input, Settings, Thresholds, Tier, TransactionModel, Unit, purchase_scores, score, tier_at,
};
use crate::peers::Interaction;
use crate::profitability::Basis;
use crate::store::{self, Brief, StateRow, ValueRow};

mod rescore;
pub use rescore::{rescore_loop, rescore_tenant};

/// Customers re-scored in the background per batch.
const RESCORE_BATCH: i64 = 5000;
/// How often the background re-scoring looks for work.
const RESCORE_POLL: Duration = Duration::from_millis(300);

/// The models a scoring uses.
#[derive(Debug, Clone)]
pub struct Models {
    /// Transaction model id.
    pub transaction_id: Uuid,
    /// Transaction model.
    pub transaction: TransactionModel,
    /// Its unit.
    pub unit: Unit,
    /// Spend model id.
    pub spend_id: Uuid,
    /// Spend model.
    pub spend: GammaGamma,
    /// Its currency.
    pub currency: String,
    /// The time zone whose days the transaction model counted purchases
    /// by ("UTC" for models fitted before zones existed).
    pub time_zone: String,
}

/// A stored model decoded.
pub fn decode(row: &store::ModelRow) -> Result<Model, ApiError> {
    let mut m = Model::decode(row.body.as_slice()).map_err(|e| {
        ApiError::internal(format!(
            "stored model {} does not decode: {e}",
            row.model_id
        ))
    })?;
    m.active = row.active;
    m.activate_time = row.activate_time.map(timestamp);
    Ok(m)
}

fn params(m: &Model) -> Vec<f64> {
    m.parameters.iter().map(|p| p.value).collect()
}

fn transaction_of(m: &Model) -> Option<(TransactionModel, Unit)> {
    let kind = Kind::from_proto(m.kind)?;
    let unit = Unit::from_proto(m.data_window.as_ref()?.period_unit)?;
    Some((kind.transaction_model(&params(m))?, unit))
}

fn spend_of(m: &Model) -> Option<GammaGamma> {
    (Kind::from_proto(m.kind) == Some(Kind::GammaGamma) && m.parameters.len() == 3)
        .then(|| GammaGamma::from_slice(&params(m)))
}

/// The active models to score with: the transaction model of `kind` (or
/// the first active of BG/NBD, Pareto/NBD and MBG/NBD) and the Gamma-Gamma
/// model.
pub async fn active_models(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: Option<Kind>,
) -> Result<Models, ApiError> {
    let transaction = match kind {
        Some(k) => store::active_model(conn, tenant, k.to_proto() as i16)
            .await?
            .ok_or_else(|| {
                ApiError::FailedPrecondition(format!("no active {} model", k.display()))
            })?,
        None => {
            let mut found = None;
            for k in Kind::TRANSACTION {
                found = store::active_model(conn, tenant, k.to_proto() as i16).await?;
                if found.is_some() {
                    break;
                }
            }
            found.ok_or_else(|| {
                ApiError::FailedPrecondition(
                    "no active transaction model (BG/NBD, Pareto/NBD, MBG/NBD, BG/BB or sBG)"
                        .into(),
                )
            })?
        }
    };
    let spend = store::active_model(conn, tenant, Kind::GammaGamma.to_proto() as i16)
        .await?
        .ok_or_else(|| ApiError::FailedPrecondition("no active Gamma-Gamma model".into()))?;
    models_of(&transaction, &spend)
}

fn models_of(transaction: &store::ModelRow, spend: &store::ModelRow) -> Result<Models, ApiError> {
    let t = decode(transaction)?;
    let s = decode(spend)?;
    let (tm, unit) = transaction_of(&t).ok_or_else(|| {
        ApiError::internal(format!(
            "stored model {} is not a transaction model",
            t.model_id
        ))
    })?;
    let gg = spend_of(&s).ok_or_else(|| {
        ApiError::internal(format!("stored model {} is not a spend model", s.model_id))
    })?;
    Ok(Models {
        transaction_id: transaction.model_id,
        transaction: tm,
        unit,
        spend_id: spend.model_id,
        spend: gg,
        currency: s.currency_code,
        time_zone: t
            .data_window
            .as_ref()
            .map(|w| w.time_zone.clone())
            .unwrap_or_default(),
    })
}

/// A summary's history in opportunities, when it carries a consistent one.
pub fn opportunities(s: &PurchaseHistorySummary) -> Option<Opportunities> {
    let o = s.opportunities.as_ref()?;
    Opportunities::new(o.opportunities, o.frequency, o.recency, o.renewals)
}

/// What scoring one customer needs from its summary.
fn input(s: &PurchaseHistorySummary) -> Option<(Uuid, Input)> {
    let id = Uuid::parse_str(&s.customer_id).ok()?;
    let amount = |m: &Option<rapport_proto::rapport::common::v1::Money>| {
        m.as_ref().and_then(money::from_money).unwrap_or_default()
    };
    Some((
        id,
        Input {
            frequency: s.frequency,
            recency: s.recency,
            t: s.t,
            monetary_value: if s.monetary_value.is_finite() {
                s.monetary_value
            } else {
                0.0
            },
            historical_value: amount(&s.historical_value),
            historical_margin: amount(&s.historical_margin),
            opportunities: opportunities(s).unwrap_or_default(),
        },
    ))
}

/// A customer scored, before its tier is known.
struct Computed {
    id: Uuid,
    input: Input,
    scored: crate::domain::scoring::Scored,
}

/// What scoring takes from exported summaries.
fn inputs_of(summaries: &[PurchaseHistorySummary]) -> Vec<(Uuid, Input)> {
    summaries.iter().filter_map(input).collect()
}

/// Scores every customer: the purchase-process part once per distinct
/// history, on every core.
fn compute(
    inputs: Vec<(Uuid, Input)>,
    models: &Models,
    settings: &Settings,
) -> Result<Vec<Computed>, ApiError> {
    let key = |i: &Input| {
        let o = i.observation();
        (
            (o.frequency.to_bits(), o.recency.to_bits(), o.age.to_bits()),
            i.opportunities,
        )
    };
    let mut index: HashMap<((u64, u64, u64), Opportunities), usize> = HashMap::new();
    let mut distinct = Vec::new();
    for (_, i) in &inputs {
        index.entry(key(i)).or_insert_with(|| {
            distinct.push(i.history());
            distinct.len() - 1
        });
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(distinct.len() / 200)
        .max(1);
    let size = distinct.len().div_ceil(threads).max(1);
    let tm = models.transaction;
    let parts: Vec<Vec<Option<(f64, f64, f64)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = distinct
            .chunks(size)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|o| purchase_scores(&tm, o, settings))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let purchase: Vec<Option<(f64, f64, f64)>> = parts.into_iter().flatten().collect();
    let mut out = Vec::with_capacity(inputs.len());
    for (id, i) in inputs {
        let p = index
            .get(&key(&i))
            .and_then(|&k| purchase.get(k).copied().flatten())
            .ok_or_else(|| {
                ApiError::internal(format!("the transaction model cannot score customer {id}"))
            })?;
        let scored = score(&models.spend, &i, p, settings).ok_or_else(|| {
            ApiError::internal(format!("the spend model cannot score customer {id}"))
        })?;
        out.push(Computed {
            id,
            input: i,
            scored,
        });
    }
    Ok(out)
}

fn row(
    c: &Computed,
    tier: Tier,
    models: &Models,
    settings: &Settings,
    score_time: DateTime<Utc>,
    basis: Option<&Basis>,
) -> ValueRow {
    let mut r = ValueRow {
        customer_id: c.id,
        currency_code: models.currency.clone(),
        clv: c.scored.clv,
        p_alive: c.scored.p_alive,
        expected_purchases: c.scored.expected_purchases,
        expected_order_value: c.scored.expected_order_value,
        historical_value: c.scored.historical_value,
        value_tier: tier.to_proto() as i16,
        transaction_model_id: models.transaction_id,
        spend_model_id: models.spend_id,
        score_time,
        horizon_periods: settings.horizon_periods,
        period_unit: settings.unit.to_proto() as i16,
        discount_rate: settings.discount_rate,
        margin_ratio: settings.margin_ratio,
        frequency: c.input.frequency,
        recency: c.input.recency,
        t: c.input.t,
        net_clv: None,
        cost_per_purchase: None,
        cost_to_serve: None,
        net_profit: None,
        profit_decile: 0,
    };
    if let Some(b) = basis {
        b.apply(&mut r, c.scored.discounted_purchases);
    }
    r
}

fn changed(old: Option<&Brief>, new: &ValueRow) -> bool {
    old.is_none_or(|o| {
        o.clv != new.clv
            || o.p_alive != new.p_alive
            || o.expected_purchases != new.expected_purchases
            || o.value_tier != new.value_tier
            || o.net_clv != new.net_clv
            || o.profit_decile != new.profit_decile
    })
}

fn value_event(tenant: Uuid, r: &ValueRow) -> NewEvent {
    let changed = events::value_changed(&ValueChange {
        customer: r.customer_id,
        clv: r.clv,
        currency: &r.currency_code,
        p_alive: r.p_alive,
        expected_purchases: r.expected_purchases,
        value_tier: i32::from(r.value_tier),
        score_time: r.score_time,
        net_clv: r.net_clv,
        cost_to_serve: r.cost_to_serve,
        net_profit: r.net_profit,
        profit_decile: i32::from(r.profit_decile),
    });
    NewEvent::new(
        tenant,
        "customer",
        r.customer_id.to_string(),
        events::VALUE_CHANGED,
        &events::envelope(Event::CustomerValueChanged(changed)),
    )
}

/// A removal event.
pub fn removed_event(tenant: Uuid, customer: Uuid, reason: ValueRemovalReason) -> NewEvent {
    NewEvent::new(
        tenant,
        "customer",
        customer.to_string(),
        events::VALUE_REMOVED,
        &events::envelope(Event::CustomerValueRemoved(events::value_removed(
            customer, reason,
        ))),
    )
}

async fn append_chunked(tx: &mut PgConnection, list: &[NewEvent]) -> Result<(), sqlx::Error> {
    for chunk in list.chunks(10_000) {
        feed::append(tx, chunk).await?;
    }
    Ok(())
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Customers scored.
    pub scored: i64,
    /// Values deleted.
    pub deleted: i64,
    /// The models.
    pub models: Models,
    /// The settings.
    pub settings: Settings,
    /// The score time.
    pub score_time: DateTime<Utc>,
    /// Totals over the scored customers.
    pub totals: Totals,
    /// Whether the values were stored (not for a run as of a past instant).
    pub stored: bool,
}

/// Totals of a run over the customers it scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// Sum of the CLVs.
    pub clv: Decimal,
    /// Sum of the expected purchases over the horizon.
    pub expected_purchases: f64,
    /// Mean P(alive); 0 without customers.
    pub mean_p_alive: f64,
    /// The score time plus the horizon.
    pub horizon_end: DateTime<Utc>,
    /// Purchase days the customers made from the score time to the
    /// horizon's end, for a past run whose horizon has ended.
    pub actual_purchases: Option<i64>,
}

/// The end of a run's horizon: the score time plus the horizon's periods.
fn horizon_end(settings: &Settings, score_time: DateTime<Utc>) -> DateTime<Utc> {
    let days = f64::from(settings.horizon_periods) * settings.unit.days();
    score_time + chrono::TimeDelta::milliseconds((days * 86_400_000.0) as i64)
}

impl Totals {
    fn of(computed: &[Computed], settings: &Settings, score_time: DateTime<Utc>) -> Self {
        let n = computed.len();
        Totals {
            clv: computed.iter().map(|c| c.scored.clv).sum(),
            expected_purchases: computed.iter().map(|c| c.scored.expected_purchases).sum(),
            mean_p_alive: if n == 0 {
                0.0
            } else {
                computed.iter().map(|c| c.scored.p_alive).sum::<f64>() / n as f64
            },
            horizon_end: horizon_end(settings, score_time),
            actual_purchases: None,
        }
    }
}

/// What the caller asked a run for (validated beyond the unit-dependent
/// horizon bound).
#[derive(Debug, Clone, Copy)]
pub struct RunRequest {
    /// Transaction model kind, or the default choice.
    pub kind: Option<Kind>,
    /// Horizon; 0 for one year.
    pub horizon_periods: i32,
    /// Discount rate per period; default 10 % a year.
    pub discount_rate: Option<f64>,
    /// Discount rate a year, converted to the model's period when
    /// `discount_rate` is not given.
    pub annual_discount_rate: Option<f64>,
    /// Margin ratio; default 1.
    pub margin_ratio: Option<f64>,
    /// Score as of this past instant and store nothing.
    pub as_of: Option<DateTime<Utc>>,
}

/// The export of every customer (or of `customers`) at `score_time`.
fn export_request(
    models: &Models,
    score_time: DateTime<Utc>,
    customers: Option<Vec<Uuid>>,
) -> ExportSummariesRequest {
    ExportSummariesRequest {
        calibration_end_time: Some(timestamp(score_time)),
        period_unit: models.unit.to_proto(),
        holdout_end_time: None,
        currency_code: models.currency.clone(),
        with_opportunities: models.transaction.discrete(),
        columnar: false,
        time_zone: models.time_zone.clone(),
        restriction: customers.map(|ids| {
            export_summaries_request::Restriction::CustomerIds(CustomerIdList {
                customer_ids: ids.iter().map(Uuid::to_string).collect(),
            })
        }),
    }
}

/// The score time: now, to the microsecond (what the database stores).
fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Runs `ScoreCustomers` for the caller's tenant.
pub async fn run(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    req: RunRequest,
) -> Result<RunOutcome, ApiError> {
    if let Some(as_of) = req.as_of {
        return score_as_of(pool, interaction, ctx, req, as_of).await;
    }
    let mut tx = pool.begin().await?;
    if !store::try_run_lock(&mut tx, ctx.tenant_id).await? {
        return Err(ApiError::Aborted(
            "another scoring run of the tenant is in progress; retry once it has finished".into(),
        ));
    }
    match score_all(pool, &mut tx, interaction, ctx, req).await {
        Ok(outcome) => {
            tx.commit().await?;
            Ok(outcome)
        }
        Err(e) => {
            // Now, not when the pool next hands out the connection: the run
            // lock must be free for the caller's next attempt (say, after
            // activating the model this one lacked).
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Every customer's scoring input at `end` from the purchase summaries
/// kept from the interaction feed, when they hold exactly what the export
/// would (see [`crate::kept`]; a model that counts purchase days, fitted
/// in UTC). None otherwise: the caller exports.
async fn kept_inputs(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    models: &Models,
    end: DateTime<Utc>,
) -> Result<Option<Vec<(Uuid, Input)>>, ApiError> {
    if models.transaction.discrete() || !matches!(models.time_zone.as_str(), "" | "UTC") {
        return Ok(None);
    }
    let unit_days = models.unit.days();
    let mut inputs = Vec::new();
    let read = crate::kept::Read {
        end,
        currency: &models.currency,
        cohort: None,
        full: true,
    };
    let read = crate::kept::read(pool, interaction, ctx, read, |row| {
        let c = crate::domain::kept::fit_case(&row, end, unit_days);
        inputs.push((
            row.customer_id,
            Input {
                frequency: c.frequency,
                recency: c.recency,
                t: c.t,
                monetary_value: c.monetary_value,
                historical_value: Decimal::new(row.value, 9),
                historical_margin: Decimal::new(row.margin, 9),
                opportunities: Opportunities::default(),
            },
        ));
    })
    .await?;
    Ok(read.map(|_| inputs))
}

/// The body of a scoring run, under the tenant's run lock in `tx` (reads of
/// the kept summaries take another connection of `pool`).
async fn score_all(
    pool: &PgPool,
    tx: &mut PgConnection,
    interaction: &Interaction,
    ctx: &CallContext,
    req: RunRequest,
) -> Result<RunOutcome, ApiError> {
    let tenant = ctx.tenant_id;
    let started = now();
    let models = active_models(&mut *tx, tenant, req.kind).await?;
    let settings = settings_of(&models, &req)?;
    let score_time = started;
    let mut phases = Phases::new();
    let inputs = match kept_inputs(pool, interaction, ctx, &models, score_time).await? {
        Some(inputs) => {
            phases.end("kept summaries");
            inputs
        }
        None => {
            let summaries = interaction
                .export(ctx, export_request(&models, score_time, None))
                .await?;
            phases.end("export");
            inputs_of(&summaries)
        }
    };
    let (m, s) = (models.clone(), settings);
    let mut computed = tokio::task::spawn_blocking(move || compute(inputs, &m, &s))
        .await
        .map_err(ApiError::internal)??;
    phases.end("compute");
    let totals = Totals::of(&computed, &settings, score_time);
    computed.sort_unstable_by(|a, b| b.scored.clv.cmp(&a.scored.clv).then(a.id.cmp(&b.id)));
    let n = computed.len();
    let basis = Basis::full(&mut *tx, tenant, score_time, &models.currency).await?;
    phases.end("cost to serve");
    let rows: Vec<ValueRow> = computed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            row(
                c,
                tier_at(i, n),
                &models,
                &settings,
                score_time,
                basis.as_ref(),
            )
        })
        .collect();
    drop(computed);
    let clvs: Vec<Decimal> = rows.iter().map(|r| r.clv).collect();
    let thresholds = Thresholds::from_ranked(&clvs);
    drop(clvs);

    phases.end("rank");
    store::write_lock(&mut *tx, tenant).await?;
    let old = store::briefs(&mut *tx, tenant).await?;
    phases.end("read previous");
    store::delete_all_values(&mut *tx, tenant).await?;
    store::copy_values(&mut *tx, tenant, &rows).await?;
    phases.end("write values");
    let reasons = store::clear_queue(&mut *tx, tenant, started).await?;
    // Events chunk by chunk, so a million of them are never held at once.
    for chunk in rows.chunks(10_000) {
        let list: Vec<NewEvent> = chunk
            .iter()
            .filter(|r| changed(old.get(&r.customer_id), r))
            .map(|r| value_event(tenant, r))
            .collect();
        feed::append(&mut *tx, &list).await?;
    }
    let mut gone: Vec<Uuid> = if old.is_empty() {
        Vec::new()
    } else {
        let present: HashSet<Uuid> = rows.iter().map(|r| r.customer_id).collect();
        old.keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect()
    };
    gone.sort_unstable();
    let list: Vec<NewEvent> = gone
        .iter()
        .map(|id| {
            removed_event(
                tenant,
                *id,
                events::removal_reason(reasons.get(id).map(String::as_str)),
            )
        })
        .collect();
    append_chunked(&mut *tx, &list).await?;
    phases.end("events");
    store::save_scoring_state(
        &mut *tx,
        tenant,
        &StateRow {
            run_id: Uuid::now_v7(),
            transaction_model_id: models.transaction_id,
            spend_model_id: models.spend_id,
            horizon_periods: settings.horizon_periods,
            period_unit: settings.unit.to_proto() as i16,
            discount_rate: settings.discount_rate,
            margin_ratio: settings.margin_ratio,
            top_threshold: thresholds.top,
            high_threshold: thresholds.high,
            medium_threshold: thresholds.medium,
            score_time,
            cost_rates: basis.as_ref().map(Basis::rates_json),
            profit_bounds: basis.as_ref().map(Basis::bounds),
        },
    )
    .await?;
    tracing::info!(customers = n, phases = %phases, "scoring run written");
    Ok(RunOutcome {
        scored: n as i64,
        deleted: gone.len() as i64,
        models,
        settings,
        score_time,
        totals,
        stored: true,
    })
}

/// How long each phase of a run took, for its log line.
struct Phases {
    at: std::time::Instant,
    took: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new() -> Self {
        Self {
            at: std::time::Instant::now(),
            took: Vec::new(),
        }
    }

    /// Ends the phase `name`, which began where the last one ended.
    fn end(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.took.push((name, now - self.at));
        self.at = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.took.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.3} s", took.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A run's settings: the request's, defaults filled in for the models'
/// period unit.
fn settings_of(models: &Models, req: &RunRequest) -> Result<Settings, ApiError> {
    let unit = models.unit;
    let horizon = if req.horizon_periods == 0 {
        unit.default_horizon()
    } else {
        req.horizon_periods
    };
    if horizon > unit.max_horizon() {
        return Err(ApiError::invalid(
            "horizon_periods",
            format!(
                "must be at most ten years in the transaction model's unit ({} periods)",
                unit.max_horizon()
            ),
        ));
    }
    Ok(Settings {
        horizon_periods: horizon,
        unit,
        discount_rate: req
            .discount_rate
            .or(req.annual_discount_rate.map(|a| unit.period_rate(a)))
            .unwrap_or(unit.default_discount_rate()),
        margin_ratio: req.margin_ratio.unwrap_or(1.0),
    })
}

/// A run as of a past instant: every customer's purchases before `as_of`
/// scored with the active models, ages counted to `as_of`, and nothing
/// stored. When the horizon has ended by now (and the transaction model
/// counts purchase days), the export also counts each customer's purchase
/// days in the horizon: the actual purchases beside the expected ones.
async fn score_as_of(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    req: RunRequest,
    as_of: DateTime<Utc>,
) -> Result<RunOutcome, ApiError> {
    let mut conn = pool.acquire().await?;
    let models = active_models(&mut conn, ctx.tenant_id, req.kind).await?;
    drop(conn);
    let settings = settings_of(&models, &req)?;
    let end = horizon_end(&settings, as_of);
    let backtest = end <= now() && !models.transaction.discrete();
    let export = ExportSummariesRequest {
        holdout_end_time: backtest.then(|| timestamp(end)),
        ..export_request(&models, as_of, None)
    };
    let summaries = interaction.export(ctx, export).await?;
    let actual: i64 = summaries
        .iter()
        .filter(|s| input(s).is_some())
        .map(|s| s.holdout_purchases)
        .sum();
    let (m, s) = (models.clone(), settings);
    let computed = tokio::task::spawn_blocking(move || compute(inputs_of(&summaries), &m, &s))
        .await
        .map_err(ApiError::internal)??;
    let totals = Totals {
        actual_purchases: backtest.then_some(actual),
        ..Totals::of(&computed, &settings, as_of)
    };
    Ok(RunOutcome {
        scored: computed.len() as i64,
        deleted: 0,
        models,
        settings,
        score_time: as_of,
        totals,
        stored: false,
    })
}

/// The tenant's current scoring: the models, settings and tier thresholds
/// of its last ScoreCustomers run.
struct Scoring {
    /// The run.
    run: store::StateRow,
    models: Models,
    settings: Settings,
    thresholds: Thresholds,
}

/// The tenant's current [`Scoring`]. None before the first run (or when its
/// models are gone).
async fn current_scoring(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<Option<Scoring>, ApiError> {
    let Some(state) = store::scoring_state(&mut *conn, tenant).await? else {
        return Ok(None);
    };
    let (Some(t), Some(s)) = (
        store::get_model(&mut *conn, tenant, state.transaction_model_id).await?,
        store::get_model(&mut *conn, tenant, state.spend_model_id).await?,
    ) else {
        return Ok(None);
    };
    let models = models_of(&t, &s)?;
    let settings = Settings {
        horizon_periods: state.horizon_periods,
        unit: Unit::from_proto(i32::from(state.period_unit)).unwrap_or(models.unit),
        discount_rate: state.discount_rate,
        margin_ratio: state.margin_ratio,
    };
    let thresholds = Thresholds {
        top: state.top_threshold,
        high: state.high_threshold,
        medium: state.medium_threshold,
    };
    Ok(Some(Scoring {
        run: state,
        models,
        settings,
        thresholds,
    }))
}

/// The values `customers` had at `as_of`: their purchase histories up to
/// that instant scored with the tenant's current scoring (models, settings
/// and tier thresholds of the last ScoreCustomers run), ages counted to
/// `as_of`. Computed on request, never stored. Customers without a purchase
/// before `as_of` have no value then and are left out, and so are customers
/// merged into another (the export answers for the survivor), as the stored
/// values do.
pub async fn values_as_of(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    customers: Vec<Uuid>,
    as_of: DateTime<Utc>,
) -> Result<Vec<ValueRow>, ApiError> {
    tenant_values_as_of(pool, interaction, ctx, Some(customers), as_of).await
}

/// The values `customers` (or every customer of the tenant, when None) had
/// at `as_of`, as [`values_as_of`] computes them.
pub async fn tenant_values_as_of(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    customers: Option<Vec<Uuid>>,
    as_of: DateTime<Utc>,
) -> Result<Vec<ValueRow>, ApiError> {
    let mut conn = pool.acquire().await?;
    let scoring = current_scoring(&mut conn, ctx.tenant_id).await?;
    let Scoring {
        run,
        models,
        settings,
        thresholds,
    } = scoring.ok_or_else(|| {
        ApiError::FailedPrecondition(
            "the tenant has not been scored yet: values as of an instant use the models and \
             settings of its last ScoreCustomers run"
                .into(),
        )
    })?;
    let basis = match &customers {
        None => Basis::full(&mut conn, ctx.tenant_id, as_of, &models.currency).await?,
        Some(ids) => {
            Basis::of(&mut conn, ctx.tenant_id, as_of, &models.currency, &run, ids).await?
        }
    };
    drop(conn);
    let asked: Option<HashSet<Uuid>> = customers.as_ref().map(|c| c.iter().copied().collect());
    let summaries = interaction
        .export(ctx, export_request(&models, as_of, customers))
        .await?;
    let (m, st) = (models.clone(), settings);
    let computed = tokio::task::spawn_blocking(move || compute(inputs_of(&summaries), &m, &st))
        .await
        .map_err(ApiError::internal)??;
    Ok(computed
        .iter()
        .filter(|c| asked.as_ref().is_none_or(|a| a.contains(&c.id)))
        .map(|c| {
            row(
                c,
                thresholds.tier(c.scored.clv),
                &models,
                &settings,
                as_of,
                basis.as_ref(),
            )
        })
        .collect())
}
