//! Payloads of the valuation change feed.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::money::decimal_text;
use super::scoring::Tier;

/// Event type of a customer's new or changed value.
pub const VALUE_CHANGED: &str = "CustomerValueChanged";
/// Event type of a deleted value.
pub const VALUE_REMOVED: &str = "CustomerValueRemoved";
/// Event type of a fitted model.
pub const MODEL_FITTED: &str = "ModelFitted";
/// Event type of an activation.
pub const MODEL_ACTIVATED: &str = "ModelActivated";

/// CustomerValueChanged: customer_id, clv (decimal text in the currency),
/// currency_code, p_alive, expected_purchases, value_tier ("top", ...).
pub fn value_changed(
    customer: Uuid,
    clv: Decimal,
    currency: &str,
    p_alive: f64,
    expected_purchases: f64,
    tier: Tier,
) -> Value {
    json!({
        "customer_id": customer,
        "clv": decimal_text(clv),
        "currency_code": currency,
        "p_alive": p_alive,
        "expected_purchases": expected_purchases,
        "value_tier": tier.name(),
    })
}

/// CustomerValueRemoved: customer_id and reason ("ERASED", "MERGED" or
/// "NO_PURCHASES").
pub fn value_removed(customer: Uuid, reason: &str) -> Value {
    json!({"customer_id": customer, "reason": reason})
}

/// ModelActivated: model_id, kind, version, previous_model_id (when any).
pub fn model_activated(model: Uuid, kind: &str, version: i32, previous: Option<Uuid>) -> Value {
    let mut p = json!({"model_id": model, "kind": kind, "version": version});
    if let (Some(prev), Some(map)) = (previous, p.as_object_mut()) {
        map.insert("previous_model_id".into(), json!(prev));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_follow_the_contract() {
        let id = Uuid::nil();
        let p = value_changed(id, Decimal::new(12_500, 3), "EUR", 0.5, 1.25, Tier::High);
        assert_eq!(
            p,
            json!({"customer_id": id, "clv": "12.5", "currency_code": "EUR", "p_alive": 0.5,
                   "expected_purchases": 1.25, "value_tier": "high"})
        );
        assert_eq!(value_removed(id, "ERASED")["reason"], "ERASED");
        let a = model_activated(id, "MODEL_KIND_BG_NBD", 2, None);
        assert!(a.get("previous_model_id").is_none());
        assert_eq!(
            model_activated(id, "k", 2, Some(id))["previous_model_id"],
            json!(id)
        );
    }
}
