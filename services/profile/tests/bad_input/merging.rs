//! MergeCustomers, UnmergeCustomers, MarkNotDuplicate, EraseCustomer.

use super::*;

#[tokio::test]
async fn merge_unmerge_and_marks_refuse_bad_unknown_and_foreign_ids() {
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let ana2 = create(&mut a, person("Ana", "", "ana2@x.com")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    let events = env.events().await;
    let good = ana.customer_id.clone();
    let good2 = ana2.customer_id.clone();

    for raw in BAD_IDS {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: raw.into(),
                merged_customer_id: good2.clone(),
                ..Default::default()
            })
            .await,
            "survivor_customer_id",
        );
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.unmerge_customers(UnmergeCustomersRequest {
                merged_customer_id: raw.into(),
                request_id: String::new(),
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: raw.into(),
                second_customer_id: good2.clone(),
            })
            .await,
            "first_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: good.clone(),
                second_customer_id: raw.into(),
            })
            .await,
            "second_customer_id",
        );
    }
    // The same id twice (also written differently).
    for (x, y) in [
        (good.clone(), good.clone()),
        (good.clone(), good.to_uppercase()),
    ] {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: x.clone(),
                merged_customer_id: y.clone(),
                ..Default::default()
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: x,
                second_customer_id: y,
            })
            .await,
            "second_customer_id",
        );
    }
    for rid in ["x".repeat(65), NUL.into()] {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: good2.clone(),
                request_id: rid.clone(),
                ..Default::default()
            })
            .await,
            "request_id",
        );
        refused(
            a.unmerge_customers(UnmergeCustomersRequest {
                merged_customer_id: good2.clone(),
                request_id: rid,
            })
            .await,
            "request_id",
        );
    }
    // Unknown ids, and ids of another tenant, on either side: NOT_FOUND.
    let unknown = Uuid::new_v4().to_string();
    for (x, y) in [
        (good.clone(), unknown.clone()),
        (unknown.clone(), good.clone()),
        (good.clone(), bea.customer_id.clone()),
        (bea.customer_id.clone(), good.clone()),
    ] {
        failed(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: x.clone(),
                merged_customer_id: y.clone(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
        failed(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: x,
                second_customer_id: y,
            })
            .await,
            Code::NotFound,
        );
    }
    failed(
        b.merge_customers(MergeCustomersRequest {
            survivor_customer_id: good.clone(),
            merged_customer_id: good2.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: good.clone(),
            second_customer_id: good2.clone(),
        })
        .await,
        Code::NotFound,
    );
    for (client, id) in [(&mut a, unknown.clone()), (&mut b, good2.clone())] {
        failed(
            client
                .unmerge_customers(UnmergeCustomersRequest {
                    merged_customer_id: id,
                    request_id: String::new(),
                })
                .await,
            Code::NotFound,
        );
    }
    // Not merged: FAILED_PRECONDITION. A stale survivor etag: ABORTED.
    failed(
        a.unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: good2.clone(),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
    );
    for etag in ["\"999\"", NUL, "1 OR 1=1"] {
        failed(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: good2.clone(),
                survivor_etag: etag.into(),
                request_id: String::new(),
            })
            .await,
            Code::Aborted,
        );
    }
    unchanged(&mut a, &ana).await;
    unchanged(&mut a, &ana2).await;
    unchanged(&mut b, &bea).await;
    assert_eq!(env.events().await, events);
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.not_duplicates")
            .await,
        0
    );
    assert_eq!(env.scalar("SELECT count(*) FROM profile.merges").await, 0);
}

#[tokio::test]
async fn erase_refuses_bad_ids_references_and_other_tenants() {
    let (env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let events = env.events().await;
    for raw in BAD_IDS {
        refused(
            a.erase_customer(EraseCustomerRequest {
                customer_id: raw.into(),
                request_reference: String::new(),
            })
            .await,
            "customer_id",
        );
    }
    for reference in ["x".repeat(129), NUL.into(), "a\nb".into()] {
        refused(
            a.erase_customer(EraseCustomerRequest {
                customer_id: ana.customer_id.clone(),
                request_reference: reference,
            })
            .await,
            "request_reference",
        );
    }
    failed(
        a.erase_customer(EraseCustomerRequest {
            customer_id: Uuid::new_v4().to_string(),
            request_reference: String::new(),
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.erase_customer(EraseCustomerRequest {
            customer_id: ana.customer_id.clone(),
            request_reference: TEXT.into(),
        })
        .await,
        Code::NotFound,
    );
    unchanged(&mut a, &ana).await;
    assert_eq!(env.events().await, events);

    // A hostile reference is kept byte for byte with the tombstone.
    a.erase_customer(EraseCustomerRequest {
        customer_id: ana.customer_id.clone(),
        request_reference: TEXT.into(),
    })
    .await
    .expect("erase");
    let mut db = env.db().await;
    let kept: Option<String> =
        sqlx::query_scalar("SELECT erase_reference FROM profile.customers WHERE customer_id = $1")
            .bind(Uuid::parse_str(&ana.customer_id).expect("uuid"))
            .fetch_one(&mut db)
            .await
            .expect("tombstone");
    assert_eq!(kept.as_deref(), Some(TEXT));
    failed(
        get(&mut a, &ana.customer_id).await.map(Response::new),
        Code::NotFound,
    );
}
