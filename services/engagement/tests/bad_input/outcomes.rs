//! Recording outcomes and reporting on treatments.

use super::*;
use rapport_engagement::domain::decide::in_control;
use rapport_testkit::hostile::{BAD_IDS, YEAR_1, YEAR_9999_END};

#[tokio::test]
async fn record_outcome_refuses_bad_input_and_changes_nothing() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let held = create(
        &mut c,
        t,
        Treatment {
            control_share_bps: 5000,
            ..valid("Held out")
        },
    )
    .await;
    create(&mut c, t, valid("Offered")).await;
    // A customer the hash draws into the control group of "Held out".
    let held_id = Uuid::parse_str(&held.treatment_id).expect("a UUID");
    let alice = (0..)
        .map(|_| Uuid::new_v4())
        .find(|c| in_control(held_id, *c, 5000))
        .expect("a customer in the control group");
    created(&s, t, &[alice]).await;
    let decided = next_best(&mut c, t, &alice.to_string())
        .await
        .expect("decided");
    assert_eq!(decided.actions.len(), 1);
    let offered = decided.actions[0].decision_id.clone();
    let control = decided
        .filtered
        .iter()
        .find(|f| f.reason == FilterReason::ControlGroup as i32)
        .expect("the control-group draw")
        .decision_id
        .clone();
    assert!(!control.is_empty());
    let before = decisions_of(&mut c, t).await;
    assert_eq!(before.len(), 2);
    // Nothing learned yet.
    let counted = |p: &GetNextBestActionsResponse| {
        p.actions
            .iter()
            .map(|a| {
                let p = a.propensity.unwrap_or_default();
                (p.accepted, p.refused)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counted(&preview(&mut c, t, alice).await), vec![(0, 0)]);

    let recording = |f: &dyn Fn(&mut RecordOutcomeRequest)| {
        changed(
            RecordOutcomeRequest {
                decision_id: offered.clone(),
                outcome: Outcome::Accepted as i32,
                outcome_time: None,
            },
            f,
        )
    };
    let mut cases: Vec<(Vec<&str>, RecordOutcomeRequest)> = vec![(
        vec!["decision_id", "outcome", "outcome_time"],
        RecordOutcomeRequest {
            decision_id: "../x".into(),
            outcome: Outcome::Ignored as i32,
            outcome_time: at(0, -1),
        },
    )];
    for id in BAD_IDS {
        cases.push((
            vec!["decision_id"],
            recording(&|r| r.decision_id = id.into()),
        ));
    }
    for outcome in [
        Outcome::Unspecified as i32,
        Outcome::Pending as i32,
        Outcome::Ignored as i32,
        5,
        99,
        -1,
        i32::MIN,
    ] {
        cases.push((vec!["outcome"], recording(&|r| r.outcome = outcome)));
    }
    let n = now();
    for time in broken_times().into_iter().chain([
        at(n + 86_400, 0),
        at(n + 3_600, 0),
        at(YEAR_9999_END, 999_999_999),
    ]) {
        for outcome in [Outcome::Accepted, Outcome::Declined] {
            cases.push((
                vec!["outcome_time"],
                recording(&|r| {
                    r.outcome = outcome as i32;
                    r.outcome_time = time;
                }),
            ));
        }
    }
    // Before the decision was made.
    let decide_time = before[0].decide_time.expect("a decide time");
    for time in [
        at(decide_time.seconds - 1, decide_time.nanos),
        at(YEAR_1, 0),
        at(0, 0),
    ] {
        cases.push((vec!["outcome_time"], recording(&|r| r.outcome_time = time)));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(c.record_outcome(req(t, r)).await, &expected, &case);
        assert_eq!(
            decisions_of(&mut c, t).await,
            before,
            "{case} changed a decision"
        );
    }
    // A decision never made, or another tenant's: NOT_FOUND.
    for (tenant, id, case) in [
        (t, Uuid::new_v4().to_string(), "an unknown decision"),
        (t, held.treatment_id.clone(), "a treatment's id"),
        (stranger, offered.clone(), "another tenant's decision"),
    ] {
        assert_code(
            c.record_outcome(req(
                tenant,
                RecordOutcomeRequest {
                    decision_id: id,
                    outcome: Outcome::Accepted as i32,
                    outcome_time: None,
                },
            ))
            .await,
            Code::NotFound,
            case,
        );
    }
    // A control-group decision offered nothing: FAILED_PRECONDITION.
    for outcome in [Outcome::Accepted, Outcome::Declined] {
        assert_code(
            c.record_outcome(req(
                t,
                RecordOutcomeRequest {
                    decision_id: control.clone(),
                    outcome: outcome as i32,
                    outcome_time: None,
                },
            ))
            .await,
            Code::FailedPrecondition,
            "an outcome of a control decision",
        );
    }
    assert_eq!(decisions_of(&mut c, t).await, before);
    assert_eq!(counted(&preview(&mut c, t, alice).await), vec![(0, 0)]);

    // Recorded once; the same again changes nothing, another outcome is
    // FAILED_PRECONDITION.
    let accept = RecordOutcomeRequest {
        decision_id: offered.clone(),
        outcome: Outcome::Accepted as i32,
        outcome_time: Some(decide_time),
    };
    let accepted = c
        .record_outcome(req(t, accept.clone()))
        .await
        .expect_answer("accepted")
        .decision
        .expect("the decision");
    assert_eq!(accepted.outcome, Outcome::Accepted as i32);
    assert_eq!(
        c.record_outcome(req(t, accept))
            .await
            .expect_answer("the same again")
            .decision
            .as_ref(),
        Some(&accepted)
    );
    let after = decisions_of(&mut c, t).await;
    assert_code(
        c.record_outcome(req(
            t,
            RecordOutcomeRequest {
                decision_id: offered.clone(),
                outcome: Outcome::Declined as i32,
                outcome_time: None,
            },
        ))
        .await,
        Code::FailedPrecondition,
        "another outcome",
    );
    assert_eq!(decisions_of(&mut c, t).await, after);
    assert_eq!(counted(&preview(&mut c, t, alice).await), vec![(1, 0)]);
    s.stop().await;
}

#[tokio::test]
async fn treatment_report_refuses_bad_ids_and_windows() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let tr = create(&mut c, t, valid("Spring")).await;
    let asked = |f: &dyn Fn(&mut GetTreatmentReportRequest)| {
        changed(
            GetTreatmentReportRequest {
                treatment_id: tr.treatment_id.clone(),
                ..Default::default()
            },
            f,
        )
    };
    let n = now();
    let mut cases: Vec<(Vec<&str>, GetTreatmentReportRequest)> = vec![(
        vec!["treatment_id", "start_time", "end_time"],
        GetTreatmentReportRequest {
            treatment_id: String::new(),
            start_time: at(YEAR_1 - 1, 0),
            end_time: at(n, -1),
        },
    )];
    for id in BAD_IDS {
        cases.push((vec!["treatment_id"], asked(&|r| r.treatment_id = id.into())));
    }
    for bad in broken_times() {
        cases.push((vec!["start_time"], asked(&|r| r.start_time = bad)));
        cases.push((vec!["end_time"], asked(&|r| r.end_time = bad)));
    }
    for (start, end) in [
        (at(n, 0), at(n, 0)),
        (at(n, 1), at(n, 0)),
        (at(YEAR_9999_END, 0), at(YEAR_1, 0)),
    ] {
        cases.push((
            vec!["end_time"],
            asked(&|r| {
                r.start_time = start;
                r.end_time = end;
            }),
        ));
    }
    for (expected, r) in cases {
        let case = format!("{expected:?}: {r:?}");
        assert_violations(c.get_treatment_report(req(t, r)).await, &expected, &case);
    }
    for (tenant, id, case) in [
        (t, Uuid::new_v4().to_string(), "an unknown treatment"),
        (
            stranger,
            tr.treatment_id.clone(),
            "another tenant's treatment",
        ),
    ] {
        assert_code(
            c.get_treatment_report(req(
                tenant,
                GetTreatmentReportRequest {
                    treatment_id: id,
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
            case,
        );
    }
    // The widest window is valid, and empty.
    let r = c
        .get_treatment_report(req(
            t,
            asked(&|r| {
                r.start_time = at(YEAR_1, 0);
                r.end_time = at(YEAR_9999_END, 999_999_999);
            }),
        ))
        .await
        .expect_answer("the widest window")
        .report
        .expect("a report");
    assert_eq!(r.offers, 0);
    assert_eq!(r.treatment.as_ref(), Some(&tr));
    s.stop().await;
}
