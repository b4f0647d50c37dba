//! Acceptance probabilities: a Beta-Binomial model per treatment and ladder
//! rung. The treatment's prior Beta(α, β) is updated with the decisions'
//! outcomes: α + accepted, β + refused (declined or ignored).

use rand::Rng;
use rand_distr::Distribution;
use statrs::function::beta::checked_beta_reg;

/// A posterior Beta(alpha, beta) with the outcomes it counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posterior {
    /// α: prior pseudo-acceptances plus acceptances.
    pub alpha: f64,
    /// β: prior pseudo-refusals plus refusals.
    pub beta: f64,
    /// Accepted decisions counted.
    pub accepted: i64,
    /// Declined and ignored decisions counted.
    pub refused: i64,
}

impl Posterior {
    /// The prior updated with the counts.
    pub fn new(prior_alpha: f64, prior_beta: f64, accepted: i64, refused: i64) -> Self {
        Self {
            alpha: prior_alpha + accepted as f64,
            beta: prior_beta + refused as f64,
            accepted,
            refused,
        }
    }

    /// The posterior mean α / (α + β).
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// The `q` quantile of the posterior, by bisection of its CDF to within
    /// 2⁻⁶⁴ (the mean if the CDF cannot be computed, which valid priors
    /// never cause). Not statrs' `inverse_cdf`: it panics or never returns
    /// for some valid shapes (a subnormal α or β, or a tiny one next to a
    /// large count).
    pub fn quantile(&self, q: f64) -> f64 {
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        for _ in 0..64 {
            let mid = lo + (hi - lo) / 2.0;
            match checked_beta_reg(self.alpha, self.beta, mid) {
                Ok(p) if p < q => lo = mid,
                Ok(_) => hi = mid,
                Err(_) => return self.mean(),
            }
        }
        lo + (hi - lo) / 2.0
    }

    /// One draw from the posterior (Thompson sampling).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        rand_distr::Beta::new(self.alpha, self.beta)
            .map(|b| b.sample(rng))
            .unwrap_or_else(|_| self.mean())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_posterior_counts_outcomes() {
        let p = Posterior::new(1.0, 9.0, 3, 7);
        assert_eq!((p.alpha, p.beta), (4.0, 16.0));
        assert!((p.mean() - 0.2).abs() < 1e-15);
    }

    #[test]
    fn quantiles_match_the_beta_distribution() {
        // Beta(1, 1) is uniform: its quantiles are the probabilities.
        let u = Posterior::new(1.0, 1.0, 0, 0);
        assert!((u.quantile(0.05) - 0.05).abs() < 1e-9);
        assert!((u.quantile(0.95) - 0.95).abs() < 1e-9);
        // Beta(2, 1) has CDF x², so its 25 % quantile is 0.5.
        let b = Posterior::new(2.0, 1.0, 0, 0);
        assert!((b.quantile(0.25) - 0.5).abs() < 1e-9);
        let p = Posterior::new(1.0, 9.0, 40, 160);
        assert!(p.quantile(0.05) < p.mean() && p.mean() < p.quantile(0.95));
    }

    #[test]
    fn quantiles_of_the_smallest_priors_are_computed() {
        // Valid priors (more than 0) for which statrs' inverse CDF panics or
        // never returns.
        for (a, b) in [
            (1.0, 5e-324),
            (10_000.0, 1e-310),
            (5e-324, 5e-324),
            (1e6, 1e-300),
        ] {
            let p = Posterior::new(a, b, 0, 0);
            let (lo, hi) = (p.quantile(0.05), p.quantile(0.95));
            assert!(
                (0.0..=1.0).contains(&lo) && lo <= hi && hi <= 1.0,
                "{a} {b}: {lo} {hi}"
            );
        }
        // Beta(1, b) has CDF 1 − (1 − x)^b.
        let p = Posterior::new(1.0, 1e5, 0, 0);
        let exact = -(0.05_f64.ln() / 1e5).exp_m1();
        assert!((p.quantile(0.95) / exact - 1.0).abs() < 1e-9);
    }

    #[test]
    fn draws_average_to_the_mean() {
        let p = Posterior::new(3.0, 7.0, 0, 0);
        let mut rng = StdRng::seed_from_u64(7);
        let n = 20_000;
        let mean = (0..n).map(|_| p.sample(&mut rng)).sum::<f64>() / f64::from(n);
        // Standard error of the mean: sqrt(var / n), var = αβ/((α+β)²(α+β+1)).
        let se = (21.0 / (100.0 * 11.0) / f64::from(n)).sqrt();
        assert!((mean - 0.3).abs() < 4.0 * se, "mean {mean}");
    }
}
