//! The bad-input matrix of every SegmentationService method, over real gRPC
//! and a real database: missing and malformed fields, hostile sizes, ids that
//! are not UUIDs or name nothing, another tenant's objects, out-of-range
//! enums, numbers and timestamps, forged and tampered page tokens, NUL bytes.
//! Every refused write is followed by a read-back showing nothing changed,
//! and text full of SQL metacharacters and unusual Unicode comes back byte
//! for byte.

mod common;

use common::*;
use prost_types::{Duration as PbDuration, FieldMask, Timestamp};
use rapport_proto::rapport::segmentation::v1::*;
use rapport_testkit::hostile::{self, BAD_IDS, FORGED_TOKEN, TEXT, YEAR_1, tampered};
use tonic::{Code, Status};
use uuid::Uuid;

/// `s` as a string literal of the rule language.
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The refusal of a call that must fail.
#[track_caller]
fn refused<T>(r: Result<tonic::Response<T>, Status>) -> Status {
    match r {
        Ok(_) => panic!("the call succeeded; a refusal was expected"),
        Err(e) => e,
    }
}

/// Asserts INVALID_ARGUMENT with a field violation on `field`.
#[track_caller]
fn invalid<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, field: &str) {
    hostile::assert_invalid(r, field, field);
}

/// Asserts INVALID_ARGUMENT with a field violation on `prefix` or below it.
#[track_caller]
fn invalid_under<T>(r: Result<tonic::Response<T>, Status>, prefix: &str) {
    let e = refused(r);
    assert_eq!(e.code(), Code::InvalidArgument, "{prefix}: {e:?}");
    let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
    assert!(
        fields.iter().any(|f| f.starts_with(prefix)),
        "no violation under {prefix:?} among {fields:?}: {e:?}"
    );
}

/// Asserts the call failed with `code`.
#[track_caller]
fn failed<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code) {
    hostile::assert_code(r, code, "the call");
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(hostile::at(seconds, nanos))
}

/// Timestamps no valid request carries.
fn broken_times() -> Vec<Option<Timestamp>> {
    hostile::invalid_times().into_iter().map(Some).collect()
}

async fn create(c: &mut Client, t: Uuid, r: CreateSegmentRequest) -> Segment {
    c.create_segment(req(t, r))
        .await
        .expect("a valid segment is created")
        .into_inner()
        .segment
        .expect("the created segment")
}

async fn get(c: &mut Client, t: Uuid, id: &str) -> Segment {
    c.get_segment(req(
        t,
        GetSegmentRequest {
            segment_id: id.into(),
        },
    ))
    .await
    .expect("the segment is there")
    .into_inner()
    .segment
    .expect("a segment")
}

/// Every segment of the tenant, by name.
async fn all_segments(c: &mut Client, t: Uuid) -> Vec<Segment> {
    let page = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list segments")
        .into_inner();
    assert!(page.next_page_token.is_empty());
    page.segments
}

async fn policy(c: &mut Client, t: Uuid) -> GetClassificationPolicyResponse {
    c.get_classification_policy(req(t, GetClassificationPolicyRequest {}))
        .await
        .expect("the policy")
        .into_inner()
}

/// A request without a tenant.
fn no<T>(msg: T) -> tonic::Request<T> {
    tonic::Request::new(msg)
}

#[tokio::test]
async fn create_segment_refuses_bad_input_and_writes_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();

    let with = |f: &dyn Fn(&mut Segment)| {
        let mut r = dynamic("Valid", "purchases >= 1");
        if let Some(seg) = r.segment.as_mut() {
            f(seg);
        }
        r
    };
    invalid(
        c.create_segment(req(
            t,
            CreateSegmentRequest {
                segment: None,
                request_id: String::new(),
            },
        ))
        .await,
        "segment",
    );
    for name in ["", " lead", "trail ", "a\0b", "tab\there"] {
        invalid(
            c.create_segment(req(t, with(&|s| s.name = name.into())))
                .await,
            "segment.name",
        );
    }
    invalid(
        c.create_segment(req(t, with(&|s| s.name = "é".repeat(101))))
            .await,
        "segment.name",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.name = Uuid::new_v4().to_string())))
            .await,
        "segment.name",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.description = "😀".repeat(2001))))
            .await,
        "segment.description",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.description = "before\0after".into())))
            .await,
        "segment.description",
    );
    for kind in [SegmentKind::Unspecified as i32, 999, -1] {
        invalid(
            c.create_segment(req(t, with(&|s| s.kind = kind))).await,
            "segment.kind",
        );
    }
    for approach in [999, -1] {
        invalid(
            c.create_segment(req(t, with(&|s| s.marketing_approach = approach)))
                .await,
            "segment.marketing_approach",
        );
    }
    // Rules: missing, unparsable, too long, too many items, NUL in a literal,
    // both forms, a rule on a STATIC segment.
    for rule in [
        "",
        "purchases >=",
        "country = \"a\0b\"",
        "country = \"a\\u0000b\"",
        "purchases \0>= 1",
    ] {
        invalid(
            c.create_segment(req(t, with(&|s| s.rule_text = rule.into())))
                .await,
            "segment.rule_text",
        );
    }
    let long = format!("purchases >= 1{}", " ".repeat(10_000));
    invalid(
        c.create_segment(req(t, with(&|s| s.rule_text = long.clone())))
            .await,
        "segment.rule_text",
    );
    let many = format!(
        "country in [{}]",
        (0..1001)
            .map(|i| format!("\"C{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.rule_text = many.clone())))
            .await,
        "segment.rule_text",
    );
    invalid(
        c.create_segment(req(t, with(&|s| s.rule = Some(Rule::default()))))
            .await,
        "segment.rule_text",
    );
    invalid(
        c.create_segment(req(
            t,
            of_kind("List", SegmentKind::Static, "purchases > 1"),
        ))
        .await,
        "segment.rule_text",
    );
    // Refresh intervals: negative, fractional, out of range, on a STATIC.
    for d in [
        secs(-1),
        secs(0),
        secs(299),
        secs(86_401),
        secs(i64::MAX),
        secs(i64::MIN),
        Some(PbDuration {
            seconds: 600,
            nanos: -1,
        }),
        Some(PbDuration {
            seconds: 600,
            nanos: 2_000_000_000,
        }),
    ] {
        invalid(
            c.create_segment(req(t, with(&|s| s.refresh_interval = d)))
                .await,
            "segment.refresh_interval",
        );
    }
    let mut on_static = of_kind("List", SegmentKind::Static, "");
    if let Some(seg) = on_static.segment.as_mut() {
        seg.refresh_interval = secs(600);
    }
    invalid(
        c.create_segment(req(t, on_static)).await,
        "segment.refresh_interval",
    );
    // Idempotency keys: too long, not printable ASCII, NUL.
    for key in [
        "k".repeat(129),
        "clé".into(),
        "a\0b".into(),
        "line\n".into(),
    ] {
        let mut r = dynamic("Valid", "purchases >= 1");
        r.request_id = key;
        invalid(c.create_segment(req(t, r)).await, "request_id");
    }
    // Nothing was written.
    assert!(all_segments(&mut c, t).await.is_empty());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&s.pool)
        .await
        .expect("count events");
    assert_eq!(n, 0, "a refused create appended an event");
    s.stop().await;
}

#[tokio::test]
async fn hostile_text_is_stored_and_returned_byte_for_byte() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();

    let mut r = dynamic(TEXT, &format!("country = {} or purchases >= 0", lit(TEXT)));
    if let Some(seg) = r.segment.as_mut() {
        seg.description = format!("{TEXT}\n\ttabs and new lines are text too");
    }
    r.request_id = "Robert'); DROP TABLE segments;-- %_\\".into();
    let created = create(&mut c, t, r.clone()).await;
    assert_eq!(created.name, TEXT);
    assert_eq!(
        created.description,
        format!("{TEXT}\n\ttabs and new lines are text too")
    );
    assert_eq!(created.member_count, 1);
    let got = get(&mut c, t, &created.segment_id).await;
    assert_eq!(got.name, TEXT);
    assert_eq!(got.description, created.description);
    assert_eq!(got.rule_text, created.rule_text);
    assert!(got.rule_text.contains(&lit(TEXT)), "{}", got.rule_text);
    // The retry with the same hostile key returns the same segment.
    let again = create(&mut c, t, r).await;
    assert_eq!(again.segment_id, created.segment_id);
    // The canonical text parses back to the same literal.
    let p = c
        .preview_segment(req(
            t,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    got.rule_text.clone(),
                )),
                sample_size: 0,
            },
        ))
        .await
        .expect("the stored rule previews")
        .into_inner();
    assert_eq!(p.rule_text, got.rule_text);
    assert_eq!(p.match_count, 1);
    // The wildcard characters are matched literally, not as patterns.
    for rule in ["country contains \"%\"", "country starts_with \"_\""] {
        let p = c
            .preview_segment(req(
                t,
                PreviewSegmentRequest {
                    rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                        rule.into(),
                    )),
                    sample_size: 0,
                },
            ))
            .await
            .expect("a valid rule previews")
            .into_inner();
        assert_eq!(p.match_count, 0, "{rule} matched a literal wildcard");
    }
    // Listed and renamed byte for byte too.
    let listed = all_segments(&mut c, t).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, TEXT);
    let renamed = c
        .update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: created.segment_id.clone(),
                    name: format!("{TEXT} 2"),
                    description: TEXT.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "description"]),
            },
        ))
        .await
        .expect("a hostile rename is valid")
        .into_inner()
        .segment
        .expect("the segment");
    assert_eq!(renamed.name, format!("{TEXT} 2"));
    assert_eq!(get(&mut c, t, &created.segment_id).await.description, TEXT);
    // A rule referring to it by its hostile name resolves.
    let refer = create(
        &mut c,
        t,
        dynamic(
            "Refers",
            &format!("in_segment({})", lit(&format!("{TEXT} 2"))),
        ),
    )
    .await;
    assert_eq!(refer.member_count, 1);
    s.stop().await;
}

#[tokio::test]
async fn get_update_delete_refuse_bad_ids_and_bad_updates() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES").bought(1, 10, 5, 5)]).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let before = get(&mut c, t, &seg.segment_id).await;
    let list_before = get(&mut c, t, &list.segment_id).await;

    for id in BAD_IDS {
        invalid(
            c.get_segment(req(
                t,
                GetSegmentRequest {
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
        invalid(
            c.update_segment(req(
                t,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        segment_id: id.into(),
                        name: "New".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
            "segment.segment_id",
        );
        invalid(
            c.delete_segment(req(
                t,
                DeleteSegmentRequest {
                    segment_id: id.into(),
                    etag: String::new(),
                },
            ))
            .await,
            "segment_id",
        );
    }
    let unknown = Uuid::new_v4().to_string();
    failed(
        c.get_segment(req(
            t,
            GetSegmentRequest {
                segment_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: Some(Segment {
                    segment_id: unknown.clone(),
                    name: "New".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["name"]),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.delete_segment(req(
            t,
            DeleteSegmentRequest {
                segment_id: unknown,
                etag: String::new(),
            },
        ))
        .await,
        Code::NotFound,
    );

    // Bad updates of an existing segment; each leaves it as it was.
    let upd = |seg: Segment, paths: &[&str]| UpdateSegmentRequest {
        segment: Some(seg),
        update_mask: mask(paths),
    };
    let id = seg.segment_id.clone();
    let base = || Segment {
        segment_id: id.clone(),
        ..Default::default()
    };
    invalid(
        c.update_segment(req(
            t,
            UpdateSegmentRequest {
                segment: None,
                update_mask: mask(&["name"]),
            },
        ))
        .await,
        "segment",
    );
    let cases: Vec<(UpdateSegmentRequest, &str)> = vec![
        (
            UpdateSegmentRequest {
                segment: Some(base()),
                update_mask: None,
            },
            "update_mask",
        ),
        (upd(base(), &[]), "update_mask"),
        (upd(base(), &["kind"]), "update_mask.paths[0]"),
        (upd(base(), &["name", "etag"]), "update_mask.paths[1]"),
        (upd(base(), &["member_count"]), "update_mask.paths[0]"),
        (upd(base(), &["segment_id"]), "update_mask.paths[0]"),
        (upd(base(), &["nope"]), "update_mask.paths[0]"),
        (upd(base(), &["name\0"]), "update_mask.paths[0]"),
        (upd(base(), &["rule", "rule_text"]), "update_mask"),
        (upd(base(), &["name"]), "segment.name"),
        (
            upd(
                Segment {
                    name: "x\0y".into(),
                    ..base()
                },
                &["name"],
            ),
            "segment.name",
        ),
        (
            upd(
                Segment {
                    name: "n".repeat(101),
                    ..base()
                },
                &["name"],
            ),
            "segment.name",
        ),
        (
            upd(
                Segment {
                    description: "d".repeat(2001),
                    ..base()
                },
                &["description"],
            ),
            "segment.description",
        ),
        (
            upd(
                Segment {
                    description: "nul\0".into(),
                    ..base()
                },
                &["description"],
            ),
            "segment.description",
        ),
        (
            upd(
                Segment {
                    marketing_approach: 999,
                    ..base()
                },
                &["marketing_approach"],
            ),
            "segment.marketing_approach",
        ),
        (
            upd(
                Segment {
                    refresh_interval: secs(-600),
                    ..base()
                },
                &["refresh_interval"],
            ),
            "segment.refresh_interval",
        ),
        (upd(base(), &["rule_text"]), "segment.rule_text"),
        (
            upd(
                Segment {
                    rule_text: "purchases >=".into(),
                    ..base()
                },
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
        (
            upd(
                Segment {
                    rule_text: "country = \"\0\"".into(),
                    ..base()
                },
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
        (
            upd(
                Segment {
                    rule_text: format!("in_segment({})", lit("Buyers")),
                    ..base()
                },
                &["rule_text"],
            ),
            "segment.rule_text",
        ),
    ];
    for (r, field) in cases {
        let what = format!("{r:?}");
        let e = refused(c.update_segment(req(t, r)).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.iter().any(|f| f == field),
            "{what}: no violation on {field} among {fields:?}"
        );
        assert_eq!(
            get(&mut c, t, &id).await,
            before,
            "{what} changed the segment"
        );
    }
    // A STATIC segment takes no rule and no refresh interval.
    for (seg, paths, field) in [
        (
            Segment {
                segment_id: list.segment_id.clone(),
                rule_text: "purchases >= 1".into(),
                ..Default::default()
            },
            ["rule_text"],
            "segment.rule_text",
        ),
        (
            Segment {
                segment_id: list.segment_id.clone(),
                refresh_interval: secs(600),
                ..Default::default()
            },
            ["refresh_interval"],
            "segment.refresh_interval",
        ),
    ] {
        invalid(c.update_segment(req(t, upd(seg, &paths))).await, field);
        assert_eq!(get(&mut c, t, &list.segment_id).await, list_before);
    }
    // A stale or forged etag: ABORTED, nothing changed, nothing deleted.
    for etag in ["v0", "v999", "1 OR 1=1", "\0"] {
        failed(
            c.update_segment(req(
                t,
                upd(
                    Segment {
                        name: "Renamed".into(),
                        etag: etag.into(),
                        ..base()
                    },
                    &["name"],
                ),
            ))
            .await,
            Code::Aborted,
        );
        failed(
            c.delete_segment(req(
                t,
                DeleteSegmentRequest {
                    segment_id: id.clone(),
                    etag: etag.into(),
                },
            ))
            .await,
            Code::Aborted,
        );
    }
    // Taking another segment's name: ALREADY_EXISTS, nothing changed.
    failed(
        c.update_segment(req(
            t,
            upd(
                Segment {
                    name: "List".into(),
                    ..base()
                },
                &["name"],
            ),
        ))
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(get(&mut c, t, &id).await, before);
    assert_eq!(all_segments(&mut c, t).await.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_and_changes_nothing() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let customer = Customer::new("ES").bought(2, 100, 200, 10);
    insert(&s.pool, a, std::slice::from_ref(&customer)).await;
    let mut c = s.client();
    let dynamic_a = create(&mut c, a, dynamic("Buyers", "purchases >= 1")).await;
    let static_a = create(&mut c, a, of_kind("List", SegmentKind::Static, "")).await;
    c.add_members(req(
        a,
        AddMembersRequest {
            segment_id: static_a.segment_id.clone(),
            customer_ids: vec![customer.id.to_string()],
        },
    ))
    .await
    .expect("members added");
    let dyn_before = get(&mut c, a, &dynamic_a.segment_id).await;
    let static_before = get(&mut c, a, &static_a.segment_id).await;
    let policy_before = policy(&mut c, a).await;
    let cid = customer.id.to_string();

    for id in [&dynamic_a.segment_id, &static_a.segment_id] {
        failed(
            c.get_segment(req(
                b,
                GetSegmentRequest {
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.update_segment(req(
                b,
                UpdateSegmentRequest {
                    segment: Some(Segment {
                        segment_id: id.clone(),
                        name: "Taken over".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.delete_segment(req(
                b,
                DeleteSegmentRequest {
                    segment_id: id.clone(),
                    etag: String::new(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.list_members(req(
                b,
                ListMembersRequest {
                    segment_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.get_segment_history(req(
                b,
                GetSegmentHistoryRequest {
                    segment_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.explain_membership(req(
                b,
                ExplainMembershipRequest {
                    customer_id: cid.clone(),
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.get_rfm_report(req(
                b,
                GetRfmReportRequest {
                    segment_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            c.watch_membership(req(
                b,
                WatchMembershipRequest {
                    segment_id: id.clone(),
                    start: Some(watch_membership_request::Start::AfterSequence(0)),
                },
            ))
            .await,
            Code::NotFound,
        );
    }
    failed(
        c.refresh_segment(req(
            b,
            RefreshSegmentRequest {
                segment_id: dynamic_a.segment_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    for add in [true, false] {
        let r = AddMembersRequest {
            segment_id: static_a.segment_id.clone(),
            customer_ids: vec![cid.clone(), Uuid::new_v4().to_string()],
        };
        let res = if add {
            c.add_members(req(b, r))
                .await
                .map(|_| tonic::Response::new(()))
        } else {
            c.remove_members(req(
                b,
                RemoveMembersRequest {
                    segment_id: r.segment_id,
                    customer_ids: r.customer_ids,
                },
            ))
            .await
            .map(|_| tonic::Response::new(()))
        };
        failed(res, Code::NotFound);
    }
    // A's customer is unknown to B.
    failed(
        c.get_customer_segments(req(
            b,
            GetCustomerSegmentsRequest {
                customer_id: cid.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.classify_customer(req(
            b,
            ClassifyCustomerRequest {
                customer_id: cid.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    // B's lists and reports hold nothing of A's.
    assert!(all_segments(&mut c, b).await.is_empty());
    let rfm = c
        .get_rfm_report(req(b, GetRfmReportRequest::default()))
        .await
        .expect("B's report")
        .into_inner();
    assert_eq!(
        (rfm.scored_customer_count, rfm.unscored_customer_count),
        (0, 0)
    );
    let p = c
        .preview_segment(req(
            b,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                    "purchases >= 0".into(),
                )),
                sample_size: 100,
            },
        ))
        .await
        .expect("B's preview")
        .into_inner();
    assert_eq!((p.match_count, p.customer_count), (0, 0));
    failed(
        c.preview_segment(req(
            b,
            PreviewSegmentRequest {
                rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(format!(
                    "in_segment({})",
                    lit(&dynamic_a.segment_id)
                ))),
                sample_size: 0,
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    // B's policy change is B's alone.
    c.update_classification_policy(req(
        b,
        UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(7),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases"]),
        },
    ))
    .await
    .expect("B changes its policy");

    // A's objects are as they were.
    assert_eq!(get(&mut c, a, &dynamic_a.segment_id).await, dyn_before);
    assert_eq!(get(&mut c, a, &static_a.segment_id).await, static_before);
    assert_eq!(
        members(&mut c, a, &static_a.segment_id).await,
        vec![cid.clone()]
    );
    assert_eq!(policy(&mut c, a).await, policy_before);
    assert_eq!(all_segments(&mut c, a).await.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn list_methods_refuse_bad_sizes_filters_and_tokens() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let cs = [
        Customer::new("ES"),
        Customer::new("FR"),
        Customer::new("MX"),
    ];
    insert(&s.pool, a, &cs).await;
    insert(&s.pool, b, &cs).await;
    let ids: Vec<String> = cs.iter().map(|c| c.id.to_string()).collect();
    let mut c = s.client();
    let mut lists = Vec::new();
    for t in [a, b] {
        let mut mine = Vec::new();
        for name in ["L1", "L2", "L3"] {
            let l = create(&mut c, t, of_kind(name, SegmentKind::Static, "")).await;
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: l.segment_id.clone(),
                    customer_ids: ids.clone(),
                },
            ))
            .await
            .expect("members added");
            mine.push(l.segment_id);
        }
        lists.push(mine);
    }
    let (a_lists, b_lists) = (&lists[0], &lists[1]);

    // Page sizes: negative refused, huge lowered to 1,000.
    for size in [-1, i32::MIN] {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    page_size: size,
                    ..Default::default()
                },
            ))
            .await,
            "page_size",
        );
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: a_lists[0].clone(),
                    page_size: size,
                    page_token: String::new(),
                },
            ))
            .await,
            "page_size",
        );
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: ids[0].clone(),
                    page_size: size,
                    page_token: String::new(),
                },
            ))
            .await,
            "page_size",
        );
    }
    let huge = c
        .list_segments(req(
            a,
            ListSegmentsRequest {
                page_size: i32::MAX,
                ..Default::default()
            },
        ))
        .await
        .expect("a huge page size is lowered")
        .into_inner();
    assert_eq!(huge.segments.len(), 3);
    let huge = c
        .list_members(req(
            a,
            ListMembersRequest {
                segment_id: a_lists[0].clone(),
                page_size: i32::MAX,
                page_token: String::new(),
            },
        ))
        .await
        .expect("a huge page size is lowered")
        .into_inner();
    assert_eq!(huge.members.len(), 3);
    // Filters out of range.
    for kind in [999, -1] {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    kind,
                    ..Default::default()
                },
            ))
            .await,
            "kind",
        );
    }
    invalid(
        c.list_segments(req(
            a,
            ListSegmentsRequest {
                marketing_approach: 999,
                ..Default::default()
            },
        ))
        .await,
        "marketing_approach",
    );
    // The ids of ListMembers and GetCustomerSegments.
    for id in BAD_IDS {
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "segment_id",
        );
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "customer_id",
        );
    }
    failed(
        c.list_members(req(
            a,
            ListMembersRequest {
                segment_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.get_customer_segments(req(
            a,
            GetCustomerSegmentsRequest {
                customer_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );

    // Genuine tokens of each list, for each tenant.
    let base = c.clone();
    let segments_token = |t: Uuid, kind: i32| {
        let mut c = base.clone();
        async move {
            c.list_segments(req(
                t,
                ListSegmentsRequest {
                    page_size: 1,
                    kind,
                    ..Default::default()
                },
            ))
            .await
            .expect("first page")
            .into_inner()
            .next_page_token
        }
    };
    let members_token = |t: Uuid, segment: String| {
        let mut c = base.clone();
        async move {
            c.list_members(req(
                t,
                ListMembersRequest {
                    segment_id: segment,
                    page_size: 1,
                    page_token: String::new(),
                },
            ))
            .await
            .expect("first page")
            .into_inner()
            .next_page_token
        }
    };
    let customer_token = |t: Uuid, customer: String| {
        let mut c = base.clone();
        async move {
            c.get_customer_segments(req(
                t,
                GetCustomerSegmentsRequest {
                    customer_id: customer,
                    page_size: 1,
                    page_token: String::new(),
                },
            ))
            .await
            .expect("first page")
            .into_inner()
            .next_page_token
        }
    };
    let seg_a = segments_token(a, 0).await;
    let seg_a_static = segments_token(a, SegmentKind::Static as i32).await;
    let seg_b = segments_token(b, 0).await;
    let mem_a0 = members_token(a, a_lists[0].clone()).await;
    let mem_b0 = members_token(b, b_lists[0].clone()).await;
    let cus_a0 = customer_token(a, ids[0].clone()).await;
    let cus_b0 = customer_token(b, ids[0].clone()).await;
    for t in [
        &seg_a,
        &seg_a_static,
        &seg_b,
        &mem_a0,
        &mem_b0,
        &cus_a0,
        &cus_b0,
    ] {
        assert!(!t.is_empty(), "a first page of 1 of 3 has a next token");
    }
    // Each genuine token works where it was issued.
    let second = c
        .list_segments(req(
            a,
            ListSegmentsRequest {
                page_size: 1,
                page_token: seg_a.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("the genuine token pages on")
        .into_inner();
    assert_eq!(second.segments[0].name, "L2");

    let junk = |genuine: &str| -> Vec<String> {
        vec![
            FORGED_TOKEN.into(),
            "!!!not base64!!!".into(),
            "A".repeat(5000),
            tampered(genuine),
            format!("{genuine}A"),
            genuine[..genuine.len() - 1].to_string(),
            format!("{genuine}\0"),
            "1 OR 1=1".into(),
        ]
    };
    // ListSegments: junk, another tenant's, another filter's, another list's.
    let mut bad = junk(&seg_a);
    bad.extend([
        seg_b.clone(),
        seg_a_static.clone(),
        mem_a0.clone(),
        cus_a0.clone(),
    ]);
    for token in bad {
        invalid(
            c.list_segments(req(
                a,
                ListSegmentsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await,
            "page_token",
        );
    }
    // ListMembers: also another segment's token.
    let mut bad = junk(&mem_a0);
    bad.extend([mem_b0.clone(), seg_a.clone(), cus_a0.clone()]);
    bad.push(members_token(a, a_lists[1].clone()).await);
    for token in bad {
        invalid(
            c.list_members(req(
                a,
                ListMembersRequest {
                    segment_id: a_lists[0].clone(),
                    page_size: 1,
                    page_token: token,
                },
            ))
            .await,
            "page_token",
        );
    }
    // GetCustomerSegments: also another customer's token.
    let mut bad = junk(&cus_a0);
    bad.extend([cus_b0.clone(), seg_a.clone(), mem_a0.clone()]);
    bad.push(customer_token(a, ids[1].clone()).await);
    for token in bad {
        invalid(
            c.get_customer_segments(req(
                a,
                GetCustomerSegmentsRequest {
                    customer_id: ids[0].clone(),
                    page_size: 1,
                    page_token: token,
                },
            ))
            .await,
            "page_token",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn member_changes_refuse_bad_input_and_change_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = [Customer::new("ES"), Customer::new("FR")];
    insert(&s.pool, t, &cs).await;
    let mut c = s.client();
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let buyers = create(&mut c, t, dynamic("All", "purchases >= 0")).await;
    let first = cs[0].id.to_string();
    c.add_members(req(
        t,
        AddMembersRequest {
            segment_id: list.segment_id.clone(),
            customer_ids: vec![first.clone()],
        },
    ))
    .await
    .expect("a member added");
    let before = get(&mut c, t, &list.segment_id).await;
    let members_before = members(&mut c, t, &list.segment_id).await;
    let all_before = members(&mut c, t, &buyers.segment_id).await;
    let second = cs[1].id.to_string();

    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    for id in BAD_IDS {
        cases.push((id.into(), vec![second.clone()], "segment_id"));
    }
    cases.push((list.segment_id.clone(), vec![], "customer_ids"));
    cases.push((
        list.segment_id.clone(),
        (0..1001).map(|_| Uuid::new_v4().to_string()).collect(),
        "customer_ids",
    ));
    for bad in BAD_IDS {
        // A good id first: the whole request is refused, not half applied.
        cases.push((
            list.segment_id.clone(),
            vec![second.clone(), bad.to_string()],
            "customer_ids[1]",
        ));
    }
    for (segment, ids, field) in cases {
        invalid(
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: segment.clone(),
                    customer_ids: ids.clone(),
                },
            ))
            .await,
            field,
        );
        invalid(
            c.remove_members(req(
                t,
                RemoveMembersRequest {
                    segment_id: segment,
                    customer_ids: ids,
                },
            ))
            .await,
            field,
        );
        assert_eq!(members(&mut c, t, &list.segment_id).await, members_before);
    }
    // Unknown segment: NOT_FOUND; a rule-based one: FAILED_PRECONDITION.
    for (segment, code) in [
        (Uuid::new_v4().to_string(), Code::NotFound),
        (buyers.segment_id.clone(), Code::FailedPrecondition),
    ] {
        failed(
            c.add_members(req(
                t,
                AddMembersRequest {
                    segment_id: segment.clone(),
                    customer_ids: vec![second.clone()],
                },
            ))
            .await,
            code,
        );
        failed(
            c.remove_members(req(
                t,
                RemoveMembersRequest {
                    segment_id: segment,
                    customer_ids: vec![first.clone()],
                },
            ))
            .await,
            code,
        );
    }
    assert_eq!(members(&mut c, t, &buyers.segment_id).await, all_before);
    // Exactly 1,000 ids is the limit, not a refusal; unknown ones are reported.
    let mut thousand: Vec<String> = (0..999).map(|_| Uuid::new_v4().to_string()).collect();
    thousand.push(first.clone());
    let r = c
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: thousand.clone(),
            },
        ))
        .await
        .expect("1,000 ids are accepted")
        .into_inner();
    assert_eq!(
        (r.added_count, r.already_member_count, r.member_count),
        (0, 1, 1)
    );
    assert_eq!(r.not_found_customer_ids.len(), 999);
    thousand.pop();
    let r = c
        .remove_members(req(
            t,
            RemoveMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: thousand,
            },
        ))
        .await
        .expect("1,000 ids are accepted")
        .into_inner();
    assert_eq!((r.removed_count, r.not_member_count), (0, 999));
    assert_eq!(members(&mut c, t, &list.segment_id).await, members_before);
    assert_eq!(get(&mut c, t, &list.segment_id).await.etag, before.etag);
    s.stop().await;
}

#[tokio::test]
async fn preview_and_refresh_refuse_bad_input() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES").bought(1, 10, 3, 3)]).await;
    let mut c = s.client();
    let list = create(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    let snap = create(
        &mut c,
        t,
        of_kind("Snap", SegmentKind::Snapshot, "purchases >= 1"),
    )
    .await;
    let text = |t: &str| Some(preview_segment_request::RuleDefinition::RuleText(t.into()));

    let preview = |rule_definition, sample_size| PreviewSegmentRequest {
        rule_definition,
        sample_size,
    };
    invalid(
        c.preview_segment(req(t, preview(None, 0))).await,
        "rule_text",
    );
    invalid(
        c.preview_segment(req(t, preview(text(""), 0))).await,
        "rule_text",
    );
    for size in [-1, 101, i32::MIN, i32::MAX] {
        invalid(
            c.preview_segment(req(t, preview(text("purchases >= 1"), size)))
                .await,
            "sample_size",
        );
    }
    for rule in [
        "purchases >=",
        "purchases >= 1 and",
        "country = \"\0\"",
        "country contains \"\\u0000\"",
        "\0",
        "nope = 1",
        "purchases >= \"ten\"",
        "in_segment(\"no such segment\")",
        "in_segment(\"00000000-0000-0000-0000-000000000000\")",
        "clv in top 1e9%",
        "clv in top -5%",
        "csat >= 1e999999",
    ] {
        invalid(
            c.preview_segment(req(t, preview(text(rule), 0))).await,
            "rule_text",
        );
    }
    let deep = format!("{}purchases >= 1{}", "(".repeat(200), ")".repeat(200));
    invalid(
        c.preview_segment(req(t, preview(text(&deep), 0))).await,
        "rule_text",
    );
    let long_literal = format!("country = {}", lit(&"x".repeat(1025)));
    invalid(
        c.preview_segment(req(t, preview(text(&long_literal), 0)))
            .await,
        "rule_text",
    );
    invalid_under(
        c.preview_segment(req(
            t,
            preview(
                Some(preview_segment_request::RuleDefinition::Rule(
                    Rule::default(),
                )),
                0,
            ),
        ))
        .await,
        "rule",
    );
    // Structured rules: NUL in strings, non-finite and out-of-range
    // numbers, broken times, unknown references.
    let node = |n: rule::Node| Rule { node: Some(n) };
    let mut structured = vec![
        node(rule::Node::Contains(Contains {
            field: "country".into(),
            value: "a\0b".into(),
        })),
        node(rule::Node::StartsWith(StartsWith {
            field: "country".into(),
            prefix: "\0".into(),
        })),
        node(rule::Node::Exists(Exists {
            field: "purch\0ases".into(),
        })),
        node(rule::Node::InSegment(SegmentCondition {
            segment: Some(segment_condition::Segment::SegmentId(
                Uuid::new_v4().to_string(),
            )),
        })),
        node(rule::Node::InSegment(SegmentCondition {
            segment: Some(segment_condition::Segment::SegmentName("\0".into())),
        })),
        node(rule::Node::Time(TimeCondition {
            field: "last_purchase".into(),
            op: TimeOperator::Before as i32,
            reference: Some(time_condition::Reference::Time(Timestamp {
                seconds: 0,
                nanos: -1,
            })),
        })),
        node(rule::Node::Time(TimeCondition {
            field: "last_purchase".into(),
            op: 999,
            reference: Some(time_condition::Reference::Ago(PbDuration {
                seconds: 3600,
                nanos: 0,
            })),
        })),
        node(rule::Node::Comparison(Comparison {
            left: Some(Operand {
                operand: Some(operand::Operand::Field("purchases".into())),
            }),
            op: 999,
            value: Some(ScalarValue {
                kind: Some(scalar_value::Kind::IntegerValue(1)),
            }),
        })),
    ];
    for percent in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 100.5] {
        structured.push(node(rule::Node::TopPercent(TopPercent {
            field: "clv".into(),
            percent,
        })));
    }
    for decimal in ["NaN", "inf", "-inf", "1e400", "", "1 OR 1=1"] {
        structured.push(node(rule::Node::Comparison(Comparison {
            left: Some(Operand {
                operand: Some(operand::Operand::Field("monetary".into())),
            }),
            op: ComparisonOperator::Less as i32,
            value: Some(ScalarValue {
                kind: Some(scalar_value::Kind::DecimalValue(decimal.into())),
            }),
        })));
    }
    for r in structured {
        let what = format!("{r:?}");
        let e = refused(
            c.preview_segment(req(
                t,
                preview(Some(preview_segment_request::RuleDefinition::Rule(r)), 0),
            ))
            .await,
        );
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.iter().any(|f| f.starts_with("rule")),
            "{what}: {fields:?}"
        );
    }
    // Nesting of any depth: past the rule depth limit the rule is refused by
    // validation, past protobuf's recursion limit by decoding; both are
    // INVALID_ARGUMENT, never INTERNAL.
    for depth in [33, 99, 1000] {
        let mut deep = node(rule::Node::Exists(Exists {
            field: "purchases".into(),
        }));
        for _ in 0..depth {
            deep = node(rule::Node::Negate(Box::new(deep)));
        }
        let e = refused(
            c.preview_segment(req(
                t,
                preview(Some(preview_segment_request::RuleDefinition::Rule(deep)), 0),
            ))
            .await,
        );
        assert_eq!(e.code(), Code::InvalidArgument, "depth {depth}: {e:?}");
    }
    // Preview writes nothing.
    assert_eq!(all_segments(&mut c, t).await.len(), 2);

    // RefreshSegment.
    for id in BAD_IDS {
        invalid(
            c.refresh_segment(req(
                t,
                RefreshSegmentRequest {
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
    }
    failed(
        c.refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: Uuid::new_v4().to_string(),
            },
        ))
        .await,
        Code::NotFound,
    );
    let list_before = get(&mut c, t, &list.segment_id).await;
    failed(
        c.refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: list.segment_id.clone(),
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(get(&mut c, t, &list.segment_id).await, list_before);
    // The snapshot refreshes fine.
    c.refresh_segment(req(
        t,
        RefreshSegmentRequest {
            segment_id: snap.segment_id.clone(),
        },
    ))
    .await
    .expect("a snapshot refreshes");
    s.stop().await;
}

#[tokio::test]
async fn customer_reads_refuse_bad_and_unknown_ids() {
    let s = start().await;
    let t = Uuid::new_v4();
    let customer = Customer::new("ES").bought(1, 10, 3, 3);
    insert(&s.pool, t, std::slice::from_ref(&customer)).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("Buyers", "purchases >= 1")).await;
    let cid = customer.id.to_string();

    for id in BAD_IDS {
        invalid(
            c.classify_customer(req(
                t,
                ClassifyCustomerRequest {
                    customer_id: id.into(),
                },
            ))
            .await,
            "customer_id",
        );
        invalid(
            c.explain_membership(req(
                t,
                ExplainMembershipRequest {
                    customer_id: id.into(),
                    segment_id: seg.segment_id.clone(),
                },
            ))
            .await,
            "customer_id",
        );
        invalid(
            c.explain_membership(req(
                t,
                ExplainMembershipRequest {
                    customer_id: cid.clone(),
                    segment_id: id.into(),
                },
            ))
            .await,
            "segment_id",
        );
        if !id.is_empty() {
            // An empty segment_id is the whole tenant's report.
            invalid(
                c.get_rfm_report(req(
                    t,
                    GetRfmReportRequest {
                        segment_id: id.into(),
                    },
                ))
                .await,
                "segment_id",
            );
        }
    }
    let unknown = Uuid::new_v4().to_string();
    failed(
        c.classify_customer(req(
            t,
            ClassifyCustomerRequest {
                customer_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: unknown.clone(),
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cid.clone(),
                segment_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        c.get_rfm_report(req(
            t,
            GetRfmReportRequest {
                segment_id: unknown,
            },
        ))
        .await,
        Code::NotFound,
    );
    // The good requests answer.
    c.classify_customer(req(
        t,
        ClassifyCustomerRequest {
            customer_id: cid.clone(),
        },
    ))
    .await
    .expect("classified");
    let e = c
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: cid,
                segment_id: seg.segment_id.clone(),
            },
        ))
        .await
        .expect("explained")
        .into_inner();
    assert!(e.member && e.rule_held);
    let r = c
        .get_rfm_report(req(
            t,
            GetRfmReportRequest {
                segment_id: String::new(),
            },
        ))
        .await
        .expect("the report")
        .into_inner();
    assert_eq!(r.scored_customer_count, 1);
    s.stop().await;
}

#[tokio::test]
async fn history_and_watch_refuse_bad_ids_and_times() {
    let s = start().await;
    let t = Uuid::new_v4();
    insert(&s.pool, t, &[Customer::new("ES")]).await;
    let mut c = s.client();
    let seg = create(&mut c, t, dynamic("All", "purchases >= 0")).await;
    let now = chrono::Utc::now().timestamp();
    let day = 86_400;
    let history = |start_time, end_time, granularity| GetSegmentHistoryRequest {
        segment_id: seg.segment_id.clone(),
        start_time,
        end_time,
        granularity,
    };

    for id in BAD_IDS {
        invalid(
            c.get_segment_history(req(
                t,
                GetSegmentHistoryRequest {
                    segment_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "segment_id",
        );
    }
    failed(
        c.get_segment_history(req(
            t,
            GetSegmentHistoryRequest {
                segment_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    for g in [999, -1] {
        invalid(
            c.get_segment_history(req(t, history(None, None, g))).await,
            "granularity",
        );
    }
    for bad in broken_times() {
        invalid(
            c.get_segment_history(req(t, history(bad, None, 0))).await,
            "start_time",
        );
        invalid(
            c.get_segment_history(req(t, history(None, bad, 0))).await,
            "end_time",
        );
    }
    // Start not before end.
    invalid(
        c.get_segment_history(req(t, history(at(now, 0), at(now - day, 0), 0)))
            .await,
        "start_time",
    );
    // More than 1,000 intervals.
    invalid(
        c.get_segment_history(req(
            t,
            history(
                at(now - 100 * day, 0),
                at(now, 0),
                HistoryGranularity::Hour as i32,
            ),
        ))
        .await,
        "granularity",
    );
    // Older than the 400 days kept, down to year 1: OUT_OF_RANGE.
    for start in [now - 500 * day, YEAR_1] {
        failed(
            c.get_segment_history(req(t, history(at(start, 0), at(start + day, 0), 0)))
                .await,
            Code::OutOfRange,
        );
    }
    // The far future is a valid, empty range.
    let far = 253_402_300_799 - 10 * day; // late December 9999
    let h = c
        .get_segment_history(req(t, history(at(far, 0), at(far + 5 * day, 0), 0)))
        .await
        .expect("a range in year 9999")
        .into_inner();
    assert!(h.points.iter().all(|p| p.entered_count == 0));

    // WatchMembership.
    let watch = |segment_id: &str, start| WatchMembershipRequest {
        segment_id: segment_id.into(),
        start,
    };
    use watch_membership_request::Start;
    for id in BAD_IDS.iter().filter(|i| !i.is_empty()) {
        invalid(
            c.watch_membership(req(t, watch(id, None))).await,
            "segment_id",
        );
    }
    failed(
        c.watch_membership(req(t, watch(&Uuid::new_v4().to_string(), None)))
            .await,
        Code::NotFound,
    );
    for after in [-1, i64::MIN] {
        invalid(
            c.watch_membership(req(
                t,
                watch(&seg.segment_id, Some(Start::AfterSequence(after))),
            ))
            .await,
            "after_sequence",
        );
    }
    for bad in broken_times() {
        invalid(
            c.watch_membership(req(t, watch(&seg.segment_id, bad.map(Start::StartTime))))
                .await,
            "start_time",
        );
    }
    invalid(
        c.watch_membership(req(
            t,
            watch(
                "",
                Some(Start::StartTime(Timestamp {
                    seconds: now + day,
                    nanos: 0,
                })),
            ),
        ))
        .await,
        "start_time",
    );
    for start in [now - 500 * day, YEAR_1] {
        failed(
            c.watch_membership(req(
                t,
                watch(
                    "",
                    Some(Start::StartTime(Timestamp {
                        seconds: start,
                        nanos: 0,
                    })),
                ),
            ))
            .await,
            Code::OutOfRange,
        );
    }
    // WatchChanges (internal feed).
    for after in [-1, i64::MIN] {
        invalid(
            c.watch_changes(req(
                t,
                WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                },
            ))
            .await,
            "after_sequence",
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn policy_updates_refuse_bad_values_and_change_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    // Start from an overridden policy so that "unchanged" is not "default".
    c.update_classification_policy(req(
        t,
        UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(3),
                partner_contract_tag: Some("key-account".into()),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases", "partner_contract_tag"]),
        },
    ))
    .await
    .expect("a valid update");
    let before = policy(&mut c, t).await;

    let update = |p: ClassificationPolicy, paths: &[&str]| UpdateClassificationPolicyRequest {
        policy: Some(p),
        update_mask: mask(paths),
    };
    let mut cases: Vec<(UpdateClassificationPolicyRequest, String)> = vec![
        (
            UpdateClassificationPolicyRequest {
                policy: None,
                update_mask: None,
            },
            "update_mask".into(),
        ),
        (
            update(ClassificationPolicy::default(), &[]),
            "update_mask".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["etag"]),
            "update_mask.paths[0]".into(),
        ),
        (
            update(
                ClassificationPolicy::default(),
                &["friend_min_purchases", "update_time"],
            ),
            "update_mask.paths[1]".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["no_such_field"]),
            "update_mask.paths[0]".into(),
        ),
        (
            update(ClassificationPolicy::default(), &["1 OR 1=1"]),
            "update_mask.paths[0]".into(),
        ),
    ];
    // Every float field: NaN, infinities, negative, far too large.
    type FloatSetter = fn(&mut ClassificationPolicy, f64);
    let floats: [(&str, FloatSetter); 5] = [
        ("partner_clv_top_percent", |p, v| {
            p.partner_clv_top_percent = Some(v)
        }),
        ("dissolution_max_p_alive", |p, v| {
            p.dissolution_max_p_alive = Some(v)
        }),
        ("dissolution_silence_factor", |p, v| {
            p.dissolution_silence_factor = Some(v)
        }),
        ("expansion_min_growth_percent", |p, v| {
            p.expansion_min_growth_percent = Some(v)
        }),
        ("commitment_min_p_alive", |p, v| {
            p.commitment_min_p_alive = Some(v)
        }),
    ];
    for (name, set) in floats {
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            1e300,
            -0.000_001,
        ] {
            let mut p = ClassificationPolicy::default();
            set(&mut p, v);
            cases.push((update(p, &[name]), format!("policy.{name}")));
        }
    }
    // Integer fields: negative and far too large.
    type IntSetter = fn(&mut ClassificationPolicy, i32);
    let ints: [(&str, IntSetter); 4] = [
        ("friend_min_purchases", |p, v| {
            p.friend_min_purchases = Some(v)
        }),
        ("friend_min_csat", |p, v| p.friend_min_csat = Some(v)),
        ("commitment_min_active_periods", |p, v| {
            p.commitment_min_active_periods = Some(v)
        }),
        ("expansion_period_days", |p, v| {
            p.expansion_period_days = Some(v)
        }),
    ];
    for (name, set) in ints {
        for v in [-1, i32::MIN, i32::MAX] {
            let mut p = ClassificationPolicy::default();
            set(&mut p, v);
            cases.push((update(p, &[name]), format!("policy.{name}")));
        }
    }
    // The tag: NUL, hostile text, too long.
    for tag in [
        "a\0b".to_string(),
        TEXT.into(),
        "t".repeat(65),
        "-lead".into(),
    ] {
        cases.push((
            update(
                ClassificationPolicy {
                    partner_contract_tag: Some(tag),
                    ..Default::default()
                },
                &["partner_contract_tag"],
            ),
            "policy.partner_contract_tag".into(),
        ));
    }
    for (r, field) in cases {
        let what = format!("{r:?}");
        let e = refused(c.update_classification_policy(req(t, r)).await);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
        assert!(
            fields.contains(&field),
            "{what}: no violation on {field} among {fields:?}"
        );
        assert_eq!(policy(&mut c, t).await, before, "{what} changed the policy");
    }
    // Several bad fields at once: one violation each, and a good field in
    // the same request is not applied either.
    let e = refused(
        c.update_classification_policy(req(
            t,
            update(
                ClassificationPolicy {
                    friend_min_purchases: Some(5),
                    friend_min_nps: Some(11),
                    commitment_min_p_alive: Some(f64::NAN),
                    ..Default::default()
                },
                &[
                    "friend_min_purchases",
                    "friend_min_nps",
                    "commitment_min_p_alive",
                ],
            ),
        ))
        .await,
    );
    let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
    assert_eq!(
        fields,
        ["policy.friend_min_nps", "policy.commitment_min_p_alive"]
    );
    assert_eq!(policy(&mut c, t).await, before);
    // A stale or forged etag: ABORTED.
    for etag in ["p0", "p999", "\0", TEXT] {
        failed(
            c.update_classification_policy(req(
                t,
                update(
                    ClassificationPolicy {
                        friend_min_purchases: Some(9),
                        etag: etag.into(),
                        ..Default::default()
                    },
                    &["friend_min_purchases"],
                ),
            ))
            .await,
            Code::Aborted,
        );
    }
    assert_eq!(policy(&mut c, t).await, before);
    s.stop().await;
}

#[tokio::test]
async fn every_method_needs_a_tenant() {
    let s = start().await;
    let mut c = s.client();
    let id = Uuid::new_v4().to_string();
    let bad_tenant = |msg: ListSegmentsRequest, value: &str| {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            rapport_kit::context::TENANT_HEADER,
            value.parse().expect("ASCII metadata"),
        );
        r
    };
    for value in ["", "not-a-uuid", "1 OR 1=1", "../x"] {
        failed(
            c.list_segments(bad_tenant(ListSegmentsRequest::default(), value))
                .await,
            Code::Unauthenticated,
        );
    }
    let u = Code::Unauthenticated;
    failed(c.list_fields(no(ListFieldsRequest {})).await, u);
    failed(
        c.create_segment(no(dynamic("X", "purchases >= 1"))).await,
        u,
    );
    failed(
        c.get_segment(no(GetSegmentRequest {
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.update_segment(no(UpdateSegmentRequest {
            segment: Some(Segment {
                segment_id: id.clone(),
                name: "Y".into(),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
        }))
        .await,
        u,
    );
    failed(
        c.delete_segment(no(DeleteSegmentRequest {
            segment_id: id.clone(),
            etag: String::new(),
        }))
        .await,
        u,
    );
    failed(c.list_segments(no(ListSegmentsRequest::default())).await, u);
    failed(
        c.add_members(no(AddMembersRequest {
            segment_id: id.clone(),
            customer_ids: vec![id.clone()],
        }))
        .await,
        u,
    );
    failed(
        c.remove_members(no(RemoveMembersRequest {
            segment_id: id.clone(),
            customer_ids: vec![id.clone()],
        }))
        .await,
        u,
    );
    failed(
        c.preview_segment(no(PreviewSegmentRequest {
            rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
                "purchases >= 1".into(),
            )),
            sample_size: 0,
        }))
        .await,
        u,
    );
    failed(
        c.refresh_segment(no(RefreshSegmentRequest {
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.list_members(no(ListMembersRequest {
            segment_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.get_customer_segments(no(GetCustomerSegmentsRequest {
            customer_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.get_segment_history(no(GetSegmentHistoryRequest {
            segment_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        c.watch_membership(no(WatchMembershipRequest::default()))
            .await,
        u,
    );
    failed(
        c.explain_membership(no(ExplainMembershipRequest {
            customer_id: id.clone(),
            segment_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.get_rfm_report(no(GetRfmReportRequest::default())).await,
        u,
    );
    failed(
        c.classify_customer(no(ClassifyCustomerRequest {
            customer_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        c.get_classification_policy(no(GetClassificationPolicyRequest {}))
            .await,
        u,
    );
    failed(
        c.update_classification_policy(no(UpdateClassificationPolicyRequest {
            policy: Some(ClassificationPolicy {
                friend_min_purchases: Some(3),
                ..Default::default()
            }),
            update_mask: mask(&["friend_min_purchases"]),
        }))
        .await,
        u,
    );
    // Nothing was written by any of them.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(&s.pool)
        .await
        .expect("count segments");
    assert_eq!(n, 0);
    // ListFields answers with a tenant.
    let fields = c
        .list_fields(req(Uuid::new_v4(), ListFieldsRequest {}))
        .await
        .expect("the catalogue")
        .into_inner();
    assert!(fields.fields.iter().any(|f| f.name == "purchases"));
    s.stop().await;
}
