//! The gRPC handlers of `rapport.interaction.v1.InteractionService` and
//! `CampaignService`: read the tenant, validate, call the domain and the
//! store, map errors (`CampaignService` in `campaigns.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use rapport_kit::context::CallContext;
use rapport_kit::convert::from_timestamp;
use rapport_kit::error::{ApiError, Violation, Violations};
use rapport_kit::feed;
use rapport_kit::page::PageTokens;
use rapport_kit::page::page_size;
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::campaign_service_server::CampaignService;
use rapport_proto::rapport::interaction::v1::interaction_service_server::InteractionService;
use rapport_proto::rapport::interaction::v1::{
    self as pb, Channel, InteractionType, RecordInteractionsRequest, ServiceRequestStatus,
    TimelineOrder, export_summaries_request,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::btyd::{
    Purchase, Windows, group_days, purchase_history, push_columns, unit_days,
};
use crate::domain::campaign::{self, check_mask, validate_new};
use crate::domain::money::is_currency;
use crate::domain::summary::customer_summary;
use crate::domain::validate::{
    check_agent_id, is_custom_type, is_printable_key, validate_interaction,
};
use crate::ingest::{CallCache, Outcome, Prepared, Recorder, Refusal};
use crate::store::{self, CampaignFilter, ExportQuery, TimelineFilter};

mod campaigns;

pub use campaigns::CampaignApi;

/// Largest number of interactions in one `RecordInteractions` message.
pub const MAX_PER_MESSAGE: usize = 1000;
/// How many rejections a `RecordInteractions` response lists.
pub const MAX_REJECTIONS: usize = 10_000;
/// How many interactions the writer of a stream commits together at most.
const WRITE_BATCH: usize = 4000;

/// The customer `id` stands for now (the survivor of a merge), or itself.
async fn current_customer(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Uuid, ApiError> {
    let mut conn = pool.acquire().await?;
    let known = store::known_customers(&mut conn, tenant, &[id]).await?;
    Ok(known.get(&id).map_or(id, |k| k.current))
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Microseconds since the epoch.
    t: i64,
    id: Uuid,
}

impl Cursor {
    fn of(t: DateTime<Utc>, id: Uuid) -> Self {
        Self {
            t: t.timestamp_micros(),
            id,
        }
    }
    fn key(&self) -> Option<(DateTime<Utc>, Uuid)> {
        Some((DateTime::from_timestamp_micros(self.t)?, self.id))
    }
}

/// `rapport.interaction.v1.InteractionService`.
#[derive(Clone)]
pub struct InteractionApi {
    pool: PgPool,
    recorder: Recorder,
    page_tokens: PageTokens,
    shutdown: Shutdown,
}

impl InteractionApi {
    /// Handlers over `pool`, recording with `recorder`.
    pub fn new(
        pool: PgPool,
        recorder: Recorder,
        page_tokens: PageTokens,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            pool,
            recorder,
            page_tokens,
            shutdown,
        }
    }
}

fn rejection(index: i64, key: &str, r: Refusal) -> pb::Rejection {
    pb::Rejection {
        index,
        idempotency_key: key.to_string(),
        reason: r.reason as i32,
        message: r.message,
        field_violations: r
            .violations
            .into_iter()
            .map(|v| pb::FieldViolation {
                field: v.field,
                description: v.description,
            })
            .collect(),
    }
}

/// A slice of a stream, validated, on its way to the writer.
struct Batch {
    first_index: i64,
    keys: Vec<String>,
    items: Vec<Result<Prepared, Refusal>>,
}

#[derive(Default)]
struct Tally {
    response: pb::RecordInteractionsResponse,
}

impl Tally {
    fn reject(&mut self, r: pb::Rejection) {
        self.response.rejected_count += 1;
        if self.response.rejections.len() < MAX_REJECTIONS {
            self.response.rejections.push(r);
        } else {
            self.response.rejections_truncated = true;
        }
    }

    /// Adds another lane's tally; rejections stay in stream order and capped.
    fn merge(&mut self, other: Tally) {
        let o = other.response;
        self.response.accepted_count += o.accepted_count;
        self.response.duplicate_count += o.duplicate_count;
        self.response.rejected_count += o.rejected_count;
        self.response.rejections_truncated |= o.rejections_truncated;
        self.response.rejections.extend(o.rejections);
        self.response.rejections.sort_by_key(|r| r.index);
        if self.response.rejections.len() > MAX_REJECTIONS {
            self.response.rejections.truncate(MAX_REJECTIONS);
            self.response.rejections_truncated = true;
        }
    }
}

/// How many batches of one stream are written at the same time (each in
/// its own transaction on its own connection).
const LANES: usize = 2;

/// Set once a lane of a stream's writer failed: the stream takes no more
/// messages and ends with the lane's error at once, whether or not the client
/// is still sending (a batch that needed a peer that died must not leave the
/// stream open, accepting messages it cannot write).
type Failed = Arc<watch::Sender<bool>>;

/// Writes the batches of one stream, spreading them over [`LANES`] writers
/// that each coalesce the batches already waiting for them. Stops taking
/// batches as soon as a lane fails.
async fn write_stream(
    recorder: Recorder,
    ctx: CallContext,
    mut rx: mpsc::Receiver<Batch>,
    failed: Failed,
) -> Result<Tally, ApiError> {
    let mut lanes = Vec::with_capacity(LANES);
    let mut senders = Vec::with_capacity(LANES);
    for _ in 0..LANES {
        let (tx, lane_rx) = mpsc::channel::<Batch>(2);
        senders.push(tx);
        let lane = write_lane(recorder.clone(), ctx.clone(), lane_rx);
        let failed = failed.clone();
        lanes.push(tokio::spawn(
            async move {
                let result = lane.await;
                if result.is_err() {
                    failed.send_replace(true);
                }
                result
            }
            .instrument(tracing::Span::current()),
        ));
    }
    let mut lane_failed = failed.subscribe();
    let mut next = 0;
    loop {
        let batch = tokio::select! {
            biased;
            _ = lane_failed.wait_for(|f| *f) => break,
            batch = rx.recv() => match batch {
                Some(b) => b,
                None => break,
            },
        };
        // A lane that stopped failed: its error is reported below.
        if senders[next % LANES].send(batch).await.is_err() {
            break;
        }
        next += 1;
    }
    drop(senders);
    let mut tally = Tally::default();
    let mut failure = None;
    for lane in lanes {
        match lane.await {
            Ok(Ok(t)) => tally.merge(t),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => {
                failure = failure.or(Some(ApiError::internal(format!(
                    "stream writer failed: {e}"
                ))))
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}

async fn write_lane(
    recorder: Recorder,
    ctx: CallContext,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<Tally, ApiError> {
    let mut tally = Tally::default();
    let mut cache = CallCache::default();
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        let mut size = batches[0].items.len();
        while size < WRITE_BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    size += b.items.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let mut indexes = Vec::with_capacity(size);
        let mut keys = Vec::with_capacity(size);
        let mut items = Vec::with_capacity(size);
        for b in batches {
            indexes.extend((0..b.items.len() as i64).map(|i| b.first_index + i));
            keys.extend(b.keys);
            items.extend(b.items);
        }
        let outcomes = recorder.record(&ctx, items, &mut cache).await?;
        for ((index, key), outcome) in indexes.into_iter().zip(keys).zip(outcomes) {
            match outcome {
                Outcome::Accepted { .. } => tally.response.accepted_count += 1,
                Outcome::Duplicate { .. } => tally.response.duplicate_count += 1,
                Outcome::Rejected(r) => tally.reject(rejection(index, &key, r)),
            }
        }
    }
    Ok(tally)
}

#[tonic::async_trait]
impl InteractionService for InteractionApi {
    async fn record_interaction(
        &self,
        req: Request<pb::RecordInteractionRequest>,
    ) -> Result<Response<pb::RecordInteractionResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let Some(interaction) = req.into_inner().interaction else {
            return Err(ApiError::invalid("interaction", "required").into());
        };
        let new = validate_interaction(&interaction, "interaction", Utc::now())
            .map_err(ApiError::InvalidArgument)?;
        let mut outcomes = self
            .recorder
            .record(
                &ctx,
                vec![Ok(Prepared::new(new))],
                &mut CallCache::default(),
            )
            .await?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| ApiError::internal("recording gave no outcome"))?;
        match outcome {
            Outcome::Accepted {
                stored,
                customer_created,
            } => Ok(Response::new(pb::RecordInteractionResponse {
                interaction: Some(stored.to_proto()),
                created: true,
                customer_created,
            })),
            Outcome::Duplicate {
                interaction_id,
                occur_time,
            } => {
                let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
                let stored =
                    store::get_interaction_at(&mut conn, ctx.tenant_id, interaction_id, occur_time)
                        .await
                        .map_err(ApiError::from)?
                        .ok_or_else(|| {
                            ApiError::not_found("interaction", interaction_id.to_string())
                        })?;
                Ok(Response::new(pb::RecordInteractionResponse {
                    interaction: Some(stored.to_proto()),
                    created: false,
                    customer_created: false,
                }))
            }
            Outcome::Rejected(mut r) => {
                for v in &mut r.violations {
                    if !v.field.starts_with("interaction.") {
                        v.field = format!("interaction.{}", v.field);
                    }
                }
                Err(r.into_error().into())
            }
        }
    }

    async fn record_interactions(
        &self,
        req: Request<Streaming<RecordInteractionsRequest>>,
    ) -> Result<Response<pb::RecordInteractionsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel::<Batch>(4);
        let failed: Failed = Arc::new(watch::channel(false).0);
        let mut writer_failed = failed.subscribe();
        let writer = tokio::spawn(
            write_stream(self.recorder.clone(), ctx, rx, failed)
                .instrument(tracing::Span::current()),
        );
        let mut next_index = 0i64;
        let mut failure: Option<Status> = None;
        loop {
            let message = tokio::select! {
                biased;
                // The writer's error is reported below.
                _ = writer_failed.wait_for(|f| *f) => break,
                message = stream.message() => message,
            };
            let msg = match message {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    failure = Some(if s.code() == tonic::Code::OutOfRange {
                        ApiError::invalid("interactions", s.message().to_string()).into()
                    } else {
                        s
                    });
                    break;
                }
            };
            if msg.interactions.len() > MAX_PER_MESSAGE {
                failure = Some(
                    ApiError::invalid(
                        "interactions",
                        format!(
                            "a message holds {} interactions; at most {MAX_PER_MESSAGE} per message",
                            msg.interactions.len()
                        ),
                    )
                    .into(),
                );
                break;
            }
            let now = Utc::now();
            let batch = Batch {
                first_index: next_index,
                keys: msg
                    .interactions
                    .iter()
                    .map(|i| i.idempotency_key.clone())
                    .collect(),
                items: msg
                    .interactions
                    .iter()
                    .map(|i| {
                        validate_interaction(i, "", now)
                            .map(Prepared::new)
                            .map_err(Refusal::invalid)
                    })
                    .collect(),
            };
            next_index += msg.interactions.len() as i64;
            if batch.items.is_empty() {
                continue;
            }
            if tx.send(batch).await.is_err() {
                // The writer stopped on an error: it is reported below.
                break;
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ApiError::internal(format!("stream writer failed: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        Ok(Response::new(written?.response))
    }

    async fn get_interaction(
        &self,
        req: Request<pb::GetInteractionRequest>,
    ) -> Result<Response<pb::GetInteractionResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let id = Uuid::parse_str(&req.get_ref().interaction_id)
            .map_err(|_| ApiError::invalid("interaction_id", "must be a UUID"))?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let stored = store::get_interaction(&mut conn, ctx.tenant_id, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("interaction", id.to_string()))?;
        Ok(Response::new(pb::GetInteractionResponse {
            interaction: Some(stored.to_proto()),
        }))
    }

    async fn list_interactions(
        &self,
        req: Request<pb::ListInteractionsRequest>,
    ) -> Result<Response<pb::ListInteractionsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let customer = v.uuid("customer_id", &r.customer_id);
        let mut filter = TimelineFilter::default();
        for (n, t) in r.types.iter().enumerate() {
            match InteractionType::try_from(*t) {
                Ok(InteractionType::Unspecified) | Err(_) => v.add(
                    format!("types[{n}]"),
                    "must be an InteractionType value, not UNSPECIFIED",
                ),
                Ok(_) => filter.types.push(*t as i16),
            }
        }
        if r.custom_types.len() > 50 {
            v.add("custom_types", "at most 50 entries");
        }
        for (n, c) in r.custom_types.iter().enumerate() {
            v.check(
                !is_custom_type(c),
                format!("custom_types[{n}]"),
                "not a custom type name",
            );
        }
        filter.custom_types = r.custom_types.clone();
        for (n, c) in r.channels.iter().enumerate() {
            match Channel::try_from(*c) {
                Ok(Channel::Unspecified) | Err(_) => v.add(
                    format!("channels[{n}]"),
                    "must be a Channel value, not UNSPECIFIED",
                ),
                Ok(_) => filter.channels.push(*c as i16),
            }
        }
        let mut time = |field: &str, t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(|t| {
                let parsed = from_timestamp(t);
                v.check(parsed.is_none(), field, "is not a valid timestamp");
                parsed
            })
        };
        filter.start = time("start_time", &r.start_time);
        filter.end = time("end_time", &r.end_time);
        if let (Some(s), Some(e)) = (filter.start, filter.end) {
            v.check(e <= s, "end_time", "must be after start_time");
        }
        match TimelineOrder::try_from(r.order) {
            Ok(TimelineOrder::OldestFirst) => filter.oldest_first = true,
            Ok(_) => {}
            Err(_) => v.add("order", "not a TimelineOrder value"),
        }
        let limit = page_size(&mut v, r.page_size);
        let scope = format!(
            "{}/ListInteractions/{}/{:?}/{:?}/{:?}/{:?}/{:?}/{}",
            ctx.tenant_id,
            r.customer_id,
            filter.types,
            filter.custom_types,
            filter.channels,
            filter.start,
            filter.end,
            filter.oldest_first
        );
        let cursor = match self.page_tokens.decode::<Cursor>(&scope, &r.page_token) {
            Ok(c) => c,
            Err(ApiError::InvalidArgument(list)) => {
                for x in list {
                    v.add(x.field, x.description);
                }
                None
            }
            Err(e) => return Err(e.into()),
        };
        v.finish()?;
        let customer =
            customer.ok_or_else(|| ApiError::invalid("customer_id", "must be a UUID"))?;
        let after = match &cursor {
            Some(c) => Some(
                c.key()
                    .ok_or_else(|| ApiError::invalid("page_token", "malformed"))?,
            ),
            None => None,
        };
        let current = current_customer(&self.pool, ctx.tenant_id, customer).await?;
        let mut rows = store::list_interactions(
            &self.pool,
            ctx.tenant_id,
            current,
            &filter,
            after,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = self.page_tokens.trim_page(&scope, &mut rows, limit, |l| {
            Cursor::of(l.occur_time, l.interaction_id)
        });
        Ok(Response::new(pb::ListInteractionsResponse {
            customer_id: current.to_string(),
            interactions: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn update_service_request(
        &self,
        req: Request<pb::UpdateServiceRequestRequest>,
    ) -> Result<Response<pb::UpdateServiceRequestResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("interaction_id", &r.interaction_id);
        let status = match ServiceRequestStatus::try_from(r.status) {
            Ok(ServiceRequestStatus::Unspecified) | Err(_) => {
                v.add("status", "required: OPEN, IN_PROGRESS, RESOLVED or CLOSED");
                None
            }
            Ok(s) => Some(s),
        };
        check_agent_id(&mut v, "agent_id", &r.agent_id);
        v.finish()?;
        let (Some(id), Some(status)) = (id, status) else {
            return Err(ApiError::invalid("interaction_id", "must be a UUID").into());
        };
        let updated = crate::requests::update_status(
            &self.pool,
            ctx.tenant_id,
            id,
            status,
            &r.agent_id,
            &r.etag,
        )
        .await?;
        Ok(Response::new(pb::UpdateServiceRequestResponse {
            interaction: Some(updated.to_proto()),
        }))
    }

    async fn get_customer_summary(
        &self,
        req: Request<pb::GetCustomerSummaryRequest>,
    ) -> Result<Response<pb::GetCustomerSummaryResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.uuid("customer_id", &r.customer_id);
        let as_of = match &r.as_of {
            None => Utc::now(),
            Some(t) => match from_timestamp(t) {
                Some(t) => t,
                None => {
                    v.add("as_of", "is not a valid timestamp");
                    Utc::now()
                }
            },
        };
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid("customer_id", "must be a UUID"))?;
        let current = current_customer(&self.pool, ctx.tenant_id, id).await?;
        let rows = store::summary_rows(&self.pool, ctx.tenant_id, current, as_of)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetCustomerSummaryResponse {
            summary: Some(customer_summary(current, as_of, &rows)),
        }))
    }

    type ExportSummariesStream = ReceiverStream<Result<pb::ExportSummariesResponse, Status>>;

    async fn export_summaries(
        &self,
        req: Request<pb::ExportSummariesRequest>,
    ) -> Result<Response<Self::ExportSummariesStream>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let now = Utc::now();
        let mut v = Violations::new();
        let calibration_end = match &r.calibration_end_time {
            None => {
                v.add("calibration_end_time", "required");
                None
            }
            Some(t) => match from_timestamp(t) {
                Some(t) if t > now => {
                    v.add(
                        "calibration_end_time",
                        "must not be after the server's clock",
                    );
                    None
                }
                Some(t) => Some(t),
                None => {
                    v.add("calibration_end_time", "is not a valid timestamp");
                    None
                }
            },
        };
        let zone = v.time_zone("time_zone", ctx.zone_or_tenant(&r.time_zone));
        let period_unit = PeriodUnit::try_from(r.period_unit).unwrap_or_default();
        let unit = unit_days(period_unit);
        v.check(
            unit.is_none(),
            "period_unit",
            "required: DAY, WEEK, MONTH or YEAR",
        );
        let holdout_end = r.holdout_end_time.as_ref().and_then(|t| {
            let h = from_timestamp(t);
            match h {
                None => v.add("holdout_end_time", "is not a valid timestamp"),
                Some(h) if h > now => {
                    v.add("holdout_end_time", "must not be after the server's clock")
                }
                Some(h) if calibration_end.is_some_and(|c| h <= c) => {
                    v.add("holdout_end_time", "must be after calibration_end_time")
                }
                _ => {}
            }
            h
        });
        v.check(
            !r.currency_code.is_empty() && !is_currency(&r.currency_code),
            "currency_code",
            "must be an ISO 4217 currency code in upper case",
        );
        let (mut cohort_start, mut cohort_end, mut ids) = (None, None, None);
        match &r.restriction {
            None => {}
            Some(export_summaries_request::Restriction::Cohort(c)) => {
                cohort_start = c.start_time.as_ref().and_then(from_timestamp);
                cohort_end = c.end_time.as_ref().and_then(from_timestamp);
                v.check(
                    cohort_start.is_none(),
                    "cohort.start_time",
                    "required, a valid timestamp",
                );
                v.check(
                    cohort_end.is_none(),
                    "cohort.end_time",
                    "required, a valid timestamp",
                );
                if let (Some(s), Some(e)) = (cohort_start, cohort_end) {
                    v.check(e <= s, "cohort.end_time", "must be after start_time");
                }
            }
            Some(export_summaries_request::Restriction::CustomerIds(list)) => {
                let n = list.customer_ids.len();
                v.check(
                    n == 0 || n > 50_000,
                    "customer_ids.customer_ids",
                    "must hold 1 to 50000 customer ids",
                );
                let mut parsed = Vec::with_capacity(n);
                for (i, s) in list.customer_ids.iter().enumerate() {
                    if let Some(u) = v.uuid(format!("customer_ids.customer_ids[{i}]"), s) {
                        parsed.push(u);
                    }
                }
                ids = Some(parsed);
            }
        }
        v.finish()?;
        let (Some(calibration_end), Some(unit)) = (calibration_end, unit) else {
            return Err(ApiError::invalid("calibration_end_time", "required").into());
        };
        let tenant = ctx.tenant_id;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let currency = if r.currency_code.is_empty() {
            store::main_currency(&mut conn, tenant, calibration_end)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::FailedPrecondition(
                        "the tenant has no purchase before the calibration end to choose a currency from; set currency_code".into(),
                    )
                })?
        } else {
            r.currency_code.clone()
        };
        let customers = match ids {
            None => None,
            Some(list) => {
                let known = store::known_customers(&mut conn, tenant, &list)
                    .await
                    .map_err(ApiError::from)?;
                let mut current: Vec<Uuid> = list
                    .iter()
                    .map(|id| known.get(id).map_or(*id, |k| k.current))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                current.sort_unstable();
                Some(current)
            }
        };
        drop(conn);
        let query = ExportQuery {
            tenant,
            calibration_end,
            holdout_end,
            currency,
            customers,
        };
        let cohort = Cohort {
            start: cohort_start,
            end: cohort_end,
        };
        let shape = Shape {
            unit_days: unit,
            columnar: r.columnar,
            windows: Windows {
                calibration_end,
                holdout_end,
                opportunities: r.with_opportunities.then_some(period_unit),
                zone,
            },
        };
        let (tx, rx) = mpsc::channel(4);
        let pool = self.pool.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                let result = export(pool, query, cohort, shape, tx.clone(), shutdown).await;
                if let Err(e) = result {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchChangesStream = BoxStream<'static, Result<pb::WatchChangesResponse, Status>>;

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let stream = feed::serve_watch::<feed::InteractionFeed>(
            self.pool.clone(),
            crate::SCHEMA.schema,
            req,
            self.shutdown.clone(),
        )?;
        Ok(Response::new(stream))
    }

    async fn get_feed_head(
        &self,
        req: Request<pb::GetFeedHeadRequest>,
    ) -> Result<Response<pb::GetFeedHeadResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let sequence = feed::head(&self.pool, ctx.tenant_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetFeedHeadResponse { sequence }))
    }
}

/// Who an export covers beyond the query: the acquisition cohort.
#[derive(Clone, Copy)]
struct Cohort {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Cohort {
    fn admits(&self, first: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| first >= s) && self.end.is_none_or(|e| first < e)
    }
}

/// How an export is shaped: the period unit's length in days, whether to
/// send columns, and the windows, zone and opportunities purchases are
/// grouped by.
struct Shape {
    unit_days: f64,
    columnar: bool,
    windows: Windows,
}

/// The summaries waiting to be sent: one message each, or columns.
enum Pending {
    Rows(Vec<pb::PurchaseHistorySummary>),
    Columns(Box<pb::SummaryColumns>),
}

impl Pending {
    fn new(columnar: bool) -> Self {
        if columnar {
            Pending::Columns(Box::default())
        } else {
            Pending::Rows(Vec::with_capacity(1000))
        }
    }

    fn len(&self) -> usize {
        match self {
            Pending::Rows(r) => r.len(),
            Pending::Columns(c) => c.frequency.len(),
        }
    }

    /// Whether a message is due: 1,000 summaries, or 10,000 as columns.
    fn full(&self) -> bool {
        match self {
            Pending::Rows(r) => r.len() >= 1000,
            Pending::Columns(c) => c.frequency.len() >= 10_000,
        }
    }

    /// The waiting summaries as a message, leaving an empty batch.
    fn take(&mut self, currency: &str) -> pb::ExportSummariesResponse {
        match self {
            Pending::Rows(r) => pb::ExportSummariesResponse {
                summaries: std::mem::replace(r, Vec::with_capacity(1000)),
                columns: None,
            },
            Pending::Columns(c) => {
                let mut columns = std::mem::take(&mut **c);
                columns.currency_code = currency.to_string();
                pb::ExportSummariesResponse {
                    summaries: Vec::new(),
                    columns: Some(columns),
                }
            }
        }
    }
}

/// Streams the export in one repeatable-read snapshot: purchases come in
/// customer order and each customer's are summarised as soon as they are
/// complete.
async fn export(
    pool: PgPool,
    query: ExportQuery,
    cohort: Cohort,
    shape: Shape,
    out: mpsc::Sender<Result<pb::ExportSummariesResponse, Status>>,
    shutdown: Shutdown,
) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut rows = store::export_purchases(&mut tx, &query);
    let mut batch = Pending::new(shape.columnar);
    let mut current: Option<Uuid> = None;
    let mut purchases: Vec<Purchase> = Vec::new();
    let windows = &shape.windows;
    let (end, unit) = (query.calibration_end, shape.unit_days);
    let summarise = |customer: Uuid, purchases: &[Purchase], batch: &mut Pending| {
        let Some(days) =
            group_days(customer, purchases, windows).filter(|days| cohort.admits(days.first_time))
        else {
            return;
        };
        match batch {
            Pending::Rows(r) => r.push(purchase_history(&days, end, unit, &query.currency)),
            Pending::Columns(c) => push_columns(c, &days, end, unit),
        }
    };
    loop {
        let next = tokio::select! {
            n = rows.next() => n,
            _ = shutdown.wait() => return Err(ApiError::Unavailable("the service is shutting down".into())),
        };
        let Some(row) = next else { break };
        let (customer, purchase) = row?;
        if current != Some(customer) {
            if let Some(c) = current {
                summarise(c, &purchases, &mut batch);
                purchases.clear();
            }
            current = Some(customer);
        }
        purchases.push(purchase);
        if batch.full() && out.send(Ok(batch.take(&query.currency))).await.is_err() {
            return Ok(());
        }
    }
    drop(rows);
    if let Some(c) = current {
        summarise(c, &purchases, &mut batch);
    }
    if batch.len() > 0 {
        let _ = out.send(Ok(batch.take(&query.currency))).await;
    }
    tx.commit().await?;
    Ok(())
}
