//! What the discrete-time models (BG/BB, sBG) share: a history counted in
//! opportunities, pooled data, log rising factorials, and exact derivatives.
//!
//! Both likelihoods are sums and products of beta-function ratios
//! B(a + k, b + l) / B(a, b) with integer k and l, which are ratios of
//! rising factorials (a)_k (b)_l / (a + b)_{k+l}. So they are written once,
//! generically over a number type, and evaluated with `f64` while the
//! optimiser searches and with hyper-dual numbers (`num_dual`) for the exact
//! gradient and Hessian: a Newton polish of the optimum and exact standard
//! errors, with no finite differences.

use std::collections::HashMap;

use num_dual::{DualNum, HyperDual64};

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
pub fn ln_rising<D: DualNum<Primitive = f64> + Copy>(a: D, max: usize) -> Vec<D> {
    let mut out = Vec::with_capacity(max + 1);
    let mut acc = D::zero();
    out.push(acc);
    for j in 0..max {
        acc += (a + j as f64).ln();
        out.push(acc);
    }
    out
}

/// ln Σ exp(terms), shifted by the largest real part for stability.
pub fn ln_sum_exp<D: DualNum<Primitive = f64> + Copy>(terms: &[D]) -> D {
    let top = terms
        .iter()
        .map(|t| t.re())
        .fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return D::from(top);
    }
    let sum = terms
        .iter()
        .fold(D::zero(), |acc, t| acc + (*t - top).exp());
    sum.ln() + top
}

/// A discrete-time model's log-likelihood, generic over the number type.
pub trait Likelihood<const K: usize> {
    /// The total log-likelihood of `data` at `params`.
    fn total<D: DualNum<Primitive = f64> + Copy>(params: [D; K], data: &DiscreteData) -> D;
}

/// Value, gradient and Hessian of a log-likelihood at a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Derivatives<const K: usize> {
    /// The log-likelihood.
    pub value: f64,
    /// Its gradient.
    pub gradient: [f64; K],
    /// Its Hessian.
    pub hessian: [[f64; K]; K],
}

/// The exact derivatives of `L` at `p`: one hyper-dual evaluation per pair
/// of parameters. None when not finite.
pub fn derivatives<L: Likelihood<K>, const K: usize>(
    p: [f64; K],
    data: &DiscreteData,
) -> Option<Derivatives<K>> {
    let mut d = Derivatives {
        value: 0.0,
        gradient: [0.0; K],
        hessian: [[0.0; K]; K],
    };
    for i in 0..K {
        for j in i..K {
            let args: [HyperDual64; K] = std::array::from_fn(|k| {
                HyperDual64::new(
                    p[k],
                    if k == i { 1.0 } else { 0.0 },
                    if k == j { 1.0 } else { 0.0 },
                    0.0,
                )
            });
            let v = L::total(args, data);
            d.value = v.re;
            if i == j {
                d.gradient[i] = v.eps1;
            }
            d.hessian[i][j] = v.eps1eps2;
            d.hessian[j][i] = v.eps1eps2;
        }
    }
    let finite = d.value.is_finite()
        && d.gradient.iter().all(|g| g.is_finite())
        && d.hessian.iter().flatten().all(|h| h.is_finite());
    finite.then_some(d)
}

/// Newton steps from `start` (a maximum found by a derivative-free search)
/// until the step is below 1e-12 relative, each step halved until it stays
/// in the parameter space and does not lower the likelihood. Returns the
/// polished point and its derivatives.
pub fn polish<L: Likelihood<K>, const K: usize>(
    start: [f64; K],
    data: &DiscreteData,
) -> Option<([f64; K], Derivatives<K>)> {
    let mut p = start;
    let mut d = derivatives::<L, K>(p, data)?;
    for _ in 0..50 {
        let Some(inv) = super::fit::invert(d.hessian.iter().map(|r| r.to_vec()).collect()) else {
            break;
        };
        let step: [f64; K] =
            std::array::from_fn(|i| -(0..K).map(|j| inv[i][j] * d.gradient[j]).sum::<f64>());
        // An ascent direction only where −H is positive definite.
        if step
            .iter()
            .zip(&d.gradient)
            .map(|(s, g)| s * g)
            .sum::<f64>()
            < 0.0
        {
            break;
        }
        let mut scale = 1.0;
        let mut moved = None;
        while scale > 1e-6 {
            let q: [f64; K] = std::array::from_fn(|i| p[i] + scale * step[i]);
            if q.iter().all(|v| *v > 0.0)
                && let Some(dq) =
                    derivatives::<L, K>(q, data).filter(|dq| dq.value >= d.value - 1e-9)
            {
                moved = Some((q, dq));
                break;
            }
            scale /= 2.0;
        }
        let Some((q, dq)) = moved else { break };
        let small = (0..K).all(|i| (q[i] - p[i]).abs() <= 1e-12 * p[i].abs());
        p = q;
        d = dq;
        if small {
            break;
        }
    }
    Some((p, d))
}

/// Standard errors from the exact observed information −H: the square roots
/// of the diagonal of its inverse; all `None` when it is not invertible.
pub fn standard_errors<const K: usize>(d: &Derivatives<K>) -> Vec<Option<f64>> {
    let info: Vec<Vec<f64>> = d
        .hessian
        .iter()
        .map(|row| row.iter().map(|v| -v).collect())
        .collect();
    match super::fit::invert(info) {
        Some(cov) => (0..K)
            .map(|i| (cov[i][i] > 0.0 && cov[i][i].is_finite()).then(|| cov[i][i].sqrt()))
            .collect(),
        None => vec![None; K],
    }
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
        let s = ln_sum_exp(&[1000.0f64, 1000.0]);
        assert!((s - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}
