//! Customers over real gRPC and PostgreSQL: create, read, update with masks
//! and etags, soft delete, list, search, attribute definitions, tenancy.

mod support;

use prost_types::{FieldMask, Timestamp};
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn create_normalises_and_get_returns_it() {
    let env = start().await;
    let mut c = env.client.clone();
    let mut input = person(" Ana ", "López", "  Ana.Lopez@Example.COM ");
    input.phones = vec![PhoneNumber {
        number: "911 23 45 67".into(),
        primary: false,
        label: "home".into(),
    }];
    input.country_code = "es".into();
    input.locale = "es-es".into();
    input.tags = vec!["VIP".into(), "vip".into(), "b2c".into()];
    input.estimated_category_wallet = Some(Money {
        currency_code: "eur".into(),
        units: 1200,
        nanos: 0,
    });
    input.relationship_stage = 2;
    input.external_identifiers = vec![external("loyalty", " L-1 ")];
    let created = create(&mut c, input).await;
    assert_eq!(created.display_name, "Ana López");
    assert_eq!(created.emails[0].address, "ana.lopez@example.com");
    assert!(created.emails[0].primary);
    assert_eq!(created.phones[0].number, "+34911234567");
    assert_eq!(created.country_code, "ES");
    assert_eq!(created.locale, "es-ES");
    assert_eq!(created.tags, vec!["b2c", "vip"]);
    assert_eq!(created.external_identifiers[0].value, "L-1");
    assert_eq!(
        created
            .estimated_category_wallet
            .as_ref()
            .unwrap()
            .currency_code,
        "EUR"
    );
    assert!(created.stage_set_time.is_some());
    assert_eq!(created.state, CustomerState::Active as i32);
    assert!(!created.etag.is_empty());

    let got = get(&mut c, &created.customer_id).await.unwrap();
    assert!(!got.merged);
    assert_eq!(got.customer.unwrap(), created);

    // The event is on the feed, with the full snapshot.
    let events = env.typed_events("CustomerCreated").await;
    let [profile_event::Event::CustomerCreated(ev)] = events.as_slice() else {
        panic!("one CustomerCreated: {events:?}");
    };
    assert_eq!(ev.origin, CustomerOrigin::Create as i32);
    assert_eq!(ev.customer_id, created.customer_id);
    assert_eq!(ev.customer.as_ref(), Some(&created));

    // Unknown and malformed ids.
    let e = get(&mut c, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = get(&mut c, "nope").await.unwrap_err();
    assert_eq!(violations(&e), vec!["customer_id"]);
}

#[tokio::test]
async fn invalid_input_is_refused_with_every_problem_and_nothing_written() {
    let env = start().await;
    let mut c = env.client.clone();
    let mut bad = person("Ana", "x".repeat(201).as_str(), "not-an-email");
    bad.emails.push(EmailAddress {
        address: "a@x.com".into(),
        primary: true,
        label: String::new(),
    });
    bad.emails.push(EmailAddress {
        address: "A@X.com".into(),
        primary: false,
        label: String::new(),
    });
    bad.phones = vec![PhoneNumber {
        number: "12".into(),
        ..Default::default()
    }];
    bad.country_code = "UK".into();
    bad.locale = "en_GB".into();
    bad.tags = vec!["-no".into()];
    bad.owner_id = "bad owner".into();
    bad.estimated_category_wallet = Some(Money {
        currency_code: "EUX".into(),
        units: -1,
        nanos: 0,
    });
    bad.postal_addresses = vec![PostalAddress {
        postal_code: "x".repeat(30),
        ..Default::default()
    }];
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(bad),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    let fields = violations(&e);
    for expected in [
        "customer.person.family_name",
        "customer.emails[0].address",
        "customer.emails[2].address",
        "customer.phones[0].number",
        "customer.country_code",
        "customer.locale",
        "customer.tags[0]",
        "customer.owner_id",
        "customer.estimated_category_wallet.currency_code",
        "customer.estimated_category_wallet.units",
        "customer.postal_addresses[0].postal_code",
        "customer.postal_addresses[0].country_code",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing in {fields:?}"
        );
    }
    // Kind is required; details must match it.
    let mut org = organization("Acme");
    org.kind = 0;
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(org),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(violations(&e).contains(&"customer.kind".to_string()));
    let mut mismatch = person("Ana", "", "");
    mismatch.kind = CustomerKind::Organization as i32;
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(mismatch),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer.person"]);

    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        0
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.identifiers").await,
        0
    );
    assert_eq!(env.events().await, 0);
}

#[tokio::test]
async fn identifiers_are_unique_and_request_ids_make_creates_idempotent() {
    let env = start().await;
    let mut c = env.client.clone();
    let first = create(&mut c, person("Ana", "López", "ana@x.com")).await;
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(person("Other", "", "ANA@x.com")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let info = e.get_error_details().resource_info().cloned().unwrap();
    assert_eq!(info.resource_name, first.customer_id);

    let req = CreateCustomerRequest {
        customer: Some(person("Bea", "", "bea@x.com")),
        request_id: "req-1".into(),
    };
    let a = c.create_customer(req.clone()).await.unwrap().into_inner();
    let b = c.create_customer(req).await.unwrap().into_inner();
    assert_eq!(
        a.customer.unwrap().customer_id,
        b.customer.unwrap().customer_id
    );
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(person("Carla", "", "carla@x.com")),
            request_id: "req-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["request_id"]);
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        2
    );
}

#[tokio::test]
async fn update_applies_masks_and_refuses_stale_etags() {
    let env = start().await;
    let mut c = env.client.clone();
    let created = create(&mut c, person("Ana", "López", "ana@x.com")).await;
    let events_before = env.events().await;

    let mut change = Customer {
        customer_id: created.customer_id.clone(),
        etag: created.etag.clone(),
        tags: vec!["Gold".into()],
        locale: "en".into(),
        details: Some(customer::Details::Person(PersonDetails {
            given_name: "Anna".into(),
            ..Default::default()
        })),
        emails: vec![
            EmailAddress {
                address: "ana@x.com".into(),
                primary: false,
                label: String::new(),
            },
            EmailAddress {
                address: "anna@y.com".into(),
                primary: true,
                label: "work".into(),
            },
        ],
        ..Default::default()
    };
    let updated = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["tags", "person.given_name", "emails"]),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(updated.tags, vec!["gold"]);
    assert_eq!(updated.locale, "", "locale was not in the mask");
    let p = match updated.details.clone().unwrap() {
        customer::Details::Person(p) => p,
        _ => panic!(),
    };
    assert_eq!(p.given_name, "Anna");
    assert_eq!(p.family_name, "López");
    assert_eq!(updated.emails.len(), 2);
    assert!(updated.emails[1].primary && !updated.emails[0].primary);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(env.events().await, events_before + 1);
    let events = env.typed_events("CustomerUpdated").await;
    let [profile_event::Event::CustomerUpdated(ev)] = events.as_slice() else {
        panic!("one CustomerUpdated: {events:?}");
    };
    assert_eq!(ev.changed_fields, vec!["person", "emails", "tags"]);
    assert_eq!(ev.customer.as_ref(), Some(&updated));

    // The old etag is stale now: ABORTED, nothing changes.
    change.tags = vec!["silver".into()];
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["tags"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let now = get(&mut c, &created.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap();
    assert_eq!(now.tags, vec!["gold"]);

    // Nothing changed: no event, same etag.
    change.etag = now.etag.clone();
    change.tags = vec!["gold".into()];
    let same = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["tags"]),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(same.etag, now.etag);
    assert_eq!(env.events().await, events_before + 1);

    // Bad masks.
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["kind", "organization.website", "nope"]),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "update_mask.paths[0]",
            "update_mask.paths[1]",
            "update_mask.paths[2]"
        ]
    );
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["update_mask"]);
    // An invalid value writes nothing.
    change.country_code = "XX".into();
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["country_code"]),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer.country_code"]);
    // An e-mail of another customer: ALREADY_EXISTS.
    let other = create(&mut c, person("Bea", "", "bea@x.com")).await;
    change.emails = vec![EmailAddress {
        address: "bea@x.com".into(),
        ..Default::default()
    }];
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["emails"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(
        e.get_error_details().resource_info().unwrap().resource_name,
        other.customer_id
    );
}

#[tokio::test]
async fn delete_and_undelete() {
    let env = start().await;
    let mut c = env.client.clone();
    let a = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let e = c
        .delete_customer(DeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: "\"999\"".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let d = c
        .delete_customer(DeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: a.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(d.state, CustomerState::Deleted as i32);
    assert!(d.delete_time.is_some());
    // Still readable, hidden from lists unless asked, and not updatable.
    assert_eq!(
        get(&mut c, &a.customer_id)
            .await
            .unwrap()
            .customer
            .unwrap()
            .state,
        CustomerState::Deleted as i32
    );
    let list = c
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.customers.is_empty());
    let list = c
        .list_customers(ListCustomersRequest {
            show_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.customers.len(), 1);
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: a.customer_id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Its identifiers stay reserved.
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(person("Other", "", "ana@x.com")),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    // Deleting again returns it unchanged.
    let again = c
        .delete_customer(DeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(again.etag, d.etag);
    let u = c
        .undelete_customer(UndeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: d.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(u.state, CustomerState::Active as i32);
    assert!(u.delete_time.is_none());
    let types = env.event_types().await;
    assert_eq!(
        types,
        vec!["CustomerCreated", "CustomerDeleted", "CustomerUndeleted"]
    );
}

#[tokio::test]
async fn batch_get_reports_missing_and_merged_ids() {
    let env = start().await;
    let mut c = env.client.clone();
    let a = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let b = create(&mut c, person("Ana", "", "ana2@x.com")).await;
    c.merge_customers(MergeCustomersRequest {
        survivor_customer_id: a.customer_id.clone(),
        merged_customer_id: b.customer_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let unknown = uuid::Uuid::new_v4().to_string();
    let r = c
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![
                b.customer_id.clone(),
                unknown.clone(),
                a.customer_id.clone(),
                a.customer_id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.customers.len(), 1);
    assert_eq!(r.customers[0].customer_id, a.customer_id);
    assert_eq!(r.missing_customer_ids, vec![unknown]);
    assert_eq!(r.merged_customer_ids[&b.customer_id], a.customer_id);
    let e = c
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec!["x".into(), a.customer_id.clone(), "y".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer_ids[0]", "customer_ids[2]"]);
    let e = c
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer_ids"]);
}

async fn define(
    c: &mut Client,
    name: &str,
    t: AttributeType,
    required: bool,
) -> AttributeDefinition {
    c.create_attribute_definition(CreateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: name.into(),
            r#type: t as i32,
            required,
            description: format!("the {name}"),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .definition
    .unwrap()
}

fn sv(s: &str) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::StringValue(s.into())),
    }
}

#[tokio::test]
async fn attribute_definitions_govern_custom_attributes() {
    let env = start().await;
    let mut c = env.client.clone();
    let tier = define(&mut c, "tier", AttributeType::String, false).await;
    assert_eq!(tier.state, AttributeDefinitionState::Active as i32);
    define(&mut c, "vip", AttributeType::Boolean, true).await;
    define(&mut c, "stores", AttributeType::StringList, false).await;
    let e = c
        .create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                r#type: AttributeType::Number as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = c
        .create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "Bad Name".into(),
                r#type: 0,
                description: "x".repeat(1001),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "definition.name",
            "definition.type",
            "definition.description"
        ]
    );

    // Values are checked against the definitions, one violation per problem.
    let mut bad = person("Ana", "", "ana@x.com");
    bad.attributes.insert(
        "tier".into(),
        AttributeValue {
            value: Some(attribute_value::Value::NumberValue(1.0)),
        },
    );
    bad.attributes.insert("unknown".into(), sv("x"));
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(bad),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "customer.attributes[tier]",
            "customer.attributes[unknown]",
            "customer.attributes[vip]"
        ]
    );
    let mut good = person("Ana", "", "ana@x.com");
    good.attributes.insert("tier".into(), sv("gold"));
    good.attributes.insert(
        "vip".into(),
        AttributeValue {
            value: Some(attribute_value::Value::BoolValue(true)),
        },
    );
    good.attributes.insert(
        "stores".into(),
        AttributeValue {
            value: Some(attribute_value::Value::StringListValue(StringList {
                values: vec!["s1".into(), "s2".into()],
            })),
        },
    );
    let a = create(&mut c, good).await;
    assert_eq!(a.attributes["tier"], sv("gold"));

    // List by name; update the description with an etag; deprecate.
    let list = c
        .list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.definitions.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, vec!["stores", "tier"]);
    let rest = c
        .list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: 2,
            page_token: list.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.definitions[0].name, "vip");
    assert!(rest.next_page_token.is_empty());
    let updated = c
        .update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                description: "loyalty tier".into(),
                etag: tier.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(updated.description, "loyalty tier");
    let e = c
        .update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                description: "again".into(),
                etag: tier.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let e = c
        .update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                ..Default::default()
            }),
            update_mask: mask(&["required"]),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["update_mask.paths[0]"]);
    let dep = c
        .deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
            name: "tier".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .definition
        .unwrap();
    assert_eq!(dep.state, AttributeDefinitionState::Deprecated as i32);
    assert!(dep.deprecate_time.is_some());
    let shown = c
        .list_attribute_definitions(ListAttributeDefinitionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(shown.definitions.iter().all(|d| d.name != "tier"));

    // A deprecated definition keeps existing values but takes no new ones.
    let mut keep = Customer {
        customer_id: a.customer_id.clone(),
        attributes: a.attributes.clone(),
        ..Default::default()
    };
    c.update_customer(UpdateCustomerRequest {
        customer: Some(keep.clone()),
        update_mask: mask(&["attributes"]),
    })
    .await
    .unwrap();
    keep.attributes.insert("tier".into(), sv("platinum"));
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(keep.clone()),
            update_mask: mask(&["attributes.tier"]),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer.attributes[tier]"]);
    // A required attribute cannot be removed.
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: a.customer_id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["attributes.vip"]),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["customer.attributes[vip]"]);

    // Attribute filters in ListCustomers; a list filter matches membership.
    let found = c
        .list_customers(ListCustomersRequest {
            attribute_filters: vec![AttributeFilter {
                name: "stores".into(),
                value: Some(sv("s2")),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.customers.len(), 1);
    let none = c
        .list_customers(ListCustomersRequest {
            attribute_filters: vec![AttributeFilter {
                name: "vip".into(),
                value: Some(AttributeValue {
                    value: Some(attribute_value::Value::BoolValue(false)),
                }),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.customers.is_empty());
    let e = c
        .list_customers(ListCustomersRequest {
            attribute_filters: vec![AttributeFilter {
                name: "nope".into(),
                value: Some(sv("x")),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["attribute_filters[0].name"]);
}

#[tokio::test]
async fn list_filters_orders_and_pages() {
    let env = start().await;
    let mut c = env.client.clone();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut p = person(&format!("P{i}"), "", &format!("p{i}@x.com"));
        if i % 2 == 0 {
            p.tags = vec!["even".into()];
            p.relationship_stage = 3;
            p.owner_id = "mgr-1".into();
        }
        if i == 6 {
            p.country_code = "PT".into();
        }
        ids.push(create(&mut c, p).await.customer_id);
    }
    let org = create(&mut c, organization("Acme S.L.")).await;

    // Pages of 3, oldest first, then with a token.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_customers(ListCustomersRequest {
                page_size: 3,
                page_token: token.clone(),
                kind: CustomerKind::Person as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.customers.iter().map(|c| c.customer_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);

    // A token replayed with other filters is refused.
    let page = c
        .list_customers(ListCustomersRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = c
        .list_customers(ListCustomersRequest {
            page_size: 2,
            page_token: page.next_page_token.clone(),
            tags: vec!["even".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);
    let e = c
        .list_customers(ListCustomersRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_size"]);

    // Filters.
    let evens = c
        .list_customers(ListCustomersRequest {
            tags: vec!["EVEN".into()],
            relationship_stage: 3,
            owner_id: "mgr-1".into(),
            order_by: CustomerOrder::CreateTimeDesc as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = evens
        .customers
        .iter()
        .map(|c| c.customer_id.clone())
        .collect();
    assert_eq!(
        got,
        vec![
            ids[6].clone(),
            ids[4].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
    let pt = c
        .list_customers(ListCustomersRequest {
            country_code: "pt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pt.customers.len(), 1);
    let orgs = c
        .list_customers(ListCustomersRequest {
            kind: CustomerKind::Organization as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(orgs.customers[0].customer_id, org.customer_id);
    // Updated since, most recently updated first.
    let since = get(&mut c, &org.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap()
        .update_time;
    c.update_customer(UpdateCustomerRequest {
        customer: Some(Customer {
            customer_id: ids[1].clone(),
            tags: vec!["touched".into()],
            ..Default::default()
        }),
        update_mask: mask(&["tags"]),
    })
    .await
    .unwrap();
    let recent = c
        .list_customers(ListCustomersRequest {
            updated_since: since,
            order_by: CustomerOrder::UpdateTimeDesc as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = recent
        .customers
        .iter()
        .map(|c| c.customer_id.clone())
        .collect();
    assert_eq!(got, vec![ids[1].clone(), org.customer_id.clone()]);
    let e = c
        .list_customers(ListCustomersRequest {
            country_code: "XX".into(),
            updated_since: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["country_code", "updated_since"]);
}

#[tokio::test]
async fn search_finds_identifiers_exactly_and_names_fuzzily() {
    let env = start().await;
    let mut c = env.client.clone();
    let mut ana = person("Ana", "Lopez Garcia", "ana.lopez@example.com");
    ana.phones = vec![PhoneNumber {
        number: "+34 911 23 45 67".into(),
        ..Default::default()
    }];
    ana.external_identifiers = vec![external("loyalty", "CARD-0042")];
    let ana = create(&mut c, ana).await;
    let anna = create(&mut c, person("Anna", "Lopes Garcia", "anna@example.com")).await;
    create(&mut c, person("Zoe", "Martín", "zoe@example.com")).await;
    let acme = create(&mut c, organization("Acme Iberia S.L.")).await;

    let search = |q: &str, region: &str| SearchCustomersRequest {
        query: q.into(),
        default_country_code: region.into(),
        ..Default::default()
    };
    let r = c
        .search_customers(search(" Ana.Lopez@Example.com ", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.results[0].customer.as_ref().unwrap().customer_id,
        ana.customer_id
    );
    assert_eq!(r.results[0].score, 1.0);
    assert_eq!(r.results[0].match_kind, SearchMatchKind::Email as i32);
    let r = c
        .search_customers(search("911 234 567", "ES"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].match_kind, SearchMatchKind::Phone as i32);
    assert_eq!(
        r.results[0].customer.as_ref().unwrap().customer_id,
        ana.customer_id
    );
    let r = c
        .search_customers(search("CARD-0042", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].match_kind, SearchMatchKind::ExternalId as i32);

    let r = c
        .search_customers(search("Ana Lopez Garcia", ""))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = r
        .results
        .iter()
        .map(|h| h.customer.as_ref().unwrap().customer_id.clone())
        .collect();
    assert_eq!(ids[0], ana.customer_id, "{r:?}");
    assert!(ids.contains(&anna.customer_id));
    assert!(
        r.results
            .iter()
            .all(|h| h.match_kind == SearchMatchKind::Name as i32)
    );
    assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(r.results.iter().all(|h| h.score >= 0.3));

    let r = c
        .search_customers(SearchCustomersRequest {
            query: "acme iberia".into(),
            kind: CustomerKind::Organization as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results.len(), 1);
    assert_eq!(
        r.results[0].customer.as_ref().unwrap().customer_id,
        acme.customer_id
    );

    // Pages of one, in the same order.
    let first = c
        .search_customers(SearchCustomersRequest {
            query: "Ana Lopez Garcia".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = c
        .search_customers(SearchCustomersRequest {
            query: "Ana Lopez Garcia".into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.results[0].customer.as_ref().unwrap().customer_id,
        ids[1]
    );
    let e = c.search_customers(search("  ", "")).await.unwrap_err();
    assert_eq!(violations(&e), vec!["query"]);
    let e = c.search_customers(search("x", "QQ")).await.unwrap_err();
    assert_eq!(violations(&e), vec!["default_country_code"]);
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(uuid::Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "López", "ana@x.com")).await;
    let bea = create(&mut a, person("Bea", "López", "bea@x.com")).await;

    let e = get(&mut b, &ana.customer_id).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let list = b
        .list_customers(ListCustomersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.customers.is_empty());
    let found = b
        .search_customers(SearchCustomersRequest {
            query: "ana@x.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.results.is_empty());
    let found = b
        .search_customers(SearchCustomersRequest {
            query: "Ana López".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(found.results.is_empty());
    let e = b
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: ana.customer_id.clone(),
                tags: vec!["stolen".into()],
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = b
        .merge_customers(MergeCustomersRequest {
            survivor_customer_id: ana.customer_id.clone(),
            merged_customer_id: bea.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = b
        .erase_customer(EraseCustomerRequest {
            customer_id: ana.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The same e-mail is free in another tenant, and resolves to its own customer.
    let other = create(&mut b, person("Ana", "", "ana@x.com")).await;
    assert_ne!(other.customer_id, ana.customer_id);
    let r = resolve(&mut b, vec![email("ana@x.com")]).await;
    match r.result.unwrap() {
        resolve_identity_response::Result::Resolved(r) => {
            assert_eq!(r.customer.unwrap().customer_id, other.customer_id)
        }
        other => panic!("{other:?}"),
    }
    // Unchanged for its owner.
    assert!(
        get(&mut a, &ana.customer_id)
            .await
            .unwrap()
            .customer
            .unwrap()
            .tags
            .is_empty()
    );

    // No tenant at all: UNAUTHENTICATED.
    let mut none = env.client_for(None);
    let e = get(&mut none, &ana.customer_id).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}
