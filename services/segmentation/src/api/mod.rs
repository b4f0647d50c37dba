//! The gRPC handlers of `rapport.segmentation.v1.SegmentationService`: read
//! the tenant, validate, call the rule module, the engine and the store, map
//! errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use rapport_kit::context::CallContext;
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::error::{ApiError, Violations};
use rapport_kit::feed;
use rapport_kit::page::{PageTokens, page_size};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::{Money, RelationshipStage};
use rapport_proto::rapport::segmentation::v1::segmentation_service_server::SegmentationService;
use rapport_proto::rapport::segmentation::v1::{
    self as pb, HistoryGranularity, MembershipChangeReason, MembershipChangeType, SegmentKind,
    list_rule_matches_request, preview_segment_request, watch_membership_request,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::classify::{self, stage_from_name};
use crate::domain::policy::{self, Policy};
use crate::domain::rfm;
use crate::domain::segment::{
    self as seg, Kind, check_approach, check_description, check_mask, check_name,
    check_refresh_interval, check_request_id,
};
use crate::engine::{self, RefreshError};
use crate::peers::{self, Profile};
use crate::rule::{self, Catalog, Expr, Facts, RankFacts};
use crate::segments::{check_rule, namer};
use crate::store::{self, SegmentRow};

mod classification;
mod insight;
mod segments;

/// How long attribute definitions read from the profile service are trusted.
const DEFINITIONS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// `rapport.segmentation.v1.SegmentationService`.
#[derive(Clone)]
pub struct SegmentationApi {
    pool: PgPool,
    page_tokens: PageTokens,
    shutdown: Shutdown,
    profile: Option<Profile>,
    definitions_read: Arc<Mutex<HashMap<Uuid, Instant>>>,
    /// Membership log notifications, one LISTEN connection for every
    /// WatchMembership stream.
    membership: Arc<rapport_kit::notify::Hub>,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    timestamp(t)
}

/// Money in the tenant's currency (unset without a currency).
fn money(currency: Option<&str>, amount: Decimal) -> Option<Money> {
    let code = currency?;
    let units = amount.trunc();
    let nanos = ((amount - units) * Decimal::from(1_000_000_000)).round();
    Some(Money {
        currency_code: code.to_string(),
        units: units.to_i64().unwrap_or(0),
        nanos: nanos.to_i32().unwrap_or(0),
    })
}

/// The stored definition as its message.
fn segment_proto(row: &SegmentRow, names: &HashMap<Uuid, String>) -> pb::Segment {
    let kind = row.kind.to_proto();
    let expr = row.rule.as_deref().and_then(engine::decode_rule);
    pb::Segment {
        segment_id: row.segment_id.to_string(),
        name: row.name.clone(),
        description: row.description.clone(),
        kind: kind as i32,
        marketing_approach: i32::from(row.marketing_approach),
        rule_text: expr
            .as_ref()
            .map(|e| rule::print(e, &namer(names)))
            .unwrap_or_default(),
        rule: expr.as_ref().map(rule::to_proto),
        refresh_interval: row.refresh_interval_seconds.map(|s| prost_types::Duration {
            seconds: s,
            nanos: 0,
        }),
        member_count: row.member_count,
        last_refresh_time: row.last_refresh_time.map(ts),
        next_refresh_time: row.next_refresh_time.map(ts),
        create_time: Some(ts(row.create_time)),
        update_time: Some(ts(row.update_time)),
        etag: seg::etag(row.version),
    }
}

/// The SegmentCreated / SegmentUpdated event: the segment as it now is.
/// A rule given as text or as a message, parsed; problems are added to `v`
/// under `text_field` / `proto_field`.
fn parse_rule(
    v: &mut Violations,
    text: &str,
    proto: Option<&pb::Rule>,
    text_field: &str,
    proto_field: &str,
) -> Option<(Expr, &'static str)> {
    match (text.is_empty(), proto) {
        (false, Some(_)) => {
            v.add(
                text_field,
                format!("give the rule either in {text_field} or in {proto_field}, not both"),
            );
            None
        }
        (false, None) => match rule::parse(text) {
            Ok(e) => Some((e, "text")),
            Err(e) => {
                let (f, d) = e.field_violation(text_field);
                v.add(f, d);
                None
            }
        },
        (true, Some(p)) => match rule::from_proto(p) {
            Ok(e) => Some((e, "proto")),
            Err(e) => {
                let (f, d) = e.field_violation(proto_field);
                v.add(f, d);
                None
            }
        },
        (true, None) => None,
    }
}

fn fingerprint(s: &pb::Segment) -> String {
    let digest = Sha256::digest(s.encode_to_vec());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn status(e: ApiError) -> Status {
    e.into()
}

fn db(e: sqlx::Error) -> Status {
    ApiError::from(e).into()
}

impl SegmentationApi {
    /// Handlers over `pool`; `profile` gives attribute definitions.
    pub fn new(
        pool: PgPool,
        page_tokens: PageTokens,
        shutdown: Shutdown,
        profile: Option<Profile>,
    ) -> Self {
        let membership = rapport_kit::notify::Hub::start(
            pool.clone(),
            store::MEMBERSHIP_CHANNEL,
            shutdown.clone(),
        );
        Self {
            pool,
            page_tokens,
            shutdown,
            profile,
            definitions_read: Arc::new(Mutex::new(HashMap::new())),
            membership,
        }
    }

    /// The tenant's catalogue, with attribute definitions refreshed from the
    /// profile service when they are older than the TTL (on failure the
    /// definitions already known are used).
    async fn catalog(&self, ctx: &CallContext) -> Result<Catalog, ApiError> {
        if let Some(peer) = &self.profile {
            let fresh = self
                .definitions_read
                .lock()
                .ok()
                .and_then(|m| m.get(&ctx.tenant_id).copied())
                .is_some_and(|t| t.elapsed() < DEFINITIONS_TTL);
            if !fresh {
                match peers::attribute_definitions(peer, ctx).await {
                    Ok(defs) => {
                        let mut conn = self.pool.acquire().await?;
                        store::save_attribute_definitions(&mut conn, ctx.tenant_id, &defs).await?;
                        if let Ok(mut m) = self.definitions_read.lock() {
                            m.insert(ctx.tenant_id, Instant::now());
                        }
                    }
                    Err(s) => tracing::warn!(code = ?s.code(), message = s.message(),
                        "attribute definitions unavailable; using those already known"),
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        Ok(engine::catalog(&mut conn, ctx.tenant_id).await?)
    }

    async fn load(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<SegmentRow, ApiError> {
        store::segment(conn, tenant, id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("segment", id.to_string()))
    }

    async fn output(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<pb::Segment, ApiError> {
        let row = self.load(conn, tenant, id).await?;
        let names = store::segment_names(conn, tenant).await?;
        Ok(segment_proto(&row, &names))
    }

    async fn require_known(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        customer: Uuid,
    ) -> Result<(), ApiError> {
        if store::is_known(conn, tenant, customer).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("customer", customer.to_string()))
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NameCursor {
    name: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IdCursor {
    id: Uuid,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {
    async fn list_fields(
        &self,
        req: Request<pb::ListFieldsRequest>,
    ) -> Result<Response<pb::ListFieldsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let catalog = self.catalog(&ctx).await.map_err(status)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let currency = store::currency(&mut conn, ctx.tenant_id)
            .await
            .map_err(db)?;
        Ok(Response::new(pb::ListFieldsResponse {
            fields: catalog.fields(),
            aggregate_sources: catalog.aggregate_sources(),
            currency_code: currency.unwrap_or_default(),
        }))
    }

    async fn create_segment(
        &self,
        req: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::CreateSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let s = self.create(ctx, req.into_inner()).await.map_err(status)?;
        Ok(Response::new(pb::CreateSegmentResponse {
            segment: Some(s),
        }))
    }

    async fn get_segment(
        &self,
        req: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let mut v = Violations::new();
        let id = v.uuid("segment_id", &req.get_ref().segment_id);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("segment_id", "required")))?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let s = self
            .output(&mut conn, ctx.tenant_id, id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetSegmentResponse { segment: Some(s) }))
    }

    async fn update_segment(
        &self,
        req: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::UpdateSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(
            self.update(ctx, req.into_inner()).await.map_err(status)?,
        ))
    }

    async fn delete_segment(
        &self,
        req: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("segment_id", &r.segment_id);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("segment_id", "required")))?;
        let tenant = ctx.tenant_id;
        crate::segments::delete(&self.pool, tenant, id, &r.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteSegmentResponse {}))
    }

    async fn list_segments(
        &self,
        req: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let limit = page_size(&mut v, r.page_size);
        let kind = match SegmentKind::try_from(r.kind) {
            Ok(k) => Kind::from_proto(k),
            Err(_) => {
                v.add("kind", format!("unknown kind {}", r.kind));
                None
            }
        };
        if let Some(p) = check_approach(r.marketing_approach) {
            v.add("marketing_approach", p);
        }
        v.finish().map_err(status)?;
        let approach = (r.marketing_approach != 0).then_some(r.marketing_approach as i16);
        let scope = format!(
            "{}/segments/{}/{}",
            ctx.tenant_id, r.kind, r.marketing_approach
        );
        let after = self
            .page_tokens
            .decode::<NameCursor>(&scope, &r.page_token)
            .map_err(status)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let mut rows = store::list_segments(
            &mut conn,
            ctx.tenant_id,
            kind,
            approach,
            after.as_ref().map(|c| c.name.as_str()),
            limit + 1,
        )
        .await
        .map_err(db)?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |l| NameCursor {
                name: l.name.clone(),
            });
        let names = store::segment_names(&mut conn, ctx.tenant_id)
            .await
            .map_err(db)?;
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: rows.iter().map(|r| segment_proto(r, &names)).collect(),
            next_page_token: next,
        }))
    }

    async fn add_members(
        &self,
        req: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let (added, already, missing, count) = self
            .members_change(ctx, &r.segment_id, &r.customer_ids, true)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddMembersResponse {
            added_count: added,
            already_member_count: already,
            not_found_customer_ids: missing,
            member_count: count,
        }))
    }

    async fn remove_members(
        &self,
        req: Request<pb::RemoveMembersRequest>,
    ) -> Result<Response<pb::RemoveMembersResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let (removed, not, _, count) = self
            .members_change(ctx, &r.segment_id, &r.customer_ids, false)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveMembersResponse {
            removed_count: removed,
            not_member_count: not,
            member_count: count,
        }))
    }

    async fn preview_segment(
        &self,
        req: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(
            self.preview(ctx, req.into_inner()).await.map_err(status)?,
        ))
    }

    async fn list_rule_matches(
        &self,
        req: Request<pb::ListRuleMatchesRequest>,
    ) -> Result<Response<pb::ListRuleMatchesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(
            self.rule_matches(ctx, req.into_inner())
                .await
                .map_err(status)?,
        ))
    }

    async fn refresh_segment(
        &self,
        req: Request<pb::RefreshSegmentRequest>,
    ) -> Result<Response<pb::RefreshSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let mut v = Violations::new();
        let id = v.uuid("segment_id", &req.get_ref().segment_id);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("segment_id", "required")))?;
        let done = match engine::refresh(
            &self.pool,
            ctx.tenant_id,
            id,
            MembershipChangeReason::Refresh,
        )
        .await
        {
            Ok(d) => d,
            Err(RefreshError::NotFound) => {
                return Err(ApiError::not_found("segment", id.to_string()).into());
            }
            Err(RefreshError::Static) => {
                return Err(ApiError::FailedPrecondition(
                    "the segment is STATIC: it has no rule to refresh; change it with AddMembers and RemoveMembers".into(),
                )
                .into());
            }
            Err(RefreshError::Db(e)) => return Err(db(e)),
        };
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let s = self
            .output(&mut conn, ctx.tenant_id, id)
            .await
            .map_err(status)?;
        let (first, last) = done.range.unwrap_or((0, 0));
        Ok(Response::new(pb::RefreshSegmentResponse {
            segment: Some(s),
            entered_count: done.entered,
            exited_count: done.exited,
            first_sequence: first,
            last_sequence: last,
            refresh_time: Some(ts(done.time)),
        }))
    }

    async fn list_members(
        &self,
        req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("segment_id", &r.segment_id);
        let limit = page_size(&mut v, r.page_size);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("segment_id", "required")))?;
        let scope = format!("{}/members/{id}", ctx.tenant_id);
        let after = self
            .page_tokens
            .decode::<IdCursor>(&scope, &r.page_token)
            .map_err(status)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.load(&mut conn, ctx.tenant_id, id)
            .await
            .map_err(status)?;
        let mut rows =
            store::list_members(&mut conn, ctx.tenant_id, id, after.map(|c| c.id), limit + 1)
                .await
                .map_err(db)?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |(c, _)| IdCursor { id: *c });
        Ok(Response::new(pb::ListMembersResponse {
            members: rows
                .into_iter()
                .map(|(c, t)| pb::SegmentMember {
                    customer_id: c.to_string(),
                    enter_time: Some(ts(t)),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn get_customer_segments(
        &self,
        req: Request<pb::GetCustomerSegmentsRequest>,
    ) -> Result<Response<pb::GetCustomerSegmentsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("customer_id", &r.customer_id);
        let limit = page_size(&mut v, r.page_size);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("customer_id", "required")))?;
        let scope = format!("{}/customer-segments/{id}", ctx.tenant_id);
        let after = self
            .page_tokens
            .decode::<NameCursor>(&scope, &r.page_token)
            .map_err(status)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.require_known(&mut conn, ctx.tenant_id, id)
            .await
            .map_err(status)?;
        let mut rows = store::customer_segments(
            &mut conn,
            ctx.tenant_id,
            id,
            after.as_ref().map(|c| c.name.as_str()),
            limit + 1,
        )
        .await
        .map_err(db)?;
        let next = self
            .page_tokens
            .trim_page(&scope, &mut rows, limit, |(_, n, _)| NameCursor {
                name: n.clone(),
            });
        Ok(Response::new(pb::GetCustomerSegmentsResponse {
            memberships: rows
                .into_iter()
                .map(|(s, n, t)| pb::SegmentMembership {
                    segment_id: s.to_string(),
                    segment_name: n,
                    enter_time: Some(ts(t)),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn get_segment_history(
        &self,
        req: Request<pb::GetSegmentHistoryRequest>,
    ) -> Result<Response<pb::GetSegmentHistoryResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(self.history(ctx, req.into_inner()).await?))
    }

    type WatchMembershipStream = Stream<pb::WatchMembershipResponse>;

    async fn watch_membership(
        &self,
        req: Request<pb::WatchMembershipRequest>,
    ) -> Result<Response<Self::WatchMembershipStream>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let segment = if r.segment_id.is_empty() {
            None
        } else {
            v.uuid("segment_id", &r.segment_id)
        };
        let now = Utc::now();
        let mut start_time = None;
        let mut after = None;
        match &r.start {
            Some(watch_membership_request::Start::AfterSequence(s)) => {
                v.check(*s < 0, "after_sequence", "must not be negative");
                after = Some(*s);
            }
            Some(watch_membership_request::Start::StartTime(t)) => match from_timestamp(t) {
                Some(t) if t > now => v.add("start_time", "must not be in the future"),
                Some(t) => start_time = Some(t),
                None => v.add("start_time", "not a valid timestamp"),
            },
            None => {}
        }
        v.finish().map_err(status)?;
        if start_time.is_some_and(|t| t < now - Duration::days(400)) {
            return Err(Status::out_of_range(
                "membership changes are kept for 400 days: start within the last 400 days",
            ));
        }
        let mut conn = self.pool.acquire().await.map_err(db)?;
        if let Some(s) = segment {
            self.load(&mut conn, tenant, s).await.map_err(status)?;
        }
        let cursor = match (after, start_time) {
            (Some(a), _) => a,
            (None, Some(t)) => store::sequence_before(&mut conn, tenant, Some(t))
                .await
                .map_err(db)?,
            (None, None) => store::sequence_before(&mut conn, tenant, None)
                .await
                .map_err(db)?,
        };
        drop(conn);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let pool = self.pool.clone();
        let shutdown = self.shutdown.clone();
        // Subscribed before the first read, so nothing committed after it
        // goes unnoticed.
        let mut notified = self.membership.subscribe();
        let tenant_text = tenant.to_string();
        tokio::spawn(
            async move {
                let unavailable = |e: sqlx::Error| {
                    tracing::warn!(error = %e, "membership stream interrupted");
                    Status::unavailable(
                        "the stream is interrupted; reconnect with your last sequence",
                    )
                };
                let mut cursor = cursor;
                loop {
                    let batch = async {
                        let mut conn = pool.acquire().await?;
                        let rows =
                            store::log_after(&mut conn, tenant, segment, cursor, 1000).await?;
                        let exists = match segment {
                            Some(s) => store::segment(&mut conn, tenant, s, false).await?.is_some(),
                            None => true,
                        };
                        Ok::<_, sqlx::Error>((rows, exists))
                    };
                    let (rows, exists) = match batch.await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(e))).await;
                            return;
                        }
                    };
                    let full = rows.len() == 1000;
                    for row in rows {
                        cursor = row.sequence;
                        let change = pb::MembershipChange {
                            sequence: row.sequence,
                            segment_id: row.segment_id.to_string(),
                            segment_name: row.segment_name,
                            customer_id: row.customer_id.to_string(),
                            r#type: if row.entered {
                                MembershipChangeType::Entered as i32
                            } else {
                                MembershipChangeType::Exited as i32
                            },
                            reason: i32::from(row.reason),
                            change_time: Some(ts(row.change_time)),
                        };
                        if tx
                            .send(Ok(pb::WatchMembershipResponse {
                                change: Some(change),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if full {
                        continue;
                    }
                    if !exists {
                        let _ = tx
                            .send(Err(Status::not_found("the watched segment was deleted")))
                            .await;
                        return;
                    }
                    // Until this tenant's log may have grown (or a second
                    // passed: a notification can be missed).
                    let wake = async {
                        loop {
                            let payload = notified.next().await;
                            if payload == tenant_text || payload == rapport_kit::notify::ANY {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = wake => {}
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = tx.closed() => return,
                        _ = shutdown.wait() => {
                            let _ = tx.send(Err(Shutdown::stream_status(
                                "with your last sequence",
                            ))).await;
                            return;
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("segmentation.watch_membership")),
        );
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
        ))
    }

    async fn explain_membership(
        &self,
        req: Request<pb::ExplainMembershipRequest>,
    ) -> Result<Response<pb::ExplainMembershipResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(
            self.explain(ctx, req.into_inner()).await.map_err(status)?,
        ))
    }

    async fn get_rfm_report(
        &self,
        req: Request<pb::GetRfmReportRequest>,
    ) -> Result<Response<pb::GetRfmReportResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        Ok(Response::new(
            self.rfm_report(ctx, req.into_inner())
                .await
                .map_err(status)?,
        ))
    }

    async fn classify_customer(
        &self,
        req: Request<pb::ClassifyCustomerRequest>,
    ) -> Result<Response<pb::ClassifyCustomerResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let c = self.classify(ctx, req.into_inner()).await.map_err(status)?;
        Ok(Response::new(pb::ClassifyCustomerResponse {
            classification: Some(c),
        }))
    }

    async fn get_classification_policy(
        &self,
        req: Request<pb::GetClassificationPolicyRequest>,
    ) -> Result<Response<pb::GetClassificationPolicyResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let (overrides, version, time) = store::policy(&mut conn, ctx.tenant_id, false)
            .await
            .map_err(db)?;
        let mut p = Policy::with_overrides(&overrides).to_proto();
        p.etag = policy::etag(version);
        p.update_time = time.map(ts);
        Ok(Response::new(pb::GetClassificationPolicyResponse {
            policy: Some(p),
            default_policy: Some(Policy::default().to_proto()),
        }))
    }

    async fn update_classification_policy(
        &self,
        req: Request<pb::UpdateClassificationPolicyRequest>,
    ) -> Result<Response<pb::UpdateClassificationPolicyResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let p = self
            .update_policy(ctx, req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateClassificationPolicyResponse {
            policy: Some(p),
        }))
    }

    type WatchChangesStream = Stream<pb::WatchChangesResponse>;

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let stream = feed::serve_watch::<feed::SegmentationFeed>(
            self.pool.clone(),
            crate::SCHEMA.schema,
            req,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }
}
