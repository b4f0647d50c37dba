//! Updating, archiving, reading and listing treatments.

use super::*;
use rapport_testkit::hostile::{
    BAD_IDS, FORGED_TOKEN, MALFORMED_IDS, MULTILINE_TEXT, TEXT, YEAR_9999_END, assert_read_by_id,
    forged_tokens,
};

/// Violation paths of UpdateTreatment.
type Fields = Vec<&'static str>;

/// A change of some fields of a treatment.
type Change<'a> = Box<dyn Fn(&mut Treatment) + 'a>;

#[tokio::test]
async fn update_treatment_refuses_bad_masks_ids_etags_and_fields() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let excluded = Uuid::new_v4().to_string();
    let start_at = now();
    let tr = create(
        &mut c,
        t,
        Treatment {
            start_time: at(start_at, 0),
            exclude_segment_ids: vec![excluded.clone()],
            ..valid("Spring")
        },
    )
    .await;
    create(&mut c, t, valid("Autumn")).await;
    let id = tr.treatment_id.clone();
    let base = || Treatment {
        treatment_id: id.clone(),
        ..Default::default()
    };
    let upd = |tr: Treatment, paths: &[&str]| UpdateTreatmentRequest {
        treatment: Some(tr),
        update_mask: mask(paths),
    };
    let bad = |f: &dyn Fn(&mut Treatment), paths: &[&str]| upd(changed(base(), f), paths);

    let mut cases: Vec<(Fields, UpdateTreatmentRequest)> = vec![
        (
            vec!["treatment"],
            UpdateTreatmentRequest {
                treatment: None,
                update_mask: mask(&["name"]),
            },
        ),
        (
            vec!["update_mask"],
            UpdateTreatmentRequest {
                treatment: Some(base()),
                update_mask: None,
            },
        ),
        (vec!["update_mask"], upd(base(), &[])),
        (
            vec!["treatment.treatment_id", "update_mask"],
            upd(
                Treatment {
                    treatment_id: "nope".into(),
                    ..Default::default()
                },
                &[],
            ),
        ),
    ];
    for bad_id in BAD_IDS {
        cases.push((
            vec!["treatment.treatment_id"],
            upd(
                Treatment {
                    treatment_id: bad_id.into(),
                    name: "New".into(),
                    ..Default::default()
                },
                &["name"],
            ),
        ));
    }
    // Paths that are not fields, output-only fields, and the forms of the
    // value (named "value").
    for path in [
        "nope",
        "",
        "name\0",
        "Name",
        "treatment.name",
        "name ",
        "*",
        "value.fixed_value",
        "stages[0]",
        "treatment_id",
        "state",
        "etag",
        "version",
        "create_time",
        "update_time",
        "archive_time",
        "fixed_value",
        "clv_share_bps",
        "margin_share_bps",
    ] {
        cases.push((vec!["update_mask.paths[0]"], upd(base(), &[path])));
    }
    cases.push((
        vec!["update_mask.paths[1]", "update_mask.paths[3]"],
        upd(base(), &["description", "etag", "name", "fixed_value"]),
    ));
    // Bad values of the fields named in the mask.
    let n = now();
    let masked: Vec<(&str, &str, Change<'_>)> = vec![
        (
            "name",
            "treatment.name",
            Box::new(|t| t.name = String::new()),
        ),
        ("name", "treatment.name", Box::new(|t| t.name = " x".into())),
        (
            "name",
            "treatment.name",
            Box::new(|t| t.name = "x\0".into()),
        ),
        (
            "name",
            "treatment.name",
            Box::new(|t| t.name = "n".repeat(201)),
        ),
        (
            "description",
            "treatment.description",
            Box::new(|t| t.description = "\0".into()),
        ),
        (
            "description",
            "treatment.description",
            Box::new(|t| t.description = "d".repeat(2001)),
        ),
        ("kind", "treatment.kind", Box::new(|t| t.kind = 0)),
        ("kind", "treatment.kind", Box::new(|t| t.kind = 99)),
        ("channel", "treatment.channel", Box::new(|t| t.channel = 0)),
        ("channel", "treatment.channel", Box::new(|t| t.channel = -1)),
        (
            "ladder_goal",
            "treatment.ladder_goal",
            Box::new(|t| t.ladder_goal = 99),
        ),
        (
            "stages",
            "treatment.stages[0]",
            Box::new(|t| t.stages = vec![0]),
        ),
        (
            "stages",
            "treatment.stages",
            Box::new(|t| t.stages = vec![1, 2, 3, 4, 5, 5]),
        ),
        (
            "target_segment_ids",
            "treatment.target_segment_ids[0]",
            Box::new(|t| t.target_segment_ids = vec!["../x".into()]),
        ),
        (
            "exclude_segment_ids",
            "treatment.exclude_segment_ids",
            Box::new(|t| {
                t.exclude_segment_ids = (0..21).map(|_| Uuid::new_v4().to_string()).collect()
            }),
        ),
        (
            "consent_purpose",
            "treatment.consent_purpose",
            Box::new(|t| t.consent_purpose = 0),
        ),
        (
            "start_time",
            "treatment.start_time",
            Box::new(|t| t.start_time = at(YEAR_9999_END + 1, 0)),
        ),
        (
            "end_time",
            "treatment.end_time",
            Box::new(|t| t.end_time = at(0, 1_000_000_000)),
        ),
        (
            "cost_per_contact",
            "treatment.cost_per_contact",
            Box::new(|t| t.cost_per_contact = None),
        ),
        (
            "cost_per_contact",
            "treatment.cost_per_contact",
            Box::new(|t| t.cost_per_contact = Some(eur(-1, 0))),
        ),
        (
            "cost_per_contact",
            "treatment.cost_per_contact.currency_code",
            Box::new(|t| t.cost_per_contact = money("eur", 0, 0)),
        ),
        ("value", "treatment.value", Box::new(|t| t.value = None)),
        (
            "value",
            "treatment.fixed_value",
            Box::new(|t| t.value = fixed(0)),
        ),
        (
            "value",
            "treatment.clv_share_bps",
            Box::new(|t| t.value = Some(treatment::Value::ClvShareBps(10_001))),
        ),
        (
            "priority_percent",
            "treatment.priority_percent",
            Box::new(|t| t.priority_percent = 1001),
        ),
        (
            "control_share_bps",
            "treatment.control_share_bps",
            Box::new(|t| t.control_share_bps = 5001),
        ),
        (
            "prior_alpha",
            "treatment.prior_alpha",
            Box::new(|t| t.prior_alpha = f64::NAN),
        ),
        (
            "prior_beta",
            "treatment.prior_beta",
            Box::new(|t| t.prior_beta = -1.0),
        ),
    ];
    for (path, field, f) in &masked {
        cases.push((vec![*field], bad(f.as_ref(), &[path])));
    }
    // Changes that break what must hold of the whole treatment, with the
    // stored fields they meet: an end not after the stored start, a
    // targeted segment that is excluded, a value in another currency than
    // the cost and the other way round.
    for (paths, field, f) in [
        (
            vec!["end_time"],
            "treatment.end_time",
            Box::new(|t: &mut Treatment| t.end_time = at(start_at, 0)) as Change<'_>,
        ),
        (
            vec!["start_time", "end_time"],
            "treatment.end_time",
            Box::new(|t: &mut Treatment| {
                t.start_time = at(n + 86_400, 0);
                t.end_time = at(n, 0);
            }),
        ),
        (
            vec!["target_segment_ids"],
            "treatment.exclude_segment_ids",
            Box::new(|t: &mut Treatment| t.target_segment_ids = vec![excluded.clone()]),
        ),
        (
            vec!["value"],
            "treatment.fixed_value.currency_code",
            Box::new(|t: &mut Treatment| {
                t.value = money("USD", 5, 0).map(treatment::Value::FixedValue)
            }),
        ),
        (
            vec!["cost_per_contact"],
            "treatment.fixed_value.currency_code",
            Box::new(|t: &mut Treatment| t.cost_per_contact = money("USD", 0, 0)),
        ),
    ] {
        cases.push((vec![field], bad(f.as_ref(), &paths)));
    }

    let before = get(&mut c, t, &id).await;
    for (expected, r) in cases {
        let case = format!("{expected:?}: {}", brief(&r));
        assert_violations(c.update_treatment(req(t, r)).await, &expected, &case);
        assert_eq!(get(&mut c, t, &id).await, before, "{case} changed it");
    }

    // An id never issued, or another tenant's: NOT_FOUND.
    let rename = |id: &str| {
        upd(
            Treatment {
                treatment_id: id.into(),
                name: "Taken over".into(),
                ..Default::default()
            },
            &["name"],
        )
    };
    assert_code(
        c.update_treatment(req(t, rename(&Uuid::new_v4().to_string())))
            .await,
        Code::NotFound,
        "an unknown id",
    );
    assert_code(
        c.update_treatment(req(stranger, rename(&id))).await,
        Code::NotFound,
        "another tenant's id",
    );
    // A stale or forged etag: ABORTED.
    for etag in [
        "t0".to_string(),
        format!("{}0", before.etag),
        "1 OR 1=1".into(),
        "\0".into(),
        TEXT.into(),
    ] {
        assert_code(
            c.update_treatment(req(
                t,
                upd(
                    Treatment {
                        name: "Renamed".into(),
                        etag: etag.clone(),
                        ..base()
                    },
                    &["name"],
                ),
            ))
            .await,
            Code::Aborted,
            &etag,
        );
    }
    // Another active treatment's name: ALREADY_EXISTS.
    assert_code(
        c.update_treatment(req(t, bad(&|t| t.name = "Autumn".into(), &["name"])))
            .await,
        Code::AlreadyExists,
        "a taken name",
    );
    assert_eq!(get(&mut c, t, &id).await, before);

    // Fields not named in the mask are not read, however bad.
    let changed_once = c
        .update_treatment(req(
            t,
            upd(
                Treatment {
                    name: String::new(),
                    kind: 99,
                    prior_alpha: f64::NAN,
                    cost_per_contact: None,
                    description: MULTILINE_TEXT.into(),
                    etag: before.etag.clone(),
                    ..base()
                },
                &["description"],
            ),
        ))
        .await
        .expect_answer("only the description is read")
        .treatment
        .expect("the treatment");
    assert_eq!(changed_once.description, MULTILINE_TEXT);
    assert_eq!(changed_once.name, before.name);
    assert_eq!(changed_once.kind, before.kind);
    assert_eq!(changed_once.version, before.version + 1);
    // The etag read before that change is stale now.
    assert_code(
        c.update_treatment(req(
            t,
            upd(
                Treatment {
                    name: "Renamed".into(),
                    etag: before.etag.clone(),
                    ..base()
                },
                &["name"],
            ),
        ))
        .await,
        Code::Aborted,
        "the etag of the previous version",
    );

    // An archived treatment: FAILED_PRECONDITION, and it stays as archived.
    let archived = c
        .archive_treatment(req(
            t,
            ArchiveTreatmentRequest {
                treatment_id: id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect_answer("archived")
        .treatment
        .expect("the treatment");
    for r in [
        bad(&|t| t.description = "new".into(), &["description"]),
        bad(&|t| t.name = "Spring 2".into(), &["name"]),
        bad(
            &|t| {
                t.description = "new".into();
                t.etag = archived.etag.clone();
            },
            &["description"],
        ),
    ] {
        let case = format!("{r:?}");
        assert_code(
            c.update_treatment(req(t, r)).await,
            Code::FailedPrecondition,
            &case,
        );
        assert_eq!(get(&mut c, t, &id).await, archived, "{case}");
    }
    s.stop().await;
}

#[tokio::test]
async fn get_and_archive_refuse_bad_unknown_and_foreign_ids() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let tr = create(&mut c, t, valid("Spring")).await;
    create(&mut c, stranger, valid("Theirs")).await;

    let read = assert_read_by_id(
        "treatment_id",
        t,
        stranger,
        &tr.treatment_id,
        |tenant, id| {
            let mut c = c.clone();
            async move {
                c.get_treatment(req(tenant, GetTreatmentRequest { treatment_id: id }))
                    .await
            }
        },
    )
    .await;
    assert_eq!(read.treatment.as_ref(), Some(&tr));

    let ac = s.client();
    let archive = move |tenant: Uuid, id: String, etag: String| {
        let mut c = ac.clone();
        async move {
            c.archive_treatment(req(
                tenant,
                ArchiveTreatmentRequest {
                    treatment_id: id,
                    etag,
                },
            ))
            .await
        }
    };
    for id in BAD_IDS {
        for etag in ["", "t1", TEXT] {
            assert_violations(
                archive(t, id.into(), etag.into()).await,
                &["treatment_id"],
                &format!("treatment_id {id:?}"),
            );
        }
    }
    assert_code(
        archive(t, Uuid::new_v4().to_string(), String::new()).await,
        Code::NotFound,
        "an unknown id",
    );
    assert_code(
        archive(stranger, tr.treatment_id.clone(), String::new()).await,
        Code::NotFound,
        "another tenant's id",
    );
    for etag in ["t0", "t2", "forged", "\0", TEXT]
        .into_iter()
        .filter(|e| *e != tr.etag)
    {
        assert_code(
            archive(t, tr.treatment_id.clone(), etag.into()).await,
            Code::Aborted,
            etag,
        );
    }
    // Nothing was archived, here or at the stranger's.
    assert_eq!(get(&mut c, t, &tr.treatment_id).await, tr);
    assert!(
        treatments_of(&mut c, stranger)
            .await
            .iter()
            .all(|x| x.state == TreatmentState::Active as i32)
    );
    // Archived with its etag; archiving again returns it unchanged, but a
    // stale etag is still ABORTED.
    let archived = archive(t, tr.treatment_id.clone(), tr.etag.clone())
        .await
        .expect_answer("archived")
        .treatment
        .expect("the treatment");
    assert_eq!(archived.state, TreatmentState::Archived as i32);
    let again = archive(t, tr.treatment_id.clone(), String::new())
        .await
        .expect_answer("archived again")
        .treatment;
    assert_eq!(again.as_ref(), Some(&archived));
    assert_code(
        archive(t, tr.treatment_id.clone(), tr.etag.clone()).await,
        Code::Aborted,
        "the etag before archiving",
    );
    // An archived treatment is still read by its owner only.
    assert_eq!(get(&mut c, t, &tr.treatment_id).await, archived);
    assert_code(
        c.get_treatment(req(
            stranger,
            GetTreatmentRequest {
                treatment_id: tr.treatment_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
        "another tenant's archived treatment",
    );
    s.stop().await;
}

#[tokio::test]
async fn list_treatments_refuses_bad_sizes_and_tokens() {
    let s = start().await;
    let (t, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let mut names = Vec::new();
    for name in ["A", "B", "C"] {
        names.push(create(&mut c, t, valid(name)).await.treatment_id);
    }
    for name in ["X", "Y"] {
        create(&mut c, stranger, valid(name)).await;
    }
    c.archive_treatment(req(
        t,
        ArchiveTreatmentRequest {
            treatment_id: names[2].clone(),
            etag: String::new(),
        },
    ))
    .await
    .expect_answer("archived");
    let lc = s.client();
    let list = move |tenant: Uuid, page_size: i32, page_token: String, include_archived: bool| {
        let mut c = lc.clone();
        async move {
            c.list_treatments(req(
                tenant,
                ListTreatmentsRequest {
                    page_size,
                    page_token,
                    include_archived,
                },
            ))
            .await
        }
    };

    for size in [-1, -1000, i32::MIN] {
        for token in ["", FORGED_TOKEN] {
            assert_violations(
                list(t, size, token.into(), false).await,
                &["page_size"],
                &format!("page_size {size}"),
            );
        }
    }
    let first = list(t, 1, String::new(), false)
        .await
        .expect_answer("the first page");
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    let mut bad = forged_tokens(&token);
    bad.extend(MALFORMED_IDS.iter().map(|s| s.to_string()));
    for b in bad {
        let case = format!("page_token {}", brief(&b));
        assert_violations(list(t, 1, b, false).await, &["page_token"], &case);
    }
    // A token is for the request that issued it: not for other filters,
    // nor another tenant.
    assert_violations(
        list(t, 1, token.clone(), true).await,
        &["page_token"],
        "a token of the active ones, with archived ones",
    );
    let with_archived = list(t, 1, String::new(), true)
        .await
        .expect_answer("with archived")
        .next_page_token;
    assert_violations(
        list(t, 1, with_archived, false).await,
        &["page_token"],
        "a token with archived ones, of the active ones",
    );
    assert_violations(
        list(stranger, 1, token.clone(), false).await,
        &["page_token"],
        "another tenant's token",
    );
    // The genuine tokens walk every active treatment once, by name.
    let mut seen: Vec<String> = first.treatments.iter().map(|t| t.name.clone()).collect();
    let mut next = token;
    while !next.is_empty() {
        let page = list(t, 1, next, false).await.expect_answer("a page");
        seen.extend(page.treatments.iter().map(|t| t.name.clone()));
        next = page.next_page_token;
    }
    assert_eq!(seen, ["A", "B"]);
    // A page size beyond the maximum is the maximum.
    let all = list(t, i32::MAX, String::new(), true)
        .await
        .expect_answer("the largest page");
    assert_eq!(all.treatments.len(), 3);
    assert!(all.next_page_token.is_empty());
    s.stop().await;
}
