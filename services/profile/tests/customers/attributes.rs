//! Attribute definitions and the custom attributes they govern.

use super::*;

pub(crate) async fn define(
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
    .answer()
    .definition
    .unwrap()
}

pub(crate) fn sv(s: &str) -> AttributeValue {
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
    c.create_attribute_definition(CreateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: "tier".into(),
            r#type: AttributeType::Number as i32,
            ..Default::default()
        }),
    })
    .await
    .refused(Code::AlreadyExists);
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
        .answer();
    let names: Vec<_> = list.definitions.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, vec!["stores", "tier"]);
    let rest = c
        .list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: 2,
            page_token: list.next_page_token,
            ..Default::default()
        })
        .await
        .answer();
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
        .answer()
        .definition
        .unwrap();
    assert_eq!(updated.description, "loyalty tier");
    c.update_attribute_definition(UpdateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: "tier".into(),
            description: "again".into(),
            etag: tier.etag.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["description"]),
    })
    .await
    .refused(Code::Aborted);
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
        .answer()
        .definition
        .unwrap();
    assert_eq!(dep.state, AttributeDefinitionState::Deprecated as i32);
    assert!(dep.deprecate_time.is_some());
    let shown = c
        .list_attribute_definitions(ListAttributeDefinitionsRequest::default())
        .await
        .answer();
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
        .answer();
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
        .answer();
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
