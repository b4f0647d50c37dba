//! Creating, reading, updating and deleting segments, and other tenants.

use super::*;

#[tokio::test]
async fn create_segment_refuses_bad_input_and_writes_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();

    let with = |f: &dyn Fn(&mut Segment)| {
        let mut r = dynamic("Valid", "purchases >= 1");
        if let Some(seg) = r.segment.as_mut() {
            f(seg);
        }
        r
    };
    invalid(
        c.create_segment(req(
            t,
            CreateSegmentRequest {
                segment: None,
                request_id: String::new(),
            },
        ))
        .await,
        "segment",
    );
    for name in ["", " lead", "trail ", "a\0b", "tab\there"] {
        invalid(
            c.create_segment(req(t, with(&|s| s.name = name.into())))
                .await,
            "segment.name",
        );
    }
    invalid(
        c.create_segment(req(t, with(&|s| s.name = "é".repeat(101))))
            .await,
        "segment.name",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.name = Uuid::new_v4().to_string())))
            .await,
        "segment.name",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.description = "😀".repeat(2001))))
            .await,
        "segment.description",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.description = "before\0after".into())))
            .await,
        "segment.description",
    );
    for kind in [SegmentKind::Unspecified as i32, 999, -1] {
        invalid(
            c.create_segment(req(t, with(&|s| s.kind = kind))).await,
            "segment.kind",
        );
    }
    for approach in [999, -1] {
        invalid(
            c.create_segment(req(t, with(&|s| s.marketing_approach = approach)))
                .await,
            "segment.marketing_approach",
        );
    }
    // Rules: missing, unparsable, too long, too many items, NUL in a literal,
    // both forms, a rule on a STATIC segment.
    for rule in [
        "",
        "purchases >=",
        "country = \"a\0b\"",
        "country = \"a\\u0000b\"",
        "purchases \0>= 1",
    ] {
        invalid(
            c.create_segment(req(t, with(&|s| s.rule_text = rule.into())))
                .await,
            "segment.rule_text",
        );
    }
    let long = format!("purchases >= 1{}", " ".repeat(10_000));
    invalid(
        c.create_segment(req(t, with(&|s| s.rule_text = long.clone())))
            .await,
        "segment.rule_text",
    );
    let many = format!(
        "country in [{}]",
        (0..1001)
            .map(|i| format!("\"C{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.rule_text = many.clone())))
            .await,
        "segment.rule_text",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.rule = Some(Rule::default()))))
            .await,
        "segment.rule_text",
    );
    invalid(
        c.create_segment(req(
            t,
            of_kind("List", SegmentKind::Static, "purchases > 1"),
        ))
        .await,
        "segment.rule_text",
    );
    // Refresh intervals: negative, fractional, out of range, on a STATIC.
    for d in [
        secs(-1),
        secs(0),
        secs(299),
        secs(86_401),
        secs(i64::MAX),
        secs(i64::MIN),
        Some(PbDuration {
            seconds: 600,
            nanos: -1,
        }),
        Some(PbDuration {
            seconds: 600,
            nanos: 2_000_000_000,
        }),
    ] {
        invalid(
            c.create_segment(req(t, with(&|s| s.refresh_interval = d)))
                .await,
            "segment.refresh_interval",
        );
    }
    let mut on_static = of_kind("List", SegmentKind::Static, "");
    if let Some(seg) = on_static.segment.as_mut() {
        seg.refresh_interval = secs(600);
    }
    invalid(
        c.create_segment(req(t, on_static)).await,
        "segment.refresh_interval",
    );
    // Idempotency keys: too long, not printable ASCII, NUL.
    for key in [
        "k".repeat(129),
        "clé".into(),
        "a\0b".into(),
        "line\n".into(),
    ] {
        let mut r = dynamic("Valid", "purchases >= 1");
        r.request_id = key;
        invalid(c.create_segment(req(t, r)).await, "request_id");
    }
    // Nothing was written.
    assert!(all_segments(&mut c, t).await.is_empty());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&s.pool)
        .await
        .expect("count events");
    assert_eq!(n, 0, "a refused create appended an event");
    s.stop().await;
}

#[tokio::test]
async fn hostile_text_is_stored_and_returned_byte_for_byte() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();

    let mut r = dynamic(TEXT, &format!("country = {} or purchases >= 0", lit(TEXT)));
    if let Some(seg) = r.segment.as_mut() {
        seg.description = format!("{TEXT}\n\ttabs and new lines are text too");
    }
    r.request_id = "Robert'); DROP TABLE segments;-- %_\\".into();
    let created = create(&mut c, t, r.clone()).await;
    assert_eq!(created.name, TEXT);
    assert_eq!(
        created.description,
        format!("{TEXT}\n\ttabs and new lines are text too")
    );
    assert_eq!(created.member_count, 1);
    let got = get_segment(&mut c, t, &created.segment_id).await;
    assert_eq!(got.name, TEXT);
    assert_eq!(got.description, created.description);
    assert_eq!(got.rule_text, created.rule_text);
    assert!(got.rule_text.contains(&lit(TEXT)), "{}", got.rule_text);
    // The retry with the same hostile key returns the same segment.
    let again = create(&mut c, t, r).await;
    assert_eq!(again.segment_id, created.segment_id);
    // The canonical text parses back to the same literal.
    let p = c
        .preview_segment(req(t, preview_text(got.rule_text.clone(), 0)))
        .await
        .expect_answer("the stored rule previews");
    assert_eq!(p.rule_text, got.rule_text);
    assert_eq!(p.match_count, 1);
    // The wildcard characters are matched literally, not as patterns.
    for rule in ["country contains \"%\"", "country starts_with \"_\""] {
        let p = c
            .preview_segment(req(t, preview_text(rule, 0)))
            .await
            .expect_answer("a valid rule previews");
        assert_eq!(p.match_count, 0, "{rule} matched a literal wildcard");
    }
    // Listed and renamed byte for byte too.
    let listed = all_segments(&mut c, t).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, TEXT);
    let renamed = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: created.segment_id.clone(),
                    name: format!("{TEXT} 2"),
                    description: TEXT.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "description"]),
            },
        ))
        .await
        .expect_answer("a hostile rename is valid")
        .segment
        .expect("the segment");
    assert_eq!(renamed.name, format!("{TEXT} 2"));
    assert_eq!(
        get_segment(&mut c, t, &created.segment_id)
            .await
            .description,
        TEXT
    );
    // A rule referring to it by its hostile name resolves.
    let refer = create(
        &mut c,
        t,
        dynamic(
            "Refers",
            &format!("in_segment({})", lit(&format!("{TEXT} 2"))),
        ),
    )
    .await;
    assert_eq!(refer.member_count, 1);
    s.stop().await;
}

#[tokio::test]
async fn get_update_delete_refuse_bad_ids_and_bad_updates() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES").bought(1, 10, 5, 5)]).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let before = get_segment(&mut c, t, &seg.segment_id).await;
    let list_before = get_segment(&mut c, t, &list.segment_id).await;

    for id in BAD_IDS {
        invalid(
            c.get_segment(req(
                t,
                GetSegmentRequest {
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
        invalid(
            c.update_segment(req(
                t,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        segment_id: id.into(),
                        name: "New".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
            "segment.segment_id",
        );
        invalid(
            c.delete_segment(req(
                t,
                DeleteSegmentRequest {
                    segment_id: id.into(),
                    etag: String::new(),
                },
            ))
            .await,
            "segment_id",
        );
    }
    let unknown = Uuid::new_v4().to_string();
    failed(
        c.get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: unknown.clone(),
                    name: "New".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.delete_segment(req(
            t,
            DeleteSegmentRequest {
                segment_id: unknown,
                etag: String::new(),
            },
        ))
        .await,
        Code::NotFound,
    );

    // Bad updates of an existing segment; each leaves it as it was.
    let upd = |seg: Segment, paths: &[&str]| UpdateSegmentRequest {
        segment: Some(seg),
        update_mask: mask(paths),
    };
    let id = seg.segment_id.clone();
    let base = || Segment {
        segment_id: id.clone(),
        ..Default::default()
    };
    invalid(
        c.update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: None,
                update_mask: mask(&["name"]),
            },
        ))
        .await,
        "segment",
    );
    let cases: Vec<(UpdateSegmentRequest, &str)> = vec![
        (
            UpdateSegmentRequest {
                segment: Some(base()),
                update_mask: None,
            },
            "update_mask",
        ),
        (upd(base(), &[]), "update_mask"),
        (upd(base(), &["kind"]), "update_mask.paths[0]"),
        (upd(base(), &["name", "etag"]), "update_mask.paths[1]"),
        (upd(base(), &["member_count"]), "update_mask.paths[0]"),
        (upd(base(), &["segment_id"]), "update_mask.paths[0]"),
        (upd(base(), &["nope"]), "update_mask.paths[0]"),
        (upd(base(), &["name\0"]), "update_mask.paths[0]"),
        (upd(base(), &["rule", "rule_text"]), "update_mask"),
        (upd(base(), &["name"]), "segment.name"),
        (
            upd(changed(base(), |s| s.name = "x\0y".into()), &["name"]),
            "segment.name",
        ),
        (
            upd(changed(base(), |s| s.name = "n".repeat(101)), &["name"]),
            "segment.name",
        ),
        (
            upd(
                changed(base(), |s| s.description = "d".repeat(2001)),
                &["description"],
            ),
            "segment.description",
        ),
        (
            upd(
                changed(base(), |s| s.description = "nul\0".into()),
                &["description"],
            ),
            "segment.description",
        ),
        (
            upd(
                changed(base(), |s| s.marketing_approach = 999),
                &["marketing_approach"],
            ),
            "segment.marketing_approach",
        ),
        (
            upd(
                changed(base(), |s| s.refresh_interval = secs(-600)),
                &["refresh_interval"],
            ),
            "segment.refresh_interval",
        ),
        (upd(base(), &["rule_text"]), "segment.rule_text"),
        (
            upd(
                changed(base(), |s| s.rule_text = "purchases >=".into()),
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
        (
            upd(
                changed(base(), |s| s.rule_text = "country = \"\0\"".into()),
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
        (
            upd(
                changed(base(), |s| {
                    s.rule_text = format!("in_segment({})", lit("Buyers"))
                }),
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
    ];
    for (r, field) in cases {
        let what = format!("{r:?}");
        let e = refused(c.update_segment(req(t, r)).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.iter().any(|f| f == field),
            "{what}: no violation on {field} among {fields:?}"
        );
        assert_eq!(
            get_segment(&mut c, t, &id).await,
            before,
            "{what} changed the segment"
        );
    }
    // A STATIC segment takes no rule and no refresh interval.
    for (seg, paths, field) in [
        (
            Segment {
                segment_id: list.segment_id.clone(),
                rule_text: "purchases >= 1".into(),
                ..Default::default()
            },
            ["rule_text"],
            "segment.rule_text",
        ),
        (
            Segment {
                segment_id: list.segment_id.clone(),
                refresh_interval: secs(600),
                ..Default::default()
            },
            ["refresh_interval"],
            "segment.refresh_interval",
        ),
    ] {
        invalid(c.update_segment(req(t, upd(seg, &paths))).await, field);
        assert_eq!(get_segment(&mut c, t, &list.segment_id).await, list_before);
    }
    // A stale or forged etag: ABORTED, nothing changed, nothing deleted.
    for etag in ["v0", "v999", "1 OR 1=1", "\0"] {
        failed(
            c.update_segment(req(
                t,
                upd(
                    Segment {
                        name: "Renamed".into(),
                        etag: etag.into(),
                        ..base()
                    },
                    &["name"],
                ),
            ))
            .await,
            Code::Aborted,
        );
        failed(
            c.delete_segment(req(
                t,
                DeleteSegmentRequest {
                    segment_id: id.clone(),
                    etag: etag.into(),
                },
            ))
            .await,
            Code::Aborted,
        );
    }
    // Taking another segment's name: ALREADY_EXISTS, nothing changed.
    failed(
        c.update_segment(req(
            t,
            upd(changed(base(), |s| s.name = "List".into()), &["name"]),
        ))
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(get_segment(&mut c, t, &id).await, before);
    assert_eq!(all_segments(&mut c, t).await.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_and_changes_nothing() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let customer = Customer::new("ES").bought(2, 100, 200, 10);
    insert(&s.pool, a, std::slice::from_ref(&customer)).await;
    let mut c = s.client();
    let dynamic_a = create(&mut c, a, dynamic("Buyers", "purchases >= 1")).await;
    let static_a = create(&mut c, a, of_kind("List", SegmentKind::Static, "")).await;
    c.add_members(req(
        a,
        AddMembersRequest {
            segment_id: static_a.segment_id.clone(),
            customer_ids: vec![customer.id.to_string()],
        },
    ))
    .await
    .expect("members added");
    let dyn_before = get_segment(&mut c, a, &dynamic_a.segment_id).await;
    let static_before = get_segment(&mut c, a, &static_a.segment_id).await;
    let policy_before = policy(&mut c, a).await;
    let cid = customer.id.to_string();

    for id in [&dynamic_a.segment_id, &static_a.segment_id] {
        failed(
            c.get_segment(req(
                b,
                GetSegmentRequest {
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.update_segment(req(
                b,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        segment_id: id.clone(),
                        name: "Taken over".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.delete_segment(req(
                b,
                DeleteSegmentRequest {
                    segment_id: id.clone(),
                    etag: String::new(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.list_members(req(
                b,
                ListMembersRequest {
                    segment_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.get_segment_history(req(
                b,
                GetSegmentHistoryRequest {
                    segment_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.explain_membership(req(
                b,
                ExplainMembershipRequest {
                    customer_id: cid.clone(),
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.get_rfm_report(req(
                b,
                GetRfmReportRequest {
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.watch_membership(req(
                b,
                WatchMembershipRequest {
                    segment_id: id.clone(),
                    start: Some(watch_membership_request::Start::AfterSequence(0)),
                },
            ))
            .await,
            Code::NotFound,
        );
    }
    failed(
        c.refresh_segment(req(
            b,
            RefreshSegmentRequest {
                segment_id: dynamic_a.segment_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    for add in [true, false] {
        let r = AddMembersRequest {
            segment_id: static_a.segment_id.clone(),
            customer_ids: vec![cid.clone(), Uuid::new_v4().to_string()],
        };
        let res = if add {
            c.add_members(req(b, r))
                .await
                .map(|_| tonic::Response::new(()))
        } else {
            c.remove_members(req(
                b,
                RemoveMembersRequest {
                    segment_id: r.segment_id,
                    customer_ids: r.customer_ids,
                },
            ))
            .await
            .map(|_| tonic::Response::new(()))
        };
        failed(res, Code::NotFound);
    }
    // A's customer is unknown to B.
    failed(
        c.get_customer_segments(req(
            b,
            GetCustomerSegmentsRequest {
                customer_id: cid.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.classify_customer(req(
            b,
            ClassifyCustomerRequest {
                customer_id: cid.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    // B's lists and reports hold nothing of A's.
    assert!(all_segments(&mut c, b).await.is_empty());
    let rfm = c
        .get_rfm_report(req(b, GetRfmReportRequest::default()))
        .await
        .expect_answer("B's report");
    assert_eq!(
        (rfm.scored_customer_count, rfm.unscored_customer_count),
        (0, 0)
    );
    let p = c
        .preview_segment(req(b, preview_text("purchases >= 0", 100)))
        .await
        .expect_answer("B's preview");
    assert_eq!((p.match_count, p.customer_count), (0, 0));
    failed(
        c.preview_segment(req(
            b,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(format!(
                    "in_segment({})",
                    lit(&dynamic_a.segment_id)
                ))),
                sample_size: 0,
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    // B's policy change is B's alone.
    c.update_classification_policy(req(
        b,
        UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(7),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases"]),
        },
    ))
    .await
    .expect("B changes its policy");

    // A's objects are as they were.
    assert_eq!(
        get_segment(&mut c, a, &dynamic_a.segment_id).await,
        dyn_before
    );
    assert_eq!(
        get_segment(&mut c, a, &static_a.segment_id).await,
        static_before
    );
    assert_eq!(
        members(&mut c, a, &static_a.segment_id).await,
        vec![cid.clone()]
    );
    assert_eq!(policy(&mut c, a).await, policy_before);
    assert_eq!(all_segments(&mut c, a).await.len(), 2);
    s.stop().await;
}
