//! Reads, service request updates, summaries, exports and the change feed.

use super::*;

#[tokio::test]
async fn get_interaction_refuses_malformed_ids_and_hides_other_tenants() {
    let s = start().await;
    let c = s.interactions();
    let tenant = Uuid::new_v4();
    let stored = record(&s, tenant, purchase(Uuid::new_v4(), at(2024, 5, 1, 0), 5)).await;
    assert_read_by_id(
        "interaction_id",
        tenant,
        Uuid::new_v4(),
        &stored.interaction_id,
        |t, id| {
            let mut c = c.clone();
            async move {
                c.get_interaction(req(t, GetInteractionRequest { interaction_id: id }))
                    .await
            }
        },
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn list_interactions_refuses_bad_filters_and_forged_page_tokens() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    for d in 1..=3 {
        record(&s, tenant, purchase(customer, at(2024, 5, d, 0), 1)).await;
    }
    let base = ListInteractionsRequest {
        customer_id: customer.to_string(),
        page_size: 1,
        ..Default::default()
    };
    let first = c
        .list_interactions(req(tenant, base.clone()))
        .await
        .expect_answer("first page");
    assert_eq!(first.interactions.len(), 1);
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());

    let with = |f: &dyn Fn(&mut ListInteractionsRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut cases: Vec<(&str, ListInteractionsRequest)> = vec![
        ("types[0]", with(&|r| r.types = vec![0])),
        ("types[1]", with(&|r| r.types = vec![1, 999])),
        ("types[0]", with(&|r| r.types = vec![-1])),
        ("channels[0]", with(&|r| r.channels = vec![0])),
        ("channels[0]", with(&|r| r.channels = vec![999])),
        (
            "custom_types",
            with(&|r| r.custom_types = (0..51).map(|n| format!("acme.t{n}")).collect()),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec![MULTILINE_TEXT.into()]),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec!["acme.a\0".into()]),
        ),
        (
            "custom_types[0]",
            with(&|r| r.custom_types = vec![String::new()]),
        ),
        (
            "end_time",
            with(&|r| {
                r.start_time = Some(ts(at(2024, 5, 2, 0)));
                r.end_time = Some(ts(at(2024, 5, 2, 0)));
            }),
        ),
        (
            "end_time",
            with(&|r| {
                r.start_time = Some(ts(at(2024, 5, 2, 0)));
                r.end_time = Some(ts(at(2024, 5, 1, 0)));
            }),
        ),
        ("order", with(&|r| r.order = 999)),
        ("page_size", with(&|r| r.page_size = -1)),
        ("page_size", with(&|r| r.page_size = i32::MIN)),
        // Tokens: forged, altered, or issued for another request.
        (
            "page_token",
            with(&|r| r.page_token = "dGhpcyBpcyBub3QgYSB0b2tlbg".into()),
        ),
        ("page_token", with(&|r| r.page_token = "!!!".into())),
        ("page_token", with(&|r| r.page_token = "A".repeat(5000))),
        (
            "page_token",
            with(&|r| r.page_token = MULTILINE_TEXT.into()),
        ),
        ("page_token", with(&|r| r.page_token = format!("{token}A"))),
        (
            "page_token",
            with(&|r| r.page_token = token[1..].to_string()),
        ),
    ];
    // The token of one listing, sent with another filter.
    let other_filters: [&dyn Fn(&mut ListInteractionsRequest); 4] = [
        &|r| r.order = TimelineOrder::OldestFirst as i32,
        &|r| r.types = vec![InteractionType::Purchase as i32],
        &|r| r.customer_id = Uuid::new_v4().to_string(),
        &|r| r.start_time = Some(ts(at(2020, 1, 1, 0))),
    ];
    for change in other_filters {
        cases.push((
            "page_token",
            with(&|r| {
                r.page_token = token.clone();
                change(r);
            }),
        ));
    }
    // One character changed, wherever it is.
    for altered in hostile::altered(&token) {
        cases.push(("page_token", with(&|r| r.page_token = altered.clone())));
    }
    for id in BAD_IDS {
        cases.push(("customer_id", with(&|r| r.customer_id = id.into())));
    }
    for bad in invalid_times() {
        cases.push(("start_time", with(&|r| r.start_time = Some(bad))));
        cases.push(("end_time", with(&|r| r.end_time = Some(bad))));
    }
    for (field, r) in cases {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.list_interactions(req(tenant, r)).await,
            &[field],
            &short(case),
        );
    }
    // The token is refused for another tenant, and another list's token here.
    assert_violations(
        c.list_interactions(req(Uuid::new_v4(), with(&|r| r.page_token = token.clone())))
            .await,
        &["page_token"],
        "token of another tenant",
    );
    let camp_tenant_token = {
        for n in 0..2 {
            create_campaign(&s, tenant, campaign(&format!("c{n}"))).await;
        }
        s.campaigns()
            .list_campaigns(req(
                tenant,
                ListCampaignsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect_answer("campaign page")
            .next_page_token
    };
    assert!(!camp_tenant_token.is_empty());
    assert_violations(
        c.list_interactions(req(
            tenant,
            with(&|r| r.page_token = camp_tenant_token.clone()),
        ))
        .await,
        &["page_token"],
        "token of ListCampaigns",
    );

    // The token still works with its own request; far past and future
    // bounds and huge page sizes are fine.
    let second = c
        .list_interactions(req(tenant, with(&|r| r.page_token = token.clone())))
        .await
        .expect_answer("second page");
    assert_eq!(second.interactions.len(), 1);
    assert_ne!(second.interactions, first.interactions);
    let all = c
        .list_interactions(req(
            tenant,
            with(&|r| {
                r.page_size = i32::MAX;
                r.start_time = Some(hostile::at(YEAR_1, 0));
                r.end_time = Some(hostile::at(YEAR_9999_END, 999_999_999));
            }),
        ))
        .await
        .expect_answer("every interaction");
    assert_eq!(all.interactions.len(), 3);
    assert!(all.next_page_token.is_empty());
    // Another tenant sees an empty timeline for the same customer id.
    let theirs = c
        .list_interactions(req(Uuid::new_v4(), with(&|r| r.page_size = 0)))
        .await
        .expect_answer("other tenant's timeline");
    assert!(theirs.interactions.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn update_service_request_refuses_bad_input_and_changes_nothing() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut sr = contact(customer, InteractionType::ServiceRequest, at(2024, 5, 1, 0));
    sr.agent_id = "agent-1".into();
    let sr = record(&s, tenant, sr).await;
    let bought = record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    let before = footprint(&s, tenant).await;
    let read = |id: String| {
        let mut c = s.interactions();
        async move {
            c.get_interaction(req(tenant, GetInteractionRequest { interaction_id: id }))
                .await
                .expect_answer("read back")
                .interaction
                .expect("interaction")
        }
    };
    let base = UpdateServiceRequestRequest {
        interaction_id: sr.interaction_id.clone(),
        status: ServiceRequestStatus::InProgress as i32,
        etag: String::new(),
        agent_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut UpdateServiceRequestRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut invalid: Vec<(&str, UpdateServiceRequestRequest)> = vec![
        ("status", with(&|r| r.status = 0)),
        ("status", with(&|r| r.status = 999)),
        ("status", with(&|r| r.status = -1)),
        ("agent_id", with(&|r| r.agent_id = "a".repeat(129))),
        ("agent_id", with(&|r| r.agent_id = "agent\0".into())),
    ];
    for id in BAD_IDS {
        invalid.push(("interaction_id", with(&|r| r.interaction_id = id.into())));
    }
    for (field, r) in invalid {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.update_service_request(req(tenant, r)).await,
            &[field],
            &case,
        );
        assert_eq!(read(sr.interaction_id.clone()).await, sr, "{case}");
    }
    let refused: Vec<(Code, Uuid, UpdateServiceRequestRequest)> = vec![
        (
            Code::NotFound,
            tenant,
            with(&|r| r.interaction_id = Uuid::new_v4().to_string()),
        ),
        (Code::NotFound, Uuid::new_v4(), base.clone()),
        (
            Code::NotFound,
            Uuid::new_v4(),
            with(&|r| r.agent_id = "intruder".into()),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.interaction_id = bought.interaction_id.clone()),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.status = ServiceRequestStatus::Resolved as i32),
        ),
        (
            Code::FailedPrecondition,
            tenant,
            with(&|r| r.status = ServiceRequestStatus::Closed as i32),
        ),
        (
            Code::Aborted,
            tenant,
            with(&|r| r.etag = "\"stale\"".into()),
        ),
        (
            Code::Aborted,
            tenant,
            with(&|r| r.etag = MULTILINE_TEXT.into()),
        ),
    ];
    for (code, who, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(c.update_service_request(req(who, r)).await, code, &case);
        assert_eq!(read(sr.interaction_id.clone()).await, sr, "{case}");
        assert_eq!(read(bought.interaction_id.clone()).await, bought, "{case}");
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // A legal change with a hostile agent id keeps it byte for byte.
    let updated = c
        .update_service_request(req(
            tenant,
            with(&|r| {
                r.agent_id = MULTILINE_TEXT.into();
                r.etag = sr.etag.clone();
            }),
        ))
        .await
        .expect_answer("legal transition")
        .interaction
        .expect("interaction");
    assert_eq!(updated.agent_id, MULTILINE_TEXT);
    assert_eq!(read(sr.interaction_id.clone()).await, updated);
    s.stop().await;
}

#[tokio::test]
async fn customer_summaries_refuse_malformed_ids_and_times() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    for id in BAD_IDS {
        assert_violations(
            c.get_customer_summary(req(
                tenant,
                GetCustomerSummaryRequest {
                    customer_id: id.into(),
                    as_of: None,
                },
            ))
            .await,
            &["customer_id"],
            id,
        );
    }
    for bad in invalid_times() {
        assert_violations(
            c.get_customer_summary(req(
                tenant,
                GetCustomerSummaryRequest {
                    customer_id: customer.to_string(),
                    as_of: Some(bad),
                },
            ))
            .await,
            &["as_of"],
            &format!("{bad:?}"),
        );
    }
    let summary = |who: Uuid, as_of: Option<Timestamp>| {
        let mut c = s.interactions();
        async move {
            c.get_customer_summary(req(
                who,
                GetCustomerSummaryRequest {
                    customer_id: customer.to_string(),
                    as_of,
                },
            ))
            .await
            .expect_answer("summary")
            .summary
            .expect("summary body")
        }
    };
    assert_eq!(
        summary(tenant, Some(hostile::at(YEAR_1, 0)))
            .await
            .purchase_count,
        0
    );
    let far = summary(tenant, Some(hostile::at(YEAR_9999_END, 0))).await;
    assert_eq!(far.purchase_count, 1);
    assert!(far.age_days.is_some_and(f64::is_finite));
    assert_eq!(summary(tenant, None).await.purchase_count, 1);
    // Another tenant learns nothing about this customer.
    let theirs = summary(Uuid::new_v4(), None).await;
    assert_eq!(theirs.purchase_count, 0);
    assert!(theirs.currencies.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn export_summaries_refuses_bad_requests() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    record(&s, tenant, purchase(customer, at(2024, 5, 1, 0), 3)).await;
    record(&s, tenant, purchase(customer, at(2024, 6, 1, 0), 4)).await;
    let base = ExportSummariesRequest {
        calibration_end_time: Some(ts(at(2025, 1, 1, 0))),
        period_unit: PeriodUnit::Week as i32,
        currency_code: "EUR".into(),
        ..Default::default()
    };
    let with = |f: &dyn Fn(&mut ExportSummariesRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let cohort = |start: Option<Timestamp>, end: Option<Timestamp>| {
        Some(export_summaries_request::Restriction::Cohort(
            AcquisitionCohort {
                start_time: start,
                end_time: end,
            },
        ))
    };
    let ids = |list: Vec<String>| {
        Some(export_summaries_request::Restriction::CustomerIds(
            CustomerIdList { customer_ids: list },
        ))
    };
    let future = ts(Utc::now() + Duration::hours(1));
    let mut cases: Vec<(Vec<&str>, ExportSummariesRequest)> = vec![
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = None),
        ),
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(future)),
        ),
        (
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(hostile::at(YEAR_9999_END, 0))),
        ),
        (vec!["period_unit"], with(&|r| r.period_unit = 0)),
        (vec!["period_unit"], with(&|r| r.period_unit = 999)),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(ts(at(2024, 1, 1, 0)))),
        ),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(ts(at(2025, 1, 1, 0)))),
        ),
        (
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(future)),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "eur".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "EURO".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = "EU\0".into()),
        ),
        (
            vec!["currency_code"],
            with(&|r| r.currency_code = MULTILINE_TEXT.into()),
        ),
        (
            vec!["cohort.start_time"],
            with(&|r| r.restriction = cohort(None, Some(ts(at(2024, 1, 1, 0))))),
        ),
        (
            vec!["cohort.end_time"],
            with(&|r| r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), None)),
        ),
        (
            vec!["cohort.end_time"],
            with(&|r| {
                r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), Some(ts(at(2024, 1, 1, 0))))
            }),
        ),
        (
            vec!["customer_ids.customer_ids"],
            with(&|r| r.restriction = ids(vec![])),
        ),
        (
            vec!["customer_ids.customer_ids"],
            with(&|r| {
                r.restriction = ids((0..50_001).map(|_| Uuid::new_v4().to_string()).collect())
            }),
        ),
        (
            vec!["calibration_end_time", "period_unit", "currency_code"],
            ExportSummariesRequest {
                currency_code: "x".into(),
                ..Default::default()
            },
        ),
    ];
    for id in BAD_IDS {
        cases.push((
            vec!["customer_ids.customer_ids[1]"],
            with(&|r| r.restriction = ids(vec![customer.to_string(), id.into()])),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["calibration_end_time"],
            with(&|r| r.calibration_end_time = Some(bad)),
        ));
        cases.push((
            vec!["holdout_end_time"],
            with(&|r| r.holdout_end_time = Some(bad)),
        ));
        cases.push((
            vec!["cohort.start_time"],
            with(&|r| r.restriction = cohort(Some(bad), Some(ts(at(2024, 1, 1, 0))))),
        ));
        cases.push((
            vec!["cohort.end_time"],
            with(&|r| r.restriction = cohort(Some(ts(at(2024, 1, 1, 0))), Some(bad))),
        ));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}: {:?}", r.calibration_end_time);
        assert_violations(c.export_summaries(req(tenant, r)).await, &fields, &case);
    }

    let export = |who: Uuid, r: ExportSummariesRequest| {
        let mut c = s.interactions();
        async move {
            let mut stream = c.export_summaries(req(who, r)).await?.into_inner();
            let mut out = Vec::new();
            while let Some(m) = stream.message().await? {
                out.extend(m.summaries);
            }
            Ok::<_, Status>(out)
        }
    };
    // No purchase to choose a currency from: FAILED_PRECONDITION.
    assert_code(
        export(Uuid::new_v4(), with(&|r| r.currency_code = String::new())).await,
        Code::FailedPrecondition,
        "another tenant without purchases",
    );
    assert_code(
        export(
            tenant,
            with(&|r| {
                r.currency_code = String::new();
                r.calibration_end_time = Some(hostile::at(YEAR_1, 0));
            }),
        )
        .await,
        Code::FailedPrecondition,
        "calibration end before every purchase",
    );
    // Far past bounds are fine and export nothing; the tenant's own export
    // holds its customer, another tenant's does not.
    assert!(
        export(
            tenant,
            with(&|r| r.calibration_end_time = Some(hostile::at(YEAR_1, 0)))
        )
        .await
        .expect("far past export")
        .is_empty()
    );
    let wide = export(
        tenant,
        with(&|r| {
            r.restriction = cohort(
                Some(hostile::at(YEAR_1, 0)),
                Some(hostile::at(YEAR_9999_END, 0)),
            );
        }),
    )
    .await
    .expect("wide cohort");
    assert_eq!(wide.len(), 1);
    assert_eq!(wide[0].customer_id, customer.to_string());
    assert!(
        export(Uuid::new_v4(), base.clone())
            .await
            .expect("other tenant's export")
            .is_empty()
    );
    assert!(
        export(
            Uuid::new_v4(),
            with(&|r| r.restriction = ids(vec![customer.to_string()]))
        )
        .await
        .expect("other tenant naming our customer")
        .is_empty()
    );
    s.stop().await;
}

#[tokio::test]
async fn the_change_feed_refuses_a_negative_sequence() {
    let s = start().await;
    let mut c = s.interactions();
    for after in [-1, i64::MIN] {
        assert_violations(
            c.watch_changes(WatchChangesRequest {
                after_sequence: after,
                ..Default::default()
            })
            .await,
            &["after_sequence"],
            &after.to_string(),
        );
    }
    // The far end of the feed is a valid (empty, live) position.
    let stream = c
        .watch_changes(WatchChangesRequest {
            after_sequence: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("far cursor");
    drop(stream);
    s.stop().await;
}

// ---------------------------------------------------------------------------
// CampaignService.
