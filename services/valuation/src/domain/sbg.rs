//! sBG, the shifted-beta-geometric model of contractual retention (Fader &
//! Hardie 2007, "How to Project Customer Retention", Journal of Interactive
//! Marketing 21(1), 76-90).
//!
//! Each customer renews at every opportunity until it churns, with a churn
//! probability θ ~ Beta(α, β) of its own. The probability of churning at
//! opportunity t and of surviving past it are (FH 2007, eqs. 5 and 6)
//!
//! P(T = t) = B(α+1, β+t−1) / B(α,β),  S(t) = B(α, β+t) / B(α,β).
//!
//! A customer with m renewals in n opportunities churned at m + 1 when
//! m < n and contributes ln P(T = m + 1); one with m = n is still active and
//! contributes ln S(n).

use super::discrete::{DiscreteData, Opportunities, ln_rising};
use super::newton::{Likelihood, Real};

/// sBG parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sbg {
    /// First shape of the churn probability's beta.
    pub alpha: f64,
    /// Second shape of the churn probability's beta.
    pub beta: f64,
}

impl Sbg {
    /// Parameter names, in order.
    pub const NAMES: [&'static str; 2] = ["alpha", "beta"];

    /// From `[alpha, beta]`.
    pub fn from_slice(p: &[f64]) -> Self {
        Self {
            alpha: p[0],
            beta: p[1],
        }
    }

    /// Whether the customer is still active: it renewed at every
    /// opportunity so far.
    pub fn active(o: &Opportunities) -> bool {
        o.renewals >= o.n
    }

    /// P(alive): 1 for an active customer, 0 for one that churned.
    pub fn p_alive(&self, o: &Opportunities) -> f64 {
        if Self::active(o) { 1.0 } else { 0.0 }
    }

    /// The expected renewals at each of the next `h` opportunities,
    /// S(n + k) / S(n) for an active customer (FH 2007, eq. 7: the retention
    /// rate at opportunity t is (β + t − 1) / (α + β + t − 1)); zeros for
    /// one that churned.
    pub fn increments(&self, o: &Opportunities, h: u32) -> Vec<f64> {
        if !Self::active(o) {
            return vec![0.0; h as usize];
        }
        let mut out = Vec::with_capacity(h as usize);
        let mut survival = 1.0;
        for k in 0..h {
            let t = f64::from(o.n + k);
            survival *= (self.beta + t) / (self.alpha + self.beta + t);
            out.push(survival);
        }
        out
    }

    /// Expected renewals over the next `h` opportunities.
    pub fn expected_purchases(&self, o: &Opportunities, h: u32) -> f64 {
        self.increments(o, h).iter().sum()
    }

    /// The survival function S(t) of a new customer.
    pub fn survival(&self, t: u32) -> f64 {
        (0..t)
            .map(|j| (self.beta + f64::from(j)) / (self.alpha + self.beta + f64::from(j)))
            .product()
    }
}

impl Likelihood<2> for Sbg {
    type Data = DiscreteData;

    fn total<D: Real>(p: [D; 2], data: &DiscreteData) -> D {
        let [a, b] = p;
        let m = data.max_n as usize + 1;
        let (lb, lab) = (ln_rising(b, m), ln_rising(a + b, m));
        let la = a.ln();
        let mut total = D::zero();
        for (o, w) in data.rows.iter().zip(&data.weights) {
            let (r, n) = (o.renewals as usize, o.n as usize);
            let ll = if r < n {
                la + lb[r] - lab[r + 1]
            } else {
                lb[n] - lab[n]
            };
            total += ll * *w;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fit::maximise_to;
    use crate::domain::newton::{hyper_dual, polish, standard_errors};

    /// Customers still active at the start of years 0..=7 of the two cohorts
    /// of Fader & Hardie (2007), per 1,000.
    pub(crate) const REGULAR: [u32; 8] = [1000, 631, 468, 382, 326, 289, 262, 241];
    pub(crate) const HIGH_END: [u32; 8] = [1000, 869, 743, 653, 593, 551, 517, 491];

    /// A cohort's histories after 7 yearly opportunities: those lost in year
    /// t renewed t − 1 times; the survivors renewed 7 times.
    pub(crate) fn cohort(alive: &[u32]) -> DiscreteData {
        let n = (alive.len() - 1) as i64;
        let mut histories = Vec::new();
        for t in 1..alive.len() {
            let lost = alive[t - 1] - alive[t];
            let m = (t - 1) as i64;
            let o = Opportunities::new(n, m, m, m).unwrap();
            histories.extend(std::iter::repeat_n(o, lost as usize));
        }
        let o = Opportunities::new(n, n, n, n).unwrap();
        histories.extend(std::iter::repeat_n(o, alive[alive.len() - 1] as usize));
        DiscreteData::new(histories)
    }

    fn fit(data: &DiscreteData) -> ([f64; 2], f64, Vec<Option<f64>>) {
        let ll = |p: &[f64]| Sbg::total([p[0], p[1]], data);
        let coarse = maximise_to(ll, &[1.0; 2], 5000, 1e-8).unwrap();
        let (p, d) = polish([coarse.params[0], coarse.params[1]], |q| {
            hyper_dual::<Sbg, 2>(q, data)
        })
        .unwrap();
        (p, d.value, standard_errors(&d))
    }

    #[test]
    fn reproduces_the_published_retention_fits() {
        // Fader & Hardie (2007), fitted on years 1-7: regular α = 0.704,
        // β = 1.182; high end α = 0.668, β = 3.806.
        for (alive, want) in [(REGULAR, [0.704, 1.182]), (HIGH_END, [0.668, 3.806])] {
            let data = cohort(&alive);
            assert_eq!(data.customers(), 1000.0);
            let (p, ll, se) = fit(&data);
            for (got, want) in p.iter().zip(want) {
                assert!((got - want).abs() < 5e-4, "{p:?} vs {want:?}");
            }
            assert!(ll < 0.0 && ll.is_finite());
            assert!(se.iter().all(|s| s.is_some_and(|s| s > 0.0)), "{se:?}");
            // The fitted survival curve follows the calibration years to
            // within 2 % of the cohort (the largest gap is the high-end
            // cohort's first year, 851 against 869).
            let m = Sbg::from_slice(&p);
            for (t, a) in alive.iter().enumerate() {
                let got = 1000.0 * m.survival(t as u32);
                assert!((got - f64::from(*a)).abs() < 20.0, "year {t}: {got} vs {a}");
            }
        }
    }

    #[test]
    fn active_and_churned_customers() {
        let m = Sbg {
            alpha: 0.704,
            beta: 1.182,
        };
        let active = Opportunities::new(3, 3, 3, 3).unwrap();
        let churned = Opportunities::new(3, 1, 1, 1).unwrap();
        assert_eq!(m.p_alive(&active), 1.0);
        assert_eq!(m.p_alive(&churned), 0.0);
        assert_eq!(m.expected_purchases(&churned, 5), 0.0);
        // Next year's retention of a 3-year customer: (β + 3)/(α + β + 3).
        let r = m.increments(&active, 2);
        assert!((r[0] - (m.beta + 3.0) / (m.alpha + m.beta + 3.0)).abs() < 1e-15);
        assert!(r[1] < r[0]);
        // S(n + k) / S(n) from the survival function.
        assert!((r[1] - m.survival(5) / m.survival(3)).abs() < 1e-12);
    }
}
