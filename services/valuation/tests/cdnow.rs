//! The models against the literature, on the CDNOW sample (see
//! fixtures/PROVENANCE.md): fitted parameters must reproduce the published
//! estimates to three significant figures, and per-customer predictions must
//! match an independent implementation (the `lifetimes` package).

use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::fit::maximise;
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::pareto_nbd::ParetoNbd;
use rapport_valuation::domain::{Observation, RfmData, SpendData};

fn cdnow() -> RfmData {
    let text = include_str!("fixtures/cdnow_summary.csv");
    RfmData::new(text.lines().skip(1).map(|line| {
        let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        Observation {
            frequency: f[1],
            recency: f[2],
            age: f[3],
        }
    }))
}

fn cdnow_spend() -> SpendData {
    let text = include_str!("fixtures/cdnow_summary_with_spend.csv");
    SpendData::new(
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
                (f[1] > 0.0).then_some((f[1], f[4]))
            })
            .collect(),
    )
}

/// Equal to three significant figures.
fn three_sig(got: f64, published: f64) -> bool {
    let scale = 10f64.powf(published.abs().log10().floor() - 2.0);
    (got / scale).round() == (published / scale).round()
}

#[test]
fn data_is_the_published_sample() {
    let d = cdnow();
    assert_eq!(d.customers(), 2357.0);
    assert!(d.rows.iter().all(Observation::is_valid));
    assert!(d.rows.len() < 2357, "identical histories are pooled");
}

#[test]
fn bgnbd_reproduces_fader_hardie_lee_2005() {
    // Published: r = 0.243, α = 4.414, a = 0.793, b = 2.426, LL = -9582.4.
    let data = cdnow();
    let fit = maximise(
        |p| BgNbd::from_slice(p).total_ln_likelihood(&data),
        &[1.0, 1.0, 1.0, 1.0],
        10_000,
    )
    .unwrap();
    let published = [0.243, 4.414, 0.793, 2.426];
    for (i, (got, want)) in fit.params.iter().zip(published).enumerate() {
        assert!(
            three_sig(*got, want),
            "{}: {got} vs {want}",
            BgNbd::NAMES[i]
        );
    }
    assert!(
        (fit.log_likelihood - -9582.4).abs() < 0.05,
        "{}",
        fit.log_likelihood
    );
    assert!(fit.converged);
    // Standard errors exist and are plausible (small relative to estimates).
    for (se, p) in fit.std_errors.iter().zip(&fit.params) {
        let se = se.expect("standard error");
        assert!(se > 0.0 && se < *p, "{se} for {p}");
    }
}

#[test]
fn pareto_nbd_reproduces_fader_hardie() {
    // Published (Fader & Hardie's Pareto/NBD notes): r = 0.553, α = 10.578,
    // s = 0.606, β = 11.669, LL = -9595.0.
    let data = cdnow();
    let fit = maximise(
        |p| ParetoNbd::from_slice(p).total_ln_likelihood(&data),
        &[1.0, 1.0, 1.0, 1.0],
        10_000,
    )
    .unwrap();
    let published = [0.553, 10.578, 0.606, 11.669];
    for (i, (got, want)) in fit.params.iter().zip(published).enumerate() {
        assert!(
            three_sig(*got, want),
            "{}: {got} vs {want}",
            ParetoNbd::NAMES[i]
        );
    }
    assert!(
        (fit.log_likelihood - -9595.0).abs() < 0.05,
        "{}",
        fit.log_likelihood
    );
}

#[test]
fn gamma_gamma_reproduces_fader_hardie_lee_2005() {
    // Published ("RFM and CLV", JMR 2005): p = 6.25, q = 3.74, γ = 15.44.
    let data = cdnow_spend();
    assert_eq!(data.rows().len(), 946, "repeat customers");
    let fit = maximise(
        |p| GammaGamma::from_slice(p).total_ln_likelihood(&data),
        &[1.0, 1.0, 1.0],
        10_000,
    )
    .unwrap();
    for (i, (got, want)) in fit.params.iter().zip([6.25, 3.74, 15.44]).enumerate() {
        assert!(
            three_sig(*got, want),
            "{}: {got} vs {want}",
            GammaGamma::NAMES[i]
        );
    }
}

/// (x, t_x, T, BG/NBD P(alive), BG/NBD E[Y(39)], Pareto/NBD P(alive),
/// Pareto/NBD E[Y(39)]) from lifetimes 0.11.3 with the published parameters.
const LIFETIMES_PREDICTIONS: [(f64, f64, f64, f64, f64, f64, f64); 8] = [
    (
        0.0,
        0.0,
        38.86,
        1.0000000000,
        0.1950980520,
        0.2952866046,
        0.1070814682,
    ),
    (
        1.0,
        1.71,
        38.86,
        0.2121009854,
        0.2031869871,
        0.1680023267,
        0.1710929806,
    ),
    (
        2.0,
        30.43,
        38.86,
        0.7265785701,
        1.2260281748,
        0.8691675592,
        1.4551231933,
    ),
    (
        7.0,
        35.71,
        38.86,
        0.8600671247,
        4.4722422040,
        0.9509200578,
        4.7098701367,
    ),
    (
        5.0,
        4.0,
        38.86,
        0.0015102919,
        0.0057502817,
        0.0059688835,
        0.0217353288,
    ),
    (
        3.0,
        20.0,
        32.0,
        0.6041741152,
        1.6738537292,
        0.7056997819,
        1.8659935916,
    ),
    (
        10.0,
        38.0,
        39.0,
        0.9190215157,
        6.6707398395,
        0.9866202540,
        6.8111851080,
    ),
    (
        1.0,
        30.0,
        31.0,
        0.7469803393,
        0.8500461979,
        0.9854615410,
        1.1618930252,
    ),
];

fn rel_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-3)
}

#[test]
fn per_customer_predictions_match_lifetimes() {
    let bg = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let pn = ParetoNbd {
        r: 0.553,
        alpha: 10.578,
        s: 0.606,
        beta: 11.669,
    };
    for (x, tx, t, bg_alive, bg_e, pn_alive, pn_e) in LIFETIMES_PREDICTIONS {
        let o = Observation {
            frequency: x,
            recency: tx,
            age: t,
        };
        assert!(
            rel_close(bg.p_alive(&o), bg_alive),
            "BG/NBD P(alive) {o:?}: {}",
            bg.p_alive(&o)
        );
        let e = bg.expected_purchases(&o, 39.0).unwrap();
        assert!(rel_close(e, bg_e), "BG/NBD E[Y] {o:?}: {e} vs {bg_e}");
        let p = pn.p_alive(&o).unwrap();
        assert!(
            rel_close(p, pn_alive),
            "Pareto/NBD P(alive) {o:?}: {p} vs {pn_alive}"
        );
        let e = pn.expected_purchases(&o, 39.0).unwrap();
        assert!(rel_close(e, pn_e), "Pareto/NBD E[Y] {o:?}: {e} vs {pn_e}");
    }
    let new = bg.expected_purchases_new(52.0).unwrap();
    assert!(rel_close(new, 1.446050595396398), "{new}");

    let gg = GammaGamma {
        p: 6.25,
        q: 3.74,
        gamma: 15.44,
    };
    for (x, m, want) in [
        (1.0, 11.77, 18.9168520578),
        (2.0, 22.35, 24.6637139108),
        (6.0, 38.0, 37.8106361829),
        (10.0, 15.5, 16.3281729001),
    ] {
        let got = gg.expected_average_value(x, m).unwrap();
        assert!(rel_close(got, want), "{x} {m}: {got} vs {want}");
    }
}

/// The same customers in another order give the same fit to the bit:
/// parameters, log-likelihood and standard errors (pooled data are kept in
/// one canonical order).
#[test]
fn fits_do_not_depend_on_the_order_of_the_customers() {
    let text = include_str!("fixtures/cdnow_summary_with_spend.csv");
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    // The file's order, reversed, and a stride permutation (7 is prime to 2,357).
    let n = rows.len();
    let orders: [Vec<usize>; 3] = [
        (0..n).collect(),
        (0..n).rev().collect(),
        (0..n).map(|i| (i * 7) % n).collect(),
    ];
    let fits: Vec<_> = orders
        .iter()
        .map(|order| {
            let data = RfmData::new(order.iter().map(|&i| Observation {
                frequency: rows[i][1],
                recency: rows[i][2],
                age: rows[i][3],
            }));
            let spend = SpendData::new(
                order
                    .iter()
                    .filter(|&&i| rows[i][1] > 0.0)
                    .map(|&i| (rows[i][1], rows[i][4]))
                    .collect(),
            );
            let bg = maximise(
                |p| BgNbd::from_slice(p).total_ln_likelihood(&data),
                &[1.0; 4],
                10_000,
            )
            .unwrap();
            let gg = maximise(
                |p| GammaGamma::from_slice(p).total_ln_likelihood(&spend),
                &[1.0; 3],
                10_000,
            )
            .unwrap();
            (bg, gg)
        })
        .collect();
    for other in &fits[1..] {
        assert_eq!(other, &fits[0]);
    }
}

/// BG/NBD through the service's fit (Nelder-Mead, then Newton steps on the
/// exact derivatives) against a high-precision reference: the maximum and
/// the standard errors from the observed information computed with mpmath
/// at 40 digits by numerical differentiation (fixtures/bgnbd_reference.py,
/// see fixtures/PROVENANCE.md), in any order of the customers.
#[test]
fn bgnbd_standard_errors_match_a_high_precision_reference() {
    use rapport_valuation::domain::fitting::{self, FitCase, Kind};
    const PARAMS: [f64; 4] = [
        0.242_592_907_204_465_9,
        4.413_531_561_205_426,
        0.792_886_148_098_768_6,
        2.425_753_436_493_621,
    ];
    const LL: f64 = -9_582.425_560_567_363;
    const SE: [f64; 4] = [
        0.012_557_319_583_759_944,
        0.378_221_415_526_589_8,
        0.185_719_143_095_927_2,
        0.705_345_755_103_569_2,
    ];
    let text = include_str!("fixtures/cdnow_summary.csv");
    let cases: Vec<FitCase> = text
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            FitCase {
                frequency: f[1] as i64,
                recency: f[2],
                t: f[3],
                monetary_value: 0.0,
                in_currency: false,
                holdout_purchases: 0,
                opportunities: None,
                holdout_opportunities: (0, 0),
            }
        })
        .collect();
    let mut reversed = cases.clone();
    reversed.reverse();
    for data in [cases, reversed] {
        let fit = fitting::fit(Kind::BgNbd, &data, 10_000, None, "").unwrap();
        assert!(fit.converged);
        assert!(
            (fit.log_likelihood - LL).abs() < 1e-9,
            "{}",
            fit.log_likelihood
        );
        for (i, (name, value, se)) in fit.parameters.iter().enumerate() {
            assert!(
                (value - PARAMS[i]).abs() < 1e-9 * PARAMS[i],
                "{name}: {value} vs {}",
                PARAMS[i]
            );
            let se = se.expect("a standard error");
            assert!(
                (se - SE[i]).abs() < 1e-6 * SE[i],
                "{name}: SE {se} vs {}",
                SE[i]
            );
        }
    }
}

/// The CDNOW sample as fit cases, with the repeat customers' mean spend.
fn cdnow_cases() -> Vec<rapport_valuation::domain::fitting::FitCase> {
    include_str!("fixtures/cdnow_summary_with_spend.csv")
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            rapport_valuation::domain::fitting::FitCase {
                frequency: f[1] as i64,
                recency: f[2],
                t: f[3],
                monetary_value: f[4],
                in_currency: true,
                holdout_purchases: 0,
                opportunities: None,
                holdout_opportunities: (0, 0),
            }
        })
        .collect()
}

/// MBG/NBD, Pareto/NBD and Gamma-Gamma on CDNOW: estimates within 1e-9 and
/// standard errors within 1e-6 (relative) of references computed with
/// mpmath at 40 digits by numerical differentiation of the likelihoods
/// (fixtures/mbgnbd_reference.py, pareto_nbd_reference.py and
/// gamma_gamma_reference.py, see fixtures/PROVENANCE.md), in any order of
/// the customers.
#[test]
fn other_models_standard_errors_match_high_precision_references() {
    use rapport_valuation::domain::fitting::{self, Kind};
    let references: [(Kind, &[f64], f64, &[f64]); 3] = [
        (
            Kind::MbgNbd,
            &[
                0.524_837_983_665_595_1,
                6.182_992_019_672_097,
                0.891_356_155_331_535_8,
                1.613_999_334_730_501,
            ],
            -9_582.132_684_899_904,
            &[
                0.083_264_064_613_600_6,
                0.695_597_932_854_924_5,
                0.154_785_311_403_227_88,
                0.537_472_360_548_408_8,
            ],
        ),
        (
            Kind::ParetoNbd,
            &[
                0.553_275_508_689_519_3,
                10.577_612_238_681_71,
                0.606_213_568_674_084_5,
                11.667_911_237_920_227,
            ],
            -9_594.973_929_826_864,
            &[
                0.047_628_754_429_643_8,
                0.842_723_923_504_354_3,
                0.187_279_569_470_785_18,
                6.211_029_319_868_513,
            ],
        ),
        (
            Kind::GammaGamma,
            &[
                6.248_802_489_709_097,
                3.744_588_453_287_469,
                15.447_748_009_463_716,
            ],
            -4_055.923_243_502_864_3,
            &[
                1.189_687_037_657_996_8,
                0.290_165_614_525_170_9,
                4.159_993_878_325_116,
            ],
        ),
    ];
    let cases = cdnow_cases();
    let mut reversed = cases.clone();
    reversed.reverse();
    for (kind, params, ll, ses) in references {
        for data in [&cases, &reversed] {
            let fit = fitting::fit(kind, data, 10_000, None, "").unwrap();
            assert!(fit.converged, "{kind:?}");
            assert!(
                (fit.log_likelihood - ll).abs() < 1e-9 * ll.abs(),
                "{kind:?}: {}",
                fit.log_likelihood
            );
            for (i, (name, value, se)) in fit.parameters.iter().enumerate() {
                assert!(
                    (value - params[i]).abs() < 1e-9 * params[i],
                    "{kind:?} {name}: {value} vs {}",
                    params[i]
                );
                let se = se.expect("a standard error");
                assert!(
                    (se - ses[i]).abs() < 1e-6 * ses[i],
                    "{kind:?} {name}: SE {se} vs {}",
                    ses[i]
                );
            }
        }
    }
}
