//! Creating, validating, updating, listing and deleting segments.

use super::*;

#[tokio::test]
async fn create_get_update_list_delete() {
    let Sampled { s, t, cs, mut c } = sampled().await;

    let created = create_segment(
        &mut c,
        t,
        dynamic(
            "Big spenders",
            "monetary >= 400 AND country in [\"ES\", \"MX\"]",
        ),
    )
    .await;
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
    c.create_segment(req(t, dynamic("Big spenders", "purchases > 0")))
        .await
        .refused(Code::AlreadyExists);

    // Get.
    let got = get_segment(&mut c, t, &created.segment_id).await;
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
        .answer();
    assert_eq!((upd.entered_count, upd.exited_count), (1, 0));
    let seg = upd.segment.unwrap();
    assert_eq!(seg.member_count, 3);
    assert_eq!(seg.description, "spent 400 or more");
    assert_ne!(seg.etag, created.etag);

    // A stale etag: ABORTED.
    c.update_segment(req(
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
    .refused(Code::Aborted);

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
        .refused(Code::InvalidArgument);
    assert_eq!(violations(&e)[0].0, "update_mask.paths[0]");

    // List, filtered and paged.
    create_segment(&mut c, t, of_kind("A list", SegmentKind::Static, "")).await;
    create_segment(
        &mut c,
        t,
        of_kind("Snap", SegmentKind::Snapshot, "purchases >= 1"),
    )
    .await;
    let all = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(statics.segments.len(), 1);
    c.list_segments(req(
        t,
        ListSegmentsRequest {
            page_token: "forged".into(),
            ..Default::default()
        },
    ))
    .await
    .refused(Code::InvalidArgument);

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
    c.get_segment(req(
        t,
        GetSegmentRequest {
            segment_id: created.segment_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
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
        .refused(Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "segment.rule_text");
    assert!(v[0].1.starts_with("line 1, column 14:"), "{}", v[0].1);

    // An unknown field: a type error.
    let e = c
        .create_segment(req(t, dynamic("Bad", "purchase >= 3")))
        .await
        .refused(Code::InvalidArgument);
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
    c.create_segment(req(t, both))
        .await
        .refused(Code::InvalidArgument);

    // Unknown in_segment reference.
    c.create_segment(req(t, dynamic("Ref", "in_segment(\"nope\")")))
        .await
        .refused(Code::InvalidArgument);

    // No tenant: UNAUTHENTICATED.
    c.list_segments(tonic::Request::new(ListSegmentsRequest::default()))
        .await
        .refused(Code::Unauthenticated);

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
    let a = create_segment(&mut c, t, r.clone()).await;
    let b = create_segment(&mut c, t, r.clone()).await;
    assert_eq!(a.segment_id, b.segment_id);
    r.segment.as_mut().unwrap().rule_text = "purchases >= 2".into();
    c.create_segment(req(t, r))
        .await
        .refused(Code::AlreadyExists);
    s.stop().await;
}
