//! ImportCustomers over real gRPC and PostgreSQL: a stream of customers
//! upserted by their identifiers, refused items reported by index and
//! reason without sinking the rest or changing anything, retries that
//! change nothing, and every change published on the feed.

mod support;

use prost_types::FieldMask;
use rapport_proto::rapport::profile::v1::*;
use support::*;

fn item(c: Customer, request_id: &str) -> ImportCustomerItem {
    ImportCustomerItem {
        customer: Some(c),
        update_mask: None,
        request_id: request_id.into(),
    }
}

async fn import(c: &mut Client, messages: Vec<Vec<ImportCustomerItem>>) -> ImportCustomersResponse {
    let stream = futures::stream::iter(
        messages
            .into_iter()
            .map(|items| ImportCustomersRequest { items }),
    );
    c.import_customers(stream).await.answer()
}

fn reasons(r: &ImportCustomersResponse) -> Vec<(i64, i32)> {
    r.rejections.iter().map(|x| (x.index, x.reason)).collect()
}

#[tokio::test]
async fn imports_create_update_refuse_and_retry_without_duplicates() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "López", "ana@x.com")).await;
    let bo = create(&mut c, person("Bo", "Berg", "bo@x.com")).await;
    let gone = create(&mut c, person("Gone", "Away", "gone@x.com")).await;
    c.delete_customer(DeleteCustomerRequest {
        customer_id: gone.customer_id.clone(),
        etag: String::new(),
    })
    .await
    .unwrap();
    let events_before = env.events().await;

    let mut ana_update = person("Ana María", "", "ana@x.com");
    ana_update.tags = vec!["vip".into()];
    let mut with_phone = person("", "", "bo@x.com");
    with_phone.phones = vec![PhoneNumber {
        number: "+34 600 000 111".into(),
        ..Default::default()
    }];
    let mut emails_mask = item(person("Ana", "", "ana@x.com"), "");
    emails_mask.update_mask = Some(FieldMask {
        paths: vec!["emails".into()],
    });
    let mut conflict = person("", "", "ana@x.com");
    conflict.emails.push(EmailAddress {
        address: "bo@x.com".into(),
        ..Default::default()
    });
    let mut no_ids = person("No", "Ids", "");
    no_ids.emails.clear();
    let messages = vec![
        vec![
            item(person("New", "One", "new1@x.com"), "row-1"), // 0 created
            item(person("New", "Two", "new2@x.com"), "row-2"), // 1 created
            item(ana_update.clone(), "row-3"),                 // 2 updated (name, tags)
            item(person("Bo", "Berg", "bo@x.com"), "row-4"),   // 3 unchanged
        ],
        vec![
            item(with_phone, "row-5"), // 4 updated (phone attached)
            item(conflict, "row-6"),   // 5 conflict
            item(person("Gone", "Away", "gone@x.com"), "row-7"), // 6 deleted
            item(person("Bad", "Mail", "not an e-mail"), "row-8"), // 7 invalid
            item(no_ids, "row-9"),     // 8 invalid: no identifier
            emails_mask,               // 9 invalid mask
            item(person("New", "One again", "NEW1@x.com"), "row-10"), // 10 updated: created above
        ],
    ];
    let r = import(&mut c, messages.clone()).await;
    assert_eq!(
        (
            r.created_count,
            r.updated_count,
            r.unchanged_count,
            r.rejected_count
        ),
        (2, 3, 1, 5),
        "{r:?}"
    );
    use ImportRejectionReason as R;
    assert_eq!(
        reasons(&r),
        vec![
            (5, R::IdentityConflict as i32),
            (6, R::CustomerDeleted as i32),
            (7, R::Invalid as i32),
            (8, R::Invalid as i32),
            (9, R::Invalid as i32),
        ]
    );
    assert_eq!(r.rejections[2].request_id, "row-8");
    assert!(
        r.rejections[2]
            .field_violations
            .iter()
            .any(|f| f.field == "customer.emails[0].address"),
        "{:?}",
        r.rejections[2]
    );
    assert!(r.rejections[0].message.contains(&ana.customer_id));

    // Read back.
    let got = get(&mut c, &ana.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap();
    let Some(customer::Details::Person(p)) = &got.details else {
        panic!("{got:?}");
    };
    assert_eq!(p.given_name, "Ana María");
    assert_eq!(p.family_name, "López", "left out of the item: kept");
    assert_eq!(got.tags, vec!["vip"]);
    let bo_now = get(&mut c, &bo.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap();
    assert_eq!(bo_now.phones.len(), 1);
    assert_eq!(bo_now.phones[0].number, "+34600000111");
    let found = resolve(&mut c, vec![email("new1@x.com")]).await;
    let Some(resolve_identity_response::Result::Resolved(n1)) = found.result else {
        panic!("{found:?}");
    };
    let n1 = n1.customer.unwrap();
    let Some(customer::Details::Person(p)) = &n1.details else {
        panic!();
    };
    assert_eq!(p.family_name, "One again", "the later item updated it");
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        5
    );
    // Events: two created, one update per changed customer (ana; bo's
    // attachment; new1 by the later item).
    let events_after = env.events().await;
    let types = env.event_types().await;
    let new_types = &types[usize::try_from(events_before).unwrap()..];
    assert_eq!(
        new_types.iter().filter(|t| *t == "CustomerCreated").count(),
        2,
        "{new_types:?}"
    );
    assert!(
        new_types.iter().filter(|t| *t == "CustomerUpdated").count() >= 3,
        "{new_types:?}"
    );

    // The same stream again: every item counts as the first time and
    // nothing changes.
    let again = import(&mut c, messages.clone()).await;
    assert_eq!(
        (
            again.created_count,
            again.updated_count,
            again.unchanged_count,
            again.rejected_count
        ),
        (2, 3, 1, 5),
        "{again:?}"
    );
    assert_eq!(env.events().await, events_after, "a retry changes nothing");

    // Without request_ids the identifiers still find every customer.
    let mut plain = messages.clone();
    for m in &mut plain {
        for i in m.iter_mut() {
            i.request_id.clear();
        }
    }
    let third = import(&mut c, plain).await;
    assert_eq!(third.created_count, 0, "{third:?}");
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        5
    );

    // A request_id reused for other content is refused.
    let reused = import(
        &mut c,
        vec![vec![item(
            person("Other", "Content", "other@x.com"),
            "row-1",
        )]],
    )
    .await;
    assert_eq!(reasons(&reused), vec![(0, R::RequestIdConflict as i32)]);
}

#[tokio::test]
async fn an_item_that_cannot_apply_changes_nothing_and_the_rest_lands() {
    let env = start().await;
    let mut c = env.client.clone();
    let ana = create(&mut c, person("Ana", "López", "ana@x.com")).await;
    // A phone to attach, but a mask path that does not exist: refused while
    // applied, after its identifiers were matched.
    let mut bad = person("", "", "ana@x.com");
    bad.phones = vec![PhoneNumber {
        number: "+34 600 000 222".into(),
        ..Default::default()
    }];
    let mut bad = item(bad, "");
    bad.update_mask = Some(FieldMask {
        paths: vec!["no_such_field".into()],
    });
    let r = import(
        &mut c,
        vec![vec![bad, item(person("Zoe", "New", "zoe@x.com"), "")]],
    )
    .await;
    assert_eq!((r.created_count, r.rejected_count), (1, 1), "{r:?}");
    assert_eq!(r.rejections[0].index, 0);
    assert_eq!(
        r.rejections[0].reason,
        ImportRejectionReason::Invalid as i32
    );
    let now = get(&mut c, &ana.customer_id)
        .await
        .unwrap()
        .customer
        .unwrap();
    assert!(now.phones.is_empty(), "nothing of the refused item stored");
    assert_eq!(now.etag, ana.etag);
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let env = start().await;
    let mut c = env.client.clone();
    let items: Vec<ImportCustomerItem> = (0..1001)
        .map(|n| item(person("N", "N", &format!("n{n}@x.com")), ""))
        .collect();
    let stream = futures::stream::iter(vec![ImportCustomersRequest { items }]);
    let e = c.import_customers(stream).await.unwrap_err();
    assert_eq!(violations(&e), vec!["items"]);
    assert_eq!(env.events().await, 0);
}
