//! The discrete-time models through the public API, on their published data
//! recorded as purchases: BG/BB on the donations data of Fader, Hardie &
//! Shang (2010) and sBG on the retention cohorts of Fader & Hardie (2007)
//! (see fixtures/PROVENANCE.md). The interaction service exports the
//! opportunity histories, the valuation service fits, validates on the
//! holdout and scores.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{Interaction, OpportunityHistory};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::*;
use rapport_valuation::domain::bgbb::BgBb;
use rapport_valuation::domain::discrete::Opportunities;
use rapport_valuation::domain::sbg::Sbg;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// Estimates within 1e-9, log-likelihood within 1e-9 and standard errors
/// within 1e-6 (relative) of a high-precision reference.
fn close_to_reference(m: &Model, params: &[f64], ll: f64, ses: &[f64]) {
    assert!(
        (m.log_likelihood - ll).abs() < 1e-9 * ll.abs(),
        "{}",
        m.log_likelihood
    );
    assert_eq!(m.parameters.len(), params.len());
    for (i, p) in m.parameters.iter().enumerate() {
        assert!(
            (p.value - params[i]).abs() < 1e-9 * params[i],
            "{}: {} vs {}",
            p.name,
            p.value,
            params[i]
        );
        let se = p.standard_error.expect("a standard error");
        assert!(
            (se - ses[i]).abs() < 1e-6 * ses[i],
            "{}: SE {se} vs {}",
            p.name,
            ses[i]
        );
    }
}

/// A purchase on 15 June of `year`, of a value that varies by customer.
fn gift(customer: Uuid, year: i32, i: usize) -> Interaction {
    let t = Utc.with_ymd_and_hms(year, 6, 15, 12, 0, 0).unwrap();
    purchase(
        customer,
        t,
        1000 + (i as i64 % 40) * 100 + i64::from(year % 7) * 37,
    )
}

fn yearly(kind: ModelKind, calibration: &str, holdout: &str) -> FitModelRequest {
    FitModelRequest {
        kind: kind as i32,
        period_unit: PeriodUnit::Year as i32,
        calibration_end_date: calibration.into(),
        holdout_end_date: holdout.into(),
        ..Default::default()
    }
}

/// The donations data: (x, t_x, n = 6, customers) per line.
fn donations() -> Vec<(i64, i64, usize)> {
    include_str!("fixtures/donations.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<i64> = l.split(',').map(|f| f.parse().unwrap()).collect();
            assert_eq!(v[2], 6);
            (v[0], v[1], v[3] as usize)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgbb_reproduces_the_donations_fit_from_recorded_gifts() {
    let s = start(false).await;
    let tenant = Uuid::new_v4();
    // Every supporter first gave in 1995; one with x gifts in 1996-2001,
    // the last in 1995 + t_x, gave in the years 1996..1995 + x − 1 and in
    // 1995 + t_x.
    let mut interactions = Vec::new();
    let mut supporters = Vec::new();
    for (x, tx, count) in donations() {
        for _ in 0..count {
            let who = Uuid::new_v4();
            let i = supporters.len();
            interactions.push(gift(who, 1995, i));
            for k in (1..x).chain((x > 0).then_some(tx)) {
                interactions.push(gift(who, 1995 + k as i32, i));
            }
            supporters.push((who, x, tx));
        }
    }
    assert_eq!(supporters.len(), 11_104);
    record_all(&s, tenant, interactions).await;
    let mut v = s.valuation();

    // Opportunities are whole calendar years: a window that ends mid-year
    // is refused.
    let e = v
        .fit_model(req(tenant, yearly(ModelKind::BgBb, "2001-06-30", "")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&e), vec!["calibration_end_date"]);

    // Fader, Hardie & Shang (2010): α 1.204, β 0.750, γ 0.657, δ 2.783,
    // LL −33,225.6, on the years 1996-2001.
    let mut fit = yearly(ModelKind::BgBb, "2001-12-31", "");
    fit.options = activate();
    let bgbb = fitted(&mut v, tenant, fit).await;
    assert!(bgbb.converged, "{}", bgbb.optimizer_message);
    assert_eq!(bgbb.customer_count, 11_104);
    for (name, published) in [
        ("alpha", 1.204),
        ("beta", 0.750),
        ("gamma", 0.657),
        ("delta", 2.783),
    ] {
        assert!(
            (param(&bgbb, name) - published).abs() < 5e-4,
            "{name}: {}",
            param(&bgbb, name)
        );
    }
    assert!((bgbb.log_likelihood - -33_225.6).abs() < 0.05);
    // Against a 40-digit reference by numerical differentiation
    // (fixtures/discrete_reference.py): estimates to 1e-9, standard errors
    // to 1e-6.
    close_to_reference(
        &bgbb,
        &[
            1.203_522_351_601_914,
            0.749_716_358_172_938_9,
            0.656_718_208_441_832_4,
            2.783_442_232_577_381,
        ],
        -33_225.581_274_347_01,
        &[
            0.069_391_362_388_881_56,
            0.029_447_716_660_385_764,
            0.051_009_858_956_413_19,
            0.320_819_003_043_268_5,
        ],
    );

    // The same data inline gives the same model.
    let inline: Vec<_> = donations()
        .into_iter()
        .flat_map(|(x, tx, count)| std::iter::repeat_n((x, tx), count))
        .map(
            |(x, tx)| rapport_proto::rapport::interaction::v1::PurchaseHistorySummary {
                customer_id: Uuid::new_v4().to_string(),
                opportunities: Some(OpportunityHistory {
                    opportunities: 6,
                    frequency: x,
                    recency: tx,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .collect();
    let mut inline_fit = yearly(ModelKind::BgBb, "2001-12-31", "");
    inline_fit.inline_summaries = inline;
    let again = fitted(&mut v, tenant, inline_fit).await;
    for (a, b) in again.parameters.iter().zip(&bgbb.parameters) {
        assert!(
            (a.value - b.value).abs() <= 1e-9 * b.value,
            "{a:?} vs {b:?}"
        );
    }

    // Scored today with the spend model: P(alive) and expected gifts over
    // the next 5 years are the model's for each supporter's history, now
    // counted in the years since 1995 that have ended.
    let gg = fitted(
        &mut v,
        tenant,
        FitModelRequest {
            kind: ModelKind::GammaGamma as i32,
            period_unit: PeriodUnit::Year as i32,
            calibration_end_date: "2001-12-31".into(),
            options: activate(),
            ..Default::default()
        },
    )
    .await;
    assert!(gg.active);
    let run = v
        .score_customers(req(
            tenant,
            ScoreCustomersRequest {
                transaction_model_kind: ModelKind::BgBb as i32,
                horizon_periods: 5,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert_eq!(run.transaction_model_id, bgbb.model_id);
    assert_eq!(run.scored_customer_count, 11_104);
    let model = BgBb::from_slice(&[
        param(&bgbb, "alpha"),
        param(&bgbb, "beta"),
        param(&bgbb, "gamma"),
        param(&bgbb, "delta"),
    ]);
    let n = years_ended_since(1995);
    for &(who, x, tx) in [&supporters[0], &supporters[5_000], &supporters[11_103]] {
        let value = stored_value(&mut v, tenant, who).await;
        let o = Opportunities::new(n, x, tx, 0).unwrap();
        let p = model.p_alive(&o);
        let e = model.expected_purchases(&o, 5);
        assert!((value.p_alive - p).abs() < 1e-9, "{x} {tx}: {value:?}");
        assert!(
            (value.expected_purchases - e).abs() <= 1e-9 * e.max(1e-9),
            "{x} {tx}: {} vs {e}",
            value.expected_purchases
        );
    }
}

/// Customers alive at the start of years 0..=12 of the two cohorts of
/// Fader & Hardie (2007), per 1,000 (fixtures/PROVENANCE.md).
const REGULAR: [usize; 13] = [
    1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173,
];
const HIGH_END: [usize; 8] = [1000, 869, 743, 653, 593, 551, 517, 491];

/// A cohort acquired in `year0`: a customer alive at the start of year t
/// pays in year0 + t.
fn cohort(year0: i32, alive: &[usize]) -> (Vec<Interaction>, Vec<(Uuid, usize)>) {
    let mut interactions = Vec::new();
    let mut customers = Vec::new();
    for i in 0..alive[0] {
        let who = Uuid::new_v4();
        let years = alive.iter().take_while(|a| **a > i).count();
        for t in 0..years {
            interactions.push(gift(who, year0 + t as i32, i));
        }
        customers.push((who, years - 1));
    }
    (interactions, customers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbg_reproduces_the_retention_fits_and_projects_the_holdout() {
    let s = start(false).await;
    let mut v = s.valuation();

    // The regular cohort, acquired in 2010: calibration on years 1-7
    // (2011-2017), holdout on years 8-12 (2018-2022).
    let regular = Uuid::new_v4();
    let (interactions, _) = cohort(2010, &REGULAR);
    record_all(&s, regular, interactions).await;
    let fit = fitted(
        &mut v,
        regular,
        yearly(ModelKind::Sbg, "2017-12-31", "2022-12-31"),
    )
    .await;
    assert!(fit.converged, "{}", fit.optimizer_message);
    // Fader & Hardie (2007): α = 0.704, β = 1.182.
    assert!((param(&fit, "alpha") - 0.704).abs() < 5e-4, "{fit:?}");
    assert!((param(&fit, "beta") - 1.182).abs() < 5e-4, "{fit:?}");
    close_to_reference(
        &fit,
        &[0.704_077_298_473_516_2, 1.182_043_026_209_475_7],
        -1_680.265_188_463_287,
        &[0.065_598_964_234_037_21, 0.152_475_631_675_909_36],
    );
    // The holdout: the 241 customers still active after year 7 paid
    // 223 + 207 + 194 + 183 + 173 times in years 8-12; the model projects
    // Σ_k 241 · S(7 + k) / S(7).
    let h = fit.holdout_validation.clone().unwrap();
    assert_eq!(h.actual_total_purchases, 980);
    let m = Sbg::from_slice(&[param(&fit, "alpha"), param(&fit, "beta")]);
    let active = Opportunities::new(7, 7, 7, 7).unwrap();
    let projected = 241.0 * m.expected_purchases(&active, 5);
    assert!((h.predicted_total_purchases - projected).abs() < 1e-6);
    assert!(
        (h.predicted_total_purchases - 980.0).abs() < 0.05 * 980.0,
        "{h:?}"
    );
    // Rows by calibration renewals: the churned predict nothing.
    let zero = h.rows.iter().find(|r| r.min_frequency == 0).unwrap();
    assert_eq!(zero.customer_count, 1000 - 631);
    assert_eq!(zero.predicted_mean_holdout_purchases, 0.0);

    // The high-end cohort, acquired in 2018 and observed to 2025, scored
    // today: the 491 still active have P(alive) 1 and expect
    // Σ_{k=1..3} S(7 + k) / S(7) renewals in 3 years; the others 0.
    let high = Uuid::new_v4();
    let (interactions, customers) = cohort(2018, &HIGH_END);
    record_all(&s, high, interactions).await;
    let mut fit = yearly(ModelKind::Sbg, "2025-12-31", "");
    fit.options = activate();
    let sbg = fitted(&mut v, high, fit).await;
    // Fader & Hardie (2007): α = 0.668, β = 3.806.
    assert!((param(&sbg, "alpha") - 0.668).abs() < 5e-4, "{sbg:?}");
    assert!((param(&sbg, "beta") - 3.806).abs() < 5e-4, "{sbg:?}");
    close_to_reference(
        &sbg,
        &[0.668_088_351_106_446_2, 3.806_094_964_058_267],
        -1_611.158_147_391_156_4,
        &[0.103_734_931_149_564_55, 0.785_531_691_775_707_1],
    );
    let mut gg = yearly(ModelKind::GammaGamma, "2025-12-31", "");
    gg.options = activate();
    assert!(fitted(&mut v, high, gg).await.active);
    let run = v
        .score_customers(req(
            high,
            ScoreCustomersRequest {
                horizon_periods: 3,
                ..Default::default()
            },
        ))
        .await
        .answer();
    // Unset, scoring takes the one active transaction model.
    assert_eq!(run.transaction_model_id, sbg.model_id);
    let m = Sbg::from_slice(&[param(&sbg, "alpha"), param(&sbg, "beta")]);
    let n = years_ended_since(2018);
    for &(who, renewals) in [&customers[0], &customers[999]] {
        let value = stored_value(&mut v, high, who).await;
        let r = renewals as i64;
        let o = Opportunities::new(n, r, r, r).unwrap();
        assert_eq!(value.p_alive, m.p_alive(&o), "{renewals}");
        let e = m.expected_purchases(&o, 3);
        assert!((value.expected_purchases - e).abs() <= 1e-12 + 1e-9 * e);
    }
}

/// Fit options that activate the model on success.
fn activate() -> Option<FitOptions> {
    Some(FitOptions {
        activate_on_success: true,
        max_iterations: 0,
    })
}

/// The customer's stored value.
async fn stored_value(
    v: &mut ValuationServiceClient<Channel>,
    tenant: Uuid,
    customer: Uuid,
) -> CustomerValue {
    v.get_customer_value(req(
        tenant,
        GetCustomerValueRequest {
            customer_id: customer.to_string(),
            ..Default::default()
        },
    ))
    .await
    .answer()
    .value
    .unwrap()
}

/// Calendar years that have ended since `year0` (opportunities today of a
/// customer acquired that year).
fn years_ended_since(year0: i32) -> i64 {
    i64::from(chrono::Datelike::year(&Utc::now()) - 1 - year0)
}
