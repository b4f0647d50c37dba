//! CreateCustomer and UpdateCustomer.

use super::*;

#[tokio::test]
async fn create_customer_refuses_every_bad_value_and_writes_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let events = env.events().await;

    // Missing customer, missing or unknown kind, details of the other kind.
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: None,
            request_id: String::new(),
        })
        .await,
        "customer",
    );
    for kind in [0, 3, 999, -1, i32::MAX] {
        let mut p = person("Ana", "", "");
        p.kind = kind;
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(p),
                request_id: String::new(),
            })
            .await,
            "customer.kind",
        );
    }
    let mut wrong = organization("Acme");
    wrong.kind = CustomerKind::Person as i32;
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: Some(wrong),
            request_id: String::new(),
        })
        .await,
        "customer.organization",
    );

    for bad in bad_customer_values() {
        let mut input = base(bad.kind);
        (bad.set)(&mut input);
        let field = format!("customer.{}", bad.field);
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(input),
                request_id: String::new(),
            })
            .await,
            &field,
        );
    }

    // So many problems, or such long client-chosen names, that listing them
    // all would not fit in the response headers: still INVALID_ARGUMENT,
    // with the first problems named.
    let mut many = person("Ana", "", "");
    for i in 0..100 {
        many.attributes
            .insert(format!("{}{i:02}", "x".repeat(62)), string_value("x"));
    }
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(many),
            request_id: String::new(),
        })
        .await
        .expect_err("unknown attributes");
    let fields = violations(&e);
    assert!(!fields.is_empty(), "{e:?}");
    assert!(fields[0].starts_with("customer.attributes["), "{fields:?}");
    let mut huge = person("Ana", "", "");
    huge.attributes
        .insert("k".repeat(200_000), string_value("x"));
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(huge),
            request_id: String::new(),
        })
        .await
        .expect_err("an unknown, huge attribute name");
    assert!(
        violations(&e)
            .iter()
            .any(|f| f.starts_with("customer.attributes[kkk") && f.len() <= 256),
        "{e:?}"
    );

    // Request ids: too long, control characters.
    for rid in ["x".repeat(65), NUL.to_string(), "a\nb".to_string()] {
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(person("Ana", "", "")),
                request_id: rid,
            })
            .await,
            "request_id",
        );
    }

    assert!(everyone(&mut c).await.is_empty(), "nothing was created");
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.identifiers").await,
        0
    );
    assert_eq!(env.events().await, events, "no event for a refused create");
}

#[tokio::test]
async fn update_customer_refuses_every_bad_value_and_changes_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let mut ana = person("Ana", "López", "ana@example.com");
    ana.attributes.insert("notes".into(), string_value("kept"));
    let ana = create(&mut c, ana).await;
    let acme = create(&mut c, organization("Acme Iberia S.L.")).await;
    let events = env.events().await;

    for bad in bad_customer_values() {
        let before = match bad.kind {
            CustomerKind::Organization => &acme,
            _ => &ana,
        };
        let mut input = before.clone();
        (bad.set)(&mut input);
        let field = format!("customer.{}", bad.field);
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(input.clone()),
                update_mask: mask(&[bad.path]),
            })
            .await,
            &field,
        );
        // "*" carries the same value: refused too.
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(input),
                update_mask: mask(&["*"]),
            })
            .await,
            &field,
        );
        unchanged(&mut c, before).await;
    }

    // Missing customer, missing or bad mask, immutable and unknown paths.
    refused(
        c.update_customer(UpdateCustomerRequest {
            customer: None,
            update_mask: mask(&["tags"]),
        })
        .await,
        "customer",
    );
    for m in [None, mask(&[])] {
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(ana.clone()),
                update_mask: m,
            })
            .await,
            "update_mask",
        );
    }
    for path in [
        "kind",
        "customer_id",
        "state",
        "etag",
        "consents",
        "merged_customer_ids",
        "create_time",
        "nope",
        "",
        "organization.legal_name",
        "person.nope",
        "attributes.",
        "tags\0",
        "1 OR 1=1",
        "../x",
    ] {
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(ana.clone()),
                update_mask: mask(&[path]),
            })
            .await,
            "update_mask.paths[0]",
        );
    }
    // A valid path next to a bad one: the whole update is refused.
    let mut tagged = ana.clone();
    tagged.tags = vec!["gold".into()];
    refused(
        c.update_customer(UpdateCustomerRequest {
            customer: Some(tagged),
            update_mask: mask(&["tags", "kind"]),
        })
        .await,
        "update_mask.paths[1]",
    );
    unchanged(&mut c, &ana).await;
    unchanged(&mut c, &acme).await;
    assert_eq!(env.events().await, events, "no event for a refused update");
}

#[tokio::test]
async fn update_delete_undelete_refuse_bad_unknown_and_foreign_ids() {
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "López", "ana@example.com")).await;
    let events = env.events().await;

    for raw in BAD_IDS {
        refused(
            a.update_customer(UpdateCustomerRequest {
                customer: Some(Customer {
                    customer_id: raw.into(),
                    tags: vec!["x".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["tags"]),
            })
            .await,
            "customer.customer_id",
        );
        refused(
            a.delete_customer(DeleteCustomerRequest {
                customer_id: raw.into(),
                etag: String::new(),
            })
            .await,
            "customer_id",
        );
        refused(
            a.undelete_customer(UndeleteCustomerRequest {
                customer_id: raw.into(),
                etag: String::new(),
            })
            .await,
            "customer_id",
        );
    }
    // Unknown in the tenant, and the other tenant's customer: NOT_FOUND,
    // exactly alike, never the customer.
    for (mut client, id) in [
        (a.clone(), Uuid::new_v4().to_string()),
        (b.clone(), ana.customer_id.clone()),
        (b.clone(), ana.customer_id.to_uppercase()),
    ] {
        failed(
            client
                .update_customer(UpdateCustomerRequest {
                    customer: Some(Customer {
                        customer_id: id.clone(),
                        tags: vec!["stolen".into()],
                        ..Default::default()
                    }),
                    update_mask: mask(&["tags"]),
                })
                .await,
            Code::NotFound,
        );
        failed(
            client
                .delete_customer(DeleteCustomerRequest {
                    customer_id: id.clone(),
                    etag: String::new(),
                })
                .await,
            Code::NotFound,
        );
        failed(
            client
                .undelete_customer(UndeleteCustomerRequest {
                    customer_id: id.clone(),
                    etag: String::new(),
                })
                .await,
            Code::NotFound,
        );
        failed(
            get(&mut client, &id).await.map(Response::new),
            Code::NotFound,
        );
    }
    // Stale or forged etags: ABORTED.
    for etag in ["\"999\"", "1 OR 1=1", NUL, "\"1\"\0"] {
        failed(
            a.update_customer(UpdateCustomerRequest {
                customer: Some(Customer {
                    customer_id: ana.customer_id.clone(),
                    etag: etag.into(),
                    tags: vec!["x".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["tags"]),
            })
            .await,
            Code::Aborted,
        );
        failed(
            a.delete_customer(DeleteCustomerRequest {
                customer_id: ana.customer_id.clone(),
                etag: etag.into(),
            })
            .await,
            Code::Aborted,
        );
    }
    unchanged(&mut a, &ana).await;
    assert_eq!(env.events().await, events);
    // The other tenant still sees nothing.
    assert!(everyone(&mut b).await.is_empty());
    // A deleted customer refuses updates with FAILED_PRECONDITION, unchanged.
    let deleted = a
        .delete_customer(DeleteCustomerRequest {
            customer_id: ana.customer_id.clone(),
            etag: ana.etag.clone(),
        })
        .await
        .expect_answer("delete")
        .customer
        .expect("customer");
    failed(
        a.update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: ana.customer_id.clone(),
                tags: vec!["x".into()],
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
        .await,
        Code::FailedPrecondition,
    );
    // Undelete with a stale etag: ABORTED, still deleted.
    failed(
        a.undelete_customer(UndeleteCustomerRequest {
            customer_id: ana.customer_id.clone(),
            etag: ana.etag.clone(),
        })
        .await,
        Code::Aborted,
    );
    unchanged(&mut a, &deleted).await;
}

#[tokio::test]
async fn hostile_text_is_stored_and_returned_byte_for_byte() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;

    let mut p = person(TEXT, TEXT, "o'brien%_+x@example.com");
    p.display_name = TEXT.into();
    p.emails[0].label = HOSTILE32.into();
    p.phones = vec![phone_entry("+34 911 23 45 67", HOSTILE32)];
    p.postal_addresses = vec![PostalAddress {
        label: HOSTILE32.into(),
        address_lines: vec![TEXT.into(), "ß 😀 \\".into()],
        locality: TEXT.into(),
        administrative_area: TEXT.into(),
        postal_code: "'%_\\ß😀-1".into(),
        country_code: String::new(),
    }];
    p.external_identifiers = vec![external("loyalty", TEXT)];
    p.attributes.insert("notes".into(), string_value(TEXT));
    p.attributes.insert(
        "stores".into(),
        list_value(vec![TEXT.into(), String::new(), "😀".into()]),
    );
    // Extreme but valid numbers and instants round-trip too.
    p.attributes.insert("score".into(), number_value(f64::MAX));
    p.attributes
        .insert("seen".into(), time_value(at(YEAR_1, 0)));
    p.estimated_category_wallet = money("EUR", i64::MAX, 999_999_999);
    p.relationship_stage = 5;
    let first = CreateCustomerRequest {
        customer: Some(p),
        request_id: TEXT.into(),
    };
    let created = c
        .create_customer(first.clone())
        .await
        .expect_answer("hostile text is valid text")
        .customer
        .expect("customer");
    let got = current(&mut c, &created.customer_id).await;
    assert_eq!(got, created);
    assert_eq!(got.display_name, TEXT);
    let person = match got.details.as_ref() {
        Some(customer::Details::Person(p)) => p.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(person.given_name, TEXT);
    assert_eq!(person.family_name, TEXT);
    assert_eq!(got.emails[0].address, "o'brien%_+x@example.com");
    assert_eq!(got.emails[0].label, HOSTILE32);
    assert_eq!(got.phones[0].label, HOSTILE32);
    let a = &got.postal_addresses[0];
    assert_eq!(a.label, HOSTILE32);
    assert_eq!(a.address_lines, vec![TEXT.to_string(), "ß 😀 \\".into()]);
    assert_eq!(a.locality, TEXT);
    assert_eq!(a.administrative_area, TEXT);
    assert_eq!(a.postal_code, "'%_\\ß😀-1".to_uppercase());
    assert_eq!(got.external_identifiers[0].value, TEXT);
    assert_eq!(got.attributes["notes"], string_value(TEXT));
    assert_eq!(
        got.attributes["stores"],
        list_value(vec![TEXT.into(), String::new(), "😀".into()])
    );
    assert_eq!(got.attributes["score"], number_value(f64::MAX));
    assert_eq!(got.attributes["seen"], time_value(at(YEAR_1, 0)));
    assert_eq!(
        got.estimated_category_wallet,
        money("EUR", i64::MAX, 999_999_999)
    );

    // The hostile request_id is an idempotency key like any other: the same
    // request again is the first result, another request with it is refused.
    let retried = c
        .create_customer(first)
        .await
        .expect_answer("a retry")
        .customer
        .expect("customer");
    assert_eq!(retried, created);
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: Some(person_with("Someone Else")),
            request_id: TEXT.into(),
        })
        .await,
        "request_id",
    );
    assert_eq!(everyone(&mut c).await.len(), 1);

    // An organisation's free text.
    let mut org = organization(TEXT);
    org_mut(&mut org).industry = TEXT.into();
    org_mut(&mut org).website = "https://acme.example/a'b?q=%27;--&x=ß😀".into();
    let acme = create(&mut c, org).await;
    match current(&mut c, &acme.customer_id).await.details {
        Some(customer::Details::Organization(o)) => {
            assert_eq!(o.legal_name, TEXT);
            assert_eq!(o.industry, TEXT);
            assert_eq!(o.website, "https://acme.example/a'b?q=%27;--&x=ß😀");
        }
        other => panic!("{other:?}"),
    }

    // Updating to hostile text keeps it too.
    let updated = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: created.customer_id.clone(),
                display_name: format!("{TEXT} 2"),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .expect_answer("update")
        .customer
        .expect("customer");
    assert_eq!(updated.display_name, format!("{TEXT} 2"));

    // Filters and search with metacharacters match literally, never broadly.
    let found = filtered(&mut c, "notes", string_value(TEXT)).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].customer_id, created.customer_id);
    let found = filtered(&mut c, "stores", string_value(TEXT)).await;
    assert_eq!(found.len(), 1);
    for wildcard in ["%", "_", "%%", "' OR '1'='1", "\\", "*"] {
        let none = filtered(&mut c, "notes", string_value(wildcard)).await;
        assert!(none.is_empty(), "{wildcard:?} matched {none:?}");
        let none = c
            .search_customers(SearchCustomersRequest {
                query: wildcard.into(),
                ..Default::default()
            })
            .await
            .expect_answer("search");
        assert!(none.results.is_empty(), "{wildcard:?} found {none:?}");
    }
    let hit = c
        .search_customers(SearchCustomersRequest {
            query: TEXT.into(),
            ..Default::default()
        })
        .await
        .expect_answer("search");
    // The exact external identifier ranks first (score 1, like the identical
    // legal name of the organisation, ties by id).
    let exact: Vec<_> = hit
        .results
        .iter()
        .filter(|h| h.match_kind == SearchMatchKind::ExternalId as i32)
        .map(|h| h.customer.as_ref().expect("customer").customer_id.clone())
        .collect();
    assert_eq!(exact, vec![created.customer_id.clone()]);
    assert!(hit.results.iter().all(|h| h.score <= 1.0 && h.score >= 0.3));
    // ResolveIdentity finds it by the hostile external value.
    let r = resolve(&mut c, vec![external("loyalty", TEXT)]).await;
    match r.result.expect("result") {
        resolve_identity_response::Result::Resolved(r) => {
            assert!(!r.created);
            assert_eq!(
                r.customer.expect("customer").customer_id,
                created.customer_id
            );
        }
        other => panic!("{other:?}"),
    }
    // The tables are all still there.
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        2
    );
}

#[tokio::test]
async fn extreme_numbers_and_instants_round_trip_exactly() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    // Values near the ends of f64 and of the Timestamp range: stored in
    // jsonb, which writes every digit back, they must read back exactly (a
    // customer that cannot be read back would break every list it is in).
    let numbers = [
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        0.1 + 0.2,
        1e300,
        123_456_789.123_456_79,
        9_007_199_254_740_993.0,
    ];
    let instants = [
        at(YEAR_1, 0),
        at(YEAR_9999_END, 999_999_000),
        at(-1, 999_999_000),
        at(0, 0),
    ];
    for (i, n) in numbers.iter().enumerate() {
        let mut p = person(&format!("N{i}"), "", "");
        p.attributes.insert("score".into(), number_value(*n));
        p.attributes
            .insert("seen".into(), time_value(instants[i % instants.len()]));
        let created = create(&mut c, p).await;
        let got = current(&mut c, &created.customer_id).await;
        assert_eq!(got.attributes["score"], number_value(*n), "{n:e}");
        assert_eq!(
            got.attributes["seen"],
            time_value(instants[i % instants.len()])
        );
        // And an equality filter finds exactly it.
        let found = filtered(&mut c, "score", number_value(*n)).await;
        let ids: Vec<_> = found.iter().map(|c| &c.customer_id).collect();
        assert_eq!(ids, vec![&created.customer_id], "{n:e}");
    }
    assert_eq!(everyone(&mut c).await.len(), numbers.len());
}

pub(crate) fn person_with(name: &str) -> Customer {
    let mut p = person(name, "", "");
    p.display_name = name.into();
    p
}
