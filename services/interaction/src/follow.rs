//! Following the profile service's change feed: merges re-key interactions
//! to the survivor, unmerges give a customer back exactly the interactions
//! first recorded under it, erasures delete a customer's interactions. The
//! kit's `Consumer` stores the cursor in the same transaction, so each event
//! is applied exactly once.

use futures::future::BoxFuture;
use rapport_kit::convert::struct_to_json;
use rapport_kit::feed::{self, FeedHandler, NewEvent};
use rapport_proto::rapport::common::v1::ChangeEvent;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::model::{erased_payload, reassigned_payload};
use crate::store;

/// The name of the cursor of the profile feed.
pub const PROFILE_CURSOR: &str = "profile";

/// Applies profile events to the interaction schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfileFollower;

fn id(payload: &Value, key: &str) -> Option<Uuid> {
    payload
        .get(key)?
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
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
        let payload = event
            .payload
            .as_ref()
            .map(struct_to_json)
            .unwrap_or(Value::Null);
        match event.event_type.as_str() {
            "CustomerCreated" => {
                if let Some(c) = id(&payload, "customer_id") {
                    store::customer_created(tx, tenant, c).await?;
                }
            }
            "CustomerMerged" => {
                // A payload scrubbed by a later erasure has no ids: the
                // erasures that follow on the feed delete everything anyway.
                let (Some(merged), Some(survivor)) = (
                    id(&payload, "merged_customer_id"),
                    id(&payload, "survivor_customer_id"),
                ) else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let moved = store::merge_customer(tx, tenant, merged, survivor).await?;
                if !moved.is_empty() {
                    feed::append(
                        tx,
                        &[NewEvent {
                            tenant_id: tenant,
                            aggregate_type: "customer",
                            aggregate_id: survivor.to_string(),
                            event_type: "InteractionsReassigned",
                            payload: reassigned_payload(
                                merged,
                                survivor,
                                "MERGE",
                                &moved,
                                event.sequence,
                            ),
                        }],
                    )
                    .await?;
                }
            }
            "CustomerUnmerged" => {
                let (Some(restored), Some(survivor)) = (
                    id(&payload, "restored_customer_id"),
                    id(&payload, "survivor_customer_id"),
                ) else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let moved = store::unmerge_customer(tx, tenant, restored).await?;
                if !moved.is_empty() {
                    feed::append(
                        tx,
                        &[NewEvent {
                            tenant_id: tenant,
                            aggregate_type: "customer",
                            aggregate_id: restored.to_string(),
                            event_type: "InteractionsReassigned",
                            payload: reassigned_payload(
                                survivor,
                                restored,
                                "UNMERGE",
                                &moved,
                                event.sequence,
                            ),
                        }],
                    )
                    .await?;
                }
            }
            "CustomerErased" => {
                let Some(customer) = id(&payload, "customer_id")
                    .or_else(|| Uuid::parse_str(&event.aggregate_id).ok())
                else {
                    return Ok(());
                };
                store::lock_customers_exclusive(tx).await?;
                let count = store::erase_customer(tx, tenant, customer).await?;
                feed::append(
                    tx,
                    &[NewEvent {
                        tenant_id: tenant,
                        aggregate_type: "customer",
                        aggregate_id: customer.to_string(),
                        event_type: "CustomerInteractionsErased",
                        payload: erased_payload(customer, count, event.sequence),
                    }],
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
