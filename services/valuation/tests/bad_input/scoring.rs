//! Scoring, value reads, relationship scores, and tenancy.

use super::*;

/// Tenant `t` with `n` synthetic customers' purchases, BG/NBD and
/// Gamma-Gamma fitted on the export and active, and one scoring run.
pub(crate) async fn scored_tenant(s: &Stack, t: Uuid, n: usize) -> Vec<Uuid> {
    let today = Utc::now()
        .duration_trunc(Duration::days(1))
        .expect("today at midnight");
    let customers = synthetic(n, 7, today);
    record_all(
        s,
        t,
        customers.iter().flat_map(|c| c.purchases.clone()).collect(),
    )
    .await;
    // The valuation service has followed the interaction feed to the end,
    // so no background re-scoring changes values after the run.
    eventually("the purchases to reach the valuation service", || {
        let mut v = s.valuation();
        async move {
            let r = v
                .get_cohort_report(req(t, GetCohortReportRequest::default()))
                .await
                .expect_answer("the cohort report");
            r.cohorts.iter().map(|c| c.customer_count).sum::<i64>() == n as i64
        }
    })
    .await;
    let mut v = s.valuation();
    let calibration = ts(Utc::now());
    for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
        let m = v
            .fit_model(req(t, weekly_fit(kind, calibration)))
            .await
            .expect_answer("a fit on the export")
            .model
            .expect("a model");
        assert!(m.active, "{m:?}");
    }
    let run = v
        .score_customers(req(t, ScoreCustomersRequest::default()))
        .await
        .expect_answer("a scoring run");
    assert_eq!(run.scored_customer_count, n as i64);
    eventually("the re-scoring queue to drain", || async {
        s.count("SELECT count(*) FROM rescore_queue").await == 0
    })
    .await;
    customers.iter().map(|c| c.customer).collect()
}

/// Every stored value of the tenant, by CLV rank.
pub(crate) async fn all_values(s: &Stack, t: Uuid) -> Vec<RankedCustomer> {
    let page = s
        .valuation()
        .rank_customers(req(
            t,
            RankCustomersRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("the ranking");
    assert!(page.next_page_token.is_empty());
    page.customers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_and_value_reads_refuse_bad_input_and_other_tenants() {
    let s = start(false).await;
    let mut v = s.valuation();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let customers = scored_tenant(&s, a, 400).await;
    let ids: Vec<String> = customers.iter().map(Uuid::to_string).collect();
    let values_before = all_values(&s, a).await;
    assert_eq!(values_before.len(), 400);
    let events_before = s.count("SELECT count(*) FROM outbox").await;

    // ScoreCustomers: every bad setting, and nothing re-scored.
    let score = |f: &dyn Fn(&mut ScoreCustomersRequest)| {
        let mut r = ScoreCustomersRequest::default();
        f(&mut r);
        r
    };
    let mut cases: Vec<(ScoreCustomersRequest, &str)> = Vec::new();
    for k in [999, -1, 7, ModelKind::GammaGamma as i32] {
        cases.push((
            score(&|r| r.transaction_model_kind = k),
            "transaction_model_kind",
        ));
    }
    for a in [-0.1, 10.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        cases.push((
            score(&|r| r.annual_discount_rate = Some(a)),
            "annual_discount_rate",
        ));
    }
    cases.push((
        score(&|r| {
            r.annual_discount_rate = Some(0.1);
            r.discount_rate = Some(0.001);
        }),
        "annual_discount_rate",
    ));
    for h in [-1, 3654, i32::MAX, i32::MIN] {
        cases.push((score(&|r| r.horizon_periods = h), "horizon_periods"));
    }
    for d in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1e-9,
        1.0,
        1e300,
    ] {
        cases.push((score(&|r| r.discount_rate = Some(d)), "discount_rate"));
    }
    for m in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.5,
        1.000_001,
    ] {
        cases.push((score(&|r| r.margin_ratio = Some(m)), "margin_ratio"));
    }
    let mut times = hostile::invalid_times();
    times.push(hostile::at(Utc::now().timestamp() + 3600, 0));
    for t in times {
        cases.push((score(&|r| r.as_of = Some(t)), "as_of"));
    }
    for (r, field) in cases {
        invalid(v.score_customers(req(a, r)).await, field);
    }
    // Another tenant has no active model: FAILED_PRECONDITION, A untouched.
    failed(
        v.score_customers(req(b, ScoreCustomersRequest::default()))
            .await,
        Code::FailedPrecondition,
    );

    // GetCustomerValue.
    for id in BAD_IDS {
        invalid(
            v.get_customer_value(req(
                a,
                GetCustomerValueRequest {
                    customer_id: id.into(),
                    ..Default::default()
                },
            ))
            .await,
            "customer_id",
        );
    }
    failed(
        v.get_customer_value(req(
            a,
            GetCustomerValueRequest {
                customer_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );
    let mine = v
        .get_customer_value(req(
            a,
            GetCustomerValueRequest {
                customer_id: ids[0].clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_answer("A's own value");
    assert_eq!(mine.value.expect("a value").customer_id, ids[0]);
    failed(
        v.get_customer_value(req(
            b,
            GetCustomerValueRequest {
                customer_id: ids[0].clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
    );

    // Values as of an instant: broken or future instants are refused on both
    // reads; a tenant never scored has no scoring to apply.
    let mut future = hostile::invalid_times();
    future.push(hostile::at(Utc::now().timestamp() + 3600, 0));
    for bad in future {
        invalid(
            v.get_customer_value(req(
                a,
                GetCustomerValueRequest {
                    customer_id: ids[0].clone(),
                    as_of: Some(bad),
                    ..Default::default()
                },
            ))
            .await,
            "as_of",
        );
        invalid(
            v.batch_get_customer_values(req(
                a,
                BatchGetCustomerValuesRequest {
                    customer_ids: vec![ids[0].clone()],
                    as_of: Some(bad),
                    ..Default::default()
                },
            ))
            .await,
            "as_of",
        );
    }
    let an_hour_ago = Some(hostile::at(Utc::now().timestamp() - 3600, 0));
    failed(
        v.get_customer_value(req(
            b,
            GetCustomerValueRequest {
                customer_id: ids[0].clone(),
                as_of: an_hour_ago,
                ..Default::default()
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    let then = v
        .get_customer_value(req(
            a,
            GetCustomerValueRequest {
                customer_id: ids[0].clone(),
                as_of: an_hour_ago,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("A's value an hour ago");
    assert_eq!(then.value.expect("a value").score_time, an_hour_ago);

    // BatchGetCustomerValues.
    let batch = |ids: Vec<String>| BatchGetCustomerValuesRequest {
        customer_ids: ids,
        ..Default::default()
    };
    invalid(
        v.batch_get_customer_values(req(
            a,
            batch((0..1001).map(|_| Uuid::new_v4().to_string()).collect()),
        ))
        .await,
        "customer_ids",
    );
    for bad in BAD_IDS {
        let mut list = ids[..3].to_vec();
        list.insert(2, bad.to_string());
        invalid(
            v.batch_get_customer_values(req(a, batch(list))).await,
            "customer_ids[2]",
        );
    }
    let mut dup = ids[..3].to_vec();
    dup.extend(ids[..3].iter().cloned());
    let unknown = Uuid::new_v4().to_string();
    dup.push(unknown.clone());
    let got = v
        .batch_get_customer_values(req(a, batch(dup.clone())))
        .await
        .expect_answer("duplicates are answered once");
    assert_eq!(
        got.values
            .iter()
            .map(|v| v.customer_id.clone())
            .collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    assert_eq!(got.missing_customer_ids, vec![unknown]);
    let theirs = v
        .batch_get_customer_values(req(b, batch(dup)))
        .await
        .expect_answer("B's batch");
    assert!(theirs.values.is_empty(), "B read A's values");
    assert_eq!(theirs.missing_customer_ids.len(), 4);

    // RankCustomers.
    let rank = |metric: i32, top_n: i32, page_size: i32, page_token: String| RankCustomersRequest {
        metric,
        top_n,
        page_size,
        page_token,
        ..Default::default()
    };
    for m in [999, -1] {
        invalid(
            v.rank_customers(req(a, rank(m, 0, 0, String::new()))).await,
            "metric",
        );
    }
    for n in [-1, i32::MIN] {
        invalid(
            v.rank_customers(req(a, rank(0, n, 0, String::new()))).await,
            "top_n",
        );
    }
    for size in [-1, i32::MIN, 1001, i32::MAX] {
        invalid(
            v.rank_customers(req(a, rank(0, 0, size, String::new())))
                .await,
            "page_size",
        );
    }
    let token = |t: Uuid, metric: RankMetric, top_n: i32| {
        let mut v = s.valuation();
        async move {
            v.rank_customers(req(t, rank(metric as i32, top_n, 2, String::new())))
                .await
                .expect_answer("a first page")
                .next_page_token
        }
    };
    let genuine = token(a, RankMetric::Clv, 0).await;
    let other_metric = token(a, RankMetric::PAlive, 0).await;
    let other_top = token(a, RankMetric::Clv, 100).await;
    let models_token = v
        .list_models(req(
            a,
            ListModelsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("models")
        .next_page_token;
    for t in [&genuine, &other_metric, &other_top, &models_token] {
        assert!(!t.is_empty());
    }
    let page2 = v
        .rank_customers(req(a, rank(RankMetric::Clv as i32, 0, 2, genuine.clone())))
        .await
        .expect_answer("the genuine token pages on");
    assert_eq!(page2.customers[0].rank, 3);
    let mut bad = hostile::forged_tokens(&genuine);
    bad.extend([other_metric, other_top, models_token]);
    for token in bad {
        invalid(
            v.rank_customers(req(a, rank(RankMetric::Clv as i32, 0, 2, token)))
                .await,
            "page_token",
        );
    }
    // A's genuine token in B's hands.
    invalid(
        v.rank_customers(req(b, rank(RankMetric::Clv as i32, 0, 2, genuine)))
            .await,
        "page_token",
    );
    assert!(all_values(&s, b).await.is_empty());

    // As of an instant: a bad or future one.
    for bad in broken_times()
        .into_iter()
        .chain([Some(ts(Utc::now() + Duration::days(1)))])
    {
        invalid(
            v.rank_customers(req(
                a,
                RankCustomersRequest {
                    as_of: bad,
                    ..Default::default()
                },
            ))
            .await,
            "as_of",
        );
        invalid(
            v.get_value_concentration(req(
                a,
                GetValueConcentrationRequest {
                    as_of: bad,
                    ..Default::default()
                },
            ))
            .await,
            "as_of",
        );
        invalid(
            v.get_segment_value(req(
                a,
                GetSegmentValueRequest {
                    segment_id: Uuid::new_v4().to_string(),
                    as_of: bad,
                },
            ))
            .await,
            "as_of",
        );
    }

    // GetValueConcentration.
    for k in [-1, 9, 1001, i32::MIN, i32::MAX] {
        invalid(
            v.get_value_concentration(req(
                a,
                GetValueConcentrationRequest {
                    lorenz_intervals: k,
                    ..Default::default()
                },
            ))
            .await,
            "lorenz_intervals",
        );
    }
    failed(
        v.get_value_concentration(req(b, GetValueConcentrationRequest::default()))
            .await,
        Code::FailedPrecondition,
    );
    let conc = v
        .get_value_concentration(req(a, GetValueConcentrationRequest::default()))
        .await
        .expect_answer("A's concentration");
    assert_eq!(conc.customer_count, 400);

    // GetSegmentValue.
    let segment = Uuid::new_v4();
    s.set_members(a, segment, customers[..5].to_vec());
    let sv = hostile::assert_read_by_id("segment_id", a, b, &segment.to_string(), |t, id| {
        let mut v = v.clone();
        async move {
            v.get_segment_value(req(
                t,
                GetSegmentValueRequest {
                    segment_id: id,
                    ..Default::default()
                },
            ))
            .await
        }
    })
    .await;
    assert_eq!((sv.member_count, sv.scored_member_count), (5, 5));

    // GetCohortReport.
    for g in [999, -1] {
        invalid(
            v.get_cohort_report(req(
                a,
                GetCohortReportRequest {
                    granularity: g,
                    ..Default::default()
                },
            ))
            .await,
            "granularity",
        );
    }
    for bad in broken_times() {
        invalid(
            v.get_cohort_report(req(
                a,
                GetCohortReportRequest {
                    start_time: bad,
                    ..Default::default()
                },
            ))
            .await,
            "start_time",
        );
        invalid(
            v.get_cohort_report(req(
                a,
                GetCohortReportRequest {
                    end_time: bad,
                    ..Default::default()
                },
            ))
            .await,
            "end_time",
        );
    }
    for currency in ["E\0R", TEXT, "eur", "EURO", ""] {
        let r = v
            .get_cohort_report(req(
                a,
                GetCohortReportRequest {
                    currency_code: currency.into(),
                    ..Default::default()
                },
            ))
            .await;
        if currency.is_empty() {
            r.expect("no currency: the default one");
        } else {
            invalid(r, "currency_code");
        }
    }
    // From year 1: far more than 240 cohorts.
    invalid(
        v.get_cohort_report(req(
            a,
            GetCohortReportRequest {
                start_time: at(YEAR_1, 0),
                ..Default::default()
            },
        ))
        .await,
        "start_time",
    );
    invalid(
        v.get_cohort_report(req(
            a,
            GetCohortReportRequest {
                start_time: at(YEAR_1, 0),
                end_time: at(YEAR_9999_END, 0),
                granularity: CohortGranularity::Quarter as i32,
                ..Default::default()
            },
        ))
        .await,
        "end_time",
    );
    // 240 cohorts starting in year 1: each would hold some 24,000 periods
    // since acquisition; refused at once instead of building millions of
    // cells (the response was too large for gRPC, OUT_OF_RANGE, after
    // seconds of work).
    let started = std::time::Instant::now();
    invalid(
        v.get_cohort_report(req(
            a,
            GetCohortReportRequest {
                start_time: at(YEAR_1, 0),
                end_time: at(YEAR_1 + 230 * 30 * 86_400, 0),
                ..Default::default()
            },
        ))
        .await,
        "start_time",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A long but reasonable history still answers: 24 monthly cohorts from
    // 2000 onwards.
    let y2000 = 946_684_800;
    let r = v
        .get_cohort_report(req(
            a,
            GetCohortReportRequest {
                start_time: at(y2000, 0),
                end_time: at(y2000 + 730 * 86_400, 0),
                ..Default::default()
            },
        ))
        .await
        .expect_answer("cohorts of 2000 and 2001");
    assert_eq!(r.cohorts.len(), 24);
    // Extreme but valid ranges answer (empty cohorts), without error.
    for (start, end) in [
        (YEAR_1, YEAR_1 + 40 * 86_400),
        (YEAR_9999_END - 40 * 86_400, YEAR_9999_END),
    ] {
        let r = v
            .get_cohort_report(req(
                a,
                GetCohortReportRequest {
                    start_time: at(start, 0),
                    end_time: at(end, 0),
                    ..Default::default()
                },
            ))
            .await
            .expect_answer("an extreme but valid range");
        assert!(
            !r.cohorts.is_empty() && r.cohorts.len() <= 2,
            "{}",
            r.cohorts.len()
        );
        assert!(r.cohorts.iter().all(|c| c.customer_count == 0));
    }
    // B's report holds none of A's customers.
    let theirs = v
        .get_cohort_report(req(b, GetCohortReportRequest::default()))
        .await
        .expect_answer("B's report");
    assert_eq!(
        theirs.cohorts.iter().map(|c| c.customer_count).sum::<i64>(),
        0
    );

    // WatchChanges: a negative start is refused; B's feed holds nothing of A.
    for after in [-1, i64::MIN] {
        invalid(
            v.watch_changes(req(
                a,
                WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                },
            ))
            .await,
            "after_sequence",
        );
    }
    let mut feed = v
        .watch_changes(req(
            b,
            WatchChangesRequest {
                after_sequence: 0,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("B's feed");
    let next = tokio::time::timeout(std::time::Duration::from_millis(1500), feed.next()).await;
    assert!(next.is_err(), "B's feed sent an event: {next:?}");

    // Nothing of A changed.
    assert_eq!(all_values(&s, a).await, values_before);
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, events_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationship_scores_refuse_bad_unknown_and_foreign_ids() {
    let s = start(true).await;
    let v = s.valuation();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let customer = s
        .profile_client()
        .await
        .create_customer(req(
            a,
            rapport_proto::rapport::profile::v1::CreateCustomerRequest {
                customer: Some(rapport_proto::rapport::profile::v1::Customer {
                    kind: rapport_proto::rapport::profile::v1::CustomerKind::Person as i32,
                    display_name: TEXT.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect_answer("a customer")
        .customer
        .expect("the customer")
        .customer_id;
    let scores = hostile::assert_read_by_id("customer_id", a, b, &customer, |t, id| {
        let mut v = v.clone();
        async move {
            v.get_relationship_scores(req(t, GetRelationshipScoresRequest { customer_id: id }))
                .await
        }
    })
    .await
    .scores
    .expect("scores");
    assert_eq!(scores.customer_id, customer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_method_needs_a_tenant() {
    let s = start(false).await;
    let mut v = s.valuation();
    let id = Uuid::new_v4().to_string();
    let u = Code::Unauthenticated;
    for value in ["", "not-a-uuid", "1 OR 1=1", "../x"] {
        let mut r = tonic::Request::new(ListModelsRequest::default());
        r.metadata_mut().insert(
            rapport_kit::context::TENANT_HEADER,
            value.parse().expect("ASCII metadata"),
        );
        failed(v.list_models(r).await, u);
    }
    failed(v.fit_model(no(inline_fit(ModelKind::BgNbd))).await, u);
    failed(
        v.get_model(no(GetModelRequest {
            model_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(v.list_models(no(ListModelsRequest::default())).await, u);
    failed(
        v.activate_model(no(ActivateModelRequest {
            model_id: id.clone(),
        }))
        .await,
        u,
    );
    failed(
        v.score_customers(no(ScoreCustomersRequest::default()))
            .await,
        u,
    );
    failed(
        v.get_customer_value(no(GetCustomerValueRequest {
            customer_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        v.batch_get_customer_values(no(BatchGetCustomerValuesRequest {
            customer_ids: vec![id.clone()],
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        v.rank_customers(no(RankCustomersRequest::default())).await,
        u,
    );
    failed(
        v.get_value_concentration(no(GetValueConcentrationRequest::default()))
            .await,
        u,
    );
    failed(
        v.get_cohort_report(no(GetCohortReportRequest::default()))
            .await,
        u,
    );
    failed(
        v.get_segment_value(no(GetSegmentValueRequest {
            segment_id: id.clone(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        v.get_relationship_scores(no(GetRelationshipScoresRequest {
            customer_id: id.clone(),
        }))
        .await,
        u,
    );
    // WatchChanges is the internal feed peers follow without a tenant; its
    // one bad input is a negative start.
    invalid(
        v.watch_changes(no(WatchChangesRequest {
            after_sequence: -1,
            ..Default::default()
        }))
        .await,
        "after_sequence",
    );
    assert_eq!(s.count("SELECT count(*) FROM models").await, 0);
}
