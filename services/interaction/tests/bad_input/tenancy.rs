//! Every method without a tenant.

use super::*;

#[tokio::test]
async fn every_method_refuses_a_call_without_a_tenant() {
    let s = start().await;
    let mut i = s.interactions();
    let mut c = s.campaigns();
    let id = Uuid::new_v4().to_string();
    for header in [None, Some("not-a-uuid"), Some(""), Some("../x")] {
        let case = format!("tenant header {header:?}");
        let unauth = Code::Unauthenticated;
        assert_code(
            i.record_interaction(with_header(
                RecordInteractionRequest {
                    interaction: Some(purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1)),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        let stream = futures::stream::iter(vec![RecordInteractionsRequest {
            interactions: vec![purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1)],
        }]);
        assert_code(
            i.record_interactions(with_header(stream, header)).await,
            unauth,
            &case,
        );
        assert_code(
            i.get_interaction(with_header(
                GetInteractionRequest {
                    interaction_id: id.clone(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.list_interactions(with_header(
                ListInteractionsRequest {
                    customer_id: id.clone(),
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.update_service_request(with_header(
                UpdateServiceRequestRequest {
                    interaction_id: id.clone(),
                    status: ServiceRequestStatus::Closed as i32,
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.get_customer_summary(with_header(
                GetCustomerSummaryRequest {
                    customer_id: id.clone(),
                    as_of: None,
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            i.export_summaries(with_header(
                ExportSummariesRequest {
                    calibration_end_time: Some(ts(at(2024, 1, 1, 0))),
                    period_unit: PeriodUnit::Week as i32,
                    currency_code: "EUR".into(),
                    ..Default::default()
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.create_campaign(with_header(
                CreateCampaignRequest {
                    campaign: Some(campaign("Spring")),
                    request_id: String::new(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.get_campaign(with_header(
                GetCampaignRequest {
                    campaign_id: id.clone(),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.list_campaigns(with_header(ListCampaignsRequest::default(), header))
                .await,
            unauth,
            &case,
        );
        assert_code(
            c.update_campaign(with_header(
                UpdateCampaignRequest {
                    campaign: Some(Campaign {
                        campaign_id: id.clone(),
                        name: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["name".into()],
                    }),
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
        assert_code(
            c.get_campaign_report(with_header(
                GetCampaignReportRequest {
                    campaign_id: id.clone(),
                    attribution_window: None,
                },
                header,
            ))
            .await,
            unauth,
            &case,
        );
    }
    for n in [
        "SELECT count(*) FROM interactions",
        "SELECT count(*) FROM campaigns",
        "SELECT count(*) FROM outbox",
    ] {
        assert_eq!(s.count(n).await, 0, "{n}");
    }
    s.stop().await;
}
