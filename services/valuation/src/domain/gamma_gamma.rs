//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV", and
//! Fader & Hardie, "The Gamma-Gamma Model of Monetary Value", 2013).
//!
//! A customer's transaction values are Gamma(p, ν) around their mean; ν varies
//! across customers as Gamma(q, γ). Spend is assumed independent of the
//! purchase process.

use ::special::Gamma;
use statrs::function::gamma::ln_gamma;

use super::data::SpendData;
use super::newton::Derivatives;

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

    /// Total log-likelihood: the sum of [`GammaGamma::ln_likelihood`] over
    /// the data, rearranged so that the gamma functions are evaluated once per
    /// distinct frequency and the data-only sums come precomputed.
    pub fn total_ln_likelihood(&self, data: &SpendData) -> f64 {
        let Self { p, q, gamma } = *self;
        let per_frequency: f64 = data
            .by_frequency
            .iter()
            .map(|&(x, n)| {
                n * (ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
                    + q * gamma.ln()
                    + p * x * x.ln())
            })
            .sum();
        let rows = data.rows();
        let tail = |chunk: &[(f64, f64)]| -> f64 {
            chunk
                .iter()
                .map(|&(x, m)| (p * x + q) * (gamma + m * x).ln())
                .sum()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(rows.len() / 20_000)
            .max(1);
        let tail_sum: f64 = if threads == 1 {
            tail(rows)
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = rows
                    .chunks(rows.len().div_ceil(threads))
                    .map(|c| scope.spawn(move || tail(c)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(f64::NAN))
                    .sum()
            })
        };
        per_frequency + p * data.sum_x_ln_m - data.sum_ln_m - tail_sum
    }

    /// The total log-likelihood with its exact gradient and Hessian in
    /// (p, q, γ), for the Newton polish and the standard errors. With
    /// u = γ + m x per customer and ψ, ψ₁ the digamma and trigamma
    /// functions:
    ///
    /// ∂p = Σ x [ψ(px+q) − ψ(px) + ln x + ln m − ln u],
    /// ∂q = Σ [ψ(px+q) − ψ(q) + ln γ − ln u],
    /// ∂γ = Σ [q/γ − (px+q)/u];
    /// ∂²pp = Σ x² [ψ₁(px+q) − ψ₁(px)], ∂²pq = Σ x ψ₁(px+q),
    /// ∂²pγ = −Σ x/u, ∂²qq = Σ [ψ₁(px+q) − ψ₁(q)], ∂²qγ = Σ [1/γ − 1/u],
    /// ∂²γγ = Σ [(px+q)/u² − q/γ²].
    ///
    /// The gamma-function terms are taken once per distinct frequency. None
    /// outside the parameter space.
    pub fn derivatives(&self, data: &SpendData) -> Option<Derivatives<3>> {
        let Self { p, q, gamma } = *self;
        if !(p > 0.0 && q > 0.0 && gamma > 0.0 && p.is_finite() && q.is_finite()) {
            return None;
        }
        let mut g = [0.0f64; 3];
        let mut h = [[0.0f64; 3]; 3];
        for &(x, n) in &data.by_frequency {
            let (a, b) = (p * x + q, p * x);
            let (da, db, dq) = (a.digamma(), b.digamma(), q.digamma());
            let (ta, tb, tq) = (a.trigamma(), b.trigamma(), q.trigamma());
            g[0] += n * x * (da - db + x.ln());
            g[1] += n * (da - dq + gamma.ln());
            g[2] += n * q / gamma;
            h[0][0] += n * x * x * (ta - tb);
            h[0][1] += n * x * ta;
            h[1][1] += n * (ta - tq);
            h[1][2] += n / gamma;
            h[2][2] -= n * q / (gamma * gamma);
        }
        g[0] += data.sum_x_ln_m;
        for &(x, m) in data.rows() {
            let u = gamma + m * x;
            let (ln_u, inv) = (u.ln(), 1.0 / u);
            let k = p * x + q;
            g[0] -= x * ln_u;
            g[1] -= ln_u;
            g[2] -= k * inv;
            h[0][2] -= x * inv;
            h[1][2] -= inv;
            h[2][2] += k * inv * inv;
        }
        h[1][0] = h[0][1];
        h[2][0] = h[0][2];
        h[2][1] = h[1][2];
        let d = Derivatives {
            value: self.total_ln_likelihood(data),
            gradient: g,
            hessian: h,
        };
        d.is_finite().then_some(d)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearranged_total_equals_the_sum_of_terms() {
        let rows = vec![
            (1.0, 11.77),
            (2.0, 22.35),
            (2.0, 9.5),
            (7.0, 40.1),
            (1.0, 3.0),
        ];
        let data = SpendData::new(rows.clone());
        let m = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let direct: f64 = rows.iter().map(|&(x, v)| m.ln_likelihood(x, v)).sum();
        assert!((m.total_ln_likelihood(&data) - direct).abs() < 1e-9 * direct.abs());
    }

    #[test]
    fn exact_derivatives_match_finite_differences() {
        let rows = vec![(1.0, 11.77), (2.0, 22.35), (2.0, 9.5), (7.0, 40.1)];
        let data = SpendData::new(rows);
        let at = [6.25, 3.74, 15.44];
        let d = GammaGamma::from_slice(&at).derivatives(&data).unwrap();
        let f = |p: [f64; 3]| GammaGamma::from_slice(&p).total_ln_likelihood(&data);
        let grad = |p: [f64; 3]| {
            GammaGamma::from_slice(&p)
                .derivatives(&data)
                .unwrap()
                .gradient
        };
        for i in 0..3 {
            let h = 1e-5 * at[i];
            let (mut up, mut down) = (at, at);
            up[i] += h;
            down[i] -= h;
            let fd = (f(up) - f(down)) / (2.0 * h);
            assert!(
                (fd - d.gradient[i]).abs() < 1e-6 * fd.abs().max(1.0),
                "∂{i}"
            );
            let (gu, gd) = (grad(up), grad(down));
            for j in 0..3 {
                let fd = (gu[j] - gd[j]) / (2.0 * h);
                let want = d.hessian[i][j];
                assert!((fd - want).abs() < 1e-5 * want.abs().max(1.0), "∂{i}∂{j}");
            }
        }
    }
}
