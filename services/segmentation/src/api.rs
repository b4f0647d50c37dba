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
use rapport_kit::error::{ApiError, Violations, is_unique_violation};
use rapport_kit::feed::{self, NewEvent};
use rapport_kit::page::{PageTokens, page_size};
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::common::v1::{Money, RelationshipStage};
use rapport_proto::rapport::segmentation::v1::segmentation_service_server::SegmentationService;
use rapport_proto::rapport::segmentation::v1::{
    self as pb, HistoryGranularity, MembershipChangeReason, MembershipChangeType, SegmentKind,
    preview_segment_request, segmentation_event, watch_membership_request,
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
    self as seg, check_approach, check_description, check_mask, check_name, check_refresh_interval,
    check_request_id, find_cycle, kind_from_name, kind_name,
};
use crate::engine::{self, Compiled, RefreshError};
use crate::peers::{self, Profile};
use crate::rule::{self, Catalog, Expr, Facts, RankFacts};
use crate::store::{self, Change, SegmentRow};

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

fn parse_uuid(v: &mut Violations, field: &str, s: &str) -> Option<Uuid> {
    if s.is_empty() {
        v.add(field, "required: a UUID");
        return None;
    }
    match Uuid::parse_str(s) {
        Ok(u) => Some(u),
        Err(_) => {
            v.add(field, format!("must be a UUID, got {s:?}"));
            None
        }
    }
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

/// Names of segments for printing rules.
fn namer(names: &HashMap<Uuid, String>) -> impl Fn(Uuid) -> Option<String> + '_ {
    move |id| names.get(&id).cloned()
}

/// The stored definition as its message.
fn segment_proto(row: &SegmentRow, names: &HashMap<Uuid, String>) -> pb::Segment {
    let kind = kind_from_name(&row.kind);
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
fn segment_event(
    row: &SegmentRow,
    names: &HashMap<Uuid, String>,
    changed: Option<&[String]>,
) -> pb::SegmentChanged {
    let expr = row.rule.as_deref().and_then(engine::decode_rule);
    pb::SegmentChanged {
        segment_id: row.segment_id.to_string(),
        name: row.name.clone(),
        description: row.description.clone(),
        kind: kind_from_name(&row.kind) as i32,
        marketing_approach: i32::from(row.marketing_approach),
        rule_text: expr
            .as_ref()
            .map(|e| rule::print(e, &namer(names)))
            .unwrap_or_default(),
        refresh_interval_seconds: row.refresh_interval_seconds,
        referenced_segment_ids: expr
            .as_ref()
            .map(engine::referenced_ids)
            .unwrap_or_default()
            .iter()
            .map(Uuid::to_string)
            .collect(),
        etag: seg::etag(row.version),
        changed_fields: changed.map(<[String]>::to_vec).unwrap_or_default(),
    }
}

/// The envelope of one of this service's events.
fn envelope(event: segmentation_event::Event) -> pb::SegmentationEvent {
    pb::SegmentationEvent { event: Some(event) }
}

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

/// Type-checks a parsed rule and resolves its segment references.
fn check_rule(
    expr: &mut Expr,
    catalog: &Catalog,
    segments: &HashMap<Uuid, String>,
    field: &str,
) -> Result<(), ApiError> {
    if let Err(e) = rule::check(expr, catalog) {
        let (f, d) = e.field_violation(field);
        return Err(ApiError::invalid(f, d));
    }
    let by_name: HashMap<&str, Uuid> = segments.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    let resolve = |s: &str| -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(s) {
            return segments.contains_key(&id).then_some(id);
        }
        by_name.get(s).copied()
    };
    if let Err(e) = rule::resolve_segments(expr, &resolve) {
        let (f, d) = e.field_violation(field);
        return Err(ApiError::invalid(f, d));
    }
    Ok(())
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

    async fn create(
        &self,
        ctx: CallContext,
        r: pb::CreateSegmentRequest,
    ) -> Result<pb::Segment, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let Some(s) = r.segment.as_ref() else {
            return Err(ApiError::invalid("segment", "required"));
        };
        if let Some(p) = check_name(&s.name) {
            v.add("segment.name", p);
        }
        if let Some(p) = check_description(&s.description) {
            v.add("segment.description", p);
        }
        if let Some(p) = check_approach(s.marketing_approach) {
            v.add("segment.marketing_approach", p);
        }
        if let Some(p) = check_request_id(&r.request_id) {
            v.add("request_id", p);
        }
        let kind = SegmentKind::try_from(s.kind).unwrap_or(SegmentKind::Unspecified);
        let kind_str = kind_name(kind);
        if kind_str.is_none() {
            v.add("segment.kind", "required: DYNAMIC, SNAPSHOT or STATIC");
        }
        let interval = match check_refresh_interval(kind, s.refresh_interval.as_ref()) {
            Ok(i) => i,
            Err(p) => {
                v.add("segment.refresh_interval", p);
                None
            }
        };
        let mut parsed = None;
        if kind == SegmentKind::Static {
            if !s.rule_text.is_empty() || s.rule.is_some() {
                v.add(
                    if s.rule_text.is_empty() {
                        "segment.rule"
                    } else {
                        "segment.rule_text"
                    },
                    "a STATIC segment has no rule: leave rule_text and rule empty",
                );
            }
        } else if kind_str.is_some() {
            parsed = parse_rule(
                &mut v,
                &s.rule_text,
                s.rule.as_ref(),
                "segment.rule_text",
                "segment.rule",
            );
            if s.rule_text.is_empty() && s.rule.is_none() {
                v.add(
                    "segment.rule_text",
                    "required for a DYNAMIC or SNAPSHOT segment: give rule_text or rule",
                );
            }
        }
        v.finish()?;
        let Some(kind_str) = kind_str else {
            return Err(ApiError::invalid("segment.kind", "required"));
        };

        let catalog = self.catalog(&ctx).await?;
        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let names = store::segment_names(&mut tx, tenant).await?;
        let mut expr = None;
        if let Some((mut e, form)) = parsed {
            let field = if form == "text" {
                "segment.rule_text"
            } else {
                "segment.rule"
            };
            check_rule(&mut e, &catalog, &names, field)?;
            expr = Some(e);
        }
        let fp = fingerprint(s);
        if !r.request_id.is_empty()
            && let Some((stored_fp, id)) =
                store::request_key(&mut tx, tenant, &r.request_id).await?
        {
            if stored_fp != fp {
                return Err(ApiError::AlreadyExists(format!(
                    "request_id {:?} was used for a different segment; use a new request_id",
                    r.request_id
                )));
            }
            return self.output(&mut tx, tenant, id).await;
        }
        let id = Uuid::now_v7();
        if !r.request_id.is_empty()
            && !store::save_request_key(&mut tx, tenant, &r.request_id, &fp, id).await?
        {
            return Err(ApiError::Aborted(
                "another call with this request_id is in progress; retry".into(),
            ));
        }
        let new = store::NewSegment {
            segment_id: id,
            name: s.name.clone(),
            description: s.description.clone(),
            kind: kind_str,
            marketing_approach: s.marketing_approach as i16,
            rule: expr.as_ref().map(engine::encode_rule),
            refresh_interval_seconds: interval,
        };
        if let Err(e) = store::insert_segment(&mut tx, tenant, &new).await {
            if is_unique_violation(&e, None) {
                return Err(ApiError::AlreadyExists(format!(
                    "a segment named {:?} exists; choose another name or update that segment",
                    s.name
                )));
            }
            return Err(e.into());
        }
        if let Some(e) = &expr {
            store::set_refs(&mut tx, tenant, id, &engine::referenced_ids(e)).await?;
            let now = Utc::now();
            let compiled = Compiled {
                id,
                name: s.name.clone(),
                expr: e.clone(),
            };
            engine::evaluate_segment(
                &mut tx,
                tenant,
                &compiled,
                &catalog,
                now,
                MembershipChangeReason::SegmentCreated,
            )
            .await?;
            store::set_refreshed(
                &mut tx,
                tenant,
                id,
                now,
                engine::next_refresh(kind_str, interval, now),
            )
            .await?;
        }
        let row = self.load(&mut tx, tenant, id).await?;
        let mut names = names;
        names.insert(id, row.name.clone());
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "segment",
                id.to_string(),
                "SegmentCreated",
                &envelope(segmentation_event::Event::SegmentCreated(segment_event(
                    &row, &names, None,
                ))),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(segment_proto(&row, &names))
    }

    async fn update(
        &self,
        ctx: CallContext,
        r: pb::UpdateSegmentRequest,
    ) -> Result<pb::UpdateSegmentResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let Some(s) = r.segment.as_ref() else {
            return Err(ApiError::invalid("segment", "required"));
        };
        let id = parse_uuid(&mut v, "segment.segment_id", &s.segment_id);
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        for (f, d) in check_mask(&paths) {
            v.add(f, d);
        }
        v.finish()?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment.segment_id", "required"));
        };
        let has = |p: &str| paths.iter().any(|x| x == p);
        let catalog = if has("rule") || has("rule_text") {
            Some(self.catalog(&ctx).await?)
        } else {
            None
        };

        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let Some(mut row) = store::segment(&mut tx, tenant, id, true).await? else {
            return Err(ApiError::not_found("segment", id.to_string()));
        };
        if !s.etag.is_empty() && s.etag != seg::etag(row.version) {
            return Err(ApiError::Aborted(format!(
                "segment {id} changed since etag {:?} (now {:?}): get it again and retry",
                s.etag,
                seg::etag(row.version)
            )));
        }
        let kind = kind_from_name(&row.kind);
        let mut v = Violations::new();
        if has("name") {
            match check_name(&s.name) {
                Some(p) => v.add("segment.name", p),
                None => row.name = s.name.clone(),
            }
        }
        if has("description") {
            match check_description(&s.description) {
                Some(p) => v.add("segment.description", p),
                None => row.description = s.description.clone(),
            }
        }
        if has("marketing_approach") {
            match check_approach(s.marketing_approach) {
                Some(p) => v.add("segment.marketing_approach", p),
                None => row.marketing_approach = s.marketing_approach as i16,
            }
        }
        if has("refresh_interval") {
            match check_refresh_interval(kind, s.refresh_interval.as_ref()) {
                Ok(i) => {
                    row.refresh_interval_seconds = i;
                    row.next_refresh_time = engine::next_refresh(
                        &row.kind,
                        i,
                        row.last_refresh_time.unwrap_or_else(Utc::now),
                    );
                }
                Err(p) => v.add("segment.refresh_interval", p),
            }
        }
        let rule_path = if has("rule_text") {
            Some("rule_text")
        } else if has("rule") {
            Some("rule")
        } else {
            None
        };
        let mut new_rule = None;
        if let Some(path) = rule_path {
            let text = if path == "rule_text" {
                s.rule_text.as_str()
            } else {
                ""
            };
            let proto = if path == "rule" {
                s.rule.as_ref()
            } else {
                None
            };
            if kind == SegmentKind::Static {
                if !text.is_empty() || proto.is_some() {
                    v.add(format!("segment.{path}"), "a STATIC segment has no rule");
                }
            } else if text.is_empty() && proto.is_none() {
                v.add(
                    format!("segment.{path}"),
                    "a DYNAMIC or SNAPSHOT segment needs a rule; it cannot be cleared",
                );
            } else {
                new_rule = parse_rule(&mut v, text, proto, "segment.rule_text", "segment.rule");
            }
        }
        v.finish()?;
        let names = store::segment_names(&mut tx, tenant).await?;
        let mut refs_changed = None;
        if let (Some((mut e, form)), Some(cat)) = (new_rule, catalog.as_ref()) {
            let field = if form == "text" {
                "segment.rule_text"
            } else {
                "segment.rule"
            };
            check_rule(&mut e, cat, &names, field)?;
            let refs = engine::referenced_ids(&e);
            let mut graph = store::reference_graph(&mut tx, tenant).await?;
            graph.remove(&id);
            if let Some(cycle) = find_cycle(&graph, id, &refs) {
                let chain: Vec<String> = cycle
                    .iter()
                    .map(|c| {
                        if *c == id {
                            row.name.clone()
                        } else {
                            names.get(c).cloned().unwrap_or_else(|| c.to_string())
                        }
                    })
                    .collect();
                return Err(ApiError::invalid(
                    field,
                    format!("in_segment makes a cycle: {}", chain.join(" -> ")),
                ));
            }
            row.rule = Some(engine::encode_rule(&e));
            refs_changed = Some((refs, e));
        }
        if let Err(e) = store::update_segment(&mut tx, tenant, &row).await {
            if is_unique_violation(&e, None) {
                return Err(ApiError::AlreadyExists(format!(
                    "a segment named {:?} exists; choose another name",
                    row.name
                )));
            }
            return Err(e.into());
        }
        let (mut entered, mut exited) = (0, 0);
        if let Some((refs, e)) = refs_changed {
            store::set_refs(&mut tx, tenant, id, &refs).await?;
            if kind == SegmentKind::Dynamic
                && let Some(cat) = catalog.as_ref()
            {
                let now = Utc::now();
                let compiled = Compiled {
                    id,
                    name: row.name.clone(),
                    expr: e,
                };
                let (en, ex, _) = engine::evaluate_segment(
                    &mut tx,
                    tenant,
                    &compiled,
                    cat,
                    now,
                    MembershipChangeReason::RuleChanged,
                )
                .await?;
                (entered, exited) = (en, ex);
                store::set_refreshed(
                    &mut tx,
                    tenant,
                    id,
                    now,
                    engine::next_refresh(&row.kind, row.refresh_interval_seconds, now),
                )
                .await?;
            }
        }
        let row = self.load(&mut tx, tenant, id).await?;
        let mut names = names;
        names.insert(id, row.name.clone());
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "segment",
                id.to_string(),
                "SegmentUpdated",
                &envelope(segmentation_event::Event::SegmentUpdated(segment_event(
                    &row,
                    &names,
                    Some(&paths),
                ))),
            )],
        )
        .await?;
        tx.commit().await?;
        Ok(pb::UpdateSegmentResponse {
            segment: Some(segment_proto(&row, &names)),
            entered_count: entered,
            exited_count: exited,
        })
    }

    async fn members_change(
        &self,
        ctx: CallContext,
        segment_id: &str,
        customer_ids: &[String],
        add: bool,
    ) -> Result<(i64, i64, Vec<String>, i64), ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "segment_id", segment_id);
        if customer_ids.is_empty() {
            v.add("customer_ids", "give 1 to 1,000 customer ids");
        } else if customer_ids.len() > 1000 {
            v.add(
                "customer_ids",
                format!("at most 1,000 customer ids, got {}", customer_ids.len()),
            );
        }
        let mut ids = Vec::new();
        for (i, c) in customer_ids.iter().enumerate() {
            match Uuid::parse_str(c) {
                Ok(u) => ids.push(u),
                Err(_) => v.add(
                    format!("customer_ids[{i}]"),
                    format!("must be a UUID, got {c:?}"),
                ),
            }
        }
        v.finish()?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment_id", "required"));
        };
        ids.sort();
        ids.dedup();
        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let Some(row) = store::segment(&mut tx, tenant, id, true).await? else {
            return Err(ApiError::not_found("segment", id.to_string()));
        };
        if row.kind != "static" {
            return Err(ApiError::FailedPrecondition(format!(
                "segment {:?} is {}: only STATIC segments take members by hand",
                row.name,
                row.kind.to_uppercase()
            )));
        }
        let now = Utc::now();
        let (changed, other, missing) = if add {
            let known = store::known_among(&mut tx, tenant, &ids).await?;
            let missing: Vec<String> = ids
                .iter()
                .filter(|i| !known.contains(i))
                .map(Uuid::to_string)
                .collect();
            let added = store::add_members(&mut tx, tenant, id, &known, now).await?;
            let already = (known.len() - added.len()) as i64;
            (added, already, missing)
        } else {
            let removed = store::remove_members(&mut tx, tenant, id, &ids).await?;
            let not = (ids.len() - removed.len()) as i64;
            (removed, not, Vec::new())
        };
        let changes: Vec<Change> = changed
            .iter()
            .map(|c| Change {
                segment_id: id,
                segment_name: row.name.clone(),
                customer_id: *c,
                entered: add,
                reason: MembershipChangeReason::Manual,
            })
            .collect();
        store::record_changes(&mut tx, tenant, &changes, now).await?;
        if !changed.is_empty() {
            let cat = engine::catalog(&mut tx, tenant).await?;
            engine::follow_dependents(&mut tx, tenant, &[id], &changed, &cat, now).await?;
        }
        let count = store::member_count(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok((changed.len() as i64, other, missing, count))
    }

    async fn preview(
        &self,
        ctx: CallContext,
        r: pb::PreviewSegmentRequest,
    ) -> Result<pb::PreviewSegmentResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        v.check(
            !(0..=100).contains(&r.sample_size),
            "sample_size",
            format!("must be 0 to 100, got {}", r.sample_size),
        );
        let parsed = match &r.rule_definition {
            Some(preview_segment_request::RuleDefinition::RuleText(t)) => {
                if t.is_empty() {
                    v.add("rule_text", "required: the rule to evaluate");
                    None
                } else {
                    parse_rule(&mut v, t, None, "rule_text", "rule")
                }
            }
            Some(preview_segment_request::RuleDefinition::Rule(p)) => {
                parse_rule(&mut v, "", Some(p), "rule_text", "rule")
            }
            None => {
                v.add("rule_text", "give the rule in rule_text or in rule");
                None
            }
        };
        v.finish()?;
        let Some((mut expr, form)) = parsed else {
            return Err(ApiError::invalid("rule_text", "required"));
        };
        let catalog = self.catalog(&ctx).await?;
        let mut conn = self.pool.acquire().await?;
        let names = store::segment_names(&mut conn, tenant).await?;
        check_rule(
            &mut expr,
            &catalog,
            &names,
            if form == "text" { "rule_text" } else { "rule" },
        )?;
        let now = Utc::now();
        let sample = if r.sample_size == 0 {
            10
        } else {
            i64::from(r.sample_size)
        };
        let sql = rule::compile_sql(&expr, &catalog, now);
        let (count, ids) = store::preview(&mut conn, tenant, &sql, sample).await?;
        let total = store::customer_count(&mut conn, tenant).await?;
        Ok(pb::PreviewSegmentResponse {
            match_count: count,
            customer_count: total,
            sample_customer_ids: ids.iter().map(Uuid::to_string).collect(),
            rule_text: rule::print(&expr, &namer(&names)),
            rule: Some(rule::to_proto(&expr)),
            evaluate_time: Some(ts(now)),
        })
    }

    async fn history(
        &self,
        ctx: CallContext,
        r: pb::GetSegmentHistoryRequest,
    ) -> Result<pb::GetSegmentHistoryResponse, Status> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "segment_id", &r.segment_id);
        let g = match HistoryGranularity::try_from(r.granularity) {
            Ok(HistoryGranularity::Unspecified) => HistoryGranularity::Day,
            Ok(g) => g,
            Err(_) => {
                v.add(
                    "granularity",
                    format!("unknown granularity {}", r.granularity),
                );
                HistoryGranularity::Day
            }
        };
        let now = Utc::now();
        let end = r.end_time.as_ref().map(from_timestamp);
        let start = r.start_time.as_ref().map(from_timestamp);
        if matches!(end, Some(None)) {
            v.add("end_time", "not a valid timestamp");
        }
        if matches!(start, Some(None)) {
            v.add("start_time", "not a valid timestamp");
        }
        v.finish().map_err(status)?;
        let Some(id) = id else {
            return Err(ApiError::invalid("segment_id", "required").into());
        };
        let end = seg::ceil_to(end.flatten().unwrap_or(now), g);
        let start = seg::floor_to(start.flatten().unwrap_or(end - seg::step(g) * 30), g);
        if start >= end {
            return Err(ApiError::invalid("start_time", "must be before end_time").into());
        }
        let n = (end - start).num_seconds() / seg::step(g).num_seconds().max(1);
        if n > 1000 {
            return Err(ApiError::invalid(
                "granularity",
                format!("the range holds {n} intervals, more than 1,000: choose a coarser granularity or a shorter range"),
            )
            .into());
        }
        if start < now - Duration::days(400) {
            return Err(Status::out_of_range(
                "the history is kept for 400 days: start_time must be within the last 400 days",
            ));
        }
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let row = self.load(&mut conn, tenant, id).await.map_err(status)?;
        let rows = store::history(&mut conn, tenant, id, start, end, seg::step(g))
            .await
            .map_err(db)?;
        let after_end = store::net_changes_since(&mut conn, tenant, id, end)
            .await
            .map_err(db)?;
        let current = row.member_count;
        // Walk back from the end: the count at the end of each interval.
        let mut points = Vec::with_capacity(rows.len());
        let mut net_after = after_end;
        for (s, en, ex) in rows.iter().rev() {
            let e = *s + seg::step(g);
            let count = if e > now {
                current
            } else {
                current - net_after
            };
            points.push(pb::SegmentSizePoint {
                start_time: Some(ts(*s)),
                end_time: Some(ts(e)),
                member_count: count,
                entered_count: *en,
                exited_count: *ex,
            });
            net_after += en - ex;
        }
        points.reverse();
        points.retain(|p| {
            p.end_time
                .as_ref()
                .and_then(from_timestamp)
                .is_some_and(|e| e > row.create_time)
        });
        Ok(pb::GetSegmentHistoryResponse { points })
    }

    async fn explain(
        &self,
        ctx: CallContext,
        r: pb::ExplainMembershipRequest,
    ) -> Result<pb::ExplainMembershipResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let customer = parse_uuid(&mut v, "customer_id", &r.customer_id);
        let segment = parse_uuid(&mut v, "segment_id", &r.segment_id);
        v.finish()?;
        let (Some(customer), Some(segment)) = (customer, segment) else {
            return Err(ApiError::invalid("customer_id", "required"));
        };
        let catalog = self.catalog(&ctx).await?;
        let mut conn = self.pool.acquire().await?;
        let row = self.load(&mut conn, tenant, segment).await?;
        let Some(features) = store::features_json(&mut conn, tenant, customer).await? else {
            return Err(ApiError::not_found("customer", customer.to_string()));
        };
        let enter = store::membership(&mut conn, tenant, segment, customer).await?;
        let now = Utc::now();
        let mut out = pb::ExplainMembershipResponse {
            customer_id: customer.to_string(),
            segment_id: segment.to_string(),
            kind: kind_from_name(&row.kind) as i32,
            member: enter.is_some(),
            enter_time: enter.map(ts),
            rule_held: false,
            explanation: None,
            evaluate_time: Some(ts(now)),
        };
        let Some(expr) = row.rule.as_deref().and_then(engine::decode_rule) else {
            return Ok(out);
        };
        let mut facts = Facts {
            values: rule::facts_from_row(&features, &catalog),
            consents: rule::consents_from_row(&features),
            ..Default::default()
        };
        facts.events = store::customer_events(&mut conn, tenant, customer).await?;
        facts.segments = store::segments_of(&mut conn, tenant, customer)
            .await?
            .into_iter()
            .collect();
        for field in rule::ranked_fields(&expr) {
            if let Some((greater, smaller, total)) =
                store::rank_of(&mut conn, tenant, customer, &field).await?
            {
                facts.ranks.insert(
                    field,
                    RankFacts {
                        greater,
                        smaller,
                        total,
                    },
                );
            }
        }
        let names = store::segment_names(&mut conn, tenant).await?;
        out.rule_held = rule::evaluate(&expr, &facts, now);
        out.explanation = Some(rule::explain(&expr, &facts, now, &namer(&names)));
        Ok(out)
    }

    async fn rfm_report(
        &self,
        ctx: CallContext,
        r: pb::GetRfmReportRequest,
    ) -> Result<pb::GetRfmReportResponse, ApiError> {
        let tenant = ctx.tenant_id;
        let segment = if r.segment_id.is_empty() {
            None
        } else {
            let mut v = Violations::new();
            let id = parse_uuid(&mut v, "segment_id", &r.segment_id);
            v.finish()?;
            id
        };
        // When the scores are due for a recomputation, it runs first in a
        // writer's transaction of its own, unless another writer (a feed
        // consumer, a refresh) holds the tenant: a read never waits on one,
        // and then reports the scores as they are.
        let now = Utc::now();
        {
            let mut tx = self.pool.begin().await?;
            let state = store::rfm_state(&mut tx, tenant).await?;
            if engine::rfm_due(&state, now) && store::try_lock_tenant(&mut tx, tenant).await? {
                engine::recompute_tenant(&mut tx, tenant, now).await?;
            }
            tx.commit().await?;
        }
        let mut tx = self.pool.begin().await?;
        if let Some(s) = segment {
            self.load(&mut tx, tenant, s).await?;
        }
        let state = store::rfm_state(&mut tx, tenant).await?;
        let currency = store::currency(&mut tx, tenant).await?;
        let rows = store::rfm_report(&mut tx, tenant, segment).await?;
        tx.commit().await?;
        let scored: i64 = rows
            .iter()
            .filter(|r| r.rfm_segment.is_some())
            .map(|r| r.customers)
            .sum();
        let unscored: i64 = rows
            .iter()
            .filter(|r| r.rfm_segment.is_none())
            .map(|r| r.customers)
            .sum();
        let total_revenue: Decimal = rows
            .iter()
            .filter(|r| r.rfm_segment.is_some())
            .filter_map(|r| r.revenue)
            .sum();
        let cur = currency.as_deref();
        let segments = rfm::SEGMENTS
            .iter()
            .map(|s| {
                let row = rows
                    .iter()
                    .find(|r| r.rfm_segment.as_deref() == Some(rfm::name(*s)));
                let count = row.map_or(0, |r| r.customers);
                let revenue = row.and_then(|r| r.revenue).unwrap_or_default();
                let clv = row.and_then(|r| r.clv_total).unwrap_or_default();
                let valued = row.map_or(0, |r| r.valued);
                pb::RfmSegmentSummary {
                    rfm_segment: *s as i32,
                    customer_count: count,
                    customer_share: if scored > 0 {
                        count as f64 / scored as f64
                    } else {
                        0.0
                    },
                    revenue: money(cur, revenue),
                    revenue_share: if total_revenue > Decimal::ZERO {
                        (revenue / total_revenue).to_f64().unwrap_or(0.0)
                    } else {
                        0.0
                    },
                    clv_total: money(cur, clv),
                    clv_average: money(
                        cur,
                        if valued > 0 {
                            (clv / Decimal::from(valued)).round_dp(9)
                        } else {
                            Decimal::ZERO
                        },
                    ),
                    valued_customer_count: valued,
                }
            })
            .collect();
        Ok(pb::GetRfmReportResponse {
            segments,
            scored_customer_count: scored,
            unscored_customer_count: unscored,
            compute_time: state.rfm_compute_time.map(ts),
            currency_code: currency.unwrap_or_default(),
        })
    }

    async fn classify(
        &self,
        ctx: CallContext,
        r: pb::ClassifyCustomerRequest,
    ) -> Result<pb::Classification, ApiError> {
        let tenant = ctx.tenant_id;
        let mut v = Violations::new();
        let customer = parse_uuid(&mut v, "customer_id", &r.customer_id);
        v.finish()?;
        let Some(customer) = customer else {
            return Err(ApiError::invalid("customer_id", "required"));
        };
        let mut conn = self.pool.acquire().await?;
        let Some(f) = store::features_json(&mut conn, tenant, customer).await? else {
            return Err(ApiError::not_found("customer", customer.to_string()));
        };
        let (overrides, version, _) = store::policy(&mut conn, tenant, false).await?;
        let p = Policy::with_overrides(&overrides);
        let now = Utc::now();
        let inputs =
            store::classification_inputs(&mut conn, tenant, Some(&[customer]), &p, true, now)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found("customer", customer.to_string()))?;
        let o = classify::classify(&inputs.inputs, &p, now);
        let state = store::rfm_state(&mut conn, tenant).await?;
        let currency = store::currency(&mut conn, tenant).await?;
        let int = |k: &str| f.get(k).and_then(Value::as_i64).map(|x| x as i32);
        let rfm = match (int("rfm_r"), int("rfm_f"), int("rfm_m")) {
            (Some(r), Some(fr), Some(m)) => {
                let last = f
                    .get("last_purchase")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                let monetary = f
                    .get("monetary")
                    .and_then(store::decimal)
                    .unwrap_or_default();
                Some(pb::RfmScores {
                    recency_score: r,
                    frequency_score: fr,
                    monetary_score: m,
                    frequency_monetary_score: rfm::fm(fr, m),
                    segment: rfm::segment(r, rfm::fm(fr, m)) as i32,
                    recency_days: last
                        .map_or(0, |l| (now - l).num_seconds().div_euclid(86_400) as i32),
                    frequency: f.get("purchases").and_then(Value::as_i64).unwrap_or(0),
                    monetary: money(currency.as_deref(), monetary),
                    compute_time: state.rfm_compute_time.map(ts),
                })
            }
            _ => None,
        };
        let profile_stage = f
            .get("profile_stage")
            .and_then(Value::as_str)
            .map_or(RelationshipStage::Unspecified, stage_from_name);
        Ok(pb::Classification {
            customer_id: customer.to_string(),
            ladder_rung: o.ladder as i32,
            ladder_explanation: o.ladder_explanation,
            stage: o.stage as i32,
            stage_explanation: o.stage_explanation,
            profile_stage: profile_stage as i32,
            rfm,
            classify_time: Some(ts(now)),
            policy_etag: policy::etag(version),
        })
    }

    async fn update_policy(
        &self,
        ctx: CallContext,
        r: pb::UpdateClassificationPolicyRequest,
    ) -> Result<pb::ClassificationPolicy, ApiError> {
        let tenant = ctx.tenant_id;
        let update = r.policy.unwrap_or_default();
        let paths: Vec<String> = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        store::lock_tenant(&mut tx, tenant).await?;
        let (mut overrides, version, _) = store::policy(&mut tx, tenant, true).await?;
        if !update.etag.is_empty() && update.etag != policy::etag(version) {
            return Err(ApiError::Aborted(format!(
                "the policy changed since etag {:?} (now {:?}): get it again and retry",
                update.etag,
                policy::etag(version)
            )));
        }
        let changed = match policy::apply_update(&mut overrides, &update, &paths) {
            Ok(c) => c,
            Err(problems) => {
                let mut v = Violations::new();
                for (f, d) in problems {
                    v.add(f, d);
                }
                return Err(v
                    .finish()
                    .err()
                    .unwrap_or_else(|| ApiError::invalid("update_mask", "invalid")));
            }
        };
        let (version, time) = store::save_policy(&mut tx, tenant, &overrides).await?;
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "classification_policy",
                tenant.to_string(),
                "ClassificationPolicyUpdated",
                &envelope(segmentation_event::Event::ClassificationPolicyUpdated(
                    pb::ClassificationPolicyUpdated {
                        changed_fields: changed,
                        etag: policy::etag(version),
                    },
                )),
            )],
        )
        .await?;
        tx.commit().await?;
        // Reclassify in the background.
        let pool = self.pool.clone();
        tokio::spawn(
            async move {
                let run = async {
                    let mut tx = pool.begin().await?;
                    store::lock_tenant(&mut tx, tenant).await?;
                    let now = Utc::now();
                    let changed = engine::classify(&mut tx, tenant, None, now).await?;
                    let cat = engine::catalog(&mut tx, tenant).await?;
                    for chunk in changed.chunks(10_000) {
                        engine::reevaluate(&mut tx, tenant, chunk, &cat, now, MembershipChangeReason::FeaturesChanged, None)
                            .await?;
                    }
                    tx.commit().await
                };
                if let Err(e) = run.await {
                    tracing::warn!(error = %e, "reclassification after a policy update failed; the hourly run will retry");
                }
            }
            .instrument(tracing::Span::current()),
        );
        let mut out = Policy::with_overrides(&overrides).to_proto();
        out.etag = policy::etag(version);
        out.update_time = Some(ts(time));
        Ok(out)
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
        let id = parse_uuid(&mut v, "segment_id", &req.get_ref().segment_id);
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
        let id = parse_uuid(&mut v, "segment_id", &r.segment_id);
        v.finish().map_err(status)?;
        let id = id.ok_or_else(|| status(ApiError::invalid("segment_id", "required")))?;
        let tenant = ctx.tenant_id;
        let run = async {
            let mut tx = self.pool.begin().await?;
            store::lock_tenant(&mut tx, tenant).await?;
            let Some(row) = store::segment(&mut tx, tenant, id, true).await? else {
                return Err(ApiError::not_found("segment", id.to_string()));
            };
            if !r.etag.is_empty() && r.etag != seg::etag(row.version) {
                return Err(ApiError::Aborted(format!(
                    "segment {id} changed since etag {:?}: get it again and retry",
                    r.etag
                )));
            }
            let referrers = store::referrers(&mut tx, tenant, id).await?;
            if !referrers.is_empty() {
                return Err(ApiError::FailedPrecondition(format!(
                    "segment {:?} is referred to by in_segment in the rules of {}: change their rules first",
                    row.name,
                    referrers
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            store::delete_segment(&mut tx, tenant, id).await?;
            feed::append(
                &mut tx,
                &[NewEvent::new(
                    tenant,
                    "segment",
                    id.to_string(),
                    "SegmentDeleted",
                    &envelope(segmentation_event::Event::SegmentDeleted(
                        pb::SegmentDeleted {
                            segment_id: id.to_string(),
                            name: row.name.clone(),
                        },
                    )),
                )],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        };
        run.await.map_err(status)?;
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
            Ok(k) => kind_name(k),
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
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let names = store::segment_names(&mut conn, ctx.tenant_id)
            .await
            .map_err(db)?;
        let next = if more {
            rows.last()
                .map(|l| {
                    self.page_tokens.encode(
                        &scope,
                        &NameCursor {
                            name: l.name.clone(),
                        },
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
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

    async fn refresh_segment(
        &self,
        req: Request<pb::RefreshSegmentRequest>,
    ) -> Result<Response<pb::RefreshSegmentResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let mut v = Violations::new();
        let id = parse_uuid(&mut v, "segment_id", &req.get_ref().segment_id);
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
        let id = parse_uuid(&mut v, "segment_id", &r.segment_id);
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
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = match (more, rows.last()) {
            (true, Some((c, _))) => self.page_tokens.encode(&scope, &IdCursor { id: *c }),
            _ => String::new(),
        };
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
        let id = parse_uuid(&mut v, "customer_id", &r.customer_id);
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
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = match (more, rows.last()) {
            (true, Some((_, n, _))) => self
                .page_tokens
                .encode(&scope, &NameCursor { name: n.clone() }),
            _ => String::new(),
        };
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
            parse_uuid(&mut v, "segment_id", &r.segment_id)
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
