//! Segments over real gRPC with a throwaway database: CRUD and validation,
//! preview, refresh diffs, static members, references and cycles,
//! explanations, history, the membership stream, tenant isolation.

mod common;

use common::*;
use futures::StreamExt;
use prost_types::FieldMask;
use rapport_proto::rapport::segmentation::v1::*;
use rust_decimal::Decimal;
use tonic::Code;
use uuid::Uuid;

fn sample() -> Vec<Customer> {
    vec![
        Customer::new("ES").bought(5, 900, 400, 10).clv(2000),
        Customer::new("ES").bought(1, 50, 20, 20).clv(100),
        Customer::new("MX").bought(3, 400, 200, 100),
        Customer::new("FR").bought(8, 3000, 800, 2).clv(5000),
        Customer::new("ES"),
    ]
}

#[tokio::test]
async fn create_get_update_list_delete() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();

    let created = c
        .create_segment(req(
            t,
            dynamic(
                "Big spenders",
                "monetary >= 400 AND country in [\"ES\", \"MX\"]",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(created.member_count, 2);
    assert_eq!(
        created.rule_text,
        "monetary >= 400 and country in [\"ES\", \"MX\"]"
    );
    assert!(created.rule.is_some());
    assert!(created.last_refresh_time.is_some() && created.next_refresh_time.is_some());
    assert_eq!(
        created.marketing_approach,
        MarketingApproach::Differentiated as i32
    );
    let mut expect = vec![cs[0].id.to_string(), cs[2].id.to_string()];
    expect.sort();
    assert_eq!(members(&mut c, t, &created.segment_id).await, expect);

    // Same name again: ALREADY_EXISTS.
    let e = c
        .create_segment(req(t, dynamic("Big spenders", "purchases > 0")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // Get.
    let got = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: created.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(got.etag, created.etag);

    // Update the rule: the segment follows at once.
    let upd = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: created.segment_id.clone(),
                    rule_text: "monetary >= 400".into(),
                    description: "spent 400 or more".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["rule_text".into(), "description".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((upd.entered_count, upd.exited_count), (1, 0));
    let seg = upd.segment.unwrap();
    assert_eq!(seg.member_count, 3);
    assert_eq!(seg.description, "spent 400 or more");
    assert_ne!(seg.etag, created.etag);

    // A stale etag: ABORTED.
    let e = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: created.segment_id.clone(),
                    name: "x".into(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);

    // Mask path "kind": INVALID_ARGUMENT.
    let e = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: created.segment_id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["kind".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(violations(&e)[0].0, "update_mask.paths[0]");

    // List, filtered and paged.
    c.create_segment(req(t, of_kind("A list", SegmentKind::Static, "")))
        .await
        .unwrap();
    c.create_segment(req(
        t,
        of_kind("Snap", SegmentKind::Snapshot, "purchases >= 1"),
    ))
    .await
    .unwrap();
    let all = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.segments.len(), 2);
    assert_eq!(all.segments[0].name, "A list");
    let rest = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_size: 2,
                page_token: all.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.segments.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let statics = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                kind: SegmentKind::Static as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statics.segments.len(), 1);
    let e = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_token: "forged".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Delete.
    c.delete_segment(req(
        t,
        DeleteSegmentRequest {
            segment_id: created.segment_id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .unwrap();
    let e = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: created.segment_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();

    // A parse error: line and column.
    let e = c
        .create_segment(req(t, dynamic("Bad", "purchases >= and clv > 1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "segment.rule_text");
    assert!(v[0].1.starts_with("line 1, column 14:"), "{}", v[0].1);

    // An unknown field: a type error.
    let e = c
        .create_segment(req(t, dynamic("Bad", "purchase >= 3")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        violations(&e)[0].1.contains("purchases"),
        "{:?}",
        violations(&e)
    );

    // Several problems at once; nothing written.
    let e = c
        .create_segment(req(
            t,
            CreateSegmentRequest {
                segment: Some(Segment {
                    name: " padded".into(),
                    kind: SegmentKind::Static as i32,
                    rule_text: "purchases > 1".into(),
                    refresh_interval: Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
    assert!(fields.contains(&"segment.name".to_string()));
    assert!(fields.contains(&"segment.refresh_interval".to_string()));
    assert!(fields.contains(&"segment.rule_text".to_string()));

    // Kind missing; both rule forms.
    let e = c
        .create_segment(req(
            t,
            of_kind("K", SegmentKind::Unspecified, "purchases > 1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "segment.kind");
    let mut both = dynamic("Both", "purchases > 1");
    both.segment.as_mut().unwrap().rule = Some(Rule::default());
    let e = c.create_segment(req(t, both)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Unknown in_segment reference.
    let e = c
        .create_segment(req(t, dynamic("Ref", "in_segment(\"nope\")")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // No tenant: UNAUTHENTICATED.
    let e = c
        .list_segments(tonic::Request::new(ListSegmentsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    s.stop().await;
}

#[tokio::test]
async fn idempotent_creation() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let mut r = dynamic("Once", "purchases >= 1");
    r.request_id = "req-1".into();
    let a = c
        .create_segment(req(t, r.clone()))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    let b = c
        .create_segment(req(t, r.clone()))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(a.segment_id, b.segment_id);
    r.segment.as_mut().unwrap().rule_text = "purchases >= 2".into();
    let e = c.create_segment(req(t, r)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    s.stop().await;
}

#[tokio::test]
async fn preview_counts_samples_and_converts() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let p = c
        .preview_segment(req(
            t,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    "country = \"ES\" and purchases >= 1".into(),
                )),
                sample_size: 1,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.match_count, 2);
    assert_eq!(p.customer_count, 5);
    assert_eq!(p.sample_customer_ids.len(), 1);
    assert!([cs[0].id.to_string(), cs[1].id.to_string()].contains(&p.sample_customer_ids[0]));
    // The structured form gives the same.
    let again = c
        .preview_segment(req(
            t,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::Rule(
                    p.rule.clone().unwrap(),
                )),
                sample_size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.match_count, 2);
    assert_eq!(again.rule_text, p.rule_text);
    assert_eq!(again.sample_customer_ids.len(), 2);
    // Ranks.
    let top = c
        .preview_segment(req(
            t,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    "clv in top 33%".into(),
                )),
                sample_size: 10,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.sample_customer_ids, vec![cs[3].id.to_string()]);
    // Out of range sample.
    let e = c
        .preview_segment(req(
            t,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    "purchases > 0".into(),
                )),
                sample_size: 101,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "sample_size");
    s.stop().await;
}

#[tokio::test]
async fn refresh_records_entries_and_exits() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let snap = c
        .create_segment(req(
            t,
            of_kind("Spenders", SegmentKind::Snapshot, "monetary > 300"),
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(snap.member_count, 3);
    assert!(snap.next_refresh_time.is_none());

    // Customer 2 stops qualifying, customer 1 starts.
    sqlx::query("UPDATE features SET monetary = 100 WHERE customer_id = $1")
        .bind(cs[2].id)
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE features SET monetary = 1000 WHERE customer_id = $1")
        .bind(cs[1].id)
        .execute(&s.pool)
        .await
        .unwrap();
    // A snapshot stays frozen until refreshed.
    let frozen = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: snap.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(frozen.member_count, 3);

    let r = c
        .refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: snap.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.entered_count, r.exited_count), (1, 1));
    assert!(r.first_sequence > 0 && r.last_sequence > r.first_sequence);
    assert_eq!(r.segment.unwrap().member_count, 3);

    // The changes, read back from the stream.
    let mut stream = c
        .watch_membership(req(
            t,
            WatchMembershipRequest {
                segment_id: snap.segment_id.clone(),
                start: Some(watch_membership_request::Start::AfterSequence(
                    r.first_sequence - 1,
                )),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    for _ in 0..2 {
        let ch = stream.next().await.unwrap().unwrap().change.unwrap();
        got.push((ch.customer_id, ch.r#type, ch.reason));
    }
    got.sort();
    let mut want = vec![
        (
            cs[1].id.to_string(),
            MembershipChangeType::Entered as i32,
            MembershipChangeReason::Refresh as i32,
        ),
        (
            cs[2].id.to_string(),
            MembershipChangeType::Exited as i32,
            MembershipChangeReason::Refresh as i32,
        ),
    ];
    want.sort();
    assert_eq!(got, want);

    // A second refresh changes nothing.
    let r2 = c
        .refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: snap.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r2.entered_count, r2.exited_count, r2.first_sequence),
        (0, 0, 0)
    );

    // History: today's interval has the entries and exits.
    let h = c
        .get_segment_history(req(
            t,
            GetSegmentHistoryRequest {
                segment_id: snap.segment_id.clone(),
                granularity: HistoryGranularity::Day as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let last = h.points.last().unwrap();
    assert_eq!(
        (last.member_count, last.entered_count, last.exited_count),
        (3, 4, 1)
    );
    assert_eq!(h.points.len(), 1, "intervals before creation are left out");

    // GetCustomerSegments.
    let cs1 = c
        .get_customer_segments(req(
            t,
            GetCustomerSegmentsRequest {
                customer_id: cs[1].id.to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cs1.memberships.len(), 1);
    assert_eq!(cs1.memberships[0].segment_name, "Spenders");
    let e = c
        .get_customer_segments(req(
            t,
            GetCustomerSegmentsRequest {
                customer_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Static segments cannot be refreshed.
    let st = c
        .create_segment(req(t, of_kind("List", SegmentKind::Static, "")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    let e = c
        .refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: st.segment_id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    s.stop().await;
}

#[tokio::test]
async fn static_members_and_references() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let list = c
        .create_segment(req(t, of_kind("Churned", SegmentKind::Static, "")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    // A dynamic segment that excludes the list.
    let active = c
        .create_segment(req(
            t,
            dynamic("Active", "purchases >= 1 and not in_segment(\"Churned\")"),
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(active.member_count, 4);
    assert!(active.rule_text.contains("in_segment(\"Churned\")"));

    let unknown = Uuid::new_v4();
    let added = c
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: vec![
                    cs[0].id.to_string(),
                    cs[0].id.to_string(),
                    unknown.to_string(),
                ],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            added.added_count,
            added.already_member_count,
            added.member_count
        ),
        (1, 0, 1)
    );
    assert_eq!(added.not_found_customer_ids, vec![unknown.to_string()]);
    // Idempotent.
    let again = c
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: vec![cs[0].id.to_string()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.added_count, again.already_member_count), (0, 1));
    // The dependent dynamic segment followed.
    let a = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: active.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(a.member_count, 3);

    // Renaming the referenced segment keeps the rule, printed with the new name.
    let renamed = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: list.segment_id.clone(),
                    name: "Lost ones".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["name".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(renamed.name, "Lost ones");
    let a = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: active.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert!(
        a.rule_text.contains("in_segment(\"Lost ones\")"),
        "{}",
        a.rule_text
    );

    // A cycle is refused: a segment referring to Active, then Active to it.
    let b = c
        .create_segment(req(t, dynamic("B", "in_segment(\"Active\")")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    let e = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: active.segment_id.clone(),
                    rule_text: "in_segment(\"B\")".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["rule_text".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        violations(&e)[0].1.contains("cycle"),
        "{:?}",
        violations(&e)
    );
    // Referenced segments cannot be deleted.
    let e = c
        .delete_segment(req(
            t,
            DeleteSegmentRequest {
                segment_id: active.segment_id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("\"B\""));
    // Dynamic segments take no members by hand.
    let e = c
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: b.segment_id.clone(),
                customer_ids: vec![cs[1].id.to_string()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let removed = c
        .remove_members(req(
            t,
            RemoveMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: vec![cs[0].id.to_string(), cs[1].id.to_string()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            removed.removed_count,
            removed.not_member_count,
            removed.member_count
        ),
        (1, 1, 0)
    );
    let a = c
        .get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: active.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(a.member_count, 4);
    s.stop().await;
}

#[tokio::test]
async fn explain_membership_condition_by_condition() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let seg = c
        .create_segment(req(
            t,
            dynamic(
                "Valuable ES",
                "country = \"ES\" and clv > 500 and clv in top 50%",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(seg.member_count, 1);
    let yes = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cs[0].id.to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(yes.member && yes.rule_held);
    assert!(yes.enter_time.is_some());
    let root = yes.explanation.unwrap();
    assert!(root.held);
    assert_eq!(root.children.len(), 3);
    let no = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cs[1].id.to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!no.member && !no.rule_held);
    let root = no.explanation.unwrap();
    assert!(!root.held);
    assert!(root.children[0].held, "country ES holds");
    assert!(!root.children[1].held, "clv 100 > 500 does not");
    // Unknown customer.
    let e = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: Uuid::new_v4().to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    s.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ca = sample();
    insert(&s.pool, a, &ca).await;
    insert(&s.pool, b, &[Customer::new("ES").bought(9, 9000, 500, 1)]).await;
    let mut c = s.client();
    let seg = c
        .create_segment(req(a, dynamic("Buyers", "purchases >= 1")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(seg.member_count, 4);
    // Tenant b sees neither the segment nor tenant a's customers.
    let e = c
        .get_segment(req(
            b,
            GetSegmentRequest {
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .explain_membership(req(
            b,
            ExplainMembershipRequest {
                customer_id: ca[0].id.to_string(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let listed = c
        .list_segments(req(b, ListSegmentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.segments.is_empty());
    // The same name is free in tenant b, and counts only b's customers.
    let bs = c
        .create_segment(req(b, dynamic("Buyers", "purchases >= 1")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    assert_eq!(bs.member_count, 1);
    let p = c
        .preview_segment(req(
            b,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    "purchases >= 0".into(),
                )),
                sample_size: 10,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.customer_count, 1);
    let e = c
        .add_members(req(
            b,
            AddMembersRequest {
                segment_id: seg.segment_id.clone(),
                customer_ids: vec![ca[0].id.to_string()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let r = c
        .get_rfm_report(req(b, GetRfmReportRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.scored_customer_count, 1);
    let _ = Decimal::ZERO;

    // Membership sequences are numbered per tenant: tenant b's changes
    // between two of a's leave no gap in a's numbering, so they say nothing
    // about b's activity.
    let a2 = c
        .create_segment(req(a, dynamic("Big buyers", "purchases >= 1")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    let sequences = |tenant: Uuid, segment: String, n: usize| {
        let mut c = s.client();
        async move {
            let mut stream = c
                .watch_membership(req(
                    tenant,
                    WatchMembershipRequest {
                        segment_id: segment,
                        start: Some(watch_membership_request::Start::AfterSequence(0)),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(
                    stream
                        .next()
                        .await
                        .unwrap()
                        .unwrap()
                        .change
                        .unwrap()
                        .sequence,
                );
            }
            got
        }
    };
    assert_eq!(sequences(a, seg.segment_id.clone(), 4).await, [1, 2, 3, 4]);
    assert_eq!(sequences(b, bs.segment_id.clone(), 1).await, [1]);
    assert_eq!(sequences(a, a2.segment_id.clone(), 4).await, [5, 6, 7, 8]);
    s.stop().await;
}

#[tokio::test]
async fn a_watch_ends_unavailable_when_the_service_shuts_down() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &sample()).await;
    let mut c = s.client();
    let seg = c
        .create_segment(req(t, dynamic("Buyers", "purchases >= 1")))
        .await
        .unwrap()
        .into_inner()
        .segment
        .unwrap();
    let mut stream = c
        .watch_membership(req(
            t,
            WatchMembershipRequest {
                segment_id: seg.segment_id,
                start: Some(watch_membership_request::Start::AfterSequence(0)),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    s.segmentation.as_ref().unwrap().shutdown.trigger();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e,
                None => panic!("the watch ended with OK: a client would take it for the end"),
            }
        }
    })
    .await
    .expect("the watch was still open 5 s after shutdown began");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("last sequence"),
        "{}",
        ended.message()
    );
    s.stop().await;
}
