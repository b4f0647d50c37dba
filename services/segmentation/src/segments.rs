//! Writing segments: create, update, delete, and changes to a static
//! segment's members. Each use case owns its transaction under the
//! tenant's lock: rules are checked against the segments as they are,
//! members are evaluated, and the segment's event is appended, all at once.

use std::collections::HashMap;

use chrono::Utc;
use rapport_kit::error::{ApiError, is_unique_violation};
use rapport_kit::feed::{self, NewEvent};
use rapport_kit::idempotency;
use rapport_proto::rapport::segmentation::v1::{
    self as pb, MembershipChangeReason, SegmentKind, segmentation_event,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::segment::{self as seg, Kind, find_cycle};
use crate::engine::{self, Compiled};
use crate::rule::{self, Catalog, Expr};
use crate::store::{self, Change, SegmentRow};

/// Names of segments for printing rules.
pub fn namer(names: &HashMap<Uuid, String>) -> impl Fn(Uuid) -> Option<String> + '_ {
    move |id| names.get(&id).cloned()
}

/// The SegmentCreated/SegmentUpdated payload of a stored segment.
pub fn segment_event(
    row: &SegmentRow,
    names: &HashMap<Uuid, String>,
    changed: Option<&[String]>,
) -> pb::SegmentChanged {
    let expr = row.rule.as_deref().and_then(engine::decode_rule);
    pb::SegmentChanged {
        segment_id: row.segment_id.to_string(),
        name: row.name.clone(),
        description: row.description.clone(),
        kind: row.kind.to_proto() as i32,
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
pub fn envelope(event: segmentation_event::Event) -> pb::SegmentationEvent {
    pb::SegmentationEvent { event: Some(event) }
}

/// Type-checks a parsed rule and resolves its segment references.
pub fn check_rule(
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

/// The stored segment `id` (NOT_FOUND when there is none).
pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<SegmentRow, ApiError> {
    store::segment(conn, tenant, id, false)
        .await?
        .ok_or_else(|| ApiError::not_found("segment", id.to_string()))
}

/// Evaluates a segment's members now and schedules its next refresh;
/// returns how many customers entered and left.
async fn evaluate_now(
    tx: &mut PgConnection,
    tenant: Uuid,
    compiled: &Compiled,
    catalog: &Catalog,
    kind: Kind,
    interval: Option<i64>,
    reason: MembershipChangeReason,
) -> Result<(i64, i64), ApiError> {
    let now = Utc::now();
    let (entered, exited, _) =
        engine::evaluate_segment(tx, tenant, compiled, catalog, now, reason).await?;
    let next = engine::next_refresh(kind, interval, now);
    store::set_refreshed(tx, tenant, compiled.id, now, next).await?;
    Ok((entered, exited))
}

/// The scope of CreateSegment's request ids.
const SCOPE: &str = "CreateSegment";

/// Reads the segment `id` as written and appends SegmentCreated, or, with
/// the changed fields, SegmentUpdated; returns it with the tenant's segment
/// names (its own included).
async fn announce(
    tx: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    mut names: HashMap<Uuid, String>,
    changed: Option<&[String]>,
) -> Result<(SegmentRow, HashMap<Uuid, String>), ApiError> {
    let row = load(tx, tenant, id).await?;
    names.insert(id, row.name.clone());
    let payload = segment_event(&row, &names, changed);
    let (event_type, event) = match changed {
        None => (
            "SegmentCreated",
            segmentation_event::Event::SegmentCreated(payload),
        ),
        Some(_) => (
            "SegmentUpdated",
            segmentation_event::Event::SegmentUpdated(payload),
        ),
    };
    let event = NewEvent::new(
        tenant,
        "segment",
        id.to_string(),
        event_type,
        &envelope(event),
    );
    feed::append(tx, &[event]).await?;
    Ok((row, names))
}

/// A segment to create, validated apart from what needs the stored segments.
#[derive(Debug)]
pub struct NewSegment {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its kind.
    pub kind: Kind,
    /// MarketingApproach number.
    pub marketing_approach: i16,
    /// Refresh interval (seconds), where the kind has one.
    pub refresh_interval_seconds: Option<i64>,
    /// The parsed rule and the form it came in ("text" or "proto").
    pub rule: Option<(Expr, &'static str)>,
    /// The request id and the request's fingerprint, when given.
    pub request: Option<(String, String)>,
}

/// CreateSegment: returns the segment and the tenant's segment names. A
/// retry with the same request id and request answers with the segment
/// created first.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    new: NewSegment,
    catalog: &Catalog,
) -> Result<(SegmentRow, HashMap<Uuid, String>), ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let names = store::segment_names(&mut tx, tenant).await?;
    let mut expr = None;
    if let Some((mut e, form)) = new.rule {
        let field = if form == "text" {
            "segment.rule_text"
        } else {
            "segment.rule"
        };
        check_rule(&mut e, catalog, &names, field)?;
        expr = Some(e);
    }
    if let Some((request_id, fp)) = &new.request
        && let Some(seen) = idempotency::seen(&mut tx, tenant, SCOPE, request_id).await?
    {
        let id = seen.result_id;
        if &seen.fingerprint != fp {
            return Err(ApiError::AlreadyExists(format!(
                "request_id {request_id:?} was used for a different segment; use a new request_id"
            )));
        }
        let row = load(&mut tx, tenant, id).await?;
        return Ok((row, names));
    }
    let id = Uuid::now_v7();
    if let Some((request_id, fp)) = &new.request
        && !idempotency::remember(&mut tx, tenant, SCOPE, request_id, fp, id).await?
    {
        return Err(ApiError::Aborted(
            "another call with this request_id is in progress; retry".into(),
        ));
    }
    let kind = new.kind;
    let interval = new.refresh_interval_seconds;
    let row = store::NewSegment {
        segment_id: id,
        name: new.name.clone(),
        description: new.description,
        kind,
        marketing_approach: new.marketing_approach,
        rule: expr.as_ref().map(engine::encode_rule),
        refresh_interval_seconds: interval,
    };
    if let Err(e) = store::insert_segment(&mut tx, tenant, &row).await {
        if is_unique_violation(&e, None) {
            return Err(ApiError::AlreadyExists(format!(
                "a segment named {:?} exists; choose another name or update that segment",
                new.name
            )));
        }
        return Err(e.into());
    }
    if let Some(e) = &expr {
        store::set_refs(&mut tx, tenant, id, &engine::referenced_ids(e)).await?;
        let compiled = Compiled {
            id,
            name: new.name.clone(),
            expr: e.clone(),
        };
        let reason = MembershipChangeReason::SegmentCreated;
        evaluate_now(&mut tx, tenant, &compiled, catalog, kind, interval, reason).await?;
    }
    let created = announce(&mut tx, tenant, id, names, None).await?;
    tx.commit().await?;
    Ok(created)
}

/// What UpdateSegment did.
#[derive(Debug)]
pub struct Updated {
    /// The segment as it is now.
    pub row: SegmentRow,
    /// The tenant's segment names.
    pub names: HashMap<Uuid, String>,
    /// Customers who entered (a DYNAMIC segment's new rule).
    pub entered: i64,
    /// Customers who left.
    pub exited: i64,
}

/// UpdateSegment: `edit` validates the requested changes against the locked
/// segment and applies them, returning a new parsed rule if one was given;
/// the rule is then checked against the stored segments (no cycle of
/// in_segment), and a DYNAMIC segment is evaluated again.
pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
    paths: &[String],
    catalog: Option<&Catalog>,
    edit: impl FnOnce(&mut SegmentRow) -> Result<Option<(Expr, &'static str)>, ApiError>,
) -> Result<Updated, ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let Some(mut row) = store::segment(&mut tx, tenant, id, true).await? else {
        return Err(ApiError::not_found("segment", id.to_string()));
    };
    if !etag.is_empty() && etag != seg::etag(row.version) {
        return Err(ApiError::Aborted(format!(
            "segment {id} changed since etag {etag:?} (now {:?}): get it again and retry",
            seg::etag(row.version)
        )));
    }
    let kind = row.kind.to_proto();
    let new_rule = edit(&mut row)?;
    let names = store::segment_names(&mut tx, tenant).await?;
    let mut refs_changed = None;
    if let (Some((mut e, form)), Some(cat)) = (new_rule, catalog) {
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
            && let Some(cat) = catalog
        {
            let compiled = Compiled {
                id,
                name: row.name.clone(),
                expr: e,
            };
            let (kind, interval) = (row.kind, row.refresh_interval_seconds);
            let reason = MembershipChangeReason::RuleChanged;
            (entered, exited) =
                evaluate_now(&mut tx, tenant, &compiled, cat, kind, interval, reason).await?;
        }
    }
    let (row, names) = announce(&mut tx, tenant, id, names, Some(paths)).await?;
    tx.commit().await?;
    Ok(Updated {
        row,
        names,
        entered,
        exited,
    })
}

/// DeleteSegment: refused while other segments' rules refer to it.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid, etag: &str) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let Some(row) = store::segment(&mut tx, tenant, id, true).await? else {
        return Err(ApiError::not_found("segment", id.to_string()));
    };
    if !etag.is_empty() && etag != seg::etag(row.version) {
        return Err(ApiError::Aborted(format!(
            "segment {id} changed since etag {:?}: get it again and retry",
            etag
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
}

/// AddSegmentMembers (`add`) or RemoveSegmentMembers of a STATIC segment:
/// returns how many changed, how many were already so, the unknown ids
/// (adding only) and the member count after.
pub async fn change_members(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    ids: &[Uuid],
    add: bool,
) -> Result<(i64, i64, Vec<String>, i64), ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let Some(row) = store::segment(&mut tx, tenant, id, true).await? else {
        return Err(ApiError::not_found("segment", id.to_string()));
    };
    if row.kind != Kind::Static {
        return Err(ApiError::FailedPrecondition(format!(
            "segment {:?} is {}: only STATIC segments take members by hand",
            row.name,
            row.kind.label()
        )));
    }
    let now = Utc::now();
    let (changed, other, missing) = if add {
        let known = store::known_among(&mut tx, tenant, ids).await?;
        let missing: Vec<String> = ids
            .iter()
            .filter(|i| !known.contains(i))
            .map(Uuid::to_string)
            .collect();
        let added = store::add_members(&mut tx, tenant, id, &known, now).await?;
        let already = (known.len() - added.len()) as i64;
        (added, already, missing)
    } else {
        let removed = store::remove_members(&mut tx, tenant, id, ids).await?;
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
