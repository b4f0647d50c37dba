//! GetCustomerSummary and ExportSummaries checked against figures computed
//! by hand for a small fixed history.

mod common;

use common::*;
use futures::StreamExt;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{
    AcquisitionCohort, CustomerIdList, ExportSummariesRequest, GetCustomerSummaryRequest,
    Interaction, InteractionType, OpportunityHistory, PurchaseHistorySummary, ServiceRequestStatus,
    Survey, export_summaries_request,
};
use tonic::Code;
use uuid::Uuid;

struct History {
    tenant: Uuid,
    a: Uuid,
    b: Uuid,
}

async fn campaign_id(s: &Stack, tenant: Uuid, name: &str) -> String {
    create_campaign(s, tenant, campaign(name)).await.campaign_id
}

/// The fixed history (see the expected figures in the tests).
async fn record_history(s: &Stack) -> History {
    let tenant = Uuid::new_v4();
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let c = Uuid::new_v4();
    let spring = campaign_id(s, tenant, "Spring").await;
    let winter = campaign_id(s, tenant, "Winter").await;
    let buy = |who: Uuid, t, cur: &str, units: i64, nanos: i32, margin: Option<i64>| Interaction {
        amount: Some(money(cur, units, nanos)),
        margin: margin.map(|m| money(cur, m, 0)),
        ..purchase(who, t, 0)
    };
    let survey = |t, csat: Option<i32>, nps: Option<i32>| Interaction {
        survey: Some(Survey {
            csat,
            nps,
            comment: "fine".into(),
        }),
        ..contact(a, InteractionType::SurveyResponse, t)
    };
    let mut resolved = contact(a, InteractionType::ServiceRequest, at(2025, 2, 1, 0));
    resolved.service_request_status = ServiceRequestStatus::Resolved as i32;
    resolved.resolve_time = Some(ts(at(2025, 2, 3, 12)));
    let mut sent_spring = contact(a, InteractionType::CampaignSent, at(2025, 1, 2, 0));
    sent_spring.campaign_id = spring.clone();
    let mut clicked_spring = contact(a, InteractionType::CampaignClicked, at(2025, 1, 14, 12));
    clicked_spring.campaign_id = spring;
    let mut sent_winter = contact(a, InteractionType::CampaignSent, at(2025, 1, 3, 0));
    sent_winter.campaign_id = winter;
    let returned = Interaction {
        r#type: InteractionType::Return as i32,
        ..buy(a, at(2025, 2, 12, 0), "EUR", 3, 0, None)
    };
    let interactions = vec![
        buy(a, at(2025, 1, 1, 10), "EUR", 10, 0, Some(4)),
        buy(a, at(2025, 1, 1, 18), "EUR", 5, 500_000_000, None),
        buy(a, at(2025, 1, 15, 12), "EUR", 20, 0, Some(6)),
        buy(a, at(2025, 2, 10, 0), "USD", 30, 0, None),
        returned,
        contact(a, InteractionType::Call, at(2025, 2, 20, 0)),
        contact(a, InteractionType::Email, at(2024, 12, 15, 0)),
        resolved,
        contact(a, InteractionType::ServiceRequest, at(2025, 2, 25, 0)),
        contact(a, InteractionType::Complaint, at(2025, 2, 26, 0)),
        survey(at(2025, 1, 20, 0), Some(2), Some(6)),
        survey(at(2025, 2, 5, 0), Some(4), None),
        survey(at(2025, 2, 28, 0), None, Some(10)),
        sent_spring,
        clicked_spring,
        sent_winter,
        buy(a, at(2025, 3, 5, 0), "EUR", 100, 0, None),
        buy(b, at(2024, 12, 31, 23), "EUR", 7, 0, None),
        buy(b, at(2025, 1, 1, 1), "EUR", 8, 0, None),
        buy(b, at(2025, 1, 1, 2), "EUR", 2, 0, None),
        buy(b, at(2025, 2, 5, 0), "EUR", 9, 0, None),
        buy(c, at(2025, 2, 20, 0), "EUR", 50, 0, None),
    ];
    let r = record_batch(s, tenant, interactions).await;
    assert_eq!(r.accepted_count, 22, "{:?}", r.rejections);
    History { tenant, a, b }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn customer_summary_by_hand() {
    let s = start().await;
    let h = record_history(&s).await;
    let mut c = s.interactions();
    let summary = c
        .get_customer_summary(req(
            h.tenant,
            GetCustomerSummaryRequest {
                customer_id: h.a.to_string(),
                as_of: Some(ts(at(2025, 3, 1, 0))),
            },
        ))
        .await
        .answer()
        .summary
        .unwrap();
    assert_eq!(summary.customer_id, h.a.to_string());
    assert_eq!(summary.purchase_count, 4);
    assert_eq!(summary.repeat_purchase_count, 3);
    assert_eq!(summary.first_purchase_time, Some(ts(at(2025, 1, 1, 10))));
    assert_eq!(summary.last_purchase_time, Some(ts(at(2025, 2, 10, 0))));
    // Jan 1 10:00 -> Feb 10 00:00 = 39 days 14 hours.
    assert!(close(summary.recency_days.unwrap(), 39.0 + 14.0 / 24.0));
    assert!(close(summary.days_since_last_purchase.unwrap(), 19.0));
    // Jan 1 10:00 -> Mar 1 00:00 = 58 days 14 hours.
    assert!(close(summary.age_days.unwrap(), 58.0 + 14.0 / 24.0));

    assert_eq!(summary.currencies.len(), 2);
    let eur = &summary.currencies[0];
    assert_eq!(eur.currency_code, "EUR");
    assert_eq!(eur.purchase_count, 3);
    assert_eq!(eur.total_value, Some(money("EUR", 35, 500_000_000)));
    // 35.50 / 3 = 11.8333333333... -> 11.833333333 (half-even to the nano).
    assert_eq!(eur.average_value, Some(money("EUR", 11, 833_333_333)));
    assert_eq!(eur.purchases_with_margin, 2);
    assert_eq!(eur.total_margin, Some(money("EUR", 10, 0)));
    assert_eq!(eur.average_margin, Some(money("EUR", 5, 0)));
    assert_eq!(eur.return_count, 1);
    assert_eq!(eur.returned_value, Some(money("EUR", 3, 0)));
    let usd = &summary.currencies[1];
    assert_eq!(usd.currency_code, "USD");
    assert_eq!(usd.purchase_count, 1);
    assert_eq!(usd.total_margin, Some(money("USD", 0, 0)));
    assert_eq!(usd.average_margin, None);
    assert_eq!(summary.return_count, 1);

    // Contacts: call (Feb 20), e-mail (Dec 15: 76 days back), two service
    // requests (Feb 1, Feb 25), one complaint (Feb 26).
    let by_type: Vec<(i32, i64, i64, i64, i64)> = summary
        .contacts_by_type
        .iter()
        .map(|c| {
            (
                c.r#type,
                c.last_30_days,
                c.last_90_days,
                c.last_365_days,
                c.total,
            )
        })
        .collect();
    assert_eq!(
        by_type,
        [
            (InteractionType::SalesVisit as i32, 0, 0, 0, 0),
            (InteractionType::Call as i32, 1, 1, 1, 1),
            (InteractionType::Email as i32, 0, 1, 1, 1),
            (InteractionType::Meeting as i32, 0, 0, 0, 0),
            (InteractionType::Chat as i32, 0, 0, 0, 0),
            (InteractionType::ServiceRequest as i32, 2, 2, 2, 2),
            (InteractionType::Complaint as i32, 1, 1, 1, 1),
        ]
    );
    assert_eq!(summary.contacts_last_30_days, 4);
    assert_eq!(summary.contacts_last_90_days, 5);
    assert_eq!(summary.contacts_last_365_days, 5);
    assert_eq!(summary.last_contact_time, Some(ts(at(2025, 2, 26, 0))));
    assert_eq!(summary.last_contact_type, InteractionType::Complaint as i32);
    assert_eq!(summary.open_service_requests, 1);
    assert_eq!(summary.resolved_service_requests, 1);
    // Feb 1 00:00 -> Feb 3 12:00 = 2.5 days.
    assert_eq!(summary.mean_resolution_time.unwrap().seconds, 216_000);
    assert_eq!(summary.complaint_count, 1);
    assert_eq!(summary.open_complaints, 1);
    assert_eq!(summary.latest_csat, Some(4));
    assert_eq!(summary.mean_csat, Some(3.0));
    assert_eq!(summary.csat_count, 2);
    assert_eq!(summary.latest_nps, Some(10));
    assert_eq!(summary.mean_nps, Some(8.0));
    assert_eq!(summary.nps_count, 2);
    assert_eq!(summary.campaigns_sent, 2);
    assert_eq!(summary.campaigns_responded, 1);
    assert_eq!(summary.campaign_response_rate, Some(0.5));

    // Without as_of: now, which includes the March purchase.
    let now = c
        .get_customer_summary(req(
            h.tenant,
            GetCustomerSummaryRequest {
                customer_id: h.a.to_string(),
                as_of: None,
            },
        ))
        .await
        .answer()
        .summary
        .unwrap();
    assert_eq!(now.purchase_count, 5);
    // Another tenant sees nothing of the customer.
    let theirs = c
        .get_customer_summary(req(
            Uuid::new_v4(),
            GetCustomerSummaryRequest {
                customer_id: h.a.to_string(),
                as_of: None,
            },
        ))
        .await
        .answer()
        .summary
        .unwrap();
    assert_eq!(theirs.purchase_count, 0);
    assert!(theirs.first_purchase_time.is_none() && theirs.mean_csat.is_none());
    c.get_customer_summary(req(
        h.tenant,
        GetCustomerSummaryRequest {
            customer_id: "x".into(),
            as_of: None,
        },
    ))
    .await
    .refused(Code::InvalidArgument);
    s.stop().await;
}

async fn export(
    s: &Stack,
    tenant: Uuid,
    r: ExportSummariesRequest,
) -> Result<Vec<PurchaseHistorySummary>, tonic::Status> {
    let mut stream = s
        .interactions()
        .export_summaries(req(tenant, r))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.extend(m?.summaries);
    }
    Ok(out)
}

fn request(unit: PeriodUnit) -> ExportSummariesRequest {
    ExportSummariesRequest {
        calibration_end_time: Some(ts(at(2025, 2, 1, 0))),
        period_unit: unit as i32,
        holdout_end_time: Some(ts(at(2025, 3, 1, 0))),
        currency_code: String::new(),
        restriction: None,
        with_opportunities: false,
        columnar: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn export_summaries_by_hand() {
    let s = start().await;
    let h = record_history(&s).await;
    let all = export(&s, h.tenant, request(PeriodUnit::Week))
        .await
        .unwrap();
    // Customer C bought only after the calibration end: not exported.
    assert_eq!(all.len(), 2);
    let mut ids = vec![h.a.to_string(), h.b.to_string()];
    ids.sort();
    assert_eq!(
        all.iter()
            .map(|x| x.customer_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    let a = all
        .iter()
        .find(|x| x.customer_id == h.a.to_string())
        .unwrap();
    let b = all
        .iter()
        .find(|x| x.customer_id == h.b.to_string())
        .unwrap();

    // A: purchase days Jan 1 (10 + 5.50) and Jan 15 (20) before Feb 1.
    assert_eq!(a.currency_code, "EUR");
    assert_eq!(a.first_purchase_time, Some(ts(at(2025, 1, 1, 10))));
    assert_eq!(a.frequency, 1);
    assert!(close(a.recency, 2.0)); // 14 days
    assert!(close(a.t, 31.0 / 7.0)); // Jan 1 00:00 -> Feb 1 00:00
    assert!(close(a.monetary_value, 20.0));
    assert_eq!(a.historical_value, Some(money("EUR", 35, 500_000_000)));
    assert_eq!(a.historical_margin, Some(money("EUR", 10, 0)));
    // Holdout: one purchase day (Feb 10, in USD: no EUR value).
    assert_eq!(a.holdout_purchases, 1);
    assert!(close(a.holdout_value, 0.0));

    // B: Dec 31 (7) and Jan 1 (8 + 2): one repeat day of 10.
    assert_eq!(b.frequency, 1);
    assert!(close(b.recency, 1.0 / 7.0));
    assert!(close(b.t, 32.0 / 7.0));
    assert!(close(b.monetary_value, 10.0));
    assert_eq!(b.historical_value, Some(money("EUR", 17, 0)));
    assert_eq!(b.holdout_purchases, 1);
    assert!(close(b.holdout_value, 9.0));

    assert_eq!(a.opportunities, None);

    // In ISO weeks as opportunities. The calibration end (Saturday 1
    // February) falls in the week of 27 January, so A's opportunities are
    // the three weeks after that of 1 January, up to 26 January: a purchase
    // in the second (15 January). The holdout's whole weeks run from 3 to
    // 23 February: one of them (10 February) has A's USD purchase.
    let mut weekly = request(PeriodUnit::Week);
    weekly.with_opportunities = true;
    let weekly = export(&s, h.tenant, weekly).await.unwrap();
    let of = |id: Uuid| {
        weekly
            .iter()
            .find(|x| x.customer_id == id.to_string())
            .and_then(|x| x.opportunities)
            .unwrap()
    };
    assert_eq!(
        of(h.a),
        OpportunityHistory {
            opportunities: 3,
            frequency: 1,
            recency: 2,
            renewals: 0,
            holdout_opportunities: 3,
            holdout_frequency: 1,
        }
    );
    // B bought on 31 December and 1 January (the same ISO week), then on
    // 5 February (holdout).
    assert_eq!(
        of(h.b),
        OpportunityHistory {
            opportunities: 3,
            holdout_opportunities: 3,
            holdout_frequency: 1,
            ..Default::default()
        }
    );

    // The same export column by column carries the same model inputs.
    let mut columnar = request(PeriodUnit::Week);
    columnar.with_opportunities = true;
    columnar.columnar = true;
    let mut stream = s
        .interactions()
        .export_summaries(req(h.tenant, columnar))
        .await
        .unwrap()
        .into_inner();
    let mut batches = Vec::new();
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        assert!(m.summaries.is_empty());
        batches.push(m.columns.unwrap());
    }
    assert_eq!(batches.len(), 1);
    let c = &batches[0];
    assert_eq!(c.currency_code, "EUR");
    assert_eq!(c.customer_ids.len(), 32);
    for (i, row) in weekly.iter().enumerate() {
        let id = Uuid::from_slice(&c.customer_ids[16 * i..16 * (i + 1)]).unwrap();
        assert_eq!(id.to_string(), row.customer_id);
        assert_eq!(c.frequency[i], row.frequency);
        assert_eq!(c.recency[i], row.recency);
        assert_eq!(c.t[i], row.t);
        assert_eq!(c.monetary_value[i], row.monetary_value);
        assert_eq!(c.holdout_purchases[i], row.holdout_purchases);
        let first = row.first_purchase_time.unwrap();
        assert_eq!(
            c.first_purchase_micros[i],
            first.seconds * 1_000_000 + i64::from(first.nanos / 1000)
        );
        let o = row.opportunities.unwrap();
        assert_eq!(
            (
                c.opportunities[i],
                c.opportunity_frequency[i],
                c.opportunity_recency[i],
                c.renewals[i],
                c.holdout_opportunities[i],
                c.holdout_opportunity_frequency[i]
            ),
            (
                o.opportunities,
                o.frequency,
                o.recency,
                o.renewals,
                o.holdout_opportunities,
                o.holdout_frequency
            )
        );
    }

    // In New York's days: B's purchases at 23:00 UTC on 31 December and at
    // 01:00 and 02:00 UTC on 1 January all fall on 31 December there, one
    // purchase day; its age counts from 05:00 UTC on 31 December.
    let mut new_york = request(PeriodUnit::Week);
    new_york.time_zone = "America/New_York".into();
    let new_york = export(&s, h.tenant, new_york).await.unwrap();
    let b_ny = new_york
        .iter()
        .find(|x| x.customer_id == h.b.to_string())
        .unwrap();
    assert_eq!((b_ny.frequency, b_ny.recency), (0, 0.0));
    assert!(close(b_ny.t, (32.0 - 5.0 / 24.0) / 7.0), "{}", b_ny.t);
    assert_eq!(b_ny.historical_value, Some(money("EUR", 17, 0)));

    // In days, without holdout.
    let mut by_day = request(PeriodUnit::Day);
    by_day.holdout_end_time = None;
    let days = export(&s, h.tenant, by_day).await.unwrap();
    let a_days = days
        .iter()
        .find(|x| x.customer_id == h.a.to_string())
        .unwrap();
    assert!(close(a_days.recency, 14.0) && close(a_days.t, 31.0));
    assert_eq!(a_days.holdout_purchases, 0);

    // In USD: A's USD purchase is after the calibration end, so no money.
    let mut usd = request(PeriodUnit::Month);
    usd.currency_code = "USD".into();
    let usd = export(&s, h.tenant, usd).await.unwrap();
    let a_usd = usd
        .iter()
        .find(|x| x.customer_id == h.a.to_string())
        .unwrap();
    assert_eq!(a_usd.historical_value, Some(money("USD", 0, 0)));
    assert!(close(a_usd.t, 31.0 / 30.4375));

    // A cohort: first purchases in January 2025 (A, not B).
    let mut cohort = request(PeriodUnit::Week);
    cohort.restriction = Some(export_summaries_request::Restriction::Cohort(
        AcquisitionCohort {
            start_time: Some(ts(at(2025, 1, 1, 0))),
            end_time: Some(ts(at(2025, 2, 1, 0))),
        },
    ));
    let only_a = export(&s, h.tenant, cohort).await.unwrap();
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0].customer_id, h.a.to_string());
    // A list of customers.
    let mut listed = request(PeriodUnit::Week);
    listed.restriction = Some(export_summaries_request::Restriction::CustomerIds(
        CustomerIdList {
            customer_ids: vec![h.b.to_string(), h.b.to_string(), Uuid::new_v4().to_string()],
        },
    ));
    let only_b = export(&s, h.tenant, listed).await.unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].customer_id, h.b.to_string());

    // Another tenant has nothing to export and no currency to choose.
    export(&s, Uuid::new_v4(), request(PeriodUnit::Week))
        .await
        .refused(Code::FailedPrecondition);
    let mut eur = request(PeriodUnit::Week);
    eur.currency_code = "EUR".into();
    assert!(export(&s, Uuid::new_v4(), eur).await.unwrap().is_empty());

    // Invalid requests, one violation per problem.
    let bad = ExportSummariesRequest {
        calibration_end_time: Some(ts(chrono::Utc::now() + chrono::Duration::days(1))),
        period_unit: 0,
        holdout_end_time: Some(ts(at(2020, 1, 1, 0))),
        currency_code: "eur".into(),
        restriction: Some(export_summaries_request::Restriction::CustomerIds(
            CustomerIdList {
                customer_ids: vec!["x".into()],
            },
        )),
        with_opportunities: true,
        columnar: false,
        time_zone: "Europe/Nowhere".into(),
    };
    let err = export(&s, h.tenant, bad).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "calibration_end_time",
            "time_zone",
            "period_unit",
            "currency_code",
            "customer_ids.customer_ids[0]"
        ]
    );
    let mut bad_holdout = request(PeriodUnit::Week);
    bad_holdout.holdout_end_time = Some(ts(at(2025, 1, 1, 0)));
    let err = export(&s, h.tenant, bad_holdout).await.unwrap_err();
    assert_eq!(violated_fields(&err), ["holdout_end_time"]);
    s.stop().await;
}
