//! Listing, member changes, previews and refreshes.

use super::*;

#[tokio::test]
async fn list_methods_refuse_bad_sizes_filters_and_tokens() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let cs = [
        Customer::new("ES"),
        Customer::new("FR"),
        Customer::new("MX"),
    ];
    insert(&s.pool, a, &cs).await;
    insert(&s.pool, b, &cs).await;
    let ids: Vec<String> = cs.iter().map(|c| c.id.to_string()).collect();
    let mut c = s.client();
    let mut lists = Vec::new();
    for t in [a, b] {
        let mut mine = Vec::new();
        for name in ["L1", "L2", "L3"] {
            let l = create(&mut c, t, of_kind(name, SegmentKind::Static, "")).await;
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: l.segment_id.clone(),
                    customer_ids: ids.clone(),
                },
            ))
            .await
            .expect("members added");
            mine.push(l.segment_id);
        }
        lists.push(mine);
    }
    let (a_lists, b_lists) = (&lists[0], &lists[1]);

    // Page sizes: negative refused, huge lowered to 1,000.
    for size in [-1, i32::MIN] {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    page_size: size,
                    ..Default::default()
                },
            ))
            .await,
            "page_size",
        );
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: a_lists[0].clone(),
                    page_size: size,
                    page_token: String::new(),
                },
            ))
            .await,
            "page_size",
        );
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: ids[0].clone(),
                    page_size: size,
                    page_token: String::new(),
                },
            ))
            .await,
            "page_size",
        );
    }
    let huge = c
        .list_segments(req(
            a,
            ListSegmentsRequest {
                page_size: i32::MAX,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("a huge page size is lowered");
    assert_eq!(huge.segments.len(), 3);
    let huge = c
        .list_members(req(
            a,
            ListMembersRequest {
                segment_id: a_lists[0].clone(),
                page_size: i32::MAX,
                page_token: String::new(),
            },
        ))
        .await
        .expect_answer("a huge page size is lowered");
    assert_eq!(huge.members.len(), 3);
    // Filters out of range.
    for kind in [999, -1] {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    kind,
                    ..Default::default()
                },
            ))
            .await,
            "kind",
        );
    }
    invalid(
        c.list_segments(req(
            a,
            ListSegmentsRequest {
                marketing_approach: 999,
                ..Default::default()
            },
        ))
        .await,
        "marketing_approach",
    );
    // The ids of ListMembers and GetCustomerSegments.
    for id in BAD_IDS {
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "segment_id",
        );
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "customer_id",
        );
    }
    failed(
        c.list_members(req(
            a,
            ListMembersRequest {
                segment_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.get_customer_segments(req(
            a,
            GetCustomerSegmentsRequest {
                customer_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );

    // Genuine tokens of each list, for each tenant.
    let base = c.clone();
    let segments_token = |t: Uuid, kind: i32| {
        let mut c = base.clone();
        async move {
            c.list_segments(req(
                t,
                ListSegmentsRequest {
                    page_size: 1,
                    kind,
                    ..Default::default()
                },
            ))
            .await
            .expect_answer("first page")
            .next_page_token
        }
    };
    let members_token = |t: Uuid, segment: String| {
        let mut c = base.clone();
        async move {
            c.list_members(req(
                t,
                ListMembersRequest {
                    segment_id: segment,
                    page_size: 1,
                    page_token: String::new(),
                },
            ))
            .await
            .expect_answer("first page")
            .next_page_token
        }
    };
    let customer_token = |t: Uuid, customer: String| {
        let mut c = base.clone();
        async move {
            c.get_customer_segments(req(
                t,
                GetCustomerSegmentsRequest {
                    customer_id: customer,
                    page_size: 1,
                    page_token: String::new(),
                },
            ))
            .await
            .expect_answer("first page")
            .next_page_token
        }
    };
    let seg_a = segments_token(a, 0).await;
    let seg_a_static = segments_token(a, SegmentKind::Static as i32).await;
    let seg_b = segments_token(b, 0).await;
    let mem_a0 = members_token(a, a_lists[0].clone()).await;
    let mem_b0 = members_token(b, b_lists[0].clone()).await;
    let cus_a0 = customer_token(a, ids[0].clone()).await;
    let cus_b0 = customer_token(b, ids[0].clone()).await;
    for t in [
        &seg_a,
        &seg_a_static,
        &seg_b,
        &mem_a0,
        &mem_b0,
        &cus_a0,
        &cus_b0,
    ] {
        assert!(!t.is_empty(), "a first page of 1 of 3 has a next token");
    }
    // Each genuine token works where it was issued.
    let second = c
        .list_segments(req(
            a,
            ListSegmentsRequest {
                page_size: 1,
                page_token: seg_a.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_answer("the genuine token pages on");
    assert_eq!(second.segments[0].name, "L2");

    let junk = |genuine: &str| -> Vec<String> {
        vec![
            FORGED_TOKEN.into(),
            "!!!not base64!!!".into(),
            "A".repeat(5000),
            tampered(genuine),
            format!("{genuine}A"),
            genuine[..genuine.len() - 1].to_string(),
            format!("{genuine}\0"),
            "1 OR 1=1".into(),
        ]
    };
    // ListSegments: junk, another tenant's, another filter's, another list's.
    let mut bad = junk(&seg_a);
    bad.extend([
        seg_b.clone(),
        seg_a_static.clone(),
        mem_a0.clone(),
        cus_a0.clone(),
    ]);
    for token in bad {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await,
            "page_token",
        );
    }
    // ListMembers: also another segment's token.
    let mut bad = junk(&mem_a0);
    bad.extend([mem_b0.clone(), seg_a.clone(), cus_a0.clone()]);
    bad.push(members_token(a, a_lists[1].clone()).await);
    for token in bad {
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: a_lists[0].clone(),
                    page_size: 1,
                    page_token: token,
                },
            ))
            .await,
            "page_token",
        );
    }
    // GetCustomerSegments: also another customer's token.
    let mut bad = junk(&cus_a0);
    bad.extend([cus_b0.clone(), seg_a.clone(), mem_a0.clone()]);
    bad.push(customer_token(a, ids[1].clone()).await);
    for token in bad {
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: ids[0].clone(),
                    page_size: 1,
                    page_token: token,
                },
            ))
            .await,
            "page_token",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn member_changes_refuse_bad_input_and_change_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = [Customer::new("ES"), Customer::new("FR")];
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let buyers = create(&mut c, t, dynamic("All", "purchases >= 0")).await;
    let first = cs[0].id.to_string();
    c.add_members(req(
        t,
        AddMembersRequest {
            segment_id: list.segment_id.clone(),
            customer_ids: vec![first.clone()],
        },
    ))
    .await
    .expect("a member added");
    let before = get_segment(&mut c, t, &list.segment_id).await;
    let members_before = members(&mut c, t, &list.segment_id).await;
    let all_before = members(&mut c, t, &buyers.segment_id).await;
    let second = cs[1].id.to_string();

    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    for id in BAD_IDS {
        cases.push((id.into(), vec![second.clone()], "segment_id"));
    }
    cases.push((list.segment_id.clone(), vec![], "customer_ids"));
    cases.push((
        list.segment_id.clone(),
        (0..1001).map(|_| Uuid::new_v4().to_string()).collect(),
        "customer_ids",
    ));
    for bad in BAD_IDS {
        // A good id first: the whole request is refused, not half applied.
        cases.push((
            list.segment_id.clone(),
            vec![second.clone(), bad.to_string()],
            "customer_ids[1]",
        ));
    }
    for (segment, ids, field) in cases {
        invalid(
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: segment.clone(),
                    customer_ids: ids.clone(),
                },
            ))
            .await,
            field,
        );
        invalid(
            c.remove_members(req(
                t,
                RemoveMembersRequest {
                    segment_id: segment,
                    customer_ids: ids,
                },
            ))
            .await,
            field,
        );
        assert_eq!(members(&mut c, t, &list.segment_id).await, members_before);
    }
    // Unknown segment: NOT_FOUND; a rule-based one: FAILED_PRECONDITION.
    for (segment, code) in [
        (Uuid::new_v4().to_string(), Code::NotFound),
        (buyers.segment_id.clone(), Code::FailedPrecondition),
    ] {
        failed(
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: segment.clone(),
                    customer_ids: vec![second.clone()],
                },
            ))
            .await,
            code,
        );
        failed(
            c.remove_members(req(
                t,
                RemoveMembersRequest {
                    segment_id: segment,
                    customer_ids: vec![first.clone()],
                },
            ))
            .await,
            code,
        );
    }
    assert_eq!(members(&mut c, t, &buyers.segment_id).await, all_before);
    // Exactly 1,000 ids is the limit, not a refusal; unknown ones are reported.
    let mut thousand: Vec<String> = (0..999).map(|_| Uuid::new_v4().to_string()).collect();
    thousand.push(first.clone());
    let r = c
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: thousand.clone(),
            },
        ))
        .await
        .expect_answer("1,000 ids are accepted");
    assert_eq!(
        (r.added_count, r.already_member_count, r.member_count),
        (0, 1, 1)
    );
    assert_eq!(r.not_found_customer_ids.len(), 999);
    thousand.pop();
    let r = c
        .remove_members(req(
            t,
            RemoveMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: thousand,
            },
        ))
        .await
        .expect_answer("1,000 ids are accepted");
    assert_eq!((r.removed_count, r.not_member_count), (0, 999));
    assert_eq!(members(&mut c, t, &list.segment_id).await, members_before);
    assert_eq!(
        get_segment(&mut c, t, &list.segment_id).await.etag,
        before.etag
    );
    s.stop().await;
}

#[tokio::test]
async fn preview_and_refresh_refuse_bad_input() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES").bought(1, 10, 3, 3)]).await;
    let mut c = s.client();
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let snap = create(
        &mut c,
        t,
        of_kind("Snap", SegmentKind::Snapshot, "purchases >= 1"),
    )
    .await;
    let text = |t: &str| Some(preview_segment_request::RuleDefinition::RuleText(t.into()));

    let preview = |rule_definition, sample_size| PreviewSegmentRequest {
        rule_definition,
        sample_size,
    };
    invalid(
        c.preview_segment(req(t, preview(None, 0))).await,
        "rule_text",
    );
    invalid(
        c.preview_segment(req(t, preview(text(""), 0))).await,
        "rule_text",
    );
    for size in [-1, 101, i32::MIN, i32::MAX] {
        invalid(
            c.preview_segment(req(t, preview(text("purchases >= 1"), size)))
                .await,
            "sample_size",
        );
    }
    for rule in [
        "purchases >=",
        "purchases >= 1 and",
        "country = \"\0\"",
        "country contains \"\\u0000\"",
        "\0",
        "nope = 1",
        "purchases >= \"ten\"",
        "in_segment(\"no such segment\")",
        "in_segment(\"00000000-0000-0000-0000-000000000000\")",
        "clv in top 1e9%",
        "clv in top -5%",
        "csat >= 1e999999",
    ] {
        invalid(
            c.preview_segment(req(t, preview(text(rule), 0))).await,
            "rule_text",
        );
    }
    let deep = format!("{}purchases >= 1{}", "(".repeat(200), ")".repeat(200));
    invalid(
        c.preview_segment(req(t, preview(text(&deep), 0))).await,
        "rule_text",
    );
    let long_literal = format!("country = {}", lit(&"x".repeat(1025)));
    invalid(
        c.preview_segment(req(t, preview(text(&long_literal), 0)))
            .await,
        "rule_text",
    );
    invalid_under(
        c.preview_segment(req(
            t,
            preview(
                Some(preview_segment_request::RuleDefinition::Rule(
                    Rule::default(),
                )),
                0,
            ),
        ))
        .await,
        "rule",
    );
    // Structured rules: NUL in strings, non-finite and out-of-range
    // numbers, broken times, unknown references.
    let node = |n: rule::Node| Rule { node: Some(n) };
    let mut structured = vec![
        node(rule::Node::Contains(Contains {
            field: "country".into(),
            value: "a\0b".into(),
        })),
        node(rule::Node::StartsWith(StartsWith {
            field: "country".into(),
            prefix: "\0".into(),
        })),
        node(rule::Node::Exists(Exists {
            field: "purch\0ases".into(),
        })),
        node(rule::Node::InSegment(SegmentCondition {
            segment: Some(segment_condition::Segment::SegmentId(
                Uuid::new_v4().to_string(),
            )),
        })),
        node(rule::Node::InSegment(SegmentCondition {
            segment: Some(segment_condition::Segment::SegmentName("\0".into())),
        })),
        node(rule::Node::Time(TimeCondition {
            field: "last_purchase".into(),
            op: TimeOperator::Before as i32,
            reference: Some(time_condition::Reference::Time(Timestamp {
                seconds: 0,
                nanos: -1,
            })),
        })),
        node(rule::Node::Time(TimeCondition {
            field: "last_purchase".into(),
            op: 999,
            reference: Some(time_condition::Reference::Ago(PbDuration {
                seconds: 3600,
                nanos: 0,
            })),
        })),
        node(rule::Node::Comparison(Comparison {
            left: Some(Operand {
                operand: Some(operand::Operand::Field("purchases".into())),
            }),
            op: 999,
            value: Some(ScalarValue {
                kind: Some(scalar_value::Kind::IntegerValue(1)),
            }),
        })),
    ];
    for percent in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 100.5] {
        structured.push(node(rule::Node::TopPercent(TopPercent {
            field: "clv".into(),
            percent,
        })));
    }
    for decimal in ["NaN", "inf", "-inf", "1e400", "", "1 OR 1=1"] {
        structured.push(node(rule::Node::Comparison(Comparison {
            left: Some(Operand {
                operand: Some(operand::Operand::Field("monetary".into())),
            }),
            op: ComparisonOperator::Less as i32,
            value: Some(ScalarValue {
                kind: Some(scalar_value::Kind::DecimalValue(decimal.into())),
            }),
        })));
    }
    for r in structured {
        let what = format!("{r:?}");
        let e = refused(
            c.preview_segment(req(
                t,
                preview(Some(preview_segment_request::RuleDefinition::Rule(r)), 0),
            ))
            .await,
        );
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.iter().any(|f| f.starts_with("rule")),
            "{what}: {fields:?}"
        );
    }
    // Nesting of any depth: past the rule depth limit the rule is refused by
    // validation, past protobuf's recursion limit by decoding; both are
    // INVALID_ARGUMENT, never INTERNAL.
    for depth in [33, 99, 1000] {
        let mut deep = node(rule::Node::Exists(Exists {
            field: "purchases".into(),
        }));
        for _ in 0..depth {
            deep = node(rule::Node::Negate(Box::new(deep)));
        }
        let e = refused(
            c.preview_segment(req(
                t,
                preview(Some(preview_segment_request::RuleDefinition::Rule(deep)), 0),
            ))
            .await,
        );
        assert_eq!(e.code(), Code::InvalidArgument, "depth {depth}: {e:?}");
    }
    // Preview writes nothing.
    assert_eq!(all_segments(&mut c, t).await.len(), 2);

    // RefreshSegment.
    for id in BAD_IDS {
        invalid(
            c.refresh_segment(req(
                t,
                RefreshSegmentRequest {
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
    }
    failed(
        c.refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: Uuid::new_v4().to_string(),
            },
        ))
        .await,
        Code::NotFound,
    );
    let list_before = get_segment(&mut c, t, &list.segment_id).await;
    failed(
        c.refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: list.segment_id.clone(),
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(get_segment(&mut c, t, &list.segment_id).await, list_before);
    // The snapshot refreshes fine.
    c.refresh_segment(req(
        t,
        RefreshSegmentRequest {
            segment_id: snap.segment_id.clone(),
        },
    ))
    .await
    .expect("a snapshot refreshes");
    s.stop().await;
}
