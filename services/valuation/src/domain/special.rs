//! The Gaussian hypergeometric function 2F1(a, b; c; z) for 0 <= z < 1, as
//! the BG/NBD and Pareto/NBD models need it.

use super::newton::Real;

/// Largest number of series terms before giving up.
const MAX_TERMS: usize = 100_000;

/// Natural log of 2F1(a, b; c; z) for `0 <= z < 1` and `c > 0`, `a, b > 0`,
/// where the function is positive; generic over the number type, so the
/// Pareto/NBD likelihood can be differentiated exactly through it.
///
/// Sums the power series. When `c - a - b < 0` the series converges slowly
/// near `z = 1`, and Euler's transformation
/// `2F1(a, b; c; z) = (1 - z)^(c - a - b) 2F1(c - a, c - b; c; z)`
/// gives a series whose terms shrink faster; it is used then. Returns `None`
/// if the series has not converged within its term budget or its sum is not
/// positive.
pub fn ln_hyp2f1<D: Real>(a: D, b: D, c: D, z: D) -> Option<D> {
    let (ar, br, cr, zr) = (a.re(), b.re(), c.re(), z.re());
    if !(cr > 0.0 && (0.0..1.0).contains(&zr) && ar.is_finite() && br.is_finite()) {
        return None;
    }
    let (a2, b2) = (c - a, c - b);
    let (sum, shift) = if cr - ar - br < 0.0 && a2.re() != 0.0 && b2.re() != 0.0 {
        (series(a2, b2, c, z)?, (c - a - b) * (-z).ln_1p())
    } else {
        (series(a, b, c, z)?, D::zero())
    };
    (sum.re() > 0.0).then(|| sum.ln() + shift)
}

/// 2F1(a, b; c; z) for `0 <= z < 1` and any real `c` that is not zero or a
/// negative integer, as `(ln |F|, sign of F)`. The BG/NBD conditional
/// expectation needs `c = a + b + x - 1`, which is negative for a customer
/// without repeat purchases when `a + b < 1`; the function may then be
/// negative. `None` when F is zero or the series did not converge.
pub fn hyp2f1_signed(a: f64, b: f64, c: f64, z: f64) -> Option<(f64, f64)> {
    if !((0.0..1.0).contains(&z) && a.is_finite() && b.is_finite() && c.is_finite()) {
        return None;
    }
    if c <= 0.0 && c.fract() == 0.0 {
        return None;
    }
    if z == 0.0 {
        return Some((0.0, 1.0));
    }
    let (a2, b2) = (c - a, c - b);
    let signed = |sum: f64| (sum != 0.0).then(|| (sum.abs().ln(), sum.signum()));
    if c - a - b < 0.0 && a2 != 0.0 && b2 != 0.0 {
        // Euler's transformation; the transformed parameters may be negative
        // integers (a terminating series), which the summation handles.
        return signed(series(a2, b2, c, z)?)
            .map(|(l, sign)| ((c - a - b) * (1.0 - z).ln() + l, sign));
    }
    signed(series(a, b, c, z)?)
}

/// The power series' sum; terms may change sign when a, b or c is
/// negative. Stops when a term is below 1e-16 of the sum (in the real
/// part).
fn series<D: Real>(a: D, b: D, c: D, z: D) -> Option<D> {
    let mut term = D::one();
    let mut sum = D::one();
    for k in 0..MAX_TERMS {
        let k = k as f64;
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if term.re() == 0.0 || term.re().abs() <= sum.re().abs() * 1e-16 {
            return sum.re().is_finite().then_some(sum);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z
        for z in [0.1f64, 0.5, 0.9, 0.99] {
            let want = (-(1.0 - z).ln() / z).ln();
            assert!(
                close(ln_hyp2f1(1.0, 1.0, 2.0, z).unwrap(), want, 1e-12),
                "z={z}"
            );
        }
        // 2F1(a, b; b; z) = (1 - z)^(-a)
        for z in [0.2f64, 0.7, 0.95] {
            let want = -2.5 * (1.0 - z).ln();
            assert!(
                close(ln_hyp2f1(2.5, 3.0, 3.0, z).unwrap(), want, 1e-12),
                "z={z}"
            );
        }
        // 2F1(1/2, 1; 3/2; z^2) = atanh(z) / z
        for z in [0.3f64, 0.8] {
            let want = (z.atanh() / z).ln();
            assert!(close(ln_hyp2f1(0.5, 1.0, 1.5, z * z).unwrap(), want, 1e-12));
        }
    }

    #[test]
    fn slow_region_uses_euler_and_agrees_with_direct_sum() {
        // c - a - b < 0: compare transformed and direct sums where both converge.
        let (a, b, c, z) = (3.2, 2.1, 4.2, 0.6);
        let direct = series(a, b, c, z).unwrap().ln();
        assert!(close(ln_hyp2f1(a, b, c, z).unwrap(), direct, 1e-10));
        // Close to 1 it still converges within its budget (about 37,000 terms at
        // z = 0.999) and agrees with the closed form 2F1(1, 1; 2; z).
        let want = (-(1.0f64 - 0.999).ln() / 0.999).ln();
        assert!(close(ln_hyp2f1(1.0, 1.0, 2.0, 0.999).unwrap(), want, 1e-10));
        assert!(ln_hyp2f1(a, b, c, 0.999).is_some());
        // Past the budget it says so instead of returning a truncated sum.
        assert!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0 - 1e-9).is_none());
    }

    #[test]
    fn out_of_domain_is_none() {
        assert!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0).is_none());
        assert!(ln_hyp2f1(1.0, 1.0, 2.0, -0.1f64).is_none());
        assert!(ln_hyp2f1(1.0, 1.0, 0.0, 0.5f64).is_none());
    }

    #[test]
    fn negative_c_gives_the_signed_series() {
        // A negative, non-integer c: the signed result against a direct
        // summation of the series.
        let (a, b, c, z) = (0.05f64, 0.1f64, -0.85f64, 0.3f64);
        let mut term = 1.0f64;
        let mut want = 1.0f64;
        for k in 0..2000 {
            let k = k as f64;
            term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
            want += term;
        }
        let (l, sign) = hyp2f1_signed(a, b, c, z).unwrap();
        assert!(
            close(sign * l.exp(), want, 1e-12),
            "{} vs {want}",
            sign * l.exp()
        );
        // And against mpmath 1.x (`mpmath.hyp2f1`), an independent
        // arbitrary-precision implementation; the last value is negative.
        for (a, b, c, z, want) in [
            (0.05, 0.1, -0.85, 0.3, 0.995067184555917),
            (0.05, 0.1, -0.85, 0.9, 0.722028548484712),
            (1.5, 0.2, -0.3, 0.7, -7.30831762300811),
        ] {
            let (l, sign) = hyp2f1_signed(a, b, c, z).unwrap();
            assert!(
                close(sign * l.exp(), want, 1e-9),
                "{a} {b} {c} {z}: {}",
                sign * l.exp()
            );
        }
        assert!(
            ln_hyp2f1(a, b, c, z).is_none(),
            "c <= 0 is outside ln_hyp2f1"
        );
        assert!(
            hyp2f1_signed(1.0, 1.0, -2.0, 0.5).is_none(),
            "c a negative integer"
        );
    }
}
