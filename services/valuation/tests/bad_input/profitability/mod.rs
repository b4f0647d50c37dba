//! Cost models and profitability: SetCostModel, GetCostModel,
//! ListCostModels, GetCustomerProfitability and GetProfitabilityReport.
//! Each table row is a description, a valid request with one mutation, and
//! the exact field paths the BadRequest detail must name, in order.

use super::*;
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::interaction::v1::{Channel, InteractionType};
use rapport_testkit::hostile::{assert_violations, changed};

/// One row of a bad-input table: what it is, the request, the field paths.
type Case<R> = (String, R, Vec<String>);

/// A bad window: what it is, its start and end, the field paths.
type Window = (String, Option<Timestamp>, Option<Timestamp>, Vec<String>);

fn paths(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// Sends every row of `cases` through `call`, asserting INVALID_ARGUMENT
/// with exactly the row's violations.
async fn refuse_all<R, T, F, Fut>(cases: Vec<Case<R>>, mut call: F)
where
    T: std::fmt::Debug,
    F: FnMut(R) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    for (case, r, expected) in cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_violations(call(r).await, &expected, &case);
    }
}

/// A string far over every limit: 1 MiB.
fn huge() -> String {
    "x".repeat(1 << 20)
}

fn eur(units: i64, nanos: i32) -> Option<Money> {
    Some(money("EUR", units, nanos))
}

fn rate(kind: InteractionType, channel: Channel, cost: Option<Money>) -> ContactRate {
    ContactRate {
        r#type: kind as i32,
        channel: channel as i32,
        cost,
    }
}

/// A valid cost model in EUR with every kind of price, effective now, its
/// description hostile but valid text.
fn cost_model() -> CostModel {
    CostModel {
        currency_code: "EUR".into(),
        contact_rates: vec![
            rate(InteractionType::Call, Channel::Unspecified, eur(5, 0)),
            rate(InteractionType::SalesVisit, Channel::Field, eur(120, 0)),
            rate(
                InteractionType::CampaignSent,
                Channel::Email,
                eur(0, 100_000_000),
            ),
        ],
        service_request_cost: eur(20, 0),
        service_request_hour_cost: eur(2, 0),
        complaint_cost: eur(30, 0),
        complaint_hour_cost: eur(1, 500_000_000),
        return_handling_cost: eur(7, 500_000_000),
        fixed_cost: eur(12, 0),
        fixed_cost_period_days: 30,
        default_margin_rate_bps: 2500,
        description: TEXT.into(),
        ..Default::default()
    }
}

fn setting(m: CostModel) -> SetCostModelRequest {
    SetCostModelRequest {
        cost_model: Some(m),
        ..Default::default()
    }
}

/// Sets the cost model `r` carries as the tenant's next version.
async fn set(s: &Stack, t: Uuid, r: SetCostModelRequest) -> CostModel {
    s.valuation()
        .set_cost_model(req(t, r))
        .await
        .expect_answer("a valid cost model")
        .cost_model
        .expect("the version")
}

/// Every version of the tenant's cost model, newest first.
async fn versions(s: &Stack, t: Uuid) -> Vec<CostModel> {
    let page = s
        .valuation()
        .list_cost_models(req(
            t,
            ListCostModelsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("the versions");
    assert!(page.next_page_token.is_empty());
    page.cost_models
}

/// Amounts no cost model may hold, whatever the field: malformed (units
/// and nanos of different signs, nanos out of range), negative, or in
/// another currency than the model's EUR.
fn bad_amounts() -> Vec<(String, Money)> {
    let mut out = Vec::new();
    for (units, nanos) in [
        (1, -1),
        (-1, 1),
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (5, i32::MAX),
        (-5, i32::MIN),
        (i64::MAX, 1_000_000_000),
    ] {
        out.push((
            format!("malformed {units} {nanos}"),
            money("EUR", units, nanos),
        ));
    }
    for (units, nanos) in [
        (-1, 0),
        (0, -1),
        (-12, -500_000_000),
        (i64::MIN, 0),
        (i64::MIN, -999_999_999),
    ] {
        out.push((
            format!("negative {units} {nanos}"),
            money("EUR", units, nanos),
        ));
    }
    for currency in ["USD", "eur", "EURO", "E\0R", "\0", TEXT, &huge()] {
        let shown: String = format!("{currency:?}").chars().take(20).collect();
        out.push((format!("in {shown}"), money(currency, 5, 0)));
    }
    out
}

/// The Money fields of a cost model, by name.
type Slot = fn(&mut CostModel) -> &mut Option<Money>;
const AMOUNTS: [(&str, Slot); 6] = [
    ("service_request_cost", |m| &mut m.service_request_cost),
    ("service_request_hour_cost", |m| {
        &mut m.service_request_hour_cost
    }),
    ("complaint_cost", |m| &mut m.complaint_cost),
    ("complaint_hour_cost", |m| &mut m.complaint_hour_cost),
    ("return_handling_cost", |m| &mut m.return_handling_cost),
    ("fixed_cost", |m| &mut m.fixed_cost),
];

mod cost_models;
mod reports;
