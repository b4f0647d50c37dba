//! Listing, searching, and tenancy.

use super::*;

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
            .answer();
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
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(pt.customers.len(), 1);
    let orgs = c
        .list_customers(ListCustomersRequest {
            kind: CustomerKind::Organization as i32,
            ..Default::default()
        })
        .await
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(
        r.results[0].customer.as_ref().unwrap().customer_id,
        ana.customer_id
    );
    assert_eq!(r.results[0].score, 1.0);
    assert_eq!(r.results[0].match_kind, SearchMatchKind::Email as i32);
    let r = c
        .search_customers(search("911 234 567", "ES"))
        .await
        .answer();
    assert_eq!(r.results[0].match_kind, SearchMatchKind::Phone as i32);
    assert_eq!(
        r.results[0].customer.as_ref().unwrap().customer_id,
        ana.customer_id
    );
    let r = c.search_customers(search("CARD-0042", "")).await.answer();
    assert_eq!(r.results[0].match_kind, SearchMatchKind::ExternalId as i32);

    let r = c
        .search_customers(search("Ana Lopez Garcia", ""))
        .await
        .answer();
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
        .answer();
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
        .answer();
    let second = c
        .search_customers(SearchCustomersRequest {
            query: "Ana Lopez Garcia".into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .answer();
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
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "López", "ana@x.com")).await;
    let bea = create(&mut a, person("Bea", "López", "bea@x.com")).await;

    get(&mut b, &ana.customer_id).await.refused(Code::NotFound);
    let list = b
        .list_customers(ListCustomersRequest::default())
        .await
        .answer();
    assert!(list.customers.is_empty());
    let found = b
        .search_customers(SearchCustomersRequest {
            query: "ana@x.com".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert!(found.results.is_empty());
    let found = b
        .search_customers(SearchCustomersRequest {
            query: "Ana López".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert!(found.results.is_empty());
    b.update_customer(UpdateCustomerRequest {
        customer: Some(Customer {
            customer_id: ana.customer_id.clone(),
            tags: vec!["stolen".into()],
            ..Default::default()
        }),
        update_mask: mask(&["tags"]),
    })
    .await
    .refused(Code::NotFound);
    b.merge_customers(MergeCustomersRequest {
        survivor_customer_id: ana.customer_id.clone(),
        merged_customer_id: bea.customer_id.clone(),
        ..Default::default()
    })
    .await
    .refused(Code::NotFound);
    b.erase_customer(EraseCustomerRequest {
        customer_id: ana.customer_id.clone(),
        ..Default::default()
    })
    .await
    .refused(Code::NotFound);
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
    get(&mut none, &ana.customer_id)
        .await
        .refused(Code::Unauthenticated);
}
