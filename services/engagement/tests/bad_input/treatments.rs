//! Creating treatments: every bad field, hostile text and the ends of every
//! range, request ids, and sizes.

use super::*;
use rapport_proto::rapport::common::v1::RelationshipStage;
use rapport_testkit::hostile::{BAD_IDS, MULTILINE_TEXT, TEXT, YEAR_1, YEAR_9999_END};

/// Violation paths of CreateTreatment.
type Fields = Vec<&'static str>;

#[tokio::test]
async fn create_treatment_names_every_bad_field_and_writes_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let with = |f: &dyn Fn(&mut Treatment)| creating(changed(valid("Valid"), f));
    let seg = || Uuid::new_v4().to_string();
    let mut cases: Vec<(Fields, CreateTreatmentRequest)> = vec![
        (vec!["treatment"], CreateTreatmentRequest::default()),
        (
            vec!["treatment"],
            CreateTreatmentRequest {
                treatment: None,
                request_id: "r-1".into(),
            },
        ),
    ];

    // Names: empty, white space around, control characters, too long (in
    // characters, whatever their bytes).
    let long_names = ["n".repeat(201), "é".repeat(201), "😀".repeat(201)];
    for name in [
        "",
        " lead",
        "trail ",
        "   ",
        "\tTab",
        "a\0b",
        "\0",
        "tab\there",
        "line\nbreak",
        "cr\rhere",
        "del\u{7f}",
        "nel\u{85}",
        "\u{1b}[31mred",
    ]
    .into_iter()
    .map(String::from)
    .chain(long_names)
    {
        cases.push((vec!["treatment.name"], with(&|t| t.name = name.clone())));
    }
    for description in [
        "d".repeat(2001),
        "😀".repeat(2001),
        "nul\0".into(),
        "\0".into(),
    ] {
        cases.push((
            vec!["treatment.description"],
            with(&|t| t.description = description.clone()),
        ));
    }
    // Enums: unset where required, and numbers no enum has.
    for kind in [0, 9, 99, -1, i32::MAX, i32::MIN] {
        cases.push((vec!["treatment.kind"], with(&|t| t.kind = kind)));
    }
    for channel in [0, 6, 99, -1, i32::MIN] {
        cases.push((vec!["treatment.channel"], with(&|t| t.channel = channel)));
    }
    for goal in [5, 99, -1, i32::MAX] {
        cases.push((
            vec!["treatment.ladder_goal"],
            with(&|t| t.ladder_goal = goal),
        ));
    }
    for purpose in [0, 5, 99, -1, i32::MIN] {
        cases.push((
            vec!["treatment.consent_purpose"],
            with(&|t| t.consent_purpose = purpose),
        ));
    }
    // Stages: UNSPECIFIED, unknown, more than 5.
    let all_stages: Vec<i32> = (1..=5).collect();
    for (stages, field) in [
        (vec![0], "treatment.stages[0]"),
        (vec![1, 99], "treatment.stages[1]"),
        (vec![-1], "treatment.stages[0]"),
        (
            vec![RelationshipStage::Commitment as i32, i32::MAX],
            "treatment.stages[1]",
        ),
        ([all_stages.clone(), vec![1]].concat(), "treatment.stages"),
    ] {
        cases.push((vec![field], with(&|t| t.stages = stages.clone())));
    }
    cases.push((
        vec!["treatment.stages", "treatment.stages[5]"],
        with(&|t| t.stages = [all_stages.clone(), vec![0]].concat()),
    ));
    // Segments: malformed ids, more than 20, the same targeted and excluded.
    for id in BAD_IDS {
        cases.push((
            vec!["treatment.target_segment_ids[1]"],
            with(&|t| t.target_segment_ids = vec![seg(), id.into()]),
        ));
        cases.push((
            vec!["treatment.exclude_segment_ids[0]"],
            with(&|t| t.exclude_segment_ids = vec![id.into()]),
        ));
    }
    let many: Vec<String> = (0..21).map(|_| seg()).collect();
    cases.push((
        vec!["treatment.target_segment_ids"],
        with(&|t| t.target_segment_ids = many.clone()),
    ));
    cases.push((
        vec!["treatment.exclude_segment_ids"],
        with(&|t| t.exclude_segment_ids = many.clone()),
    ));
    let both = seg();
    for (target, exclude) in [
        (both.clone(), both.clone()),
        (both.clone(), both.to_uppercase()),
    ] {
        cases.push((
            vec!["treatment.exclude_segment_ids"],
            with(&|t| {
                t.target_segment_ids = vec![seg(), target.clone()];
                t.exclude_segment_ids = vec![exclude.clone()];
            }),
        ));
    }
    // Times: not Timestamps, and an end not after the start.
    for bad in broken_times() {
        cases.push((vec!["treatment.start_time"], with(&|t| t.start_time = bad)));
        cases.push((vec!["treatment.end_time"], with(&|t| t.end_time = bad)));
    }
    let n = now();
    for (start, end) in [
        (at(n, 0), at(n, 0)),
        (at(n, 1), at(n, 0)),
        (at(n + 86_400, 0), at(n, 0)),
        (at(YEAR_9999_END, 0), at(YEAR_1, 0)),
    ] {
        cases.push((
            vec!["treatment.end_time"],
            with(&|t| {
                t.start_time = start;
                t.end_time = end;
            }),
        ));
    }
    // The cost: missing, a bad currency, nanos out of range or of the
    // other sign, negative, beyond what an amount holds.
    cases.push((
        vec!["treatment.cost_per_contact"],
        with(&|t| t.cost_per_contact = None),
    ));
    for code in [
        "", "eur", "Eur", "EURO", "EU", "ZZZ", "E\0R", "€", "1 OR 1=1", TEXT,
    ] {
        cases.push((
            vec!["treatment.cost_per_contact.currency_code"],
            with(&|t| t.cost_per_contact = money(code, 1, 0)),
        ));
    }
    for (units, nanos) in [
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (0, i32::MAX),
        (0, i32::MIN),
        (1, -1),
        (-1, 1),
    ] {
        cases.push((
            vec!["treatment.cost_per_contact.nanos"],
            with(&|t| t.cost_per_contact = money("EUR", units, nanos)),
        ));
    }
    for (units, nanos) in [(-1, 0), (0, -1), (-5, -500_000_000)] {
        cases.push((
            vec!["treatment.cost_per_contact"],
            with(&|t| t.cost_per_contact = money("EUR", units, nanos)),
        ));
    }
    for units in [i64::MAX, i64::MIN, 9_300_000_000] {
        cases.push((
            vec!["treatment.cost_per_contact.units"],
            with(&|t| t.cost_per_contact = money("EUR", units, 0)),
        ));
    }
    // The value: missing, a fixed value not above zero, in another
    // currency or malformed, a CLV share out of 1..=10000.
    cases.push((vec!["treatment.value"], with(&|t| t.value = None)));
    for (units, nanos) in [(0, 0), (-20, 0), (0, -1)] {
        cases.push((
            vec!["treatment.fixed_value"],
            with(&|t| {
                t.value = Some(treatment::Value::FixedValue(Money {
                    currency_code: "EUR".into(),
                    units,
                    nanos,
                }))
            }),
        ));
    }
    for (code, units, nanos, field) in [
        ("USD", 20, 0, "treatment.fixed_value.currency_code"),
        ("usd", 20, 0, "treatment.fixed_value.currency_code"),
        ("", 20, 0, "treatment.fixed_value.currency_code"),
        ("EUR", 20, 1_000_000_000, "treatment.fixed_value.nanos"),
        ("EUR", 20, -5, "treatment.fixed_value.nanos"),
        ("EUR", i64::MAX, 0, "treatment.fixed_value.units"),
    ] {
        cases.push((
            vec![field],
            with(&|t| {
                t.value = Some(treatment::Value::FixedValue(Money {
                    currency_code: code.into(),
                    units,
                    nanos,
                }))
            }),
        ));
    }
    for bps in [0, -1, 10_001, i32::MIN, i32::MAX] {
        cases.push((
            vec!["treatment.clv_share_bps"],
            with(&|t| t.value = Some(treatment::Value::ClvShareBps(bps))),
        ));
        cases.push((
            vec!["treatment.margin_share_bps"],
            with(&|t| t.value = Some(treatment::Value::MarginShareBps(bps))),
        ));
    }
    // The levers.
    for p in [-1, 1001, i32::MIN, i32::MAX] {
        cases.push((
            vec!["treatment.priority_percent"],
            with(&|t| t.priority_percent = p),
        ));
    }
    for bps in [-1, 5001, 10_000, i32::MIN, i32::MAX] {
        cases.push((
            vec!["treatment.control_share_bps"],
            with(&|t| t.control_share_bps = bps),
        ));
    }
    for x in [
        -1.0,
        -f64::MIN_POSITIVE,
        -f64::MAX,
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        10_000.000_001,
        1e300,
        f64::MAX,
    ] {
        cases.push((vec!["treatment.prior_alpha"], with(&|t| t.prior_alpha = x)));
        cases.push((vec!["treatment.prior_beta"], with(&|t| t.prior_beta = x)));
    }
    // Request ids: too long, not printable ASCII.
    for id in [
        "r".repeat(129),
        "clé".into(),
        "😀".into(),
        "a\0b".into(),
        "line\n".into(),
        "tab\t".into(),
        "\u{7f}".into(),
    ] {
        cases.push((
            vec!["request_id"],
            CreateTreatmentRequest {
                request_id: id,
                ..creating(valid("Valid"))
            },
        ));
    }
    // Every field bad at once: each named, in the order they are checked.
    cases.push((
        vec![
            "request_id",
            "treatment.name",
            "treatment.description",
            "treatment.kind",
            "treatment.ladder_goal",
            "treatment.stages[0]",
            "treatment.target_segment_ids[0]",
            "treatment.exclude_segment_ids[0]",
            "treatment.consent_purpose",
            "treatment.start_time",
            "treatment.end_time",
            "treatment.cost_per_contact",
            "treatment.value",
            "treatment.priority_percent",
            "treatment.control_share_bps",
            "treatment.prior_alpha",
            "treatment.prior_beta",
            "treatment.channel",
        ],
        CreateTreatmentRequest {
            treatment: Some(Treatment {
                name: String::new(),
                description: "\0".into(),
                kind: 99,
                channel: 0,
                ladder_goal: 99,
                stages: vec![0],
                target_segment_ids: vec!["x".into()],
                exclude_segment_ids: vec!["y".into()],
                consent_purpose: 99,
                start_time: at(0, -1),
                end_time: at(i64::MAX, 0),
                cost_per_contact: None,
                value: None,
                priority_percent: -1,
                control_share_bps: -1,
                prior_alpha: f64::NAN,
                prior_beta: -1.0,
                ..Default::default()
            }),
            request_id: "r".repeat(129),
        },
    ));

    for (expected, r) in cases {
        let case = format!("{expected:?}: {}", brief(&r));
        assert_violations(c.create_treatment(req(t, r)).await, &expected, &case);
        assert!(
            treatments_of(&mut c, t).await.is_empty(),
            "{case} wrote a treatment"
        );
    }
    // The valid treatment the rows were made from is created.
    create(&mut c, t, valid("Valid")).await;
    s.stop().await;
}

#[tokio::test]
async fn hostile_text_and_the_ends_of_every_range_are_kept() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();

    // Hostile text byte for byte; output-only fields are ignored.
    let hostile = CreateTreatmentRequest {
        treatment: Some(Treatment {
            description: MULTILINE_TEXT.into(),
            treatment_id: "../x".into(),
            state: TreatmentState::Archived as i32,
            etag: "forged".into(),
            version: 99,
            create_time: at(i64::MAX / 2, -1),
            update_time: at(YEAR_1 - 1, 0),
            archive_time: at(0, 0),
            ..valid(TEXT)
        }),
        request_id: "Robert'); DROP TABLE treatments;-- \"%_\\ ".into(),
    };
    let made = c
        .create_treatment(req(t, hostile.clone()))
        .await
        .expect_answer("hostile text is valid")
        .treatment
        .expect("the treatment");
    assert_eq!(made.name, TEXT);
    assert_eq!(made.description, MULTILINE_TEXT);
    assert!(Uuid::parse_str(&made.treatment_id).is_ok());
    assert_eq!(made.state, TreatmentState::Active as i32);
    assert_eq!(made.version, 1);
    assert!(made.archive_time.is_none());
    assert_eq!(get(&mut c, t, &made.treatment_id).await, made);
    assert_eq!(treatments_of(&mut c, t).await, vec![made.clone()]);
    // The retry with the hostile request id is the same treatment.
    let again = c
        .create_treatment(req(t, hostile))
        .await
        .expect_answer("the retry")
        .treatment;
    assert_eq!(again.as_ref(), Some(&made));

    // The last valid value of every range.
    let targets: Vec<String> = (0..20).map(|_| Uuid::new_v4().to_string()).collect();
    let excludes: Vec<String> = (0..20).map(|_| Uuid::new_v4().to_string()).collect();
    let widest = Treatment {
        name: "é".repeat(200),
        description: format!("{}\n\t", "😀".repeat(1998)),
        kind: TreatmentKind::CheckInCall as i32,
        channel: ContactChannel::FieldVisit as i32,
        ladder_goal: LadderGoal::Enhance as i32,
        stages: vec![5, 4, 3, 2, 1],
        target_segment_ids: targets,
        exclude_segment_ids: excludes,
        consent_purpose: ConsentPurpose::Research as i32,
        start_time: at(YEAR_1, 0),
        end_time: at(YEAR_9999_END, 999_999_999),
        cost_per_contact: Some(eur(0, 0)),
        value: Some(treatment::Value::FixedValue(eur(
            9_000_000_000,
            999_999_999,
        ))),
        priority_percent: 1000,
        control_share_bps: 5000,
        prior_alpha: 10_000.0,
        prior_beta: 10_000.0,
        ..Default::default()
    };
    let stored = c
        .create_treatment(req(
            t,
            CreateTreatmentRequest {
                treatment: Some(widest.clone()),
                request_id: "~".repeat(128),
            },
        ))
        .await
        .expect_answer("the widest valid treatment")
        .treatment
        .expect("the treatment");
    let output_only = |x: &Treatment| Treatment {
        treatment_id: String::new(),
        state: 0,
        etag: String::new(),
        version: 0,
        create_time: None,
        update_time: None,
        archive_time: None,
        ..x.clone()
    };
    assert_eq!(output_only(&stored), widest);
    assert_eq!(get(&mut c, t, &stored.treatment_id).await, stored);

    // The other ends, and the zeros that mean a default.
    let narrowest = Treatment {
        name: "n".into(),
        kind: TreatmentKind::Offer as i32,
        channel: ContactChannel::Email as i32,
        ladder_goal: LadderGoal::Acquire as i32,
        consent_purpose: ConsentPurpose::Marketing as i32,
        cost_per_contact: Some(eur(9_000_000_000, 0)),
        value: Some(treatment::Value::ClvShareBps(1)),
        priority_percent: 1,
        control_share_bps: 0,
        prior_alpha: 1e-9,
        prior_beta: 1e-9,
        ..Default::default()
    };
    let stored = create(&mut c, t, narrowest.clone()).await;
    assert_eq!(output_only(&stored), narrowest);
    let defaults = create(
        &mut c,
        t,
        Treatment {
            value: Some(treatment::Value::ClvShareBps(10_000)),
            priority_percent: 0,
            prior_alpha: -0.0,
            prior_beta: 0.0,
            ..valid("Defaults")
        },
    )
    .await;
    assert_eq!(
        (
            defaults.priority_percent,
            defaults.prior_alpha,
            defaults.prior_beta
        ),
        (100, 1.0, 9.0)
    );
    assert_eq!(treatments_of(&mut c, t).await.len(), 4);
    s.stop().await;
}

#[tokio::test]
async fn request_ids_replay_the_same_treatment_and_refuse_other_content() {
    let s = start().await;
    let (t, other_tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let keyed = |tr: Treatment| CreateTreatmentRequest {
        treatment: Some(tr),
        request_id: "create-spring-1".into(),
    };
    let first = c
        .create_treatment(req(t, keyed(valid("Spring"))))
        .await
        .expect_answer("first")
        .treatment
        .expect("the treatment");
    // The same content again: the same treatment, nothing more.
    for _ in 0..2 {
        let again = c
            .create_treatment(req(t, keyed(valid("Spring"))))
            .await
            .expect_answer("a retry")
            .treatment;
        assert_eq!(again.as_ref(), Some(&first));
    }
    // Other content under the same request id: ALREADY_EXISTS, nothing
    // written.
    for other in [
        valid("Autumn"),
        Treatment {
            description: "changed".into(),
            ..valid("Spring")
        },
        Treatment {
            value: fixed(21),
            ..valid("Spring")
        },
    ] {
        let case = format!("{other:?}");
        assert_code(
            c.create_treatment(req(t, keyed(other))).await,
            Code::AlreadyExists,
            &case,
        );
        assert_eq!(
            treatments_of(&mut c, t).await,
            vec![first.clone()],
            "{case}"
        );
    }
    // An active treatment's name: ALREADY_EXISTS, nothing written.
    assert_code(
        c.create_treatment(req(t, creating(valid("Spring")))).await,
        Code::AlreadyExists,
        "a taken name",
    );
    assert_code(
        c.create_treatment(req(
            t,
            CreateTreatmentRequest {
                request_id: "another-key".into(),
                ..creating(valid("Spring"))
            },
        ))
        .await,
        Code::AlreadyExists,
        "a taken name under a new request id",
    );
    assert_eq!(treatments_of(&mut c, t).await, vec![first.clone()]);
    // The refused call did not take its request id: with a free name it works.
    let autumn = c
        .create_treatment(req(
            t,
            CreateTreatmentRequest {
                request_id: "another-key".into(),
                ..creating(valid("Autumn"))
            },
        ))
        .await
        .expect_answer("the request id of a refused call is free")
        .treatment
        .expect("the treatment");
    assert_ne!(autumn.treatment_id, first.treatment_id);
    // Request ids are the tenant's own: another tenant's same id creates.
    create(&mut c, other_tenant, valid("Spring")).await;
    let theirs_keyed = c
        .create_treatment(req(other_tenant, keyed(valid("Winter"))))
        .await
        .expect_answer("another tenant's request id")
        .treatment
        .expect("the treatment");
    assert_ne!(theirs_keyed.treatment_id, first.treatment_id);
    assert_eq!(treatments_of(&mut c, other_tenant).await.len(), 2);
    assert_eq!(treatments_of(&mut c, t).await.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn oversized_lists_and_repeated_paths_are_refused_quickly() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let quick = std::time::Duration::from_secs(10);
    // 50,000 segment ids on each side (3.8 MB): refused as lists, in
    // linear time.
    let ids: Vec<String> = (0..50_000).map(|_| Uuid::new_v4().to_string()).collect();
    let started = std::time::Instant::now();
    assert_violations(
        c.create_treatment(req(
            t,
            creating(Treatment {
                target_segment_ids: ids.clone(),
                exclude_segment_ids: ids.clone(),
                ..valid("Huge")
            }),
        ))
        .await,
        &[
            "treatment.target_segment_ids",
            "treatment.exclude_segment_ids",
        ],
        "50,000 segment ids each side",
    );
    assert!(started.elapsed() < quick, "took {:?}", started.elapsed());
    assert!(treatments_of(&mut c, t).await.is_empty());

    // A mask naming a field many times applies it once: one violation,
    // whatever the repetitions.
    let tr = create(&mut c, t, valid("Spring")).await;
    let repeated = |f: &dyn Fn(&mut Treatment), path: &str, times: usize| UpdateTreatmentRequest {
        treatment: Some(changed(
            Treatment {
                treatment_id: tr.treatment_id.clone(),
                ..Default::default()
            },
            f,
        )),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![path.to_string(); times],
        }),
    };
    let stages = std::iter::once("treatment.stages".to_string())
        .chain((0..6).map(|i| format!("treatment.stages[{i}]")))
        .collect();
    for (r, expected) in [
        (
            repeated(&|t| t.name = String::new(), "name", 1000),
            vec!["treatment.name".to_string()],
        ),
        (
            repeated(&|t| t.priority_percent = -1, "priority_percent", 100_000),
            vec!["treatment.priority_percent".to_string()],
        ),
        (
            repeated(&|t| t.stages = vec![0; 6], "stages", 10_000),
            stages,
        ),
    ] {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let case = format!("{expected:?}, repeated");
        assert_violations(c.update_treatment(req(t, r)).await, &expected, &case);
        assert!(
            started.elapsed() < quick,
            "{case} took {:?}",
            started.elapsed()
        );
        assert_eq!(get(&mut c, t, &tr.treatment_id).await, tr, "{case}");
    }
    // 100,000 repetitions of a valid change (2,000 characters each time)
    // are one change.
    let text = "😀".repeat(2000);
    let started = std::time::Instant::now();
    let done = c
        .update_treatment(req(
            t,
            repeated(&|t| t.description = text.clone(), "description", 100_000),
        ))
        .await
        .expect_answer("a repeated valid path")
        .treatment
        .expect("the treatment");
    assert!(started.elapsed() < quick, "took {:?}", started.elapsed());
    assert_eq!(
        (done.description.as_str(), done.version),
        (text.as_str(), 2)
    );
    s.stop().await;
}
