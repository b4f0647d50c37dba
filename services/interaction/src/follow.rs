//! Following the profile service's change feed: merges re-key interactions
//! to the survivor, unmerges give a customer back exactly the interactions
//! first recorded under it, erasures delete a customer's interactions. The
//! kit's `Consumer` stores the cursor in the same transaction, so each event
//! is applied exactly once.

use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::interaction::v1::ReassignReason;
use rapport_proto::rapport::interaction::v1::interaction_event::Event as Out;
use rapport_proto::rapport::profile::v1::ProfileEvent;
use rapport_proto::rapport::profile::v1::profile_event::Event;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::model::{envelope, erased_event, reassigned_event};
use crate::store;

/// The name of the cursor of the profile feed.
pub const PROFILE_CURSOR: &str = "profile";

/// Applies profile events to the interaction schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfileFollower;

fn id(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok()
}

impl ProfileFollower {
    /// Applies a batch of one tenant's profile events: created customers in
    /// one statement, merges, unmerges and erasures one by one (they are
    /// rare and each moves a customer's interactions), and every event they
    /// cause appended at once.
    pub async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        tenant: Uuid,
        events: &[ChangeEvent],
    ) -> Result<(), sqlx::Error> {
        let mut created = Vec::new();
        let mut out: Vec<NewEvent> = Vec::new();
        let mut locked = false;
        for event in events {
            // Events appended before typed events, and events reduced by a
            // later erasure (`redacted`), are skipped: the erasures that
            // follow on the feed delete everything anyway.
            let Some(ProfileEvent { event: Some(e) }) = feed::decode::<ProfileEvent>(event) else {
                continue;
            };
            // Customers created so far are recorded before a merge reads them.
            let moves = matches!(
                e,
                Event::CustomerMerged(_) | Event::CustomerUnmerged(_) | Event::CustomerErased(_)
            );
            if moves {
                store::customers_created(tx, tenant, &created).await?;
                created.clear();
                if !locked {
                    store::lock_customers_exclusive(tx, tenant).await?;
                    locked = true;
                }
            }
            match e {
                Event::CustomerCreated(c) => created.extend(id(&c.customer_id)),
                Event::CustomerMerged(m) => {
                    let (Some(merged), Some(survivor)) =
                        (id(&m.merged_customer_id), id(&m.survivor_customer_id))
                    else {
                        continue;
                    };
                    let moved = store::merge_customer(tx, tenant, merged, survivor).await?;
                    if !moved.is_empty() {
                        let r = reassigned_event(
                            merged,
                            survivor,
                            ReassignReason::Merge,
                            &moved,
                            event.sequence,
                        );
                        out.push(NewEvent::new(
                            tenant,
                            "customer",
                            survivor.to_string(),
                            "InteractionsReassigned",
                            &envelope(Out::InteractionsReassigned(r)),
                        ));
                    }
                }
                Event::CustomerUnmerged(u) => {
                    let (Some(restored), Some(survivor)) =
                        (id(&u.restored_customer_id), id(&u.survivor_customer_id))
                    else {
                        continue;
                    };
                    let moved = store::unmerge_customer(tx, tenant, restored).await?;
                    if !moved.is_empty() {
                        let r = reassigned_event(
                            survivor,
                            restored,
                            ReassignReason::Unmerge,
                            &moved,
                            event.sequence,
                        );
                        out.push(NewEvent::new(
                            tenant,
                            "customer",
                            restored.to_string(),
                            "InteractionsReassigned",
                            &envelope(Out::InteractionsReassigned(r)),
                        ));
                    }
                }
                Event::CustomerErased(er) => {
                    let Some(customer) = id(&er.customer_id).or_else(|| id(&event.aggregate_id))
                    else {
                        continue;
                    };
                    let count = store::erase_customer(tx, tenant, customer).await?;
                    out.push(NewEvent::new(
                        tenant,
                        "customer",
                        customer.to_string(),
                        "CustomerInteractionsErased",
                        &envelope(Out::CustomerInteractionsErased(erased_event(
                            customer,
                            count,
                            event.sequence,
                        ))),
                    ));
                }
                _ => {}
            }
        }
        store::customers_created(tx, tenant, &created).await?;
        feed::append(tx, &out).await?;
        Ok(())
    }
}

rapport_kit::feed_handler!(ProfileFollower => apply_batch);
