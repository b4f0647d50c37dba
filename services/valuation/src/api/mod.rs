//! The gRPC handlers of `rapport.valuation.v1.ValuationService`: read the
//! tenant, validate, call the domain, the peers and the store, map errors.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures::stream::BoxStream;
use prost::Message;
use rapport_kit::context::CallContext;
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::error::{ApiError, Violations};
use rapport_kit::feed;
use rapport_kit::idempotency;
use rapport_kit::page::{PageTokens, page_size};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::{IdentifierSet, Money};
use rapport_proto::rapport::interaction::v1::{
    AcquisitionCohort, CustomerIdList, ExportSummariesRequest, PurchaseHistorySummary,
    export_summaries_request,
};
use rapport_proto::rapport::valuation::v1::valuation_service_server::ValuationService;
use rapport_proto::rapport::valuation::v1::{self as pb, model_scope};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::cohort::{self, Granularity};
use crate::domain::concentration::{Distribution, distribution};
use crate::domain::fitting::{self, FitCase, Kind};
use crate::domain::money::{self, is_currency, to_money};
use crate::domain::relationship;
use crate::domain::scoring::Unit;
use crate::engine::{self, RunRequest, decode};
use crate::peers::{Interaction, Lookup, Profile, Segmentation};
use crate::store::{self, Metric, RankKey};

mod cohorts;
mod compare;
mod convert;
mod fit;
mod profitability;

use convert::*;
use fit::*;

/// Most inline summaries in one FitModel request.
pub const MAX_INLINE: usize = 50_000;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 128;
/// Largest export restriction by customer ids.
const EXPORT_IDS: usize = 50_000;

/// A client-chosen request id: at most [`MAX_REQUEST_ID`] characters, no
/// NUL.
fn check_request_id(v: &mut Violations, id: &str) {
    v.check(
        id.chars().count() > MAX_REQUEST_ID,
        "request_id",
        format!("at most {MAX_REQUEST_ID} characters"),
    );
    v.check(
        id.contains('\0'),
        "request_id",
        "must not contain NUL characters (U+0000)",
    );
}

fn required_uuid(field: &str, s: &str) -> Result<Uuid, ApiError> {
    rapport_kit::error::required_uuid(field, s)
}

fn not_configured(service: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "the {service} service is not configured for the valuation service; set RAPPORT_{}_URL",
        service.to_uppercase()
    ))
}

/// `rapport.valuation.v1.ValuationService`.
#[derive(Clone)]
pub struct ValuationApi {
    pool: PgPool,
    page_tokens: PageTokens,
    shutdown: Shutdown,
    interaction: Option<Interaction>,
    segmentation: Option<Segmentation>,
    profile: Option<Profile>,
}

impl ValuationApi {
    /// Handlers over `pool`, calling the configured peers.
    pub fn new(
        pool: PgPool,
        page_tokens: PageTokens,
        shutdown: Shutdown,
        interaction: Option<Interaction>,
        segmentation: Option<Segmentation>,
        profile: Option<Profile>,
    ) -> Self {
        Self {
            pool,
            page_tokens,
            shutdown,
            interaction,
            segmentation,
            profile,
        }
    }

    fn interaction(&self) -> Result<&Interaction, ApiError> {
        self.interaction
            .as_ref()
            .ok_or_else(|| not_configured("interaction"))
    }
}

#[tonic::async_trait]
impl ValuationService for ValuationApi {
    async fn fit_model(
        &self,
        req: Request<pb::FitModelRequest>,
    ) -> Result<Response<pb::FitModelResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant_id;
        let r = req.into_inner();
        let plan = validate_fit(&r, Utc::now(), ctx.zone_or_tenant(&r.time_zone))?;
        let hash = request_hash(&r);
        if !r.request_id.is_empty() {
            let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
            let scope = crate::models::FIT_SCOPE;
            if let Some(seen) = idempotency::seen(&mut conn, tenant, scope, &r.request_id)
                .await
                .map_err(ApiError::from)?
            {
                drop(conn);
                let (stored, model_id) = (seen.fingerprint, seen.result_id);
                if stored != hash {
                    return Err(ApiError::AlreadyExists(format!(
                        "request_id {:?} was already used with different content; use a new request_id",
                        r.request_id
                    ))
                    .into());
                }
                let model = crate::models::stored_model(&self.pool, tenant, model_id).await?;
                return Ok(Response::new(pb::FitModelResponse { model: Some(model) }));
            }
        }
        let FitData {
            cases,
            currency,
            earliest,
        } = self.fit_data(&ctx, &r, &plan).await?;
        let holdout_periods = holdout_periods(&plan);
        let (kind, max_iterations) = (plan.kind, plan.max_iterations);
        let cur = currency.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            fitting::fit(kind, &cases, max_iterations, holdout_periods, &cur)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::FailedPrecondition(e.0))?;

        let model_id = Uuid::now_v7();
        let now = Utc::now();
        let model = pb::Model {
            model_id: model_id.to_string(),
            kind: kind.to_proto(),
            version: 0,
            scope: Some(pb::ModelScope {
                restriction: plan
                    .segment
                    .map(|s| model_scope::Restriction::SegmentId(s.to_string()))
                    .or_else(|| {
                        plan.cohort
                            .as_ref()
                            .map(|c| model_scope::Restriction::Cohort(c.0.clone()))
                    }),
            }),
            data_source: if r.inline_summaries.is_empty() {
                pb::DataSource::InteractionExport as i32
            } else {
                pb::DataSource::Inline as i32
            },
            data_window: Some(data_window(&plan, earliest)),
            customer_count: outcome.customer_count,
            excluded_customer_count: outcome.excluded_count,
            currency_code: if kind == Kind::GammaGamma {
                currency
            } else {
                String::new()
            },
            parameters: parameters(&outcome),
            log_likelihood: outcome.log_likelihood,
            iterations: i32::try_from(outcome.iterations).unwrap_or(i32::MAX),
            converged: outcome.converged,
            optimizer_message: outcome.message.clone(),
            fit_duration: {
                metrics::histogram!("rapport_valuation_model_fit_seconds", "kind" => kind.enum_name())
                    .record(outcome.duration.as_secs_f64());
                prost_types::Duration::try_from(outcome.duration).ok()
            },
            holdout_validation: outcome.validation.as_ref().map(validation),
            active: false,
            create_time: Some(timestamp(now)),
            activate_time: None,
        };

        let request = (!r.request_id.is_empty()).then_some((r.request_id.as_str(), hash.as_str()));
        let model = crate::models::save_fit(
            &self.pool,
            tenant,
            model,
            kind.to_proto() as i16,
            request,
            plan.activate,
            now,
        )
        .await?;
        Ok(Response::new(pb::FitModelResponse { model: Some(model) }))
    }

    async fn compare_models(
        &self,
        req: Request<pb::CompareModelsRequest>,
    ) -> Result<Response<pb::CompareModelsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let answer = self.compare(&ctx, req.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let id = required_uuid("model_id", &req.get_ref().model_id)?;
        let model = crate::models::stored_model(&self.pool, ctx.tenant_id, id).await?;
        Ok(Response::new(pb::GetModelResponse { model: Some(model) }))
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let kind = match r.kind {
            0 => None,
            k => {
                let parsed = Kind::from_proto(k);
                v.check(parsed.is_none(), "kind", "is not a model kind");
                parsed
            }
        };
        v.check(r.page_size > 1000, "page_size", "must be at most 1000");
        let limit = page_size(&mut v, r.page_size);
        v.finish()?;
        let scope = format!("{}/ListModels/{}/{}", ctx.tenant_id, r.kind, r.active_only);
        let after = self
            .page_tokens
            .decode::<ModelCursor>(&scope, &r.page_token)?
            .map(|c| DateTime::from_timestamp_micros(c.t).map(|t| (t, c.id)))
            .map(|k| k.ok_or_else(|| ApiError::invalid("page_token", "is malformed")))
            .transpose()?;
        let mut rows = store::list_models(
            &self.pool,
            ctx.tenant_id,
            kind.map(|k| k.to_proto() as i16),
            r.active_only,
            after,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |last| ModelCursor {
                t: last.create_time.timestamp_micros(),
                id: last.model_id,
            });
        let models = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListModelsResponse {
            models,
            next_page_token,
        }))
    }

    async fn activate_model(
        &self,
        req: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivateModelResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant_id;
        let id = required_uuid("model_id", &req.get_ref().model_id)?;
        let (model, previous) = crate::models::activate(&self.pool, tenant, id).await?;
        Ok(Response::new(pb::ActivateModelResponse {
            model: Some(model),
            previous_model_id: previous.map(|p| p.to_string()).unwrap_or_default(),
        }))
    }

    async fn score_customers(
        &self,
        req: Request<pb::ScoreCustomersRequest>,
    ) -> Result<Response<pb::ScoreCustomersResponse>, Status> {
        let started = Instant::now();
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let kind = match r.transaction_model_kind {
            0 => None,
            k => match Kind::from_proto(k) {
                Some(Kind::GammaGamma) | None => {
                    v.add(
                        "transaction_model_kind",
                        "must be BG_NBD, PARETO_NBD, MBG_NBD, BG_BB or SBG (or unset)",
                    );
                    None
                }
                k => k,
            },
        };
        v.check(
            r.horizon_periods < 0,
            "horizon_periods",
            "must not be negative",
        );
        v.check(
            r.horizon_periods > 3653,
            "horizon_periods",
            "must be at most ten years (3653 days, 522 weeks, 120 months)",
        );
        if let Some(d) = r.discount_rate {
            v.check(
                !(d.is_finite() && (0.0..1.0).contains(&d)),
                "discount_rate",
                "must be in [0, 1)",
            );
        }
        if let Some(a) = r.annual_discount_rate {
            v.check(
                !(a.is_finite() && (0.0..=10.0).contains(&a)),
                "annual_discount_rate",
                "must be in [0, 10] (0.1 for 10 % a year)",
            );
            v.check(
                r.discount_rate.is_some(),
                "annual_discount_rate",
                "give discount_rate or annual_discount_rate, not both",
            );
        }
        if let Some(m) = r.margin_ratio {
            v.check(
                !(m.is_finite() && m > 0.0 && m <= 1.0),
                "margin_ratio",
                "must be in (0, 1]",
            );
        }
        let as_of = r.as_of.as_ref().and_then(|t| {
            let parsed = from_timestamp(t);
            v.check(parsed.is_none(), "as_of", "is not a valid timestamp");
            v.check(
                parsed.is_some_and(|t| t > Utc::now()),
                "as_of",
                "must not be after the server's clock",
            );
            parsed
        });
        v.finish()?;
        let interaction = self.interaction()?;
        let outcome = engine::run(
            &self.pool,
            interaction,
            &ctx,
            RunRequest {
                kind,
                horizon_periods: r.horizon_periods,
                discount_rate: r.discount_rate,
                annual_discount_rate: r.annual_discount_rate,
                margin_ratio: r.margin_ratio,
                as_of,
            },
        )
        .await?;
        metrics::histogram!("rapport_valuation_score_run_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("rapport_valuation_customers_scored_total")
            .increment(u64::try_from(outcome.scored).unwrap_or(0));
        Ok(Response::new(pb::ScoreCustomersResponse {
            scored_customer_count: outcome.scored,
            deleted_customer_count: outcome.deleted,
            transaction_model_id: outcome.models.transaction_id.to_string(),
            spend_model_id: outcome.models.spend_id.to_string(),
            settings: Some(pb::ScoringSettings {
                horizon_periods: outcome.settings.horizon_periods,
                period_unit: outcome.settings.unit.to_proto(),
                discount_rate: outcome.settings.discount_rate,
                margin_ratio: outcome.settings.margin_ratio,
                annual_discount_rate: outcome
                    .settings
                    .unit
                    .annual_rate(outcome.settings.discount_rate),
            }),
            score_time: Some(timestamp(outcome.score_time)),
            duration: prost_types::Duration::try_from(started.elapsed()).ok(),
            totals: Some(pb::ScoringTotals {
                total_clv: Some(money::to_money(
                    &outcome.models.currency,
                    outcome.totals.clv,
                )),
                expected_purchases: outcome.totals.expected_purchases,
                mean_p_alive: outcome.totals.mean_p_alive,
                horizon_end_time: Some(timestamp(outcome.totals.horizon_end)),
                actual_purchases: outcome.totals.actual_purchases,
            }),
            stored: outcome.stored,
        }))
    }

    async fn get_customer_value(
        &self,
        req: Request<pb::GetCustomerValueRequest>,
    ) -> Result<Response<pb::GetCustomerValueResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = match (r.customer_id.is_empty(), &r.identifiers) {
            (false, Some(_)) => {
                v.add("identifiers", "give customer_id or identifiers, not both");
                None
            }
            (true, None) => {
                v.add("customer_id", "required: a UUID (or identifiers)");
                None
            }
            (false, None) => v.uuid("customer_id", &r.customer_id),
            (true, Some(_)) => None,
        };
        let as_of = as_of(&mut v, r.as_of.as_ref());
        v.finish()?;
        let id = match (&r.identifiers, id) {
            (Some(set), _) => {
                let found = self
                    .look_up(&ctx, std::slice::from_ref(set), |_| "identifiers".into())
                    .await?;
                match found.into_iter().next() {
                    Some(Lookup::Found(id)) => id,
                    Some(Lookup::Conflict(ids)) => {
                        return Err(ApiError::FailedPrecondition(format!(
                            "the identifiers belong to different customers ({}): merge them, or fix the identifiers",
                            ids.join(", ")
                        ))
                        .into());
                    }
                    _ => {
                        return Err(ApiError::not_found(
                            "customer with identifiers",
                            identifier_text(set),
                        )
                        .into());
                    }
                }
            }
            (None, Some(id)) => id,
            (None, None) => {
                return Err(ApiError::invalid("customer_id", "required: a UUID").into());
            }
        };
        let rows = self.values(&ctx, &[id], as_of).await?;
        let row = rows
            .first()
            .ok_or_else(|| ApiError::not_found("customer value", id.to_string()))?;
        let mut value = value_proto(row);
        value.identifiers = r.identifiers;
        Ok(Response::new(pb::GetCustomerValueResponse {
            value: Some(value),
        }))
    }

    async fn batch_get_customer_values(
        &self,
        req: Request<pb::BatchGetCustomerValuesRequest>,
    ) -> Result<Response<pb::BatchGetCustomerValuesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let by_sets = !r.identifier_sets.is_empty();
        v.check(
            by_sets && !r.customer_ids.is_empty(),
            "identifier_sets",
            "give customer_ids or identifier_sets, not both",
        );
        v.check(
            r.identifier_sets.len() > 1000,
            "identifier_sets",
            "must hold 1 to 1000 identifier sets",
        );
        v.check(
            !by_sets && (r.customer_ids.is_empty() || r.customer_ids.len() > 1000),
            "customer_ids",
            "must hold 1 to 1000 customer ids (or give identifier_sets)",
        );
        let mut ids = Vec::with_capacity(r.customer_ids.len());
        let mut seen = HashSet::new();
        for (i, s) in r.customer_ids.iter().enumerate().take(1001) {
            if let Some(id) = v.uuid(format!("customer_ids[{i}]"), s)
                && seen.insert(id)
            {
                ids.push(id);
            }
        }
        let as_of = as_of(&mut v, r.as_of.as_ref());
        v.finish()?;
        // By identifier sets: the customers the profile service finds.
        let found = if by_sets {
            let field = |i: usize| format!("identifier_sets[{i}]");
            Some(self.look_up(&ctx, &r.identifier_sets, field).await?)
        } else {
            None
        };
        if let Some(found) = &found {
            let mut seen = HashSet::new();
            ids = found
                .iter()
                .filter_map(|f| match f {
                    Lookup::Found(id) if seen.insert(*id) => Some(*id),
                    _ => None,
                })
                .collect();
        }
        let rows = self.values(&ctx, &ids, as_of).await?;
        let by_id: HashMap<Uuid, &store::ValueRow> =
            rows.iter().map(|r| (r.customer_id, r)).collect();
        let mut values = Vec::new();
        let mut missing_customer_ids = Vec::new();
        let mut missing_identifier_sets = Vec::new();
        match found {
            Some(found) => {
                for (i, (f, set)) in found.iter().zip(r.identifier_sets).enumerate() {
                    match f {
                        Lookup::Found(id) if by_id.contains_key(id) => {
                            let mut value = value_proto(by_id[id]);
                            value.identifiers = Some(set);
                            values.push(value);
                        }
                        _ => missing_identifier_sets.push(i as i32),
                    }
                }
            }
            None => {
                for id in ids {
                    match by_id.get(&id) {
                        Some(r) => values.push(value_proto(r)),
                        None => missing_customer_ids.push(id.to_string()),
                    }
                }
            }
        }
        Ok(Response::new(pb::BatchGetCustomerValuesResponse {
            values,
            missing_customer_ids,
            missing_identifier_sets,
        }))
    }

    async fn rank_customers(
        &self,
        req: Request<pb::RankCustomersRequest>,
    ) -> Result<Response<pb::RankCustomersResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let metric = match pb::RankMetric::try_from(r.metric) {
            Ok(pb::RankMetric::Unspecified | pb::RankMetric::Clv) => Metric::Clv,
            Ok(pb::RankMetric::PAlive) => Metric::PAlive,
            Ok(pb::RankMetric::ExpectedPurchases) => Metric::Expected,
            Ok(pb::RankMetric::NetClv) => Metric::NetClv,
            Err(_) => {
                v.add("metric", "is not a ranking metric");
                Metric::Clv
            }
        };
        v.check(r.top_n < 0, "top_n", "must not be negative");
        v.check(r.page_size > 1000, "page_size", "must be at most 1000");
        let size = page_size(&mut v, r.page_size);
        let as_of = as_of(&mut v, r.as_of.as_ref());
        v.finish()?;
        let scope = format!(
            "{}/RankCustomers/{}/{}/{}",
            ctx.tenant_id,
            r.metric,
            r.top_n,
            as_of.map_or(String::new(), |t| t.timestamp_micros().to_string())
        );
        let cursor = self
            .page_tokens
            .decode::<RankCursor>(&scope, &r.page_token)?;
        let bad = || ApiError::invalid("page_token", "is malformed");
        let (done, after) = match &cursor {
            None => (0, None),
            Some(c) => {
                let key = match metric {
                    Metric::Clv | Metric::NetClv => {
                        RankKey::Clv(c.v.parse::<Decimal>().map_err(|_| bad())?, c.id)
                    }
                    _ => RankKey::Float(c.v.parse::<f64>().map_err(|_| bad())?, c.id),
                };
                (c.n, Some(key))
            }
        };
        let mut limit = size;
        if r.top_n > 0 {
            limit = limit.min(i64::from(r.top_n) - done).max(0);
        }
        let rows = match (limit, as_of) {
            (0, _) => Vec::new(),
            (_, None) => store::rank(&self.pool, ctx.tenant_id, metric, after, limit + 1)
                .await
                .map_err(ApiError::from)?,
            (_, Some(at)) => {
                let all =
                    engine::tenant_values_as_of(&self.pool, self.interaction()?, &ctx, None, at)
                        .await?;
                store::rank_rows(all, metric, after, limit + 1)
            }
        };
        let more = rows.len() as i64 > limit;
        let page = &rows[..rows.len().min(limit as usize)];
        let mut values: Vec<pb::CustomerValue> = page.iter().map(value_proto).collect();
        if r.include_identifiers {
            self.with_identifiers(&ctx, &mut values).await?;
        }
        let customers: Vec<pb::RankedCustomer> = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| pb::RankedCustomer {
                rank: done + i as i64 + 1,
                value: Some(value),
            })
            .collect();
        let returned = done + page.len() as i64;
        let reached = r.top_n > 0 && returned >= i64::from(r.top_n);
        let next_page_token = match (more && !reached, page.last()) {
            (true, Some(last)) => self.page_tokens.encode(
                &scope,
                &RankCursor {
                    n: returned,
                    v: match metric {
                        Metric::Clv => last.clv.to_string(),
                        Metric::PAlive => format!("{:e}", last.p_alive),
                        Metric::Expected => format!("{:e}", last.expected_purchases),
                        Metric::NetClv => last.net_clv.unwrap_or_default().to_string(),
                    },
                    id: last.customer_id,
                },
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::RankCustomersResponse {
            customers,
            next_page_token,
        }))
    }

    async fn get_value_concentration(
        &self,
        req: Request<pb::GetValueConcentrationRequest>,
    ) -> Result<Response<pb::GetValueConcentrationResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let k = req.get_ref().lorenz_intervals;
        if k != 0 && !(10..=1000).contains(&k) {
            return Err(
                ApiError::invalid("lorenz_intervals", "must be 0 (100) or in 10..=1000").into(),
            );
        }
        let intervals = if k == 0 { 100 } else { k as usize };
        let mut v = Violations::new();
        let as_of = as_of(&mut v, req.get_ref().as_of.as_ref());
        v.finish()?;
        let store::Amounts {
            clv,
            historical: hist,
            net,
            currency,
            latest,
        } = match as_of {
            None => store::all_amounts(&self.pool, ctx.tenant_id)
                .await
                .map_err(ApiError::from)?,
            Some(at) => {
                let rows =
                    engine::tenant_values_as_of(&self.pool, self.interaction()?, &ctx, None, at)
                        .await?;
                store::Amounts {
                    clv: rows.iter().map(|r| r.clv).collect(),
                    historical: rows.iter().map(|r| r.historical_value).collect(),
                    net: rows.iter().filter_map(|r| r.net_clv).collect(),
                    currency: rows.first().map(|r| r.currency_code.clone()),
                    latest: (!rows.is_empty()).then_some(at),
                }
            }
        };
        let Some(currency) = currency else {
            let why = match as_of {
                None => "no customer of the tenant has a stored value; run ScoreCustomers first",
                Some(_) => "no customer of the tenant had a purchase before as_of",
            };
            return Err(ApiError::FailedPrecondition(why.into()).into());
        };
        let n = clv.len() as i64;
        let net_n = net.len() as i64;
        let (predicted, historical, net) = tokio::task::spawn_blocking(move || {
            (
                distribution(&clv, intervals),
                distribution(&hist, intervals),
                (!net.is_empty()).then(|| distribution(&net, intervals)),
            )
        })
        .await
        .map_err(ApiError::internal)?;
        Ok(Response::new(pb::GetValueConcentrationResponse {
            customer_count: n,
            predicted: Some(distribution_proto(&predicted, &currency)),
            historical: Some(distribution_proto(&historical, &currency)),
            score_time: latest.map(timestamp),
            net_predicted: net.map(|d| distribution_proto(&d, &currency)),
            net_customer_count: net_n,
        }))
    }

    async fn get_cohort_report(
        &self,
        req: Request<pb::GetCohortReportRequest>,
    ) -> Result<Response<pb::GetCohortReportResponse>, Status> {
        self.do_get_cohort_report(req).await
    }

    async fn get_segment_value(
        &self,
        req: Request<pb::GetSegmentValueRequest>,
    ) -> Result<Response<pb::GetSegmentValueResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let segment = v.uuid("segment_id", &req.get_ref().segment_id);
        let as_of = as_of(&mut v, req.get_ref().as_of.as_ref());
        v.finish()?;
        let segment = segment.ok_or_else(|| ApiError::invalid("segment_id", "required: a UUID"))?;
        let segmentation = self
            .segmentation
            .as_ref()
            .ok_or_else(|| not_configured("segmentation"))?;
        let compute_time = Utc::now();
        let mut members = segmentation.members(&ctx, segment).await?;
        members.sort_unstable();
        members.dedup();
        let store::ValueTotals {
            scored,
            clv: total,
            p_alive: p_sum,
            currency,
        } = match as_of {
            None => store::value_totals(&self.pool, tenant, &members)
                .await
                .map_err(ApiError::from)?,
            Some(at) => {
                let mut totals = store::ValueTotals::default();
                for chunk in members.chunks(EXPORT_IDS) {
                    let rows = self.values(&ctx, chunk, Some(at)).await?;
                    for r in &rows {
                        totals.scored += 1;
                        totals.clv += r.clv;
                        totals.p_alive += r.p_alive;
                        totals
                            .currency
                            .get_or_insert_with(|| r.currency_code.clone());
                    }
                }
                totals
            }
        };
        let currency = match currency {
            Some(c) => c,
            None => store::values_currency(&self.pool, tenant)
                .await
                .map_err(ApiError::from)?
                .unwrap_or_default(),
        };
        Ok(Response::new(pb::GetSegmentValueResponse {
            segment_id: segment.to_string(),
            member_count: members.len() as i64,
            scored_member_count: scored,
            total_clv: Some(to_money(&currency, total)),
            mean_clv: money::mean(total, scored).map(|m| to_money(&currency, m)),
            mean_p_alive: (scored > 0).then(|| (p_sum / scored as f64).clamp(0.0, 1.0)),
            compute_time: Some(timestamp(compute_time)),
        }))
    }

    async fn get_relationship_scores(
        &self,
        req: Request<pb::GetRelationshipScoresRequest>,
    ) -> Result<Response<pb::GetRelationshipScoresResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let id = required_uuid("customer_id", &req.get_ref().customer_id)?;
        let profile = self
            .profile
            .as_ref()
            .ok_or_else(|| not_configured("profile"))?;
        let interaction = self.interaction()?;
        let customer = profile
            .customer(&ctx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("customer", id.to_string()))?;
        // A merged id answers for its survivor, as the profile does.
        let current = Uuid::parse_str(&customer.customer_id).unwrap_or(id);
        let summary = interaction.summary(&ctx, current).await?;
        let rank = store::repeat_rate_rank(&self.pool, ctx.tenant_id, current)
            .await
            .map_err(ApiError::from)?;
        let unit_name = |u: i16| match Unit::from_proto(i32::from(u)) {
            Some(Unit::Day) => "day",
            Some(Unit::Month) => "month",
            _ => "week",
        };
        let inputs = relationship::Inputs {
            csat: summary.mean_csat.map(|m| (m, summary.csat_count)),
            nps: summary.mean_nps.map(|m| (m, summary.nps_count)),
            complaints: summary.complaint_count,
            open_issues: summary.open_service_requests + summary.open_complaints,
            resolution: summary
                .mean_resolution_time
                .as_ref()
                .filter(|_| summary.resolved_service_requests > 0)
                .map(|d| {
                    (
                        (d.seconds as f64 + f64::from(d.nanos) / 1e9) / 86_400.0,
                        summary.resolved_service_requests,
                    )
                }),
            tenure_days: summary.age_days,
            repeat_rate: rank.map(|r| {
                (
                    r.rate,
                    relationship::percentile_rank(r.smaller, r.equal, r.total),
                    unit_name(r.period_unit),
                )
            }),
        };
        let satisfaction = relationship::satisfaction(&inputs);
        let trust = relationship::trust(&inputs);
        let commitment = relationship::commitment(&inputs);
        let quality = relationship::quality(&[&satisfaction, &trust, &commitment]);
        let totals: Vec<(String, Decimal)> = summary
            .currencies
            .iter()
            .map(|c| {
                (
                    c.currency_code.clone(),
                    c.total_value
                        .as_ref()
                        .and_then(money::from_money)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let wallet: Option<&Money> = customer.estimated_category_wallet.as_ref();
        let share = relationship::share_of_wallet(
            wallet,
            &totals,
            summary.purchase_count,
            summary.age_days,
        );
        Ok(Response::new(pb::GetRelationshipScoresResponse {
            scores: Some(pb::RelationshipScores {
                customer_id: current.to_string(),
                satisfaction: Some(satisfaction),
                trust: Some(trust),
                commitment: Some(commitment),
                quality,
                share_of_wallet: share,
                compute_time: Some(timestamp(Utc::now())),
            }),
        }))
    }

    type WatchChangesStream = BoxStream<'static, Result<pb::WatchChangesResponse, Status>>;

    async fn set_cost_model(
        &self,
        req: Request<pb::SetCostModelRequest>,
    ) -> Result<Response<pb::SetCostModelResponse>, Status> {
        self.do_set_cost_model(req).await
    }

    async fn get_cost_model(
        &self,
        req: Request<pb::GetCostModelRequest>,
    ) -> Result<Response<pb::GetCostModelResponse>, Status> {
        self.do_get_cost_model(req).await
    }

    async fn list_cost_models(
        &self,
        req: Request<pb::ListCostModelsRequest>,
    ) -> Result<Response<pb::ListCostModelsResponse>, Status> {
        self.do_list_cost_models(req).await
    }

    async fn get_customer_profitability(
        &self,
        req: Request<pb::GetCustomerProfitabilityRequest>,
    ) -> Result<Response<pb::GetCustomerProfitabilityResponse>, Status> {
        self.do_get_customer_profitability(req).await
    }

    async fn get_profitability_report(
        &self,
        req: Request<pb::GetProfitabilityReportRequest>,
    ) -> Result<Response<pb::GetProfitabilityReportResponse>, Status> {
        self.do_get_profitability_report(req).await
    }

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let stream = feed::serve_watch::<feed::ValuationFeed>(
            self.pool.clone(),
            crate::SCHEMA.schema,
            req,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }
}

/// Identifiers as a client wrote them, for messages: "email a@b.c,
/// external shop:42".
fn identifier_text(set: &IdentifierSet) -> String {
    set.identifiers
        .iter()
        .map(|i| {
            let kind = match rapport_proto::rapport::common::v1::IdentifierKind::try_from(i.kind) {
                Ok(rapport_proto::rapport::common::v1::IdentifierKind::Email) => "email",
                Ok(rapport_proto::rapport::common::v1::IdentifierKind::Phone) => "phone",
                Ok(rapport_proto::rapport::common::v1::IdentifierKind::External) => "external",
                _ => "identifier",
            };
            if i.system.is_empty() {
                format!("{kind} {}", i.value)
            } else {
                format!("{kind} {}:{}", i.system, i.value)
            }
        })
        .take(20)
        .collect::<Vec<_>>()
        .join(", ")
}
