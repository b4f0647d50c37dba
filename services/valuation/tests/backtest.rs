//! ScoreCustomers as of a past instant: the customers scored as they were,
//! nothing stored, and, once the horizon has passed, the purchases they
//! actually made beside the expected ones.
//!
//! The data is the CDNOW sample (fixtures/PROVENANCE.md): calibration to 30
//! September 1997, then 39 weeks. The fit's calibration/holdout validation
//! over the same window is computed by other code (domain/holdout.rs), so
//! the backtest's totals are checked against it.

mod common;

use chrono::{TimeDelta, TimeZone, Utc};
use common::*;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::valuation::v1::*;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn scoring_as_of_a_past_instant_backtests_and_stores_nothing() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    record_all(&s, tenant, cdnow_purchases(None)).await;
    let as_of = Utc.with_ymd_and_hms(1997, 10, 1, 0, 0, 0).unwrap();
    let holdout_end = as_of + TimeDelta::weeks(39);

    let fit = |kind: ModelKind, holdout: bool| FitModelRequest {
        kind: kind as i32,
        calibration_end_time: Some(ts(as_of)),
        holdout_end_time: holdout.then(|| ts(holdout_end)),
        period_unit: PeriodUnit::Week as i32,
        options: Some(FitOptions {
            activate_on_success: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bg = fitted(&mut v, tenant, fit(ModelKind::BgNbd, true)).await;
    let validation = bg.holdout_validation.clone().expect("a holdout validation");
    fitted(&mut v, tenant, fit(ModelKind::GammaGamma, false)).await;

    let backtest = ScoreCustomersRequest {
        horizon_periods: 39,
        as_of: Some(ts(as_of)),
        ..Default::default()
    };
    let r = v
        .score_customers(req(tenant, backtest))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.stored);
    assert_eq!(r.scored_customer_count, 2357);
    assert_eq!(r.score_time, Some(ts(as_of)));
    let totals = r.totals.expect("totals");
    assert_eq!(totals.horizon_end_time, Some(ts(holdout_end)));
    // The expected purchases over 39 weeks are the fit's predicted holdout
    // total; the actual ones its actual holdout total.
    assert!(
        (totals.expected_purchases - validation.predicted_total_purchases).abs()
            < 1e-9 * validation.predicted_total_purchases,
        "{} against {}",
        totals.expected_purchases,
        validation.predicted_total_purchases
    );
    assert_eq!(
        totals.actual_purchases,
        Some(validation.actual_total_purchases)
    );
    assert!(totals.mean_p_alive > 0.0 && totals.mean_p_alive < 1.0);
    let clv = totals.total_clv.expect("a total CLV");
    assert_eq!(clv.currency_code, "EUR");
    assert!(clv.units > 0);

    // Nothing was stored: no value, no run, no event.
    assert_eq!(
        s.count("SELECT count(*) FROM customer_values").await
            + s.count("SELECT count(*) FROM scoring_state").await
            + s.count("SELECT count(*) FROM outbox_events WHERE event_type LIKE 'CustomerValue%'")
                .await,
        0
    );
    let one = cdnow_customer(1);
    let err = v
        .get_customer_value(req(
            tenant,
            GetCustomerValueRequest {
                customer_id: one.to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A run now stores the values; its totals are theirs, without actuals
    // (the horizon has not ended).
    let now = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(now.stored);
    let totals = now.totals.expect("totals");
    assert_eq!(totals.actual_purchases, None);
    let stored: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT sum(clv) FROM customer_values WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    let total = totals.total_clv.expect("a total CLV");
    let total = rust_decimal::Decimal::from(total.units)
        + rust_decimal::Decimal::new(i64::from(total.nanos), 9);
    assert_eq!(total, stored);

    // A backtest whose horizon has not ended yet gives no actuals; an
    // instant after the clock is refused.
    let recent = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                as_of: Some(ts(Utc::now() - TimeDelta::days(7))),
                ..backtest
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recent.totals.unwrap().actual_purchases, None);
    let err = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                as_of: Some(ts(Utc::now() + TimeDelta::days(1))),
                ..backtest
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["as_of"]);
}
