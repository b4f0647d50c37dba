//! ListCustomers and SearchCustomers.

use super::*;

#[tokio::test]
async fn list_customers_refuses_bad_filters_sizes_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    define_all(&mut a).await;
    for i in 0..3 {
        create(&mut a, person(&format!("P{i}"), "", &format!("p{i}@x.com"))).await;
    }
    create(&mut b, person("Other", "", "other@x.com")).await;
    create(&mut b, person("Other", "", "other2@x.com")).await;

    let case = |f: &dyn Fn(&mut ListCustomersRequest)| with_default(f);
    let mut cases: Vec<(ListCustomersRequest, &str)> = vec![
        (case(&|r| r.page_size = -1), "page_size"),
        (case(&|r| r.page_size = i32::MIN), "page_size"),
        (case(&|r| r.kind = 999), "kind"),
        (case(&|r| r.kind = -1), "kind"),
        (case(&|r| r.relationship_stage = 999), "relationship_stage"),
        (case(&|r| r.order_by = 999), "order_by"),
        (case(&|r| r.order_by = -1), "order_by"),
        (
            case(&|r| r.tags = (0..11).map(|i| format!("t{i}")).collect()),
            "tags",
        ),
        (case(&|r| r.tags = vec![NUL.into()]), "tags[0]"),
        (case(&|r| r.tags = vec![String::new()]), "tags[0]"),
        (case(&|r| r.tags = vec![TEXT.into()]), "tags[0]"),
        (case(&|r| r.country_code = NUL.into()), "country_code"),
        (case(&|r| r.country_code = "XX".into()), "country_code"),
        (case(&|r| r.owner_id = NUL.into()), "owner_id"),
        (case(&|r| r.owner_id = "1 OR 1=1".into()), "owner_id"),
        (
            case(&|r| {
                r.attribute_filters = (0..11)
                    .map(|_| AttributeFilter {
                        name: "notes".into(),
                        value: Some(string_value("x")),
                    })
                    .collect()
            }),
            "attribute_filters",
        ),
        (
            case(&|r| r.attribute_filters = filter("no\0tes", Some(string_value("x")))),
            "attribute_filters[0].name",
        ),
    ];
    for (name, value) in [
        ("notes", None),
        ("notes", Some(string_value(NUL))),
        ("stores", Some(string_value(NUL))),
        ("score", Some(number_value(f64::NAN))),
        ("score", Some(number_value(f64::NEG_INFINITY))),
        ("seen", Some(time_value(at(0, -1)))),
        ("vip", Some(string_value("true"))),
    ] {
        let filters = filter(name, value);
        cases.push((
            case(&|r| r.attribute_filters = filters.clone()),
            "attribute_filters[0].value",
        ));
    }
    for (req, field) in cases {
        refused(a.list_customers(req).await, field);
    }
    for t in invalid_times() {
        refused(
            a.list_customers(ListCustomersRequest {
                updated_since: Some(t),
                ..Default::default()
            })
            .await,
            "updated_since",
        );
    }
    // The extremes of the range are valid: everything since year 1, nothing
    // since the end of year 9999; a huge page size is capped.
    let all = a
        .list_customers(ListCustomersRequest {
            updated_since: Some(at(YEAR_1, 0)),
            page_size: i32::MAX,
            ..Default::default()
        })
        .await
        .expect_answer("year 1");
    assert_eq!(all.customers.len(), 3);
    let none = a
        .list_customers(ListCustomersRequest {
            updated_since: Some(at(YEAR_9999_END, 999_999_999)),
            ..Default::default()
        })
        .await
        .expect_answer("year 9999");
    assert!(none.customers.is_empty());

    // Page tokens: forged, tampered, from another tenant, another method,
    // other filters.
    let first = a
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_answer("page");
    let genuine = first.next_page_token.clone();
    let foreign = b
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_answer("page")
        .next_page_token;
    let other_method = a
        .list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_answer("page")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    tokens.push(other_method);
    for token in tokens {
        refused(
            a.list_customers(ListCustomersRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await,
            "page_token",
        );
    }
    for other_filters in [
        ListCustomersRequest {
            show_deleted: true,
            ..Default::default()
        },
        ListCustomersRequest {
            order_by: CustomerOrder::CreateTimeDesc as i32,
            ..Default::default()
        },
        ListCustomersRequest {
            kind: CustomerKind::Person as i32,
            ..Default::default()
        },
    ] {
        refused(
            a.list_customers(ListCustomersRequest {
                page_size: 1,
                page_token: genuine.clone(),
                ..other_filters
            })
            .await,
            "page_token",
        );
    }
    // The genuine token still works, with another page size even.
    let rest = a
        .list_customers(ListCustomersRequest {
            page_size: 10,
            page_token: genuine,
            ..Default::default()
        })
        .await
        .expect_answer("genuine token");
    assert_eq!(rest.customers.len(), 2);
}

#[tokio::test]
async fn search_customers_refuses_bad_queries_regions_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    for i in 0..3 {
        create(
            &mut a,
            person("Ana", &format!("López {i}"), &format!("a{i}@x.com")),
        )
        .await;
        create(
            &mut b,
            person("Ana", &format!("López {i}"), &format!("a{i}@x.com")),
        )
        .await;
    }
    let search = |query: &str| SearchCustomersRequest {
        query: query.into(),
        ..Default::default()
    };
    for q in ["", "   ", "\t\n", NUL, "Ana\0López"] {
        refused(a.search_customers(search(q)).await, "query");
    }
    refused(a.search_customers(search(&"ß".repeat(201))).await, "query");
    a.search_customers(search(&"ß".repeat(200)))
        .await
        .expect("200 characters are fine");
    for region in ["XX", NUL, "E\0", "1 OR 1=1", "../x"] {
        refused(
            a.search_customers(SearchCustomersRequest {
                query: "ana".into(),
                default_country_code: region.into(),
                ..Default::default()
            })
            .await,
            "default_country_code",
        );
    }
    for kind in [999, -1, 3] {
        refused(
            a.search_customers(SearchCustomersRequest {
                query: "ana".into(),
                kind,
                ..Default::default()
            })
            .await,
            "kind",
        );
    }
    refused(
        a.search_customers(SearchCustomersRequest {
            query: "ana".into(),
            page_size: -5,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    // A phone-looking query that cannot be a phone is just text.
    a.search_customers(SearchCustomersRequest {
        query: "+99999999999999999999999999".into(),
        default_country_code: "ES".into(),
        page_size: i32::MAX,
        ..Default::default()
    })
    .await
    .expect("not a phone, not an error");

    let page = |c: &mut Client, token: String| {
        let mut c = c.clone();
        async move {
            c.search_customers(SearchCustomersRequest {
                query: "Ana López".into(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
        }
    };
    let genuine = page(&mut a, String::new())
        .await
        .expect_answer("page")
        .next_page_token;
    let foreign = page(&mut b, String::new())
        .await
        .expect_answer("page")
        .next_page_token;
    let list_token = a
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_answer("list")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    tokens.push(list_token);
    for token in tokens {
        refused(page(&mut a, token).await, "page_token");
    }
    // Another query with a genuine token.
    refused(
        a.search_customers(SearchCustomersRequest {
            query: "Ana Lopez".into(),
            page_size: 1,
            page_token: genuine.clone(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_eq!(
        page(&mut a, genuine)
            .await
            .expect_answer("genuine")
            .results
            .len(),
        1
    );
}
