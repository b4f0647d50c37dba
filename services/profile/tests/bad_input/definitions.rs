//! Attribute definitions.

use super::*;

pub(crate) async fn definitions(c: &mut Client) -> Vec<AttributeDefinition> {
    c.list_attribute_definitions(ListAttributeDefinitionsRequest {
        page_size: 1000,
        show_deprecated: true,
        ..Default::default()
    })
    .await
    .expect_answer("definitions")
    .definitions
}

#[tokio::test]
async fn attribute_definitions_refuse_bad_names_types_descriptions_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    let tier = a
        .create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                r#type: AttributeType::String as i32,
                description: TEXT.into(),
                ..Default::default()
            }),
        })
        .await
        .expect_answer("a hostile description is valid")
        .definition
        .expect("definition");
    assert_eq!(tier.description, TEXT);
    define(&mut a, "vip", AttributeType::Boolean).await;
    define(&mut a, "only_a", AttributeType::String).await;
    define(&mut b, "tier", AttributeType::Number).await;
    define(&mut b, "vip", AttributeType::Boolean).await;
    define(&mut b, "only_b", AttributeType::String).await;
    let before = definitions(&mut a).await;
    let before_b = definitions(&mut b).await;

    // CreateAttributeDefinition.
    refused(
        a.create_attribute_definition(CreateAttributeDefinitionRequest { definition: None })
            .await,
        "definition",
    );
    let def = |name: &str, t: i32, description: &str| CreateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: name.into(),
            r#type: t,
            description: description.into(),
            ..Default::default()
        }),
    };
    let string = AttributeType::String as i32;
    for name in [
        "",
        "Tier",
        "1tier",
        "_tier",
        "tier-2",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        "ß",
        &"a".repeat(65),
    ] {
        refused(
            a.create_attribute_definition(def(name, string, "")).await,
            "definition.name",
        );
    }
    for t in [0, 6, 999, -1] {
        refused(
            a.create_attribute_definition(def("fresh", t, "")).await,
            "definition.type",
        );
    }
    for d in ["x".repeat(1001), NUL.to_string()] {
        refused(
            a.create_attribute_definition(def("fresh", string, &d))
                .await,
            "definition.description",
        );
    }
    failed(
        a.create_attribute_definition(def("tier", string, "")).await,
        Code::AlreadyExists,
    );

    // UpdateAttributeDefinition.
    refused(
        a.update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: None,
            update_mask: mask(&["description"]),
        })
        .await,
        "definition",
    );
    let update = |name: &str, description: &str, etag: &str, m: Option<FieldMask>| {
        UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: name.into(),
                description: description.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: m,
        }
    };
    let desc = || mask(&["description"]);
    for name in [
        "",
        "   ",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        &"a".repeat(65),
        &"a".repeat(100_000),
    ] {
        refused(
            a.update_attribute_definition(update(name, "x", "", desc()))
                .await,
            "definition.name",
        );
    }
    for m in [None, mask(&[])] {
        refused(
            a.update_attribute_definition(update("tier", "x", "", m))
                .await,
            "update_mask",
        );
    }
    for path in ["required", "type", "name", "state", "", "description\0"] {
        refused(
            a.update_attribute_definition(update("tier", "x", "", mask(&[path])))
                .await,
            "update_mask.paths[0]",
        );
    }
    for d in ["x".repeat(1001), NUL.to_string()] {
        refused(
            a.update_attribute_definition(update("tier", &d, "", desc()))
                .await,
            "definition.description",
        );
    }
    failed(
        a.update_attribute_definition(update("nope", "x", "", desc()))
            .await,
        Code::NotFound,
    );
    for etag in ["\"999\"", NUL, "1 OR 1=1"] {
        failed(
            a.update_attribute_definition(update("tier", "x", etag, desc()))
                .await,
            Code::Aborted,
        );
    }

    // DeprecateAttributeDefinition.
    for name in [
        "",
        "   ",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        &"a".repeat(100_000),
    ] {
        refused(
            a.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
                name: name.into(),
            })
            .await,
            "name",
        );
    }
    failed(
        a.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
    );
    // A name only the other tenant has: NOT_FOUND, both ways.
    for (mut c, name) in [(a.clone(), "only_b"), (b.clone(), "only_a")] {
        failed(
            c.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
                name: name.into(),
            })
            .await,
            Code::NotFound,
        );
        failed(
            c.update_attribute_definition(update(name, "stolen", "", desc()))
                .await,
            Code::NotFound,
        );
    }
    assert_eq!(definitions(&mut a).await, before, "nothing changed");
    assert_eq!(definitions(&mut b).await, before_b, "nothing changed");

    // ListAttributeDefinitions.
    refused(
        a.list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    let page = |c: &mut Client, deprecated: bool, token: String| {
        let mut c = c.clone();
        async move {
            c.list_attribute_definitions(ListAttributeDefinitionsRequest {
                page_size: 1,
                page_token: token,
                show_deprecated: deprecated,
            })
            .await
        }
    };
    let genuine = page(&mut a, false, String::new())
        .await
        .expect_answer("page")
        .next_page_token;
    let foreign = page(&mut b, false, String::new())
        .await
        .expect_answer("page")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(page(&mut a, false, token).await, "page_token");
    }
    refused(page(&mut a, true, genuine.clone()).await, "page_token");
    let rest = page(&mut a, false, genuine).await.expect_answer("genuine");
    assert_eq!(rest.definitions.len(), 1);
    assert_eq!(rest.definitions[0].name, "tier");
    // The update with a hostile description keeps it byte for byte.
    let updated = a
        .update_attribute_definition(update("tier", &format!("{TEXT}!"), &tier.etag, desc()))
        .await
        .expect_answer("update")
        .definition
        .expect("definition");
    assert_eq!(updated.description, format!("{TEXT}!"));
}

/// The identifier sets ResolveIdentity refuses, with the field it names.
pub(crate) fn bad_identifier_sets() -> Vec<(Vec<Identifier>, &'static str)> {
    let one = |i: Identifier, f: &'static str| (vec![i], f);
    vec![
        (vec![], "identifiers"),
        (
            (0..21).map(|i| email(&format!("e{i}@x.com"))).collect(),
            "identifiers",
        ),
        one(email(""), "identifiers[0].value"),
        one(email(NUL), "identifiers[0].value"),
        one(email("1 OR 1=1"), "identifiers[0].value"),
        one(phone("+1-800-FLOWERS"), "identifiers[0].value"),
        one(external("", "L-1"), "identifiers[0].system"),
        one(external("loyalty", NUL), "identifiers[0].value"),
        one(
            Identifier {
                kind: 999,
                system: String::new(),
                value: "ana@x.com".into(),
            },
            "identifiers[0].kind",
        ),
    ]
}

#[tokio::test]
async fn resolve_identities_refuses_bad_sets_alone_and_bounds_the_call() {
    let env = start().await;
    let mut c = env.client.clone();
    refused(
        c.resolve_identities(ResolveIdentitiesRequest { requests: vec![] })
            .await,
        "requests",
    );
    refused(
        c.resolve_identities(ResolveIdentitiesRequest {
            requests: (0..1001)
                .map(|n| ResolveIdentityRequest {
                    identifiers: vec![email(&format!("n{n}@x.com"))],
                    ..Default::default()
                })
                .collect(),
        })
        .await,
        "requests",
    );
    assert_eq!(env.events().await, 0);
    // Every bad set beside one good one, with bad traits too: each bad set
    // is refused with the field ResolveIdentity names; the good one lands.
    let mut sets: Vec<(ResolveIdentityRequest, Option<&str>)> = bad_identifier_sets()
        .into_iter()
        .map(|(ids, f)| {
            (
                ResolveIdentityRequest {
                    identifiers: ids,
                    ..Default::default()
                },
                Some(f),
            )
        })
        .collect();
    sets.push((
        ResolveIdentityRequest {
            identifiers: vec![email("t@x.com")],
            traits: Some(Customer {
                display_name: NUL.into(),
                ..Default::default()
            }),
            lookup_only: false,
        },
        Some("traits.display_name"),
    ));
    sets.push((
        ResolveIdentityRequest {
            identifiers: vec![email("good@x.com")],
            ..Default::default()
        },
        None,
    ));
    let answer = c
        .resolve_identities(ResolveIdentitiesRequest {
            requests: sets.iter().map(|(r, _)| r.clone()).collect(),
        })
        .await
        .answer();
    assert_eq!(answer.results.len(), sets.len());
    for ((_, field), r) in sets.iter().zip(&answer.results) {
        match (field, &r.result) {
            (Some(f), Some(resolve_identities_result::Result::Refused(x))) => {
                assert_eq!(x.code, Code::InvalidArgument as i32, "{f}: {x:?}");
                assert!(
                    x.field_violations.iter().any(|v| v.field == *f),
                    "{f}: {x:?}"
                );
            }
            (None, Some(resolve_identities_result::Result::Resolved(c))) => assert!(c.created),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        1
    );
}

#[tokio::test]
async fn import_customers_refuses_every_bad_value_per_item_and_writes_only_the_good() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let mut items = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for bad in bad_customer_values() {
        let mut input = base(bad.kind);
        (bad.set)(&mut input);
        if input.emails.is_empty()
            && input.phones.is_empty()
            && input.external_identifiers.is_empty()
        {
            input
                .emails
                .push(email_entry(&format!("item{}@x.com", items.len()), ""));
        }
        expected.push(format!("customer.{}", bad.field));
        items.push(ImportCustomerItem {
            customer: Some(input),
            ..Default::default()
        });
    }
    // Missing customer, unknown kind, no identifier, identifier paths in the
    // mask, a bad request_id.
    let mut no_kind = person("Ana", "", "k@x.com");
    no_kind.kind = 999;
    let mut no_ids = person("Ana", "", "");
    no_ids.emails.clear();
    for (item, field) in [
        (ImportCustomerItem::default(), "customer.kind"),
        (
            ImportCustomerItem {
                customer: Some(no_kind),
                ..Default::default()
            },
            "customer.kind",
        ),
        (
            ImportCustomerItem {
                customer: Some(no_ids),
                ..Default::default()
            },
            "customer",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "m@x.com")),
                update_mask: mask(&["phones"]),
                ..Default::default()
            },
            "update_mask.paths[0]",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "r@x.com")),
                request_id: "x".repeat(65),
                ..Default::default()
            },
            "request_id",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "n@x.com")),
                request_id: NUL.into(),
                ..Default::default()
            },
            "request_id",
        ),
    ] {
        items.push(item);
        expected.push(field.to_string());
    }
    let bad_count = items.len();
    items.push(ImportCustomerItem {
        customer: Some(person(TEXT, TEXT, "good@x.com")),
        request_id: TEXT.chars().take(20).collect(),
        ..Default::default()
    });
    let messages: Vec<ImportCustomersRequest> = items
        .chunks(7)
        .map(|c| ImportCustomersRequest { items: c.to_vec() })
        .collect();
    let answer = c
        .import_customers(futures::stream::iter(messages))
        .await
        .answer();
    assert_eq!(answer.created_count, 1, "{answer:?}");
    assert_eq!(answer.rejected_count as usize, bad_count);
    for (n, field) in expected.iter().enumerate() {
        let r = &answer.rejections[n];
        assert_eq!(r.index as usize, n, "{r:?}");
        assert_eq!(r.reason, ImportRejectionReason::Invalid as i32);
        assert!(
            r.field_violations.iter().any(|v| &v.field == field),
            "item {n}: expected {field}, got {r:?}"
        );
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        1
    );
    let all = everyone(&mut c).await;
    let Some(customer::Details::Person(p)) = &all[0].details else {
        panic!("{all:?}");
    };
    assert_eq!(p.given_name, TEXT, "stored byte for byte");
}
