//! GetCustomerProfitability and GetProfitabilityReport refuse bad input;
//! every cost-to-serve method needs a tenant.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profitability_reads_refuse_bad_windows_ids_and_segments() {
    let s = start(false).await;
    let mut v = s.valuation();
    // A has a cost model (so a request that passes validation answers), B
    // none.
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    set(&s, a, setting(cost_model())).await;
    let customer = Uuid::new_v4().to_string();

    // Windows, shared by both methods: (what, start, end, fields).
    let now = Utc::now().timestamp();
    let day = 86_400;
    let mut windows: Vec<Window> = Vec::new();
    for t in broken_times() {
        windows.push((format!("start_time {t:?}"), t, None, paths(&["start_time"])));
        windows.push((format!("end_time {t:?}"), None, t, paths(&["end_time"])));
    }
    for (what, start, end, fields) in [
        (
            "a start before 1970",
            at(-1, 0),
            None,
            paths(&["start_time"]),
        ),
        (
            "a start in year 1",
            at(YEAR_1, 0),
            at(day, 0),
            paths(&["start_time"]),
        ),
        (
            "an end before 1970",
            None,
            at(-1, 999_999_999),
            paths(&["end_time"]),
        ),
        (
            "an end in year 10000",
            None,
            at(YEAR_9999_END + 1, 0),
            paths(&["end_time"]),
        ),
        (
            "both broken",
            at(0, -1),
            at(0, 1_000_000_000),
            paths(&["end_time", "start_time"]),
        ),
        (
            "an empty window",
            at(now, 0),
            at(now, 0),
            paths(&["end_time"]),
        ),
        (
            "an end a nanosecond before the start",
            at(now, 1),
            at(now, 0),
            paths(&["end_time"]),
        ),
        (
            "an end a year before the start",
            at(now, 0),
            at(now - 365 * day, 0),
            paths(&["end_time"]),
        ),
        (
            "a start after now, no end",
            at(now + day, 0),
            None,
            paths(&["end_time"]),
        ),
        (
            "10 years and a second",
            at(now - 3653 * day - 1, 0),
            at(now, 0),
            paths(&["start_time"]),
        ),
        ("since 1970, no end", at(0, 0), None, paths(&["start_time"])),
        (
            "1970 to 9999",
            at(0, 0),
            at(YEAR_9999_END, 999_999_999),
            paths(&["start_time"]),
        ),
    ] {
        windows.push((what.into(), start, end, fields));
    }

    // GetCustomerProfitability.
    let profitability = |f: &dyn Fn(&mut GetCustomerProfitabilityRequest)| {
        changed(
            GetCustomerProfitabilityRequest {
                customer_id: customer.clone(),
                ..Default::default()
            },
            f,
        )
    };
    let mut cases: Vec<Case<GetCustomerProfitabilityRequest>> = Vec::new();
    for id in BAD_IDS.iter().map(|id| id.to_string()).chain([
        huge(),
        format!("{customer}\0"),
        format!(" {customer}"),
        TEXT.into(),
    ]) {
        let shown: String = format!("{id:?}").chars().take(60).collect();
        cases.push((
            format!("customer_id {shown}"),
            profitability(&|r| r.customer_id = id.clone()),
            paths(&["customer_id"]),
        ));
    }
    for (what, start, end, fields) in &windows {
        cases.push((
            what.clone(),
            profitability(&|r| {
                r.start_time = *start;
                r.end_time = *end;
            }),
            fields.clone(),
        ));
    }
    cases.push((
        "a bad id and an empty window".into(),
        profitability(&|r| {
            r.customer_id = "1 OR 1=1".into();
            r.start_time = at(now, 0);
            r.end_time = at(now, 0);
        }),
        paths(&["customer_id", "end_time"]),
    ));
    refuse_all(cases, |r| {
        let mut v = v.clone();
        async move { v.get_customer_profitability(req(a, r)).await }
    })
    .await;

    // GetProfitabilityReport.
    let ids: Vec<String> = (0..21).map(|_| Uuid::new_v4().to_string()).collect();
    let report = |f: &dyn Fn(&mut GetProfitabilityReportRequest)| {
        changed(GetProfitabilityReportRequest::default(), f)
    };
    let mut cases: Vec<Case<GetProfitabilityReportRequest>> = Vec::new();
    for (what, start, end, fields) in &windows {
        cases.push((
            what.clone(),
            report(&|r| {
                r.start_time = *start;
                r.end_time = *end;
            }),
            fields.clone(),
        ));
    }
    for k in [5, 1001, -1, 1, 9, i32::MIN, i32::MAX] {
        cases.push((
            format!("curve_intervals {k}"),
            report(&|r| r.curve_intervals = k),
            paths(&["curve_intervals"]),
        ));
    }
    for k in [-1, 101, i32::MIN, i32::MAX] {
        cases.push((
            format!("destroyer_count {k}"),
            report(&|r| r.destroyer_count = k),
            paths(&["destroyer_count"]),
        ));
    }
    let dur = |seconds: i64, nanos: i32| Some(prost_types::Duration { seconds, nanos });
    let thirty_days = 30 * day;
    for (what, d) in [
        ("a second before zero", dur(-1, 0)),
        ("a nanosecond before zero", dur(0, -1)),
        ("seconds and nanos of opposite signs", dur(1, -1)),
        ("a billion nanos", dur(0, 1_000_000_000)),
        ("30 days and a nanosecond", dur(thirty_days, 1)),
        ("31 days", dur(thirty_days + day, 0)),
        ("the longest duration", dur(i64::MAX, 999_999_999)),
        ("the most negative duration", dur(i64::MIN, -999_999_999)),
    ] {
        cases.push((
            format!("max_staleness {what}"),
            report(&|r| r.max_staleness = d),
            paths(&["max_staleness"]),
        ));
    }
    for (what, start, end) in [
        ("with a start", at(now - 30 * day, 0), None),
        ("with an end", None, at(now, 0)),
        ("with a whole window", at(now - 30 * day, 0), at(now, 0)),
    ] {
        cases.push((
            format!("max_staleness {what}"),
            report(&|r| {
                r.max_staleness = dur(60, 0);
                r.start_time = start;
                r.end_time = end;
            }),
            paths(&["max_staleness"]),
        ));
    }
    cases.push((
        "21 segments".into(),
        report(&|r| r.segment_ids = ids.clone()),
        paths(&["segment_ids"]),
    ));
    cases.push((
        "21 segments, the third not a UUID".into(),
        report(&|r| {
            r.segment_ids = ids.clone();
            r.segment_ids[2] = "not-a-uuid".into();
        }),
        paths(&["segment_ids", "segment_ids[2]"]),
    ));
    let mut every_one_twice = vec!["segment_ids".to_string()];
    every_one_twice.extend((1..20).map(|i| format!("segment_ids[{i}]")));
    cases.push((
        "one segment 21 times".into(),
        report(&|r| r.segment_ids = vec![ids[0].clone(); 21]),
        every_one_twice,
    ));
    for id in BAD_IDS.iter().map(|id| id.to_string()).chain([
        huge(),
        format!("{}\0", ids[0]),
        TEXT.into(),
    ]) {
        let shown: String = format!("{id:?}").chars().take(60).collect();
        cases.push((
            format!("segment_ids[2] {shown}"),
            report(&|r| r.segment_ids = vec![ids[0].clone(), ids[1].clone(), id.clone()]),
            paths(&["segment_ids[2]"]),
        ));
    }
    let first = Uuid::parse_str(&ids[0]).expect("a UUID");
    for (what, again) in [
        ("as given", ids[0].clone()),
        ("in capitals", ids[0].to_uppercase()),
        ("without hyphens", first.simple().to_string()),
    ] {
        cases.push((
            format!("a segment listed twice, {what}"),
            report(&|r| r.segment_ids = vec![ids[0].clone(), ids[1].clone(), again.clone()]),
            paths(&["segment_ids[2]"]),
        ));
    }
    cases.push((
        "everything wrong".into(),
        report(&|r| {
            r.start_time = at(now, 0);
            r.end_time = at(now, 0);
            r.curve_intervals = 5;
            r.destroyer_count = -1;
            r.segment_ids = vec![ids[0].clone(), "x".into(), ids[0].clone()];
        }),
        paths(&[
            "end_time",
            "curve_intervals",
            "destroyer_count",
            "segment_ids[1]",
            "segment_ids[2]",
        ]),
    ));
    refuse_all(cases, |r| {
        let mut v = v.clone();
        async move { v.get_profitability_report(req(a, r)).await }
    })
    .await;

    // The boundaries answer: a window of exactly 10 years (3,653 days),
    // from 1970, up to the last instant of 9999; 10 and 1,000 curve
    // intervals, 100 destroyers, 20 segments of A.
    let segments: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &segments {
        s.set_members(a, *id, vec![]);
    }
    let ten_years = (at(now - 3653 * day, 0), at(now, 0));
    for (start, end) in [
        ten_years,
        (at(0, 0), at(day, 0)),
        (None, at(YEAR_9999_END, 999_999_999)),
    ] {
        let p = v
            .get_customer_profitability(req(
                a,
                GetCustomerProfitabilityRequest {
                    customer_id: customer.clone(),
                    start_time: start,
                    end_time: end,
                },
            ))
            .await
            .expect_answer("a valid window")
            .profitability
            .expect("figures");
        assert_eq!((p.purchases, p.returns), (0, 0));
        v.get_profitability_report(req(
            a,
            GetProfitabilityReportRequest {
                start_time: start,
                end_time: end,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("a valid window");
    }
    for (intervals, destroyers, n) in [(10, 100, 20), (1000, 0, 1)] {
        let r = v
            .get_profitability_report(req(
                a,
                GetProfitabilityReportRequest {
                    curve_intervals: intervals,
                    destroyer_count: destroyers,
                    segment_ids: segments[..n].iter().map(Uuid::to_string).collect(),
                    ..Default::default()
                },
            ))
            .await
            .expect_answer("boundary values are valid")
            .report
            .expect("a report");
        assert_eq!(r.whale_curve.len(), intervals as usize + 1);
    }
    // max_staleness of exactly 30 days keeps the report; zero with a window
    // computes it.
    for (d, start) in [(dur(thirty_days, 0), None), (dur(0, 0), at(now - day, 0))] {
        v.get_profitability_report(req(
            a,
            GetProfitabilityReportRequest {
                max_staleness: d,
                start_time: start,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("a valid max_staleness");
    }

    // A segment that is not A's: NOT_FOUND.
    let theirs = Uuid::new_v4();
    s.set_members(b, theirs, vec![]);
    for unknown in [theirs, Uuid::new_v4()] {
        failed(
            v.get_profitability_report(req(
                a,
                GetProfitabilityReportRequest {
                    segment_ids: vec![segments[0].to_string(), unknown.to_string()],
                    ..Default::default()
                },
            ))
            .await,
            Code::NotFound,
        );
    }

    // B has no cost model: valid requests are FAILED_PRECONDITION, bad ones
    // still INVALID_ARGUMENT.
    failed(
        v.get_customer_profitability(req(
            b,
            GetCustomerProfitabilityRequest {
                customer_id: customer.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    failed(
        v.get_customer_profitability(req(
            b,
            GetCustomerProfitabilityRequest {
                customer_id: customer.clone(),
                start_time: ten_years.0,
                end_time: ten_years.1,
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    for r in [
        GetProfitabilityReportRequest::default(),
        GetProfitabilityReportRequest {
            curve_intervals: 1000,
            destroyer_count: 100,
            segment_ids: vec![theirs.to_string()],
            ..Default::default()
        },
    ] {
        failed(
            v.get_profitability_report(req(b, r)).await,
            Code::FailedPrecondition,
        );
    }
    assert_violations(
        v.get_customer_profitability(req(b, GetCustomerProfitabilityRequest::default()))
            .await,
        &["customer_id"],
        "B, no customer",
    );
    assert_violations(
        v.get_profitability_report(req(
            b,
            GetProfitabilityReportRequest {
                curve_intervals: 5,
                ..Default::default()
            },
        ))
        .await,
        &["curve_intervals"],
        "B, 5 intervals",
    );
    assert!(versions(&s, b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_and_profitability_methods_need_a_tenant() {
    let s = start(false).await;
    let mut v = s.valuation();
    let u = Code::Unauthenticated;
    failed(v.set_cost_model(no(setting(cost_model()))).await, u);
    failed(
        v.get_cost_model(no(GetCostModelRequest::default())).await,
        u,
    );
    failed(
        v.list_cost_models(no(ListCostModelsRequest::default()))
            .await,
        u,
    );
    failed(
        v.get_customer_profitability(no(GetCustomerProfitabilityRequest {
            customer_id: Uuid::new_v4().to_string(),
            ..Default::default()
        }))
        .await,
        u,
    );
    failed(
        v.get_profitability_report(no(GetProfitabilityReportRequest::default()))
            .await,
        u,
    );
    assert_eq!(s.count("SELECT count(*) FROM cost_models").await, 0);
}
