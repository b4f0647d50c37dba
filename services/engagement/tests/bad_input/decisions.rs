//! Deciding for a customer and for a segment's members, and listing the
//! decisions.

use super::*;
use rapport_testkit::hostile::{BAD_IDS, FORGED_TOKEN, MALFORMED_IDS, forged_tokens};

#[tokio::test]
async fn next_best_actions_refuse_bad_input_and_store_nothing() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let (alice, gone) = (Uuid::new_v4(), Uuid::new_v4());
    created(&s, t, &[alice]).await;
    deleted(&s, t, gone).await;
    create(&mut c, t, valid("Spring")).await;
    create(&mut c, stranger, valid("Theirs")).await;
    let asked = |f: &dyn Fn(&mut GetNextBestActionsRequest)| {
        changed(
            GetNextBestActionsRequest {
                customer_id: alice.to_string(),
                ..Default::default()
            },
            f,
        )
    };

    let mut cases: Vec<(Vec<&str>, GetNextBestActionsRequest)> = vec![(
        vec!["customer_id", "channel", "limit"],
        GetNextBestActionsRequest {
            customer_id: "1 OR 1=1".into(),
            channel: 99,
            limit: -1,
            preview: true,
        },
    )];
    for id in BAD_IDS {
        for preview in [false, true] {
            cases.push((
                vec!["customer_id"],
                asked(&|r| {
                    r.customer_id = id.into();
                    r.preview = preview;
                }),
            ));
        }
    }
    for channel in [6, 99, -1, i32::MAX, i32::MIN] {
        cases.push((vec!["channel"], asked(&|r| r.channel = channel)));
    }
    for limit in [-1, 21, 1000, i32::MAX, i32::MIN] {
        cases.push((vec!["limit"], asked(&|r| r.limit = limit)));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(c.get_next_best_actions(req(t, r)).await, &expected, &case);
        assert!(decisions_of(&mut c, t).await.is_empty(), "{case} decided");
    }
    // Customers the service does not know (never announced, deleted, or
    // another tenant's): NOT_FOUND, in a preview too.
    for (tenant, customer, case) in [
        (t, Uuid::new_v4(), "an unknown customer"),
        (t, Uuid::nil(), "the nil UUID"),
        (t, gone, "a deleted customer"),
        (stranger, alice, "another tenant's customer"),
    ] {
        for preview in [false, true] {
            assert_code(
                c.get_next_best_actions(req(
                    tenant,
                    GetNextBestActionsRequest {
                        customer_id: customer.to_string(),
                        preview,
                        ..Default::default()
                    },
                ))
                .await,
                Code::NotFound,
                case,
            );
        }
    }
    assert!(decisions_of(&mut c, t).await.is_empty());
    assert!(decisions_of(&mut c, stranger).await.is_empty());
    // A preview decides and stores nothing.
    let p = preview(&mut c, t, alice).await;
    assert_eq!(p.actions.len(), 1);
    assert!(p.actions[0].decision_id.is_empty());
    assert!(decisions_of(&mut c, t).await.is_empty());
    // The ends of the ranges are valid; limit 0 means 3.
    for (channel, limit) in [
        (0, 0),
        (0, 1),
        (0, 20),
        (ContactChannel::FieldVisit as i32, 20),
    ] {
        c.get_next_best_actions(req(
            t,
            GetNextBestActionsRequest {
                customer_id: alice.to_string().to_uppercase(),
                channel,
                limit,
                preview: true,
            },
        ))
        .await
        .expect_answer("valid ends of the ranges");
    }
    let stored = next_best(&mut c, t, &alice.to_string())
        .await
        .expect("decided");
    assert_eq!(
        decisions_of(&mut c, t)
            .await
            .iter()
            .map(|d| d.decision_id.clone())
            .collect::<Vec<_>>(),
        vec![stored.actions[0].decision_id.clone()]
    );
    s.stop().await;
}

#[tokio::test]
async fn list_decisions_refuses_bad_filters_sizes_and_tokens() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    created(&s, t, &[alice, bob]).await;
    created(&s, stranger, &[alice]).await;
    let a = create(&mut c, t, valid("A")).await;
    create(&mut c, t, valid("B")).await;
    create(&mut c, stranger, valid("A")).await;
    for customer in [alice, bob] {
        next_best(&mut c, t, &customer.to_string())
            .await
            .expect("decided");
    }
    next_best(&mut c, stranger, &alice.to_string())
        .await
        .expect("decided");
    let all = decisions_of(&mut c, t).await;
    assert_eq!(all.len(), 4);
    let lc = s.client();
    let list = move |tenant: Uuid, r: ListDecisionsRequest| {
        let mut c = lc.clone();
        async move { c.list_decisions(req(tenant, r)).await }
    };
    let with = |f: &dyn Fn(&mut ListDecisionsRequest)| changed(ListDecisionsRequest::default(), f);

    let mut cases: Vec<(Vec<&str>, ListDecisionsRequest)> = vec![(
        vec!["customer_id", "treatment_id", "outcome", "page_size"],
        ListDecisionsRequest {
            customer_id: "x".into(),
            treatment_id: "y".into(),
            outcome: 99,
            page_size: -1,
            page_token: FORGED_TOKEN.into(),
        },
    )];
    for id in MALFORMED_IDS {
        cases.push((vec!["customer_id"], with(&|r| r.customer_id = id.into())));
        cases.push((vec!["treatment_id"], with(&|r| r.treatment_id = id.into())));
    }
    for outcome in [5, 99, -1, i32::MAX, i32::MIN] {
        cases.push((vec!["outcome"], with(&|r| r.outcome = outcome)));
    }
    for size in [-1, -1000, i32::MIN] {
        cases.push((vec!["page_size"], with(&|r| r.page_size = size)));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {}", brief(&r));
        assert_violations(list(t, r).await, &expected, &case);
    }

    // Page tokens: forged, altered, and genuine ones of other requests.
    let page = |customer_id: String, treatment_id: String, outcome: Outcome| ListDecisionsRequest {
        customer_id,
        treatment_id,
        outcome: outcome as i32,
        page_size: 1,
        page_token: String::new(),
    };
    let none = || page(String::new(), String::new(), Outcome::Unspecified);
    let token_of = |r: ListDecisionsRequest| {
        let list = list.clone();
        async move {
            let token = list(t, r)
                .await
                .expect_answer("a first page")
                .next_page_token;
            assert!(!token.is_empty());
            token
        }
    };
    let token = token_of(none()).await;
    for bad in forged_tokens(&token) {
        let case = format!("page_token {}", brief(&bad));
        let r = ListDecisionsRequest {
            page_token: bad,
            ..none()
        };
        assert_violations(list(t, r).await, &["page_token"], &case);
    }
    let by_alice = token_of(page(alice.to_string(), String::new(), Outcome::Unspecified)).await;
    let by_a = token_of(page(
        String::new(),
        a.treatment_id.clone(),
        Outcome::Unspecified,
    ))
    .await;
    let pending = token_of(page(String::new(), String::new(), Outcome::Pending)).await;
    let treatments_token = c
        .list_treatments(req(
            t,
            ListTreatmentsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("a page of treatments")
        .next_page_token;
    assert!(!treatments_token.is_empty());
    for (tenant, token, r, case) in [
        (
            t,
            &token,
            page(bob.to_string(), String::new(), Outcome::Unspecified),
            "all, for bob",
        ),
        (
            t,
            &token,
            page(String::new(), String::new(), Outcome::Accepted),
            "all, for ACCEPTED",
        ),
        (t, &by_alice, none(), "alice's, for all"),
        (
            t,
            &by_alice,
            page(bob.to_string(), String::new(), Outcome::Unspecified),
            "alice's, for bob",
        ),
        (
            t,
            &by_alice,
            page(
                alice.to_string().to_uppercase(),
                String::new(),
                Outcome::Unspecified,
            ),
            "alice's, for alice spelled in upper case",
        ),
        (t, &by_a, none(), "treatment A's, for all"),
        (t, &pending, none(), "PENDING's, for all"),
        (
            t,
            &pending,
            page(String::new(), String::new(), Outcome::Ignored),
            "PENDING's, for IGNORED",
        ),
        (t, &treatments_token, none(), "ListTreatments' token"),
        (stranger, &token, none(), "another tenant's token"),
    ] {
        let r = ListDecisionsRequest {
            page_token: token.clone(),
            ..r
        };
        assert_violations(list(tenant, r).await, &["page_token"], case);
    }
    // A decisions token is not a treatments token either.
    assert_violations(
        c.list_treatments(req(
            t,
            ListTreatmentsRequest {
                page_size: 1,
                page_token: token.clone(),
                include_archived: false,
            },
        ))
        .await,
        &["page_token"],
        "ListDecisions' token, for ListTreatments",
    );
    // Filters naming nothing are valid and empty; the genuine tokens walk
    // every decision once.
    for r in [
        page(
            Uuid::new_v4().to_string(),
            String::new(),
            Outcome::Unspecified,
        ),
        page(
            String::new(),
            Uuid::new_v4().to_string(),
            Outcome::Unspecified,
        ),
        page(String::new(), String::new(), Outcome::Declined),
    ] {
        let got = list(t, r).await.expect_answer("an empty filter");
        assert!(got.decisions.is_empty() && got.next_page_token.is_empty());
    }
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let p = list(
            t,
            ListDecisionsRequest {
                page_token: next,
                ..none()
            },
        )
        .await
        .expect_answer("a page");
        seen.extend(p.decisions);
        next = p.next_page_token;
        if next.is_empty() {
            break;
        }
    }
    assert_eq!(seen, all);
    let largest = list(
        t,
        ListDecisionsRequest {
            page_size: i32::MAX,
            ..none()
        },
    )
    .await
    .expect_answer("the largest page");
    assert_eq!(largest.decisions, all);
    s.stop().await;
}

/// Priors are "more than 0 and at most 10,000": the smallest such doubles
/// (subnormal ones) are valid, and deciding with them must answer.
#[tokio::test]
async fn the_smallest_valid_priors_do_not_break_deciding() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let alice = Uuid::new_v4();
    created(&s, t, &[alice]).await;
    let tiny = [5e-324, 1e-310, f64::MIN_POSITIVE, 1e-300];
    for (i, x) in tiny.into_iter().enumerate() {
        for (j, (alpha, beta)) in [(1.0, x), (x, 1.0), (x, x), (10_000.0, x)]
            .into_iter()
            .enumerate()
        {
            let made = create(
                &mut c,
                t,
                Treatment {
                    prior_alpha: alpha,
                    prior_beta: beta,
                    ..valid(&format!("Prior {i}.{j}"))
                },
            )
            .await;
            assert_eq!((made.prior_alpha, made.prior_beta), (alpha, beta));
        }
    }
    for exploration in [false, true] {
        c.update_policy(req(
            t,
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy {
                    exploration,
                    ..Default::default()
                }),
                update_mask: mask(&["exploration"]),
            },
        ))
        .await
        .expect_answer("exploration set");
        for preview in [true, false] {
            let r = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                c.get_next_best_actions(req(
                    t,
                    GetNextBestActionsRequest {
                        customer_id: alice.to_string(),
                        limit: 20,
                        preview,
                        ..Default::default()
                    },
                )),
            )
            .await
            .expect("deciding answers within a minute")
            .expect_answer("deciding with the smallest priors");
            assert!(!r.actions.is_empty());
            for a in &r.actions {
                let p = a.propensity.expect("a propensity");
                for x in [p.mean, p.lower, p.upper, p.ranked] {
                    assert!((0.0..=1.0).contains(&x), "{p:?}");
                }
                assert!(p.lower <= p.upper, "{p:?}");
            }
        }
    }
    s.stop().await;
}

/// The messages of a StreamNextBestActions call, up to its end.
async fn streamed(
    c: &mut Client,
    tenant: Uuid,
    r: StreamNextBestActionsRequest,
) -> Vec<StreamNextBestActionsResponse> {
    let mut stream = c
        .stream_next_best_actions(req(tenant, r))
        .await
        .expect_answer("the stream starts");
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.expect("the stream goes on") {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn stream_next_best_actions_refuses_bad_input_and_stores_nothing() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let alice = Uuid::new_v4();
    created(&s, t, &[alice]).await;
    let audience = segment(&s, t, &[alice]).await;
    created(&s, stranger, &[alice]).await;
    let theirs = segment(&s, stranger, &[alice]).await;
    create(&mut c, t, valid("Spring")).await;
    create(&mut c, stranger, valid("Spring")).await;
    let asked = |f: &dyn Fn(&mut StreamNextBestActionsRequest)| {
        changed(
            StreamNextBestActionsRequest {
                segment_id: audience.to_string(),
                ..Default::default()
            },
            f,
        )
    };

    let mut cases: Vec<(Vec<&str>, StreamNextBestActionsRequest)> = vec![(
        vec!["segment_id", "channel", "limit_per_customer"],
        StreamNextBestActionsRequest {
            segment_id: "../x".into(),
            channel: -1,
            limit_per_customer: 6,
            preview: true,
            explain: true,
            rule_text: String::new(),
        },
    )];
    // Both audiences at once; a rule too long.
    cases.push((
        vec!["rule_text"],
        asked(&|r| r.rule_text = "purchases >= 1".into()),
    ));
    cases.push((
        vec!["rule_text"],
        asked(&|r| {
            r.segment_id = String::new();
            r.rule_text = "x".repeat(10_001);
        }),
    ));
    for id in BAD_IDS {
        for (preview, explain) in [(false, false), (true, true)] {
            cases.push((
                vec!["segment_id"],
                asked(&|r| {
                    r.segment_id = id.into();
                    r.preview = preview;
                    r.explain = explain;
                }),
            ));
        }
    }
    for channel in [6, 99, -1, i32::MAX, i32::MIN] {
        cases.push((vec!["channel"], asked(&|r| r.channel = channel)));
    }
    for limit in [-1, 6, 20, i32::MAX, i32::MIN] {
        cases.push((
            vec!["limit_per_customer"],
            asked(&|r| r.limit_per_customer = limit),
        ));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(
            c.stream_next_best_actions(req(t, r)).await,
            &expected,
            &case,
        );
        assert!(decisions_of(&mut c, t).await.is_empty(), "{case} decided");
    }
    // Segments the service does not know, or another tenant's: NOT_FOUND.
    for (tenant, segment, case) in [
        (t, Uuid::new_v4(), "an unknown segment"),
        (t, Uuid::nil(), "the nil UUID"),
        (t, alice, "a customer's id"),
        (t, theirs, "another tenant's segment"),
        (stranger, audience, "another tenant's segment, from there"),
    ] {
        assert_code(
            c.stream_next_best_actions(req(
                tenant,
                StreamNextBestActionsRequest {
                    segment_id: segment.to_string(),
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
            case,
        );
    }
    assert!(decisions_of(&mut c, t).await.is_empty());
    assert!(decisions_of(&mut c, stranger).await.is_empty());
    // A preview decides for the member and stores nothing; the ends of
    // the ranges are valid.
    for (channel, limit) in [(0, 0), (0, 5), (ContactChannel::Email as i32, 1)] {
        let got = streamed(
            &mut c,
            t,
            StreamNextBestActionsRequest {
                segment_id: audience.to_string().to_uppercase(),
                channel,
                limit_per_customer: limit,
                preview: true,
                explain: true,
                rule_text: String::new(),
            },
        )
        .await;
        let summary = got
            .last()
            .and_then(|m| m.summary.clone())
            .expect("a summary last");
        assert_eq!((summary.members, summary.actions), (1, 1));
    }
    assert!(decisions_of(&mut c, t).await.is_empty());
    streamed(&mut c, t, asked(&|_| {})).await;
    assert_eq!(decisions_of(&mut c, t).await.len(), 1);
    s.stop().await;
}
