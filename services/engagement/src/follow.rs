//! The feed consumers: what the profile, segmentation, valuation and
//! interaction services announce becomes the projection decisions read
//! (`store/projection.rs`). Each batch is one tenant's events, applied in one
//! transaction with the consumer's cursor.

use chrono::{DateTime, Utc};
use rapport_kit::convert::from_timestamp;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::interaction::v1::{
    Initiator, InteractionEvent, InteractionType, ReassignReason, interaction_event,
};
use rapport_proto::rapport::profile::v1::{Customer, ProfileEvent, profile_event};
use rapport_proto::rapport::segmentation::v1::{SegmentationEvent, segmentation_event};
use rapport_proto::rapport::valuation::v1::{ValuationEvent, valuation_event};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::outcome;
use crate::store::{self, ConsentFact, ContactFact, Moment, PurchaseFact, ValueFact};

/// An amount in nanos, when it fits (amounts beyond ±9.2 billion units are
/// not kept).
fn nanos(m: &rapport_proto::rapport::common::v1::Money) -> Option<i64> {
    i64::try_from(i128::from(m.units) * crate::domain::NANOS + i128::from(m.nanos)).ok()
}

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Whether a service-request status leaves a complaint open (a complaint
/// recorded without one is open).
fn is_open(status: i32) -> bool {
    use rapport_proto::rapport::interaction::v1::ServiceRequestStatus as S;
    matches!(
        S::try_from(status),
        Ok(S::Open | S::InProgress | S::Unspecified)
    )
}

/// Cursor names (in this schema), one per followed feed: the service's.
pub const PROFILE_CURSOR: &str = "profile";
pub const SEGMENTATION_CURSOR: &str = "segmentation";
pub const VALUATION_CURSOR: &str = "valuation";
pub const INTERACTION_CURSOR: &str = "interaction";

fn uuid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

/// The consent records of a customer snapshot.
fn snapshot_consents(c: &Customer) -> Vec<ConsentFact> {
    let Some(id) = uuid(&c.customer_id) else {
        return vec![];
    };
    c.consents
        .iter()
        .filter_map(|r| {
            Some((
                id,
                r.channel,
                r.purpose,
                r.status,
                time(r.effective_time.as_ref())?,
            ))
        })
        .collect()
}

/// Follows the profile feed: who exists, consents, merges, erasures.
pub struct ProfileFollower;

impl ProfileFollower {
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<()> {
        use profile_event::Event as E;
        for event in events {
            let Some(ProfileEvent { event: Some(e) }) = feed::decode::<ProfileEvent>(event) else {
                continue;
            };
            match e {
                E::CustomerCreated(e) => {
                    if let Some(id) = uuid(&e.customer_id) {
                        store::set_status(tx, tenant, &[id], "active").await?;
                        if let Some(c) = &e.customer {
                            store::set_consents(tx, tenant, &snapshot_consents(c)).await?;
                        }
                    }
                }
                E::CustomerUndeleted(e) => {
                    if let Some(id) = uuid(&e.customer_id) {
                        store::set_status(tx, tenant, &[id], "active").await?;
                    }
                }
                E::CustomerDeleted(e) => {
                    if let Some(id) = uuid(&e.customer_id) {
                        store::set_status(tx, tenant, &[id], "deleted").await?;
                    }
                }
                E::CustomerMerged(e) => {
                    if let (Some(from), Some(to)) =
                        (uuid(&e.merged_customer_id), uuid(&e.survivor_customer_id))
                    {
                        store::move_decisions(tx, tenant, from, to).await?;
                        store::forget(tx, tenant, &[from], false).await?;
                        if let Some(s) = &e.survivor {
                            store::set_consents(tx, tenant, &snapshot_consents(s)).await?;
                        }
                    }
                }
                E::CustomerUnmerged(e) => {
                    if let Some(id) = uuid(&e.restored_customer_id) {
                        store::set_status(tx, tenant, &[id], "active").await?;
                        for c in [&e.customer, &e.survivor].into_iter().flatten() {
                            store::set_consents(tx, tenant, &snapshot_consents(c)).await?;
                        }
                    }
                }
                E::CustomerErased(e) => {
                    if let Some(id) = uuid(&e.customer_id) {
                        store::forget(tx, tenant, &[id], true).await?;
                    }
                }
                E::ConsentChanged(e) => {
                    if let (Some(id), Some(t)) =
                        (uuid(&e.customer_id), time(e.effective_time.as_ref()))
                    {
                        store::set_consents(tx, tenant, &[(id, e.channel, e.purpose, e.status, t)])
                            .await?;
                    }
                }
                E::CustomerUpdated(_)
                | E::ContactLinked(_)
                | E::ContactUnlinked(_)
                | E::Redacted(_) => {}
            }
        }
        Ok(())
    }
}

rapport_kit::feed_handler!(ProfileFollower => apply_batch);

/// Follows the segmentation feed: memberships, rungs and stages.
pub struct SegmentationFollower;

impl SegmentationFollower {
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<()> {
        use segmentation_event::Event as E;
        let mut classes: Vec<(Uuid, i32, i32)> = Vec::new();
        for event in events {
            let Some(SegmentationEvent { event: Some(e) }) =
                feed::decode::<SegmentationEvent>(event)
            else {
                continue;
            };
            match e {
                E::MembershipChanged(m) => {
                    let Some(segment) = uuid(&m.segment_id) else {
                        continue;
                    };
                    let entered: Vec<Uuid> = m.entered.iter().filter_map(|s| uuid(s)).collect();
                    let exited: Vec<Uuid> = m.exited.iter().filter_map(|s| uuid(s)).collect();
                    store::change_memberships(tx, tenant, segment, &entered, &exited).await?;
                }
                E::SegmentDeleted(d) => {
                    if let Some(segment) = uuid(&d.segment_id) {
                        store::drop_segment(tx, tenant, segment).await?;
                    }
                }
                E::CustomersClassified(c) => classes.extend(
                    c.classes
                        .iter()
                        .filter_map(|k| Some((uuid(&k.customer_id)?, k.ladder_rung, k.stage))),
                ),
                E::SegmentCreated(x) | E::SegmentUpdated(x) => {
                    if let Some(segment) = uuid(&x.segment_id) {
                        store::set_segments(tx, tenant, &[(segment, x.name)]).await?;
                    }
                }
                E::ClassificationPolicyUpdated(_) | E::Redacted(_) => {}
            }
        }
        store::set_classes(tx, tenant, &classes).await
    }
}

rapport_kit::feed_handler!(SegmentationFollower => apply_batch);

/// Follows the valuation feed: CLV and P(alive).
pub struct ValuationFollower;

impl ValuationFollower {
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<()> {
        use valuation_event::Event as E;
        let mut values = Vec::new();
        for event in events {
            let Some(ValuationEvent { event: Some(e) }) = feed::decode::<ValuationEvent>(event)
            else {
                continue;
            };
            match e {
                E::CustomerValueChanged(v) => {
                    if let Some(id) = uuid(&v.customer_id) {
                        values.push(ValueFact {
                            customer_id: id,
                            // The net CLV only in the CLV's currency.
                            net_clv: match (&v.clv, &v.net_clv) {
                                (Some(c), Some(n)) if n.currency_code == c.currency_code => {
                                    Some((n.units, n.nanos))
                                }
                                _ => None,
                            },
                            clv: v.clv.map(|m| (m.currency_code, m.units, m.nanos)),
                            p_alive: Some(v.p_alive),
                        });
                    }
                }
                E::CustomerValueRemoved(v) => {
                    if let Some(id) = uuid(&v.customer_id) {
                        values.push(ValueFact {
                            customer_id: id,
                            clv: None,
                            net_clv: None,
                            p_alive: None,
                        });
                    }
                }
                E::ModelFitted(_) | E::ModelActivated(_) | E::Redacted(_) => {}
            }
        }
        store::set_values(tx, tenant, &values).await
    }
}

rapport_kit::feed_handler!(ValuationFollower => apply_batch);

/// Follows the interaction feed: contacts, complaints, unsubscribes.
pub struct InteractionFollower;

impl InteractionFollower {
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<()> {
        use interaction_event::Event as E;
        let mut contacts: Vec<ContactFact> = Vec::new();
        let mut purchases: Vec<PurchaseFact> = Vec::new();
        let mut outcomes = Vec::new();
        let mut opened: Vec<(Uuid, Uuid)> = Vec::new();
        let mut complaints = Vec::new();
        let mut unsubscribes = Vec::new();
        for event in events {
            let Some(InteractionEvent { event: Some(e) }) = feed::decode::<InteractionEvent>(event)
            else {
                continue;
            };
            match e {
                E::InteractionRecorded(r) => {
                    let (Some(id), Some(customer), Some(at)) = (
                        uuid(&r.interaction_id),
                        uuid(&r.customer_id),
                        time(r.occur_time.as_ref()),
                    ) else {
                        continue;
                    };
                    // A contact: anything the company started, and every
                    // campaign message, on a known channel.
                    let company = r.initiator == Initiator::Company as i32
                        || r.r#type == InteractionType::CampaignSent as i32;
                    if company && r.channel != 0 {
                        contacts.push((id, customer, r.channel, at));
                    }
                    if r.r#type == InteractionType::Purchase as i32
                        && let Some(m) = &r.amount
                        && let Some(amount) = nanos(m)
                    {
                        let margin = r
                            .margin
                            .as_ref()
                            .filter(|x| x.currency_code == m.currency_code)
                            .and_then(nanos);
                        purchases.push((id, customer, at, m.currency_code.clone(), amount, margin));
                    }
                    if let (Some(d), Some(o)) =
                        (uuid(&r.decision_id), outcome::of_interaction(r.r#type))
                    {
                        outcomes.push((d, o, at));
                    }
                    if r.r#type == InteractionType::Complaint as i32 {
                        complaints.push((customer, at));
                        if is_open(r.service_request_status) {
                            opened.push((id, customer));
                        }
                    }
                    if r.r#type == InteractionType::CampaignUnsubscribed as i32 {
                        unsubscribes.push((customer, at));
                    }
                }
                E::ServiceRequestUpdated(u) => {
                    let (Some(id), Some(customer)) =
                        (uuid(&u.interaction_id), uuid(&u.customer_id))
                    else {
                        continue;
                    };
                    if u.r#type == InteractionType::Complaint as i32 {
                        // In order: what this batch opened so far is stored first.
                        store::complaints(tx, tenant, &std::mem::take(&mut opened), &[]).await?;
                        if is_open(u.status) {
                            store::complaints(tx, tenant, &[(id, customer)], &[]).await?;
                        } else {
                            store::complaints(tx, tenant, &[], &[id]).await?;
                        }
                    }
                }
                E::InteractionsReassigned(r) => {
                    // Before a reassignment, what was recorded up to it is stored.
                    store::add_contacts(tx, tenant, &std::mem::take(&mut contacts)).await?;
                    store::add_purchases(tx, tenant, &std::mem::take(&mut purchases)).await?;
                    store::complaints(tx, tenant, &std::mem::take(&mut opened), &[]).await?;
                    let (Some(from), Some(to)) =
                        (uuid(&r.from_customer_id), uuid(&r.to_customer_id))
                    else {
                        continue;
                    };
                    let ids: Vec<Uuid> = r.interaction_ids.iter().filter_map(|s| uuid(s)).collect();
                    // Without the list, an unmerge cannot tell which contacts
                    // were the restored customer's: they stay where they are.
                    if ids.is_empty() && r.reason == ReassignReason::Unmerge as i32 {
                        continue;
                    }
                    store::reassign_interactions(tx, tenant, from, to, &ids).await?;
                }
                E::CustomerInteractionsErased(e) => {
                    store::add_contacts(tx, tenant, &std::mem::take(&mut contacts)).await?;
                    store::add_purchases(tx, tenant, &std::mem::take(&mut purchases)).await?;
                    store::complaints(tx, tenant, &std::mem::take(&mut opened), &[]).await?;
                    if let Some(c) = uuid(&e.customer_id) {
                        store::forget(tx, tenant, &[c], true).await?;
                        // Nothing of the erased customer is written after.
                        complaints.retain(|(x, _)| *x != c);
                        unsubscribes.retain(|(x, _)| *x != c);
                    }
                }
                E::Redacted(_) | E::CampaignCreated(_) | E::CampaignUpdated(_) => {}
            }
        }
        store::add_contacts(tx, tenant, &contacts).await?;
        store::add_purchases(tx, tenant, &purchases).await?;
        store::complaints(tx, tenant, &opened, &[]).await?;
        crate::decisions::apply_outcomes(tx, tenant, &outcomes).await?;
        store::mark(tx, tenant, Moment::Complaint, &complaints).await?;
        store::mark(tx, tenant, Moment::Unsubscribe, &unsubscribes).await
    }
}

rapport_kit::feed_handler!(InteractionFollower => apply_batch);
