//! Creating, updating, deleting and reading customers.

use super::*;

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
    get(&mut c, &uuid::Uuid::new_v4().to_string())
        .await
        .refused(Code::NotFound);
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
        .refused(Code::AlreadyExists);
    let info = e.get_error_details().resource_info().cloned().unwrap();
    assert_eq!(info.resource_name, first.customer_id);

    let req = CreateCustomerRequest {
        customer: Some(person("Bea", "", "bea@x.com")),
        request_id: "req-1".into(),
    };
    let a = c.create_customer(req.clone()).await.answer();
    let b = c.create_customer(req).await.answer();
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
        .answer()
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
    c.update_customer(UpdateCustomerRequest {
        customer: Some(change.clone()),
        update_mask: mask(&["tags"]),
    })
    .await
    .refused(Code::Aborted);
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
        .answer()
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
        .refused(Code::AlreadyExists);
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
    c.delete_customer(DeleteCustomerRequest {
        customer_id: a.customer_id.clone(),
        etag: "\"999\"".into(),
    })
    .await
    .refused(Code::Aborted);
    let d = c
        .delete_customer(DeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: a.etag.clone(),
        })
        .await
        .answer()
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
        .answer();
    assert!(list.customers.is_empty());
    let list = c
        .list_customers(ListCustomersRequest {
            show_deleted: true,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(list.customers.len(), 1);
    c.update_customer(UpdateCustomerRequest {
        customer: Some(Customer {
            customer_id: a.customer_id.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["tags"]),
    })
    .await
    .refused(Code::FailedPrecondition);
    // Its identifiers stay reserved.
    c.create_customer(CreateCustomerRequest {
        customer: Some(person("Other", "", "ana@x.com")),
        request_id: String::new(),
    })
    .await
    .refused(Code::AlreadyExists);
    // Deleting again returns it unchanged.
    let again = c
        .delete_customer(DeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: String::new(),
        })
        .await
        .answer()
        .customer
        .unwrap();
    assert_eq!(again.etag, d.etag);
    let u = c
        .undelete_customer(UndeleteCustomerRequest {
            customer_id: a.customer_id.clone(),
            etag: d.etag.clone(),
        })
        .await
        .answer()
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
        .answer();
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
