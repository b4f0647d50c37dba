//! Properties every fitted model must have, whatever its parameters, and
//! recovery of known parameters from data drawn from the models themselves.

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::clv::discounted_clv;
use rapport_valuation::domain::fit::maximise;
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::pareto_nbd::ParetoNbd;
use rapport_valuation::domain::synthetic::BgNbdGenerator;
use rapport_valuation::domain::{Observation, RfmData, SpendData};

fn observation() -> impl Strategy<Value = Observation> {
    (0u32..60, 0.0f64..1.0, 1.0f64..200.0).prop_map(|(x, f, t)| Observation {
        frequency: f64::from(x),
        recency: if x == 0 { 0.0 } else { f * t },
        age: t,
    })
}

fn bgnbd() -> impl Strategy<Value = BgNbd> {
    (0.05f64..5.0, 0.5f64..50.0, 0.05f64..5.0, 0.1f64..10.0).prop_map(|(r, alpha, a, b)| BgNbd {
        r,
        alpha,
        a,
        b,
    })
}

fn pareto() -> impl Strategy<Value = ParetoNbd> {
    (0.05f64..5.0, 0.5f64..50.0, 0.05f64..5.0, 0.5f64..50.0)
        .prop_map(|(r, alpha, s, beta)| ParetoNbd { r, alpha, s, beta })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn bgnbd_p_alive_is_a_probability_and_purchases_grow_with_the_horizon(m in bgnbd(), o in observation(), h in 1.0f64..100.0) {
        let p = m.p_alive(&o);
        prop_assert!((0.0..=1.0).contains(&p), "P(alive) = {p}");
        let e1 = m.expected_purchases(&o, h).unwrap();
        let e2 = m.expected_purchases(&o, h * 2.0).unwrap();
        prop_assert!(e1 >= 0.0 && e2 >= e1 - 1e-9, "E[Y({h})] = {e1}, E[Y({})] = {e2}", h * 2.0);
        prop_assert!(m.ln_likelihood(&o).is_finite());
    }

    #[test]
    fn pareto_p_alive_is_a_probability_and_purchases_grow_with_the_horizon(m in pareto(), o in observation(), h in 1.0f64..100.0) {
        if let Some(p) = m.p_alive(&o) {
            prop_assert!((0.0..=1.0).contains(&p), "P(alive) = {p}");
            if m.s != 1.0 {
                let e1 = m.expected_purchases(&o, h).unwrap();
                let e2 = m.expected_purchases(&o, h * 2.0).unwrap();
                prop_assert!(e1 >= 0.0 && e2 >= e1 - 1e-9);
            }
        }
    }

    #[test]
    fn clv_decreases_with_the_discount_rate(m in bgnbd(), o in observation(), d in 0.0f64..0.05, extra in 0.001f64..0.05) {
        let gg = GammaGamma { p: 6.0, q: 4.0, gamma: 15.0 };
        let value = gg.expected_average_value(o.frequency, 20.0).unwrap();
        let clv = |rate| discounted_clv(|t| m.expected_purchases(&o, t), value, 0.3, 52, rate).unwrap();
        prop_assert!(clv(d + extra) <= clv(d) + 1e-9);
        prop_assert!(clv(d) >= 0.0);
    }
}

fn synthetic(n: usize, seed: u64) -> (RfmData, SpendData, BgNbd, GammaGamma) {
    let truth = BgNbd {
        r: 0.25,
        alpha: 4.0,
        a: 0.8,
        b: 2.5,
    };
    let spend = GammaGamma {
        p: 6.0,
        q: 4.0,
        gamma: 15.0,
    };
    let g = BgNbdGenerator::new(truth, Some(spend), 1.0 / 7.0).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let customers: Vec<_> = (0..n)
        .map(|i| g.draw(&mut rng, 26.0 + (i % 26) as f64))
        .collect();
    let data = RfmData::new(customers.iter().map(|c| c.observation));
    let spend_data = SpendData::new(
        customers
            .iter()
            .filter_map(|c| c.mean_spend.map(|m| (c.observation.frequency, m)))
            .collect(),
    );
    (data, spend_data, truth, spend)
}

#[test]
fn fits_recover_the_parameters_they_were_drawn_with() {
    let (data, spend, truth, spend_truth) = synthetic(30_000, 11);
    let bg = maximise(
        |p| BgNbd::from_slice(p).total_ln_likelihood(&data),
        &[1.0; 4],
        10_000,
    )
    .unwrap();
    for ((got, want), se) in bg.params.iter().zip(truth.to_vec()).zip(&bg.std_errors) {
        let se = se.unwrap();
        // Within four standard errors of the truth.
        assert!((got - want).abs() < 4.0 * se, "{got} vs {want} (se {se})");
    }
    let gg = maximise(
        |p| GammaGamma::from_slice(p).total_ln_likelihood(&spend),
        &[1.0; 3],
        10_000,
    )
    .unwrap();
    for ((got, want), se) in gg
        .params
        .iter()
        .zip(spend_truth.to_vec())
        .zip(&gg.std_errors)
    {
        let se = se.unwrap();
        assert!((got - want).abs() < 4.0 * se, "{got} vs {want} (se {se})");
    }
}

#[test]
fn the_fitted_likelihood_beats_every_perturbation() {
    let (data, _, _, _) = synthetic(5_000, 3);
    let ll = |p: &[f64]| BgNbd::from_slice(p).total_ln_likelihood(&data);
    let fit = maximise(ll, &[1.0; 4], 10_000).unwrap();
    for i in 0..4 {
        for factor in [0.97, 1.03] {
            let mut p = fit.params.clone();
            p[i] *= factor;
            assert!(
                ll(&p) < fit.log_likelihood,
                "perturbing {} by {factor} improved the fit",
                BgNbd::NAMES[i]
            );
        }
    }
}
