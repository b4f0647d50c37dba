//! Synthetic interactions for benchmarks and load generators: a deterministic
//! mix that looks like a retailer's traffic.

use chrono::{DateTime, TimeZone, Utc};
use rapport_proto::rapport::common::v1::{CustomerRef, Money, customer_ref};
use rapport_proto::rapport::interaction::v1::{
    Channel, Initiator, Interaction, InteractionType, LineItem,
};
use uuid::Uuid;

use crate::domain::model::StoredInteraction;
use crate::domain::validate::{CustomerInput, validate_interaction};

/// An amount in euros.
pub fn eur(units: i64, nanos: i32) -> Money {
    Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    }
}

/// 2023-01-01T00:00:00Z, where synthetic histories start.
pub fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The `k`-th of a deterministic, realistic mix of interactions for
/// `customers`: 60% purchases with one to three line items, calls with an
/// agent, e-mails, web visits and returns, spread over three years from
/// [`base`], each with the idempotency key `{key_prefix}:order-{k}`.
pub fn interaction(k: usize, customers: &[Uuid], key_prefix: &str) -> Interaction {
    // With no customers, the nil id (which no tenant has).
    let customer = customers
        .get((k * 7919) % customers.len().max(1))
        .copied()
        .unwrap_or_default();
    let t = base() + chrono::Duration::seconds(((k as i64) * 104_729) % (3 * 365 * 86_400));
    let kind = match k % 10 {
        0..=5 => InteractionType::Purchase,
        6 => InteractionType::Call,
        7 => InteractionType::Email,
        8 => InteractionType::WebVisit,
        _ => InteractionType::Return,
    };
    let mut i = Interaction {
        customer: Some(CustomerRef {
            r#ref: Some(customer_ref::Ref::CustomerId(customer.to_string())),
        }),
        r#type: kind as i32,
        occur_time: Some(rapport_kit::convert::timestamp(t)),
        channel: [
            Channel::Store,
            Channel::Web,
            Channel::Mobile,
            Channel::Phone,
        ][k % 4] as i32,
        initiator: Initiator::Customer as i32,
        idempotency_key: format!("{key_prefix}:order-{k:09}"),
        ..Default::default()
    };
    if matches!(kind, InteractionType::Purchase | InteractionType::Return) {
        let units = 5 + (k % 200) as i64;
        i.amount = Some(eur(units, 990_000_000));
        if kind == InteractionType::Purchase {
            i.margin = Some(eur(units / 3, 0));
        }
        i.line_items = (0..1 + k % 3)
            .map(|n| LineItem {
                sku: format!("sku-{:05}", (k + n) % 20_000),
                name: "Article".into(),
                category: "apparel/shoes".into(),
                quantity: 1.0,
                unit_price: Some(eur(units / (1 + (k % 3) as i64), 0)),
            })
            .collect();
    }
    if kind == InteractionType::Call {
        i.agent_id = format!("agent-{}", k % 50);
    }
    i
}

/// The `COPY` text (for [`crate::store::COPY_STATEMENT`]) of the rows the
/// service would store for `interactions` of `tenant`, each naming its
/// customer by id, recorded at `now`: what a raw-`COPY` baseline or a bulk
/// load writes. An interaction the service would refuse is an error.
pub fn copy_buffer(
    tenant: Uuid,
    interactions: &[Interaction],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, String> {
    let mut rows = Vec::with_capacity(interactions.len());
    for (k, i) in interactions.iter().enumerate() {
        let new = validate_interaction(i, "", now)
            .map_err(|v| format!("interaction {k} is invalid: {v:?}"))?;
        let customer = match &new.customer {
            CustomerInput::Id(id) => *id,
            CustomerInput::Identifiers(_) => {
                return Err(format!("interaction {k} names no customer id"));
            }
        };
        rows.push(StoredInteraction::from_new(
            &new,
            Uuid::now_v7(),
            customer,
            customer,
            now,
        ));
    }
    let mut buf = Vec::with_capacity(rows.len() * 400);
    crate::store::copy_text(&mut buf, tenant, &rows);
    Ok(buf)
}
