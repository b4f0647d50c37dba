//! The service's own change feed, scheduled refreshes, history limits and
//! the SQL form of the RFM mapping.

mod common;

use chrono::{Duration, Utc};
use common::*;
use futures::StreamExt;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::segmentation::v1::*;
use rapport_segmentation::domain::rfm;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn watch_changes_carries_segment_and_membership_events() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = vec![
        Customer::new("ES").bought(2, 100, 50, 5),
        Customer::new("MX"),
    ];
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let seg = create_segment(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    c.delete_segment(req(
        t,
        DeleteSegmentRequest {
            segment_id: seg.segment_id.clone(),
            etag: seg.etag.clone(),
        },
    ))
    .await
    .unwrap();
    c.watch_changes(WatchChangesRequest {
        after_sequence: -1,
        ..Default::default()
    })
    .await
    .refused(Code::InvalidArgument);
    let mut feed = c
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .answer();
    let mut events = Vec::new();
    for _ in 0..3 {
        let ev = feed.next().await.unwrap().unwrap().event.unwrap();
        let typed: SegmentationEvent =
            rapport_kit::feed::decode(&ev).expect("a typed SegmentationEvent");
        events.push((ev.event_type.clone(), typed.event.expect("a case")));
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["MembershipChanged", "SegmentCreated", "SegmentDeleted"]
    );
    let segmentation_event::Event::MembershipChanged(m) = &events[0].1 else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(m.segment_id, seg.segment_id);
    assert_eq!(m.reason, MembershipChangeReason::SegmentCreated as i32);
    assert_eq!(m.entered, vec![cs[0].id.to_string()]);
    assert!(m.exited.is_empty());
    assert!(m.first_sequence > 0 && m.last_sequence >= m.first_sequence);
    assert!(m.change_time.is_some());
    let segmentation_event::Event::SegmentCreated(created) = &events[1].1 else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(created.segment_id, seg.segment_id);
    assert_eq!(created.name, "Buyers");
    assert_eq!(created.kind, SegmentKind::Dynamic as i32);
    assert_eq!(created.rule_text, "purchases >= 1");
    assert_eq!(
        created.marketing_approach,
        MarketingApproach::Differentiated as i32
    );
    assert!(!created.etag.is_empty());
    let segmentation_event::Event::SegmentDeleted(deleted) = &events[2].1 else {
        panic!("{:?}", events[2]);
    };
    assert_eq!(deleted.name, "Buyers");
    assert_eq!(deleted.segment_id, seg.segment_id);
    s.stop().await;
}

#[tokio::test]
async fn scheduled_refreshes_run_on_their_own() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = vec![
        Customer::new("ES").bought(2, 100, 50, 5),
        Customer::new("ES").bought(1, 10, 5, 5),
    ];
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let mut r = of_kind("Weekly list", SegmentKind::Snapshot, "monetary >= 50");
    r.segment.as_mut().unwrap().refresh_interval = Some(prost_types::Duration {
        seconds: 7 * 86_400,
        nanos: 0,
    });
    let seg = create_segment(&mut c, t, r).await;
    assert_eq!(seg.member_count, 1);
    let next = seg.next_refresh_time.unwrap();
    let last = seg.last_refresh_time.unwrap();
    assert_eq!(next.seconds - last.seconds, 7 * 86_400);
    // The data changes; the snapshot stays until its time comes.
    sqlx::query("UPDATE features SET monetary = 60 WHERE customer_id = $1")
        .bind(cs[1].id)
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE segments SET next_refresh_time = now() - interval '1 second' WHERE segment_id = $1::uuid")
        .bind(&seg.segment_id)
        .execute(&s.pool)
        .await
        .unwrap();
    let mut c2 = c.clone();
    let id = seg.segment_id.clone();
    eventually("the scheduled refresh", || {
        let mut c2 = c2.clone();
        let id = id.clone();
        async move { members(&mut c2, t, &id).await.len() == 2 }
    })
    .await;
    let after = get_segment(&mut c2, t, &seg.segment_id).await;
    assert!(after.next_refresh_time.unwrap().seconds > Utc::now().timestamp() + 6 * 86_400);
    let reason: i16 =
        sqlx::query_scalar("SELECT reason FROM membership_log WHERE customer_id = $1")
            .bind(cs[1].id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(reason, MembershipChangeReason::Refresh as i16);
    s.stop().await;
}

#[tokio::test]
async fn history_and_stream_limits() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let seg = create_segment(&mut c, t, dynamic("Any", "purchases >= 0")).await;
    c.get_segment_history(req(
        t,
        GetSegmentHistoryRequest {
            segment_id: seg.segment_id.clone(),
            start_time: Some(timestamp(Utc::now() - Duration::days(500))),
            granularity: HistoryGranularity::Week as i32,
            ..Default::default()
        },
    ))
    .await
    .refused(Code::OutOfRange);
    let e = c
        .get_segment_history(req(
            t,
            GetSegmentHistoryRequest {
                segment_id: seg.segment_id.clone(),
                start_time: Some(timestamp(Utc::now() - Duration::days(100))),
                granularity: HistoryGranularity::Hour as i32,
                ..Default::default()
            },
        ))
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(violations(&e)[0].0, "granularity");
    let e = c
        .get_segment_history(req(
            t,
            GetSegmentHistoryRequest {
                segment_id: "nope".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "segment_id");
    c.watch_membership(req(
        t,
        WatchMembershipRequest {
            segment_id: Uuid::new_v4().to_string(),
            start: None,
        },
    ))
    .await
    .refused(Code::NotFound);
    c.watch_membership(req(
        t,
        WatchMembershipRequest {
            segment_id: String::new(),
            start: Some(watch_membership_request::Start::StartTime(timestamp(
                Utc::now() + Duration::hours(1),
            ))),
        },
    ))
    .await
    .refused(Code::InvalidArgument);
    // A stream on a segment ends with NOT_FOUND when the segment is deleted.
    let mut stream = c
        .watch_membership(req(
            t,
            WatchMembershipRequest {
                segment_id: seg.segment_id.clone(),
                start: None,
            },
        ))
        .await
        .answer();
    c.delete_segment(req(
        t,
        DeleteSegmentRequest {
            segment_id: seg.segment_id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn the_sql_rfm_mapping_matches_the_domain() {
    let s = start().await;
    for r in 1..=5 {
        for fm in 1..=5 {
            let name: String = sqlx::query_scalar("SELECT rfm_segment_name($1, $2)")
                .bind(r)
                .bind(fm)
                .fetch_one(&s.pool)
                .await
                .unwrap();
            assert_eq!(name, rfm::name(rfm::segment(r, fm)), "R {r} FM {fm}");
        }
    }
    s.stop().await;
}
