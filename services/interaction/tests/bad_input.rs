//! The bad-input matrix of InteractionService and CampaignService over real
//! gRPC and PostgreSQL: every method is sent missing, oversized, malformed,
//! out-of-range and hostile input, and must answer the documented code (with
//! a field violation naming the field for INVALID_ARGUMENT), never INTERNAL,
//! and change nothing when it refuses. Free text full of SQL metacharacters
//! and unusual Unicode is kept byte for byte; a NUL byte, which PostgreSQL
//! cannot store in text, is INVALID_ARGUMENT.

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
    self, BAD_IDS, MULTILINE_TEXT, YEAR_1, YEAR_9999_END, assert_code, assert_violations,
    invalid_times,
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

fn campaign(name: &str) -> Campaign {
    Campaign {
        name: name.into(),
        channel: Channel::Email as i32,
        ..Default::default()
    }
}

async fn create_campaign(s: &Stack, tenant: Uuid, c: Campaign) -> Campaign {
    s.campaigns()
        .create_campaign(req(
            tenant,
            CreateCampaignRequest {
                campaign: Some(c),
                request_id: String::new(),
            },
        ))
        .await
        .expect("campaign created")
        .into_inner()
        .campaign
        .expect("campaign in response")
}

async fn record(s: &Stack, tenant: Uuid, i: Interaction) -> Interaction {
    s.interactions()
        .record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(i),
            },
        ))
        .await
        .expect("interaction recorded")
        .into_inner()
        .interaction
        .expect("interaction in response")
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

#[tokio::test]
async fn every_method_refuses_a_call_without_a_tenant() {
    let s = start().await;
    let mut i = s.interactions();
    let mut c = s.campaigns();
    let id = Uuid::new_v4().to_string();
    for header in [None, Some("not-a-uuid"), Some(""), Some("../x")] {
        let case = format!("tenant header {header:?}");
        let unauth = Code::Unauthenticated;
        assert_code(
            i.record_interaction(with_header(
                RecordInteractionRequest {
                    interaction: Some(purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1)),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        let stream = futures::stream::iter(vec![RecordInteractionsRequest {
            interactions: vec![purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1)],
        }]);
        assert_code(
            i.record_interactions(with_header(stream, header)).await,
            unauth,
            &case,
        );
        assert_code(
            i.get_interaction(with_header(
                GetInteractionRequest {
                    interaction_id: id.clone(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.list_interactions(with_header(
                ListInteractionsRequest {
                    customer_id: id.clone(),
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.update_service_request(with_header(
                UpdateServiceRequestRequest {
                    interaction_id: id.clone(),
                    status: ServiceRequestStatus::Closed as i32,
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.get_customer_summary(with_header(
                GetCustomerSummaryRequest {
                    customer_id: id.clone(),
                    as_of: None,
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.export_summaries(with_header(
                ExportSummariesRequest {
                    calibration_end_time: Some(ts(at(2024, 1, 1, 0))),
                    period_unit: PeriodUnit::Week as i32,
                    currency_code: "EUR".into(),
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.create_campaign(with_header(
                CreateCampaignRequest {
                    campaign: Some(campaign("Spring")),
                    request_id: String::new(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.get_campaign(with_header(
                GetCampaignRequest {
                    campaign_id: id.clone(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.list_campaigns(with_header(ListCampaignsRequest::default(), header))
                .await,
            unauth,
            &case,
        );
        assert_code(
            c.update_campaign(with_header(
                UpdateCampaignRequest {
                    campaign: Some(Campaign {
                        campaign_id: id.clone(),
                        name: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["name".into()],
                    }),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.get_campaign_report(with_header(
                GetCampaignReportRequest {
                    campaign_id: id.clone(),
                    attribution_window: None,
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
    }
    for n in [
        "SELECT count(*) FROM interactions",
        "SELECT count(*) FROM campaigns",
        "SELECT count(*) FROM outbox",
    ] {
        assert_eq!(s.count(n).await, 0, "{n}");
    }
    s.stop().await;
}

#[tokio::test]
async fn record_interaction_refuses_every_bad_field_and_writes_nothing() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    create_campaign(&s, tenant, campaign("Spring")).await;
    let before = footprint(&s, tenant).await;

    assert_violations(
        c.record_interaction(req(tenant, RecordInteractionRequest { interaction: None }))
            .await,
        &["interaction"],
        "no interaction",
    );
    assert_violations(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(Interaction::default()),
            },
        ))
        .await,
        &[
            "interaction.customer",
            "interaction.type",
            "interaction.occur_time",
        ],
        "empty interaction",
    );
    for (field, bad) in bad_interactions(customer) {
        let case = short(format!("{field}: {bad:?}"));
        let expected = format!("interaction.{field}");
        assert_violations(
            c.record_interaction(req(
                tenant,
                RecordInteractionRequest {
                    interaction: Some(bad),
                },
            ))
            .await,
            &[expected.as_str()],
            &case,
        );
        assert_eq!(footprint(&s, tenant).await, before, "{case} wrote nothing");
    }

    // Well-formed ids of campaigns that do not exist, or exist in another
    // tenant, are NOT_FOUND.
    let other_tenant = Uuid::new_v4();
    let theirs = create_campaign(&s, other_tenant, campaign("Theirs")).await;
    for id in [Uuid::new_v4().to_string(), theirs.campaign_id.clone()] {
        let mut i = contact(customer, InteractionType::CampaignSent, at(2024, 5, 1, 0));
        i.campaign_id = id.clone();
        assert_code(
            c.record_interaction(req(
                tenant,
                RecordInteractionRequest {
                    interaction: Some(i),
                },
            ))
            .await,
            Code::NotFound,
            &format!("campaign {id}"),
        );
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // The same idempotency key with other content is ALREADY_EXISTS and
    // leaves the first recording as it was.
    let mut first = purchase(customer, at(2024, 5, 1, 10), 12);
    first.idempotency_key = HOSTILE_KEY.into();
    let stored = record(&s, tenant, first.clone()).await;
    assert_eq!(stored.idempotency_key, HOSTILE_KEY);
    let after_first = footprint(&s, tenant).await;
    let mut changed = first.clone();
    changed.amount = Some(eur(13));
    assert_code(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(changed),
            },
        ))
        .await,
        Code::AlreadyExists,
        "reused key",
    );
    assert_eq!(footprint(&s, tenant).await, after_first);
    let again = c
        .get_interaction(req(
            tenant,
            GetInteractionRequest {
                interaction_id: stored.interaction_id.clone(),
            },
        ))
        .await
        .expect("read back")
        .into_inner()
        .interaction
        .expect("interaction");
    assert_eq!(again, stored);
    // The other tenant's campaign is untouched.
    assert_eq!(footprint(&s, other_tenant).await, [0, 0, 1, 1]);
    s.stop().await;
}

#[tokio::test]
async fn unknown_customers_and_bad_identifiers_are_refused_with_the_profile_service() {
    let s = start_with_profile().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let before = footprint(&s, tenant).await;
    let unknown = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    assert_code(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(unknown),
            },
        ))
        .await,
        Code::NotFound,
        "unknown customer",
    );
    let mut nul = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    nul.customer = email_ref(&["ann@example.com\0"]);
    assert_violations(
        c.record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(nul),
            },
        ))
        .await,
        &["interaction.customer.identifiers.identifiers[0].value"],
        "NUL in an identifier",
    );
    let mut not_email = purchase(Uuid::new_v4(), at(2024, 5, 1, 10), 12);
    not_email.customer = email_ref(&[MULTILINE_TEXT]);
    let err = c
        .record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(not_email),
            },
        ))
        .await
        .expect_err("not an e-mail address");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        violated_fields(&err)
            .iter()
            .all(|f| f.starts_with("interaction.customer.identifiers")),
        "{err:?}"
    );
    assert_eq!(footprint(&s, tenant).await, before);
    s.stop().await;
}

#[tokio::test]
async fn hostile_text_is_kept_byte_for_byte() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut p = purchase(customer, at(2024, 5, 1, 10), 12);
    p.agent_id = MULTILINE_TEXT.into();
    p.line_items = vec![LineItem {
        sku: MULTILINE_TEXT.into(),
        name: MULTILINE_TEXT.into(),
        category: MULTILINE_TEXT.into(),
        quantity: 1.25,
        unit_price: Some(eur(12)),
    }];
    p.attributes = attrs(&[(MULTILINE_TEXT, MULTILINE_TEXT), ("plain", "x")]);
    p.idempotency_key = HOSTILE_KEY.into();
    let mut survey = contact(customer, InteractionType::SurveyResponse, at(2024, 5, 2, 0));
    survey.survey = Some(Survey {
        csat: Some(1),
        nps: Some(0),
        comment: MULTILINE_TEXT.into(),
    });
    let stored_p = record(&s, tenant, p.clone()).await;
    let stored_s = record(&s, tenant, survey).await;
    for stored in [&stored_p, &stored_s] {
        let got = c
            .get_interaction(req(
                tenant,
                GetInteractionRequest {
                    interaction_id: stored.interaction_id.clone(),
                },
            ))
            .await
            .expect("read back")
            .into_inner()
            .interaction
            .expect("interaction");
        assert_eq!(&got, stored);
    }
    assert_eq!(stored_p.agent_id, MULTILINE_TEXT);
    assert_eq!(stored_p.line_items, p.line_items);
    assert_eq!(stored_p.attributes, p.attributes);
    assert_eq!(stored_p.idempotency_key, HOSTILE_KEY);
    assert_eq!(
        stored_s.survey.as_ref().map(|x| x.comment.as_str()),
        Some(MULTILINE_TEXT)
    );
    let listed = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                order: TimelineOrder::OldestFirst as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("timeline")
        .into_inner();
    assert_eq!(listed.interactions, vec![stored_p.clone(), stored_s]);
    // A retry with the same hostile content is a duplicate, not a conflict.
    let retry = c
        .record_interaction(req(
            tenant,
            RecordInteractionRequest {
                interaction: Some(p),
            },
        ))
        .await
        .expect("retry")
        .into_inner();
    assert!(!retry.created);
    assert_eq!(retry.interaction, Some(stored_p));
    s.stop().await;
}

fn stream_of(
    messages: Vec<Vec<Interaction>>,
) -> impl futures::Stream<Item = RecordInteractionsRequest> {
    futures::stream::iter(
        messages
            .into_iter()
            .map(|interactions| RecordInteractionsRequest { interactions }),
    )
}

#[tokio::test]
async fn a_stream_rejects_bad_items_by_index_and_records_the_good_ones() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let other_tenant = Uuid::new_v4();
    let theirs = create_campaign(&s, other_tenant, campaign("Theirs")).await;
    let good = |n: u32| {
        let mut i = purchase(customer, at(2024, 1, 1 + n, 0), i64::from(n));
        i.idempotency_key = format!("k{n}");
        i
    };
    let bad = |n: u32, f: &dyn Fn(&mut Interaction)| {
        let mut i = good(n);
        f(&mut i);
        i
    };
    let mut hostile = good(8);
    hostile.agent_id = MULTILINE_TEXT.into();
    let messages = vec![
        vec![
            good(0),
            bad(1, &|i| i.agent_id = "\0".into()),
            good(2),
            bad(3, &|i| {
                let mut l = line("s");
                l.quantity = f64::NAN;
                i.line_items = vec![l];
            }),
        ],
        vec![],
        vec![
            bad(4, &|i| i.r#type = 999),
            good(5),
            bad(6, &|i| {
                i.r#type = InteractionType::CampaignClicked as i32;
                i.campaign_id = theirs.campaign_id.clone();
            }),
            bad(7, &|i| i.attributes = attrs(&[("x", "\0")])),
            hostile.clone(),
            bad(9, &|i| i.occur_time = Some(hostile::at(1_700_000_000, -1))),
            bad(10, &|i| {
                i.r#type = InteractionType::SurveyResponse as i32;
                i.amount = None;
                i.survey = Some(Survey {
                    comment: "\0".into(),
                    csat: Some(3),
                    nps: None,
                })
            }),
        ],
    ];
    let r = c
        .record_interactions(req(tenant, stream_of(messages.clone())))
        .await
        .expect("the stream is answered")
        .into_inner();
    let rejected: Vec<(i64, i32, String, Vec<String>)> = r
        .rejections
        .iter()
        .map(|x| {
            (
                x.index,
                x.reason,
                x.idempotency_key.clone(),
                x.field_violations.iter().map(|f| f.field.clone()).collect(),
            )
        })
        .collect();
    let invalid = RejectionReason::Invalid as i32;
    assert_eq!(
        rejected,
        vec![
            (1, invalid, "k1".into(), vec!["agent_id".to_string()]),
            (
                3,
                invalid,
                "k3".into(),
                vec!["line_items[0].quantity".into()]
            ),
            (4, invalid, "k4".into(), vec!["type".into()]),
            (
                6,
                RejectionReason::CampaignNotFound as i32,
                "k6".into(),
                vec![]
            ),
            (7, invalid, "k7".into(), vec!["attributes".into()]),
            (9, invalid, "k9".into(), vec!["occur_time".into()]),
            (10, invalid, "k10".into(), vec!["survey.comment".into()]),
        ]
    );
    assert_eq!(
        (r.accepted_count, r.duplicate_count, r.rejected_count),
        (4, 0, 7)
    );
    let listed = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                order: TimelineOrder::OldestFirst as i32,
                ..Default::default()
            },
        ))
        .await
        .expect("timeline")
        .into_inner()
        .interactions;
    let keys: Vec<&str> = listed.iter().map(|i| i.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["k0", "k2", "k5", "k8"]);
    assert_eq!(listed[3].agent_id, MULTILINE_TEXT);
    let after = footprint(&s, tenant).await;
    assert_eq!(after, [4, 4, 0, 4]);

    // Sent again: the good ones are duplicates, the bad ones rejected again.
    let again = c
        .record_interactions(req(tenant, stream_of(messages)))
        .await
        .expect("the stream is answered")
        .into_inner();
    assert_eq!(
        (
            again.accepted_count,
            again.duplicate_count,
            again.rejected_count
        ),
        (0, 4, 7)
    );
    assert_eq!(footprint(&s, tenant).await, after);

    // More than 1,000 interactions in one message fail the call; nothing of
    // that message is written.
    let big: Vec<Interaction> = (0..1001)
        .map(|n| purchase(customer, at(2024, 2, 1, 0), n))
        .collect();
    assert_violations(
        c.record_interactions(req(tenant, stream_of(vec![big])))
            .await,
        &["interactions"],
        "1,001 interactions in a message",
    );
    assert_eq!(footprint(&s, tenant).await, after);
    assert_eq!(footprint(&s, other_tenant).await, [0, 0, 1, 1]);
    s.stop().await;
}

#[tokio::test]
async fn get_interaction_refuses_malformed_ids_and_hides_other_tenants() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let stored = record(&s, tenant, purchase(Uuid::new_v4(), at(2024, 5, 1, 0), 5)).await;
    for id in BAD_IDS {
        assert_violations(
            c.get_interaction(req(
                tenant,
                GetInteractionRequest {
                    interaction_id: id.into(),
                },
            ))
            .await,
            &["interaction_id"],
            id,
        );
    }
    for (who, id) in [
        (tenant, Uuid::new_v4().to_string()),
        (Uuid::new_v4(), stored.interaction_id.clone()),
    ] {
        assert_code(
            c.get_interaction(req(
                who,
                GetInteractionRequest {
                    interaction_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
            &id,
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn list_interactions_refuses_bad_filters_and_forged_page_tokens() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    for d in 1..=3 {
        record(&s, tenant, purchase(customer, at(2024, 5, d, 0), 1)).await;
    }
    let base = ListInteractionsRequest {
        customer_id: customer.to_string(),
        page_size: 1,
        ..Default::default()
    };
    let first = c
        .list_interactions(req(tenant, base.clone()))
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.interactions.len(), 1);
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());

    let with = |f: &dyn Fn(&mut ListInteractionsRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut cases: Vec<(&str, ListInteractionsRequest)> = vec![
        ("types[0]", with(&|r| r.types = vec![0])),
        ("types[1]", with(&|r| r.types = vec![1, 999])),
        ("types[0]", with(&|r| r.types = vec![-1])),
        ("channels[0]", with(&|r| r.channels = vec![0])),
        ("channels[0]", with(&|r| r.channels = vec![999])),
        (
            "custom_types",
            with(&|r| r.custom_types = (0..51).map(|n| format!("acme.t{n}")).collect()),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec![MULTILINE_TEXT.into()]),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec!["acme.a\0".into()]),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec![String::new()]),
        ),
        (
            "end_time",
            with(&|r| {
                r.start_time = Some(ts(at(2024, 5, 2, 0)));
                r.end_time = Some(ts(at(2024, 5, 2, 0)));
            }),
        ),
        (
            "end_time",
            with(&|r| {
                r.start_time = Some(ts(at(2024, 5, 2, 0)));
                r.end_time = Some(ts(at(2024, 5, 1, 0)));
            }),
        ),
        ("order", with(&|r| r.order = 999)),
        ("page_size", with(&|r| r.page_size = -1)),
        ("page_size", with(&|r| r.page_size = i32::MIN)),
        // Tokens: forged, altered, or issued for another request.
        (
            "page_token",
            with(&|r| r.page_token = "dGhpcyBpcyBub3QgYSB0b2tlbg".into()),
        ),
        ("page_token", with(&|r| r.page_token = "!!!".into())),
        ("page_token", with(&|r| r.page_token = "A".repeat(5000))),
        (
            "page_token",
            with(&|r| r.page_token = MULTILINE_TEXT.into()),
        ),
        ("page_token", with(&|r| r.page_token = format!("{token}A"))),
        (
            "page_token",
            with(&|r| r.page_token = token[1..].to_string()),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.order = TimelineOrder::OldestFirst as i32;
            }),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.types = vec![InteractionType::Purchase as i32];
            }),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.customer_id = Uuid::new_v4().to_string();
            }),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.start_time = Some(ts(at(2020, 1, 1, 0)));
            }),
        ),
    ];
    // One character changed, wherever it is.
    for pos in [0, token.len() / 2, token.len() - 1] {
        let mut bytes = token.clone().into_bytes();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).expect("ascii token");
        cases.push(("page_token", with(&|r| r.page_token = altered.clone())));
    }
    for id in BAD_IDS {
        cases.push(("customer_id", with(&|r| r.customer_id = id.into())));
    }
    for bad in invalid_times() {
        cases.push(("start_time", with(&|r| r.start_time = Some(bad))));
        cases.push(("end_time", with(&|r| r.end_time = Some(bad))));
    }
    for (field, r) in cases {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.list_interactions(req(tenant, r)).await,
            &[field],
            &short(case),
        );
    }
    // The token is refused for another tenant, and another list's token here.
    assert_violations(
        c.list_interactions(req(Uuid::new_v4(), with(&|r| r.page_token = token.clone())))
            .await,
        &["page_token"],
        "token of another tenant",
    );
    let camp_tenant_token = {
        for n in 0..2 {
            create_campaign(&s, tenant, campaign(&format!("c{n}"))).await;
        }
        s.campaigns()
            .list_campaigns(req(
                tenant,
                ListCampaignsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("campaign page")
            .into_inner()
            .next_page_token
    };
    assert!(!camp_tenant_token.is_empty());
    assert_violations(
        c.list_interactions(req(
            tenant,
            with(&|r| r.page_token = camp_tenant_token.clone()),
        ))
        .await,
        &["page_token"],
        "token of ListCampaigns",
    );

    // The token still works with its own request; far past and future
    // bounds and huge page sizes are fine.
    let second = c
        .list_interactions(req(tenant, with(&|r| r.page_token = token.clone())))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.interactions.len(), 1);
    assert_ne!(second.interactions, first.interactions);
    let all = c
        .list_interactions(req(
            tenant,
            with(&|r| {
                r.page_size = i32::MAX;
                r.start_time = Some(hostile::at(YEAR_1, 0));
                r.end_time = Some(hostile::at(YEAR_9999_END, 999_999_999));
            }),
        ))
        .await
        .expect("every interaction")
        .into_inner();
    assert_eq!(all.interactions.len(), 3);
    assert!(all.next_page_token.is_empty());
    // Another tenant sees an empty timeline for the same customer id.
    let theirs = c
        .list_interactions(req(Uuid::new_v4(), with(&|r| r.page_size = 0)))
        .await
        .expect("other tenant's timeline")
        .into_inner();
    assert!(theirs.interactions.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn update_service_request_refuses_bad_input_and_changes_nothing() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut sr = contact(customer, InteractionType::ServiceRequest, at(2024, 5, 1, 0));
    sr.agent_id = "agent-1".into();
    let sr = record(&s, tenant, sr).await;
    let bought = record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    let before = footprint(&s, tenant).await;
    let read = |id: String| {
        let mut c = s.interactions();
        async move {
            c.get_interaction(req(tenant, GetInteractionRequest { interaction_id: id }))
                .await
                .expect("read back")
                .into_inner()
                .interaction
                .expect("interaction")
        }
    };
    let base = UpdateServiceRequestRequest {
        interaction_id: sr.interaction_id.clone(),
        status: ServiceRequestStatus::InProgress as i32,
        etag: String::new(),
        agent_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut UpdateServiceRequestRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut invalid: Vec<(&str, UpdateServiceRequestRequest)> = vec![
        ("status", with(&|r| r.status = 0)),
        ("status", with(&|r| r.status = 999)),
        ("status", with(&|r| r.status = -1)),
        ("agent_id", with(&|r| r.agent_id = "a".repeat(129))),
        ("agent_id", with(&|r| r.agent_id = "agent\0".into())),
    ];
    for id in BAD_IDS {
        invalid.push(("interaction_id", with(&|r| r.interaction_id = id.into())));
    }
    for (field, r) in invalid {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.update_service_request(req(tenant, r)).await,
            &[field],
            &case,
        );
        assert_eq!(read(sr.interaction_id.clone()).await, sr, "{case}");
    }
    let refused: Vec<(Code, Uuid, UpdateServiceRequestRequest)> = vec![
        (
            Code::NotFound,
            tenant,
            with(&|r| r.interaction_id = Uuid::new_v4().to_string()),
        ),
        (Code::NotFound, Uuid::new_v4(), base.clone()),
        (
            Code::NotFound,
            Uuid::new_v4(),
            with(&|r| r.agent_id = "intruder".into()),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.interaction_id = bought.interaction_id.clone()),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.status = ServiceRequestStatus::Resolved as i32),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.status = ServiceRequestStatus::Closed as i32),
        ),
        (
            Code::Aborted,
            tenant,
            with(&|r| r.etag = "\"stale\"".into()),
        ),
        (
            Code::Aborted,
            tenant,
            with(&|r| r.etag = MULTILINE_TEXT.into()),
        ),
    ];
    for (code, who, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(c.update_service_request(req(who, r)).await, code, &case);
        assert_eq!(read(sr.interaction_id.clone()).await, sr, "{case}");
        assert_eq!(read(bought.interaction_id.clone()).await, bought, "{case}");
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // A legal change with a hostile agent id keeps it byte for byte.
    let updated = c
        .update_service_request(req(
            tenant,
            with(&|r| {
                r.agent_id = MULTILINE_TEXT.into();
                r.etag = sr.etag.clone();
            }),
        ))
        .await
        .expect("legal transition")
        .into_inner()
        .interaction
        .expect("interaction");
    assert_eq!(updated.agent_id, MULTILINE_TEXT);
    assert_eq!(read(sr.interaction_id.clone()).await, updated);
    s.stop().await;
}

#[tokio::test]
async fn customer_summaries_refuse_malformed_ids_and_times() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    for id in BAD_IDS {
        assert_violations(
            c.get_customer_summary(req(
                tenant,
                GetCustomerSummaryRequest {
                    customer_id: id.into(),
                    as_of: None,
                },
            ))
            .await,
            &["customer_id"],
            id,
        );
    }
    for bad in invalid_times() {
        assert_violations(
            c.get_customer_summary(req(
                tenant,
                GetCustomerSummaryRequest {
                    customer_id: customer.to_string(),
                    as_of: Some(bad),
                },
            ))
            .await,
            &["as_of"],
            &format!("{bad:?}"),
        );
    }
    let summary = |who: Uuid, as_of: Option<Timestamp>| {
        let mut c = s.interactions();
        async move {
            c.get_customer_summary(req(
                who,
                GetCustomerSummaryRequest {
                    customer_id: customer.to_string(),
                    as_of,
                },
            ))
            .await
            .expect("summary")
            .into_inner()
            .summary
            .expect("summary body")
        }
    };
    assert_eq!(
        summary(tenant, Some(hostile::at(YEAR_1, 0)))
            .await
            .purchase_count,
        0
    );
    let far = summary(tenant, Some(hostile::at(YEAR_9999_END, 0))).await;
    assert_eq!(far.purchase_count, 1);
    assert!(far.age_days.is_some_and(f64::is_finite));
    assert_eq!(summary(tenant, None).await.purchase_count, 1);
    // Another tenant learns nothing about this customer.
    let theirs = summary(Uuid::new_v4(), None).await;
    assert_eq!(theirs.purchase_count, 0);
    assert!(theirs.currencies.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn export_summaries_refuses_bad_requests() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    record(&s, tenant, purchase(customer, at(2024, 6, 1, 0), 4)).await;
    let base = ExportSummariesRequest {
        calibration_end_time: Some(ts(at(2025, 1, 1, 0))),
        period_unit: PeriodUnit::Week as i32,
        currency_code: "EUR".into(),
        ..Default::default()
    };
    let with = |f: &dyn Fn(&mut ExportSummariesRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cohort = |start: Option<Timestamp>, end: Option<Timestamp>| {
        Some(export_summaries_request::Restriction::Cohort(
            AcquisitionCohort {
                start_time: start,
                end_time: end,
            },
        ))
    };
    let ids = |list: Vec<String>| {
        Some(export_summaries_request::Restriction::CustomerIds(
            CustomerIdList { customer_ids: list },
        ))
    };
    let future = ts(Utc::now() + Duration::hours(1));
    let mut cases: Vec<(Vec<&str>, ExportSummariesRequest)> = vec![
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = None),
        ),
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(future)),
        ),
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(hostile::at(YEAR_9999_END, 0))),
        ),
        (vec!["period_unit"], with(&|r| r.period_unit = 0)),
        (vec!["period_unit"], with(&|r| r.period_unit = 999)),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(ts(at(2024, 1, 1, 0)))),
        ),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(ts(at(2025, 1, 1, 0)))),
        ),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(future)),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "eur".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "EURO".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "EU\0".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = MULTILINE_TEXT.into()),
        ),
        (
            vec!["cohort.start_time"],
            with(&|r| r.restriction = cohort(None, Some(ts(at(2024, 1, 1, 0))))),
        ),
        (
            vec!["cohort.end_time"],
            with(&|r| r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), None)),
        ),
        (
            vec!["cohort.end_time"],
            with(&|r| {
                r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), Some(ts(at(2024, 1, 1, 0))))
            }),
        ),
        (
            vec!["customer_ids.customer_ids"],
            with(&|r| r.restriction = ids(vec![])),
        ),
        (
            vec!["customer_ids.customer_ids"],
            with(&|r| {
                r.restriction = ids((0..50_001).map(|_| Uuid::new_v4().to_string()).collect())
            }),
        ),
        (
            vec!["calibration_end_time", "period_unit", "currency_code"],
            ExportSummariesRequest {
                currency_code: "x".into(),
                ..Default::default()
            },
        ),
    ];
    for id in BAD_IDS {
        cases.push((
            vec!["customer_ids.customer_ids[1]"],
            with(&|r| r.restriction = ids(vec![customer.to_string(), id.into()])),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(bad)),
        ));
        cases.push((
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(bad)),
        ));
        cases.push((
            vec!["cohort.start_time"],
            with(&|r| r.restriction = cohort(Some(bad), Some(ts(at(2024, 1, 1, 0))))),
        ));
        cases.push((
            vec!["cohort.end_time"],
            with(&|r| r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), Some(bad))),
        ));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}: {:?}", r.calibration_end_time);
        assert_violations(c.export_summaries(req(tenant, r)).await, &fields, &case);
    }

    let export = |who: Uuid, r: ExportSummariesRequest| {
        let mut c = s.interactions();
        async move {
            let mut stream = c.export_summaries(req(who, r)).await?.into_inner();
            let mut out = Vec::new();
            while let Some(m) = stream.message().await? {
                out.extend(m.summaries);
            }
            Ok::<_, Status>(out)
        }
    };
    // No purchase to choose a currency from: FAILED_PRECONDITION.
    assert_code(
        export(Uuid::new_v4(), with(&|r| r.currency_code = String::new())).await,
        Code::FailedPrecondition,
        "another tenant without purchases",
    );
    assert_code(
        export(
            tenant,
            with(&|r| {
                r.currency_code = String::new();
                r.calibration_end_time = Some(hostile::at(YEAR_1, 0));
            }),
        )
        .await,
        Code::FailedPrecondition,
        "calibration end before every purchase",
    );
    // Far past bounds are fine and export nothing; the tenant's own export
    // holds its customer, another tenant's does not.
    assert!(
        export(
            tenant,
            with(&|r| r.calibration_end_time = Some(hostile::at(YEAR_1, 0)))
        )
        .await
        .expect("far past export")
        .is_empty()
    );
    let wide = export(
        tenant,
        with(&|r| {
            r.restriction = cohort(
                Some(hostile::at(YEAR_1, 0)),
                Some(hostile::at(YEAR_9999_END, 0)),
            );
        }),
    )
    .await
    .expect("wide cohort");
    assert_eq!(wide.len(), 1);
    assert_eq!(wide[0].customer_id, customer.to_string());
    assert!(
        export(Uuid::new_v4(), base.clone())
            .await
            .expect("other tenant's export")
            .is_empty()
    );
    assert!(
        export(
            Uuid::new_v4(),
            with(&|r| r.restriction = ids(vec![customer.to_string()]))
        )
        .await
        .expect("other tenant naming our customer")
        .is_empty()
    );
    s.stop().await;
}

#[tokio::test]
async fn the_change_feed_refuses_a_negative_sequence() {
    let s = start().await;
    let mut c = s.interactions();
    for after in [-1, i64::MIN] {
        assert_violations(
            c.watch_changes(WatchChangesRequest {
                after_sequence: after,
                ..Default::default()
            })
            .await,
            &["after_sequence"],
            &after.to_string(),
        );
    }
    // The far end of the feed is a valid (empty, live) position.
    let stream = c
        .watch_changes(WatchChangesRequest {
            after_sequence: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("far cursor");
    drop(stream);
    s.stop().await;
}

// ---------------------------------------------------------------------------
// CampaignService.

#[tokio::test]
async fn create_campaign_refuses_bad_input_and_keeps_hostile_text() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let before = footprint(&s, tenant).await;
    let base = CreateCampaignRequest {
        campaign: Some(Campaign {
            name: "Spring".into(),
            channel: Channel::Email as i32,
            start_time: Some(ts(at(2025, 3, 1, 0))),
            end_time: Some(ts(at(2025, 4, 1, 0))),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut Campaign)| {
        let mut r = base.clone();
        f(r.campaign.as_mut().expect("campaign"));
        r
    };
    let mut cases: Vec<(Vec<&str>, CreateCampaignRequest)> = vec![
        (
            vec!["campaign.name", "campaign.channel"],
            CreateCampaignRequest::default(),
        ),
        (vec!["campaign.name"], with(&|c| c.name = String::new())),
        (vec!["campaign.name"], with(&|c| c.name = " \t ".into())),
        (vec!["campaign.name"], with(&|c| c.name = "n".repeat(201))),
        (vec!["campaign.name"], with(&|c| c.name = "Spring\0".into())),
        (
            vec!["campaign.description"],
            with(&|c| c.description = "d".repeat(2001)),
        ),
        (
            vec!["campaign.description"],
            with(&|c| c.description = "\0".into()),
        ),
        (vec!["campaign.channel"], with(&|c| c.channel = 0)),
        (vec!["campaign.channel"], with(&|c| c.channel = 999)),
        (vec!["campaign.channel"], with(&|c| c.channel = -1)),
        (
            vec!["campaign.end_time"],
            with(&|c| c.end_time = c.start_time),
        ),
        (
            vec!["campaign.end_time"],
            with(&|c| c.end_time = Some(ts(at(2025, 2, 1, 0)))),
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "r".repeat(129),
                ..base.clone()
            },
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "has space".into(),
                ..base.clone()
            },
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "req\0".into(),
                ..base.clone()
            },
        ),
    ];
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            vec!["campaign.target_segment_id"],
            with(&|c| c.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["campaign.start_time"],
            with(&|c| c.start_time = Some(bad)),
        ));
        cases.push((vec!["campaign.end_time"], with(&|c| c.end_time = Some(bad))));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}");
        assert_violations(c.create_campaign(req(tenant, r)).await, &fields, &case);
        assert_eq!(footprint(&s, tenant).await, before, "{case} wrote nothing");
    }

    // Hostile text, far past and far future dates, output-only fields
    // ignored, a hostile (printable) request id.
    let hostile = CreateCampaignRequest {
        campaign: Some(Campaign {
            campaign_id: "../x".into(),
            name: MULTILINE_TEXT.into(),
            description: MULTILINE_TEXT.into(),
            channel: Channel::Partner as i32,
            start_time: Some(hostile::at(YEAR_1, 0)),
            end_time: Some(hostile::at(YEAR_9999_END, 999_999_000)),
            etag: "forged".into(),
            create_time: Some(hostile::at(i64::MAX / 2, -1)),
            ..Default::default()
        }),
        request_id: HOSTILE_KEY.into(),
    };
    let created = c
        .create_campaign(req(tenant, hostile.clone()))
        .await
        .expect("hostile campaign")
        .into_inner()
        .campaign
        .expect("campaign");
    assert_eq!(created.name, MULTILINE_TEXT);
    assert_eq!(created.description, MULTILINE_TEXT);
    assert_eq!(created.start_time, Some(hostile::at(YEAR_1, 0)));
    assert_eq!(
        created.end_time,
        Some(hostile::at(YEAR_9999_END, 999_999_000))
    );
    assert!(Uuid::parse_str(&created.campaign_id).is_ok());
    let got = c
        .get_campaign(req(
            tenant,
            GetCampaignRequest {
                campaign_id: created.campaign_id.clone(),
            },
        ))
        .await
        .expect("read back")
        .into_inner()
        .campaign;
    assert_eq!(got.as_ref(), Some(&created));
    let retry = c
        .create_campaign(req(tenant, hostile))
        .await
        .expect("retry")
        .into_inner()
        .campaign;
    assert_eq!(retry.as_ref(), Some(&created));
    assert_eq!(footprint(&s, tenant).await[2], 1);
    s.stop().await;
}

#[tokio::test]
async fn get_campaign_and_its_report_refuse_bad_ids_windows_and_other_tenants() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let mine = create_campaign(&s, tenant, campaign("Spring")).await;
    for id in BAD_IDS {
        assert_violations(
            c.get_campaign(req(
                tenant,
                GetCampaignRequest {
                    campaign_id: id.into(),
                },
            ))
            .await,
            &["campaign_id"],
            id,
        );
        assert_violations(
            c.get_campaign_report(req(
                tenant,
                GetCampaignReportRequest {
                    campaign_id: id.into(),
                    attribution_window: None,
                },
            ))
            .await,
            &["campaign_id"],
            id,
        );
    }
    for (who, id) in [
        (tenant, Uuid::new_v4().to_string()),
        (Uuid::new_v4(), mine.campaign_id.clone()),
    ] {
        assert_code(
            c.get_campaign(req(
                who,
                GetCampaignRequest {
                    campaign_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
            &id,
        );
        assert_code(
            c.get_campaign_report(req(
                who,
                GetCampaignReportRequest {
                    campaign_id: id.clone(),
                    attribution_window: None,
                },
            ))
            .await,
            Code::NotFound,
            &id,
        );
    }
    let day = 86_400;
    for (seconds, nanos) in [
        (0, 0),
        (-1, 0),
        (0, -1),
        (1, -1),
        (-1, 1),
        (0, 1_000_000_000),
        (0, i32::MIN),
        (365 * day, 1),
        (365 * day + 1, 0),
        (i64::MAX, 0),
        (i64::MIN, 0),
    ] {
        assert_violations(
            c.get_campaign_report(req(
                tenant,
                GetCampaignReportRequest {
                    campaign_id: mine.campaign_id.clone(),
                    attribution_window: Some(prost_types::Duration { seconds, nanos }),
                },
            ))
            .await,
            &["attribution_window"],
            &format!("window {seconds}s {nanos}ns"),
        );
    }
    for (seconds, nanos) in [(365 * day, 0), (0, 1)] {
        let report = c
            .get_campaign_report(req(
                tenant,
                GetCampaignReportRequest {
                    campaign_id: mine.campaign_id.clone(),
                    attribution_window: Some(prost_types::Duration { seconds, nanos }),
                },
            ))
            .await
            .expect("window at the bounds")
            .into_inner()
            .report
            .expect("report");
        assert_eq!(report.sent_count, 0);
        assert_eq!(report.open_rate, None);
    }
    s.stop().await;
}

#[tokio::test]
async fn list_campaigns_refuses_bad_filters_and_forged_page_tokens() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    for n in 0..3 {
        create_campaign(&s, tenant, campaign(&format!("c{n}"))).await;
    }
    let base = ListCampaignsRequest {
        page_size: 1,
        ..Default::default()
    };
    let first = c
        .list_campaigns(req(tenant, base.clone()))
        .await
        .expect("first page")
        .into_inner();
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    let with = |f: &dyn Fn(&mut ListCampaignsRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut cases: Vec<(&str, ListCampaignsRequest)> = vec![
        ("channel", with(&|r| r.channel = 999)),
        ("channel", with(&|r| r.channel = -1)),
        ("page_size", with(&|r| r.page_size = -1)),
        ("page_size", with(&|r| r.page_size = i32::MIN)),
        (
            "page_token",
            with(&|r| r.page_token = "dGhpcyBpcyBub3QgYSB0b2tlbg".into()),
        ),
        ("page_token", with(&|r| r.page_token = "!!!".into())),
        ("page_token", with(&|r| r.page_token = "A".repeat(5000))),
        ("page_token", with(&|r| r.page_token = format!("{token}A"))),
        (
            "page_token",
            with(&|r| r.page_token = token[1..].to_string()),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.channel = Channel::Email as i32;
            }),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.target_segment_id = Uuid::new_v4().to_string();
            }),
        ),
        (
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                r.active_time = Some(ts(at(2024, 1, 1, 0)));
            }),
        ),
    ];
    for pos in [0, token.len() / 2, token.len() - 1] {
        let mut bytes = token.clone().into_bytes();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).expect("ascii token");
        cases.push(("page_token", with(&|r| r.page_token = altered.clone())));
    }
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            "target_segment_id",
            with(&|r| r.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push(("active_time", with(&|r| r.active_time = Some(bad))));
    }
    for (field, r) in cases {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.list_campaigns(req(tenant, r)).await,
            &[field],
            &short(case),
        );
    }
    // Another tenant cannot use the token, nor see the campaigns.
    let stranger = Uuid::new_v4();
    assert_violations(
        c.list_campaigns(req(stranger, with(&|r| r.page_token = token.clone())))
            .await,
        &["page_token"],
        "token of another tenant",
    );
    let theirs = c
        .list_campaigns(req(stranger, ListCampaignsRequest::default()))
        .await
        .expect("other tenant's list")
        .into_inner();
    assert!(theirs.campaigns.is_empty());
    // A ListInteractions token is no ListCampaigns token.
    let customer = Uuid::new_v4();
    for d in 1..=2 {
        record(&s, tenant, purchase(customer, at(2024, 5, d, 0), 1)).await;
    }
    let timeline_token = s
        .interactions()
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("timeline page")
        .into_inner()
        .next_page_token;
    assert!(!timeline_token.is_empty());
    assert_violations(
        c.list_campaigns(req(
            tenant,
            with(&|r| r.page_token = timeline_token.clone()),
        ))
        .await,
        &["page_token"],
        "token of ListInteractions",
    );
    // The genuine token, huge pages and far active times work.
    let second = c
        .list_campaigns(req(tenant, with(&|r| r.page_token = token.clone())))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.campaigns.len(), 1);
    assert_ne!(second.campaigns, first.campaigns);
    let all = c
        .list_campaigns(req(tenant, with(&|r| r.page_size = i32::MAX)))
        .await
        .expect("every campaign")
        .into_inner();
    assert_eq!(all.campaigns.len(), 3);
    for active in [hostile::at(YEAR_1, 0), hostile::at(YEAR_9999_END, 0)] {
        let none = c
            .list_campaigns(req(tenant, with(&|r| r.active_time = Some(active))))
            .await
            .expect("far active time")
            .into_inner();
        assert!(
            none.campaigns.is_empty(),
            "campaigns without dates never match"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn update_campaign_refuses_bad_input_and_changes_nothing() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let current = create_campaign(
        &s,
        tenant,
        Campaign {
            name: "Spring".into(),
            description: "20% off".into(),
            channel: Channel::Email as i32,
            start_time: Some(ts(at(2025, 3, 1, 0))),
            end_time: Some(ts(at(2025, 4, 1, 0))),
            ..Default::default()
        },
    )
    .await;
    let before = footprint(&s, tenant).await;
    let read = || {
        let mut c = s.campaigns();
        let id = current.campaign_id.clone();
        async move {
            c.get_campaign(req(tenant, GetCampaignRequest { campaign_id: id }))
                .await
                .expect("read back")
                .into_inner()
                .campaign
                .expect("campaign")
        }
    };
    let update = |paths: &[&str], f: &dyn Fn(&mut Campaign)| {
        let mut campaign = Campaign {
            campaign_id: current.campaign_id.clone(),
            ..Default::default()
        };
        f(&mut campaign);
        UpdateCampaignRequest {
            campaign: Some(campaign),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        }
    };
    let mut cases: Vec<(Vec<&str>, UpdateCampaignRequest)> = vec![
        (
            vec!["campaign.campaign_id", "update_mask"],
            UpdateCampaignRequest::default(),
        ),
        (
            vec!["update_mask"],
            UpdateCampaignRequest {
                update_mask: None,
                ..update(&["name"], &|c| c.name = "x".into())
            },
        ),
        (vec!["update_mask"], update(&[], &|c| c.name = "x".into())),
        (
            vec!["update_mask.paths[0]"],
            update(&["create_time"], &|_| {}),
        ),
        (vec!["update_mask.paths[0]"], update(&["etag"], &|_| {})),
        (
            vec!["update_mask.paths[0]"],
            update(&["campaign_id"], &|_| {}),
        ),
        (vec!["update_mask.paths[0]"], update(&["Name"], &|_| {})),
        (vec!["update_mask.paths[0]"], update(&["name\0"], &|_| {})),
        (
            vec!["update_mask.paths[0]"],
            update(&[MULTILINE_TEXT], &|_| {}),
        ),
        (
            vec!["update_mask.paths[1]"],
            update(&["name", "name"], &|c| c.name = "x".into()),
        ),
        (vec!["campaign.name"], update(&["name"], &|_| {})),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "   ".into()),
        ),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "n".repeat(201)),
        ),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "Sp\0ring".into()),
        ),
        (
            vec!["campaign.description"],
            update(&["description"], &|c| c.description = "d".repeat(2001)),
        ),
        (
            vec!["campaign.description"],
            update(&["description"], &|c| c.description = "\0".into()),
        ),
        (vec!["campaign.channel"], update(&["channel"], &|_| {})),
        (
            vec!["campaign.channel"],
            update(&["channel"], &|c| c.channel = 999),
        ),
        (
            vec!["campaign.end_time"],
            update(&["end_time"], &|c| c.end_time = Some(ts(at(2025, 2, 1, 0)))),
        ),
        (
            vec!["campaign.end_time"],
            update(&["start_time"], &|c| {
                c.start_time = Some(ts(at(2025, 5, 1, 0)))
            }),
        ),
    ];
    for id in BAD_IDS {
        cases.push((
            vec!["campaign.campaign_id"],
            UpdateCampaignRequest {
                campaign: Some(Campaign {
                    campaign_id: id.into(),
                    name: "x".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
        ));
    }
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            vec!["campaign.target_segment_id"],
            update(&["target_segment_id"], &|c| c.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["campaign.start_time"],
            update(&["start_time"], &|c| c.start_time = Some(bad)),
        ));
        cases.push((
            vec!["campaign.end_time"],
            update(&["end_time"], &|c| c.end_time = Some(bad)),
        ));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}: {r:?}");
        assert_violations(c.update_campaign(req(tenant, r)).await, &fields, &case);
        assert_eq!(read().await, current, "{case}");
    }
    let rename = update(&["name"], &|c| c.name = "Taken over".into());
    let refused: Vec<(Code, Uuid, UpdateCampaignRequest)> = vec![
        (
            Code::NotFound,
            tenant,
            update(&["name"], &|c| {
                c.campaign_id = Uuid::new_v4().to_string();
                c.name = "x".into();
            }),
        ),
        (Code::NotFound, Uuid::new_v4(), rename.clone()),
        (
            Code::Aborted,
            tenant,
            update(&["name"], &|c| {
                c.name = "x".into();
                c.etag = "\"0\"".into();
            }),
        ),
        (
            Code::Aborted,
            tenant,
            update(&["name"], &|c| {
                c.name = "x".into();
                c.etag = MULTILINE_TEXT.into();
            }),
        ),
    ];
    for (code, who, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(c.update_campaign(req(who, r)).await, code, &case);
        assert_eq!(read().await, current, "{case}");
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // A legal update with hostile text and extreme dates is kept as sent.
    let updated = c
        .update_campaign(req(
            tenant,
            update(&["name", "description", "start_time", "end_time"], &|c| {
                c.name = MULTILINE_TEXT.into();
                c.description = MULTILINE_TEXT.into();
                c.start_time = Some(hostile::at(YEAR_1, 0));
                c.end_time = Some(hostile::at(YEAR_9999_END, 0));
                c.etag = current.etag.clone();
            }),
        ))
        .await
        .expect("legal update")
        .into_inner()
        .campaign
        .expect("campaign");
    assert_eq!(updated.name, MULTILINE_TEXT);
    assert_eq!(updated.description, MULTILINE_TEXT);
    assert_eq!(updated.start_time, Some(hostile::at(YEAR_1, 0)));
    assert_eq!(updated.end_time, Some(hostile::at(YEAR_9999_END, 0)));
    assert_eq!(read().await, updated);
    s.stop().await;
}
