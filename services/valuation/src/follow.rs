//! Following the interaction service's change feed: purchases are recorded
//! in the `purchases` projection (the cohort report's data) and their
//! customers queued for re-scoring; reassignments after merges and unmerges
//! move purchases and queue both customers; erasures delete everything
//! derived from the customer. The kit's `Consumer` stores the cursor in the
//! same transaction, so each event is applied exactly once.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rapport_kit::convert::struct_to_json;
use rapport_kit::feed::{self, FeedHandler};
use rapport_proto::rapport::common::v1::ChangeEvent;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::removed_event;
use crate::store::{self, Purchase};

/// The name of the cursor of the interaction feed.
pub const INTERACTION_CURSOR: &str = "interaction";

/// Applies interaction events to the valuation schema.
#[derive(Debug, Default, Clone, Copy)]
pub struct InteractionFollower;

fn id(payload: &Value, key: &str) -> Option<Uuid> {
    payload
        .get(key)?
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// A money object of a payload: (currency, amount).
fn money(v: Option<&Value>) -> Option<(String, Decimal)> {
    let v = v?;
    let currency = v.get("currency_code")?.as_str()?.to_string();
    let units: i64 = match v.get("units") {
        Some(Value::String(s)) => s.parse().ok()?,
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.round() as i64))?,
        None => 0,
        _ => return None,
    };
    // Through google.protobuf.Struct every number arrives as a double.
    let nanos = v
        .get("nanos")
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)))
        .unwrap_or(0);
    Some((currency, Decimal::from(units) + Decimal::new(nanos, 9)))
}

/// The purchase an InteractionRecorded payload describes, if it is one.
pub fn purchase_of(payload: &Value) -> Option<Purchase> {
    if payload.get("type")?.as_str()? != "INTERACTION_TYPE_PURCHASE" {
        return None;
    }
    let customer_id = id(payload, "customer_id")?;
    let occur_time = DateTime::parse_from_rfc3339(payload.get("occur_time")?.as_str()?)
        .ok()?
        .with_timezone(&Utc);
    let amount = money(payload.get("amount"));
    let margin = money(payload.get("margin"));
    Some(Purchase {
        interaction_id: id(payload, "interaction_id")?,
        customer_id,
        original_customer_id: id(payload, "original_customer_id").unwrap_or(customer_id),
        occur_time,
        currency: amount.as_ref().map(|a| a.0.clone()),
        amount: amount.map(|a| a.1),
        margin: margin.map(|m| m.1),
    })
}

impl InteractionFollower {
    async fn apply_event(
        &self,
        tx: &mut PgConnection,
        event: &ChangeEvent,
    ) -> Result<(), sqlx::Error> {
        let Ok(tenant) = Uuid::parse_str(&event.tenant_id) else {
            tracing::warn!(
                sequence = event.sequence,
                "interaction event without a tenant; skipped"
            );
            return Ok(());
        };
        let payload = event
            .payload
            .as_ref()
            .map(struct_to_json)
            .unwrap_or(Value::Null);
        match event.event_type.as_str() {
            "InteractionRecorded" => {
                if let Some(p) = purchase_of(&payload) {
                    store::record_purchase(tx, tenant, &p).await?;
                    store::enqueue(tx, tenant, &[p.customer_id], None).await?;
                }
            }
            "InteractionsReassigned" => {
                let (Some(from), Some(to)) = (
                    id(&payload, "from_customer_id"),
                    id(&payload, "to_customer_id"),
                ) else {
                    return Ok(());
                };
                let unmerge = payload.get("reason").and_then(Value::as_str) == Some("UNMERGE");
                let ids: Option<Vec<Uuid>> = payload
                    .get("interaction_ids")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                            .collect()
                    });
                store::reassign(tx, tenant, from, to, unmerge, ids.as_deref()).await?;
                let from_reason = (!unmerge).then_some("MERGED");
                store::enqueue(tx, tenant, &[from], from_reason).await?;
                store::enqueue(tx, tenant, &[to], None).await?;
            }
            "CustomerInteractionsErased" => {
                let Some(customer) = id(&payload, "customer_id")
                    .or_else(|| Uuid::parse_str(&event.aggregate_id).ok())
                else {
                    return Ok(());
                };
                if store::erase_customer(tx, tenant, customer).await? {
                    feed::append(tx, &[removed_event(tenant, customer, "ERASED")]).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl FeedHandler for InteractionFollower {
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ChangeEvent,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.apply_event(tx, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_purchases_from_recorded_payloads() {
        let id = Uuid::now_v7();
        let p = json!({
            "interaction_id": id, "customer_id": id, "original_customer_id": id,
            "type": "INTERACTION_TYPE_PURCHASE", "occur_time": "2024-03-01T10:00:00Z",
            "amount": {"currency_code": "EUR", "units": "12", "nanos": 500000000.0},
            "margin": {"currency_code": "EUR", "units": "3", "nanos": 0}
        });
        let got = purchase_of(&p).unwrap();
        assert_eq!(got.amount, Some(Decimal::new(125, 1)));
        assert_eq!(got.margin, Some(Decimal::from(3)));
        assert_eq!(got.currency.as_deref(), Some("EUR"));
        let mut call = p.clone();
        call["type"] = json!("INTERACTION_TYPE_CALL");
        assert!(purchase_of(&call).is_none());
    }
}
