//! CampaignService: create (idempotent), get, list, update with masks and
//! etags, and the report with counts, rates and attributed revenue.

mod common;

use common::*;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel, CreateCampaignRequest, GetCampaignReportRequest, GetCampaignRequest,
    Interaction, InteractionType, ListCampaignsRequest, UpdateCampaignRequest,
};
use tonic::Code;
use uuid::Uuid;

fn spring(segment: Uuid) -> Campaign {
    Campaign {
        name: "Spring sale - lapsed friends".into(),
        description: "20% off".into(),
        channel: Channel::Email as i32,
        target_segment_id: segment.to_string(),
        start_time: Some(ts(at(2025, 3, 1, 0))),
        end_time: Some(ts(at(2025, 4, 1, 0))),
        ..Default::default()
    }
}

#[tokio::test]
async fn campaigns_are_created_read_listed_and_updated() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let segment = Uuid::new_v4();
    let create = |campaign: Campaign, request_id: &str| CreateCampaignRequest {
        campaign: Some(campaign),
        request_id: request_id.into(),
    };
    let first = c
        .create_campaign(req(tenant, create(spring(segment), "req-1")))
        .await
        .answer()
        .campaign
        .unwrap();
    assert_eq!(first.name, "Spring sale - lapsed friends");
    assert_eq!(first.target_segment_id, segment.to_string());
    // A retry returns the same campaign; the same request id for another is ALREADY_EXISTS.
    let retry = c
        .create_campaign(req(tenant, create(spring(segment), "req-1")))
        .await
        .answer()
        .campaign
        .unwrap();
    assert_eq!(retry, first);
    let mut other = spring(segment);
    other.name = "Other".into();
    c.create_campaign(req(tenant, create(other, "req-1")))
        .await
        .refused(Code::AlreadyExists);
    assert_eq!(s.count("SELECT count(*) FROM campaigns").await, 1);

    // Invalid: one violation per problem, nothing written.
    let err = c
        .create_campaign(req(
            tenant,
            create(
                Campaign {
                    name: String::new(),
                    channel: 0,
                    target_segment_id: "nope".into(),
                    start_time: Some(ts(at(2025, 3, 1, 0))),
                    end_time: Some(ts(at(2025, 2, 1, 0))),
                    ..Default::default()
                },
                "bad id",
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "campaign.name",
            "campaign.channel",
            "campaign.target_segment_id",
            "campaign.end_time",
            "request_id"
        ]
    );
    assert_eq!(s.count("SELECT count(*) FROM campaigns").await, 1);

    // More campaigns: a web one without dates, then another e-mail one.
    let web = create_campaign(
        &s,
        tenant,
        Campaign {
            name: "Web banner".into(),
            channel: Channel::Web as i32,
            ..Default::default()
        },
    )
    .await;
    let third = create_campaign(&s, tenant, spring(Uuid::new_v4())).await;

    // Get; another tenant's is NOT_FOUND.
    let got = c
        .get_campaign(req(
            tenant,
            GetCampaignRequest {
                campaign_id: web.campaign_id.clone(),
            },
        ))
        .await
        .answer()
        .campaign
        .unwrap();
    assert_eq!(got, web);
    c.get_campaign(req(
        Uuid::new_v4(),
        GetCampaignRequest {
            campaign_id: web.campaign_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);

    // List: newest first, two pages of two then one.
    let page = |token: String| ListCampaignsRequest {
        page_size: 2,
        page_token: token,
        ..Default::default()
    };
    let p1 = c
        .list_campaigns(req(tenant, page(String::new())))
        .await
        .answer();
    assert_eq!(
        p1.campaigns
            .iter()
            .map(|x| x.campaign_id.clone())
            .collect::<Vec<_>>(),
        [third.campaign_id.clone(), web.campaign_id.clone()]
    );
    let p2 = c
        .list_campaigns(req(tenant, page(p1.next_page_token)))
        .await
        .answer();
    assert_eq!(p2.campaigns.len(), 1);
    assert_eq!(p2.campaigns[0].campaign_id, first.campaign_id);
    assert!(p2.next_page_token.is_empty());
    // Filters.
    let by_channel = c
        .list_campaigns(req(
            tenant,
            ListCampaignsRequest {
                channel: Channel::Web as i32,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(by_channel.campaigns.len(), 1);
    let by_segment = c
        .list_campaigns(req(
            tenant,
            ListCampaignsRequest {
                target_segment_id: segment.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(by_segment.campaigns.len(), 1);
    let active = c
        .list_campaigns(req(
            tenant,
            ListCampaignsRequest {
                active_time: Some(ts(at(2025, 3, 15, 0))),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(
        active.campaigns.len(),
        2,
        "the web campaign has no start time"
    );
    let none_active = c
        .list_campaigns(req(
            tenant,
            ListCampaignsRequest {
                active_time: Some(ts(at(2025, 4, 1, 0))),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(none_active.campaigns.is_empty());

    // Update with a mask and the current etag.
    let updated = c
        .update_campaign(req(
            tenant,
            UpdateCampaignRequest {
                campaign: Some(Campaign {
                    campaign_id: first.campaign_id.clone(),
                    name: "Spring sale, extended".into(),
                    end_time: Some(ts(at(2025, 5, 1, 0))),
                    description: "ignored: not in the mask".into(),
                    etag: first.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into(), "end_time".into()],
                }),
            },
        ))
        .await
        .answer()
        .campaign
        .unwrap();
    assert_eq!(updated.name, "Spring sale, extended");
    assert_eq!(updated.description, "20% off");
    assert_eq!(updated.end_time, Some(ts(at(2025, 5, 1, 0))));
    assert_ne!(updated.etag, first.etag);
    // The old etag is stale.
    let stale = UpdateCampaignRequest {
        campaign: Some(Campaign {
            campaign_id: first.campaign_id.clone(),
            description: "x".into(),
            etag: first.etag.clone(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".into()],
        }),
    };
    c.update_campaign(req(tenant, stale))
        .await
        .refused(Code::Aborted);
    // Bad masks and values.
    let err = c
        .update_campaign(req(
            tenant,
            UpdateCampaignRequest {
                campaign: Some(Campaign {
                    campaign_id: first.campaign_id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["create_time".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["update_mask.paths[0]"]);
    let err = c
        .update_campaign(req(
            tenant,
            UpdateCampaignRequest {
                campaign: Some(Campaign {
                    campaign_id: first.campaign_id.clone(),
                    start_time: Some(ts(at(2025, 6, 1, 0))),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into(), "start_time".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["campaign.name", "campaign.end_time"]
    );
    c.update_campaign(req(
        Uuid::new_v4(),
        UpdateCampaignRequest {
            campaign: Some(Campaign {
                campaign_id: first.campaign_id.clone(),
                name: "x".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        },
    ))
    .await
    .refused(Code::NotFound);

    // The feed: three creations and one update, with the mask.
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'CampaignCreated'")
            .await,
        3
    );
    let created = typed_events(&s.pool, "CampaignCreated").await;
    let Some(Event::CampaignCreated(c0)) = created.first() else {
        panic!("{created:?}")
    };
    assert_eq!(c0.campaign_id, first.campaign_id);
    assert_eq!(c0.name, "Spring sale - lapsed friends");
    assert_eq!(c0.channel, Channel::Email as i32);
    assert_eq!(c0.target_segment_id, segment.to_string());
    assert_eq!(c0.start_time, Some(ts(at(2025, 3, 1, 0))));
    assert_eq!(c0.end_time, Some(ts(at(2025, 4, 1, 0))));
    assert!(c0.update_mask.is_empty());
    let updated = typed_events(&s.pool, "CampaignUpdated").await;
    let [Event::CampaignUpdated(u)] = updated.as_slice() else {
        panic!("{updated:?}")
    };
    assert_eq!(u.campaign_id, first.campaign_id);
    assert_eq!(u.update_mask, ["name", "end_time"]);
    assert_eq!(u.name, "Spring sale, extended");
    assert_eq!(u.end_time, Some(ts(at(2025, 5, 1, 0))));
    assert_eq!(u.start_time, Some(ts(at(2025, 3, 1, 0))));
    assert_eq!(u.channel, Channel::Email as i32);
    assert_eq!(u.target_segment_id, segment.to_string());
    s.stop().await;
}

#[tokio::test]
async fn campaign_report_counts_rates_and_attributed_revenue() {
    let s = start().await;
    let mut c = s.campaigns();
    let tenant = Uuid::new_v4();
    let campaign = create_campaign(&s, tenant, spring(Uuid::new_v4())).await;
    let id = campaign.campaign_id.clone();
    let (a, b, cc, d) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let resp = |who: Uuid, kind: InteractionType, t| Interaction {
        campaign_id: id.clone(),
        ..contact(who, kind, t)
    };
    let buy = |who: Uuid, t, cur: &str, units: i64, margin: Option<i64>| Interaction {
        amount: Some(money(cur, units, 0)),
        margin: margin.map(|m| money(cur, m, 0)),
        ..purchase(who, t, 0)
    };
    let interactions = vec![
        // Sent to four customers.
        resp(a, InteractionType::CampaignSent, at(2025, 3, 1, 0)),
        resp(b, InteractionType::CampaignSent, at(2025, 3, 1, 0)),
        resp(cc, InteractionType::CampaignSent, at(2025, 3, 1, 0)),
        resp(d, InteractionType::CampaignSent, at(2025, 3, 1, 0)),
        // A opens twice (counted once), clicks twice, buys.
        resp(a, InteractionType::CampaignOpened, at(2025, 3, 2, 0)),
        resp(a, InteractionType::CampaignOpened, at(2025, 3, 2, 1)),
        resp(a, InteractionType::CampaignClicked, at(2025, 3, 2, 2)),
        resp(a, InteractionType::CampaignClicked, at(2025, 3, 3, 0)),
        // B opens, converts; C unsubscribes.
        resp(b, InteractionType::CampaignOpened, at(2025, 3, 2, 0)),
        resp(b, InteractionType::CampaignConverted, at(2025, 3, 4, 0)),
        resp(cc, InteractionType::CampaignUnsubscribed, at(2025, 3, 2, 0)),
        // A: before the first click (no), 1 day after (yes, once despite two
        // clicks), 10 days after the last click (no, window 7 days).
        buy(a, at(2025, 3, 1, 12), "EUR", 1000, None),
        buy(a, at(2025, 3, 4, 0), "EUR", 40, Some(10)),
        buy(a, at(2025, 3, 13, 0), "EUR", 999, None),
        // B: two purchases after converting, one in USD.
        buy(b, at(2025, 3, 4, 0), "EUR", 60, None),
        buy(b, at(2025, 3, 5, 0), "USD", 25, Some(5)),
        // D never clicked.
        buy(d, at(2025, 3, 5, 0), "EUR", 500, None),
    ];
    let r = record_batch(&s, tenant, interactions).await;
    assert_eq!(r.accepted_count, 17, "{:?}", r.rejections);

    let report = c
        .get_campaign_report(req(
            tenant,
            GetCampaignReportRequest {
                campaign_id: id.clone(),
                attribution_window: None,
            },
        ))
        .await
        .answer()
        .report
        .unwrap();
    assert_eq!(report.attribution_window.unwrap().seconds, 7 * 86_400);
    assert_eq!(
        (
            report.sent_count,
            report.opened_count,
            report.clicked_count,
            report.converted_count,
            report.unsubscribed_count
        ),
        (4, 2, 1, 1, 1)
    );
    assert_eq!(report.open_rate, Some(0.5));
    assert_eq!(report.click_rate, Some(0.25));
    assert_eq!(report.conversion_rate, Some(0.25));
    assert_eq!(report.unsubscribe_rate, Some(0.25));
    assert_eq!(
        report.attributed_revenue,
        [money("EUR", 100, 0), money("USD", 25, 0)]
    );
    assert_eq!(
        report.attributed_margin,
        [money("EUR", 10, 0), money("USD", 5, 0)]
    );
    assert_eq!(report.attributed_purchase_count, 3);
    assert_eq!(report.attributed_customer_count, 2);

    // A 30-day window also credits A's purchase 10 days after the click.
    let wide = c
        .get_campaign_report(req(
            tenant,
            GetCampaignReportRequest {
                campaign_id: id.clone(),
                attribution_window: Some(prost_types::Duration {
                    seconds: 30 * 86_400,
                    nanos: 0,
                }),
            },
        ))
        .await
        .answer()
        .report
        .unwrap();
    assert_eq!(wide.attributed_revenue[0], money("EUR", 1099, 0));

    let err = c
        .get_campaign_report(req(
            tenant,
            GetCampaignReportRequest {
                campaign_id: id.clone(),
                attribution_window: Some(prost_types::Duration {
                    seconds: 366 * 86_400,
                    nanos: 0,
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["attribution_window"]);
    c.get_campaign_report(req(
        Uuid::new_v4(),
        GetCampaignReportRequest {
            campaign_id: id,
            attribution_window: None,
        },
    ))
    .await
    .refused(Code::NotFound);
    s.stop().await;
}
