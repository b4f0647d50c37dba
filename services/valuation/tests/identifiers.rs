//! Values asked for by a customer's identifiers (an e-mail, an external id)
//! instead of its id, with the real profile service in-process: looked up
//! without creating anything, carried on the answer so a client can join
//! them to its own records, and added to rankings on request.

mod common;

use chrono::{Duration, Utc};
use common::*;
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind, IdentifierSet};
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, EmailAddress, ResolveIdentityRequest,
};
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

fn email(address: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::Email as i32,
        system: String::new(),
        value: address.into(),
    }
}

fn external(system: &str, value: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::External as i32,
        system: system.into(),
        value: value.into(),
    }
}

fn set(ids: Vec<Identifier>) -> IdentifierSet {
    IdentifierSet { identifiers: ids }
}

async fn customer(s: &Stack, tenant: Uuid, address: &str, shop_id: &str) -> Uuid {
    let c = s
        .profile_client()
        .await
        .create_customer(req(
            tenant,
            CreateCustomerRequest {
                customer: Some(Customer {
                    kind: CustomerKind::Person as i32,
                    display_name: address.into(),
                    emails: vec![EmailAddress {
                        address: address.into(),
                        ..Default::default()
                    }],
                    external_identifiers: vec![external("shop", shop_id)],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .customer
        .unwrap();
    c.customer_id.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_by_identifier_carry_them() {
    let s = start(true).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let ann = customer(&s, tenant, "ann@example.com", "A-1").await;
    let bob = customer(&s, tenant, "bob@example.com", "B-2").await;
    let now = Utc::now();
    record_all(
        &s,
        tenant,
        vec![
            purchase(ann, now - Duration::days(300), 4_000),
            purchase(ann, now - Duration::days(30), 7_000),
            purchase(bob, now - Duration::days(60), 5_000),
        ],
    )
    .await;
    cdnow_models(&mut v, tenant).await;
    v.score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .answer();

    // By e-mail (in any case: the profile normalises it): Ann's value,
    // carrying the identifiers it was asked by.
    let asked = set(vec![email("Ann@Example.com")]);
    let value = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                identifiers: Some(asked.clone()),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    assert_eq!(value.customer_id, ann.to_string());
    assert_eq!(value.identifiers, Some(asked));
    let by_id = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: ann.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    assert_eq!(by_id.clv, value.clv);
    assert_eq!(by_id.identifiers, None);

    // Unknown identifiers are NOT_FOUND and create nobody; identifiers of
    // two customers are a conflict; an invalid one names its field.
    let unknown = set(vec![email("nobody@example.com")]);
    let e = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                identifiers: Some(unknown.clone()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nobody@example.com"), "{e:?}");
    let lookup = s
        .profile_client()
        .await
        .resolve_identity(req(
            tenant,
            ResolveIdentityRequest {
                identifiers: unknown.identifiers.clone(),
                traits: None,
                lookup_only: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(lookup.code(), Code::NotFound, "nothing was created");
    let e = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                identifiers: Some(set(vec![email("ann@example.com"), external("shop", "B-2")])),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&bob.to_string()), "{e:?}");
    for (r, field) in [
        (
            GetCustomerValueRequest {
                identifiers: Some(set(vec![email("not an e-mail")])),
                ..Default::default()
            },
            "identifiers.identifiers[0].value",
        ),
        (
            GetCustomerValueRequest {
                customer_id: ann.to_string(),
                identifiers: Some(set(vec![email("ann@example.com")])),
                ..Default::default()
            },
            "identifiers",
        ),
        (GetCustomerValueRequest::default(), "customer_id"),
    ] {
        let e = v.get_customer_value(req(tenant, r)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(violated_fields(&e), vec![field.to_string()], "{e:?}");
    }

    // A batch by identifier sets: each set answered with its value, the
    // unknown one listed as missing by position.
    let sets = vec![
        set(vec![email("ann@example.com")]),
        set(vec![email("nobody@example.com")]),
        set(vec![external("shop", "B-2")]),
        set(vec![external("shop", "A-1")]),
    ];
    let batch = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                identifier_sets: sets.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(batch.missing_identifier_sets, vec![1]);
    let got: Vec<_> = batch
        .values
        .iter()
        .map(|v| (v.customer_id.clone(), v.identifiers.clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ann.to_string(), sets[0].clone()),
            (bob.to_string(), sets[2].clone()),
            (ann.to_string(), sets[3].clone()),
        ]
    );
    let e = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                identifier_sets: vec![sets[0].clone(), set(vec![])],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        violated_fields(&e)
            .iter()
            .all(|f| f.starts_with("identifier_sets[1]")),
        "{e:?}"
    );

    // A ranking with the customers' identifiers from the profile.
    let ranked = v
        .rank_customers(req(
            tenant,
            RankCustomersRequest {
                include_identifiers: true,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(ranked.customers.len(), 2);
    for c in &ranked.customers {
        let value = c.value.as_ref().unwrap();
        let (address, shop) = if value.customer_id == ann.to_string() {
            ("ann@example.com", "A-1")
        } else {
            ("bob@example.com", "B-2")
        };
        assert_eq!(
            value.identifiers,
            Some(set(vec![email(address), external("shop", shop)]))
        );
    }
}
