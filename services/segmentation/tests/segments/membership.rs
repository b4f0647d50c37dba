//! Previews, refreshes, static members and references.

use super::*;

#[tokio::test]
async fn preview_counts_samples_and_converts() {
    let Sampled { s, t, cs, mut c } = sampled().await;
    let p = c
        .preview_segment(req(
            t,
            preview_text("country = \"ES\" and purchases >= 1", 1),
        ))
        .await
        .answer();
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
        .answer();
    assert_eq!(again.match_count, 2);
    assert_eq!(again.rule_text, p.rule_text);
    assert_eq!(again.sample_customer_ids.len(), 2);
    // Ranks.
    let top = c
        .preview_segment(req(t, preview_text("clv in top 33%", 10)))
        .await
        .answer();
    assert_eq!(top.sample_customer_ids, vec![cs[3].id.to_string()]);
    // Out of range sample.
    let e = c
        .preview_segment(req(t, preview_text("purchases > 0", 101)))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "sample_size");
    s.stop().await;
}

#[tokio::test]
async fn a_rules_matches_are_listed_page_by_page() {
    let Sampled { s, t, cs, mut c } = sampled().await;
    let ask = |rule: &str, page_size: i32, page_token: String| ListRuleMatchesRequest {
        rule_definition: Some(list_rule_matches_request::RuleDefinition::RuleText(
            rule.into(),
        )),
        page_size,
        page_token,
    };
    // Every customer with a purchase, one page of two at a time, by id.
    let mut want: Vec<String> = cs
        .iter()
        .filter(|x| x.purchases >= 1)
        .map(|x| x.id.to_string())
        .collect();
    want.sort();
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_rule_matches(req(t, ask("purchases >= 1", 2, token)))
            .await
            .answer();
        assert!(page.customer_ids.len() <= 2);
        assert!(page.evaluate_time.is_some());
        got.extend(page.customer_ids);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(got, want);
    // The same rule in the structured form takes the same tokens; another
    // rule's token is refused; so is a bad rule.
    let first = c
        .list_rule_matches(req(t, ask("purchases >= 1", 1, String::new())))
        .await
        .answer();
    let e = c
        .list_rule_matches(req(
            t,
            ask("purchases >= 2", 1, first.next_page_token.clone()),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "page_token");
    let e = c
        .list_rule_matches(req(t, ask("purchases >>= 1", 0, String::new())))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "rule_text");
    let e = c
        .list_rule_matches(req(t, ask("purchases >= 1", -1, String::new())))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "page_size");
    // Another tenant has no customers.
    let other = c
        .list_rule_matches(req(Uuid::new_v4(), ask("purchases >= 0", 0, String::new())))
        .await
        .answer();
    assert!(other.customer_ids.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn refresh_records_entries_and_exits() {
    let Sampled { s, t, cs, mut c } = sampled().await;
    let snap = create_segment(
        &mut c,
        t,
        of_kind("Spenders", SegmentKind::Snapshot, "monetary > 300"),
    )
    .await;
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
    let frozen = get_segment(&mut c, t, &snap.segment_id).await;
    assert_eq!(frozen.member_count, 3);

    let r = c
        .refresh_segment(req(
            t,
            RefreshSegmentRequest {
                segment_id: snap.segment_id.clone(),
            },
        ))
        .await
        .answer();
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
        .answer();
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
        .answer();
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
        .answer();
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
        .answer();
    assert_eq!(cs1.memberships.len(), 1);
    assert_eq!(cs1.memberships[0].segment_name, "Spenders");
    c.get_customer_segments(req(
        t,
        GetCustomerSegmentsRequest {
            customer_id: Uuid::new_v4().to_string(),
            ..Default::default()
        },
    ))
    .await
    .refused(Code::NotFound);

    // Static segments cannot be refreshed.
    let st = create_segment(&mut c, t, of_kind("List", SegmentKind::Static, "")).await;
    c.refresh_segment(req(
        t,
        RefreshSegmentRequest {
            segment_id: st.segment_id,
        },
    ))
    .await
    .refused(Code::FailedPrecondition);
    s.stop().await;
}

#[tokio::test]
async fn static_members_and_references() {
    let Sampled { s, t, cs, mut c } = sampled().await;
    let list = create_segment(&mut c, t, of_kind("Churned", SegmentKind::Static, "")).await;
    // A dynamic segment that excludes the list.
    let active = create_segment(
        &mut c,
        t,
        dynamic("Active", "purchases >= 1 and not in_segment(\"Churned\")"),
    )
    .await;
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
        .answer();
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
        .answer();
    assert_eq!((again.added_count, again.already_member_count), (0, 1));
    // The dependent dynamic segment followed.
    let a = get_segment(&mut c, t, &active.segment_id).await;
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
        .answer()
        .segment
        .unwrap();
    assert_eq!(renamed.name, "Lost ones");
    let a = get_segment(&mut c, t, &active.segment_id).await;
    assert!(
        a.rule_text.contains("in_segment(\"Lost ones\")"),
        "{}",
        a.rule_text
    );

    // A cycle is refused: a segment referring to Active, then Active to it.
    let b = create_segment(&mut c, t, dynamic("B", "in_segment(\"Active\")")).await;
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
        .refused(Code::InvalidArgument);
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
        .refused(Code::FailedPrecondition);
    assert!(e.message().contains("\"B\""));
    // Dynamic segments take no members by hand.
    c.add_members(req(
        t,
        AddMembersRequest {
            segment_id: b.segment_id.clone(),
            customer_ids: vec![cs[1].id.to_string()],
        },
    ))
    .await
    .refused(Code::FailedPrecondition);

    let removed = c
        .remove_members(req(
            t,
            RemoveMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: vec![cs[0].id.to_string(), cs[1].id.to_string()],
            },
        ))
        .await
        .answer();
    assert_eq!(
        (
            removed.removed_count,
            removed.not_member_count,
            removed.member_count
        ),
        (1, 1, 0)
    );
    let a = get_segment(&mut c, t, &active.segment_id).await;
    assert_eq!(a.member_count, 4);
    s.stop().await;
}
