//! The handlers of cost to serve and profitability: each validates its
//! request (field violations for every problem), calls one use case of
//! [`crate::profitability`] and maps the result to its message.

use chrono::Datelike;
use prost_types::Timestamp;
use rapport_proto::rapport::interaction::v1::Channel;

use super::*;
use crate::domain::profit::{self, CostModel, Rate};
use crate::profitability::report::{self, figures_proto};
use crate::profitability::{self as uc, Which, Window};

/// Most contact rates in one cost model.
const MAX_RATES: usize = 200;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 1000;
/// Longest window, in days (10 years).
const MAX_WINDOW_DAYS: i64 = 3653;
/// Most segments in a report.
const MAX_SEGMENTS: usize = 20;

#[derive(Serialize, Deserialize)]
struct VersionCursor {
    v: i32,
}

/// An amount of the model: zero when unset; a violation when malformed,
/// negative or in another currency than the model's (`currency`, when it
/// is valid).
fn amount(v: &mut Violations, field: String, x: Option<&Money>, currency: Option<&str>) -> Decimal {
    let Some(x) = x else {
        return Decimal::ZERO;
    };
    match money::from_money(x) {
        None => {
            v.add(
                field,
                "is malformed: units and nanos must share a sign, nanos within ±999,999,999",
            );
            Decimal::ZERO
        }
        Some(d) if d < Decimal::ZERO => {
            v.add(field, "must not be negative");
            Decimal::ZERO
        }
        Some(d) => {
            if let Some(c) = currency
                && !x.currency_code.is_empty()
                && x.currency_code != c
            {
                v.add(
                    field,
                    format!("is in {:?}; the model is in {c}", x.currency_code),
                );
            }
            d
        }
    }
}

/// The checked model and its normalised form (effective time filled,
/// amounts in the model's currency), or None after recording violations.
fn check_model(
    v: &mut Violations,
    m: &pb::CostModel,
    now: DateTime<Utc>,
) -> Option<(CostModel, pb::CostModel)> {
    let before = v.is_empty();
    let f = |name: &str| format!("cost_model.{name}");
    v.check(
        m.version != 0,
        f("version"),
        "is output only: leave it unset",
    );
    v.check(
        !m.etag.is_empty(),
        f("etag"),
        "is output only: give the etag read to SetCostModelRequest.etag",
    );
    v.check(
        m.create_time.is_some(),
        f("create_time"),
        "is output only: leave it unset",
    );
    let currency = is_currency(&m.currency_code).then_some(m.currency_code.as_str());
    if currency.is_none() {
        v.add(
            f("currency_code"),
            "required: an ISO 4217 code such as \"EUR\"",
        );
    }
    let effective = match &m.effective_time {
        None => now,
        Some(t) => match from_timestamp(t) {
            Some(t) if (1970..=9999).contains(&t.year()) => t,
            _ => {
                v.add(
                    f("effective_time"),
                    "must be a valid time from 1970 to 9999",
                );
                now
            }
        },
    };
    // To the microsecond, as the database stores it: the version answered
    // is the version every later read returns.
    let effective =
        DateTime::from_timestamp_micros(effective.timestamp_micros()).unwrap_or(effective);
    if m.contact_rates.len() > MAX_RATES {
        v.add(f("contact_rates"), format!("at most {MAX_RATES} rates"));
    }
    let mut body = m.clone();
    body.effective_time = Some(timestamp(effective));
    let mut rates = Vec::new();
    let mut pairs = HashSet::new();
    for (i, (c, out)) in m
        .contact_rates
        .iter()
        .zip(body.contact_rates.iter_mut())
        .enumerate()
        .take(MAX_RATES)
    {
        let p = format!("cost_model.contact_rates[{i}]");
        if !profit::is_contact_rate_type(c.r#type) {
            v.add(
                format!("{p}.type"),
                "must be SALES_VISIT, CALL, EMAIL, MEETING, CHAT or CAMPAIGN_SENT",
            );
        }
        if Channel::try_from(c.channel).is_err() {
            v.add(format!("{p}.channel"), "is not a channel");
        } else if !pairs.insert((c.r#type, c.channel)) {
            v.add(p.clone(), "repeats the type and channel of an earlier rate");
        }
        if c.cost.is_none() {
            v.add(format!("{p}.cost"), "required");
        }
        let cost = amount(v, format!("{p}.cost"), c.cost.as_ref(), currency);
        out.cost = Some(to_money(&m.currency_code, cost));
        rates.push(Rate {
            kind: i16::try_from(c.r#type).unwrap_or(0),
            channel: i16::try_from(c.channel).unwrap_or(0),
            cost,
            hour_cost: Decimal::ZERO,
        });
    }
    let price = |v: &mut Violations, name: &str, x: &mut Option<Money>| -> Decimal {
        let d = amount(v, f(name), x.as_ref(), currency);
        if x.is_some() {
            *x = Some(to_money(&m.currency_code, d));
        }
        d
    };
    let request = price(v, "service_request_cost", &mut body.service_request_cost);
    let request_hour = price(
        v,
        "service_request_hour_cost",
        &mut body.service_request_hour_cost,
    );
    let complaint = price(v, "complaint_cost", &mut body.complaint_cost);
    let complaint_hour = price(v, "complaint_hour_cost", &mut body.complaint_hour_cost);
    let handling = price(v, "return_handling_cost", &mut body.return_handling_cost);
    let fixed = price(v, "fixed_cost", &mut body.fixed_cost);
    let days = m.fixed_cost_period_days;
    // A malformed or negative fixed cost is its own violation: whether it
    // needs a period is then unknown, so only the period's range is checked.
    let fixed_valid = m
        .fixed_cost
        .as_ref()
        .is_none_or(|x| money::from_money(x).is_some_and(|d| d >= Decimal::ZERO));
    if !fixed_valid {
        v.check(
            !(0..=3660).contains(&days),
            f("fixed_cost_period_days"),
            "must be in 1..=3660 days (0 without a fixed_cost)",
        );
    } else if fixed > Decimal::ZERO {
        v.check(
            !(1..=3660).contains(&days),
            f("fixed_cost_period_days"),
            "required with a fixed_cost: 1..=3660 days",
        );
    } else {
        v.check(
            days != 0,
            f("fixed_cost_period_days"),
            "is set without a fixed_cost",
        );
    }
    v.check(
        !(0..=10_000).contains(&m.default_margin_rate_bps),
        f("default_margin_rate_bps"),
        "must be in 0..=10000 (basis points)",
    );
    v.check(
        m.description.chars().count() > MAX_DESCRIPTION,
        f("description"),
        format!("at most {MAX_DESCRIPTION} characters"),
    );
    v.check(
        m.description.contains('\0'),
        f("description"),
        "must not contain NUL characters",
    );
    if !before || !v.is_empty() {
        return None;
    }
    use rapport_proto::rapport::interaction::v1::InteractionType as T;
    for (kind, cost, hour_cost) in [
        (T::ServiceRequest, request, request_hour),
        (T::Complaint, complaint, complaint_hour),
        (T::Return, handling, Decimal::ZERO),
    ] {
        rates.push(Rate {
            kind: kind as i16,
            channel: 0,
            cost,
            hour_cost,
        });
    }
    let model = CostModel {
        effective_time: effective,
        currency: m.currency_code.clone(),
        rates,
        fixed_cost: fixed,
        fixed_days: if fixed > Decimal::ZERO { days } else { 1 },
        margin_rate: Decimal::new(i64::from(m.default_margin_rate_bps), 4),
    };
    Some((model, body))
}

/// A window from optional bounds: the end defaults to now, the start to
/// 365 days before the end.
fn window(
    v: &mut Violations,
    start: Option<&Timestamp>,
    end: Option<&Timestamp>,
    now: DateTime<Utc>,
) -> Window {
    let mut at = |field: &str, t: Option<&Timestamp>| -> Option<DateTime<Utc>> {
        let t = t?;
        let parsed = from_timestamp(t).filter(|t| (1970..=9999).contains(&t.year()));
        if parsed.is_none() {
            v.add(field, "must be a valid time from 1970 to 9999");
        }
        parsed
    };
    let end_at = at("end_time", end).unwrap_or(now);
    let start_at = at("start_time", start)
        .unwrap_or(end_at - ChronoDuration::days(crate::profitability::TRAILING_DAYS));
    if end_at <= start_at {
        v.add("end_time", "must be after start_time");
    } else if end_at - start_at > ChronoDuration::days(MAX_WINDOW_DAYS) {
        v.add("start_time", "the window must not be longer than 10 years");
    }
    Window {
        start: start_at,
        end: end_at,
    }
}

/// Longest `max_staleness`, in days.
const MAX_STALENESS_DAYS: i64 = 30;

/// The report's `max_staleness`: None when unset or zero.
fn staleness(v: &mut Violations, r: &pb::GetProfitabilityReportRequest) -> Option<ChronoDuration> {
    let d = r.max_staleness.as_ref()?;
    let field = "max_staleness";
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        v.add(
            field,
            "must be a non-negative duration (seconds and nanos of the same sign)",
        );
        return None;
    }
    let max = MAX_STALENESS_DAYS * 86_400;
    if d.seconds > max || (d.seconds == max && d.nanos > 0) {
        v.add(field, format!("must be at most {MAX_STALENESS_DAYS} days"));
        return None;
    }
    if d.seconds == 0 && d.nanos == 0 {
        return None;
    }
    if r.start_time.is_some() || r.end_time.is_some() {
        v.add(
            field,
            "applies to the default window only (the last 365 days): leave start_time and end_time unset",
        );
        return None;
    }
    Some(ChronoDuration::seconds(d.seconds) + ChronoDuration::nanoseconds(i64::from(d.nanos)))
}

impl ValuationApi {
    pub(super) async fn do_set_cost_model(
        &self,
        req: Request<pb::SetCostModelRequest>,
    ) -> Result<Response<pb::SetCostModelResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        check_request_id(&mut v, &r.request_id);
        let checked = match &r.cost_model {
            None => {
                v.add("cost_model", "required");
                None
            }
            Some(m) => check_model(&mut v, m, Utc::now()),
        };
        v.finish()?;
        let (model, body) = checked.ok_or_else(|| ApiError::invalid("cost_model", "required"))?;
        let fingerprint = hex::encode(Sha256::digest(
            pb::SetCostModelRequest {
                request_id: String::new(),
                ..r.clone()
            }
            .encode_to_vec(),
        ));
        let request =
            (!r.request_id.is_empty()).then_some((r.request_id.as_str(), fingerprint.as_str()));
        let stored = uc::set(&self.pool, ctx.tenant_id, &model, &body, &r.etag, request).await?;
        Ok(Response::new(pb::SetCostModelResponse {
            cost_model: Some(stored),
        }))
    }

    pub(super) async fn do_get_cost_model(
        &self,
        req: Request<pb::GetCostModelRequest>,
    ) -> Result<Response<pb::GetCostModelResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(r.version < 0, "version", "must not be negative");
        v.check(
            r.version > 0 && r.as_of.is_some(),
            "as_of",
            "give as_of or version, not both",
        );
        let at = match &r.as_of {
            None => Utc::now(),
            Some(t) => from_timestamp(t).unwrap_or_else(|| {
                v.add("as_of", "is not a valid timestamp");
                Utc::now()
            }),
        };
        v.finish()?;
        let which = if r.version > 0 {
            Which::Number(r.version)
        } else {
            Which::At(at)
        };
        let model = uc::get(&self.pool, ctx.tenant_id, which).await?;
        Ok(Response::new(pb::GetCostModelResponse {
            cost_model: Some(model),
        }))
    }

    pub(super) async fn do_list_cost_models(
        &self,
        req: Request<pb::ListCostModelsRequest>,
    ) -> Result<Response<pb::ListCostModelsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check(r.page_size > 1000, "page_size", "must be at most 1000");
        let limit = page_size(&mut v, r.page_size);
        v.finish()?;
        let scope = format!("{}/ListCostModels", ctx.tenant_id);
        let before = self
            .page_tokens
            .decode::<VersionCursor>(&scope, &r.page_token)?
            .map(|c| c.v);
        let mut rows = uc::list(&self.pool, ctx.tenant_id, before, limit + 1).await?;
        let next_page_token = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |last| VersionCursor {
                v: last.version,
            });
        let cost_models = rows
            .iter()
            .map(uc::to_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListCostModelsResponse {
            cost_models,
            next_page_token,
        }))
    }

    pub(super) async fn do_get_customer_profitability(
        &self,
        req: Request<pb::GetCustomerProfitabilityRequest>,
    ) -> Result<Response<pb::GetCustomerProfitabilityResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let customer = v.uuid("customer_id", &r.customer_id);
        let w = window(
            &mut v,
            r.start_time.as_ref(),
            r.end_time.as_ref(),
            Utc::now(),
        );
        v.finish()?;
        let customer =
            customer.ok_or_else(|| ApiError::invalid("customer_id", "required: a UUID"))?;
        let (currency, figures) = uc::customer(&self.pool, ctx.tenant_id, customer, w).await?;
        Ok(Response::new(pb::GetCustomerProfitabilityResponse {
            profitability: Some(figures_proto(&figures, &currency)),
            start_time: Some(timestamp(w.start)),
            end_time: Some(timestamp(w.end)),
            currency_code: currency,
        }))
    }

    pub(super) async fn do_get_profitability_report(
        &self,
        req: Request<pb::GetProfitabilityReportRequest>,
    ) -> Result<Response<pb::GetProfitabilityReportResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let w = window(
            &mut v,
            r.start_time.as_ref(),
            r.end_time.as_ref(),
            Utc::now(),
        );
        v.check(
            r.curve_intervals != 0 && !(10..=1000).contains(&r.curve_intervals),
            "curve_intervals",
            "must be 0 (100) or in 10..=1000",
        );
        v.check(
            !(0..=100).contains(&r.destroyer_count),
            "destroyer_count",
            "must be in 0..=100 (0 means 10)",
        );
        let max_staleness = staleness(&mut v, &r);
        if r.segment_ids.len() > MAX_SEGMENTS {
            v.add("segment_ids", format!("at most {MAX_SEGMENTS} segments"));
        }
        let mut ids = Vec::new();
        for (i, s) in r.segment_ids.iter().enumerate().take(MAX_SEGMENTS) {
            if let Some(id) = v.uuid(format!("segment_ids[{i}]"), s) {
                if ids.contains(&id) {
                    v.add(format!("segment_ids[{i}]"), "is listed twice");
                }
                ids.push(id);
            }
        }
        v.finish()?;
        let mut segments = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let segmentation = self
                .segmentation
                .as_ref()
                .ok_or_else(|| not_configured("segmentation"))?;
            for id in ids {
                let members: HashSet<Uuid> =
                    segmentation.members(&ctx, id).await?.into_iter().collect();
                segments.push((id.to_string(), members));
            }
        }
        let intervals = match r.curve_intervals {
            0 => 100,
            k => k as usize,
        };
        let destroyers = match r.destroyer_count {
            0 => 10,
            k => k as usize,
        };
        let ask = report::Ask {
            window: w,
            intervals,
            destroyers,
            segments,
            max_staleness,
        };
        let report = report::report(&self.pool, ctx.tenant_id, ask).await?;
        Ok(Response::new(pb::GetProfitabilityReportResponse {
            report: Some(report),
        }))
    }
}
