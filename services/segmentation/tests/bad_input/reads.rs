//! Customer reads, history and watch, the classification policy, and tenancy.

use super::*;

#[tokio::test]
async fn customer_reads_refuse_bad_and_unknown_ids() {
    let s = start().await;
    let t = Uuid::new_v4();
    let customer = Customer::new("ES").bought(1, 10, 3, 3);
    insert(&s.pool, t, std::slice::from_ref(&customer)).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    let cid = customer.id.to_string();

    for id in BAD_IDS {
        invalid(
            c.classify_customer(req(
                t,
                ClassifyCustomerRequest {
                    customer_id: id.into(),
                },
            ))
            .await,
            "customer_id",
        );
        invalid(
            c.explain_membership(req(
                t,
                ExplainMembershipRequest {
                    customer_id: id.into(),
                    segment_id: seg.segment_id.clone(),
                },
            ))
            .await,
            "customer_id",
        );
        invalid(
            c.explain_membership(req(
                t,
                ExplainMembershipRequest {
                    customer_id: cid.clone(),
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
        if !id.is_empty() {
            // An empty segment_id is the whole tenant's report.
            invalid(
                c.get_rfm_report(req(
                    t,
                    GetRfmReportRequest {
                        segment_id: id.into(),
                    },
                ))
                .await,
                "segment_id",
            );
        }
    }
    let unknown = Uuid::new_v4().to_string();
    failed(
        c.classify_customer(req(
            t,
            ClassifyCustomerRequest {
                customer_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: unknown.clone(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cid.clone(),
                segment_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.get_rfm_report(req(
            t,
            GetRfmReportRequest {
                segment_id: unknown,
            },
        ))
        .await,
        Code::NotFound,
    );
    // The good requests answer.
    c.classify_customer(req(
        t,
        ClassifyCustomerRequest {
            customer_id: cid.clone(),
        },
    ))
    .await
    .expect("classified");
    let e = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cid,
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .expect_answer("explained");
    assert!(e.member && e.rule_held);
    let r = c
        .get_rfm_report(req(
            t,
            GetRfmReportRequest {
                segment_id: String::new(),
            },
        ))
        .await
        .expect_answer("the report");
    assert_eq!(r.scored_customer_count, 1);
    s.stop().await;
}

#[tokio::test]
async fn history_and_watch_refuse_bad_ids_and_times() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("All", "purchases >= 0")).await;
    let now = chrono::Utc::now().timestamp();
    let day = 86_400;
    let history = |start_time, end_time, granularity| GetSegmentHistoryRequest {
        segment_id: seg.segment_id.clone(),
        start_time,
        end_time,
        granularity,
    };

    for id in BAD_IDS {
        invalid(
            c.get_segment_history(req(
                t,
                GetSegmentHistoryRequest {
                    segment_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "segment_id",
        );
    }
    failed(
        c.get_segment_history(req(
            t,
            GetSegmentHistoryRequest {
                segment_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    for g in [999, -1] {
        invalid(
            c.get_segment_history(req(t, history(None, None, g))).await,
            "granularity",
        );
    }
    for bad in broken_times() {
        invalid(
            c.get_segment_history(req(t, history(bad, None, 0))).await,
            "start_time",
        );
        invalid(
            c.get_segment_history(req(t, history(None, bad, 0))).await,
            "end_time",
        );
    }
    // Start not before end.
    invalid(
        c.get_segment_history(req(t, history(at(now, 0), at(now - day, 0), 0)))
            .await,
        "start_time",
    );
    // More than 1,000 intervals.
    invalid(
        c.get_segment_history(req(
            t,
            history(
                at(now - 100 * day, 0),
                at(now, 0),
                HistoryGranularity::Hour as i32,
            ),
        ))
        .await,
        "granularity",
    );
    // Older than the 400 days kept, down to year 1: OUT_OF_RANGE.
    for start in [now - 500 * day, YEAR_1] {
        failed(
            c.get_segment_history(req(t, history(at(start, 0), at(start + day, 0), 0)))
                .await,
            Code::OutOfRange,
        );
    }
    // The far future is a valid, empty range.
    let far = 253_402_300_799 - 10 * day; // late December 9999
    let h = c
        .get_segment_history(req(t, history(at(far, 0), at(far + 5 * day, 0), 0)))
        .await
        .expect_answer("a range in year 9999");
    assert!(h.points.iter().all(|p| p.entered_count == 0));

    // WatchMembership.
    let watch = |segment_id: &str, start| WatchMembershipRequest {
        segment_id: segment_id.into(),
        start,
    };
    use watch_membership_request::Start;
    for id in BAD_IDS.iter().filter(|i| !i.is_empty()) {
        invalid(
            c.watch_membership(req(t, watch(id, None))).await,
            "segment_id",
        );
    }
    failed(
        c.watch_membership(req(t, watch(&Uuid::new_v4().to_string(), None)))
            .await,
        Code::NotFound,
    );
    for after in [-1, i64::MIN] {
        invalid(
            c.watch_membership(req(
                t,
                watch(&seg.segment_id, Some(Start::AfterSequence(after))),
            ))
            .await,
            "after_sequence",
        );
    }
    for bad in broken_times() {
        invalid(
            c.watch_membership(req(t, watch(&seg.segment_id, bad.map(Start::StartTime))))
                .await,
            "start_time",
        );
    }
    invalid(
        c.watch_membership(req(
            t,
            watch(
                "",
                Some(Start::StartTime(Timestamp {
                    seconds: now + day,
                    nanos: 0,
                })),
            ),
        ))
        .await,
        "start_time",
    );
    for start in [now - 500 * day, YEAR_1] {
        failed(
            c.watch_membership(req(
                t,
                watch(
                    "",
                    Some(Start::StartTime(Timestamp {
                        seconds: start,
                        nanos: 0,
                    })),
                ),
            ))
            .await,
            Code::OutOfRange,
        );
    }
    // WatchChanges (internal feed).
    for after in [-1, i64::MIN] {
        invalid(
            c.watch_changes(req(
                t,
                WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                },
            ))
            .await,
            "after_sequence",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn policy_updates_refuse_bad_values_and_change_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    // Start from an overridden policy so that "unchanged" is not "default".
    c.update_classification_policy(req(
        t,
        UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(3),
                partner_contract_tag: Some("key-account".into()),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases", "partner_contract_tag"]),
        },
    ))
    .await
    .expect("a valid update");
    let before = policy(&mut c, t).await;

    let update = |p: ClassificationPolicy, paths: &[&str]| UpdateClassificationPolicyRequest {
        policy: Some(p),
        update_mask: mask(paths),
    };
    let mut cases: Vec<(UpdateClassificationPolicyRequest, String)> = vec![
        (
            UpdateClassificationPolicyRequest {
                policy: None,
                update_mask: None,
            },
            "update_mask".into(),
        ),
        (
            update(ClassificationPolicy::default(), &[]),
            "update_mask".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["etag"]),
            "update_mask.paths[0]".into(),
        ),
        (
            update(
                ClassificationPolicy::default(),
                &["friend_min_purchases", "update_time"],
            ),
            "update_mask.paths[1]".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["no_such_field"]),
            "update_mask.paths[0]".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["1 OR 1=1"]),
            "update_mask.paths[0]".into(),
        ),
    ];
    // Every float field: NaN, infinities, negative, far too large.
    type FloatSetter = fn(&mut ClassificationPolicy, f64);
    let floats: [(&str, FloatSetter); 5] = [
        ("partner_clv_top_percent", |p, v| {
            p.partner_clv_top_percent = Some(v)
        }),
        ("dissolution_max_p_alive", |p, v| {
            p.dissolution_max_p_alive = Some(v)
        }),
        ("dissolution_silence_factor", |p, v| {
            p.dissolution_silence_factor = Some(v)
        }),
        ("expansion_min_growth_percent", |p, v| {
            p.expansion_min_growth_percent = Some(v)
        }),
        ("commitment_min_p_alive", |p, v| {
            p.commitment_min_p_alive = Some(v)
        }),
    ];
    for (name, set) in floats {
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            1e300,
            -0.000_001,
        ] {
            let mut p = ClassificationPolicy::default();
            set(&mut p, v);
            cases.push((update(p, &[name]), format!("policy.{name}")));
        }
    }
    // Integer fields: negative and far too large.
    type IntSetter = fn(&mut ClassificationPolicy, i32);
    let ints: [(&str, IntSetter); 4] = [
        ("friend_min_purchases", |p, v| {
            p.friend_min_purchases = Some(v)
        }),
        ("friend_min_csat", |p, v| p.friend_min_csat = Some(v)),
        ("commitment_min_active_periods", |p, v| {
            p.commitment_min_active_periods = Some(v)
        }),
        ("expansion_period_days", |p, v| {
            p.expansion_period_days = Some(v)
        }),
    ];
    for (name, set) in ints {
        for v in [-1, i32::MIN, i32::MAX] {
            let mut p = ClassificationPolicy::default();
            set(&mut p, v);
            cases.push((update(p, &[name]), format!("policy.{name}")));
        }
    }
    // The tag: NUL, hostile text, too long.
    for tag in [
        "a\0b".to_string(),
        TEXT.into(),
        "t".repeat(65),
        "-lead".into(),
    ] {
        cases.push((
            update(
                ClassificationPolicy {
                    partner_contract_tag: Some(tag),
                    ..Default::default()
                },
                &["partner_contract_tag"],
            ),
            "policy.partner_contract_tag".into(),
        ));
    }
    for (r, field) in cases {
        let what = format!("{r:?}");
        let e = refused(c.update_classification_policy(req(t, r)).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.contains(&field),
            "{what}: no violation on {field} among {fields:?}"
        );
        assert_eq!(policy(&mut c, t).await, before, "{what} changed the policy");
    }
    // Several bad fields at once: one violation each, and a good field in
    // the same request is not applied either.
    let e = refused(
        c.update_classification_policy(req(
            t,
            update(
                ClassificationPolicy {
                    friend_min_purchases: Some(5),
                    friend_min_nps: Some(11),
                    commitment_min_p_alive: Some(f64::NAN),
                    ..Default::default()
                },
                &[
                    "friend_min_purchases",
                    "friend_min_nps",
                    "commitment_min_p_alive",
                ],
            ),
        ))
        .await,
    );
    let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
    assert_eq!(
        fields,
        ["policy.friend_min_nps", "policy.commitment_min_p_alive"]
    );
    assert_eq!(policy(&mut c, t).await, before);
    // A stale or forged etag: ABORTED.
    for etag in ["p0", "p999", "\0", TEXT] {
        failed(
            c.update_classification_policy(req(
                t,
                update(
                    ClassificationPolicy {
                        friend_min_purchases: Some(9),
                        etag: etag.into(),
                        ..Default::default()
                    },
                    &["friend_min_purchases"],
                ),
            ))
            .await,
            Code::Aborted,
        );
    }
    assert_eq!(policy(&mut c, t).await, before);
    s.stop().await;
}

#[tokio::test]
async fn every_method_needs_a_tenant() {
    let s = start().await;
    let mut c = s.client();
    let id = Uuid::new_v4().to_string();
    let bad_tenant = |msg: ListSegmentsRequest, value: &str| {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            rapport_kit::context::TENANT_HEADER,
            value.parse().expect("ASCII metadata"),
        );
        r
    };
    for value in ["", "not-a-uuid", "1 OR 1=1", "../x"] {
        failed(
            c.list_segments(bad_tenant(ListSegmentsRequest::default(), value))
                .await,
            Code::Unauthenticated,
        );
    }
    let u = Code::Unauthenticated;
    failed(c.list_fields(no(ListFieldsRequest {})).await, u);
    failed(
        c.create_segment(no(dynamic("X", "purchases >= 1"))).await,
        u,
    );
    failed(
        c.get_segment(no(GetSegmentRequest {
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.update_segment(no(UpdateSegmentRequest {
            segment: Some(Segment {
                segment_id: id.clone(),
                name: "Y".into(),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
        }))
        .await,
        u,
    );
    failed(
        c.delete_segment(no(DeleteSegmentRequest {
            segment_id: id.clone(),
            etag: String::new(),
        }))
        .await,
        u,
    );
    failed(c.list_segments(no(ListSegmentsRequest::default())).await, u);
    failed(
        c.add_members(no(AddMembersRequest {
            segment_id: id.clone(),
            customer_ids: vec![id.clone()],
        }))
        .await,
        u,
    );
    failed(
        c.remove_members(no(RemoveMembersRequest {
            segment_id: id.clone(),
            customer_ids: vec![id.clone()],
        }))
        .await,
        u,
    );
    failed(
        c.preview_segment(no(preview_text("purchases >= 1", 0)))
            .await,
        u,
    );
    failed(
        c.refresh_segment(no(RefreshSegmentRequest {
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.list_members(no(ListMembersRequest {
            segment_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.get_customer_segments(no(GetCustomerSegmentsRequest {
            customer_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.get_segment_history(no(GetSegmentHistoryRequest {
            segment_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.watch_membership(no(WatchMembershipRequest::default()))
            .await,
        u,
    );
    failed(
        c.explain_membership(no(ExplainMembershipRequest {
            customer_id: id.clone(),
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.get_rfm_report(no(GetRfmReportRequest::default())).await,
        u,
    );
    failed(
        c.classify_customer(no(ClassifyCustomerRequest {
            customer_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.get_classification_policy(no(GetClassificationPolicyRequest {}))
            .await,
        u,
    );
    failed(
        c.update_classification_policy(no(UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(3),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases"]),
        }))
        .await,
        u,
    );
    // Nothing was written by any of them.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(&s.pool)
        .await
        .expect("count segments");
    assert_eq!(n, 0);
    // ListFields answers with a tenant.
    let fields = c
        .list_fields(req(Uuid::new_v4(), ListFieldsRequest {}))
        .await
        .expect_answer("the catalogue");
    assert!(fields.fields.iter().any(|f| f.name == "purchases"));
    s.stop().await;
}
