//! Explanations, tenancy, and watches at shutdown.

use super::*;

#[tokio::test]
async fn explain_membership_condition_by_condition() {
    let Sampled { s, t, cs, mut c } = sampled().await;
    let seg = create_segment(
        &mut c,
        t,
        dynamic(
            "Valuable ES",
            "country = \"ES\" and clv > 500 and clv in top 50%",
        ),
    )
    .await;
    assert_eq!(seg.member_count, 1);
    let yes = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cs[0].id.to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .answer();
    assert!(yes.member && yes.rule_held);
    assert!(yes.enter_time.is_some());
    let root = yes.explanation.unwrap();
    assert!(root.held);
    assert_eq!(root.children.len(), 3);
    let no = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cs[1].id.to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .answer();
    assert!(!no.member && !no.rule_held);
    let root = no.explanation.unwrap();
    assert!(!root.held);
    assert!(root.children[0].held, "country ES holds");
    assert!(!root.children[1].held, "clv 100 > 500 does not");
    // Unknown customer.
    c.explain_membership(req(
        t,
        ExplainMembershipRequest {
            customer_id: Uuid::new_v4().to_string(),
            segment_id: seg.segment_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ca = sample();
    insert(&s.pool, a, &ca).await;
    insert(&s.pool, b, &[Customer::new("ES").bought(9, 9000, 500, 1)]).await;
    let mut c = s.client();
    let seg = create_segment(&mut c, a, dynamic("Buyers", "purchases >= 1")).await;
    assert_eq!(seg.member_count, 4);
    // Tenant b sees neither the segment nor tenant a's customers.
    c.get_segment(req(
        b,
        GetSegmentRequest {
            segment_id: seg.segment_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    c.explain_membership(req(
        b,
        ExplainMembershipRequest {
            customer_id: ca[0].id.to_string(),
            segment_id: seg.segment_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    let listed = c
        .list_segments(req(b, ListSegmentsRequest::default()))
        .await
        .answer();
    assert!(listed.segments.is_empty());
    // The same name is free in tenant b, and counts only b's customers.
    let bs = create_segment(&mut c, b, dynamic("Buyers", "purchases >= 1")).await;
    assert_eq!(bs.member_count, 1);
    let p = c
        .preview_segment(req(b, preview_text("purchases >= 0", 10)))
        .await
        .answer();
    assert_eq!(p.customer_count, 1);
    c.add_members(req(
        b,
        AddMembersRequest {
            segment_id: seg.segment_id.clone(),
            customer_ids: vec![ca[0].id.to_string()],
        },
    ))
    .await
    .refused(Code::NotFound);
    // A report never waits for a writer holding the tenant (it then shows
    // the scores as they are), so it is asked until the rescoring has run;
    // it never counts tenant a's customers.
    eventually("tenant b's RFM report to score its one customer", || {
        let mut c = c.clone();
        async move {
            let r = c
                .get_rfm_report(req(b, GetRfmReportRequest::default()))
                .await
                .answer();
            assert!(r.scored_customer_count <= 1, "{r:?}");
            r.scored_customer_count == 1
        }
    })
    .await;
    let _ = Decimal::ZERO;

    // Membership sequences are numbered per tenant: tenant b's changes
    // between two of a's leave no gap in a's numbering, so they say nothing
    // about b's activity.
    let a2 = create_segment(&mut c, a, dynamic("Big buyers", "purchases >= 1")).await;
    let sequences = |tenant: Uuid, segment: String, n: usize| {
        let mut c = s.client();
        async move {
            let mut stream = c
                .watch_membership(req(
                    tenant,
                    WatchMembershipRequest {
                        segment_id: segment,
                        start: Some(watch_membership_request::Start::AfterSequence(0)),
                    },
                ))
                .await
                .answer();
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(
                    stream
                        .next()
                        .await
                        .unwrap()
                        .unwrap()
                        .change
                        .unwrap()
                        .sequence,
                );
            }
            got
        }
    };
    assert_eq!(sequences(a, seg.segment_id.clone(), 4).await, [1, 2, 3, 4]);
    assert_eq!(sequences(b, bs.segment_id.clone(), 1).await, [1]);
    assert_eq!(sequences(a, a2.segment_id.clone(), 4).await, [5, 6, 7, 8]);
    s.stop().await;
}

#[tokio::test]
async fn a_watch_ends_unavailable_when_the_service_shuts_down() {
    let Sampled { s, t, mut c, .. } = sampled().await;
    let seg = create_segment(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    let mut stream = c
        .watch_membership(req(
            t,
            WatchMembershipRequest {
                segment_id: seg.segment_id,
                start: Some(watch_membership_request::Start::AfterSequence(0)),
            },
        ))
        .await
        .answer();
    stream.next().await.unwrap().unwrap();
    s.segmentation.as_ref().unwrap().shutdown.trigger();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the watch ended with OK: a client would take it for the end"),
            }
        }
    })
    .await
    .expect("the watch was still open 5 s after shutdown began");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("last sequence"),
        "{}",
        ended.message()
    );
    s.stop().await;
}
