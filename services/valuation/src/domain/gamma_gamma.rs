//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV", and
//! Fader & Hardie, "The Gamma-Gamma Model of Monetary Value", 2013).
//!
//! A customer's transaction values are Gamma(p, ν) around their mean; ν varies
//! across customers as Gamma(q, γ). Spend is assumed independent of the
//! purchase process.

use statrs::function::gamma::ln_gamma;

use super::data::SpendData;

/// Gamma-Gamma parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    /// Shape of each transaction's value.
    pub p: f64,
    /// Shape of the across-customer gamma.
    pub q: f64,
    /// Scale of the across-customer gamma (currency units).
    pub gamma: f64,
}

impl GammaGamma {
    /// Parameter names, in [`GammaGamma::to_vec`] order.
    pub const NAMES: [&'static str; 3] = ["p", "q", "gamma"];

    /// From `[p, q, gamma]`.
    pub fn from_slice(v: &[f64]) -> Self {
        Self {
            p: v[0],
            q: v[1],
            gamma: v[2],
        }
    }

    /// As `[p, q, gamma]`.
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.p, self.q, self.gamma]
    }

    /// Log-likelihood of `x` repeat transactions with mean value `m` (eq. 3 of
    /// the 2013 note, with z̄ = m).
    pub fn ln_likelihood(&self, x: f64, m: f64) -> f64 {
        let Self { p, q, gamma } = *self;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
            + q * gamma.ln()
            + (p * x - 1.0) * m.ln()
            + p * x * x.ln()
            - (p * x + q) * (gamma + m * x).ln()
    }

    /// Total log-likelihood.
    pub fn total_ln_likelihood(&self, data: &SpendData) -> f64 {
        data.rows
            .iter()
            .map(|&(x, m)| self.ln_likelihood(x, m))
            .sum()
    }

    /// Expected mean transaction value of a customer with `x` repeat
    /// transactions of mean `m` (eq. 5); for `x = 0`, the population mean
    /// `p γ / (q - 1)`. Requires `q > 1`.
    pub fn expected_average_value(&self, x: f64, m: f64) -> Option<f64> {
        let Self { p, q, gamma } = *self;
        if q <= 1.0 {
            return None;
        }
        if x <= 0.0 {
            return Some(p * gamma / (q - 1.0));
        }
        Some(p * (gamma + x * m) / (p * x + q - 1.0))
    }
}
