//! With the real profile service in-process: relationship scores and share
//! of wallet from the interaction summary and the profile's wallet, and an
//! erasure reaching the valuation service through the interaction feed.

mod common;

use chrono::{Duration, Utc};
use common::*;
use futures::StreamExt;
use rapport_proto::rapport::interaction::v1::{
    Interaction, InteractionType, ServiceRequestStatus, Survey,
};
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, EraseCustomerRequest,
};
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

async fn customer(s: &Stack, tenant: Uuid, wallet: Option<i64>) -> Uuid {
    let c = s
        .profile_client()
        .await
        .create_customer(req(
            tenant,
            CreateCustomerRequest {
                customer: Some(Customer {
                    kind: CustomerKind::Person as i32,
                    display_name: "Ann".into(),
                    estimated_category_wallet: wallet.map(|w| money("EUR", w, 0)),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .customer
        .unwrap();
    c.customer_id.parse().unwrap()
}

fn contact(customer: Uuid, kind: InteractionType, t: chrono::DateTime<Utc>) -> Interaction {
    Interaction {
        customer: by_id(customer),
        r#type: kind as i32,
        occur_time: Some(ts(t)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationship_scores_and_erasure() {
    let s = start(true).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let a = customer(&s, tenant, Some(1000)).await;
    let b = customer(&s, tenant, None).await;
    let now = Utc::now();
    let mut resolved = contact(a, InteractionType::ServiceRequest, now - Duration::days(20));
    resolved.service_request_status = ServiceRequestStatus::Resolved as i32;
    resolved.resolve_time = Some(ts(now - Duration::days(17)));
    let survey = Interaction {
        survey: Some(Survey {
            csat: Some(4),
            nps: Some(8),
            comment: String::new(),
        }),
        ..contact(a, InteractionType::SurveyResponse, now - Duration::days(5))
    };
    record_all(
        &s,
        tenant,
        vec![
            purchase(a, now - Duration::days(800), 40_000),
            purchase(a, now - Duration::days(400), 40_000),
            purchase(a, now - Duration::days(30), 70_000),
            purchase(b, now - Duration::days(60), 5_000),
            purchase(b, now - Duration::days(10), 5_000),
            resolved,
            survey,
            contact(a, InteractionType::Complaint, now - Duration::days(2)),
        ],
    )
    .await;

    // Models from the CDNOW sample (inline, weeks), then a run.
    cdnow_models(&mut v, tenant).await;
    let run = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .answer();
    assert_eq!(run.scored_customer_count, 2);

    let scores = v
        .get_relationship_scores(req(
            tenant,
            GetRelationshipScoresRequest {
                customer_id: a.to_string(),
            },
        ))
        .await
        .answer()
        .scores
        .unwrap();
    let sat = scores.satisfaction.unwrap();
    assert!(
        (sat.score.unwrap() - (75.0 + 80.0) / 2.0).abs() < 1e-9,
        "{sat:?}"
    );
    let trust = scores.trust.unwrap();
    let names: Vec<_> = trust.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["complaint_count", "open_issues", "mean_resolution_time"]
    );
    assert_eq!(trust.inputs[0].score, Some(50.0));
    assert_eq!(trust.inputs[1].score, Some(50.0), "the complaint is open");
    let resolution = trust.inputs[2].score.unwrap();
    assert!(
        (resolution - 11.0 / 13.0 * 100.0).abs() < 1e-6,
        "{resolution}"
    );
    let commitment = scores.commitment.unwrap();
    assert_eq!(
        commitment.inputs[0].score,
        Some(100.0),
        "800 days of tenure"
    );
    // A bought three times in 800 days, B twice in 60: A's rate is the lower.
    assert_eq!(commitment.inputs[1].score, Some(25.0));
    assert!(scores.quality.is_some());
    let wallet = scores.share_of_wallet.unwrap();
    // 1,500 EUR over 800 / 365.25 years, against 1,000 a year.
    let yearly = 1500.0 / (800.0 / 365.25);
    assert!(
        (amount(&wallet.yearly_spend) - yearly).abs() < 0.01,
        "{wallet:?}"
    );
    assert!((wallet.share - yearly / 1000.0).abs() < 1e-6);
    assert!(!wallet.capped);
    // B has no wallet.
    let b_scores = v
        .get_relationship_scores(req(
            tenant,
            GetRelationshipScoresRequest {
                customer_id: b.to_string(),
            },
        ))
        .await
        .answer()
        .scores
        .unwrap();
    assert!(b_scores.share_of_wallet.is_none());
    assert_eq!(b_scores.satisfaction.unwrap().score, None);
    // Unknown to the profile service.
    v.get_relationship_scores(req(
        tenant,
        GetRelationshipScoresRequest {
            customer_id: Uuid::new_v4().to_string(),
        },
    ))
    .await
    .refused(Code::NotFound);

    // Erasing B removes its value, says so on the feed and reduces B's
    // earlier events to `redacted` ones.
    s.profile_client()
        .await
        .erase_customer(req(
            tenant,
            EraseCustomerRequest {
                customer_id: b.to_string(),
                request_reference: String::new(),
            },
        ))
        .await
        .unwrap();
    eventually("B's value to go", || {
        let mut v = v.clone();
        async move {
            v.get_customer_value(req(
                tenant,
                GetCustomerValueRequest {
                    customer_id: b.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .is_err_and(|e| e.code() == Code::NotFound)
        }
    })
    .await;
    let mut feed = v
        .watch_changes(req(
            tenant,
            WatchChangesRequest {
                after_sequence: 0,
                ..Default::default()
            },
        ))
        .await
        .answer();
    let mut b_events = Vec::new();
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .expect("feed")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        if ev.aggregate_id == b.to_string() {
            let typed = rapport_kit::feed::decode::<ValuationEvent>(&ev).and_then(|e| e.event);
            b_events.push((ev.event_type.clone(), ev.clone(), typed));
            if ev.event_type == "CustomerValueRemoved" {
                break;
            }
        }
    }
    // B's earlier value is reduced to its id; the removal says why.
    assert_eq!(b_events[0].0, "CustomerValueChanged");
    for (_, ev, typed) in &b_events[..b_events.len() - 1] {
        assert_eq!(
            *typed,
            Some(valuation_event::Event::Redacted(
                rapport_proto::rapport::common::v1::RedactedEvent {
                    subject_id: b.to_string(),
                    reason: rapport_proto::rapport::common::v1::RedactionReason::Erased as i32,
                }
            )),
            "{ev:?}"
        );
        #[allow(deprecated)]
        let legacy = ev.payload.clone();
        assert_eq!(legacy, None);
    }
    let (_, _, last) = b_events.last().unwrap();
    assert_eq!(
        *last,
        Some(valuation_event::Event::CustomerValueRemoved(
            CustomerValueRemoved {
                customer_id: b.to_string(),
                reason: ValueRemovalReason::Erased as i32,
            }
        ))
    );
    assert_eq!(
        v.get_value_concentration(req(tenant, GetValueConcentrationRequest::default()))
            .await
            .answer()
            .customer_count,
        1
    );
}
