//! Cost to serve and profitability, one use case per method (contract:
//! `rapport/valuation/v1/profitability.proto`): setting and reading the
//! cost model's versions, a customer's profitability, the report, and the
//! basis of net CLV that scoring applies to each value. Each use case owns
//! its transaction; pricing is in [`store::profitability`], the rules in
//! [`crate::domain::profit`]. The report, computed or kept, is in
//! [`report`].

pub mod report;

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use prost::Message;
use rapport_kit::convert::timestamp;
use rapport_kit::error::ApiError;
use rapport_kit::idempotency;
use rapport_proto::rapport::valuation::v1 as pb;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::profit::{
    self, CostModel, Figures, Line, Rates, decile_bounds, decile_by_bounds, decile_of_rank,
};
use crate::store::costs::{self, Version};
use crate::store::{self, StateRow, ValueRow};

/// The request-id scope of `SetCostModel`.
pub const SET_SCOPE: &str = "SetCostModel";
/// The days of the window that net CLV and the profit decile look back on.
pub const TRAILING_DAYS: i64 = 365;

/// A window [start, end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive.
    pub end: DateTime<Utc>,
}

/// The etag of a version.
pub fn etag(version: i32) -> String {
    format!("cost-model-v{version}")
}

/// A stored version as the API shows it.
pub fn to_proto(v: &Version) -> Result<pb::CostModel, ApiError> {
    let mut m = pb::CostModel::decode(v.body.as_slice()).map_err(ApiError::internal)?;
    m.version = v.version;
    m.etag = etag(v.version);
    m.effective_time = Some(timestamp(v.effective_time));
    m.create_time = Some(timestamp(v.create_time));
    Ok(m)
}

pub(crate) fn no_model() -> ApiError {
    ApiError::FailedPrecondition(
        "the tenant has no cost model: set one with SetCostModel first".into(),
    )
}

/// `SetCostModel`: stores `model` (whose normalised form is `body`) as the
/// next version, unless `etag` is stale or the currency changes.
pub async fn set(
    pool: &PgPool,
    tenant: Uuid,
    model: &CostModel,
    body: &pb::CostModel,
    expected_etag: &str,
    request: Option<(&str, &str)>,
) -> Result<pb::CostModel, ApiError> {
    let mut tx = pool.begin().await?;
    costs::lock(&mut tx, tenant).await?;
    if let Some((id, fingerprint)) = request
        && let Some(seen) = idempotency::seen(&mut tx, tenant, SET_SCOPE, id).await?
    {
        if seen.fingerprint != fingerprint {
            return Err(ApiError::AlreadyExists(format!(
                "request_id {id:?} was used for a different cost model; use a new request_id"
            )));
        }
        let v = costs::by_id(&mut tx, tenant, seen.result_id)
            .await?
            .ok_or_else(|| ApiError::internal("a remembered cost model version is gone"))?;
        return to_proto(&v);
    }
    let latest = costs::latest(&mut tx, tenant).await?;
    if !expected_etag.is_empty() {
        let current = latest.as_ref().map(|l| etag(l.version));
        if current.as_deref() != Some(expected_etag) {
            return Err(ApiError::Aborted(match current {
                Some(c) => format!(
                    "the cost model changed since it was read (etag {c} now); read it again"
                ),
                None => {
                    "the tenant has no cost model yet: leave etag empty to set the first".into()
                }
            }));
        }
    }
    if let Some(l) = &latest
        && l.currency_code != model.currency
    {
        return Err(ApiError::FailedPrecondition(format!(
            "the tenant's cost model is in {}; a version in {} cannot follow it",
            l.currency_code, model.currency
        )));
    }
    let version = latest.map_or(1, |l| l.version + 1);
    let id = Uuid::now_v7();
    let encoded = body.encode_to_vec();
    let create_time = costs::insert(&mut tx, tenant, version, id, model, &encoded).await?;
    if let Some((rid, fingerprint)) = request {
        idempotency::remember(&mut tx, tenant, SET_SCOPE, rid, fingerprint, id).await?;
    }
    tx.commit().await?;
    to_proto(&Version {
        version,
        cost_model_id: id,
        effective_time: model.effective_time,
        create_time,
        currency_code: model.currency.clone(),
        body: encoded,
    })
}

/// Which version `GetCostModel` asks for.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// In effect at an instant.
    At(DateTime<Utc>),
    /// By number.
    Number(i32),
}

/// `GetCostModel`.
pub async fn get(pool: &PgPool, tenant: Uuid, which: Which) -> Result<pb::CostModel, ApiError> {
    let mut conn = pool.acquire().await?;
    let found = match which {
        Which::At(t) => costs::in_effect(&mut conn, tenant, t).await?,
        Which::Number(n) => costs::by_version(&mut conn, tenant, n).await?,
    };
    match (found, which) {
        (Some(v), _) => to_proto(&v),
        (None, Which::Number(n)) => Err(ApiError::not_found("cost model version", n.to_string())),
        (None, Which::At(_)) => Err(ApiError::not_found(
            "cost model",
            "of the tenant (none is set: use SetCostModel)",
        )),
    }
}

/// `ListCostModels`: up to `limit` versions below `before`, newest first.
pub async fn list(
    pool: &PgPool,
    tenant: Uuid,
    before: Option<i32>,
    limit: i64,
) -> Result<Vec<Version>, ApiError> {
    let mut conn = pool.acquire().await?;
    Ok(costs::list(&mut conn, tenant, before, limit).await?)
}

async fn currency(conn: &mut PgConnection, tenant: Uuid) -> Result<String, ApiError> {
    costs::currency(conn, tenant).await?.ok_or_else(no_model)
}

/// Zero figures for a customer with nothing in the window.
fn nothing(customer: Uuid) -> Figures {
    Figures {
        customer,
        purchases: 0,
        purchase_days: 0,
        revenue: Decimal::ZERO,
        returns: 0,
        refunds: Decimal::ZERO,
        margin: Decimal::ZERO,
        lines: [Line::default(); 6],
        first_purchase: None,
        rung: 0,
        stage: 0,
        tier: 0,
    }
}

/// `GetCustomerProfitability`: the cost model's currency and the
/// customer's figures.
pub async fn customer(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    window: Window,
) -> Result<(String, Figures), ApiError> {
    let mut conn = pool.acquire().await?;
    let currency = currency(&mut conn, tenant).await?;
    let priced = store::profitability::figures(
        &mut conn,
        tenant,
        window.start,
        window.end,
        &currency,
        Some(&[customer]),
    )
    .await?;
    let figures = priced
        .figures
        .into_iter()
        .next()
        .unwrap_or_else(|| nothing(customer));
    Ok((currency, figures))
}

// ------------------------------------------------------------ net CLV

/// One customer's part of the basis.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Net {
    cost: Decimal,
    net: Decimal,
    days: i64,
    rung: i16,
    decile: i16,
}

impl Net {
    /// A customer's entry from its figures, net profit and decile.
    fn entry(f: &Figures, net: Decimal, decile: i16) -> (Uuid, Net) {
        let n = Net {
            cost: f.cost(),
            net,
            days: f.purchase_days,
            rung: f.rung,
            decile,
        };
        (f.customer, n)
    }
}

/// What scoring needs to put a value net of the cost to serve on each
/// customer: the figures of the 365 days before the score time, the cost
/// per purchase of each ladder rung and the profit deciles' bounds.
#[derive(Debug, Clone)]
pub struct Basis {
    by_customer: HashMap<Uuid, Net>,
    rates: Rates,
    bounds: Vec<Option<Decimal>>,
}

/// The cost model's currency when net values can be computed in `spend`
/// (the spend model's currency).
async fn priced_in(
    conn: &mut PgConnection,
    tenant: Uuid,
    spend: &str,
) -> Result<Option<String>, ApiError> {
    let Some(currency) = costs::currency(conn, tenant).await? else {
        return Ok(None);
    };
    if currency != spend {
        tracing::warn!(%tenant, cost_model = %currency, spend_model = %spend,
            "the cost model's currency is not the spend model's: values are not netted");
        return Ok(None);
    }
    Ok(Some(currency))
}

fn trailing(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (at - TimeDelta::days(TRAILING_DAYS), at)
}

impl Basis {
    /// The basis of a run over every customer: rates and deciles from the
    /// whole tenant at `at`. None without a cost model in `spend`.
    pub async fn full(
        conn: &mut PgConnection,
        tenant: Uuid,
        at: DateTime<Utc>,
        spend: &str,
    ) -> Result<Option<Self>, ApiError> {
        let Some(currency) = priced_in(conn, tenant, spend).await? else {
            return Ok(None);
        };
        let (start, end) = trailing(at);
        let mut figures = store::profitability::figures(conn, tenant, start, end, &currency, None)
            .await?
            .figures;
        let rates = Rates::of(figures.iter().map(|f| (f.rung, f.cost(), f.purchase_days)));
        profit::rank(&mut figures);
        let n = figures.len();
        let nets: Vec<Decimal> = figures.iter().map(Figures::net).collect();
        let bounds = decile_bounds(&nets);
        let by_customer = figures
            .iter()
            .zip(nets)
            .enumerate()
            .map(|(r, (f, net))| Net::entry(f, net, decile_of_rank(r, n)))
            .collect();
        Ok(Some(Basis {
            by_customer,
            rates,
            bounds,
        }))
    }

    /// The basis for some customers, with the rates and decile bounds of
    /// the last full run (`state`). None without a cost model in `spend`,
    /// or when that run had none.
    pub async fn of(
        conn: &mut PgConnection,
        tenant: Uuid,
        at: DateTime<Utc>,
        spend: &str,
        state: &StateRow,
        customers: &[Uuid],
    ) -> Result<Option<Self>, ApiError> {
        let (Some(json), Some(bounds)) = (&state.cost_rates, &state.profit_bounds) else {
            return Ok(None);
        };
        let Some(rates) = rates_from_json(json) else {
            return Ok(None);
        };
        let Some(currency) = priced_in(conn, tenant, spend).await? else {
            return Ok(None);
        };
        let (start, end) = trailing(at);
        let figures =
            store::profitability::figures(conn, tenant, start, end, &currency, Some(customers))
                .await?
                .figures;
        let by_customer = figures
            .iter()
            .map(|f| {
                let net = f.net();
                Net::entry(f, net, decile_by_bounds(net, bounds))
            })
            .collect();
        Ok(Some(Basis {
            by_customer,
            rates,
            bounds: bounds.clone(),
        }))
    }

    /// Puts the net figures on a value: `discounted` is the customer's
    /// discounted expected purchases. A customer the basis has no figures
    /// of (nothing recorded in the window yet) cost nothing in it.
    pub fn apply(&self, row: &mut ValueRow, discounted: f64) {
        let n = self
            .by_customer
            .get(&row.customer_id)
            .copied()
            .unwrap_or(Net {
                cost: Decimal::ZERO,
                net: Decimal::ZERO,
                days: 0,
                rung: 0,
                decile: decile_by_bounds(Decimal::ZERO, &self.bounds),
            });
        let per_purchase = profit::cost_per_purchase(n.cost, n.days, self.rates.of_rung(n.rung));
        row.net_clv = Some(profit::net_clv(row.clv, discounted, per_purchase));
        row.cost_per_purchase = Some(per_purchase);
        row.cost_to_serve = Some(n.cost);
        row.net_profit = Some(n.net);
        row.profit_decile = n.decile;
    }

    /// The rates as the scoring state keeps them.
    pub fn rates_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.rates
                .by_rung
                .iter()
                .map(|(rung, rate)| {
                    (
                        rung.to_string(),
                        serde_json::Value::String(rate.to_string()),
                    )
                })
                .collect(),
        )
    }

    /// The decile bounds as the scoring state keeps them.
    pub fn bounds(&self) -> Vec<Option<Decimal>> {
        self.bounds.clone()
    }
}

fn rates_from_json(v: &serde_json::Value) -> Option<Rates> {
    let by_rung = v
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.parse::<i16>().ok()?, v.as_str()?.parse::<Decimal>().ok()?)))
        .collect::<Option<HashMap<i16, Decimal>>>()?;
    Some(Rates { by_rung })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_survive_the_scoring_state() {
        let rates = Rates::of([(4, Decimal::new(1005, 1), 4), (1, Decimal::from(3), 0)]);
        let basis = Basis {
            by_customer: HashMap::new(),
            rates: rates.clone(),
            bounds: vec![None; 9],
        };
        assert_eq!(rates_from_json(&basis.rates_json()), Some(rates));
        assert_eq!(rates_from_json(&serde_json::json!({"x": "1"})), None);
        assert_eq!(etag(3), "cost-model-v3");
    }
}
