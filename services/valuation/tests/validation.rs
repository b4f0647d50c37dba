//! Refusals over real gRPC: INVALID_ARGUMENT with one field violation per
//! problem and nothing written, FAILED_PRECONDITION, NOT_FOUND,
//! UNAUTHENTICATED; FitModel idempotency and activation rules.

mod common;

use chrono::{Duration, Utc};
use common::*;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_every_violation_and_nothing_written() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();

    let mut bad = vec![summary(1, 5.0, 10.0, 3.0); 3];
    bad[0].customer_id = "nope".into();
    bad[1].recency = 11.0;
    bad[2] = summary(0, 2.0, 10.0, -1.0);
    let err = v
        .fit_model(req(
            tenant,
            FitModelRequest {
                kind: 0,
                calibration_end_time: None,
                period_unit: 0,
                holdout_end_time: None,
                currency_code: "euro".into(),
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::Cohort("2024-01".into())),
                }),
                inline_summaries: bad,
                options: Some(FitOptions {
                    activate_on_success: false,
                    max_iterations: 100_001,
                }),
                request_id: "x".repeat(129),
                calibration_end_date: String::new(),
                holdout_end_date: "1997-02-30".into(),
                ..Default::default()
            },
        ))
        .await
        .refused(Code::InvalidArgument);
    let fields = violated_fields(&err);
    for f in [
        "kind",
        "calibration_end_time",
        "holdout_end_date",
        "period_unit",
        "scope",
        "inline_summaries[0].customer_id",
        "inline_summaries[1].recency",
        "inline_summaries[2].recency",
        "inline_summaries[2].monetary_value",
        "currency_code",
        "options.max_iterations",
        "request_id",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }

    // Exported data: no future calibration end, a valid cohort and segment.
    let future = ts(Utc::now() + Duration::days(2));
    let err = v
        .fit_model(req(
            tenant,
            FitModelRequest {
                kind: ModelKind::BgNbd as i32,
                calibration_end_time: Some(future),
                period_unit: PeriodUnit::Day as i32,
                holdout_end_time: Some(ts(Utc::now() - Duration::days(400))),
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::Cohort("2024-13".into())),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["calibration_end_time", "scope.cohort"],
        "{err:?}"
    );
    let err = v
        .fit_model(req(
            tenant,
            FitModelRequest {
                kind: ModelKind::BgNbd as i32,
                calibration_end_time: Some(ts(Utc::now() - Duration::days(10))),
                period_unit: PeriodUnit::Day as i32,
                holdout_end_time: Some(ts(Utc::now() - Duration::days(20))),
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::SegmentId("seg".into())),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["holdout_end_time", "scope.segment_id"]
    );
    // A cohort starting after the calibration end.
    let err = v
        .fit_model(req(
            tenant,
            FitModelRequest {
                kind: ModelKind::BgNbd as i32,
                calibration_end_time: Some(ts(Utc::now() - Duration::days(800))),
                period_unit: PeriodUnit::Day as i32,
                scope: Some(ModelScope {
                    restriction: Some(model_scope::Restriction::Cohort(
                        Utc::now().format("%Y-%m").to_string(),
                    )),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["scope.cohort"]);
    // Several currencies inline without a currency_code.
    let mut mixed = data();
    mixed[3].currency_code = "USD".into();
    let err = v
        .fit_model(req(tenant, inline_fit(ModelKind::GammaGamma, mixed)))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["currency_code"]);
    // Holdout figures without a holdout end.
    let mut holdout = data();
    holdout[0].holdout_purchases = 2;
    let err = v
        .fit_model(req(tenant, inline_fit(ModelKind::BgNbd, holdout)))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["inline_summaries[0].holdout_purchases"]
    );
    // Nothing was written.
    assert_eq!(s.count("SELECT count(*) FROM models").await, 0);
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, 0);

    // Too little data.
    let err = v
        .fit_model(req(
            tenant,
            inline_fit(ModelKind::BgNbd, data()[..9].to_vec()),
        ))
        .await
        .refused(Code::FailedPrecondition);
    assert!(err.message().contains("9 customers"), "{}", err.message());
    let err = v
        .fit_model(req(
            tenant,
            inline_fit(ModelKind::GammaGamma, data()[..11].to_vec()),
        ))
        .await
        .refused(Code::FailedPrecondition);
    assert!(
        err.message().contains("8 repeat customers"),
        "{}",
        err.message()
    );
    // Exported data for a tenant without purchases: no currency to choose.
    let err = v
        .fit_model(req(
            tenant,
            FitModelRequest {
                kind: ModelKind::GammaGamma as i32,
                calibration_end_time: Some(ts(Utc::now())),
                period_unit: PeriodUnit::Week as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // An unknown segment.
    v.fit_model(req(
        tenant,
        FitModelRequest {
            kind: ModelKind::BgNbd as i32,
            calibration_end_time: Some(ts(Utc::now())),
            period_unit: PeriodUnit::Week as i32,
            scope: Some(ModelScope {
                restriction: Some(model_scope::Restriction::SegmentId(
                    Uuid::new_v4().to_string(),
                )),
            }),
            ..Default::default()
        },
    ))
    .await
    .refused(Code::NotFound);
    assert_eq!(s.count("SELECT count(*) FROM models").await, 0);

    // Other methods.
    let err = v
        .get_model(req(
            tenant,
            GetModelRequest {
                model_id: "x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["model_id"]);
    v.get_model(req(
        tenant,
        GetModelRequest {
            model_id: Uuid::new_v4().to_string(),
        },
    ))
    .await
    .refused(Code::NotFound);
    let err = v
        .list_models(req(
            tenant,
            ListModelsRequest {
                page_size: -1,
                page_token: "forged".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size"]);
    let err = v
        .list_models(req(
            tenant,
            ListModelsRequest {
                page_token: "forged".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
    let err = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                transaction_model_kind: ModelKind::GammaGamma as i32,
                horizon_periods: -1,
                discount_rate: Some(1.0),
                margin_ratio: Some(0.0),
                annual_discount_rate: Some(-1.0),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&err),
        [
            "transaction_model_kind",
            "horizon_periods",
            "discount_rate",
            "annual_discount_rate",
            "annual_discount_rate",
            "margin_ratio"
        ]
    );
    let err = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .refused(Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "no active transaction model (BG/NBD, Pareto/NBD, MBG/NBD, BG/BB or sBG)"
    );
    let err = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                transaction_model_kind: ModelKind::MbgNbd as i32,
                ..Default::default()
            },
        ))
        .await
        .refused(Code::FailedPrecondition);
    assert_eq!(err.message(), "no active MBG/NBD model");
    let err = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                customer_ids: vec![Uuid::new_v4().to_string(), "bad".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["customer_ids[1]"]);
    let err = v
        .batch_get_customer_values(req(tenant, BatchGetCustomerValuesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["customer_ids"]);
    let err = v
        .rank_customers(req(
            tenant,
            RankCustomersRequest {
                top_n: -1,
                page_size: 1001,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["top_n", "page_size"]);
    let err = v
        .get_value_concentration(req(
            tenant,
            GetValueConcentrationRequest {
                lorenz_intervals: 5,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["lorenz_intervals"]);
    let now = Utc::now();
    let err = v
        .get_cohort_report(req(
            tenant,
            GetCohortReportRequest {
                start_time: Some(ts(now)),
                end_time: Some(ts(now - Duration::days(1))),
                currency_code: "eur".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["end_time", "currency_code"]);
    let err = v
        .get_cohort_report(req(
            tenant,
            GetCohortReportRequest {
                start_time: Some(ts(now - Duration::days(366 * 21))),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["start_time"]);
    let err = v
        .get_segment_value(req(
            tenant,
            GetSegmentValueRequest {
                segment_id: "s".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["segment_id"]);
    let err = v
        .get_relationship_scores(req(
            tenant,
            GetRelationshipScoresRequest {
                customer_id: "c".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["customer_id"]);
    let err = v
        .watch_changes(req(
            tenant,
            WatchChangesRequest {
                after_sequence: -1,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["after_sequence"]);
    // No tenant on the call.
    v.get_model(tonic::Request::new(GetModelRequest {
        model_id: Uuid::new_v4().to_string(),
    }))
    .await
    .refused(Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fits_are_idempotent_and_activation_follows_the_rules() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let request = FitModelRequest {
        request_id: "fit-1".into(),
        ..inline_fit(ModelKind::BgNbd, data())
    };
    let first = fitted(&mut v, tenant, request.clone()).await;
    let again = fitted(&mut v, tenant, request.clone()).await;
    assert_eq!(first.model_id, again.model_id);
    assert_eq!(s.count("SELECT count(*) FROM models").await, 1);
    v.fit_model(req(
        tenant,
        FitModelRequest {
            period_unit: PeriodUnit::Day as i32,
            ..request.clone()
        },
    ))
    .await
    .refused(Code::AlreadyExists);

    // A fit stopped by its iteration cap is stored but cannot be activated.
    let capped = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            options: Some(FitOptions {
                activate_on_success: true,
                max_iterations: 2,
            }),
            ..inline_fit(ModelKind::BgNbd, data())
        },
    )
    .await;
    assert!(!capped.converged && !capped.active);
    assert_eq!(capped.version, 2);
    assert_eq!(capped.optimizer_message, "maximum iterations (2) reached");
    v.activate_model(req(
        tenant,
        ActivateModelRequest {
            model_id: capped.model_id.clone(),
        },
    ))
    .await
    .refused(Code::FailedPrecondition);

    // Activation: the first has no predecessor, the second replaces it,
    // and activating the active model changes nothing.
    assert!(first.converged, "{first:?}");
    let a = v
        .activate_model(req(
            tenant,
            ActivateModelRequest {
                model_id: first.model_id.clone(),
            },
        ))
        .await
        .answer();
    assert!(a.model.unwrap().active);
    assert!(a.previous_model_id.is_empty());
    let second = fitted(&mut v, tenant, inline_fit(ModelKind::BgNbd, data())).await;
    let b = v
        .activate_model(req(
            tenant,
            ActivateModelRequest {
                model_id: second.model_id.clone(),
            },
        ))
        .await
        .answer();
    assert_eq!(b.previous_model_id, first.model_id);
    let events_before = s.count("SELECT count(*) FROM outbox").await;
    let c = v
        .activate_model(req(
            tenant,
            ActivateModelRequest {
                model_id: second.model_id.clone(),
            },
        ))
        .await
        .answer();
    assert!(c.previous_model_id.is_empty());
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, events_before);
    let got = v
        .get_model(req(
            tenant,
            GetModelRequest {
                model_id: first.model_id.clone(),
            },
        ))
        .await
        .answer()
        .model
        .unwrap();
    assert!(!got.active && got.activate_time.is_some());
    let active = v
        .list_models(req(
            tenant,
            ListModelsRequest {
                kind: ModelKind::BgNbd as i32,
                active_only: true,
                ..Default::default()
            },
        ))
        .await
        .answer()
        .models;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].model_id, second.model_id);
    // Scoring without a spend model names the missing one.
    let err = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "no active Gamma-Gamma model");
    let err = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                transaction_model_kind: ModelKind::ParetoNbd as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "no active Pareto/NBD model");
}
