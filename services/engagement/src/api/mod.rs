//! The gRPC handlers of `rapport.engagement.v1.EngagementService`: validate
//! every field, call one use case (`treatments`, `decisions`, `audience`,
//! `reports`) or read the store, map the result.

use std::collections::HashMap;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use rapport_kit::context::CallContext;
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::error::{ApiError, Violations};
use rapport_kit::page::{PageTokens, page_size};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::engagement::v1::engagement_service_server::EngagementService;
use rapport_proto::rapport::engagement::v1::{self as pb, Arm, ContactChannel, Outcome};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audience::{self, Audience, Part, RuleAudience};
use crate::decisions::{self, Asked};
use crate::domain::decide::Decided;
use crate::domain::money;
use crate::domain::propensity::Posterior;
use crate::domain::report::Proportion;
use crate::domain::treatment::Stored;
use crate::domain::treatment::{self, Draft, FIELDS};
use crate::peers::Segmentation;
use crate::reports::Report;
use crate::store::{self, DecisionFilter, DecisionRow};
use crate::treatments;

/// `rapport.engagement.v1.EngagementService`.
#[derive(Clone)]
pub struct EngagementApi {
    pool: PgPool,
    page_tokens: PageTokens,
    shutdown: Shutdown,
    segmentation: Option<Segmentation>,
}

impl EngagementApi {
    /// Handlers over `pool`; streams end UNAVAILABLE at `shutdown`; rule
    /// audiences are listed by `segmentation`.
    pub fn new(
        pool: PgPool,
        page_tokens: PageTokens,
        shutdown: Shutdown,
        segmentation: Option<Segmentation>,
    ) -> Self {
        Self {
            pool,
            page_tokens,
            shutdown,
            segmentation,
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn answer<T>(r: Result<T, ApiError>) -> Answer<T> {
    r.map(Response::new).map_err(Status::from)
}

fn required_id(v: &mut Violations, field: &str, raw: &str) -> Option<Uuid> {
    if raw.is_empty() {
        v.add(field, "required: a UUID");
        return None;
    }
    v.uuid(field, raw)
}

fn check_request_id(v: &mut Violations, id: &str) {
    let ok =
        id.is_empty() || (id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    v.check(!ok, "request_id", "1 to 128 printable ASCII characters");
}

fn outcome_name(o: Outcome) -> Option<&'static str> {
    match o {
        Outcome::Pending => Some("pending"),
        Outcome::Accepted => Some("accepted"),
        Outcome::Declined => Some("declined"),
        Outcome::Ignored => Some("ignored"),
        Outcome::Unspecified => None,
    }
}

fn outcome_of(s: &str) -> Outcome {
    match s {
        "accepted" => Outcome::Accepted,
        "declined" => Outcome::Declined,
        "ignored" => Outcome::Ignored,
        _ => Outcome::Pending,
    }
}

fn decision_proto(d: &DecisionRow) -> pb::Decision {
    pb::Decision {
        decision_id: d.decision_id.to_string(),
        customer_id: d.customer_id.to_string(),
        treatment_id: d.treatment_id.to_string(),
        treatment_version: d.treatment_version,
        arm: if d.arm == "control" {
            Arm::Control
        } else {
            Arm::Treatment
        } as i32,
        channel: d.channel,
        rank: d.rank,
        propensity: d.propensity,
        expected_net_value: Some(decisions::expected_net(d)),
        ladder_rung: d.ladder_rung,
        decide_time: Some(timestamp(d.decide_time)),
        outcome: outcome_of(&d.outcome) as i32,
        outcome_time: d.outcome_time.map(timestamp),
    }
}

/// The cursor of ListTreatments.
#[derive(serde::Serialize, serde::Deserialize)]
struct NameCursor {
    name: String,
    id: Uuid,
}

/// The cursor of ListDecisions.
#[derive(serde::Serialize, serde::Deserialize)]
struct TimeCursor {
    time: chrono::DateTime<Utc>,
    id: Uuid,
}

impl EngagementApi {
    async fn create(
        &self,
        ctx: CallContext,
        r: pb::CreateTreatmentRequest,
    ) -> Result<pb::CreateTreatmentResponse, ApiError> {
        let Some(t) = r.treatment.as_ref() else {
            return Err(ApiError::invalid("treatment", "required"));
        };
        let mut v = Violations::new();
        check_request_id(&mut v, &r.request_id);
        let draft = treatment::apply(&Draft::empty(), t, &FIELDS, &mut v);
        v.finish()?;
        let request =
            (!r.request_id.is_empty()).then(|| (r.request_id.clone(), treatments::fingerprint(t)));
        let saved = treatments::create(&self.pool, ctx.tenant_id, draft, request).await?;
        Ok(pb::CreateTreatmentResponse {
            treatment: Some(saved.to_proto()),
        })
    }

    async fn get(
        &self,
        ctx: CallContext,
        r: pb::GetTreatmentRequest,
    ) -> Result<pb::GetTreatmentResponse, ApiError> {
        let mut v = Violations::new();
        let id = required_id(&mut v, "treatment_id", &r.treatment_id);
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("treatment_id", "required"))?;
        let mut conn = self.pool.acquire().await?;
        let t = store::treatment(&mut conn, ctx.tenant_id, id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("treatment", id.to_string()))?;
        Ok(pb::GetTreatmentResponse {
            treatment: Some(t.to_proto()),
        })
    }

    async fn list(
        &self,
        ctx: CallContext,
        r: pb::ListTreatmentsRequest,
    ) -> Result<pb::ListTreatmentsResponse, ApiError> {
        let mut v = Violations::new();
        let limit = page_size(&mut v, r.page_size);
        v.finish()?;
        let scope = format!("{}/treatments/{}", ctx.tenant_id, r.include_archived);
        let after = self
            .page_tokens
            .decode::<NameCursor>(&scope, &r.page_token)?;
        let mut conn = self.pool.acquire().await?;
        let mut rows = store::list_treatments(
            &mut conn,
            ctx.tenant_id,
            r.include_archived,
            after.map(|c| (c.name, c.id)),
            limit + 1,
        )
        .await?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |t| NameCursor {
                name: t.name.clone(),
                id: t.treatment_id,
            });
        Ok(pb::ListTreatmentsResponse {
            treatments: rows.iter().map(|t| t.to_proto()).collect(),
            next_page_token: next,
        })
    }

    async fn update(
        &self,
        ctx: CallContext,
        r: pb::UpdateTreatmentRequest,
    ) -> Result<pb::UpdateTreatmentResponse, ApiError> {
        let Some(t) = r.treatment.as_ref() else {
            return Err(ApiError::invalid("treatment", "required"));
        };
        let mut v = Violations::new();
        let id = required_id(&mut v, "treatment.treatment_id", &t.treatment_id);
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        treatment::check_mask(&paths, &mut v);
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("treatment.treatment_id", "required"))?;
        let saved = treatments::update(&self.pool, ctx.tenant_id, id, t, &paths).await?;
        Ok(pb::UpdateTreatmentResponse {
            treatment: Some(saved.to_proto()),
        })
    }

    async fn archive(
        &self,
        ctx: CallContext,
        r: pb::ArchiveTreatmentRequest,
    ) -> Result<pb::ArchiveTreatmentResponse, ApiError> {
        let mut v = Violations::new();
        let id = required_id(&mut v, "treatment_id", &r.treatment_id);
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("treatment_id", "required"))?;
        let saved = treatments::archive(&self.pool, ctx.tenant_id, id, &r.etag).await?;
        Ok(pb::ArchiveTreatmentResponse {
            treatment: Some(saved.to_proto()),
        })
    }

    async fn policy(&self, ctx: CallContext) -> Result<pb::GetPolicyResponse, ApiError> {
        let mut conn = self.pool.acquire().await?;
        let p = store::policy(&mut conn, ctx.tenant_id, false).await?;
        Ok(pb::GetPolicyResponse {
            policy: Some(p.policy.to_proto(p.version, p.update_time)),
        })
    }

    async fn update_policy(
        &self,
        ctx: CallContext,
        r: pb::UpdatePolicyRequest,
    ) -> Result<pb::UpdatePolicyResponse, ApiError> {
        let Some(p) = r.policy.as_ref() else {
            return Err(ApiError::invalid("policy", "required"));
        };
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let saved = treatments::update_policy(&self.pool, ctx.tenant_id, p, &paths).await?;
        Ok(pb::UpdatePolicyResponse {
            policy: Some(saved.policy.to_proto(saved.version, saved.update_time)),
        })
    }

    async fn next_best(
        &self,
        ctx: CallContext,
        r: pb::GetNextBestActionsRequest,
    ) -> Result<pb::GetNextBestActionsResponse, ApiError> {
        let mut v = Violations::new();
        let customer = required_id(&mut v, "customer_id", &r.customer_id);
        if ContactChannel::try_from(r.channel).is_err() {
            v.add("channel", format!("unknown channel {}", r.channel));
        }
        v.check(
            !(0..=20).contains(&r.limit),
            "limit",
            format!("must be in 1..=20 (0 means 3), got {}", r.limit),
        );
        v.finish()?;
        let customer = customer.ok_or_else(|| ApiError::invalid("customer_id", "required"))?;
        let asked = Asked {
            customer,
            channel: r.channel,
            limit: if r.limit == 0 { 3 } else { r.limit as usize },
            preview: r.preview,
        };
        let a = decisions::next_best_actions(&self.pool, ctx.tenant_id, &asked).await?;
        let c = &a.customer;
        let mut segments: Vec<String> = c.segments.iter().map(Uuid::to_string).collect();
        segments.sort();
        segments.truncate(100);
        Ok(pb::GetNextBestActionsResponse {
            actions: actions(&a.decided, &a.treatments, &a.action_ids, true),
            filtered: filtered(&a.decided, &a.treatments, &a.control_ids),
            customer: Some(pb::CustomerContext {
                customer_id: c.customer_id.to_string(),
                ladder_rung: c.ladder_rung,
                stage: c.stage,
                clv: c.clv.as_ref().map(|x| x.to_money()),
                p_alive: c.p_alive,
                segment_ids: segments,
                last_complaint_time: c.last_complaint.map(timestamp),
                last_unsubscribe_time: c.last_unsubscribe.map(timestamp),
                open_complaints: c.open_complaints,
                margin_last_year: {
                    let mut m: Vec<_> = c
                        .margins
                        .iter()
                        .map(|(cur, n)| money(cur, i128::from(*n)))
                        .collect();
                    m.sort_by(|a, b| a.currency_code.cmp(&b.currency_code));
                    m
                },
            }),
            decide_time: Some(timestamp(a.decide_time)),
            play: a.decided.play.clone().unwrap_or_default(),
        })
    }

    async fn decisions(
        &self,
        ctx: CallContext,
        r: pb::ListDecisionsRequest,
    ) -> Result<pb::ListDecisionsResponse, ApiError> {
        let mut v = Violations::new();
        let customer = (!r.customer_id.is_empty())
            .then(|| v.uuid("customer_id", &r.customer_id))
            .flatten();
        let treatment = (!r.treatment_id.is_empty())
            .then(|| v.uuid("treatment_id", &r.treatment_id))
            .flatten();
        let outcome = match Outcome::try_from(r.outcome) {
            Ok(o) => outcome_name(o),
            Err(_) => {
                v.add("outcome", format!("unknown outcome {}", r.outcome));
                None
            }
        };
        let limit = page_size(&mut v, r.page_size);
        v.finish()?;
        let scope = format!(
            "{}/decisions/{}/{}/{}",
            ctx.tenant_id, r.customer_id, r.treatment_id, r.outcome
        );
        let after = self
            .page_tokens
            .decode::<TimeCursor>(&scope, &r.page_token)?;
        let mut conn = self.pool.acquire().await?;
        let filter = DecisionFilter {
            customer,
            treatment,
            outcome,
        };
        let mut rows = store::list_decisions(
            &mut conn,
            ctx.tenant_id,
            &filter,
            after.map(|c| (c.time, c.id)),
            limit + 1,
        )
        .await?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |d| TimeCursor {
                time: d.decide_time,
                id: d.decision_id,
            });
        Ok(pb::ListDecisionsResponse {
            decisions: rows.iter().map(decision_proto).collect(),
            next_page_token: next,
        })
    }

    async fn report(
        &self,
        ctx: CallContext,
        r: pb::GetTreatmentReportRequest,
    ) -> Result<pb::GetTreatmentReportResponse, ApiError> {
        let mut v = Violations::new();
        let id = required_id(&mut v, "treatment_id", &r.treatment_id);
        let start = treatment::time(&mut v, "start_time", r.start_time.as_ref());
        let end = treatment::time(&mut v, "end_time", r.end_time.as_ref());
        if let (Some(a), Some(b)) = (start, end)
            && b <= a
        {
            v.add("end_time", "must be after start_time");
        }
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("treatment_id", "required"))?;
        let report = crate::reports::report(
            &self.pool,
            ctx.tenant_id,
            id,
            start,
            end,
            crate::domain::now(),
        )
        .await?;
        Ok(pb::GetTreatmentReportResponse {
            report: Some(report_proto(&report)),
        })
    }

    async fn outcome(
        &self,
        ctx: CallContext,
        r: pb::RecordOutcomeRequest,
    ) -> Result<pb::RecordOutcomeResponse, ApiError> {
        let mut v = Violations::new();
        let id = required_id(&mut v, "decision_id", &r.decision_id);
        let outcome = match Outcome::try_from(r.outcome) {
            Ok(Outcome::Accepted) => Some("accepted"),
            Ok(Outcome::Declined) => Some("declined"),
            _ => {
                v.add("outcome", "required: ACCEPTED or DECLINED");
                None
            }
        };
        let at = match r.outcome_time.as_ref() {
            None => None,
            Some(t) => match from_timestamp(t) {
                Some(at) if at > Utc::now() + chrono::Duration::seconds(60) => {
                    v.add("outcome_time", "must not be in the future");
                    None
                }
                Some(at) => Some(at),
                None => {
                    v.add(
                        "outcome_time",
                        "not a valid time (0001-01-01 to 9999-12-31, nanos 0..=999999999)",
                    );
                    None
                }
            },
        };
        v.finish()?;
        let (Some(id), Some(outcome)) = (id, outcome) else {
            return Err(ApiError::invalid("decision_id", "required"));
        };
        let d = decisions::record_outcome(&self.pool, ctx.tenant_id, id, outcome, at).await?;
        Ok(pb::RecordOutcomeResponse {
            decision: Some(decision_proto(&d)),
        })
    }
}

/// The actions decided, as messages; `full`: the whole treatment and the
/// reasons, else the treatment's id, name, kind, channel and version.
fn actions(
    d: &Decided,
    treatments: &[(Stored, Posterior)],
    ids: &[Option<Uuid>],
    full: bool,
) -> Vec<pb::NextBestAction> {
    d.actions
        .iter()
        .zip(ids)
        .map(|(x, id)| {
            let t = &treatments[x.index].0;
            let treatment = if full {
                t.to_proto()
            } else {
                pb::Treatment {
                    treatment_id: t.treatment_id.to_string(),
                    name: t.name.clone(),
                    kind: t.spec.kind,
                    channel: t.spec.channel,
                    version: t.version,
                    ..Default::default()
                }
            };
            pb::NextBestAction {
                decision_id: id.map(|i| i.to_string()).unwrap_or_default(),
                treatment: Some(treatment),
                rank: x.rank,
                propensity: Some(pb::Propensity {
                    mean: x.posterior.mean(),
                    lower: x.posterior.quantile(0.05),
                    upper: x.posterior.quantile(0.95),
                    ranked: x.ranked_p,
                    accepted: x.posterior.accepted,
                    refused: x.posterior.refused,
                }),
                value: Some(x.value.to_money()),
                cost: Some(x.cost.to_money()),
                expected_net_value: Some(money(&x.value.currency, x.expected_net)),
                score: x.score,
                eligible_because: if full {
                    x.eligible_because.clone()
                } else {
                    vec![]
                },
                rank_reason: if full {
                    x.rank_reason.clone()
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

/// The treatments left out, as messages, with their control records.
fn filtered(
    d: &Decided,
    treatments: &[(Stored, Posterior)],
    control_ids: &HashMap<usize, Uuid>,
) -> Vec<pb::FilteredTreatment> {
    d.filtered
        .iter()
        .map(|f| pb::FilteredTreatment {
            treatment_id: treatments[f.index].0.treatment_id.to_string(),
            name: treatments[f.index].0.name.clone(),
            reason: f.reason as i32,
            detail: f.detail.clone(),
            decision_id: control_ids
                .get(&f.index)
                .map(Uuid::to_string)
                .unwrap_or_default(),
        })
        .collect()
}

/// A part of the audience stream as its message.
fn audience_part(part: Part, explain: bool) -> pb::StreamNextBestActionsResponse {
    match part {
        Part::Page(decisions) => pb::StreamNextBestActionsResponse {
            customers: decisions
                .iter()
                .map(|d| pb::CustomerActions {
                    customer_id: d.customer.customer_id.to_string(),
                    actions: actions(&d.decided, &d.treatments, &d.action_ids, explain),
                    filtered: if explain {
                        filtered(&d.decided, &d.treatments, &HashMap::new())
                    } else {
                        vec![]
                    },
                })
                .collect(),
            summary: None,
        },
        Part::Summary(s) => pb::StreamNextBestActionsResponse {
            customers: vec![],
            summary: Some(pb::AudienceSummary {
                members: s.members,
                customers: s.customers,
                customers_with_actions: s.customers_with_actions,
                actions: s.actions,
                filtered: audience::reasons(&s)
                    .into_iter()
                    .map(|(reason, count)| pb::ReasonCount {
                        reason: reason as i32,
                        count,
                    })
                    .collect(),
            }),
        },
    }
}

fn proportion(p: &Proportion) -> pb::Proportion {
    pb::Proportion {
        successes: p.successes,
        trials: p.trials,
        rate: p.rate,
        lower: p.lower,
        upper: p.upper,
    }
}

/// A report as its message.
pub fn report_proto(r: &Report) -> pb::TreatmentReport {
    let cur = &r.treatment.spec.cost.currency;
    pb::TreatmentReport {
        treatment: Some(r.treatment.to_proto()),
        start_time: r.start.map(timestamp),
        end_time: Some(timestamp(r.end)),
        offers: r.offers,
        accepted: r.accepted,
        declined: r.declined,
        ignored: r.ignored,
        pending: r.pending,
        acceptance: Some(proportion(&r.acceptance)),
        revenue_after_acceptance: Some(money(cur, i128::from(r.revenue_after_acceptance))),
        margin_after_acceptance: Some(money(cur, i128::from(r.margin_after_acceptance))),
        lift: Some(pb::Lift {
            window_days: r.window_days,
            treated_conversion: Some(proportion(&r.treated.conversion)),
            control_conversion: Some(proportion(&r.control.conversion)),
            lift: r.lift.0,
            lower: r.lift.1,
            upper: r.lift.2,
            treated_revenue_per_customer: Some(money(cur, r.treated.revenue_per_customer)),
            control_revenue_per_customer: Some(money(cur, r.control.revenue_per_customer)),
            incremental_revenue_per_customer: Some(money(
                cur,
                r.treated.revenue_per_customer - r.control.revenue_per_customer,
            )),
            customers_not_yet_measured: r.treated.pending + r.control.pending,
        }),
    }
}

#[tonic::async_trait]
impl EngagementService for EngagementApi {
    async fn create_treatment(
        &self,
        req: Request<pb::CreateTreatmentRequest>,
    ) -> Answer<pb::CreateTreatmentResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.create(ctx, req.into_inner()).await)
    }

    async fn get_treatment(
        &self,
        req: Request<pb::GetTreatmentRequest>,
    ) -> Answer<pb::GetTreatmentResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.get(ctx, req.into_inner()).await)
    }

    async fn list_treatments(
        &self,
        req: Request<pb::ListTreatmentsRequest>,
    ) -> Answer<pb::ListTreatmentsResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.list(ctx, req.into_inner()).await)
    }

    async fn update_treatment(
        &self,
        req: Request<pb::UpdateTreatmentRequest>,
    ) -> Answer<pb::UpdateTreatmentResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.update(ctx, req.into_inner()).await)
    }

    async fn archive_treatment(
        &self,
        req: Request<pb::ArchiveTreatmentRequest>,
    ) -> Answer<pb::ArchiveTreatmentResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.archive(ctx, req.into_inner()).await)
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Answer<pb::GetPolicyResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.policy(ctx).await)
    }

    async fn update_policy(
        &self,
        req: Request<pb::UpdatePolicyRequest>,
    ) -> Answer<pb::UpdatePolicyResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.update_policy(ctx, req.into_inner()).await)
    }

    async fn get_next_best_actions(
        &self,
        req: Request<pb::GetNextBestActionsRequest>,
    ) -> Answer<pb::GetNextBestActionsResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.next_best(ctx, req.into_inner()).await)
    }

    async fn list_decisions(
        &self,
        req: Request<pb::ListDecisionsRequest>,
    ) -> Answer<pb::ListDecisionsResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.decisions(ctx, req.into_inner()).await)
    }

    async fn record_outcome(
        &self,
        req: Request<pb::RecordOutcomeRequest>,
    ) -> Answer<pb::RecordOutcomeResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.outcome(ctx, req.into_inner()).await)
    }

    async fn get_treatment_report(
        &self,
        req: Request<pb::GetTreatmentReportRequest>,
    ) -> Answer<pb::GetTreatmentReportResponse> {
        let ctx = CallContext::of(&req)?;
        answer(self.report(ctx, req.into_inner()).await)
    }

    type StreamNextBestActionsStream =
        BoxStream<'static, Result<pb::StreamNextBestActionsResponse, Status>>;

    async fn stream_next_best_actions(
        &self,
        req: Request<pb::StreamNextBestActionsRequest>,
    ) -> Answer<Self::StreamNextBestActionsStream> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let segment = match (r.segment_id.is_empty(), r.rule_text.is_empty()) {
            (true, true) => {
                v.add(
                    "segment_id",
                    "required: a segment id, or a rule in rule_text",
                );
                None
            }
            (false, false) => {
                v.add("rule_text", "give a segment_id or a rule_text, not both");
                None
            }
            (false, true) => v.uuid("segment_id", &r.segment_id),
            (true, false) => {
                let n = r.rule_text.chars().count();
                v.check(
                    n > 10_000,
                    "rule_text",
                    format!("at most 10,000 characters, got {n}"),
                );
                None
            }
        };
        if ContactChannel::try_from(r.channel).is_err() {
            v.add("channel", format!("unknown channel {}", r.channel));
        }
        v.check(
            !(0..=5).contains(&r.limit_per_customer),
            "limit_per_customer",
            format!("must be in 1..=5 (0 means 1), got {}", r.limit_per_customer),
        );
        v.finish().map_err(Status::from)?;
        let audience = match segment {
            Some(segment) => {
                audience::check(&self.pool, ctx.tenant_id, segment)
                    .await
                    .map_err(Status::from)?;
                Audience::Segment(segment)
            }
            None => {
                let segmentation = self.segmentation.clone().ok_or_else(|| {
                    Status::from(ApiError::Unavailable(
                        "no segmentation service is configured to list a rule's customers".into(),
                    ))
                })?;
                let first = segmentation
                    .rule_matches(&ctx, &r.rule_text, "")
                    .await
                    .map_err(Status::from)?;
                Audience::Rule(Box::new(RuleAudience {
                    rule: r.rule_text.clone(),
                    segmentation,
                    ctx: ctx.clone(),
                    first,
                }))
            }
        };
        let ask = audience::Ask {
            audience,
            channel: r.channel,
            limit: r.limit_per_customer.max(1) as usize,
            preview: r.preview,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(audience::run(
            self.pool.clone(),
            ctx.tenant_id,
            ask,
            self.shutdown.clone(),
            tx,
        ));
        let explain = r.explain;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(move |part| {
                part.map(|p| audience_part(p, explain))
                    .map_err(Status::from)
            })
            .boxed();
        Ok(Response::new(stream))
    }
}
