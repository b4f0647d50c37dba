//! Keeping memberships and computed features current: evaluating segments
//! in full or for some customers (dependencies first), recording entries and
//! exits, RFM scoring and classification. Runs inside the caller's
//! transaction; the SQL is in [`crate::store`], the rules in [`crate::rule`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use prost::Message;
use rapport_proto::rapport::segmentation::v1::{self as pb, FieldType, MembershipChangeReason};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::classify::{self, ladder_name, stage_name};
use crate::domain::policy::Policy;
use crate::domain::removal::Removal;
use crate::domain::segment::Kind;
use crate::domain::segment::{dependents, topological};
use crate::rule::{self, AttributeField, Catalog, Expr};
use crate::store::{self, Change};
use rapport_kit::feed::NewEvent;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// The catalogue type of a stored attribute type.
fn attribute_type(t: &str) -> FieldType {
    match t {
        "decimal" => FieldType::Decimal,
        "bool" => FieldType::Bool,
        "timestamp" => FieldType::Timestamp,
        "string_list" => FieldType::StringList,
        _ => FieldType::String,
    }
}

/// The tenant's field catalogue.
pub async fn catalog(conn: &mut PgConnection, tenant: Uuid) -> Result<Catalog> {
    let attrs = store::attribute_fields(conn, tenant).await?;
    let customs = store::custom_types(conn, tenant).await?;
    Ok(Catalog::new(
        attrs
            .into_iter()
            .map(|(name, ty, description)| AttributeField {
                name,
                ty: attribute_type(&ty),
                description,
            })
            .collect(),
        customs,
    ))
}

/// The stored form of a rule.
pub fn encode_rule(expr: &Expr) -> Vec<u8> {
    rule::to_proto(expr).encode_to_vec()
}

/// A stored rule, decoded (None if it cannot be: logged).
pub fn decode_rule(bytes: &[u8]) -> Option<Expr> {
    let proto = match pb::Rule::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "a stored rule does not decode");
            return None;
        }
    };
    match rule::from_proto(&proto) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = ?e, "a stored rule is not valid");
            None
        }
    }
}

/// The segment ids a (resolved) rule refers to.
pub fn referenced_ids(expr: &Expr) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = rule::segment_refs(expr)
        .into_iter()
        .filter_map(|r| match r {
            rule::SegmentRef::Id(id) => Some(id),
            rule::SegmentRef::Name(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A rule-based segment ready to evaluate.
pub struct Compiled {
    pub id: Uuid,
    pub name: String,
    pub expr: Expr,
}

/// Evaluates `segment` in full: its members become exactly the customers
/// matching now. Records the changes with `reason`, then re-evaluates the
/// changed customers for the dynamic segments that depend on it. Returns
/// (entered, exited, sequence range).
pub async fn evaluate_segment(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: &Compiled,
    catalog: &Catalog,
    now: DateTime<Utc>,
    reason: MembershipChangeReason,
) -> Result<(i64, i64, Option<(i64, i64)>)> {
    let sql = rule::compile_sql(&segment.expr, catalog, now);
    let (entered, exited) = store::evaluate_into(conn, tenant, segment.id, &sql, None, now).await?;
    let changes: Vec<Change> = entered
        .iter()
        .map(|c| (c, true))
        .chain(exited.iter().map(|c| (c, false)))
        .map(|(c, e)| Change {
            segment_id: segment.id,
            segment_name: segment.name.clone(),
            customer_id: *c,
            entered: e,
            reason,
        })
        .collect();
    let range = store::record_changes(conn, tenant, &changes, now).await?;
    let touched: Vec<Uuid> = entered.iter().chain(exited.iter()).copied().collect();
    if !touched.is_empty() {
        follow_dependents(conn, tenant, &[segment.id], &touched, catalog, now).await?;
    }
    Ok((entered.len() as i64, exited.len() as i64, range))
}

/// Re-evaluates `customers` for the dynamic segments depending on `roots`.
pub async fn follow_dependents(
    conn: &mut PgConnection,
    tenant: Uuid,
    roots: &[Uuid],
    customers: &[Uuid],
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Result<()> {
    let graph = store::reference_graph(conn, tenant).await?;
    let deps = dependents(roots, &graph);
    if deps.is_empty() {
        return Ok(());
    }
    reevaluate(
        conn,
        tenant,
        customers,
        catalog,
        now,
        MembershipChangeReason::FeaturesChanged,
        Some(&deps),
    )
    .await?;
    Ok(())
}

/// Re-evaluates some customers for the tenant's dynamic segments (all, or
/// those in `only`), dependencies first, and records the changes.
pub async fn reevaluate(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
    catalog: &Catalog,
    now: DateTime<Utc>,
    reason: MembershipChangeReason,
    only: Option<&HashSet<Uuid>>,
) -> Result<usize> {
    if customers.is_empty() {
        return Ok(0);
    }
    let rows = store::segments_of_kind(conn, tenant, Kind::Dynamic).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let graph = store::reference_graph(conn, tenant).await?;
    let mut compiled: HashMap<Uuid, Compiled> = HashMap::new();
    for r in rows {
        if only.is_some_and(|o| !o.contains(&r.segment_id)) {
            continue;
        }
        if let Some(expr) = r.rule.as_deref().and_then(decode_rule) {
            compiled.insert(
                r.segment_id,
                Compiled {
                    id: r.segment_id,
                    name: r.name,
                    expr,
                },
            );
        }
    }
    let ids: Vec<Uuid> = compiled.keys().copied().collect();
    let mut changes = Vec::new();
    for id in topological(&ids, &graph) {
        let Some(seg) = compiled.get(&id) else {
            continue;
        };
        let sql = rule::compile_sql(&seg.expr, catalog, now);
        let (entered, exited) =
            store::evaluate_into(conn, tenant, id, &sql, Some(customers), now).await?;
        changes.extend(
            entered
                .into_iter()
                .map(|c| (c, true))
                .chain(exited.into_iter().map(|c| (c, false)))
                .map(|(c, e)| Change {
                    segment_id: id,
                    segment_name: seg.name.clone(),
                    customer_id: c,
                    entered: e,
                    reason,
                }),
        );
    }
    let n = changes.len();
    store::record_changes(conn, tenant, &changes, now).await?;
    Ok(n)
}

/// The tenant's policy in effect.
pub async fn policy(conn: &mut PgConnection, tenant: Uuid) -> Result<Policy> {
    let (overrides, _, _) = store::policy(conn, tenant, false).await?;
    Ok(Policy::with_overrides(&overrides))
}

/// Classifies some customers (None: all) and stores rungs and stages that
/// changed. Returns the customers whose classification changed.
pub async fn classify(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    let p = policy(conn, tenant).await?;
    let inputs = store::classification_inputs(conn, tenant, customers, &p, false, now).await?;
    let mut updates = Vec::new();
    let mut classes = Vec::new();
    for c in inputs {
        let o = classify::classify(&c.inputs, &p, now);
        let ladder = Some(ladder_name(o.ladder).to_string()).filter(|s| !s.is_empty());
        let stage = Some(stage_name(o.stage).to_string()).filter(|s| !s.is_empty());
        if ladder != c.ladder || stage != c.stage {
            updates.push((c.customer_id, ladder, stage));
            classes.push(pb::CustomerClass {
                customer_id: c.customer_id.to_string(),
                ladder_rung: o.ladder as i32,
                stage: o.stage as i32,
            });
        }
    }
    store::set_classes(conn, tenant, &updates).await?;
    announce_classes(conn, tenant, classes, now).await?;
    Ok(updates.into_iter().map(|u| u.0).collect())
}

/// Customers in one `CustomersClassified` event at most.
const CLASSES_PER_EVENT: usize = 1_000;

/// Appends `CustomersClassified` events for changed classifications, so
/// services that decide by rung and stage (engagement) follow them.
async fn announce_classes(
    conn: &mut PgConnection,
    tenant: Uuid,
    classes: Vec<pb::CustomerClass>,
    now: DateTime<Utc>,
) -> Result<()> {
    if classes.is_empty() {
        return Ok(());
    }
    let events: Vec<NewEvent> = classes
        .chunks(CLASSES_PER_EVENT)
        .map(|chunk| {
            NewEvent::new(
                tenant,
                "classification",
                tenant.to_string(),
                "CustomersClassified",
                &crate::segments::envelope(pb::segmentation_event::Event::CustomersClassified(
                    pb::CustomersClassified {
                        classes: chunk.to_vec(),
                        classify_time: Some(rapport_kit::convert::timestamp(now)),
                    },
                )),
            )
        })
        .collect();
    rapport_kit::feed::append(conn, &events).await
}

/// Whether the tenant's RFM cut-offs should be recomputed in full now: never
/// computed, or purchases arrived and the tenant is small (under 10,000
/// scored customers) or the cut-offs are over an hour old.
pub fn rfm_due(state: &store::RfmState, now: DateTime<Utc>) -> bool {
    match state.rfm_compute_time {
        None => true,
        Some(t) => {
            state.rfm_dirty && (state.rfm_scored < 10_000 || now - t > chrono::Duration::hours(1))
        }
    }
}

/// Recomputes the tenant's RFM scores and every classification, then
/// re-evaluates the customers whose computed features changed.
pub async fn recompute_tenant(
    conn: &mut PgConnection,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut changed: HashSet<Uuid> = store::rfm_full(conn, tenant, now)
        .await?
        .into_iter()
        .collect();
    changed.extend(classify(conn, tenant, None, now).await?);
    let changed: Vec<Uuid> = changed.into_iter().collect();
    reevaluate_changed(conn, tenant, &changed, now).await?;
    metrics::histogram!("rapport_segmentation_recompute_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(changed.len())
}

/// Re-evaluates the dynamic segments for customers whose features changed,
/// 10,000 at a time.
pub async fn reevaluate_changed(
    conn: &mut PgConnection,
    tenant: Uuid,
    changed: &[Uuid],
    now: DateTime<Utc>,
) -> Result<()> {
    let cat = catalog(conn, tenant).await?;
    for chunk in changed.chunks(10_000) {
        reevaluate(
            conn,
            tenant,
            chunk,
            &cat,
            now,
            MembershipChangeReason::FeaturesChanged,
            None,
        )
        .await?;
    }
    Ok(())
}

/// After a customer's features changed on a feed: rescore (when purchases
/// may have changed), reclassify and re-evaluate the dynamic segments.
pub async fn customer_changed(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    purchases_changed: bool,
    reason: MembershipChangeReason,
    now: DateTime<Utc>,
) -> Result<()> {
    customers_changed(conn, tenant, &[(customer, purchases_changed)], reason, now).await
}

/// [`customer_changed`] for many customers of one tenant at once (a feed
/// batch): each customer is rescored, reclassified and re-evaluated once,
/// and the classification and segment evaluation run as set operations.
/// `customers` pairs each customer with whether its purchases may have
/// changed.
pub async fn customers_changed(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[(Uuid, bool)],
    reason: MembershipChangeReason,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut ids: Vec<Uuid> = customers.iter().map(|c| c.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let known = store::known_among(conn, tenant, &ids).await?;
    if known.is_empty() {
        return Ok(());
    }
    let known_set: HashSet<Uuid> = known.iter().copied().collect();
    let mut bought: Vec<Uuid> = customers
        .iter()
        .filter(|(c, purchases)| *purchases && known_set.contains(c))
        .map(|(c, _)| *c)
        .collect();
    bought.sort_unstable();
    bought.dedup();
    if !bought.is_empty() {
        store::mark_rfm_dirty(conn, tenant).await?;
        let state = store::rfm_state(conn, tenant).await?;
        if state.rfm_compute_time.is_none() {
            store::rfm_full(conn, tenant, now).await?;
        } else {
            store::rfm_some(conn, tenant, &bought, &state, now).await?;
        }
    }
    classify(conn, tenant, Some(&known), now).await?;
    let cat = catalog(conn, tenant).await?;
    reevaluate(conn, tenant, &known, &cat, now, reason, None).await?;
    Ok(())
}

/// A customer left (deleted, erased, merged): it exits every segment.
pub async fn customer_removed(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    state: Removal,
    merged_into: Option<Uuid>,
    reason: MembershipChangeReason,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, String, Kind)>> {
    let left = store::remove_customer(conn, tenant, customer, state, merged_into).await?;
    let changes: Vec<Change> = left
        .iter()
        .map(|(id, name, _)| Change {
            segment_id: *id,
            segment_name: name.clone(),
            customer_id: customer,
            entered: false,
            reason,
        })
        .collect();
    store::record_changes(conn, tenant, &changes, now).await?;
    Ok(left)
}

/// What a full refresh did.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub entered: i64,
    pub exited: i64,
    pub range: Option<(i64, i64)>,
    pub time: DateTime<Utc>,
}

/// Why a refresh did not happen.
#[derive(Debug)]
pub enum RefreshError {
    NotFound,
    Static,
    Db(sqlx::Error),
}

impl From<sqlx::Error> for RefreshError {
    fn from(e: sqlx::Error) -> Self {
        RefreshError::Db(e)
    }
}

/// The next scheduled refresh after `at`.
pub fn next_refresh(kind: Kind, interval: Option<i64>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    crate::domain::segment::effective_interval(kind.to_proto(), interval)
        .map(|s| at + chrono::Duration::seconds(s))
}

/// RefreshSegment (and scheduled refreshes): evaluates a DYNAMIC or
/// SNAPSHOT segment in full, one refresh of a segment at a time (the row
/// lock), and commits. Recomputes the tenant's RFM scores and
/// classifications first when they are due.
pub async fn refresh(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    segment: Uuid,
    reason: MembershipChangeReason,
) -> std::result::Result<Refreshed, RefreshError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let Some(row) = store::segment(&mut tx, tenant, segment, true).await? else {
        return Err(RefreshError::NotFound);
    };
    if row.kind == Kind::Static {
        return Err(RefreshError::Static);
    }
    let now = Utc::now();
    let state = store::rfm_state(&mut tx, tenant).await?;
    if rfm_due(&state, now) {
        recompute_tenant(&mut tx, tenant, now).await?;
    }
    let cat = catalog(&mut tx, tenant).await?;
    let Some(expr) = row.rule.as_deref().and_then(decode_rule) else {
        return Err(RefreshError::Db(sqlx::Error::Protocol(
            "a stored rule does not decode".into(),
        )));
    };
    let compiled = Compiled {
        id: row.segment_id,
        name: row.name.clone(),
        expr,
    };
    let (entered, exited, range) =
        evaluate_segment(&mut tx, tenant, &compiled, &cat, now, reason).await?;
    store::set_refreshed(
        &mut tx,
        tenant,
        segment,
        now,
        next_refresh(row.kind, row.refresh_interval_seconds, now),
    )
    .await?;
    tx.commit().await?;
    metrics::histogram!("rapport_segmentation_refresh_seconds", "kind" => row.kind.label().to_ascii_lowercase())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("rapport_segmentation_members_entered_total")
        .increment(u64::try_from(entered).unwrap_or(0));
    metrics::counter!("rapport_segmentation_members_exited_total")
        .increment(u64::try_from(exited).unwrap_or(0));
    Ok(Refreshed {
        entered,
        exited,
        range,
        time: now,
    })
}
