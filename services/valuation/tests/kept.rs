//! Fits over the purchase summaries the valuation service keeps from the
//! interaction feed: a fit of the whole tenant reads one row per customer
//! instead of exporting every purchase, and gives what the export gives.
//!
//! The data is the CDNOW sample's purchases of the calibration period
//! (fixtures/PROVENANCE.md); the published estimates are Fader, Hardie &
//! Lee (2005), "Counting Your Customers the Easy Way", Marketing Science
//! 24(2): r 0.243, α 4.414, a 0.793, b 2.426, log-likelihood −9582.4.

mod common;

use chrono::{NaiveDate, TimeZone, Utc};
use common::*;
use futures::StreamExt;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{ExportSummariesRequest, PurchaseHistorySummary};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::*;
use tonic::transport::Channel;
use uuid::Uuid;

/// The CDNOW sample's purchases before 1 October 1997, in EUR.
fn cdnow_calibration() -> Vec<rapport_proto::rapport::interaction::v1::Interaction> {
    cdnow_purchases(NaiveDate::from_ymd_opt(1997, 10, 1))
}

/// The interaction service's export for the window, as rows.
async fn exported(
    s: &Stack,
    tenant: Uuid,
    end: prost_types::Timestamp,
) -> Vec<PurchaseHistorySummary> {
    let mut stream = s
        .interactions()
        .export_summaries(req(
            tenant,
            ExportSummariesRequest {
                calibration_end_time: Some(end),
                period_unit: PeriodUnit::Week as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        out.extend(m.unwrap().summaries);
    }
    out
}

fn fit(kind: ModelKind, end: &prost_types::Timestamp) -> FitModelRequest {
    FitModelRequest {
        kind: kind as i32,
        calibration_end_time: Some(*end),
        period_unit: PeriodUnit::Week as i32,
        ..Default::default()
    }
}

/// The same fit over the export's rows, given inline.
async fn fitted_inline(
    v: &mut ValuationServiceClient<Channel>,
    tenant: Uuid,
    kind: ModelKind,
    rows: &[PurchaseHistorySummary],
) -> Model {
    let r = FitModelRequest {
        inline_summaries: rows.to_vec(),
        ..fit(kind, &ts(Utc::now()))
    };
    fitted(v, tenant, r).await
}

fn assert_same(kept: &Model, export: &Model, what: &str) {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(
        close(kept.log_likelihood, export.log_likelihood),
        "{what}: {} against {}",
        kept.log_likelihood,
        export.log_likelihood
    );
    assert_eq!(kept.customer_count, export.customer_count, "{what}");
    for p in &export.parameters {
        assert!(close(param(kept, &p.name), p.value), "{what}: {}", p.name);
    }
}

#[tokio::test]
async fn fits_over_kept_summaries_reproduce_cdnow_and_equal_the_export() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    record_all(&s, tenant, cdnow_calibration()).await;
    let end = ts(Utc.with_ymd_and_hms(1997, 10, 1, 0, 0, 0).unwrap());

    // BG/NBD by date, as the contract documents: the published estimates.
    let by_date = FitModelRequest {
        kind: ModelKind::BgNbd as i32,
        calibration_end_date: "1997-09-30".into(),
        period_unit: PeriodUnit::Week as i32,
        ..Default::default()
    };
    let bg = fitted(&mut v, tenant, by_date).await;
    assert_published_cdnow_bg_nbd(&bg);

    // By instant, BG/NBD and Gamma-Gamma equal the fits of the export's rows.
    let rows = exported(&s, tenant, end).await;
    assert_eq!(rows.len(), 2357);
    let kept_bg = fitted(&mut v, tenant, fit(ModelKind::BgNbd, &end)).await;
    let export_bg = fitted_inline(&mut v, tenant, ModelKind::BgNbd, &rows).await;
    assert_same(&kept_bg, &export_bg, "BG/NBD");
    let kept_gg = fitted(&mut v, tenant, fit(ModelKind::GammaGamma, &end)).await;
    let export_gg = fitted_inline(&mut v, tenant, ModelKind::GammaGamma, &rows).await;
    assert_same(&kept_gg, &export_gg, "Gamma-Gamma");
    assert_eq!(kept_gg.currency_code, "EUR");

    // The fit did read the kept summaries: altered, they change its estimates.
    sqlx::query("UPDATE purchase_summaries SET days = days + 1 WHERE tenant_id = $1 AND days > 1")
        .bind(tenant)
        .execute(&s.pool)
        .await
        .unwrap();
    let altered = fitted(&mut v, tenant, fit(ModelKind::BgNbd, &end)).await;
    assert!(
        (altered.log_likelihood - kept_bg.log_likelihood).abs() > 1.0,
        "{} against {}",
        altered.log_likelihood,
        kept_bg.log_likelihood
    );

    // A purchase at or after the calibration end: the summaries would count
    // it, so the fit exports (and the alteration no longer shows).
    let one = cdnow_customer(1);
    let later = Utc.with_ymd_and_hms(1997, 10, 1, 0, 0, 0).unwrap();
    record_all(&s, tenant, vec![purchase(one, later, 1_000)]).await;
    let after = fitted(&mut v, tenant, fit(ModelKind::BgNbd, &end)).await;
    assert_same(&after, &export_bg, "a purchase after the end");

    // A customer with amounts in two currencies: the summary cannot say the
    // EUR amounts alone, so the fit exports; a dollar purchase counts as a
    // purchase day without EUR value, as in the export.
    let tenant = Uuid::new_v4();
    let mut purchases = cdnow_calibration();
    let mut dollars = purchase(
        one,
        Utc.with_ymd_and_hms(1997, 9, 15, 12, 0, 0).unwrap(),
        2_500,
    );
    if let Some(m) = dollars.amount.as_mut() {
        m.currency_code = "USD".into();
    }
    purchases.push(dollars);
    record_all(&s, tenant, purchases).await;
    sqlx::query("UPDATE purchase_summaries SET days = days + 1 WHERE tenant_id = $1 AND days > 1")
        .bind(tenant)
        .execute(&s.pool)
        .await
        .unwrap();
    let rows = exported(&s, tenant, end).await;
    let mixed = fitted(&mut v, tenant, fit(ModelKind::BgNbd, &end)).await;
    assert_same(
        &mixed,
        &fitted_inline(&mut v, tenant, ModelKind::BgNbd, &rows).await,
        "mixed",
    );
    let mixed = fitted(&mut v, tenant, fit(ModelKind::GammaGamma, &end)).await;
    assert_same(
        &mixed,
        &fitted_inline(&mut v, tenant, ModelKind::GammaGamma, &rows).await,
        "mixed Gamma-Gamma",
    );
}

/// A stored value: (customer, CLV, P(alive), expected purchases, expected
/// order value, historical value).
type Value = (Uuid, String, f64, f64, String, String);

/// Every stored value of the tenant.
async fn values(s: &Stack, tenant: Uuid) -> Vec<Value> {
    sqlx::query_as(
        "SELECT customer_id, clv::text, p_alive, expected_purchases, expected_order_value::text,
                historical_value::text
         FROM customer_values WHERE tenant_id = $1 ORDER BY customer_id",
    )
    .bind(tenant)
    .fetch_all(&s.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn scoring_over_kept_summaries_equals_scoring_over_the_export() {
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    record_all(&s, tenant, cdnow_calibration()).await;
    let end = ts(Utc.with_ymd_and_hms(1997, 10, 1, 0, 0, 0).unwrap());
    for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
        let m = fitted(
            &mut v,
            tenant,
            FitModelRequest {
                options: Some(FitOptions {
                    activate_on_success: true,
                    ..Default::default()
                }),
                ..fit(kind, &end)
            },
        )
        .await;
        assert!(m.active);
    }
    let score = |mut v: ValuationServiceClient<Channel>| async move {
        v.score_customers(req(tenant, ScoreCustomersRequest::default()))
            .await
            .unwrap()
            .into_inner()
    };
    let kept = score(v.clone()).await;
    assert_eq!(kept.scored_customer_count, 2357);
    let from_kept = values(&s, tenant).await;
    assert_eq!(from_kept.len(), 2357);

    // The summaries made to look stale (a purchase at the score time): the
    // run exports, and every value is the same.
    let stale = "UPDATE purchase_summary_tenants SET last_time = '9999-01-01' WHERE tenant_id = $1";
    sqlx::query(stale)
        .bind(tenant)
        .execute(&s.pool)
        .await
        .unwrap();
    score(v.clone()).await;
    assert_close(&values(&s, tenant).await, &from_kept);

    // Altered summaries change the values: the first run read them.
    sqlx::query(
        "UPDATE purchase_summary_tenants SET last_time = '1997-09-30' WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(&s.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE purchase_summaries SET days = days + 1 WHERE tenant_id = $1 AND days > 1")
        .bind(tenant)
        .execute(&s.pool)
        .await
        .unwrap();
    score(v.clone()).await;
    let altered = values(&s, tenant).await;
    assert_eq!(altered.len(), from_kept.len());
    let moved = altered
        .iter()
        .zip(&from_kept)
        .filter(|(a, b)| (a.3 - b.3).abs() > 1e-3 * b.3.abs())
        .count();
    assert!(moved > 100, "{moved} customers' expected purchases moved");
}

/// Values of two runs a moment apart: equal historical values, and scores
/// within what the moment between the runs (the customers' ages grow)
/// explains.
fn assert_close(a: &[Value], b: &[Value]) {
    assert_eq!(a.len(), b.len());
    let near = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()) + 1e-12;
    // Money is kept to the nano: two scores a hair apart may round to
    // neighbouring nanos.
    let near_money = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()) + 1.5e-9;
    let num = |s: &str| s.parse::<f64>().unwrap();
    for (x, y) in a.iter().zip(b) {
        let exact = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(
            (x.0, exact(&x.5)),
            (y.0, exact(&y.5)),
            "customer and historical value"
        );
        assert!(near_money(num(&x.1), num(&y.1)), "CLV {x:?} against {y:?}");
        assert!(near(x.2, y.2), "P(alive) {x:?} against {y:?}");
        assert!(near(x.3, y.3), "expected purchases {x:?} against {y:?}");
        assert!(
            near_money(num(&x.4), num(&y.4)),
            "order value {x:?} against {y:?}"
        );
    }
}
