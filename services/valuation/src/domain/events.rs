//! Events of the valuation change feed (`rapport.valuation.v1.ValuationEvent`).

use chrono::{DateTime, Utc};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::valuation::v1::valuation_event::Event;
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, CustomerValueRemoved, ModelActivated, ValuationEvent, ValueRemovalReason,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::money::to_money;

/// Event type of a customer's new or changed value.
pub const VALUE_CHANGED: &str = "CustomerValueChanged";
/// Event type of a deleted value.
pub const VALUE_REMOVED: &str = "CustomerValueRemoved";
/// Event type of a fitted model.
pub const MODEL_FITTED: &str = "ModelFitted";
/// Event type of an activation.
pub const MODEL_ACTIVATED: &str = "ModelActivated";

/// The feed envelope of one case.
pub fn envelope(event: Event) -> ValuationEvent {
    ValuationEvent { event: Some(event) }
}

/// What changes about a customer's value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueChange<'a> {
    /// The customer.
    pub customer: Uuid,
    /// CLV, exact.
    pub clv: Decimal,
    /// Its currency.
    pub currency: &'a str,
    /// P(alive).
    pub p_alive: f64,
    /// Expected purchases over the horizon.
    pub expected_purchases: f64,
    /// `ValueTier` value.
    pub value_tier: i32,
    /// When scored.
    pub score_time: DateTime<Utc>,
    /// Net CLV, cost to serve and net profit over 365 days (None without a
    /// cost model).
    pub net_clv: Option<Decimal>,
    /// Cost to serve over the 365 days before the score time.
    pub cost_to_serve: Option<Decimal>,
    /// Net profit over those days.
    pub net_profit: Option<Decimal>,
    /// Profit decile, 0 when unset.
    pub profit_decile: i32,
}

/// CustomerValueChanged: the CLV as exact Money (rounded half-even to the
/// nano, which a stored CLV already is).
pub fn value_changed(v: &ValueChange<'_>) -> CustomerValueChanged {
    CustomerValueChanged {
        customer_id: v.customer.to_string(),
        clv: Some(to_money(v.currency, v.clv)),
        p_alive: v.p_alive,
        expected_purchases: v.expected_purchases,
        value_tier: v.value_tier,
        score_time: Some(timestamp(v.score_time)),
        net_clv: v.net_clv.map(|d| to_money(v.currency, d)),
        cost_to_serve: v.cost_to_serve.map(|d| to_money(v.currency, d)),
        net_profit: v.net_profit.map(|d| to_money(v.currency, d)),
        profit_decile: v.profit_decile,
    }
}

/// The removal reason a re-scoring queue entry records ("ERASED", "MERGED";
/// anything else, or none, means the customer has no purchases left).
pub fn removal_reason(queued: Option<&str>) -> ValueRemovalReason {
    match queued {
        Some("ERASED") => ValueRemovalReason::Erased,
        Some("MERGED") => ValueRemovalReason::Merged,
        _ => ValueRemovalReason::NoPurchases,
    }
}

/// CustomerValueRemoved.
pub fn value_removed(customer: Uuid, reason: ValueRemovalReason) -> CustomerValueRemoved {
    CustomerValueRemoved {
        customer_id: customer.to_string(),
        reason: reason as i32,
    }
}

/// ModelActivated: model_id, kind, version, previous_model_id (empty when
/// there was none).
pub fn model_activated(
    model: &str,
    kind: i32,
    version: i32,
    previous: Option<Uuid>,
) -> ModelActivated {
    ModelActivated {
        model_id: model.to_string(),
        kind,
        version,
        previous_model_id: previous.map(|p| p.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::valuation::v1::{ModelKind, ValueTier};

    #[test]
    fn events_follow_the_contract() {
        let id = Uuid::nil();
        let t = DateTime::from_timestamp(1_700_000_000, 123_000).unwrap();
        let e = value_changed(&ValueChange {
            customer: id,
            clv: Decimal::new(12_500_000_001, 9),
            currency: "EUR",
            p_alive: 0.5,
            expected_purchases: 1.25,
            value_tier: ValueTier::High as i32,
            score_time: t,
            net_clv: Some(Decimal::new(-3_000_000_007, 9)),
            cost_to_serve: Some(Decimal::new(45, 1)),
            net_profit: None,
            profit_decile: 7,
        });
        let net = e.net_clv.clone().unwrap();
        assert_eq!((net.units, net.nanos), (-3, -7));
        assert_eq!(
            e.cost_to_serve.as_ref().map(|m| (m.units, m.nanos)),
            Some((4, 500_000_000))
        );
        assert_eq!(e.net_profit, None);
        assert_eq!(e.profit_decile, 7);
        let clv = e.clv.clone().unwrap();
        assert_eq!(
            (clv.currency_code.as_str(), clv.units, clv.nanos),
            ("EUR", 12, 500_000_001)
        );
        assert_eq!(e.customer_id, id.to_string());
        assert_eq!((e.p_alive, e.expected_purchases), (0.5, 1.25));
        assert_eq!(e.value_tier, ValueTier::High as i32);
        assert_eq!(e.score_time, Some(timestamp(t)));
        assert_eq!(
            value_removed(id, ValueRemovalReason::Erased).reason,
            ValueRemovalReason::Erased as i32
        );
        assert_eq!(removal_reason(Some("ERASED")), ValueRemovalReason::Erased);
        assert_eq!(removal_reason(Some("MERGED")), ValueRemovalReason::Merged);
        assert_eq!(removal_reason(None), ValueRemovalReason::NoPurchases);
        let a = model_activated("m", ModelKind::BgNbd as i32, 2, None);
        assert_eq!(a.previous_model_id, "");
        assert_eq!((a.kind, a.version), (ModelKind::BgNbd as i32, 2));
        assert_eq!(
            model_activated("m", 1, 2, Some(id)).previous_model_id,
            id.to_string()
        );
    }
}
