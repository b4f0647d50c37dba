//! Reading and updating the tenant's policy.

use super::*;
use rapport_testkit::hostile::TEXT;

fn cap(channel: i32, max_contacts: i32, window_days: i32) -> ContactCap {
    ContactCap {
        channel,
        max_contacts,
        window_days,
    }
}

#[tokio::test]
async fn update_policy_names_every_bad_field_and_changes_nothing() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let before = policy_of(&mut c, t).await;
    assert!(before.update_time.is_none(), "the defaults: {before:?}");
    let email = ContactChannel::Email as i32;
    let sms = ContactChannel::Sms as i32;
    let with = |f: &dyn Fn(&mut EngagementPolicy), paths: &[&str]| UpdatePolicyRequest {
        policy: Some(changed(EngagementPolicy::default(), f)),
        update_mask: mask(paths),
    };

    let mut cases: Vec<(Vec<String>, UpdatePolicyRequest)> = vec![
        (
            vec!["policy".into()],
            UpdatePolicyRequest {
                policy: None,
                update_mask: mask(&["caps"]),
            },
        ),
        (vec!["policy".into()], UpdatePolicyRequest::default()),
        (
            vec!["update_mask".into()],
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy::default()),
                update_mask: None,
            },
        ),
        (vec!["update_mask".into()], with(&|_| {}, &[])),
    ];
    // Paths that are not fields, and output-only ones.
    for path in [
        "nope",
        "",
        "caps[0]",
        "caps.channel",
        "policy.caps",
        "CAPS",
        "caps ",
        "max_contacts",
        "*",
        "caps\0",
        TEXT,
        "etag",
        "update_time",
    ] {
        cases.push((vec!["update_mask.paths[0]".into()], with(&|_| {}, &[path])));
    }
    cases.push((
        vec!["update_mask.paths[1]".into(), "update_mask.paths[2]".into()],
        with(&|_| {}, &["exploration", "etag", "nope"]),
    ));
    // Caps: a channel unset, unknown or capped twice; counts and windows out
    // of range.
    for channel in [0, 6, 99, -1, i32::MIN] {
        for pos in [0, 2] {
            let mut caps = vec![cap(email, 3, 7), cap(sms, 2, 7)];
            caps.insert(pos, cap(channel, 1, 7));
            cases.push((
                vec![format!("policy.caps[{pos}].channel")],
                with(&|p| p.caps = caps.clone(), &["caps"]),
            ));
        }
    }
    for (caps, field) in [
        (
            vec![cap(email, 1, 7), cap(email, 2, 30)],
            "policy.caps[1].channel",
        ),
        (
            vec![cap(email, 1, 7), cap(sms, 1, 7), cap(email, 1, 7)],
            "policy.caps[2].channel",
        ),
    ] {
        cases.push((
            vec![field.into()],
            with(&|p| p.caps = caps.clone(), &["caps"]),
        ));
    }
    for max in [-1, 1001, i32::MIN, i32::MAX] {
        cases.push((
            vec!["policy.caps[0].max_contacts".into()],
            with(&|p| p.caps = vec![cap(email, max, 7)], &["caps"]),
        ));
    }
    for days in [0, -1, 366, i32::MIN, i32::MAX] {
        cases.push((
            vec!["policy.caps[0].window_days".into()],
            with(&|p| p.caps = vec![cap(email, 1, days)], &["caps"]),
        ));
    }
    cases.push((
        vec![
            "policy.caps[1].channel".into(),
            "policy.caps[1].max_contacts".into(),
            "policy.caps[1].window_days".into(),
        ],
        with(
            &|p| p.caps = vec![cap(email, 3, 7), cap(0, -1, 0)],
            &["caps"],
        ),
    ));
    // The days of the quiet periods and of the outcome window.
    for days in [-1, 366, i32::MIN, i32::MAX] {
        cases.push((
            vec!["policy.complaint_quiet_days".into()],
            with(
                &|p| p.complaint_quiet_days = days,
                &["complaint_quiet_days"],
            ),
        ));
    }
    for days in [-1, 3651, i32::MIN, i32::MAX] {
        cases.push((
            vec!["policy.unsubscribe_quiet_days".into()],
            with(
                &|p| p.unsubscribe_quiet_days = days,
                &["unsubscribe_quiet_days"],
            ),
        ));
    }
    for days in [0, -1, 366, i32::MIN, i32::MAX] {
        cases.push((
            vec!["policy.outcome_window_days".into()],
            with(&|p| p.outcome_window_days = days, &["outcome_window_days"]),
        ));
    }
    // Playbooks: names, rungs, stages, kinds and windows out of their sets.
    let play = |f: &dyn Fn(&mut Play)| {
        changed(
            Play {
                name: "recover".into(),
                kinds: vec![TreatmentKind::ServiceRecovery as i32],
                ..Default::default()
            },
            f,
        )
    };
    let plays: Vec<(&str, Play)> = vec![
        ("policy.playbook[0].name", play(&|p| p.name = String::new())),
        (
            "policy.playbook[0].name",
            play(&|p| p.name = "x".repeat(101)),
        ),
        (
            "policy.playbook[0].name",
            play(&|p| p.name = "a\u{7}b".into()),
        ),
        ("policy.playbook[0].kinds", play(&|p| p.kinds = vec![])),
        ("policy.playbook[0].kinds[0]", play(&|p| p.kinds = vec![0])),
        (
            "policy.playbook[0].kinds[1]",
            play(&|p| p.kinds = vec![3, 99]),
        ),
        (
            "policy.playbook[0].kinds[1]",
            play(&|p| p.kinds = vec![3, 3]),
        ),
        (
            "policy.playbook[0].kinds",
            play(&|p| p.kinds = (1..=9).collect()),
        ),
        (
            "policy.playbook[0].ladder_rungs[0]",
            play(&|p| p.ladder_rungs = vec![0]),
        ),
        (
            "policy.playbook[0].ladder_rungs[0]",
            play(&|p| p.ladder_rungs = vec![-1]),
        ),
        (
            "policy.playbook[0].stages[1]",
            play(&|p| p.stages = vec![1, 6]),
        ),
        (
            "policy.playbook[0].complaint_within_days",
            play(&|p| p.complaint_within_days = -1),
        ),
        (
            "policy.playbook[0].complaint_within_days",
            play(&|p| p.complaint_within_days = 366),
        ),
    ];
    for (field, p) in plays {
        cases.push((
            vec![field.into()],
            with(&|x| x.playbook = vec![p.clone()], &["playbook"]),
        ));
    }
    cases.push((
        vec!["policy.playbook[1].name".into()],
        with(
            &|x| x.playbook = vec![play(&|_| {}), play(&|_| {})],
            &["playbook"],
        ),
    ));
    cases.push((
        vec!["policy.playbook".into()],
        with(&|x| x.playbook = vec![play(&|_| {}); 21], &["playbook"]),
    ));
    // Everything bad at once, in the order of the mask.
    cases.push((
        [
            "policy.caps[0].channel",
            "policy.complaint_quiet_days",
            "policy.unsubscribe_quiet_days",
            "policy.outcome_window_days",
            "update_mask.paths[4]",
            "update_mask.paths[5]",
        ]
        .map(String::from)
        .to_vec(),
        with(
            &|p| {
                p.caps = vec![cap(0, 1, 7)];
                p.complaint_quiet_days = -1;
                p.unsubscribe_quiet_days = -1;
                p.outcome_window_days = 0;
            },
            &[
                "caps",
                "complaint_quiet_days",
                "unsubscribe_quiet_days",
                "outcome_window_days",
                "update_time",
                "nope",
            ],
        ),
    ));

    for (expected, r) in cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let case = format!("{expected:?}: {}", brief(&r));
        assert_violations(c.update_policy(req(t, r)).await, &expected, &case);
        assert_eq!(
            policy_of(&mut c, t).await,
            before,
            "{case} changed the policy"
        );
    }
    // Long lists and repeated paths are checked in linear time: 100,000
    // caps of unknown channels then 100,000 of one channel (1.6 MB); a
    // path named 100,000 times is applied once.
    let quick = std::time::Duration::from_secs(10);
    let many = with(
        &|p| {
            p.caps = [
                vec![cap(99, 1, 7); 100_000],
                vec![cap(email, 1, 7); 100_000],
            ]
            .concat()
        },
        &["caps"],
    );
    let started = std::time::Instant::now();
    hostile::assert_invalid(
        c.update_policy(req(t, many)).await,
        "policy.caps[0].channel",
        "200,000 caps",
    );
    assert!(started.elapsed() < quick, "took {:?}", started.elapsed());
    for (r, expected) in [
        (
            with(
                &|p| p.outcome_window_days = 0,
                &["outcome_window_days"; 100_000],
            ),
            vec!["policy.outcome_window_days"],
        ),
        (
            with(&|p| p.caps = vec![cap(0, -1, 0)], &["caps"; 100_000]),
            vec![
                "policy.caps[0].channel",
                "policy.caps[0].max_contacts",
                "policy.caps[0].window_days",
            ],
        ),
    ] {
        let started = std::time::Instant::now();
        let case = format!("{expected:?}, repeated");
        assert_violations(c.update_policy(req(t, r)).await, &expected, &case);
        assert!(
            started.elapsed() < quick,
            "{case} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(policy_of(&mut c, t).await, before);

    // A stale or forged etag: ABORTED, however good the change.
    let good = |etag: &str| UpdatePolicyRequest {
        policy: Some(EngagementPolicy {
            exploration: true,
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: mask(&["exploration"]),
    };
    for etag in ["p1", "p999", "forged", "\0", TEXT]
        .into_iter()
        .filter(|e| *e != before.etag)
    {
        assert_code(
            c.update_policy(req(t, good(etag))).await,
            Code::Aborted,
            etag,
        );
        assert_eq!(policy_of(&mut c, t).await, before, "{etag}");
    }
    // Fields not named in the mask are not read, however bad; the etag read
    // is then stale.
    let changed_once = c
        .update_policy(req(
            t,
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy {
                    caps: vec![cap(0, -1, 0)],
                    complaint_quiet_days: -1,
                    outcome_window_days: 0,
                    exploration: true,
                    etag: before.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["exploration"]),
            },
        ))
        .await
        .expect_answer("only exploration is read")
        .policy
        .expect("the policy");
    assert!(changed_once.exploration);
    assert_eq!(
        EngagementPolicy {
            exploration: false,
            etag: String::new(),
            update_time: None,
            ..changed_once.clone()
        },
        EngagementPolicy {
            etag: String::new(),
            ..before.clone()
        }
    );
    assert_code(
        c.update_policy(req(t, good(&before.etag))).await,
        Code::Aborted,
        "the etag of the defaults",
    );
    assert_eq!(policy_of(&mut c, t).await, changed_once);
    // The ends of the ranges are valid; no caps means no channel is limited.
    let widest = c
        .update_policy(req(
            t,
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy {
                    caps: (1..=5).map(|ch| cap(ch, 1000, 365)).collect(),
                    complaint_quiet_days: 365,
                    unsubscribe_quiet_days: 3650,
                    outcome_window_days: 365,
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "caps",
                    "complaint_quiet_days",
                    "unsubscribe_quiet_days",
                    "outcome_window_days",
                ]),
            },
        ))
        .await
        .expect_answer("the widest policy")
        .policy
        .expect("the policy");
    assert_eq!(widest.caps.len(), 5);
    let narrowest = c
        .update_policy(req(
            t,
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy {
                    caps: vec![cap(email, 0, 1)],
                    complaint_quiet_days: 0,
                    unsubscribe_quiet_days: 0,
                    outcome_window_days: 1,
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "caps",
                    "complaint_quiet_days",
                    "unsubscribe_quiet_days",
                    "outcome_window_days",
                ]),
            },
        ))
        .await
        .expect_answer("the narrowest policy")
        .policy
        .expect("the policy");
    assert_eq!(narrowest.caps, vec![cap(email, 0, 1)]);
    let uncapped = c
        .update_policy(req(
            t,
            UpdatePolicyRequest {
                policy: Some(EngagementPolicy::default()),
                update_mask: mask(&["caps"]),
            },
        ))
        .await
        .expect_answer("no caps")
        .policy
        .expect("the policy");
    assert!(uncapped.caps.is_empty());
    // Another tenant's policy is its own: still the defaults.
    assert_eq!(policy_of(&mut c, stranger).await, before);
    s.stop().await;
}
