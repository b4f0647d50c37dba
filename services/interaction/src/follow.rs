//! Following the profile service's change feed: merges re-key interactions
//! to the survivor, unmerges give a customer back exactly the interactions
//! first recorded under it, erasures delete a customer's interactions. The
//! kit's `Consumer` stores the cursor in the same transaction, so each event
//! is applied exactly once.

use futures::future::BoxFuture;
use rapport_kit::feed::{self, FeedHandler, NewEvent};
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
    async fn apply_event(
        &self,
        tx: &mut PgConnection,
        event: &ChangeEvent,
    ) -> Result<(), sqlx::Error> {
        let Ok(tenant) = Uuid::parse_str(&event.tenant_id) else {
            tracing::warn!(
                sequence = event.sequence,
                "profile event without a tenant; skipped"
            );
            return Ok(());
        };
        // Events appended before typed events, and events reduced by a later
        // erasure (`redacted`), are skipped: the erasures that follow on the
        // feed delete everything anyway.
        let Some(ProfileEvent { event: Some(e) }) = feed::decode::<ProfileEvent>(event) else {
            return Ok(());
        };
        match e {
            Event::CustomerCreated(c) => {
                if let Some(c) = id(&c.customer_id) {
                    store::customer_created(tx, tenant, c).await?;
                }
            }
            Event::CustomerMerged(m) => {
                let (Some(merged), Some(survivor)) =
                    (id(&m.merged_customer_id), id(&m.survivor_customer_id))
                else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let moved = store::merge_customer(tx, tenant, merged, survivor).await?;
                if !moved.is_empty() {
                    let out = reassigned_event(
                        merged,
                        survivor,
                        ReassignReason::Merge,
                        &moved,
                        event.sequence,
                    );
                    feed::append(
                        tx,
                        &[NewEvent::new(
                            tenant,
                            "customer",
                            survivor.to_string(),
                            "InteractionsReassigned",
                            &envelope(Out::InteractionsReassigned(out)),
                        )],
                    )
                    .await?;
                }
            }
            Event::CustomerUnmerged(u) => {
                let (Some(restored), Some(survivor)) =
                    (id(&u.restored_customer_id), id(&u.survivor_customer_id))
                else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let moved = store::unmerge_customer(tx, tenant, restored).await?;
                if !moved.is_empty() {
                    let out = reassigned_event(
                        survivor,
                        restored,
                        ReassignReason::Unmerge,
                        &moved,
                        event.sequence,
                    );
                    feed::append(
                        tx,
                        &[NewEvent::new(
                            tenant,
                            "customer",
                            restored.to_string(),
                            "InteractionsReassigned",
                            &envelope(Out::InteractionsReassigned(out)),
                        )],
                    )
                    .await?;
                }
            }
            Event::CustomerErased(er) => {
                let Some(customer) = id(&er.customer_id).or_else(|| id(&event.aggregate_id)) else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let count = store::erase_customer(tx, tenant, customer).await?;
                feed::append(
                    tx,
                    &[NewEvent::new(
                        tenant,
                        "customer",
                        customer.to_string(),
                        "CustomerInteractionsErased",
                        &envelope(Out::CustomerInteractionsErased(erased_event(
                            customer,
                            count,
                            event.sequence,
                        ))),
                    )],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl FeedHandler for ProfileFollower {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.apply_event(tx, event))
    }
}
