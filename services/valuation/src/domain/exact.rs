//! Exact first and second derivatives of the BG/NBD and MBG/NBD
//! log-likelihoods, for standard errors from the exact observed information
//! and a Newton polish of the optimum ([`super::newton`]).
//!
//! Every special function in these likelihoods has an integer step: with
//! x repeat purchases, ln Γ(r+x) − ln Γ(r) = Σ_{k<x} ln(r+k) and
//! ln B(a, b+x) − ln B(a, b) = Σ_{k<x} [ln(b+k) − ln(a+b+k)], so their
//! derivatives of any order are finite sums of powers of 1/(r+k), 1/(b+k)
//! and 1/(a+b+k). The rest is the log of a sum of two exponentials,
//! differentiated with the weight w of its second term:
//! ∇ ln(eᴬ + eᴰ) = (1−w)∇A + w∇D and
//! ∇² ln(eᴬ + eᴰ) = (1−w)∇²A + w∇²D + w(1−w)(∇D−∇A)(∇D−∇A)ᵀ.

use super::data::RfmData;
use super::newton::Derivatives;

/// The log-likelihood of `data` at `p` = (r, α, a, b) under BG/NBD (when
/// `shift` is 0) or MBG/NBD (when it is 1), with its exact gradient and
/// Hessian. `None` outside the parameter space.
// Matrix entries read best by their indices.
#[allow(clippy::needless_range_loop)]
pub fn derivatives(p: [f64; 4], data: &RfmData, shift: usize) -> Option<Derivatives<4>> {
    let [r, alpha, a, b] = p;
    if !(r > 0.0 && alpha > 0.0 && a > 0.0 && b > 0.0) || p.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let max_x = data
        .rows
        .iter()
        .map(|o| o.frequency as usize)
        .max()
        .unwrap_or(0);
    // Prefix sums over k < n of ln, 1/·, 1/·² of (r+k), (b+k), (a+b+k).
    let prefix = |base: f64, terms: usize| {
        let mut out = vec![[0.0f64; 3]; terms + 1];
        for k in 0..terms {
            let v = base + k as f64;
            out[k + 1] = [
                out[k][0] + v.ln(),
                out[k][1] + 1.0 / v,
                out[k][2] + 1.0 / (v * v),
            ];
        }
        out
    };
    let gr = prefix(r, max_x);
    let gb = prefix(b, max_x + shift);
    let gab = prefix(a + b, max_x + shift);
    let s = shift as f64;
    let mut d = Derivatives {
        value: 0.0,
        gradient: [0.0; 4],
        hessian: [[0.0; 4]; 4],
    };
    for (o, &w) in data.rows.iter().zip(&data.weights) {
        let xi = o.frequency as usize;
        let x = o.frequency;
        let (sr, sb, sab) = (gr[xi], gb[xi + shift], gab[xi + shift]);
        // c = Σ ln(r+k) + r ln α + Σ [ln(b+k) − ln(a+b+k)]
        let mut value = sr[0] + r * alpha.ln() + sb[0] - sab[0];
        let mut g = [sr[1] + alpha.ln(), r / alpha, -sab[1], sb[1] - sab[1]];
        let mut h = [[0.0; 4]; 4];
        h[0][0] = -sr[2];
        h[0][1] = 1.0 / alpha;
        h[1][1] = -r / (alpha * alpha);
        h[2][2] = sab[2];
        h[2][3] = sab[2];
        h[3][3] = sab[2] - sb[2];
        // Alive at T: A = −(r+x) ln(α+T).
        let at = alpha + o.age;
        let a_val = -(r + x) * at.ln();
        let a_g = [-at.ln(), -(r + x) / at, 0.0, 0.0];
        let mut a_h = [[0.0; 4]; 4];
        a_h[0][1] = -1.0 / at;
        a_h[1][1] = (r + x) / (at * at);
        if x > 0.0 || shift > 0 {
            // Dropped at the last purchase: D = ln a − ln(b+x−1+s) − (r+x) ln(α+tₓ).
            let atx = alpha + o.recency;
            let bx = b + x - 1.0 + s;
            let d_val = a.ln() - bx.ln() - (r + x) * atx.ln();
            let d_g = [-atx.ln(), -(r + x) / atx, 1.0 / a, -1.0 / bx];
            let mut d_h = [[0.0; 4]; 4];
            d_h[0][1] = -1.0 / atx;
            d_h[1][1] = (r + x) / (atx * atx);
            d_h[2][2] = -1.0 / (a * a);
            d_h[3][3] = 1.0 / (bx * bx);
            let m = a_val.max(d_val);
            let (ea, ed) = ((a_val - m).exp(), (d_val - m).exp());
            let wd = ed / (ea + ed);
            value += m + (ea + ed).ln();
            let diff: Vec<f64> = (0..4).map(|i| d_g[i] - a_g[i]).collect();
            for i in 0..4 {
                g[i] += (1.0 - wd) * a_g[i] + wd * d_g[i];
                for j in i..4 {
                    h[i][j] += (1.0 - wd) * a_h[i][j]
                        + wd * d_h[i][j]
                        + wd * (1.0 - wd) * diff[i] * diff[j];
                }
            }
        } else {
            value += a_val;
            for i in 0..4 {
                g[i] += a_g[i];
                for j in i..4 {
                    h[i][j] += a_h[i][j];
                }
            }
        }
        d.value += w * value;
        for i in 0..4 {
            d.gradient[i] += w * g[i];
            for j in i..4 {
                d.hessian[i][j] += w * h[i][j];
            }
        }
    }
    for i in 0..4 {
        for j in 0..i {
            d.hessian[i][j] = d.hessian[j][i];
        }
    }
    d.value.is_finite().then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Observation;
    use crate::domain::bgnbd::BgNbd;
    use crate::domain::mbgnbd::MbgNbd;

    fn sample() -> RfmData {
        RfmData::new([
            Observation {
                frequency: 0.0,
                recency: 0.0,
                age: 38.86,
            },
            Observation {
                frequency: 2.0,
                recency: 30.43,
                age: 38.86,
            },
            Observation {
                frequency: 6.0,
                recency: 35.0,
                age: 38.86,
            },
            Observation {
                frequency: 1.0,
                recency: 0.5,
                age: 20.0,
            },
            Observation {
                frequency: 14.0,
                recency: 30.0,
                age: 31.0,
            },
        ])
    }

    /// The value is the models' own likelihood, and the derivatives agree
    /// with central differences of it (to the differences' own accuracy).
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn derivatives_agree_with_the_likelihoods() {
        let data = sample();
        let p = [0.243, 4.414, 0.793, 2.426];
        for shift in [0, 1] {
            let ll = |q: &[f64]| {
                if shift == 0 {
                    BgNbd::from_slice(q).total_ln_likelihood(&data)
                } else {
                    MbgNbd::from_slice(q).total_ln_likelihood(&data)
                }
            };
            let d = derivatives(p, &data, shift).unwrap();
            assert!(
                (d.value - ll(&p)).abs() < 1e-10,
                "{shift}: {} vs {}",
                d.value,
                ll(&p)
            );
            for i in 0..4 {
                let h = 1e-5 * p[i];
                let at = |di: f64, j: usize, dj: f64| {
                    let mut q = p.to_vec();
                    q[i] += di;
                    q[j] += dj;
                    q
                };
                let g = (ll(&at(h, i, 0.0)) - ll(&at(-h, i, 0.0))) / (2.0 * h);
                assert!(
                    (g - d.gradient[i]).abs() < 1e-6 * g.abs().max(1.0),
                    "{shift} g{i}"
                );
                for j in 0..4 {
                    let k = 1e-4 * p[j];
                    let grad_i = |dj: f64| (ll(&at(h, j, dj)) - ll(&at(-h, j, dj))) / (2.0 * h);
                    let hij = (grad_i(k) - grad_i(-k)) / (2.0 * k);
                    let tol = 1e-4 * hij.abs().max(1.0);
                    assert!(
                        (hij - d.hessian[i][j]).abs() < tol,
                        "{shift} h{i}{j}: {hij} vs {}",
                        d.hessian[i][j]
                    );
                }
            }
        }
    }

    #[test]
    fn outside_the_parameter_space_there_is_nothing() {
        assert!(derivatives([0.0, 1.0, 1.0, 1.0], &sample(), 0).is_none());
        assert!(derivatives([1.0, f64::NAN, 1.0, 1.0], &sample(), 1).is_none());
    }
}
