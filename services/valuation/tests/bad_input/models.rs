//! FitModel, model reads, activation and listing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fit_model_refuses_every_bad_field_and_stores_nothing() {
    let s = start(false).await;
    let mut v = s.valuation();
    let t = Uuid::new_v4();
    let base = || inline_fit(ModelKind::BgNbd);

    let mut cases: Vec<(FitModelRequest, String)> = Vec::new();
    for kind in [999, -1, 7] {
        cases.push((FitModelRequest { kind, ..base() }, "kind".into()));
    }
    for unit in [0, 999, -1] {
        cases.push((
            FitModelRequest {
                period_unit: unit,
                ..base()
            },
            "period_unit".into(),
        ));
    }
    for bad in broken_times() {
        cases.push((
            FitModelRequest {
                calibration_end_time: bad,
                ..base()
            },
            "calibration_end_time".into(),
        ));
        cases.push((
            FitModelRequest {
                holdout_end_time: bad,
                ..base()
            },
            "holdout_end_time".into(),
        ));
    }
    // Windows by date: malformed days, both forms at once, a holdout day
    // without a calibration day or not after it, a day not yet over for
    // exported data.
    let day = |c: &str, h: &str| FitModelRequest {
        calibration_end_time: None,
        calibration_end_date: c.into(),
        holdout_end_date: h.into(),
        ..base()
    };
    for bad in [
        "1997-9-30",
        "1997-02-30",
        "x",
        TEXT,
        "0000-01-01",
        "+1997-09-30",
        "1997-09-30T00:00:00Z",
        "9999-12-31",
        " 1997-09-30",
    ] {
        cases.push((day(bad, ""), "calibration_end_date".into()));
        cases.push((day("1997-09-30", bad), "holdout_end_date".into()));
    }
    cases.push((
        FitModelRequest {
            calibration_end_date: "1997-09-30".into(),
            ..base()
        },
        "calibration_end_date".into(),
    ));
    cases.push((
        FitModelRequest {
            holdout_end_date: "1998-06-30".into(),
            ..base()
        },
        "holdout_end_date".into(),
    ));
    cases.push((
        FitModelRequest {
            holdout_end_time: at(Utc::now().timestamp(), 0),
            ..day("1997-09-30", "1998-06-30")
        },
        "holdout_end_date".into(),
    ));
    for h in ["1997-09-30", "1997-09-29"] {
        cases.push((day("1997-09-30", h), "holdout_end_date".into()));
    }
    let today = Utc::now().date_naive();
    for d in [today, today + Duration::days(1)] {
        let mut exported = day(&d.to_string(), "");
        exported.inline_summaries.clear();
        cases.push((exported, "calibration_end_date".into()));
        let mut exported = day("2020-01-01", &d.to_string());
        exported.inline_summaries.clear();
        cases.push((exported, "holdout_end_date".into()));
    }
    // Exported data cannot end in the far future.
    cases.push((
        FitModelRequest {
            inline_summaries: vec![],
            calibration_end_time: at(YEAR_9999_END, 0),
            ..base()
        },
        "calibration_end_time".into(),
    ));
    // Holdout not after calibration, down to year 1.
    for h in [Utc::now().timestamp() - 86_400, YEAR_1] {
        cases.push((
            FitModelRequest {
                holdout_end_time: at(h, 0),
                ..base()
            },
            "holdout_end_time".into(),
        ));
    }
    // Scope.
    for id in BAD_IDS {
        cases.push((
            FitModelRequest {
                inline_summaries: vec![],
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::SegmentId(id.into())),
                }),
                ..base()
            },
            "scope.segment_id".into(),
        ));
    }
    for cohort in [
        "",
        "2024",
        "2024-00",
        "2024-13",
        "2024-Q0",
        "2024-Q5",
        "0000-01",
        "99999-01",
        "../x",
        "2024-01\0",
        TEXT,
    ] {
        cases.push((
            FitModelRequest {
                inline_summaries: vec![],
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::Cohort(cohort.into())),
                }),
                ..base()
            },
            "scope.cohort".into(),
        ));
    }
    // Inline summaries: each bad value names its index and field.
    type Spoil = fn(&mut PurchaseHistorySummary);
    let spoilers: Vec<(Spoil, &str)> = vec![
        (|s| s.customer_id = String::new(), "customer_id"),
        (|s| s.customer_id = "1 OR 1=1".into(), "customer_id"),
        (|s| s.customer_id = "\0".into(), "customer_id"),
        (|s| s.frequency = -1, "frequency"),
        (|s| s.frequency = i64::MIN, "frequency"),
        (|s| s.recency = f64::NAN, "recency"),
        (|s| s.recency = f64::INFINITY, "recency"),
        (|s| s.recency = -1.0, "recency"),
        (|s| s.t = f64::NAN, "t"),
        (|s| s.t = f64::NEG_INFINITY, "t"),
        (|s| s.t = -0.5, "t"),
        (|s| s.monetary_value = f64::NAN, "monetary_value"),
        (|s| s.monetary_value = f64::INFINITY, "monetary_value"),
        (|s| s.monetary_value = f64::NEG_INFINITY, "monetary_value"),
        (|s| s.monetary_value = -0.01, "monetary_value"),
        (|s| s.holdout_purchases = -1, "holdout_purchases"),
        (|s| s.holdout_value = f64::NAN, "holdout_purchases"),
        (
            |s| {
                s.first_purchase_time = Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            },
            "first_purchase_time",
        ),
        (
            |s| {
                s.first_purchase_time = Some(Timestamp {
                    seconds: i64::MAX / 2,
                    nanos: 0,
                })
            },
            "first_purchase_time",
        ),
    ];
    for (spoil, field) in spoilers {
        let mut r = base();
        spoil(&mut r.inline_summaries[7]);
        cases.push((r, format!("inline_summaries[7].{field}")));
    }
    // A summary currency that is no ISO 4217 code, in every summary of a
    // Gamma-Gamma fit (where it would become the model's currency).
    for currency in ["E\0R", "eur", TEXT, "EURO"] {
        let mut r = inline_fit(ModelKind::GammaGamma);
        for s in &mut r.inline_summaries {
            s.currency_code = currency.into();
        }
        cases.push((r, "inline_summaries[0].currency_code".into()));
    }
    // BG/BB and sBG: every summary carries a consistent opportunity
    // history, and the windows end where a calendar period starts.
    let discrete = |kind: ModelKind| {
        let mut r = inline_fit(kind);
        r.calibration_end_time = None;
        r.calibration_end_date = "2024-12-31".into();
        r.period_unit = PeriodUnit::Year as i32;
        for s in &mut r.inline_summaries {
            s.opportunities = Some(OpportunityHistory {
                opportunities: 6,
                frequency: 2,
                recency: 4,
                renewals: 1,
                ..Default::default()
            });
        }
        r
    };
    type SpoilOpportunities = fn(&mut OpportunityHistory);
    let bad_histories: Vec<(SpoilOpportunities, &str)> = vec![
        (|o| o.opportunities = -1, "opportunities"),
        (|o| o.opportunities = 10_001, "opportunities"),
        (|o| o.opportunities = i64::MIN, "opportunities"),
        (|o| o.frequency = 7, "frequency"),
        (|o| o.frequency = -1, "frequency"),
        (|o| o.recency = 1, "recency"),
        (|o| o.recency = 7, "recency"),
        (
            |o| {
                o.frequency = 0;
                o.renewals = 0;
            },
            "recency",
        ),
        (|o| o.renewals = 3, "renewals"),
        (|o| o.renewals = -1, "renewals"),
        (|o| o.holdout_opportunities = 2, "holdout_opportunities"),
        (|o| o.holdout_frequency = 1, "holdout_opportunities"),
        (|o| o.holdout_opportunities = -5, "holdout_opportunities"),
    ];
    for kind in [ModelKind::BgBb, ModelKind::Sbg] {
        for (spoil, field) in &bad_histories {
            let mut r = discrete(kind);
            spoil(r.inline_summaries[3].opportunities.as_mut().unwrap());
            cases.push((r, format!("inline_summaries[3].opportunities.{field}")));
        }
        let mut r = discrete(kind);
        r.inline_summaries[5].opportunities = None;
        cases.push((r, "inline_summaries[5].opportunities".into()));
        for (day, unit) in [
            ("2024-06-30", PeriodUnit::Year),
            ("2024-12-30", PeriodUnit::Year),
            ("2024-05-30", PeriodUnit::Month),
            ("2024-12-31", PeriodUnit::Week),
        ] {
            let mut r = discrete(kind);
            r.calibration_end_date = day.into();
            r.period_unit = unit as i32;
            cases.push((r, "calibration_end_date".into()));
        }
        let mut r = discrete(kind);
        r.holdout_end_date = "2025-06-30".into();
        cases.push((r, "holdout_end_date".into()));
        let mut r = discrete(kind);
        r.calibration_end_date = String::new();
        r.calibration_end_time = Some(Timestamp {
            seconds: 1_735_689_600 + 1,
            nanos: 0,
        });
        cases.push((r, "calibration_end_time".into()));
        // Holdout figures without a holdout window.
        let mut r = discrete(kind);
        r.inline_summaries[2]
            .opportunities
            .as_mut()
            .unwrap()
            .holdout_opportunities = 1;
        cases.push((
            r,
            "inline_summaries[2].opportunities.holdout_opportunities".into(),
        ));
    }
    let mut too_many = base();
    too_many.inline_summaries = (0..50_001).map(|_| summary(1, 1.0, 2.0, 5.0)).collect();
    cases.push((too_many, "inline_summaries".into()));
    for currency in ["eur", "EURO", "E", "E\0R", TEXT, "€"] {
        cases.push((
            FitModelRequest {
                currency_code: currency.into(),
                ..base()
            },
            "currency_code".into(),
        ));
    }
    for iterations in [-1, i32::MIN, 100_001, i32::MAX] {
        cases.push((
            FitModelRequest {
                options: Some(FitOptions {
                    activate_on_success: true,
                    max_iterations: iterations,
                }),
                ..base()
            },
            "options.max_iterations".into(),
        ));
    }
    for zone in ["Mars/Olympus", "utc+2", "Europe/", TEXT, "\0"] {
        cases.push((
            FitModelRequest {
                time_zone: zone.into(),
                ..base()
            },
            "time_zone".into(),
        ));
    }
    for key in [
        "k".repeat(129),
        "😀".repeat(129),
        "a\0b".into(),
        "\0".into(),
    ] {
        cases.push((
            FitModelRequest {
                request_id: key,
                ..base()
            },
            "request_id".into(),
        ));
    }
    for (r, field) in cases {
        let what: String = format!(
            "{:?}",
            (
                r.kind,
                r.period_unit,
                &r.scope,
                &r.request_id,
                &r.currency_code
            )
        )
        .chars()
        .take(300)
        .collect();
        let e = match v.fit_model(req(t, r)).await {
            Ok(m) => panic!("{field} ({what}): fitted {:?}", m.into_inner().model),
            Err(e) => e,
        };
        assert_eq!(e.code(), Code::InvalidArgument, "{field} ({what}): {e:?}");
        let fields = violated_fields(&e);
        assert!(
            fields.contains(&field),
            "{what}: no violation on {field} among {fields:?}"
        );
    }
    assert!(models(&s, t).await.is_empty());
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, 0);

    // The boundaries are accepted: 100,000 iterations, a 128-character key,
    // a hostile but printable key, a holdout in the far future for inline data.
    let ok = v
        .fit_model(req(
            t,
            FitModelRequest {
                options: Some(FitOptions {
                    activate_on_success: false,
                    max_iterations: 100_000,
                }),
                request_id: "k".repeat(128),
                ..base()
            },
        ))
        .await
        .expect_answer("boundary values are valid")
        .model
        .expect("a model");
    let keyed = FitModelRequest {
        request_id: TEXT.into(),
        ..base()
    };
    let first = v
        .fit_model(req(t, keyed.clone()))
        .await
        .expect_answer("a hostile but printable key is valid")
        .model
        .expect("a model");
    let retried = v
        .fit_model(req(t, keyed.clone()))
        .await
        .expect_answer("the retry answers")
        .model
        .expect("a model");
    assert_eq!(retried.model_id, first.model_id);
    assert_ne!(first.model_id, ok.model_id);
    assert_eq!(models(&s, t).await.len(), 2);
    // The discrete models' boundaries: a year that starts the window (the
    // date 2024-12-31 ends on 1 January 2025), a 10,000-period history.
    let mut long = discrete(ModelKind::Sbg);
    long.inline_summaries[0].opportunities = Some(OpportunityHistory {
        opportunities: 10_000,
        frequency: 10_000,
        recency: 10_000,
        renewals: 10_000,
        ..Default::default()
    });
    for r in [discrete(ModelKind::BgBb), long] {
        v.fit_model(req(t, r))
            .await
            .expect_answer("a consistent discrete fit is valid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_models_refuses_every_bad_field_and_stores_nothing() {
    let s = start(false).await;
    let mut v = s.valuation();
    let t = Uuid::new_v4();
    let base = || {
        let f = inline_fit(ModelKind::BgNbd);
        CompareModelsRequest {
            calibration_end_time: f.calibration_end_time,
            period_unit: f.period_unit,
            inline_summaries: f.inline_summaries,
            ..Default::default()
        }
    };
    let mut cases: Vec<(CompareModelsRequest, String)> = Vec::new();
    for kinds in [
        vec![ModelKind::GammaGamma as i32],
        vec![999],
        vec![-1],
        vec![0],
        vec![5],
        vec![ModelKind::BgNbd as i32, 7],
    ] {
        let at = kinds.len() - 1;
        cases.push((
            CompareModelsRequest { kinds, ..base() },
            format!("kinds[{at}]"),
        ));
    }
    let twice = vec![ModelKind::MbgNbd as i32, ModelKind::MbgNbd as i32];
    cases.push((
        CompareModelsRequest {
            kinds: twice,
            ..base()
        },
        "kinds[1]".into(),
    ));
    for iterations in [-1, i32::MIN, 100_001, i32::MAX] {
        cases.push((
            CompareModelsRequest {
                max_iterations: iterations,
                ..base()
            },
            "max_iterations".into(),
        ));
    }
    for unit in [0, 999, -1] {
        cases.push((
            CompareModelsRequest {
                period_unit: unit,
                ..base()
            },
            "period_unit".into(),
        ));
    }
    for bad in broken_times() {
        cases.push((
            CompareModelsRequest {
                calibration_end_time: bad,
                ..base()
            },
            "calibration_end_time".into(),
        ));
        cases.push((
            CompareModelsRequest {
                holdout_end_time: bad,
                ..base()
            },
            "holdout_end_time".into(),
        ));
    }
    cases.push((
        CompareModelsRequest {
            calibration_end_time: None,
            ..base()
        },
        "calibration_end_time".into(),
    ));
    cases.push((
        CompareModelsRequest {
            calibration_end_time: None,
            calibration_end_date: "1997-02-30".into(),
            ..base()
        },
        "calibration_end_date".into(),
    ));
    cases.push((
        CompareModelsRequest {
            holdout_end_date: "1998-06-30".into(),
            ..base()
        },
        "holdout_end_date".into(),
    ));
    let mut scoped = base();
    scoped.scope = Some(ModelScope {
        restriction: Some(model_scope::Restriction::SegmentId(
            Uuid::new_v4().to_string(),
        )),
    });
    cases.push((scoped, "scope".into()));
    let mut exported = base();
    exported.inline_summaries.clear();
    exported.scope = Some(ModelScope {
        restriction: Some(model_scope::Restriction::Cohort("1997-13".into())),
    });
    cases.push((exported, "scope.cohort".into()));
    for (i, bad) in [
        summary(-1, 0.0, 2.0, 5.0),
        summary(1, f64::NAN, 2.0, 5.0),
        summary(1, 3.0, 2.0, 5.0),
        summary(0, 1.0, 2.0, 5.0),
        summary(1, 1.0, f64::INFINITY, 5.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = base();
        r.inline_summaries[3] = bad;
        let field = ["frequency", "recency", "recency", "recency", "t"][i];
        cases.push((r, format!("inline_summaries[3].{field}")));
    }
    for (r, field) in cases {
        let what = format!(
            "{:?}",
            (&r.kinds, r.max_iterations, &r.scope, r.period_unit)
        );
        let e = match v.compare_models(req(t, r)).await {
            Ok(c) => panic!("{field} ({what}): compared {:?}", c.into_inner().models),
            Err(e) => e,
        };
        assert_eq!(e.code(), Code::InvalidArgument, "{field} ({what}): {e:?}");
        let fields = violated_fields(&e);
        assert!(
            fields.contains(&field),
            "{what}: no violation on {field} among {fields:?}"
        );
    }
    // Too few customers is a precondition, named with the count.
    let mut few = base();
    few.inline_summaries.truncate(9);
    let e = v
        .compare_models(req(t, few))
        .await
        .refused(Code::FailedPrecondition);
    assert!(e.message().contains("9 customers"), "{}", e.message());
    // The boundaries are accepted, and nothing is stored.
    let ok = v
        .compare_models(req(
            t,
            CompareModelsRequest {
                kinds: vec![ModelKind::MbgNbd as i32],
                max_iterations: 100_000,
                ..base()
            },
        ))
        .await
        .expect_answer("boundary values are valid");
    assert_eq!(ok.models.len(), 1);
    assert_eq!(ok.recommended_kind, ModelKind::MbgNbd as i32);
    assert!(models(&s, t).await.is_empty());
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_reads_activation_and_listing_refuse_bad_ids_tokens_and_other_tenants() {
    let s = start(false).await;
    let mut v = s.valuation();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut a_models = Vec::new();
    for _ in 0..3 {
        let m = v
            .fit_model(req(a, inline_fit(ModelKind::BgNbd)))
            .await
            .expect_answer("a fit")
            .model
            .expect("a model");
        assert!(m.converged, "{m:?}");
        a_models.push(m.model_id);
    }
    v.activate_model(req(
        a,
        ActivateModelRequest {
            model_id: a_models[0].clone(),
        },
    ))
    .await
    .expect("activated");
    for _ in 0..2 {
        v.fit_model(req(b, inline_fit(ModelKind::BgNbd)))
            .await
            .expect("a fit");
    }
    let a_before = models(&s, a).await;
    let b_before = models(&s, b).await;
    let events_before = s.count("SELECT count(*) FROM outbox").await;

    for id in BAD_IDS {
        invalid(
            v.get_model(req(
                a,
                GetModelRequest {
                    model_id: id.into(),
                },
            ))
            .await,
            "model_id",
        );
        invalid(
            v.activate_model(req(
                a,
                ActivateModelRequest {
                    model_id: id.into(),
                },
            ))
            .await,
            "model_id",
        );
    }
    let unknown = Uuid::new_v4().to_string();
    failed(
        v.get_model(req(
            a,
            GetModelRequest {
                model_id: unknown.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    failed(
        v.activate_model(req(a, ActivateModelRequest { model_id: unknown }))
            .await,
        Code::NotFound,
    );
    // Another tenant's models: NOT_FOUND, never the model, never activated.
    for id in &a_models {
        failed(
            v.get_model(req(
                b,
                GetModelRequest {
                    model_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
        failed(
            v.activate_model(req(
                b,
                ActivateModelRequest {
                    model_id: id.clone(),
                },
            ))
            .await,
            Code::NotFound,
        );
    }
    assert!(
        models(&s, b)
            .await
            .iter()
            .all(|m| !a_models.contains(&m.model_id))
    );

    // ListModels: filters and sizes.
    for kind in [999, -1, 7] {
        invalid(
            v.list_models(req(
                a,
                ListModelsRequest {
                    kind,
                    ..Default::default()
                },
            ))
            .await,
            "kind",
        );
    }
    for size in [-1, i32::MIN, 1001, i32::MAX] {
        invalid(
            v.list_models(req(
                a,
                ListModelsRequest {
                    page_size: size,
                    ..Default::default()
                },
            ))
            .await,
            "page_size",
        );
    }
    // ListModels: tokens of another tenant, of other filters, and junk.
    let token = |t: Uuid, kind: ModelKind, active_only: bool| {
        let mut v = s.valuation();
        async move {
            v.list_models(req(
                t,
                ListModelsRequest {
                    kind: kind as i32,
                    active_only,
                    page_size: 1,
                    page_token: String::new(),
                },
            ))
            .await
            .expect_answer("a first page")
            .next_page_token
        }
    };
    let genuine = token(a, ModelKind::Unspecified, false).await;
    let of_kind = token(a, ModelKind::BgNbd, false).await;
    let of_b = token(b, ModelKind::Unspecified, false).await;
    assert!(!genuine.is_empty() && !of_kind.is_empty() && !of_b.is_empty());
    let second = v
        .list_models(req(
            a,
            ListModelsRequest {
                page_size: 1,
                page_token: genuine.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_answer("the genuine token pages on");
    assert_eq!(second.models.len(), 1);
    let mut bad = hostile::forged_tokens(&genuine);
    bad.extend([of_kind.clone(), of_b.clone()]);
    for token in bad {
        invalid(
            v.list_models(req(
                a,
                ListModelsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await,
            "page_token",
        );
        // The same token with other filters.
        invalid(
            v.list_models(req(
                a,
                ListModelsRequest {
                    page_size: 1,
                    page_token: token,
                    active_only: true,
                    ..Default::default()
                },
            ))
            .await,
            "page_token",
        );
    }
    // Nothing changed for either tenant.
    assert_eq!(models(&s, a).await, a_before);
    assert_eq!(models(&s, b).await, b_before);
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, events_before);
}
