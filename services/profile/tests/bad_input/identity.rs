//! ResolveIdentity and FindDuplicates.

use super::*;

#[tokio::test]
async fn resolve_identity_refuses_bad_identifiers_and_traits_and_creates_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    let req = |identifiers: Vec<Identifier>, traits: Option<Customer>| ResolveIdentityRequest {
        identifiers,
        traits,
        lookup_only: false,
    };
    refused(c.resolve_identity(req(vec![], None)).await, "identifiers");
    refused(
        c.resolve_identity(req(
            (0..21).map(|i| email(&format!("e{i}@x.com"))).collect(),
            None,
        ))
        .await,
        "identifiers",
    );
    let bad: Vec<(Identifier, &str)> = vec![
        (email(""), "identifiers[0].value"),
        (email(NUL), "identifiers[0].value"),
        (email("a\0b@x.com"), "identifiers[0].value"),
        (email("1 OR 1=1"), "identifiers[0].value"),
        (
            email(&format!("{}@x.com", "a".repeat(250))),
            "identifiers[0].value",
        ),
        (phone("+34 911\0 23 45 67"), "identifiers[0].value"),
        (phone("911 23 45 67"), "identifiers[0].value"),
        (phone("+1-800-FLOWERS"), "identifiers[0].value"),
        (phone(&"9".repeat(100)), "identifiers[0].value"),
        (external("", "L-1"), "identifiers[0].system"),
        (external("Loyalty", "L-1"), "identifiers[0].system"),
        (external("loy\0alty", "L-1"), "identifiers[0].system"),
        (external("loyalty", ""), "identifiers[0].value"),
        (external("loyalty", NUL), "identifiers[0].value"),
        (
            external("loyalty", &"x".repeat(257)),
            "identifiers[0].value",
        ),
        (
            Identifier {
                kind: 0,
                ..email("ana@x.com")
            },
            "identifiers[0].kind",
        ),
        (
            Identifier {
                kind: 999,
                ..email("ana@x.com")
            },
            "identifiers[0].kind",
        ),
    ];
    for (id, field) in bad {
        refused(c.resolve_identity(req(vec![id], None)).await, field);
    }
    // Traits: identifiers belong in `identifiers`; every customer rule holds.
    let ok = vec![email("ana@x.com")];
    let case = |f: &dyn Fn(&mut Customer)| with_default(f);
    let mut traits: Vec<(Customer, &str)> = vec![
        (person("Ana", "", "ana@x.com"), "traits.emails"),
        (
            case(&|r| r.phones = vec![phone_entry("+34 911 23 45 67", "")]),
            "traits.phones",
        ),
        (
            case(&|r| r.external_identifiers = vec![external("loyalty", "L-1")]),
            "traits.external_identifiers",
        ),
        (case(&|r| r.kind = 999), "traits.kind"),
        (case(&|r| r.kind = -1), "traits.kind"),
        (
            case(&|r| r.display_name = NUL.into()),
            "traits.display_name",
        ),
        (
            case(&|r| r.country_code = "XX".into()),
            "traits.country_code",
        ),
        (
            case(&|r| r.relationship_stage = 999),
            "traits.relationship_stage",
        ),
        (
            case(&|r| r.attributes = HashMap::from([("nope".to_string(), string_value("x"))])),
            "traits.attributes[nope]",
        ),
    ];
    let mut org = Customer {
        kind: CustomerKind::Person as i32,
        ..Default::default()
    };
    org_mut(&mut org).legal_name = "Acme".into();
    traits.push((org, "traits.organization"));
    let mut p = Customer::default();
    person_mut(&mut p).given_name = "x".repeat(201);
    traits.push((p, "traits.person.given_name"));
    for (t, field) in traits {
        refused(c.resolve_identity(req(ok.clone(), Some(t))).await, field);
    }
    // A pure lookup of unknown identifiers: NOT_FOUND.
    failed(
        c.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("nobody@x.com"), external("loyalty", TEXT)],
            traits: None,
            lookup_only: true,
        })
        .await,
        Code::NotFound,
    );
    assert!(everyone(&mut c).await.is_empty(), "nothing was created");
    assert_eq!(env.events().await, 0);

    // Another tenant's customer is not found by its identifiers.
    let ana = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let mut b = env.client_for(Some(Uuid::new_v4()));
    failed(
        b.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("ana@x.com")],
            traits: None,
            lookup_only: true,
        })
        .await,
        Code::NotFound,
    );
    unchanged(&mut c, &ana).await;
}

#[tokio::test]
async fn find_duplicates_refuses_bad_ids_scores_and_tokens() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        // Sub-addresses of one mailbox: the same e-mail key, likely duplicates.
        let p = person("Ana", "López García", &format!("ana+{i}@x.com"));
        ids.push(create(&mut a, p.clone()).await.customer_id);
        create(&mut b, p).await;
    }
    for raw in ["not-a-uuid", "../x", "1 OR 1=1", "\0"] {
        refused(
            a.find_duplicates(FindDuplicatesRequest {
                customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "customer_id",
        );
    }
    failed(
        a.find_duplicates(FindDuplicatesRequest {
            customer_id: Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.find_duplicates(FindDuplicatesRequest {
            customer_id: ids[0].clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    for score in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.1,
        1.000_001,
        f64::MAX,
        f64::MIN,
    ] {
        refused(
            a.find_duplicates(FindDuplicatesRequest {
                min_score: score,
                ..Default::default()
            })
            .await,
            "min_score",
        );
    }
    refused(
        a.find_duplicates(FindDuplicatesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    let page = |c: &mut Client, token: String| {
        let mut c = c.clone();
        async move {
            c.find_duplicates(FindDuplicatesRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
        }
    };
    let first = page(&mut a, String::new())
        .await
        .expect_answer("duplicates");
    assert_eq!(first.candidates.len(), 1, "three similar customers");
    let genuine = first.next_page_token;
    let foreign = page(&mut b, String::new())
        .await
        .expect_answer("duplicates")
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(page(&mut a, token).await, "page_token");
    }
    refused(
        a.find_duplicates(FindDuplicatesRequest {
            min_score: 0.9,
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
            .candidates
            .len(),
        1
    );
    // Valid extremes: 1 (only exact pairs) and a huge page.
    a.find_duplicates(FindDuplicatesRequest {
        min_score: 1.0,
        page_size: i32::MAX,
        ..Default::default()
    })
    .await
    .expect("min_score 1 is valid");
}
