//! Following the interaction service's change feed: purchases are recorded
//! in the `purchases` projection (the cohort report's data), merged into
//! their customers' kept summaries (a fit's data) and their customers
//! queued for re-scoring; the interactions that cost (returns, contacts,
//! service requests, complaints, campaign messages) go to `activities`, with
//! the resolution of service requests and complaints as it changes;
//! reassignments after merges and unmerges move both and queue both
//! customers; erasures delete everything derived from the customer. From
//! segmentation's feed, each customer's ladder rung and Dwyer stage (the
//! profitability report's breakdowns, net CLV's groups). The kit's
//! `Consumer` stores the cursor in the same transaction, so each event is
//! applied exactly once.

use std::collections::{HashMap, HashSet};

use rapport_kit::convert::from_timestamp;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::{ChangeEvent, Money};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    InteractionEvent, InteractionRecorded, InteractionType, ReassignReason, ServiceRequestStatus,
    ServiceRequestUpdated,
};
use rapport_proto::rapport::segmentation::v1::{SegmentationEvent, segmentation_event};
use rapport_proto::rapport::valuation::v1::ValueRemovalReason;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::kept::{self, NewPurchase};
use crate::domain::money::from_money;
use crate::domain::profit::Component;
use crate::engine::removed_event;
use crate::store::activities::{self, Activity};
use crate::store::{self, Purchase, summaries};

/// The name of the cursor of the interaction feed.
pub const INTERACTION_CURSOR: &str = "interaction";
/// The name of the cursor of the segmentation feed.
pub const SEGMENTATION_CURSOR: &str = "segmentation";

/// Applies interaction events to the valuation schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct InteractionFollower;

fn id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

/// A money of an event: (currency, exact amount). A money whose units and
/// nanos disagree (out of contract) counts as absent.
fn money(m: Option<&Money>) -> Option<(String, Decimal)> {
    let m = m?;
    match from_money(m) {
        Some(d) => Some((m.currency_code.clone(), d)),
        None => {
            tracing::warn!(
                units = m.units,
                nanos = m.nanos,
                "interaction event with an invalid money; amount ignored"
            );
            None
        }
    }
}

/// The purchase an InteractionRecorded event describes, if it is one.
pub fn purchase_of(e: &InteractionRecorded) -> Option<Purchase> {
    if e.r#type != InteractionType::Purchase as i32 {
        return None;
    }
    let customer_id = id(&e.customer_id)?;
    let occur_time = e.occur_time.as_ref().and_then(from_timestamp)?;
    let amount = money(e.amount.as_ref());
    let margin = money(e.margin.as_ref());
    Some(Purchase {
        interaction_id: id(&e.interaction_id)?,
        customer_id,
        original_customer_id: id(&e.original_customer_id).unwrap_or(customer_id),
        occur_time,
        currency: amount.as_ref().map(|a| a.0.clone()),
        amount: amount.map(|a| a.1),
        margin: margin.map(|m| m.1),
    })
}

/// The interaction that costs an InteractionRecorded event describes, if
/// it is one (see `CostComponent`).
pub fn activity_of(e: &InteractionRecorded) -> Option<Activity> {
    Component::of_type(e.r#type)?;
    let customer_id = id(&e.customer_id)?;
    let occur_time = e.occur_time.as_ref().and_then(from_timestamp)?;
    let refund = (e.r#type == InteractionType::Return as i32)
        .then(|| money(e.amount.as_ref()))
        .flatten();
    Some(Activity {
        interaction_id: id(&e.interaction_id)?,
        customer_id,
        original_customer_id: id(&e.original_customer_id).unwrap_or(customer_id),
        occur_time,
        kind: i16::try_from(e.r#type).ok()?,
        channel: i16::try_from(e.channel).unwrap_or(0),
        currency: refund.as_ref().map(|r| r.0.clone()),
        amount: refund.map(|r| r.1),
        resolve_time: resolution(e.service_request_status, None, e.occur_time.as_ref()),
    })
}

/// When a service request or complaint in `status` counts as resolved:
/// at its resolve time (else the time given), or never while open.
fn resolution(
    status: i32,
    resolve: Option<&prost_types::Timestamp>,
    otherwise: Option<&prost_types::Timestamp>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let resolved = status == ServiceRequestStatus::Resolved as i32
        || status == ServiceRequestStatus::Closed as i32;
    resolved
        .then(|| resolve.or(otherwise).and_then(from_timestamp))
        .flatten()
}

/// The resolution a ServiceRequestUpdated event sets.
fn resolved_by(u: &ServiceRequestUpdated) -> Option<(Uuid, Option<chrono::DateTime<chrono::Utc>>)> {
    Some((
        id(&u.interaction_id)?,
        resolution(u.status, u.resolve_time.as_ref(), u.update_time.as_ref()),
    ))
}

/// Purchases, activities and customers to re-score gathered from a batch,
/// written together.
#[derive(Default)]
struct Pending {
    purchases: Vec<Purchase>,
    activities: Vec<Activity>,
    resolutions: Vec<(Uuid, Option<chrono::DateTime<chrono::Utc>>)>,
    rescore: Vec<Uuid>,
}

impl Pending {
    /// Records the purchases and merges the new ones into their customers'
    /// kept summaries: the days they add are found before they are
    /// recorded, so a day the customer already bought on is not counted
    /// twice.
    async fn flush(&mut self, tx: &mut PgConnection, tenant: Uuid) -> Result<(), sqlx::Error> {
        if !self.purchases.is_empty() {
            let mut pairs: Vec<(Uuid, i32)> = self
                .purchases
                .iter()
                .map(|p| (p.customer_id, kept::utc_day(p.occur_time)))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            let existing = summaries::existing_days(tx, tenant, &pairs).await?;
            let mut recorded: HashSet<Uuid> = store::record_purchases(tx, tenant, &self.purchases)
                .await?
                .into_iter()
                .collect();
            let fresh: Vec<NewPurchase<'_>> = self
                .purchases
                .iter()
                // Once each, should the batch hold an event twice.
                .filter(|p| recorded.remove(&p.interaction_id))
                .map(|p| NewPurchase {
                    customer: p.customer_id,
                    time: p.occur_time,
                    currency: p.currency.as_deref(),
                    amount: p.amount.and_then(kept::nanos),
                    margin: p.margin.and_then(kept::nanos),
                })
                .collect();
            summaries::merge(tx, tenant, &kept::deltas(&fresh, &existing)).await?;
            let mut counts: HashMap<String, i64> = HashMap::new();
            for c in fresh.iter().filter_map(|p| p.currency) {
                *counts.entry(c.to_string()).or_default() += 1;
            }
            let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
            counts.sort_unstable();
            summaries::count_currencies(tx, tenant, &counts).await?;
        }
        activities::record(tx, tenant, &self.activities).await?;
        let seen: Vec<(Uuid, chrono::DateTime<chrono::Utc>, bool)> = self
            .purchases
            .iter()
            .map(|p| (p.customer_id, p.occur_time, true))
            .chain(
                self.activities
                    .iter()
                    .map(|a| (a.customer_id, a.occur_time, false)),
            )
            .collect();
        activities::seen(tx, tenant, &seen).await?;
        activities::resolve(tx, tenant, &self.resolutions).await?;
        // A customer's costs change its net value: re-score it when the
        // tenant prices costs.
        if !self.activities.is_empty() && activities::priced(tx, tenant).await? {
            self.rescore
                .extend(self.activities.iter().map(|a| a.customer_id));
        }
        store::enqueue(tx, tenant, &self.rescore, None).await?;
        self.purchases.clear();
        self.activities.clear();
        self.resolutions.clear();
        self.rescore.clear();
        Ok(())
    }
}

impl InteractionFollower {
    /// Applies a batch of one tenant's interaction events: purchases in one
    /// statement and their customers queued once each; reassignments and
    /// erasures (rare) in feed order, after what came before them.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<(), sqlx::Error> {
        let mut pending = Pending::default();
        let mut removed = Vec::new();
        for event in events {
            // Events appended before typed events, and events reduced by a
            // later erasure (`redacted`), are skipped.
            let Some(InteractionEvent { event: Some(e) }) = feed::decode::<InteractionEvent>(event)
            else {
                continue;
            };
            match e {
                Event::InteractionRecorded(r) => {
                    if let Some(p) = purchase_of(&r) {
                        pending.rescore.push(p.customer_id);
                        pending.purchases.push(p);
                    } else if let Some(a) = activity_of(&r) {
                        pending.activities.push(a);
                    }
                }
                Event::ServiceRequestUpdated(u) => {
                    pending.resolutions.extend(resolved_by(&u));
                }
                Event::InteractionsReassigned(r) => {
                    let (Some(from), Some(to)) = (id(&r.from_customer_id), id(&r.to_customer_id))
                    else {
                        continue;
                    };
                    pending.flush(tx, tenant).await?;
                    let unmerge = r.reason == ReassignReason::Unmerge as i32;
                    // Without the complete list, everything of `from` moved
                    // (or, for an unmerge, everything first recorded under `to`).
                    let ids: Option<Vec<Uuid>> = r
                        .ids_complete
                        .then(|| r.interaction_ids.iter().filter_map(|s| id(s)).collect());
                    store::reassign(tx, tenant, from, to, unmerge, ids.as_deref()).await?;
                    activities::recount(tx, tenant, &[from, to]).await?;
                    summaries::rebuild(tx, tenant, &[from, to]).await?;
                    let from_reason = (!unmerge).then_some("MERGED");
                    store::enqueue(tx, tenant, &[from], from_reason).await?;
                    store::enqueue(tx, tenant, &[to], None).await?;
                }
                Event::CustomerInteractionsErased(er) => {
                    let Some(customer) = id(&er.customer_id).or_else(|| id(&event.aggregate_id))
                    else {
                        continue;
                    };
                    pending.flush(tx, tenant).await?;
                    activities::erase(tx, tenant, customer).await?;
                    crate::profitability::report::forget(tx, tenant, customer).await?;
                    if store::erase_customer(tx, tenant, customer).await? {
                        removed.push(removed_event(tenant, customer, ValueRemovalReason::Erased));
                    }
                }
                _ => {}
            }
        }
        pending.flush(tx, tenant).await?;
        feed::append(tx, &removed).await?;
        Ok(())
    }
}

rapport_kit::feed_handler!(InteractionFollower => apply_batch);

/// Applies segmentation events: each customer's ladder rung and Dwyer
/// stage (`CustomersClassified`); the rest is not this service's.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClassificationFollower;

impl ClassificationFollower {
    /// Applies a batch of one tenant's segmentation events in one
    /// statement.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<(), sqlx::Error> {
        let mut classes: Vec<(Uuid, i16, i16)> = Vec::new();
        for event in events {
            let Some(SegmentationEvent {
                event: Some(segmentation_event::Event::CustomersClassified(c)),
            }) = feed::decode::<SegmentationEvent>(event)
            else {
                continue;
            };
            classes.extend(c.classes.iter().filter_map(|k| {
                Some((
                    id(&k.customer_id)?,
                    i16::try_from(k.ladder_rung).unwrap_or(0),
                    i16::try_from(k.stage).unwrap_or(0),
                ))
            }));
        }
        activities::classify(tx, tenant, &classes).await
    }
}

rapport_kit::feed_handler!(ClassificationFollower => apply_batch);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use rapport_kit::convert::timestamp;

    fn eur(units: i64, nanos: i32) -> Money {
        Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        }
    }

    #[test]
    fn reads_the_interactions_that_cost() {
        use rapport_proto::rapport::interaction::v1::Channel;
        let id = Uuid::now_v7();
        let t: DateTime<Utc> = DateTime::from_timestamp(1_709_287_200, 0).unwrap();
        let call = InteractionRecorded {
            interaction_id: id.to_string(),
            customer_id: id.to_string(),
            r#type: InteractionType::Call as i32,
            channel: Channel::Phone as i32,
            occur_time: Some(timestamp(t)),
            ..Default::default()
        };
        let a = activity_of(&call).unwrap();
        assert_eq!((a.kind, a.channel), (4, 4));
        assert_eq!(
            (a.original_customer_id, a.amount, a.resolve_time),
            (id, None, None)
        );
        // A return carries its refund; a purchase or a web visit is not an
        // activity.
        let ret = InteractionRecorded {
            r#type: InteractionType::Return as i32,
            amount: Some(eur(12, 500_000_000)),
            ..call.clone()
        };
        let a = activity_of(&ret).unwrap();
        assert_eq!(a.amount, Some(Decimal::new(125, 1)));
        assert_eq!(a.currency.as_deref(), Some("EUR"));
        for kind in [InteractionType::Purchase, InteractionType::WebVisit] {
            let other = InteractionRecorded {
                r#type: kind as i32,
                ..call.clone()
            };
            assert!(activity_of(&other).is_none());
        }
        // A request recorded as resolved is resolved when it happened; an
        // update resolves it at its resolve time, a reopening clears it.
        let done = InteractionRecorded {
            r#type: InteractionType::ServiceRequest as i32,
            service_request_status: ServiceRequestStatus::Closed as i32,
            ..call
        };
        assert_eq!(activity_of(&done).unwrap().resolve_time, Some(t));
        let later = t + chrono::Duration::hours(5);
        let update = |status: ServiceRequestStatus| ServiceRequestUpdated {
            interaction_id: id.to_string(),
            status: status as i32,
            resolve_time: Some(timestamp(later)),
            update_time: Some(timestamp(later + chrono::Duration::hours(1))),
            ..Default::default()
        };
        assert_eq!(
            resolved_by(&update(ServiceRequestStatus::Resolved)),
            Some((id, Some(later)))
        );
        assert_eq!(
            resolved_by(&update(ServiceRequestStatus::Open)),
            Some((id, None))
        );
    }

    #[test]
    fn reads_purchases_from_recorded_events() {
        let id = Uuid::now_v7();
        let original = Uuid::now_v7();
        let t: DateTime<Utc> = DateTime::from_timestamp(1_709_287_200, 0).unwrap();
        let e = InteractionRecorded {
            interaction_id: id.to_string(),
            customer_id: id.to_string(),
            original_customer_id: original.to_string(),
            r#type: InteractionType::Purchase as i32,
            occur_time: Some(timestamp(t)),
            amount: Some(eur(12, 500_000_000)),
            margin: Some(eur(3, 1)),
            ..Default::default()
        };
        let got = purchase_of(&e).unwrap();
        assert_eq!(got.amount, Some(Decimal::new(125, 1)));
        assert_eq!(got.margin, Some(Decimal::new(3_000_000_001, 9)));
        assert_eq!(got.currency.as_deref(), Some("EUR"));
        assert_eq!(got.occur_time, t);
        assert_eq!(got.original_customer_id, original);
        let ret = InteractionRecorded {
            amount: Some(eur(-10, -500_000_000)),
            margin: None,
            ..e.clone()
        };
        let got = purchase_of(&ret).unwrap();
        assert_eq!(got.amount, Some(Decimal::new(-105, 1)));
        assert_eq!(got.margin, None);
        let bad = InteractionRecorded {
            amount: Some(eur(1, -1)),
            ..e.clone()
        };
        assert_eq!(purchase_of(&bad).unwrap().amount, None);
        let call = InteractionRecorded {
            r#type: InteractionType::Call as i32,
            ..e.clone()
        };
        assert!(purchase_of(&call).is_none());
        let timeless = InteractionRecorded {
            occur_time: None,
            ..e
        };
        assert!(purchase_of(&timeless).is_none());
    }
}
