//! BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way").
//!
//! While alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α);
//! after each purchase they drop out with probability p ~ Beta(a, b).

use statrs::function::beta::ln_beta;
use statrs::function::gamma::ln_gamma;

use super::data::{Observation, RfmData};
use super::special::ln_hyp2f1;

/// BG/NBD parameters: r, α (purchase rate), a, b (dropout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    /// Shape of the purchase-rate gamma.
    pub r: f64,
    /// Scale of the purchase-rate gamma (in periods).
    pub alpha: f64,
    /// First dropout beta parameter.
    pub a: f64,
    /// Second dropout beta parameter.
    pub b: f64,
}

fn log_add_exp(x: f64, y: f64) -> f64 {
    let m = x.max(y);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((x - m).exp() + (y - m).exp()).ln()
}

impl BgNbd {
    /// Parameter names, in [`BgNbd::to_vec`] order.
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

    /// Log-likelihood of one customer's history (FHL 2005, eq. 6).
    pub fn ln_likelihood(&self, o: &Observation) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let (x, tx, t) = (o.frequency, o.recency, o.age);
        let common =
            ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + ln_beta(a, b + x) - ln_beta(a, b);
        let alive = -(r + x) * (alpha + t).ln();
        if x > 0.0 {
            let dropped = (a / (b + x - 1.0)).ln() - (r + x) * (alpha + tx).ln();
            common + log_add_exp(alive, dropped)
        } else {
            common + alive
        }
    }

    /// Total log-likelihood of the data (weighted by identical customers).
    pub fn total_ln_likelihood(&self, data: &RfmData) -> f64 {
        data.rows
            .iter()
            .zip(&data.weights)
            .map(|(o, w)| w * self.ln_likelihood(o))
            .sum()
    }

    /// Probability that the customer is still alive at the end of calibration
    /// (FHL 2005, eq. 11; 1 for customers without repeat purchases).
    pub fn p_alive(&self, o: &Observation) -> f64 {
        if o.frequency == 0.0 {
            return 1.0;
        }
        let Self { r, alpha, a, b } = *self;
        let x = o.frequency;
        let ln_ratio =
            (a / (b + x - 1.0)).ln() + (r + x) * ((alpha + o.age) / (alpha + o.recency)).ln();
        1.0 / (1.0 + ln_ratio.exp())
    }

    /// Expected purchases in the next `horizon` periods, given the history
    /// (FHL 2005, eq. 10). `None` when `a = 1` (where the closed form has a
    /// removable singularity) or the hypergeometric series does not converge.
    pub fn expected_purchases(&self, o: &Observation, horizon: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        if a == 1.0 || horizon < 0.0 {
            return None;
        }
        if horizon == 0.0 {
            return Some(0.0);
        }
        let (x, tx, t) = (o.frequency, o.recency, o.age);
        let z = horizon / (alpha + t + horizon);
        let ln_f = ln_hyp2f1(r + x, b + x, a + b + x - 1.0, z)?;
        let head = (a + b + x - 1.0) / (a - 1.0);
        let tail = 1.0 - ((r + x) * ((alpha + t) / (alpha + t + horizon)).ln() + ln_f).exp();
        let denom = if x > 0.0 {
            1.0 + (a / (b + x - 1.0)) * ((alpha + t) / (alpha + tx)).powf(r + x)
        } else {
            1.0
        };
        Some(head * tail / denom)
    }

    /// Expected purchases of a new customer in `t` periods (FHL 2005, eq. 9).
    pub fn expected_purchases_new(&self, t: f64) -> Option<f64> {
        let Self { r, alpha, a, b } = *self;
        if a == 1.0 {
            return None;
        }
        let z = t / (alpha + t);
        let ln_f = ln_hyp2f1(r, b, a + b - 1.0, z)?;
        Some((a + b - 1.0) / (a - 1.0) * (1.0 - (r * (alpha / (alpha + t)).ln() + ln_f).exp()))
    }
}
