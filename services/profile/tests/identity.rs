//! Identity over real gRPC and PostgreSQL: resolution (under concurrency),
//! duplicates, merge and unmerge, and erasure.

mod support;

use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;

fn resolved(r: ResolveIdentityResponse) -> ResolvedCustomer {
    match r.result.expect("result") {
        resolve_identity_response::Result::Resolved(r) => r,
        other => panic!("expected a resolution, got {other:?}"),
    }
}

#[tokio::test]
async fn resolve_finds_creates_attaches_and_reports_conflicts() {
    let env = start().await;
    let mut c = env.client.clone();
    // Unknown identifiers create a customer from the traits.
    let first = c
        .resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email(" Ana@X.com "), phone("911234567")],
            traits: Some(Customer {
                country_code: "ES".into(),
                details: Some(customer::Details::Person(PersonDetails {
                    given_name: "Ana".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            lookup_only: false,
        })
        .await
        .answer();
    let first = resolved(first);
    assert!(first.created);
    let ana = first.customer.unwrap();
    assert_eq!(ana.display_name, "Ana");
    assert_eq!(ana.emails[0].address, "ana@x.com");
    assert!(ana.emails[0].primary);
    assert_eq!(ana.phones[0].number, "+34911234567");

    // Known identifiers find it; new ones are attached.
    let again =
        resolved(resolve(&mut c, vec![email("ana@x.com"), external("loyalty", "L1")]).await);
    assert!(!again.created);
    assert_eq!(
        again.customer.as_ref().unwrap().customer_id,
        ana.customer_id
    );
    assert_eq!(again.attached_identifiers, vec![external("loyalty", "L1")]);
    assert_eq!(
        again.customer.unwrap().external_identifiers,
        vec![external("loyalty", "L1")]
    );

    // Lookup only: never creates.
    c.resolve_identity(ResolveIdentityRequest {
        identifiers: vec![email("nobody@x.com")],
        traits: None,
        lookup_only: true,
    })
    .await
    .refused(Code::NotFound);

    // Identifiers of two customers: a conflict, nothing changed.
    let bea = create(&mut c, person("Bea", "", "bea@x.com")).await;
    let events = env.events().await;
    let r = resolve(
        &mut c,
        vec![email("bea@x.com"), email("ana@x.com"), email("new@x.com")],
    )
    .await;
    match r.result.unwrap() {
        resolve_identity_response::Result::Conflict(conflict) => {
            assert_eq!(conflict.matches.len(), 2);
            assert_eq!(conflict.matches[0].customer_id, bea.customer_id);
            assert_eq!(conflict.matches[1].customer_id, ana.customer_id);
            assert_eq!(conflict.matches[1].identifiers, vec![email("ana@x.com")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(env.events().await, events);
    let e = c
        .resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("bad"), phone("123"), external("", "x")],
            traits: Some(Customer {
                emails: vec![EmailAddress {
                    address: "x@y.com".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            lookup_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec![
            "traits.emails",
            "identifiers[0].value",
            "identifiers[1].value",
            "identifiers[2].system"
        ]
    );
    let types = env.event_types().await;
    assert_eq!(
        types,
        vec!["CustomerCreated", "CustomerUpdated", "CustomerCreated"]
    );
    let created = env.typed_events("CustomerCreated").await;
    let Some(profile_event::Event::CustomerCreated(first)) = created.first() else {
        panic!("a CustomerCreated: {created:?}");
    };
    assert_eq!(first.origin, CustomerOrigin::Resolve as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_resolutions_of_a_new_email_create_one_customer() {
    let env = start().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut c = env.client.clone();
        tasks.push(tokio::spawn(async move {
            resolved(resolve(&mut c, vec![email("rush@x.com")]).await)
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(r.customer.unwrap().customer_id);
        if r.created {
            created += 1;
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        1
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.outbox WHERE event_type = 'CustomerCreated'")
            .await,
        1
    );
}

#[tokio::test]
async fn duplicates_are_found_scored_and_can_be_marked_distinct() {
    let env = start().await;
    let mut c = env.client.clone();
    let address = |postal: &str| PostalAddress {
        locality: "Madrid".into(),
        postal_code: postal.into(),
        country_code: "ES".into(),
        ..Default::default()
    };
    let mut a = person("Ana", "Lopez", "ana.lopez+shop@gmail.com");
    a.postal_addresses = vec![address("28004")];
    let a = create(&mut c, a).await;
    let mut b = person("Ana", "Lopes", "analopez@googlemail.com");
    b.postal_addresses = vec![address("28004")];
    let b = create(&mut c, b).await;
    let mut d = person("Zoe", "Martin", "zoe@x.com");
    d.postal_addresses = vec![address("28004")];
    d.external_identifiers = vec![external("erp", "ABC-00123")];
    let d = create(&mut c, d).await;
    let mut e = person("Zeta", "Other", "zeta@x.com");
    e.external_identifiers = vec![external("erp", "abc123")];
    let e = create(&mut c, e).await;

    let found = c
        .find_duplicates(FindDuplicatesRequest::default())
        .await
        .answer();
    assert_eq!(found.candidates.len(), 2, "{found:?}");
    let pair = |x: &Customer, y: &Customer| {
        let (f, s) = if x.customer_id < y.customer_id {
            (x.customer_id.clone(), y.customer_id.clone())
        } else {
            (y.customer_id.clone(), x.customer_id.clone())
        };
        (f, s)
    };
    let ab = found
        .candidates
        .iter()
        .find(|c| (c.first_customer_id.clone(), c.second_customer_id.clone()) == pair(&a, &b))
        .expect("a and b");
    let kinds: Vec<i32> = ab.reasons.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![
            DuplicateReasonKind::SameEmail as i32,
            DuplicateReasonKind::SimilarNameSamePostalCode as i32,
            DuplicateReasonKind::SimilarNameSameCity as i32
        ]
    );
    assert!(ab.score > 0.9 && ab.score <= 1.0);
    let de = found
        .candidates
        .iter()
        .find(|c| (c.first_customer_id.clone(), c.second_customer_id.clone()) == pair(&d, &e))
        .expect("d and e");
    assert_eq!(
        de.reasons[0].kind,
        DuplicateReasonKind::SameExternalId as i32
    );
    assert!(found.candidates[0].score >= found.candidates[1].score);

    // One customer's pairs, pages of one.
    let only = c
        .find_duplicates(FindDuplicatesRequest {
            customer_id: a.customer_id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(only.candidates.len(), 1);
    assert!(only.next_page_token.is_empty());
    let paged = c
        .find_duplicates(FindDuplicatesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .answer();
    let next = c
        .find_duplicates(FindDuplicatesRequest {
            page_size: 1,
            page_token: paged.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(next.candidates[0], found.candidates[1]);

    // Marked distinct: never proposed again, and the mark is idempotent.
    let m1 = c
        .mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: b.customer_id.clone(),
            second_customer_id: a.customer_id.clone(),
        })
        .await
        .answer();
    let m2 = c
        .mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: a.customer_id.clone(),
            second_customer_id: b.customer_id.clone(),
        })
        .await
        .answer();
    assert_eq!(m1, m2);
    assert!(m1.first_customer_id < m1.second_customer_id);
    let found = c
        .find_duplicates(FindDuplicatesRequest::default())
        .await
        .answer();
    assert_eq!(found.candidates.len(), 1);
    // ResolveIdentity never joins them.
    let r = resolve(
        &mut c,
        vec![
            email("ana.lopez+shop@gmail.com"),
            email("analopez@googlemail.com"),
        ],
    )
    .await;
    assert!(matches!(
        r.result.unwrap(),
        resolve_identity_response::Result::Conflict(_)
    ));
    let err = c
        .find_duplicates(FindDuplicatesRequest {
            min_score: 1.5,
            customer_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["customer_id", "min_score"]);
    let err = c
        .mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: a.customer_id.clone(),
            second_customer_id: a.customer_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec!["second_customer_id"]);
}

#[tokio::test]
async fn merge_then_unmerge_restores_the_merged_customer_exactly() {
    let env = start().await;
    let mut c = env.client.clone();
    let def = AttributeDefinition {
        name: "tier".into(),
        r#type: AttributeType::String as i32,
        ..Default::default()
    };
    c.create_attribute_definition(CreateAttributeDefinitionRequest {
        definition: Some(def),
    })
    .await
    .unwrap();
    let mut s = person("Ana", "", "ana@x.com");
    s.tags = vec!["vip".into()];
    let survivor = create(&mut c, s).await;
    let mut m = person("Ana", "López", "ana.lopez@y.com");
    m.phones = vec![PhoneNumber {
        number: "+34911234567".into(),
        ..Default::default()
    }];
    m.locale = "es".into();
    m.tags = vec!["b2c".into()];
    m.attributes.insert(
        "tier".into(),
        AttributeValue {
            value: Some(attribute_value::Value::StringValue("gold".into())),
        },
    );
    let merged = create(&mut c, m).await;
    let org = create(&mut c, organization("Acme")).await;
    c.link_contact(LinkContactRequest {
        link: Some(ContactLink {
            person_customer_id: merged.customer_id.clone(),
            organization_customer_id: org.customer_id.clone(),
            role: ContactRole::Buyer as i32,
            job_title: "Buyer".into(),
            primary: true,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let consent = |id: &str, status: ConsentStatus| SetConsentRequest {
        customer_id: id.into(),
        channel: ConsentChannel::Email as i32,
        purpose: ConsentPurpose::Marketing as i32,
        status: status as i32,
        source: "web-form".into(),
        ..Default::default()
    };
    c.set_consent(consent(&survivor.customer_id, ConsentStatus::Granted))
        .await
        .unwrap();
    c.set_consent(consent(&merged.customer_id, ConsentStatus::Withdrawn))
        .await
        .unwrap();
    let merged_before = get(&mut c, &merged.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap();
    let links_before = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: merged.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer()
        .links;
    let history_before = c
        .list_consent_history(ListConsentHistoryRequest {
            customer_id: merged.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer()
        .records;

    // A stale survivor etag is refused.
    c.merge_customers(MergeCustomersRequest {
        survivor_customer_id: survivor.customer_id.clone(),
        merged_customer_id: merged.customer_id.clone(),
        survivor_etag: survivor.etag.clone(),
        request_id: String::new(),
    })
    .await
    .refused(Code::Aborted);

    let result = c
        .merge_customers(MergeCustomersRequest {
            survivor_customer_id: survivor.customer_id.clone(),
            merged_customer_id: merged.customer_id.clone(),
            request_id: "merge-1".into(),
            ..Default::default()
        })
        .await
        .answer();
    let after = result.survivor.unwrap();
    let emails: Vec<_> = after.emails.iter().map(|e| e.address.clone()).collect();
    assert_eq!(emails, vec!["ana@x.com", "ana.lopez@y.com"]);
    assert!(after.emails[0].primary && !after.emails[1].primary);
    assert_eq!(after.phones[0].number, "+34911234567");
    assert_eq!(after.tags, vec!["b2c", "vip"]);
    assert_eq!(after.locale, "es");
    assert_eq!(after.display_name, "Ana", "the survivor's value wins");
    assert!(after.attributes.contains_key("tier"));
    assert_eq!(after.merged_customer_ids, vec![merged.customer_id.clone()]);
    // The most restrictive consent wins.
    let check = c
        .check_consent(CheckConsentRequest {
            customer_id: survivor.customer_id.clone(),
            channel: ConsentChannel::Email as i32,
            purpose: ConsentPurpose::Marketing as i32,
        })
        .await
        .answer();
    assert!(!check.allowed);
    assert_eq!(check.deciding_record.unwrap().source, "rapport:merge");

    // The merged id resolves to the survivor.
    let got = get(&mut c, &merged.customer_id).await.unwrap();
    assert!(got.merged);
    assert_eq!(got.customer.unwrap().customer_id, survivor.customer_id);
    let contacts = c
        .list_contacts(ListContactsRequest {
            organization_customer_id: org.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer()
        .links;
    assert_eq!(contacts[0].person_customer_id, survivor.customer_id);
    // Repeating the merge (same request id, or none) changes nothing.
    let again = c
        .merge_customers(MergeCustomersRequest {
            survivor_customer_id: survivor.customer_id.clone(),
            merged_customer_id: merged.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(again.survivor.unwrap().etag, after.etag);
    // Exact-record methods refuse the merged id.
    let e = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: merged.customer_id.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tags".into()],
            }),
        })
        .await
        .refused(Code::FailedPrecondition);
    assert!(e.message().contains(&survivor.customer_id));
    let types = env.event_types().await;
    assert!(types.contains(&"CustomerMerged".to_string()));

    // Unmerge: the merged customer comes back as it was.
    let un = c
        .unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: merged.customer_id.clone(),
            request_id: String::new(),
        })
        .await
        .answer();
    let restored = un.restored.unwrap();
    let back = un.survivor.unwrap();
    let strip = |c: &Customer| {
        let mut c = c.clone();
        c.etag.clear();
        c.update_time = None;
        c
    };
    assert_eq!(strip(&restored), strip(&merged_before));
    assert_eq!(back.emails.len(), 1);
    assert!(back.phones.is_empty());
    assert_eq!(back.tags, vec!["vip"]);
    assert_eq!(back.locale, "");
    assert!(back.attributes.is_empty());
    assert!(back.merged_customer_ids.is_empty());
    // The survivor keeps its current (restrictive) consent.
    let check = c
        .check_consent(CheckConsentRequest {
            customer_id: survivor.customer_id.clone(),
            channel: ConsentChannel::Email as i32,
            purpose: ConsentPurpose::Marketing as i32,
        })
        .await
        .answer();
    assert!(!check.allowed);
    let links_after = c
        .list_organizations(ListOrganizationsRequest {
            person_customer_id: merged.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer()
        .links;
    assert_eq!(links_after, links_before);
    let history_after = c
        .list_consent_history(ListConsentHistoryRequest {
            customer_id: merged.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer()
        .records;
    assert_eq!(history_after, history_before);
    let got = get(&mut c, &merged.customer_id).await.unwrap();
    assert!(!got.merged);
    c.unmerge_customers(UnmergeCustomersRequest {
        merged_customer_id: merged.customer_id.clone(),
        request_id: String::new(),
    })
    .await
    .refused(Code::FailedPrecondition);
    assert!(
        env.event_types()
            .await
            .contains(&"CustomerUnmerged".to_string())
    );

    // Different kinds cannot merge.
    c.merge_customers(MergeCustomersRequest {
        survivor_customer_id: survivor.customer_id.clone(),
        merged_customer_id: org.customer_id.clone(),
        ..Default::default()
    })
    .await
    .refused(Code::FailedPrecondition);
}

#[tokio::test]
async fn erase_leaves_no_personal_data_anywhere() {
    let env = start().await;
    let mut c = env.client.clone();
    let mut victim = person("Wilhelmina", "Quackenbush", "wilhelmina.q@example.org");
    victim.phones = vec![PhoneNumber {
        number: "+34 699 88 77 66".into(),
        ..Default::default()
    }];
    victim.postal_addresses = vec![PostalAddress {
        address_lines: vec!["Calle Mayor 1".into()],
        locality: "Madrid".into(),
        ..Default::default()
    }];
    let victim = create(&mut c, victim).await;
    let twin = create(
        &mut c,
        person("Wilhelmina", "Q.", "w.quackenbush@example.org"),
    )
    .await;
    let org = create(&mut c, organization("Acme")).await;
    let bystander = create(&mut c, person("Bea", "", "bea@example.org")).await;
    // Leave traces everywhere: updates, consents, links, a merge, feed events.
    c.update_customer(UpdateCustomerRequest {
        customer: Some(Customer {
            customer_id: victim.customer_id.clone(),
            tags: vec!["vip".into()],
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["tags".into()],
        }),
    })
    .await
    .unwrap();
    c.set_consent(SetConsentRequest {
        customer_id: victim.customer_id.clone(),
        channel: ConsentChannel::Email as i32,
        purpose: ConsentPurpose::Marketing as i32,
        status: ConsentStatus::Granted as i32,
        source: "web-form".into(),
        evidence: "form v2".into(),
        request_id: "consent-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.link_contact(LinkContactRequest {
        link: Some(ContactLink {
            person_customer_id: victim.customer_id.clone(),
            organization_customer_id: org.customer_id.clone(),
            role: ContactRole::DecisionMaker as i32,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    c.merge_customers(MergeCustomersRequest {
        survivor_customer_id: victim.customer_id.clone(),
        merged_customer_id: twin.customer_id.clone(),
        request_id: "merge-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let erased = c
        .erase_customer(EraseCustomerRequest {
            customer_id: victim.customer_id.clone(),
            request_reference: "TICKET-42".into(),
        })
        .await
        .answer();
    assert_eq!(
        erased.erased_merged_customer_ids,
        vec![twin.customer_id.clone()]
    );
    // Again: succeeds, does nothing.
    let again = c
        .erase_customer(EraseCustomerRequest {
            customer_id: victim.customer_id.clone(),
            request_reference: String::new(),
        })
        .await
        .answer();
    assert_eq!(again.erase_time, erased.erase_time);

    // Every row of every table of the schema, and every payload, as text.
    let mut db = env.db().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'profile' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(
        tables.contains(&"outbox".to_string()) && tables.len() >= 9,
        "{tables:?}"
    );
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM profile.{table} t"
        )))
        .fetch_all(&mut db)
        .await
        .unwrap();
        for row in rows {
            for secret in [
                "Wilhelmina",
                "Quackenbush",
                "wilhelmina.q@example.org",
                "w.quackenbush@example.org",
                "699887766",
                "Calle Mayor",
            ] {
                assert!(!row.contains(secret), "{table} still holds {secret}: {row}");
            }
        }
    }
    // The tombstone stays; the id is NOT_FOUND; the identifiers are released.
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers WHERE status = 'erased'")
            .await,
        2
    );
    get(&mut c, &victim.customer_id)
        .await
        .refused(Code::NotFound);
    get(&mut c, &twin.customer_id).await.refused(Code::NotFound);
    let fresh = create(&mut c, person("New", "", "wilhelmina.q@example.org")).await;
    assert_ne!(fresh.customer_id, victim.customer_id);
    // CustomerErased for both; the earlier events are scrubbed.
    let erased_events = env
        .scalar("SELECT count(*) FROM profile.outbox WHERE event_type = 'CustomerErased'")
        .await;
    assert_eq!(erased_events, 2);
    // Every earlier event of the two is reduced to its id, in the typed
    // form consumers decode; the erasure events say nothing else.
    let gone = [victim.customer_id.clone(), twin.customer_id.clone()];
    for kind in [
        "CustomerCreated",
        "CustomerUpdated",
        "CustomerMerged",
        "ConsentChanged",
        "ContactLinked",
    ] {
        let events = env.typed_events(kind).await;
        assert!(!events.is_empty(), "{kind}");
        for ev in events {
            match ev {
                profile_event::Event::Redacted(r) => {
                    assert_eq!(r.reason, RedactionReason::Erased as i32, "{kind}");
                    assert!(gone.contains(&r.subject_id), "{r:?}");
                }
                profile_event::Event::CustomerCreated(c) if !gone.contains(&c.customer_id) => {}
                profile_event::Event::CustomerUpdated(c) if !gone.contains(&c.customer_id) => {}
                other => panic!("{kind} not redacted: {other:?}"),
            }
        }
    }
    for ev in env.typed_events("CustomerErased").await {
        let profile_event::Event::CustomerErased(e) = ev else {
            panic!("CustomerErased: {ev:?}");
        };
        assert!(e.erase_time.is_some());
    }
    // No event from before the erasure holds any of the erased data, byte for
    // byte (the new customer above reuses the released e-mail address).
    let mut db = env.feed_db().await;
    for secret in [
        "Wilhelmina",
        "Quackenbush",
        "wilhelmina.q@example.org",
        "w.quackenbush@example.org",
        "699887766",
        "Calle Mayor",
    ] {
        let holding: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM profile.outbox_events
              WHERE position(convert_to($1, 'UTF8') in event) > 0
                AND sequence < (SELECT max(sequence) FROM profile.outbox_events WHERE event_type = 'CustomerErased')",
        )
        .bind(secret)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(holding, 0, "an event still holds {secret}");
    }
    // Others are untouched.
    assert!(get(&mut c, &bystander.customer_id).await.is_ok());
    let contacts = c
        .list_contacts(ListContactsRequest {
            organization_customer_id: org.customer_id.clone(),
            ..Default::default()
        })
        .await
        .answer();
    assert!(contacts.links.is_empty());
    c.erase_customer(EraseCustomerRequest {
        customer_id: uuid::Uuid::new_v4().to_string(),
        request_reference: String::new(),
    })
    .await
    .refused(Code::NotFound);
}
