//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987). While alive, purchases
//! follow a Poisson process with rate λ ~ Gamma(r, α); lifetimes are
//! exponential with rate μ ~ Gamma(s, β). Likelihood as in Fader & Hardie, "A
//! Note on Implementing the Pareto/NBD Model in MATLAB" (2005), eq. 2-3.

use super::data::{Observation, RfmData};
use super::newton::{Likelihood, Real, ln_sum_exp};
use super::special::ln_hyp2f1;

/// Pareto/NBD parameters: r, α (purchase rate), s, β (dropout rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbd {
    /// Shape of the purchase-rate gamma.
    pub r: f64,
    /// Scale of the purchase-rate gamma (in periods).
    pub alpha: f64,
    /// Shape of the dropout-rate gamma.
    pub s: f64,
    /// Scale of the dropout-rate gamma (in periods).
    pub beta: f64,
}

/// ln A0 of the note (eq. 3) at parameters `p` = (r, α, s, β): the
/// difference of two hypergeometric terms, taken in logs, with the
/// transformation that keeps |z| < 1. Generic over the number type.
fn ln_a0<D: Real>(p: [D; 4], o: &Observation) -> Option<D> {
    let [r, alpha, s, beta] = p;
    let (x, tx, t) = (o.frequency, o.recency, o.age);
    let (big, small, b_param) = if alpha.re() >= beta.re() {
        (alpha, beta, s + 1.0)
    } else {
        (beta, alpha, r + x)
    };
    let a_param = r + s + x;
    let c_param = a_param + 1.0;
    let term = |age: f64| -> Option<D> {
        let z = (big - small) / (big + age);
        Some(ln_hyp2f1(a_param, b_param, c_param, z)? - a_param * (big + age).ln())
    };
    let first = term(tx)?;
    let second = term(t)?;
    if tx >= t || first.re() <= second.re() {
        return Some(D::from(f64::NEG_INFINITY));
    }
    // ln(e^first − e^second).
    Some(first + (-(second - first).exp()).ln_1p())
}

/// Log-likelihood of one history at `p` = (r, α, s, β) (the note, eq. 2),
/// generic over the number type; `None` when the hypergeometric series does
/// not converge.
fn ln_row<D: Real>(p: [D; 4], o: &Observation) -> Option<D> {
    let [r, alpha, s, beta] = p;
    let (x, t) = (o.frequency, o.age);
    let head = (r + x).ln_gamma() - r.ln_gamma() + r * alpha.ln() + s * beta.ln();
    let alive = -(r + x) * (alpha + t).ln() - s * (beta + t).ln();
    let dead = (s / (r + s + x)).ln() + ln_a0(p, o)?;
    Some(head + ln_sum_exp(&[alive, dead]))
}

impl ParetoNbd {
    /// Parameter names, in [`ParetoNbd::to_vec`] order.
    pub const NAMES: [&'static str; 4] = ["r", "alpha", "s", "beta"];

    /// From `[r, alpha, s, beta]`.
    pub fn from_slice(p: &[f64]) -> Self {
        Self {
            r: p[0],
            alpha: p[1],
            s: p[2],
            beta: p[3],
        }
    }

    /// As `[r, alpha, s, beta]`.
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.r, self.alpha, self.s, self.beta]
    }

    fn params(&self) -> [f64; 4] {
        [self.r, self.alpha, self.s, self.beta]
    }

    /// Log-likelihood of one customer's history, or `None` when the
    /// hypergeometric series does not converge.
    pub fn ln_likelihood(&self, o: &Observation) -> Option<f64> {
        ln_row(self.params(), o)
    }

    /// Total log-likelihood (weighted); `-inf` if any term cannot be computed.
    pub fn total_ln_likelihood(&self, data: &RfmData) -> f64 {
        Self::total(self.params(), data)
    }

    /// Probability that the customer is alive at the end of calibration.
    pub fn p_alive(&self, o: &Observation) -> Option<f64> {
        let Self { r, alpha, s, beta } = *self;
        let (x, t) = (o.frequency, o.age);
        let ln_ratio = (s / (r + s + x)).ln()
            + (r + x) * (alpha + t).ln()
            + s * (beta + t).ln()
            + ln_a0(self.params(), o)?;
        Some(1.0 / (1.0 + ln_ratio.exp()))
    }

    /// Expected purchases in the next `horizon` periods given the history
    /// (Schmittlein et al. 1987, eq. 22). Valid for any `s` but 1, where the
    /// closed form has a removable singularity (`None` there).
    pub fn expected_purchases(&self, o: &Observation, horizon: f64) -> Option<f64> {
        let Self { r, alpha, s, beta } = *self;
        if s == 1.0 || horizon < 0.0 {
            return None;
        }
        let (x, t) = (o.frequency, o.age);
        let p = self.p_alive(o)?;
        let rate = (r + x) * (beta + t) / ((alpha + t) * (s - 1.0));
        Some(rate * (1.0 - ((beta + t) / (beta + t + horizon)).powf(s - 1.0)) * p)
    }
}

impl Likelihood<4> for ParetoNbd {
    type Data = RfmData;

    /// The weighted sum over the distinct histories; −∞ when any term
    /// cannot be computed.
    fn total<D: Real>(p: [D; 4], data: &RfmData) -> D {
        let mut total = D::zero();
        for (o, w) in data.rows.iter().zip(&data.weights) {
            match ln_row(p, o) {
                Some(l) => total += l * *w,
                None => return D::from(f64::NEG_INFINITY),
            }
        }
        total
    }
}
