//! What the discrete-time models (BG/BB, sBG) share: a history counted in
//! opportunities, pooled data, log rising factorials, and exact derivatives.
//!
//! Both likelihoods are sums and products of beta-function ratios
//! B(a + k, b + l) / B(a, b) with integer k and l, which are ratios of
//! rising factorials (a)_k (b)_l / (a + b)_{k+l}. So they are written once,
//! generically over a number type ([`super::newton::Real`]), and evaluated
//! with `f64` while the optimiser searches and with hyper-dual numbers for
//! the exact gradient and Hessian.

use std::collections::HashMap;

use super::newton::Real;

/// One customer's history in opportunities
/// (`rapport.interaction.v1.OpportunityHistory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Opportunities {
    /// n: calibration opportunities.
    pub n: u32,
    /// x: opportunities with a purchase, 0..=n.
    pub x: u32,
    /// t_x: the last opportunity with a purchase, 0 when x = 0.
    pub recency: u32,
    /// Opportunities in a row from the first with a purchase, 0..=x.
    pub renewals: u32,
}

impl Opportunities {
    /// Longest history a model takes: 100 years of months, or about 27
    /// years of days.
    pub const MAX: i64 = 10_000;

    /// From the contract's integers, when they are consistent:
    /// 0 <= x <= t_x <= n (t_x = 0 when x = 0), renewals <= x, n <= MAX.
    pub fn new(n: i64, x: i64, recency: i64, renewals: i64) -> Option<Self> {
        let ok = (0..=Self::MAX).contains(&n)
            && (0..=n).contains(&x)
            && (0..=n).contains(&recency)
            && (if x == 0 { recency == 0 } else { recency >= x })
            && (0..=x).contains(&renewals);
        ok.then_some(Opportunities {
            n: n as u32,
            x: x as u32,
            recency: recency as u32,
            renewals: renewals as u32,
        })
    }
}

/// Opportunity histories with identical customers pooled, in one canonical
/// order, so every sum over them is the same whatever order the customers
/// came in.
#[derive(Debug, Clone, Default)]
pub struct DiscreteData {
    /// Distinct histories, sorted.
    pub rows: Vec<Opportunities>,
    /// How many customers share each.
    pub weights: Vec<f64>,
    /// The largest n.
    pub max_n: u32,
}

impl DiscreteData {
    /// Pools `histories`.
    pub fn new(histories: impl IntoIterator<Item = Opportunities>) -> Self {
        let mut counts: HashMap<Opportunities, f64> = HashMap::new();
        for h in histories {
            *counts.entry(h).or_default() += 1.0;
        }
        let mut rows: Vec<(Opportunities, f64)> = counts.into_iter().collect();
        rows.sort_unstable_by_key(|r| r.0);
        DiscreteData {
            max_n: rows.iter().map(|r| r.0.n).max().unwrap_or(0),
            weights: rows.iter().map(|r| r.1).collect(),
            rows: rows.into_iter().map(|r| r.0).collect(),
        }
    }

    /// Number of customers.
    pub fn customers(&self) -> f64 {
        self.weights.iter().sum()
    }
}

/// ln (a)_k = ln Γ(a + k) − ln Γ(a) for k = 0..=max, as running sums of
/// ln(a + j).
pub fn ln_rising<D: Real>(a: D, max: usize) -> Vec<D> {
    let mut out = Vec::with_capacity(max + 1);
    let mut acc = D::zero();
    out.push(acc);
    for j in 0..max {
        acc += (a + j as f64).ln();
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_checked_and_pooled_in_one_order() {
        assert!(Opportunities::new(6, 3, 5, 1).is_some());
        assert!(Opportunities::new(6, 0, 0, 0).is_some());
        assert!(Opportunities::new(6, 7, 6, 0).is_none());
        assert!(Opportunities::new(6, 3, 2, 0).is_none());
        assert!(Opportunities::new(6, 0, 1, 0).is_none());
        assert!(Opportunities::new(6, 2, 5, 3).is_none());
        assert!(Opportunities::new(-1, 0, 0, 0).is_none());
        let a = Opportunities::new(6, 3, 5, 1).unwrap();
        let b = Opportunities::new(2, 1, 1, 1).unwrap();
        let one = DiscreteData::new([a, b, a]);
        let two = DiscreteData::new([b, a, a]);
        assert_eq!(one.rows, two.rows);
        assert_eq!(one.weights, vec![1.0, 2.0]);
        assert_eq!(one.max_n, 6);
    }

    #[test]
    fn rising_factorials_and_sums() {
        let t = ln_rising(2.5f64, 3);
        assert!((t[3] - (2.5f64 * 3.5 * 4.5).ln()).abs() < 1e-14);
    }
}
