//! MBG/NBD (Batislam, Denizel & Filiztekin 2007, "Empirical validation and
//! comparison of models for customer base analysis", International Journal
//! of Research in Marketing 24(3), 201-209).
//!
//! BG/NBD with one change: a customer may drop out at the first purchase as
//! well as after each repeat purchase, so a customer who never came back is
//! not certain to be alive. While alive, purchases follow a Poisson process
//! with rate λ ~ Gamma(r, α); at each purchase, the first included, the
//! customer drops out with probability p ~ Beta(a, b).

use super::bgnbd::{
    conditional_purchases, family_ln_likelihood, family_p_alive, family_total_ln_likelihood,
};
use super::data::{Observation, RfmData};
use super::special::hyp2f1_signed;

/// MBG/NBD parameters: r, α (purchase rate), a, b (dropout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbgNbd {
    /// Shape of the purchase-rate gamma.
    pub r: f64,
    /// Scale of the purchase-rate gamma (in periods).
    pub alpha: f64,
    /// First dropout beta parameter.
    pub a: f64,
    /// Second dropout beta parameter.
    pub b: f64,
}

impl MbgNbd {
    /// Parameter names, in [`MbgNbd::to_vec`] order.
    pub const NAMES: [&'static str; 4] = ["r", "alpha", "a", "b"];

    /// From `[r, alpha, a, b]`.
    pub fn from_slice(p: &[f64]) -> Self {
        Self {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        }
    }

    /// As `[r, alpha, a, b]`.
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.r, self.alpha, self.a, self.b]
    }

    /// Log-likelihood of one customer's history (Batislam et al. 2007, eq. 4):
    /// alive at T, or dropped at the last purchase (the first one when x = 0).
    pub fn ln_likelihood(&self, o: &Observation) -> f64 {
        family_ln_likelihood(self.params(), o, 1.0)
    }

    /// Total log-likelihood of the data (weighted by identical customers),
    /// with the frequency terms computed once per distinct frequency.
    pub fn total_ln_likelihood(&self, data: &RfmData) -> f64 {
        family_total_ln_likelihood(self.params(), data, 1.0)
    }

    /// Probability that the customer is still alive at the end of the
    /// observation: 1 / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x)). Below 1 for
    /// every customer, those without repeat purchases included.
    pub fn p_alive(&self, o: &Observation) -> f64 {
        family_p_alive(self.params(), o, 1.0)
    }

    fn params(self) -> [f64; 4] {
        [self.r, self.alpha, self.a, self.b]
    }

    /// Expected purchases in the next `horizon` periods, given the history
    /// (Batislam et al. 2007, eq. 8):
    /// (a+b+x)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x+1; a+b+x; t/(α+T+t))]
    /// / (1 + a/(b+x) · ((α+T)/(α+t_x))^(r+x)).
    /// `None` when `a = 1` (a removable singularity of the closed form) or
    /// the hypergeometric series does not converge.
    pub fn expected_purchases(&self, o: &Observation, horizon: f64) -> Option<f64> {
        conditional_purchases(self.to_vec(), o, horizon, 1.0)
    }

    /// Expected purchases of a new customer in `t` periods:
    /// b/(a−1) · [1 − (α/(α+t))^r · ₂F₁(r, b+1; a+b; t/(α+t))].
    pub fn expected_purchases_new(&self, t: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        if a == 1.0 {
            return None;
        }
        let z = t / (alpha + t);
        let (ln_f, sign) = hyp2f1_signed(r, b + 1.0, a + b, z)?;
        Some(b / (a - 1.0) * (1.0 - sign * (r * (alpha / (alpha + t)).ln() + ln_f).exp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CDNOW estimates of BTYDplus's `mbgcnbd.EstimateParameters`, as
    /// quoted in lifetimes' tests (`test_modified_beta_geo_fitter`).
    const CDNOW: MbgNbd = MbgNbd {
        r: 0.525,
        alpha: 6.183,
        a: 0.891,
        b: 1.614,
    };

    fn obs(frequency: f64, recency: f64, age: f64) -> Observation {
        Observation {
            frequency,
            recency,
            age,
        }
    }

    #[test]
    fn the_pooled_likelihood_is_the_sum_of_the_customers() {
        let histories = [
            obs(0.0, 0.0, 38.86),
            obs(2.0, 30.43, 38.86),
            obs(2.0, 30.43, 38.86),
            obs(6.0, 35.0, 38.86),
            obs(1.0, 0.5, 20.0),
        ];
        let direct: f64 = histories.iter().map(|o| CDNOW.ln_likelihood(o)).sum();
        let pooled = CDNOW.total_ln_likelihood(&RfmData::new(histories));
        assert!((direct - pooled).abs() < 1e-9, "{direct} vs {pooled}");
    }

    /// Values of lifetimes 0.11.3's `ModifiedBetaGeoFitter` (an independent
    /// implementation) at its CDNOW fit r 0.5248377, α 6.1829885,
    /// a 0.8913563, b 1.6140000: P(alive) and expected purchases in 39 weeks.
    #[test]
    fn predictions_match_an_independent_implementation() {
        let m = MbgNbd {
            r: 0.5248377255676623,
            alpha: 6.182988479133949,
            a: 0.8913562809311403,
            b: 1.6140000256721425,
        };
        let cases = [
            (obs(0.0, 0.0, 38.86), 0.38971644, 0.15395364436667586),
            (obs(2.0, 30.43, 38.86), 0.70612626, 1.2626707787139375),
            (obs(6.0, 35.0, 38.86), 0.82641448, 3.6636281911768758),
            (obs(1.0, 0.5, 20.0), 0.26769648, 0.4617055735122321),
        ];
        for (o, alive, expected) in cases {
            assert!((m.p_alive(&o) - alive).abs() < 1e-7, "{o:?}");
            let e = m.expected_purchases(&o, 39.0).unwrap();
            assert!((e - expected).abs() < 1e-9 * expected, "{o:?}: {e}");
        }
        let new = m.expected_purchases_new(39.0).unwrap();
        assert!((new - 1.1822837952882788).abs() < 1e-9, "{new}");
    }

    #[test]
    fn a_customer_just_acquired_is_expected_to_buy_like_a_new_one() {
        let fresh = obs(0.0, 0.0, 1e-12);
        for t in [1.0, 10.0, 52.0] {
            let given = CDNOW.expected_purchases(&fresh, t).unwrap();
            let new = CDNOW.expected_purchases_new(t).unwrap();
            assert!(
                (given - new).abs() < 1e-9 * new.max(1.0),
                "{t}: {given} vs {new}"
            );
        }
    }

    #[test]
    fn a_customer_without_repeat_purchases_may_be_gone() {
        let one_timer = obs(0.0, 0.0, 38.86);
        let p = CDNOW.p_alive(&one_timer);
        assert!(p > 0.0 && p < 1.0, "{p}");
        // The longer since the first purchase, the less likely alive.
        assert!(CDNOW.p_alive(&obs(0.0, 0.0, 78.0)) < p);
        assert_eq!(CDNOW.expected_purchases(&one_timer, 0.0), Some(0.0));
        assert_eq!(
            MbgNbd { a: 1.0, ..CDNOW }.expected_purchases(&one_timer, 1.0),
            None
        );
    }
}
