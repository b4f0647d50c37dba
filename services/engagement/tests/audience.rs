//! StreamNextBestActions over a segment of 1,210 members (three pages):
//! segment and memberships arrive as segmentation's typed events, each
//! member is decided for as GetNextBestActions does, and the summary counts
//! what was sent.

mod common;

use common::*;
use futures::StreamExt;
use rapport_engagement::domain::decide::in_control;
use rapport_engagement::follow::{ProfileFollower, SegmentationFollower};
use rapport_kit::feed::NewEvent;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::engagement::v1::{
    self as pb, ContactChannel, FilterReason, ListDecisionsRequest, StreamNextBestActionsRequest,
    TreatmentKind,
};
use rapport_proto::rapport::profile::v1::{
    ConsentPurpose, CustomerCreated, ProfileEvent, profile_event,
};
use rapport_proto::rapport::segmentation::v1::{
    MembershipChanged, SegmentChanged, SegmentationEvent, segmentation_event,
};
use uuid::Uuid;

async fn stream(
    c: &mut Client,
    t: Uuid,
    r: StreamNextBestActionsRequest,
) -> Result<Vec<pb::StreamNextBestActionsResponse>, tonic::Status> {
    let mut s = c.stream_next_best_actions(req(t, r)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.push(m?);
    }
    Ok(out)
}

async fn count_decisions(c: &mut Client, t: Uuid) -> i64 {
    let mut stored = 0;
    let mut token = String::new();
    loop {
        let page = c
            .list_decisions(req(
                t,
                ListDecisionsRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .answer();
        stored += page.decisions.len() as i64;
        token = page.next_page_token;
        if token.is_empty() {
            return stored;
        }
    }
}

#[tokio::test]
async fn every_member_of_a_segment_is_decided_for() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let members: Vec<Uuid> = (0..1210u128)
        .map(|i| Uuid::from_u128(0xa0d1_0000 + i))
        .collect();
    // 1,200 of them are known customers; 10 were never announced by profile.
    let created: Vec<ChangeEvent> = members[..1200]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let e = ProfileEvent {
                event: Some(profile_event::Event::CustomerCreated(CustomerCreated {
                    customer_id: id.to_string(),
                    ..Default::default()
                })),
            };
            change(
                i as i64 + 1,
                t,
                NewEvent::new(t, "customer", id.to_string(), "CustomerCreated", &e),
            )
        })
        .collect();
    let segment = Uuid::new_v4();
    let seg = |e: segmentation_event::Event, kind: &'static str| {
        NewEvent::new(
            t,
            "segment",
            segment.to_string(),
            kind,
            &SegmentationEvent { event: Some(e) },
        )
    };
    let segmentation = vec![
        change(
            1,
            t,
            seg(
                segmentation_event::Event::SegmentCreated(SegmentChanged {
                    segment_id: segment.to_string(),
                    name: "lapsing".into(),
                    ..Default::default()
                }),
                "SegmentCreated",
            ),
        ),
        change(
            2,
            t,
            seg(
                segmentation_event::Event::MembershipChanged(MembershipChanged {
                    segment_id: segment.to_string(),
                    entered: members.iter().map(Uuid::to_string).collect(),
                    ..Default::default()
                }),
                "MembershipChanged",
            ),
        ),
    ];
    let mut tx = s.pool.begin().await.unwrap();
    ProfileFollower
        .apply_batch(&mut tx, t, &created)
        .await
        .unwrap();
    SegmentationFollower
        .apply_batch(&mut tx, t, &segmentation)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut call = pb::Treatment {
        name: "Win-back call".into(),
        kind: TreatmentKind::WinBack as i32,
        channel: ContactChannel::Phone as i32,
        consent_purpose: ConsentPurpose::Service as i32,
        cost_per_contact: Some(eur(2, 0)),
        value: Some(pb::treatment::Value::FixedValue(eur(60, 0))),
        control_share_bps: 1000,
        target_segment_ids: vec![segment.to_string()],
        ..Default::default()
    };
    let call = create(&mut c, t, std::mem::take(&mut call)).await;
    create(&mut c, t, offer("Newsletter offer")).await; // needs marketing consent: nobody has it
    let tid = Uuid::parse_str(&call.treatment_id).unwrap();

    let parts = stream(
        &mut c,
        t,
        StreamNextBestActionsRequest {
            segment_id: segment.to_string(),
            limit_per_customer: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let summary = parts.last().unwrap().summary.clone().unwrap();
    let customers: Vec<&pb::CustomerActions> =
        parts.iter().flat_map(|p| p.customers.iter()).collect();
    assert_eq!(parts.len(), 4, "three pages of up to 500, then the summary");
    assert!(
        parts[..3]
            .iter()
            .all(|p| p.summary.is_none() && p.customers.len() <= 500)
    );
    assert_eq!(customers.len(), 1200);
    let ids: Vec<String> = customers.iter().map(|c| c.customer_id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in the order of their ids");
    let held = members[..1200]
        .iter()
        .filter(|m| in_control(tid, **m, 1000))
        .count() as i64;
    assert_eq!(summary.members, 1210);
    assert_eq!(summary.customers, 1200);
    assert_eq!(summary.customers_with_actions, 1200 - held);
    assert_eq!(summary.actions, 1200 - held);
    let count = |r: FilterReason| {
        summary
            .filtered
            .iter()
            .find(|x| x.reason == r as i32)
            .map_or(0, |x| x.count)
    };
    assert_eq!(count(FilterReason::ControlGroup), held);
    assert_eq!(count(FilterReason::NoConsent), 1200);
    for c in &customers {
        let id = Uuid::parse_str(&c.customer_id).unwrap();
        if in_control(tid, id, 1000) {
            assert!(c.actions.is_empty());
        } else {
            let a = &c.actions[0];
            // 0.1 × 60 − 2 = 4.00, the slim treatment without reasons.
            assert_eq!(a.expected_net_value, Some(eur(4, 0)));
            assert_eq!(a.treatment.as_ref().unwrap().name, "Win-back call");
            assert!(a.eligible_because.is_empty() && !a.decision_id.is_empty());
        }
        assert!(c.filtered.is_empty());
    }
    // Stored: one decision per action and one control record per held-out customer.
    let stored = count_decisions(&mut c, t).await;
    assert_eq!(stored, 1200);

    // With explain, each customer carries its reasons and what was left out;
    // a preview stores nothing more. The answers equal GetNextBestActions'.
    let parts = stream(
        &mut c,
        t,
        StreamNextBestActionsRequest {
            segment_id: segment.to_string(),
            preview: true,
            explain: true,
            channel: ContactChannel::Phone as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = &parts[0].customers[0];
    let single = c
        .get_next_best_actions(req(
            t,
            pb::GetNextBestActionsRequest {
                customer_id: first.customer_id.clone(),
                channel: ContactChannel::Phone as i32,
                preview: true,
                limit: 1,
            },
        ))
        .await
        .answer();
    assert_eq!(first.actions, single.actions);
    assert_eq!(first.filtered.len(), single.filtered.len());
    assert!(
        first
            .filtered
            .iter()
            .any(|f| f.reason == FilterReason::Channel as i32)
    );
    assert_eq!(count_decisions(&mut c, t).await, 1200);

    // An unknown segment is NOT_FOUND; a bad limit INVALID_ARGUMENT.
    stream(
        &mut c,
        t,
        StreamNextBestActionsRequest {
            segment_id: Uuid::new_v4().to_string(),
            ..Default::default()
        },
    )
    .await
    .refused(tonic::Code::NotFound);
    stream(
        &mut c,
        t,
        StreamNextBestActionsRequest {
            segment_id: segment.to_string(),
            limit_per_customer: 6,
            ..Default::default()
        },
    )
    .await
    .refused(tonic::Code::InvalidArgument);
    // Another tenant does not know the segment.
    stream(
        &mut c,
        Uuid::new_v4(),
        StreamNextBestActionsRequest {
            segment_id: segment.to_string(),
            ..Default::default()
        },
    )
    .await
    .refused(tonic::Code::NotFound);
    s.stop().await;
}
