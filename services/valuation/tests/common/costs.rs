//! Cost models for the cost-to-serve tests: the two versions the
//! hand-computed tenant of tests/profitability.rs is priced with, and a
//! helper that sets one.

use chrono::{DateTime, Utc};
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::interaction::v1::{Channel, InteractionType};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{ContactRate, CostModel, SetCostModelRequest};
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

use super::{Answer, money, req, ts};

/// EUR `units`.`cents`.
pub fn eur(units: i64, cents: i32) -> Money {
    money("EUR", units, cents * 10_000_000)
}

pub fn rate(kind: InteractionType, channel: Channel, cost: Money) -> ContactRate {
    ContactRate {
        r#type: kind as i32,
        channel: channel as i32,
        cost: Some(cost),
    }
}

pub fn model_v1(effective: DateTime<Utc>) -> CostModel {
    CostModel {
        effective_time: Some(ts(effective)),
        currency_code: "EUR".into(),
        contact_rates: vec![
            rate(InteractionType::Call, Channel::Unspecified, eur(5, 0)),
            rate(InteractionType::SalesVisit, Channel::Field, eur(120, 0)),
            rate(
                InteractionType::SalesVisit,
                Channel::Unspecified,
                eur(80, 0),
            ),
            rate(InteractionType::CampaignSent, Channel::Email, eur(0, 10)),
        ],
        service_request_cost: Some(eur(20, 0)),
        service_request_hour_cost: Some(eur(2, 0)),
        complaint_cost: Some(eur(30, 0)),
        complaint_hour_cost: Some(eur(1, 50)),
        return_handling_cost: Some(eur(7, 50)),
        fixed_cost: Some(eur(12, 0)),
        fixed_cost_period_days: 30,
        default_margin_rate_bps: 2500,
        description: "Activity-based costs, first cut".into(),
        ..Default::default()
    }
}

pub fn model_v2(effective: DateTime<Utc>) -> CostModel {
    let mut m = model_v1(effective);
    m.contact_rates[0].cost = Some(eur(6, 0));
    m.fixed_cost = None;
    m.fixed_cost_period_days = 0;
    m
}

pub async fn set(
    v: &mut ValuationServiceClient<GrpcChannel>,
    tenant: Uuid,
    model: CostModel,
    etag: &str,
) -> CostModel {
    v.set_cost_model(req(
        tenant,
        SetCostModelRequest {
            cost_model: Some(model),
            etag: etag.into(),
            request_id: String::new(),
        },
    ))
    .await
    .answer()
    .cost_model
    .unwrap()
}
