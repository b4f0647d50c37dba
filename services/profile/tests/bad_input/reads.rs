//! GetCustomer and BatchGetCustomers.

use super::*;

#[tokio::test]
async fn get_and_batch_get_refuse_malformed_ids_and_hide_other_tenants() {
    let (_env, mut a, mut b) = start_two_tenants().await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;

    for raw in BAD_IDS {
        refused(get(&mut a, raw).await.map(Response::new), "customer_id");
    }
    failed(
        get(&mut a, &Uuid::new_v4().to_string())
            .await
            .map(Response::new),
        Code::NotFound,
    );
    failed(
        get(&mut a, &Uuid::nil().to_string())
            .await
            .map(Response::new),
        Code::NotFound,
    );
    let e = failed(
        get(&mut b, &ana.customer_id).await.map(Response::new),
        Code::NotFound,
    );
    assert!(!e.message().contains("Ana"), "{e:?}");

    // BatchGet: no ids, too many, one violation per malformed id.
    refused(
        a.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![],
        })
        .await,
        "customer_ids",
    );
    refused(
        a.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: (0..1001).map(|_| Uuid::new_v4().to_string()).collect(),
        })
        .await,
        "customer_ids",
    );
    let mut ids: Vec<String> = vec![ana.customer_id.clone()];
    ids.extend(BAD_IDS.iter().map(|s| s.to_string()));
    let e = a
        .batch_get_customers(BatchGetCustomersRequest { customer_ids: ids })
        .await
        .expect_err("malformed ids");
    let fields = violations(&e);
    let expected: Vec<String> = (1..=BAD_IDS.len())
        .map(|i| format!("customer_ids[{i}]"))
        .collect();
    assert_eq!(fields, expected);
    // A thousand malformed ids: refused, naming the first ones (the whole
    // list would not fit in the response headers).
    let e = a
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: (0..1000).map(|i| format!("../{i}")).collect(),
        })
        .await
        .expect_err("malformed ids");
    let fields = violations(&e);
    assert!(fields.len() >= 10, "{fields:?}");
    assert_eq!(
        fields[..3],
        ["customer_ids[0]", "customer_ids[1]", "customer_ids[2]"]
    );
    assert!(e.message().contains("more problems"), "{}", e.message());
    // Exactly 1,000 is fine; the other tenant's id is missing, never returned.
    let mut ids: Vec<String> = (0..999).map(|_| Uuid::new_v4().to_string()).collect();
    ids.push(ana.customer_id.clone());
    let r = b
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: ids.clone(),
        })
        .await
        .expect_answer("1,000 ids");
    assert!(r.customers.is_empty());
    assert_eq!(r.missing_customer_ids.len(), 1000);
    assert!(r.merged_customer_ids.is_empty());
    let r = a
        .batch_get_customers(BatchGetCustomersRequest { customer_ids: ids })
        .await
        .expect_answer("1,000 ids");
    assert_eq!(r.customers, vec![ana]);
}
