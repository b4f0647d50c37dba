//! The demo tenant's cost model: what its contacts, service requests,
//! complaints, returns and accounts cost, so that the profitability report
//! and net CLV have something to show. Set once per seed (a request id
//! derived from it), effective from well before the generated history.

use chrono::{DateTime, Duration, Utc};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::interaction::v1::{Channel, InteractionType};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{ContactRate, CostModel, SetCostModelRequest};

use super::Authed;

fn eur(cents: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    })
}

/// EUR thousandths (for amounts below a cent).
fn eur_milli(milli: i64) -> Money {
    Money {
        currency_code: "EUR".into(),
        units: milli / 1000,
        nanos: ((milli % 1000) * 1_000_000) as i32,
    }
}

fn rate(kind: InteractionType, channel: Channel, cents: i64) -> ContactRate {
    ContactRate {
        r#type: kind as i32,
        channel: channel as i32,
        cost: eur(cents),
    }
}

/// The model: typical activity-based unit costs of a mid-sized retailer.
pub fn model(as_of: DateTime<Utc>) -> CostModel {
    use InteractionType as T;
    CostModel {
        effective_time: Some(timestamp(as_of - Duration::days(3 * 365))),
        currency_code: "EUR".into(),
        contact_rates: vec![
            rate(T::SalesVisit, Channel::Field, 6_000),
            rate(T::SalesVisit, Channel::Unspecified, 3_000),
            rate(T::Meeting, Channel::Unspecified, 2_500),
            rate(T::Call, Channel::Unspecified, 150),
            rate(T::Email, Channel::Unspecified, 40),
            rate(T::Chat, Channel::Unspecified, 80),
            rate(T::CampaignSent, Channel::Email, 1),
            rate(T::CampaignSent, Channel::Unspecified, 10),
        ],
        // The demo resolves its requests when it runs, long after they
        // were opened: a small hourly cost keeps those hours in proportion.
        service_request_cost: Some(eur_milli(4_000)),
        service_request_hour_cost: Some(eur_milli(2)),
        complaint_cost: Some(eur_milli(8_000)),
        complaint_hour_cost: Some(eur_milli(3)),
        return_handling_cost: eur(250),
        fixed_cost: eur(25),
        fixed_cost_period_days: 30,
        default_margin_rate_bps: 3_000,
        description: "Demo: unit costs by activity".into(),
        ..Default::default()
    }
}

/// Sets the model (again: a repeat with the same seed changes nothing).
/// Returns its version.
pub async fn seed(
    client: &ValuationServiceClient<Authed>,
    seed: u64,
    as_of: DateTime<Utc>,
) -> anyhow::Result<i32> {
    let request = SetCostModelRequest {
        cost_model: Some(model(as_of)),
        etag: String::new(),
        request_id: format!("seed-{seed}-cost-model"),
    };
    let answer = super::within_limits(client, &request, |mut c, r| async move {
        c.set_cost_model(r).await
    })
    .await?
    .into_inner();
    Ok(answer.cost_model.map_or(0, |m| m.version))
}
