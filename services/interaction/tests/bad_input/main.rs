//! The bad-input matrix of InteractionService and CampaignService over real
//! gRPC and PostgreSQL: every method is sent missing, oversized, malformed,
//! out-of-range and hostile input, and must answer the documented code (with
//! a field violation naming the field for INVALID_ARGUMENT), never INTERNAL,
//! and change nothing when it refuses. Free text full of SQL metacharacters
//! and unusual Unicode is kept byte for byte; a NUL byte, which PostgreSQL
//! cannot store in text, is INVALID_ARGUMENT.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use common::*;
use prost_types::{FieldMask, Struct, Timestamp, Value, value::Kind};
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, PeriodUnit, customer_ref,
};
use rapport_proto::rapport::interaction::v1::*;
use rapport_testkit::hostile::{
    self, BAD_IDS, MULTILINE_TEXT, YEAR_1, YEAR_9999_END, assert_code, assert_read_by_id,
    assert_violations, invalid_times,
};
use tonic::{Code, Status};
use uuid::Uuid;

/// The same spirit within printable ASCII, for idempotency keys and request ids.
const HOSTILE_KEY: &str = "Robert');DROP_TABLE_customers;--\"%_\\";

/// A case description short enough to read in a failure message.
fn short(case: String) -> String {
    case.chars().take(300).collect()
}

/// A request carrying `header` as its tenant metadata, or none.
fn with_header<T>(msg: T, header: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(h) = header {
        r.metadata_mut().insert(
            rapport_kit::context::TENANT_HEADER,
            h.parse().expect("ascii header"),
        );
    }
    r
}

/// What a tenant has in the database: interactions, idempotency keys,
/// campaigns and feed events.
async fn footprint(s: &Stack, tenant: Uuid) -> [i64; 4] {
    let mut out = [0; 4];
    for (n, sql) in [
        "SELECT count(*) FROM interactions WHERE tenant_id = $1",
        "SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1",
        "SELECT count(*) FROM campaigns WHERE tenant_id = $1",
        "SELECT count(*) FROM outbox WHERE tenant_id = $1",
    ]
    .into_iter()
    .enumerate()
    {
        out[n] = sqlx::query_scalar(sql)
            .bind(tenant)
            .fetch_one(&s.pool)
            .await
            .expect("count rows");
    }
    out
}

fn eur(units: i64) -> rapport_proto::rapport::common::v1::Money {
    money("EUR", units, 0)
}

fn line(sku: &str) -> LineItem {
    LineItem {
        sku: sku.into(),
        name: String::new(),
        category: String::new(),
        quantity: 1.0,
        unit_price: Some(eur(1)),
    }
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Option<Struct> {
    Some(Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn email_ref(values: &[&str]) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
            identifiers: values
                .iter()
                .map(|v| Identifier {
                    kind: IdentifierKind::Email as i32,
                    system: String::new(),
                    value: v.to_string(),
                })
                .collect(),
        })),
    })
}

/// Bad interactions, each with the one field (relative to the interaction)
/// it must be refused on.
fn bad_interactions(customer: Uuid) -> Vec<(String, Interaction)> {
    let base = purchase(customer, at(2024, 5, 1, 10), 12);
    let with = |f: &dyn Fn(&mut Interaction)| {
        let mut i = base.clone();
        f(&mut i);
        i
    };
    let of_type = |kind: InteractionType, f: &dyn Fn(&mut Interaction)| {
        let mut i = base.clone();
        i.r#type = kind as i32;
        i.amount = None;
        f(&mut i);
        i
    };
    let mut cases: Vec<(&str, Interaction)> = vec![
        ("customer", with(&|i| i.customer = None)),
        (
            "customer",
            with(&|i| i.customer = Some(CustomerRef { r#ref: None })),
        ),
        (
            "customer.identifiers.identifiers",
            with(&|i| i.customer = email_ref(&[])),
        ),
        (
            "customer.identifiers.identifiers",
            with(&|i| {
                let many: Vec<String> = (0..21).map(|n| format!("a{n}@example.com")).collect();
                let refs: Vec<&str> = many.iter().map(String::as_str).collect();
                i.customer = email_ref(&refs);
            }),
        ),
        (
            "customer.identifiers.identifiers[0].value",
            with(&|i| i.customer = email_ref(&[""])),
        ),
        (
            "customer.identifiers.identifiers[0].value",
            with(&|i| i.customer = email_ref(&[&"a".repeat(257)])),
        ),
        (
            "customer.identifiers.identifiers[0].value",
            with(&|i| i.customer = email_ref(&["ann\0@example.com"])),
        ),
        (
            "customer.identifiers.identifiers[0].kind",
            with(&|i| {
                i.customer = Some(CustomerRef {
                    r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
                        identifiers: vec![Identifier {
                            kind: 999,
                            system: String::new(),
                            value: "x".into(),
                        }],
                    })),
                })
            }),
        ),
        ("type", with(&|i| i.r#type = 0)),
        ("type", with(&|i| i.r#type = 999)),
        ("type", with(&|i| i.r#type = -1)),
        ("custom_type", with(&|i| i.custom_type = "acme.x".into())),
        (
            "custom_type",
            of_type(InteractionType::Custom, &|i| {
                i.custom_type = "rapport.x".into()
            }),
        ),
        (
            "custom_type",
            of_type(InteractionType::Custom, &|i| {
                i.custom_type = MULTILINE_TEXT.into()
            }),
        ),
        (
            "custom_type",
            of_type(InteractionType::Custom, &|i| {
                i.custom_type = "acme.a\0b".into()
            }),
        ),
        (
            "custom_type",
            of_type(InteractionType::Custom, &|i| i.custom_type = String::new()),
        ),
        ("occur_time", with(&|i| i.occur_time = None)),
        (
            "occur_time",
            with(&|i| i.occur_time = Some(hostile::at(YEAR_1, 0))),
        ),
        (
            "occur_time",
            with(&|i| i.occur_time = Some(hostile::at(-1, 0))),
        ),
        (
            "occur_time",
            with(&|i| i.occur_time = Some(hostile::at(YEAR_9999_END, 0))),
        ),
        (
            "occur_time",
            with(&|i| i.occur_time = Some(ts(Utc::now() + Duration::hours(1)))),
        ),
        ("channel", with(&|i| i.channel = 999)),
        ("channel", with(&|i| i.channel = -1)),
        ("initiator", with(&|i| i.initiator = 999)),
        ("amount", with(&|i| i.amount = None)),
        ("amount", with(&|i| i.amount = Some(eur(-1)))),
        (
            "amount",
            of_type(InteractionType::Return, &|i| {
                i.amount = Some(money("EUR", 0, -1))
            }),
        ),
        (
            "amount.nanos",
            with(&|i| i.amount = Some(money("EUR", 0, 1_000_000_000))),
        ),
        (
            "amount.nanos",
            with(&|i| i.amount = Some(money("EUR", 0, i32::MIN))),
        ),
        (
            "amount.nanos",
            with(&|i| i.amount = Some(money("EUR", 1, -1))),
        ),
        (
            "amount.currency_code",
            with(&|i| i.amount = Some(money("eur", 1, 0))),
        ),
        (
            "amount.currency_code",
            with(&|i| i.amount = Some(money("", 1, 0))),
        ),
        (
            "amount.currency_code",
            with(&|i| i.amount = Some(money("EURO", 1, 0))),
        ),
        (
            "amount.currency_code",
            with(&|i| i.amount = Some(money("E\0R", 1, 0))),
        ),
        (
            "margin",
            of_type(InteractionType::Call, &|i| i.margin = Some(eur(1))),
        ),
        (
            "margin.currency_code",
            with(&|i| i.margin = Some(money("USD", 1, 0))),
        ),
        (
            "line_items",
            of_type(InteractionType::Call, &|i| i.line_items = vec![line("s")]),
        ),
        ("line_items", with(&|i| i.line_items = vec![line("s"); 501])),
        (
            "line_items[0].sku",
            with(&|i| i.line_items = vec![line("")]),
        ),
        (
            "line_items[0].sku",
            with(&|i| i.line_items = vec![line(&"s".repeat(129))]),
        ),
        (
            "line_items[0].sku",
            with(&|i| i.line_items = vec![line("sku\0")]),
        ),
        (
            "line_items[0].name",
            with(&|i| {
                let mut l = line("s");
                l.name = "n".repeat(513);
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].name",
            with(&|i| {
                let mut l = line("s");
                l.name = "shoe\0".into();
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].category",
            with(&|i| {
                let mut l = line("s");
                l.category = "c".repeat(257);
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].category",
            with(&|i| {
                let mut l = line("s");
                l.category = "\0".into();
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].unit_price",
            with(&|i| {
                let mut l = line("s");
                l.unit_price = None;
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].unit_price",
            with(&|i| {
                let mut l = line("s");
                l.unit_price = Some(eur(-1));
                i.line_items = vec![l];
            }),
        ),
        (
            "line_items[0].unit_price.currency_code",
            with(&|i| {
                let mut l = line("s");
                l.unit_price = Some(money("USD", 1, 0));
                i.line_items = vec![l];
            }),
        ),
        (
            "campaign_id",
            of_type(InteractionType::CampaignSent, &|_| {}),
        ),
        ("campaign_id", with(&|i| i.campaign_id = "../x".into())),
        ("campaign_id", with(&|i| i.campaign_id = "1 OR 1=1".into())),
        ("agent_id", with(&|i| i.agent_id = "a".repeat(129))),
        ("agent_id", with(&|i| i.agent_id = "agent\0".into())),
        (
            "decision_id",
            with(&|i| i.decision_id = "not-a-decision".into()),
        ),
        ("decision_id", with(&|i| i.decision_id = "../x".into())),
        (
            "decision_id",
            with(&|i| i.decision_id = "a".repeat(100_000)),
        ),
        ("survey", of_type(InteractionType::SurveyResponse, &|_| {})),
        (
            "survey",
            with(&|i| {
                i.survey = Some(Survey {
                    csat: Some(5),
                    ..Default::default()
                })
            }),
        ),
        (
            "survey",
            of_type(InteractionType::SurveyResponse, &|i| {
                i.survey = Some(Survey::default())
            }),
        ),
        (
            "service_request_status",
            with(&|i| i.service_request_status = ServiceRequestStatus::Open as i32),
        ),
        (
            "service_request_status",
            of_type(InteractionType::ServiceRequest, &|i| {
                i.service_request_status = 999
            }),
        ),
        (
            "resolve_time",
            of_type(InteractionType::ServiceRequest, &|i| {
                i.resolve_time = Some(ts(at(2024, 5, 2, 0)))
            }),
        ),
        (
            "resolve_time",
            of_type(InteractionType::ServiceRequest, &|i| {
                i.service_request_status = ServiceRequestStatus::Resolved as i32;
                i.resolve_time = Some(ts(at(2024, 4, 1, 0)));
            }),
        ),
        (
            "attributes",
            with(&|i| {
                let keys: Vec<String> = (0..65).map(|n| format!("k{n}")).collect();
                let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
                i.attributes = attrs(&pairs);
            }),
        ),
        (
            "attributes",
            with(&|i| i.attributes = attrs(&[("big", &"x".repeat(17 * 1024))])),
        ),
        (
            "attributes",
            with(&|i| i.attributes = attrs(&[("order", "A-1\0")])),
        ),
        (
            "attributes",
            with(&|i| i.attributes = attrs(&[("ord\0er", "A-1")])),
        ),
        (
            "attributes[]",
            with(&|i| i.attributes = attrs(&[("", "v")])),
        ),
        (
            "idempotency_key",
            with(&|i| i.idempotency_key = "k".repeat(129)),
        ),
        (
            "idempotency_key",
            with(&|i| i.idempotency_key = "has space".into()),
        ),
        (
            "idempotency_key",
            with(&|i| i.idempotency_key = "clé".into()),
        ),
        (
            "idempotency_key",
            with(&|i| i.idempotency_key = "key\0".into()),
        ),
    ];
    let long_key = "k".repeat(65);
    cases.push((
        "",
        with(&|i| i.attributes = attrs(&[(long_key.as_str(), "v")])),
    ));
    let mut out: Vec<(String, Interaction)> = cases
        .into_iter()
        .map(|(f, i)| {
            let f = if f.is_empty() {
                format!("attributes[{long_key}]")
            } else {
                f.to_string()
            };
            (f, i)
        })
        .collect();
    for id in BAD_IDS {
        out.push((
            "customer.customer_id".into(),
            with(&|i| i.customer = by_id_str(id)),
        ));
    }
    for bad in invalid_times() {
        out.push(("occur_time".into(), with(&|i| i.occur_time = Some(bad))));
        out.push((
            "resolve_time".into(),
            of_type(InteractionType::Complaint, &|i| {
                i.service_request_status = ServiceRequestStatus::Closed as i32;
                i.resolve_time = Some(bad);
            }),
        ));
    }
    for quantity in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        -0.0,
        1e9 + 1.0,
    ] {
        let mut l = line("s");
        l.quantity = quantity;
        out.push((
            "line_items[0].quantity".into(),
            with(&|i| i.line_items = vec![l.clone()]),
        ));
    }
    for csat in [0, 6, -1, i32::MAX] {
        out.push((
            "survey.csat".into(),
            of_type(InteractionType::SurveyResponse, &|i| {
                i.survey = Some(Survey {
                    csat: Some(csat),
                    ..Default::default()
                })
            }),
        ));
    }
    for nps in [-1, 11, i32::MIN] {
        out.push((
            "survey.nps".into(),
            of_type(InteractionType::SurveyResponse, &|i| {
                i.survey = Some(Survey {
                    nps: Some(nps),
                    ..Default::default()
                })
            }),
        ));
    }
    for comment in ["c".repeat(4001), "fine\0not".to_string()] {
        out.push((
            "survey.comment".into(),
            of_type(InteractionType::SurveyResponse, &|i| {
                i.survey = Some(Survey {
                    csat: Some(4),
                    nps: None,
                    comment: comment.clone(),
                })
            }),
        ));
    }
    out
}

fn by_id_str(id: &str) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::CustomerId(id.into())),
    })
}

mod campaigns;
mod reading;
mod recording;
mod tenancy;

#[allow(unused_imports)]
use campaigns::*;
#[allow(unused_imports)]
use reading::*;
#[allow(unused_imports)]
use recording::*;
#[allow(unused_imports)]
use tenancy::*;
