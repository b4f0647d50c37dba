//! The last steps of every fit: Newton's method on exact derivatives from a
//! coarse optimum, and standard errors from the exact observed information.
//!
//! Derivatives come either from hand-derived formulas (BG/NBD and MBG/NBD in
//! [`super::exact`], Gamma-Gamma in [`super::gamma_gamma`]) or from a
//! likelihood written once, generically over its number type ([`Real`]),
//! and evaluated with hyper-dual numbers (`num_dual`): one evaluation per
//! pair of parameters gives that entry of the Hessian exactly, with no
//! finite differences (BG/BB, sBG, Pareto/NBD).

use ::special::Gamma;
use num_dual::{DualNum, HyperDual64};

use super::fit::Fitted;

/// A number a likelihood can be evaluated in: `f64`, or a hyper-dual number
/// carrying first and second derivatives.
pub trait Real: DualNum<Primitive = f64> + Copy {
    /// ln Γ(self), for a positive real part.
    fn ln_gamma(self) -> Self;
}

impl Real for f64 {
    fn ln_gamma(self) -> Self {
        statrs::function::gamma::ln_gamma(self)
    }
}

impl Real for HyperDual64 {
    /// By the chain rule with the digamma and trigamma functions:
    /// f(a + b₁ε₁ + b₂ε₂ + b₁₂ε₁ε₂) = f(a) + f′(a)(b₁ε₁ + b₂ε₂ + b₁₂ε₁ε₂)
    /// + f″(a) b₁b₂ ε₁ε₂.
    fn ln_gamma(self) -> Self {
        let a = self.re;
        let (d1, d2) = (a.digamma(), a.trigamma());
        HyperDual64::new(
            statrs::function::gamma::ln_gamma(a),
            d1 * self.eps1,
            d1 * self.eps2,
            d1 * self.eps1eps2 + d2 * self.eps1 * self.eps2,
        )
    }
}

/// ln Σ exp(terms), shifted by the largest real part for stability.
pub fn ln_sum_exp<D: Real>(terms: &[D]) -> D {
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

/// A log-likelihood written generically over its number type.
pub trait Likelihood<const K: usize> {
    /// What it is evaluated on.
    type Data;
    /// The total log-likelihood of `data` at `params`.
    fn total<D: Real>(params: [D; K], data: &Self::Data) -> D;
}

/// Value, gradient and Hessian of a log-likelihood at a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Derivatives<const K: usize> {
    /// The log-likelihood.
    pub value: f64,
    /// Its gradient.
    pub gradient: [f64; K],
    /// Its Hessian.
    pub hessian: [[f64; K]; K],
}

impl<const K: usize> Derivatives<K> {
    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.value.is_finite()
            && self.gradient.iter().all(|g| g.is_finite())
            && self.hessian.iter().flatten().all(|h| h.is_finite())
    }
}

/// The exact derivatives of `L` at `p` by hyper-dual numbers: one
/// evaluation per pair of parameters. None when not finite.
pub fn hyper_dual<L: Likelihood<K>, const K: usize>(
    p: [f64; K],
    data: &L::Data,
) -> Option<Derivatives<K>> {
    let mut d = Derivatives {
        value: 0.0,
        gradient: [0.0; K],
        hessian: [[0.0; K]; K],
    };
    for i in 0..K {
        for j in i..K {
            let seed = |k: usize, at: usize| if k == at { 1.0 } else { 0.0 };
            let args: [HyperDual64; K] =
                std::array::from_fn(|k| HyperDual64::new(p[k], seed(k, i), seed(k, j), 0.0));
            let v = L::total(args, data);
            d.value = v.re;
            if i == j {
                d.gradient[i] = v.eps1;
            }
            d.hessian[i][j] = v.eps1eps2;
            d.hessian[j][i] = v.eps1eps2;
        }
    }
    d.is_finite().then_some(d)
}

/// Newton steps from `start` (a maximum found by a derivative-free search)
/// until the step is below 1e-12 relative, each step halved until it stays
/// in the parameter space and does not lower the likelihood. Returns the
/// polished point and its derivatives (`start`'s when the Hessian is not
/// negative definite there).
pub fn polish<const K: usize>(
    start: [f64; K],
    eval: impl Fn([f64; K]) -> Option<Derivatives<K>>,
) -> Option<([f64; K], Derivatives<K>)> {
    let mut p = start;
    let mut d = eval(p)?;
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
            if q.iter().all(|v| *v > 0.0 && v.is_finite())
                && let Some(dq) = eval(q).filter(|dq| dq.value >= d.value - 1e-9)
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

/// Newton steps from a coarse optimum to the maximum, with standard errors
/// from the exact observed information. None when Newton's method cannot
/// finish there (the Hessian not negative definite, or the gradient not
/// vanishing): the caller then falls back on the full search.
pub fn finish<const K: usize>(
    coarse: &Fitted,
    eval: impl Fn([f64; K]) -> Option<Derivatives<K>>,
) -> Option<Fitted> {
    let start: [f64; K] = coarse.params.get(..K)?.try_into().ok()?;
    let (p, d) = polish(start, eval)?;
    // At a maximum the gradient vanishes, to the sums' rounding.
    let scale = d.value.abs().max(1.0);
    let flat = (0..K).all(|i| (d.gradient[i] * p[i]).abs() <= 1e-6 * scale);
    let std_errors = standard_errors(&d);
    (flat && std_errors.iter().all(Option::is_some)).then(|| Fitted {
        params: p.to_vec(),
        std_errors,
        log_likelihood: d.value,
        iterations: coarse.iterations,
        converged: coarse.converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_carries_digamma_and_trigamma() {
        // d/da ln Γ(a) at a = 1 is −γ (Euler), d²/da² is π²/6.
        let v = HyperDual64::new(1.0, 1.0, 1.0, 0.0).ln_gamma();
        assert!(v.re.abs() < 1e-15);
        assert!((v.eps1 + 0.577_215_664_901_532_9).abs() < 1e-14);
        assert!((v.eps1eps2 - std::f64::consts::PI.powi(2) / 6.0).abs() < 1e-13);
    }

    #[test]
    fn ln_sum_exp_is_stable() {
        let s = ln_sum_exp(&[1000.0f64, 1000.0]);
        assert!((s - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }

    struct Quadratic;

    impl Likelihood<2> for Quadratic {
        type Data = ();
        fn total<D: Real>(p: [D; 2], _: &()) -> D {
            // −(x − 1)² − 2(y − 3)² − (x − 1)(y − 3)
            let (x, y) = (p[0] - 1.0, p[1] - 3.0);
            -(x * x) - y * y * 2.0 - x * y
        }
    }

    #[test]
    fn newton_finds_a_quadratic_maximum_in_one_step() {
        let d = hyper_dual::<Quadratic, 2>([2.0, 2.0], &()).unwrap();
        assert_eq!(d.hessian, [[-2.0, -1.0], [-1.0, -4.0]]);
        let (p, d) = polish([2.0, 2.0], |p| hyper_dual::<Quadratic, 2>(p, &())).unwrap();
        assert!((p[0] - 1.0).abs() < 1e-12 && (p[1] - 3.0).abs() < 1e-12);
        // Covariance = (−H)⁻¹ = [[4, −1], [−1, 2]] / 7.
        let se = standard_errors(&d);
        assert!((se[0].unwrap() - (4.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((se[1].unwrap() - (2.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }
}
