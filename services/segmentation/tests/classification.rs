//! RFM report, classification and the classification policy over real gRPC.

mod common;

use common::*;
use prost_types::FieldMask;
use rapport_proto::rapport::common::v1::{LadderRung, RelationshipStage};
use rapport_proto::rapport::segmentation::v1::*;
use tonic::Code;
use uuid::Uuid;

/// Ten buyers with distinct recency, frequency and spend: customer i (0..10)
/// bought i + 1 times for 100 (i + 1), last 10 (10 - i) days ago.
fn ladder_of_buyers() -> Vec<Customer> {
    (0..10)
        .map(|i| Customer::new("ES").bought(i + 1, 100 * (i + 1), 600, 10 * (10 - i)))
        .collect()
}

#[tokio::test]
async fn rfm_report_and_rfm_fields() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut cs = ladder_of_buyers();
    cs.push(Customer::new("ES")); // no purchase: unscored
    cs[9] = cs[9].clone().clv(900);
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let r = c
        .get_rfm_report(req(t, GetRfmReportRequest::default()))
        .await
        .answer();
    assert_eq!(r.segments.len(), 11);
    assert_eq!(r.segments[0].rfm_segment, RfmSegment::Champions as i32);
    assert_eq!(
        (r.scored_customer_count, r.unscored_customer_count),
        (10, 1)
    );
    assert_eq!(r.currency_code, "EUR");
    assert!(r.compute_time.is_some());
    // Scores 1 + floor(5k/10): customers 8 and 9 score 5 on every measure
    // (Champions), 0 and 1 score 1 (Lost).
    let row = |s: RfmSegment| {
        r.segments
            .iter()
            .find(|x| x.rfm_segment == s as i32)
            .unwrap()
            .clone()
    };
    let champions = row(RfmSegment::Champions);
    assert_eq!(champions.customer_count, 2);
    assert_eq!(champions.revenue.as_ref().unwrap().units, 1900);
    assert_eq!(champions.valued_customer_count, 1);
    assert_eq!(champions.clv_total.as_ref().unwrap().units, 900);
    assert!((champions.customer_share - 0.2).abs() < 1e-9);
    assert!((champions.revenue_share - 1900.0 / 5500.0).abs() < 1e-9);
    assert_eq!(row(RfmSegment::Lost).customer_count, 2);
    let total: i64 = r.segments.iter().map(|x| x.customer_count).sum();
    assert_eq!(total, 10);

    // The scores are rule fields.
    let seg = create_segment(
        &mut c,
        t,
        dynamic("Champs", "rfm.segment = \"Champions\" and rfm.r = 5"),
    )
    .await;
    assert_eq!(seg.member_count, 2);
    // Restricted to a segment's members.
    let r2 = c
        .get_rfm_report(req(
            t,
            GetRfmReportRequest {
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .answer();
    assert_eq!(r2.scored_customer_count, 2);
    c.get_rfm_report(req(
        t,
        GetRfmReportRequest {
            segment_id: Uuid::new_v4().to_string(),
        },
    ))
    .await
    .refused(Code::NotFound);

    // ClassifyCustomer carries the RFM scores.
    let cl = c
        .classify_customer(req(
            t,
            ClassifyCustomerRequest {
                customer_id: cs[9].id.to_string(),
            },
        ))
        .await
        .answer()
        .classification
        .unwrap();
    let rfm = cl.rfm.unwrap();
    assert_eq!(
        (rfm.recency_score, rfm.frequency_score, rfm.monetary_score),
        (5, 5, 5)
    );
    assert_eq!(rfm.frequency, 10);
    assert_eq!(rfm.recency_days, 10);
    assert_eq!(rfm.segment, RfmSegment::Champions as i32);
    s.stop().await;
}

#[tokio::test]
async fn classification_with_explanations_and_policy() {
    let s = start().await;
    let t = Uuid::new_v4();
    // A repeat buyer for 200 days: friend. A one-time buyer: acquaintance.
    let friend = Customer::new("ES").bought(4, 400, 200, 5);
    let once = Customer::new("ES").bought(1, 50, 30, 30);
    let none = Customer::new("ES");
    insert(&s.pool, t, &[friend.clone(), once.clone(), none.clone()]).await;
    let mut c = s.client();
    let cc = c.clone();
    let classify = |id: Uuid| {
        let mut c = cc.clone();
        async move {
            c.classify_customer(req(
                t,
                ClassifyCustomerRequest {
                    customer_id: id.to_string(),
                },
            ))
            .await
            .answer()
            .classification
            .unwrap()
        }
    };
    let f = classify(friend.id).await;
    assert_eq!(f.ladder_rung, LadderRung::Friend as i32);
    assert!(
        f.ladder_explanation
            .contains(&"friend: purchases 4 >= 2 [friend_min_purchases]: held".to_string())
    );
    assert!(
        f.ladder_explanation
            .contains(&"friend: latest NPS unknown: not used".to_string())
    );
    assert_eq!(f.ladder_explanation.last().unwrap(), "result: friend");
    assert_eq!(f.policy_etag, "p0");
    let o = classify(once.id).await;
    assert_eq!(o.ladder_rung, LadderRung::Acquaintance as i32);
    assert_eq!(o.stage, RelationshipStage::Exploration as i32);
    let n = classify(none.id).await;
    assert_eq!(n.ladder_rung, LadderRung::Stranger as i32);
    assert_eq!(n.stage, RelationshipStage::Unspecified as i32);
    assert!(n.rfm.is_none());

    // The policy: defaults, then an override that demotes the friend.
    let p = c
        .get_classification_policy(req(t, GetClassificationPolicyRequest {}))
        .await
        .answer();
    assert_eq!(p.policy.as_ref().unwrap().friend_min_purchases, Some(2));
    assert_eq!(p.default_policy.unwrap().friend_min_purchases, Some(2));
    let etag = p.policy.unwrap().etag;
    let e = c
        .update_classification_policy(req(
            t,
            UpdateClassificationPolicyRequest {
                policy: Some(ClassificationPolicy {
                    friend_min_purchases: Some(1),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["friend_min_purchases".into(), "etag".into()],
                }),
            },
        ))
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(violations(&e).len(), 2);

    // A dynamic segment on the ladder follows the reclassification.
    let friends = create_segment(&mut c, t, dynamic("Friends", "ladder = \"friend\"")).await;
    // Classification is stored on the first full computation (report / refresh).
    c.refresh_segment(req(
        t,
        RefreshSegmentRequest {
            segment_id: friends.segment_id.clone(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        members(&mut c, t, &friends.segment_id).await,
        vec![friend.id.to_string()]
    );

    let updated = c
        .update_classification_policy(req(
            t,
            UpdateClassificationPolicyRequest {
                policy: Some(ClassificationPolicy {
                    friend_min_purchases: Some(5),
                    etag: etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["friend_min_purchases".into()],
                }),
            },
        ))
        .await
        .answer()
        .policy
        .unwrap();
    assert_eq!(updated.friend_min_purchases, Some(5));
    assert_ne!(updated.etag, etag);
    // Stale etag.
    c.update_classification_policy(req(
        t,
        UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(3),
                etag,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["friend_min_purchases".into()],
            }),
        },
    ))
    .await
    .refused(Code::Aborted);
    let f = classify(friend.id).await;
    assert_eq!(f.ladder_rung, LadderRung::Acquaintance as i32);
    assert!(
        f.ladder_explanation
            .contains(&"friend: purchases 4 >= 5 [friend_min_purchases]: not held".to_string())
    );
    // Reclassified in the background; the segment follows.
    let mut c2 = c.clone();
    let seg = friends.segment_id.clone();
    eventually("the friend to leave Friends", || {
        let mut c2 = c2.clone();
        let seg = seg.clone();
        async move { members(&mut c2, t, &seg).await.is_empty() }
    })
    .await;
    let ch = c2
        .get_customer_segments(req(
            t,
            GetCustomerSegmentsRequest {
                customer_id: friend.id.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(ch.memberships.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn list_fields_gives_the_catalogue() {
    let s = start().await;
    let t = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO attribute_fields (tenant_id, name, type) VALUES ($1, 'tier', 'string')",
    )
    .bind(t)
    .execute(&s.pool)
    .await
    .unwrap();
    let mut c = s.client();
    let f = c.list_fields(req(t, ListFieldsRequest {})).await.answer();
    let names: Vec<&str> = f.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"kind"));
    assert!(
        names.contains(&"clv") && names.contains(&"rfm.segment") && names.contains(&"attr.tier")
    );
    assert!(
        f.aggregate_sources
            .iter()
            .any(|s| s.interaction_type == "purchase")
    );
    assert_eq!(f.currency_code, "");
    // attr.tier is usable.
    let seg = create_segment(&mut c, t, dynamic("Gold", "attr.tier = \"gold\"")).await;
    assert_eq!(seg.member_count, 0);
    s.stop().await;
}

/// A batch decides "CLV in the top P %" against the value at the cut, found
/// once per statement; the whole-tenant pass and an explanation count each
/// rank. All three give every customer the same rung: ties at the cut, and
/// customers ranked by purchase amount for want of a CLV, included.
#[tokio::test]
async fn batch_and_exact_ranks_give_the_same_rungs() {
    use rapport_segmentation::domain::classify;
    use rapport_segmentation::store;
    let s = start().await;
    let t = Uuid::new_v4();
    let customers: Vec<Customer> = (0..60i64)
        .map(|i| {
            let mut c = Customer::new("ES").bought(2 + i % 6, 100 * (i % 7 + 1), 800, 5 + i % 20);
            c.nps = Some(9);
            if i % 9 != 0 {
                c = c.clv(10 * (i % 13));
            }
            c
        })
        .collect();
    insert(&s.pool, t, &customers).await;
    let mut conn = s.pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    rapport_segmentation::engine::recompute_tenant(&mut conn, t, now)
        .await
        .unwrap();
    let p = rapport_segmentation::engine::policy(&mut conn, t)
        .await
        .unwrap();
    let ids: Vec<Uuid> = customers.iter().map(|c| c.id).collect();
    let rungs = |inputs: Vec<store::Classifiable>| -> std::collections::BTreeMap<Uuid, String> {
        inputs
            .into_iter()
            .map(|c| {
                let o = classify::classify(&c.inputs, &p, now);
                (c.customer_id, format!("{:?}", o.ladder))
            })
            .collect()
    };
    let exact = rungs(
        store::classification_inputs(&mut conn, t, None, &p, false, now)
            .await
            .unwrap(),
    );
    let batch = rungs(
        store::classification_inputs(&mut conn, t, Some(&ids), &p, false, now)
            .await
            .unwrap(),
    );
    assert_eq!(batch, exact);
    for id in &ids {
        let explained = rungs(
            store::classification_inputs(&mut conn, t, Some(&[*id]), &p, true, now)
                .await
                .unwrap(),
        );
        assert_eq!(explained[id], exact[id], "customer {id}");
    }
    let partners = exact.values().filter(|r| r.contains("Partner")).count();
    assert!(
        partners > 0 && partners < exact.len(),
        "the case must have partners and others: {exact:?}"
    );
}
