//! End to end over real gRPC: a generated history ingested through the
//! interaction service, models fitted (from the export and inline), scored,
//! and values, rankings, concentration, cohorts, segment value and the
//! change feed read back; background re-scoring after a new purchase;
//! tenant isolation.

mod common;

use std::collections::HashMap;

use chrono::{Duration, DurationRound, Utc};
use common::*;
use futures::StreamExt;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fit_score_and_read_values_back_over_grpc() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let today = Utc::now().duration_trunc(Duration::days(1)).unwrap();
    let customers = synthetic(3000, 11, today);
    let interactions: Vec<_> = customers.iter().flat_map(|c| c.purchases.clone()).collect();
    let started = std::time::Instant::now();
    record_all(&s, tenant, interactions.clone()).await;
    eprintln!(
        "ingested {} interactions in {:?}",
        interactions.len(),
        started.elapsed()
    );

    // The valuation service has followed the interaction feed to the end.
    eventually("the purchases to reach the valuation service", || {
        let mut v = s.valuation();
        async move {
            let r = v
                .get_cohort_report(req(tenant, GetCohortReportRequest::default()))
                .await
                .answer();
            r.cohorts.iter().map(|c| c.customer_count).sum::<i64>() == 3000
        }
    })
    .await;
    let queued = s.count("SELECT count(*) FROM rescore_queue").await;
    assert_eq!(queued, 3000, "every customer waits for the first run");

    // Watch the feed from the start.
    let mut feed = v
        .watch_changes(req(
            tenant,
            WatchChangesRequest {
                after_sequence: 0,
                ..Default::default()
            },
        ))
        .await
        .answer();

    // BG/NBD and Gamma-Gamma from the interaction export, activated on success.
    let calibration = ts(Utc::now());
    let fit = |kind: ModelKind| weekly_fit(kind, calibration);
    let started = std::time::Instant::now();
    let bg = fitted(&mut v, tenant, fit(ModelKind::BgNbd)).await;
    eprintln!(
        "BG/NBD fit from the export in {:?}: {:?}",
        started.elapsed(),
        bg.parameters
    );
    assert!(bg.converged, "{bg:?}");
    assert!(bg.active);
    assert_eq!(bg.version, 1);
    assert_eq!(bg.customer_count, 3000);
    assert_eq!(bg.data_source, DataSource::InteractionExport as i32);
    assert!(bg.log_likelihood.is_finite() && bg.log_likelihood < 0.0);
    assert!(bg.parameters.iter().all(|p| p.standard_error.is_some()));
    // Recovered within sampling error of 3,000 customers.
    assert!((param(&bg, "r") - TRUTH.r).abs() < 0.08, "{bg:?}");
    assert!((param(&bg, "alpha") - TRUTH.alpha).abs() < 1.6, "{bg:?}");
    let mean_dropout = param(&bg, "a") / (param(&bg, "a") + param(&bg, "b"));
    assert!(
        (mean_dropout - TRUTH.a / (TRUTH.a + TRUTH.b)).abs() < 0.1,
        "{bg:?}"
    );

    let gg = fitted(&mut v, tenant, fit(ModelKind::GammaGamma)).await;
    assert!(gg.converged && gg.active, "{gg:?}");
    assert_eq!(gg.currency_code, "EUR");
    assert!(gg.excluded_customer_count > 0);
    let mean_spend = param(&gg, "p") * param(&gg, "gamma") / (param(&gg, "q") - 1.0);
    let true_mean = SPEND_TRUTH.p * SPEND_TRUTH.gamma / (SPEND_TRUTH.q - 1.0);
    assert!((mean_spend - true_mean).abs() / true_mean < 0.15, "{gg:?}");

    // A Pareto/NBD fit with a holdout: the last 8 weeks held out.
    let holdout_fit = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            kind: ModelKind::ParetoNbd as i32,
            calibration_end_time: Some(ts(today - Duration::weeks(8))),
            holdout_end_time: Some(ts(today)),
            period_unit: PeriodUnit::Week as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(!holdout_fit.active);
    let validation = holdout_fit.holdout_validation.clone().unwrap();
    assert!(!validation.rows.is_empty());
    assert!(validation.actual_total_purchases > 0);
    assert!(
        validation.total_purchases_error_percent.abs() < 50.0,
        "{validation:?}"
    );
    assert_eq!(
        holdout_fit.data_window.as_ref().unwrap().holdout_periods,
        8.0
    );

    // The CDNOW sample inline reproduces the published estimates.
    let cdnow = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            kind: ModelKind::BgNbd as i32,
            calibration_end_time: Some(calibration),
            period_unit: PeriodUnit::Week as i32,
            inline_summaries: cdnow_inline("USD"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(cdnow.data_source, DataSource::Inline as i32);
    assert_eq!(cdnow.version, 2);
    assert_eq!(cdnow.customer_count, 2357);
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        let got = param(&cdnow, name);
        assert!((got - published).abs() / published < 0.005, "{name}: {got}");
    }
    assert!((cdnow.log_likelihood - -9582.4).abs() < 0.1);
    let cdnow_gg = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            kind: ModelKind::GammaGamma as i32,
            calibration_end_time: Some(calibration),
            period_unit: PeriodUnit::Week as i32,
            inline_summaries: cdnow_inline("USD"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(cdnow_gg.customer_count, 946);
    assert_eq!(cdnow_gg.currency_code, "USD");
    for (name, published) in [("p", 6.25), ("q", 3.74), ("gamma", 15.44)] {
        let got = param(&cdnow_gg, name);
        assert!((got - published).abs() / published < 0.005, "{name}: {got}");
    }

    // The active models are the export fits.
    let active = v
        .list_models(req(
            tenant,
            ListModelsRequest {
                active_only: true,
                ..Default::default()
            },
        ))
        .await
        .answer();
    let mut active_ids: Vec<_> = active.models.iter().map(|m| m.model_id.clone()).collect();
    active_ids.sort();
    let mut want = vec![bg.model_id.clone(), gg.model_id.clone()];
    want.sort();
    assert_eq!(active_ids, want);
    // Paging: 5 models, 2 a page, newest first.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = v
            .list_models(req(
                tenant,
                ListModelsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .answer();
        seen.extend(page.models.into_iter().map(|m| m.model_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], cdnow_gg.model_id);
    assert_eq!(seen[4], bg.model_id);

    // Score.
    let started = std::time::Instant::now();
    let run = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                margin_ratio: Some(0.5),
                ..Default::default()
            },
        ))
        .await
        .answer();
    eprintln!(
        "scored {} customers in {:?}",
        run.scored_customer_count,
        started.elapsed()
    );
    assert_eq!(run.scored_customer_count, 3000);
    assert_eq!(run.deleted_customer_count, 0);
    assert_eq!(run.transaction_model_id, bg.model_id);
    assert_eq!(run.spend_model_id, gg.model_id);
    let settings = run.settings.unwrap();
    assert_eq!(settings.horizon_periods, 52);
    // Exactly 10 % a year, by default.
    let weekly = 1.1f64.powf(7.0 / 365.25) - 1.0;
    assert!((settings.discount_rate - weekly).abs() < 1e-15);
    assert!((settings.annual_discount_rate - 0.1).abs() < 1e-12);
    assert_eq!(settings.margin_ratio, 0.5);

    // One customer's value, against the models directly.
    let one = &customers[7];
    let value = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: one.customer.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    assert!((0.0..=1.0).contains(&value.p_alive));
    assert_eq!(value.clv.as_ref().unwrap().currency_code, "EUR");
    assert_eq!(value.frequency, one.purchases.len() as i64 - 1);
    let model = rapport_valuation::domain::bgnbd::BgNbd::from_slice(&[
        param(&bg, "r"),
        param(&bg, "alpha"),
        param(&bg, "a"),
        param(&bg, "b"),
    ]);
    let o = rapport_valuation::domain::Observation {
        frequency: value.frequency as f64,
        recency: value.recency,
        age: value.t,
    };
    assert!((model.p_alive(&o) - value.p_alive).abs() < 1e-9);
    assert!((model.expected_purchases(&o, 52.0).unwrap() - value.expected_purchases).abs() < 1e-9);
    // Historical value: 50 % of the purchases (no margin recorded).
    let spent: f64 = one.purchases.iter().map(|p| amount(&p.amount)).sum();
    assert!((amount(&value.historical_value) - spent * 0.5).abs() < 1e-6);

    // As of an instant: the history up to it, scored with the same run's
    // models and settings, not stored.
    let regular = customers
        .iter()
        .find(|c| c.purchases.len() >= 3)
        .expect("a customer with three purchases");
    let second = regular.purchases[1].occur_time.unwrap();
    let as_of = chrono::DateTime::from_timestamp(second.seconds + 3600, 0).unwrap();
    let then = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: regular.customer.to_string(),
                as_of: Some(ts(as_of)),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    assert_eq!(then.score_time, Some(ts(as_of)));
    assert_eq!(then.frequency, 1, "two purchase days before as_of");
    let first_day = regular.first.duration_trunc(Duration::days(1)).unwrap();
    let age = (as_of - first_day).num_seconds() as f64 / 86_400.0 / 7.0;
    assert!((then.t - age).abs() < 1e-9, "{} vs {age}", then.t);
    let o = rapport_valuation::domain::Observation {
        frequency: 1.0,
        recency: then.recency,
        age: then.t,
    };
    assert!((model.p_alive(&o) - then.p_alive).abs() < 1e-9);
    assert!((model.expected_purchases(&o, 52.0).unwrap() - then.expected_purchases).abs() < 1e-9);
    let spent_then: f64 = regular.purchases[..2]
        .iter()
        .map(|p| amount(&p.amount))
        .sum();
    assert!((amount(&then.historical_value) - spent_then * 0.5).abs() < 1e-6);
    assert_eq!(then.transaction_model_id, bg.model_id);
    // The stored value is untouched; before the first purchase there is none.
    let now_value = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: regular.customer.to_string(),
                as_of: None,
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    assert_eq!(now_value.frequency, regular.purchases.len() as i64 - 1);
    let before = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: regular.customer.to_string(),
                as_of: Some(ts(regular.first - Duration::days(1))),
                ..Default::default()
            },
        ))
        .await
        .refused(Code::NotFound);
    assert!(before.message().contains("customer value"), "{before:?}");
    let batch_then = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                customer_ids: vec![regular.customer.to_string(), Uuid::new_v4().to_string()],
                as_of: Some(ts(as_of)),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(batch_then.values.len(), 1);
    assert_eq!(batch_then.values[0].p_alive, then.p_alive);
    assert_eq!(batch_then.missing_customer_ids.len(), 1);

    // The ranking and the concentration as of that instant: every customer
    // who had bought by then, valued as GetCustomerValue values them then,
    // highest CLV first, page after page.
    let mut ranked_then = Vec::new();
    let mut token = String::new();
    loop {
        let page = v
            .rank_customers(req(
                tenant,
                RankCustomersRequest {
                    page_size: 7,
                    page_token: token.clone(),
                    as_of: Some(ts(as_of)),
                    ..Default::default()
                },
            ))
            .await
            .answer();
        ranked_then.extend(page.customers.into_iter().map(|c| c.value.unwrap()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let bought_then = customers
        .iter()
        .filter(|c| {
            c.purchases
                .iter()
                .any(|p| p.occur_time.unwrap().seconds < as_of.timestamp())
        })
        .count();
    assert_eq!(ranked_then.len(), bought_then);
    assert!(
        ranked_then
            .windows(2)
            .all(|w| amount(&w[0].clv) >= amount(&w[1].clv))
    );
    let mine = ranked_then
        .iter()
        .find(|r| r.customer_id == regular.customer.to_string())
        .unwrap();
    assert_eq!(mine, &then);
    let concentration = v
        .get_value_concentration(req(
            tenant,
            GetValueConcentrationRequest {
                as_of: Some(ts(as_of)),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(concentration.customer_count, bought_then as i64);
    assert_eq!(concentration.score_time, Some(ts(as_of)));
    let total: f64 = ranked_then.iter().map(|r| amount(&r.clv)).sum();
    let got = amount(&concentration.predicted.unwrap().total);
    assert!((got - total).abs() < 1e-6, "{got} vs {total}");
    // A token of one instant is refused for another.
    let first_page = v
        .rank_customers(req(
            tenant,
            RankCustomersRequest {
                page_size: 2,
                as_of: Some(ts(as_of)),
                ..Default::default()
            },
        ))
        .await
        .answer();
    v.rank_customers(req(
        tenant,
        RankCustomersRequest {
            page_size: 2,
            page_token: first_page.next_page_token,
            ..Default::default()
        },
    ))
    .await
    .refused(Code::InvalidArgument);

    // Batch: in request order, duplicates once, unknown ids missing.
    let unknown = Uuid::new_v4();
    let batch = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                customer_ids: vec![
                    customers[3].customer.to_string(),
                    unknown.to_string(),
                    customers[1].customer.to_string(),
                    customers[3].customer.to_string(),
                ],
                ..Default::default()
            },
        ))
        .await
        .answer();
    let got: Vec<_> = batch.values.iter().map(|v| v.customer_id.clone()).collect();
    assert_eq!(
        got,
        [
            customers[3].customer.to_string(),
            customers[1].customer.to_string()
        ]
    );
    assert_eq!(batch.missing_customer_ids, [unknown.to_string()]);

    // Ranking: top 25 by CLV in pages of 10, highest first, tiers consistent.
    let mut ranked = Vec::new();
    let mut token = String::new();
    loop {
        let page = v
            .rank_customers(req(
                tenant,
                RankCustomersRequest {
                    metric: RankMetric::Clv as i32,
                    top_n: 25,
                    page_size: 10,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .answer();
        ranked.extend(page.customers);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ranked.len(), 25);
    assert_eq!(
        ranked.iter().map(|r| r.rank).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
    let clvs: Vec<f64> = ranked
        .iter()
        .map(|r| amount(&r.value.as_ref().unwrap().clv))
        .collect();
    assert!(clvs.windows(2).all(|w| w[0] >= w[1]), "{clvs:?}");
    assert!(
        ranked
            .iter()
            .all(|r| r.value.as_ref().unwrap().value_tier == ValueTier::Top as i32)
    );
    let by_alive = v
        .rank_customers(req(
            tenant,
            RankCustomersRequest {
                metric: RankMetric::PAlive as i32,
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(by_alive.customers.len(), 1000);
    assert!(!by_alive.next_page_token.is_empty());
    // A token is bound to its metric.
    let err = v
        .rank_customers(req(
            tenant,
            RankCustomersRequest {
                metric: RankMetric::Clv as i32,
                page_token: by_alive.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);

    // Concentration.
    let conc = v
        .get_value_concentration(req(
            tenant,
            GetValueConcentrationRequest {
                lorenz_intervals: 20,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(conc.customer_count, 3000);
    let predicted = conc.predicted.unwrap();
    assert_eq!(predicted.lorenz_curve.len(), 21);
    assert_eq!(predicted.top_shares.len(), 4);
    assert_eq!(predicted.top_shares[0].customer_count, 30);
    let top25: f64 = clvs.iter().sum();
    assert!(amount(&predicted.top_shares[0].value) > top25 * 30.0 / 25.0 * 0.5);
    assert!(
        predicted
            .top_shares
            .windows(2)
            .all(|w| w[0].share <= w[1].share)
    );
    assert!(
        predicted.gini > 0.3 && predicted.gini < 1.0,
        "{}",
        predicted.gini
    );
    assert!(conc.historical.unwrap().gini > 0.0);

    // Cohort report: every customer in exactly one cohort, period 0 all active.
    let report = v
        .get_cohort_report(req(tenant, GetCohortReportRequest::default()))
        .await
        .answer();
    assert_eq!(report.currency_code, "EUR");
    let total: i64 = report.cohorts.iter().map(|c| c.customer_count).sum();
    assert_eq!(total, 3000);
    assert!(report.cohorts.len() >= 12 && report.cohorts.len() <= 14);
    let scored: i64 = report.cohorts.iter().map(|c| c.scored_customer_count).sum();
    assert_eq!(scored, 3000);
    for c in &report.cohorts {
        if c.customer_count > 0 {
            assert_eq!(c.periods[0].retention_rate, 1.0, "{}", c.cohort);
            assert!(c.mean_clv.is_some());
        }
        assert!(!c.periods.last().unwrap().complete);
    }
    let revenue: f64 = report.cohorts.iter().map(|c| amount(&c.revenue)).sum();
    let spent_all: f64 = interactions.iter().map(|i| amount(&i.amount)).sum();
    assert!(
        (revenue - spent_all).abs() < 1e-6,
        "{revenue} vs {spent_all}"
    );
    let quarterly = v
        .get_cohort_report(req(
            tenant,
            GetCohortReportRequest {
                granularity: CohortGranularity::Quarter as i32,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(
        quarterly
            .cohorts
            .iter()
            .map(|c| c.customer_count)
            .sum::<i64>(),
        3000
    );
    assert!(quarterly.cohorts[0].cohort.contains("-Q"));

    // A fit restricted to one cohort and one segment.
    let cohort_label = report
        .cohorts
        .iter()
        .find(|c| c.customer_count >= 50)
        .unwrap()
        .cohort
        .clone();
    let cohort_size = report
        .cohorts
        .iter()
        .find(|c| c.cohort == cohort_label)
        .unwrap()
        .customer_count;
    let by_cohort = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            scope: Some(ModelScope {
                restriction: Some(model_scope::Restriction::Cohort(cohort_label.clone())),
            }),
            options: None,
            ..fit(ModelKind::BgNbd)
        },
    )
    .await;
    assert_eq!(by_cohort.customer_count, cohort_size);
    assert!(!by_cohort.active);
    assert_eq!(
        by_cohort.scope.unwrap().restriction,
        Some(model_scope::Restriction::Cohort(cohort_label.clone()))
    );

    // Segment value, with members read from the segmentation service.
    let segment = Uuid::new_v4();
    let mut members: Vec<Uuid> = customers[..15].iter().map(|c| c.customer).collect();
    members.push(Uuid::new_v4());
    s.set_members(tenant, segment, members.clone());
    let seg_value = v
        .get_segment_value(req(
            tenant,
            GetSegmentValueRequest {
                segment_id: segment.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(seg_value.member_count, 16);
    assert_eq!(seg_value.scored_member_count, 15);
    let values = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                customer_ids: members.iter().map(Uuid::to_string).collect(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    let sum: f64 = values.values.iter().map(|v| amount(&v.clv)).sum();
    assert!((amount(&seg_value.total_clv) - sum).abs() < 1e-6);
    assert!((amount(&seg_value.mean_clv) - sum / 15.0).abs() < 1e-6);
    let p_mean: f64 = values.values.iter().map(|v| v.p_alive).sum::<f64>() / 15.0;
    assert!((seg_value.mean_p_alive.unwrap() - p_mean).abs() < 1e-9);
    // As of an instant: the same members valued then.
    let then = Utc::now() - Duration::weeks(20);
    let seg_then = v
        .get_segment_value(req(
            tenant,
            GetSegmentValueRequest {
                segment_id: segment.to_string(),
                as_of: Some(ts(then)),
            },
        ))
        .await
        .answer();
    let values_then = v
        .batch_get_customer_values(req(
            tenant,
            BatchGetCustomerValuesRequest {
                customer_ids: members.iter().map(Uuid::to_string).collect(),
                as_of: Some(ts(then)),
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(seg_then.member_count, 16);
    assert_eq!(
        seg_then.scored_member_count,
        values_then.values.len() as i64
    );
    let sum_then: f64 = values_then.values.iter().map(|v| amount(&v.clv)).sum();
    assert!((amount(&seg_then.total_clv) - sum_then).abs() < 1e-6);
    let by_segment = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            scope: Some(ModelScope {
                restriction: Some(model_scope::Restriction::SegmentId(segment.to_string())),
            }),
            options: None,
            ..fit(ModelKind::BgNbd)
        },
    )
    .await;
    assert_eq!(by_segment.customer_count, 15);
    v.get_segment_value(req(
        tenant,
        GetSegmentValueRequest {
            segment_id: Uuid::new_v4().to_string(),
            ..Default::default()
        },
    ))
    .await
    .refused(Code::NotFound);

    // The feed: ModelFitted, ModelActivated, then a CustomerValueChanged per customer.
    let mut by_type: HashMap<String, usize> = HashMap::new();
    let mut changed = Vec::new();
    let mut fitted = Vec::new();
    let mut activated = Vec::new();
    while changed.len() < 3000 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), feed.next())
            .await
            .expect("feed events")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        assert_eq!(ev.tenant_id, tenant.to_string());
        *by_type.entry(ev.event_type.clone()).or_default() += 1;
        let typed = rapport_kit::feed::decode::<ValuationEvent>(&ev).and_then(|e| e.event);
        match typed {
            Some(valuation_event::Event::CustomerValueChanged(c)) => {
                assert_eq!(ev.event_type, "CustomerValueChanged");
                assert_eq!(ev.aggregate_type, "customer");
                assert_eq!(ev.aggregate_id, c.customer_id);
                changed.push(c);
            }
            Some(valuation_event::Event::ModelFitted(f)) => {
                assert_eq!(ev.event_type, "ModelFitted");
                let m = f.model.unwrap();
                assert_eq!(
                    (ev.aggregate_type.as_str(), &ev.aggregate_id),
                    ("model", &m.model_id)
                );
                fitted.push(m);
            }
            Some(valuation_event::Event::ModelActivated(a)) => {
                assert_eq!(ev.event_type, "ModelActivated");
                assert_eq!(ev.aggregate_id, a.model_id);
                activated.push(a);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(by_type["ModelFitted"], 5);
    assert_eq!(by_type["ModelActivated"], 2);
    // ModelFitted carries the stored model, as fitted (before activation).
    for m in [&bg, &gg, &holdout_fit, &cdnow, &cdnow_gg] {
        let f = fitted.iter().find(|f| f.model_id == m.model_id).unwrap();
        assert_eq!(
            *f,
            Model {
                active: false,
                activate_time: None,
                ..m.clone()
            }
        );
    }
    let act: Vec<(String, i32, i32, String)> = activated
        .iter()
        .map(|a| {
            (
                a.model_id.clone(),
                a.kind,
                a.version,
                a.previous_model_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        act,
        [
            (
                bg.model_id.clone(),
                ModelKind::BgNbd as i32,
                1,
                String::new()
            ),
            (
                gg.model_id.clone(),
                ModelKind::GammaGamma as i32,
                gg.version,
                String::new()
            ),
        ]
    );
    // CustomerValueChanged: exactly the stored value.
    let c = changed
        .iter()
        .find(|c| c.customer_id == one.customer.to_string())
        .unwrap();
    assert_eq!(c.clv, value.clv);
    assert_eq!(c.clv.as_ref().unwrap().currency_code, "EUR");
    assert_eq!(c.p_alive, value.p_alive);
    assert_eq!(c.expected_purchases, value.expected_purchases);
    assert_eq!(c.value_tier, value.value_tier);
    assert_ne!(c.value_tier, ValueTier::Unspecified as i32);
    assert_eq!(c.score_time, value.score_time);

    // A new purchase re-scores the customer in the background.
    let later = Utc::now() - Duration::minutes(1);
    record_all(&s, tenant, vec![purchase(one.customer, later, 5000)]).await;
    let id = one.customer.to_string();
    eventually("the customer to be re-scored", || {
        let mut v = v.clone();
        let id = id.clone();
        let before = value.frequency;
        async move {
            let now = v
                .get_customer_value(req(
                    tenant,
                    GetCustomerValueRequest {
                        customer_id: id,
                        ..Default::default()
                    },
                ))
                .await
                .answer()
                .value
                .unwrap();
            now.frequency == before + 1
        }
    })
    .await;
    let ev = loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), feed.next())
            .await
            .expect("the re-scoring event")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        if ev.aggregate_id == id && ev.event_type == "CustomerValueChanged" {
            break ev;
        }
    };
    assert!(ev.sequence > 0);

    // Tenant isolation: another tenant sees nothing of this one.
    let other = Uuid::new_v4();
    v.get_model(req(
        other,
        GetModelRequest {
            model_id: bg.model_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    v.get_customer_value(req(
        other,
        GetCustomerValueRequest {
            customer_id: id.clone(),
            ..Default::default()
        },
    ))
    .await
    .refused(Code::NotFound);
    v.activate_model(req(
        other,
        ActivateModelRequest {
            model_id: bg.model_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    assert!(
        v.list_models(req(other, ListModelsRequest::default()))
            .await
            .answer()
            .models
            .is_empty()
    );
    v.get_value_concentration(req(other, GetValueConcentrationRequest::default()))
        .await
        .refused(Code::FailedPrecondition);
    let err = v
        .score_customers(req(other, ScoreCustomersRequest::default()))
        .await
        .refused(Code::FailedPrecondition);
    assert!(err.message().contains("no active"), "{}", err.message());
    let empty = v
        .get_cohort_report(req(other, GetCohortReportRequest::default()))
        .await
        .answer();
    assert!(empty.cohorts.is_empty());
    // The other tenant's feed view is empty.
    let mut other_feed = v
        .watch_changes(req(
            other,
            WatchChangesRequest {
                after_sequence: 0,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), other_feed.next())
            .await
            .is_err()
    );
}
