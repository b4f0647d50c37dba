//! CampaignService.

use super::*;

#[tokio::test]
async fn create_campaign_refuses_bad_input_and_keeps_hostile_text() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let before = footprint(&s, tenant).await;
    let base = CreateCampaignRequest {
        campaign: Some(Campaign {
            name: "Spring".into(),
            channel: Channel::Email as i32,
            start_time: Some(ts(at(2025, 3, 1, 0))),
            end_time: Some(ts(at(2025, 4, 1, 0))),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let with = |f: &dyn Fn(&mut Campaign)| {
        let mut r = base.clone();
        f(r.campaign.as_mut().expect("campaign"));
        r
    };
    let mut cases: Vec<(Vec<&str>, CreateCampaignRequest)> = vec![
        (
            vec!["campaign.name", "campaign.channel"],
            CreateCampaignRequest::default(),
        ),
        (vec!["campaign.name"], with(&|c| c.name = String::new())),
        (vec!["campaign.name"], with(&|c| c.name = " \t ".into())),
        (vec!["campaign.name"], with(&|c| c.name = "n".repeat(201))),
        (vec!["campaign.name"], with(&|c| c.name = "Spring\0".into())),
        (
            vec!["campaign.description"],
            with(&|c| c.description = "d".repeat(2001)),
        ),
        (
            vec!["campaign.description"],
            with(&|c| c.description = "\0".into()),
        ),
        (vec!["campaign.channel"], with(&|c| c.channel = 0)),
        (vec!["campaign.channel"], with(&|c| c.channel = 999)),
        (vec!["campaign.channel"], with(&|c| c.channel = -1)),
        (
            vec!["campaign.end_time"],
            with(&|c| c.end_time = c.start_time),
        ),
        (
            vec!["campaign.end_time"],
            with(&|c| c.end_time = Some(ts(at(2025, 2, 1, 0)))),
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "r".repeat(129),
                ..base.clone()
            },
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "has space".into(),
                ..base.clone()
            },
        ),
        (
            vec!["request_id"],
            CreateCampaignRequest {
                request_id: "req\0".into(),
                ..base.clone()
            },
        ),
    ];
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            vec!["campaign.target_segment_id"],
            with(&|c| c.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["campaign.start_time"],
            with(&|c| c.start_time = Some(bad)),
        ));
        cases.push((vec!["campaign.end_time"], with(&|c| c.end_time = Some(bad))));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}");
        assert_violations(c.create_campaign(req(tenant, r)).await, &fields, &case);
        assert_eq!(footprint(&s, tenant).await, before, "{case} wrote nothing");
    }

    // Hostile text, far past and far future dates, output-only fields
    // ignored, a hostile (printable) request id.
    let hostile = CreateCampaignRequest {
        campaign: Some(Campaign {
            campaign_id: "../x".into(),
            name: MULTILINE_TEXT.into(),
            description: MULTILINE_TEXT.into(),
            channel: Channel::Partner as i32,
            start_time: Some(hostile::at(YEAR_1, 0)),
            end_time: Some(hostile::at(YEAR_9999_END, 999_999_000)),
            etag: "forged".into(),
            create_time: Some(hostile::at(i64::MAX / 2, -1)),
            ..Default::default()
        }),
        request_id: HOSTILE_KEY.into(),
    };
    let created = c
        .create_campaign(req(tenant, hostile.clone()))
        .await
        .expect_answer("hostile campaign")
        .campaign
        .expect("campaign");
    assert_eq!(created.name, MULTILINE_TEXT);
    assert_eq!(created.description, MULTILINE_TEXT);
    assert_eq!(created.start_time, Some(hostile::at(YEAR_1, 0)));
    assert_eq!(
        created.end_time,
        Some(hostile::at(YEAR_9999_END, 999_999_000))
    );
    assert!(Uuid::parse_str(&created.campaign_id).is_ok());
    let got = c
        .get_campaign(req(
            tenant,
            GetCampaignRequest {
                campaign_id: created.campaign_id.clone(),
            },
        ))
        .await
        .expect_answer("read back")
        .campaign;
    assert_eq!(got.as_ref(), Some(&created));
    let retry = c
        .create_campaign(req(tenant, hostile))
        .await
        .expect_answer("retry")
        .campaign;
    assert_eq!(retry.as_ref(), Some(&created));
    assert_eq!(footprint(&s, tenant).await[2], 1);
    s.stop().await;
}

#[tokio::test]
async fn get_campaign_and_its_report_refuse_bad_ids_windows_and_other_tenants() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let mine = create_campaign(&s, tenant, campaign("Spring")).await;
    let stranger = Uuid::new_v4();
    assert_read_by_id(
        "campaign_id",
        tenant,
        stranger,
        &mine.campaign_id,
        |t, id| {
            let mut c = c.clone();
            async move {
                c.get_campaign(req(t, GetCampaignRequest { campaign_id: id }))
                    .await
            }
        },
    )
    .await;
    assert_read_by_id(
        "campaign_id",
        tenant,
        stranger,
        &mine.campaign_id,
        |t, id| {
            let mut c = c.clone();
            async move {
                c.get_campaign_report(req(
                    t,
                    GetCampaignReportRequest {
                        campaign_id: id,
                        attribution_window: None,
                    },
                ))
                .await
            }
        },
    )
    .await;
    let day = 86_400;
    for (seconds, nanos) in [
        (0, 0),
        (-1, 0),
        (0, -1),
        (1, -1),
        (-1, 1),
        (0, 1_000_000_000),
        (0, i32::MIN),
        (365 * day, 1),
        (365 * day + 1, 0),
        (i64::MAX, 0),
        (i64::MIN, 0),
    ] {
        assert_violations(
            c.get_campaign_report(req(
                tenant,
                GetCampaignReportRequest {
                    campaign_id: mine.campaign_id.clone(),
                    attribution_window: Some(prost_types::Duration { seconds, nanos }),
                },
            ))
            .await,
            &["attribution_window"],
            &format!("window {seconds}s {nanos}ns"),
        );
    }
    for (seconds, nanos) in [(365 * day, 0), (0, 1)] {
        let report = c
            .get_campaign_report(req(
                tenant,
                GetCampaignReportRequest {
                    campaign_id: mine.campaign_id.clone(),
                    attribution_window: Some(prost_types::Duration { seconds, nanos }),
                },
            ))
            .await
            .expect_answer("window at the bounds")
            .report
            .expect("report");
        assert_eq!(report.sent_count, 0);
        assert_eq!(report.open_rate, None);
    }
    s.stop().await;
}

#[tokio::test]
async fn list_campaigns_refuses_bad_filters_and_forged_page_tokens() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    for n in 0..3 {
        create_campaign(&s, tenant, campaign(&format!("c{n}"))).await;
    }
    let base = ListCampaignsRequest {
        page_size: 1,
        ..Default::default()
    };
    let first = c
        .list_campaigns(req(tenant, base.clone()))
        .await
        .expect_answer("first page");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    let with = |f: &dyn Fn(&mut ListCampaignsRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let mut cases: Vec<(&str, ListCampaignsRequest)> = vec![
        ("channel", with(&|r| r.channel = 999)),
        ("channel", with(&|r| r.channel = -1)),
        ("page_size", with(&|r| r.page_size = -1)),
        ("page_size", with(&|r| r.page_size = i32::MIN)),
        (
            "page_token",
            with(&|r| r.page_token = "dGhpcyBpcyBub3QgYSB0b2tlbg".into()),
        ),
        ("page_token", with(&|r| r.page_token = "!!!".into())),
        ("page_token", with(&|r| r.page_token = "A".repeat(5000))),
        ("page_token", with(&|r| r.page_token = format!("{token}A"))),
        (
            "page_token",
            with(&|r| r.page_token = token[1..].to_string()),
        ),
    ];
    // The token of one listing, sent with another filter.
    let other_filters: [&dyn Fn(&mut ListCampaignsRequest); 3] = [
        &|r| r.channel = Channel::Email as i32,
        &|r| r.target_segment_id = Uuid::new_v4().to_string(),
        &|r| r.active_time = Some(ts(at(2024, 1, 1, 0))),
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
    for altered in hostile::altered(&token) {
        cases.push(("page_token", with(&|r| r.page_token = altered.clone())));
    }
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            "target_segment_id",
            with(&|r| r.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push(("active_time", with(&|r| r.active_time = Some(bad))));
    }
    for (field, r) in cases {
        let case = format!("{field}: {r:?}");
        assert_violations(
            c.list_campaigns(req(tenant, r)).await,
            &[field],
            &short(case),
        );
    }
    // Another tenant cannot use the token, nor see the campaigns.
    let stranger = Uuid::new_v4();
    assert_violations(
        c.list_campaigns(req(stranger, with(&|r| r.page_token = token.clone())))
            .await,
        &["page_token"],
        "token of another tenant",
    );
    let theirs = c
        .list_campaigns(req(stranger, ListCampaignsRequest::default()))
        .await
        .expect_answer("other tenant's list");
    assert!(theirs.campaigns.is_empty());
    // A ListInteractions token is no ListCampaigns token.
    let customer = Uuid::new_v4();
    for d in 1..=2 {
        record(&s, tenant, purchase(customer, at(2024, 5, d, 0), 1)).await;
    }
    let timeline_token = s
        .interactions()
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("timeline page")
        .next_page_token;
    assert!(!timeline_token.is_empty());
    assert_violations(
        c.list_campaigns(req(
            tenant,
            with(&|r| r.page_token = timeline_token.clone()),
        ))
        .await,
        &["page_token"],
        "token of ListInteractions",
    );
    // The genuine token, huge pages and far active times work.
    let second = c
        .list_campaigns(req(tenant, with(&|r| r.page_token = token.clone())))
        .await
        .expect_answer("second page");
    assert_eq!(second.campaigns.len(), 1);
    assert_ne!(second.campaigns, first.campaigns);
    let all = c
        .list_campaigns(req(tenant, with(&|r| r.page_size = i32::MAX)))
        .await
        .expect_answer("every campaign");
    assert_eq!(all.campaigns.len(), 3);
    for active in [hostile::at(YEAR_1, 0), hostile::at(YEAR_9999_END, 0)] {
        let none = c
            .list_campaigns(req(tenant, with(&|r| r.active_time = Some(active))))
            .await
            .expect_answer("far active time");
        assert!(
            none.campaigns.is_empty(),
            "campaigns without dates never match"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn update_campaign_refuses_bad_input_and_changes_nothing() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let current = create_campaign(
        &s,
        tenant,
        Campaign {
            name: "Spring".into(),
            description: "20% off".into(),
            channel: Channel::Email as i32,
            start_time: Some(ts(at(2025, 3, 1, 0))),
            end_time: Some(ts(at(2025, 4, 1, 0))),
            ..Default::default()
        },
    )
    .await;
    let before = footprint(&s, tenant).await;
    let read = || {
        let mut c = s.campaigns();
        let id = current.campaign_id.clone();
        async move {
            c.get_campaign(req(tenant, GetCampaignRequest { campaign_id: id }))
                .await
                .expect_answer("read back")
                .campaign
                .expect("campaign")
        }
    };
    let update = |paths: &[&str], f: &dyn Fn(&mut Campaign)| {
        let mut campaign = Campaign {
            campaign_id: current.campaign_id.clone(),
            ..Default::default()
        };
        f(&mut campaign);
        UpdateCampaignRequest {
            campaign: Some(campaign),
            update_mask: Some(FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        }
    };
    let mut cases: Vec<(Vec<&str>, UpdateCampaignRequest)> = vec![
        (
            vec!["campaign.campaign_id", "update_mask"],
            UpdateCampaignRequest::default(),
        ),
        (
            vec!["update_mask"],
            UpdateCampaignRequest {
                update_mask: None,
                ..update(&["name"], &|c| c.name = "x".into())
            },
        ),
        (vec!["update_mask"], update(&[], &|c| c.name = "x".into())),
        (
            vec!["update_mask.paths[0]"],
            update(&["create_time"], &|_| {}),
        ),
        (vec!["update_mask.paths[0]"], update(&["etag"], &|_| {})),
        (
            vec!["update_mask.paths[0]"],
            update(&["campaign_id"], &|_| {}),
        ),
        (vec!["update_mask.paths[0]"], update(&["Name"], &|_| {})),
        (vec!["update_mask.paths[0]"], update(&["name\0"], &|_| {})),
        (
            vec!["update_mask.paths[0]"],
            update(&[MULTILINE_TEXT], &|_| {}),
        ),
        (
            vec!["update_mask.paths[1]"],
            update(&["name", "name"], &|c| c.name = "x".into()),
        ),
        (vec!["campaign.name"], update(&["name"], &|_| {})),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "   ".into()),
        ),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "n".repeat(201)),
        ),
        (
            vec!["campaign.name"],
            update(&["name"], &|c| c.name = "Sp\0ring".into()),
        ),
        (
            vec!["campaign.description"],
            update(&["description"], &|c| c.description = "d".repeat(2001)),
        ),
        (
            vec!["campaign.description"],
            update(&["description"], &|c| c.description = "\0".into()),
        ),
        (vec!["campaign.channel"], update(&["channel"], &|_| {})),
        (
            vec!["campaign.channel"],
            update(&["channel"], &|c| c.channel = 999),
        ),
        (
            vec!["campaign.end_time"],
            update(&["end_time"], &|c| c.end_time = Some(ts(at(2025, 2, 1, 0)))),
        ),
        (
            vec!["campaign.end_time"],
            update(&["start_time"], &|c| {
                c.start_time = Some(ts(at(2025, 5, 1, 0)))
            }),
        ),
    ];
    for id in BAD_IDS {
        cases.push((
            vec!["campaign.campaign_id"],
            UpdateCampaignRequest {
                campaign: Some(Campaign {
                    campaign_id: id.into(),
                    name: "x".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
        ));
    }
    for id in BAD_IDS.into_iter().filter(|id| !id.is_empty()) {
        cases.push((
            vec!["campaign.target_segment_id"],
            update(&["target_segment_id"], &|c| c.target_segment_id = id.into()),
        ));
    }
    for bad in invalid_times() {
        cases.push((
            vec!["campaign.start_time"],
            update(&["start_time"], &|c| c.start_time = Some(bad)),
        ));
        cases.push((
            vec!["campaign.end_time"],
            update(&["end_time"], &|c| c.end_time = Some(bad)),
        ));
    }
    for (fields, r) in cases {
        let case = format!("{fields:?}: {r:?}");
        assert_violations(c.update_campaign(req(tenant, r)).await, &fields, &case);
        assert_eq!(read().await, current, "{case}");
    }
    let rename = update(&["name"], &|c| c.name = "Taken over".into());
    let refused: Vec<(Code, Uuid, UpdateCampaignRequest)> = vec![
        (
            Code::NotFound,
            tenant,
            update(&["name"], &|c| {
                c.campaign_id = Uuid::new_v4().to_string();
                c.name = "x".into();
            }),
        ),
        (Code::NotFound, Uuid::new_v4(), rename.clone()),
        (
            Code::Aborted,
            tenant,
            update(&["name"], &|c| {
                c.name = "x".into();
                c.etag = "\"0\"".into();
            }),
        ),
        (
            Code::Aborted,
            tenant,
            update(&["name"], &|c| {
                c.name = "x".into();
                c.etag = MULTILINE_TEXT.into();
            }),
        ),
    ];
    for (code, who, r) in refused {
        let case = format!("{code:?}: {r:?}");
        assert_code(c.update_campaign(req(who, r)).await, code, &case);
        assert_eq!(read().await, current, "{case}");
    }
    assert_eq!(footprint(&s, tenant).await, before);

    // A legal update with hostile text and extreme dates is kept as sent.
    let updated = c
        .update_campaign(req(
            tenant,
            update(&["name", "description", "start_time", "end_time"], &|c| {
                c.name = MULTILINE_TEXT.into();
                c.description = MULTILINE_TEXT.into();
                c.start_time = Some(hostile::at(YEAR_1, 0));
                c.end_time = Some(hostile::at(YEAR_9999_END, 0));
                c.etag = current.etag.clone();
            }),
        ))
        .await
        .expect_answer("legal update")
        .campaign
        .expect("campaign");
    assert_eq!(updated.name, MULTILINE_TEXT);
    assert_eq!(updated.description, MULTILINE_TEXT);
    assert_eq!(updated.start_time, Some(hostile::at(YEAR_1, 0)));
    assert_eq!(updated.end_time, Some(hostile::at(YEAR_9999_END, 0)));
    assert_eq!(read().await, updated);
    s.stop().await;
}
