//! The statistics of a treatment report: proportions with their Wilson
//! score interval and the difference of two proportions with its normal
//! (Wald) interval.

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A proportion with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proportion {
    pub successes: i64,
    pub trials: i64,
    pub rate: f64,
    pub lower: f64,
    pub upper: f64,
}

/// `successes` of `trials`, with the Wilson score interval (Wilson 1927):
/// (p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n).
pub fn proportion(successes: i64, trials: i64) -> Proportion {
    if trials <= 0 {
        return Proportion {
            successes,
            trials: 0,
            rate: 0.0,
            lower: 0.0,
            upper: 1.0,
        };
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let centre = p + z2 / (2.0 * n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z2 / n;
    Proportion {
        successes,
        trials,
        rate: p,
        lower: ((centre - half) / denom).max(0.0),
        upper: ((centre + half) / denom).min(1.0),
    }
}

/// treated − control rate with the 95 % normal interval of a difference of
/// two independent proportions: d ± z·√(p₁(1−p₁)/n₁ + p₂(1−p₂)/n₂);
/// (0, 0, 0) when either group is empty.
pub fn difference(treated: &Proportion, control: &Proportion) -> (f64, f64, f64) {
    if treated.trials == 0 || control.trials == 0 {
        return (0.0, 0.0, 0.0);
    }
    let d = treated.rate - control.rate;
    let se = (treated.rate * (1.0 - treated.rate) / treated.trials as f64
        + control.rate * (1.0 - control.rate) / control.trials as f64)
        .sqrt();
    (d, d - Z95 * se, d + Z95 * se)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_a_worked_example() {
        // 81 of 263 (Newcombe 1998, table I's example): 0.2553 to 0.3662.
        let p = proportion(81, 263);
        assert!((p.lower - 0.2553).abs() < 5e-5, "{}", p.lower);
        assert!((p.upper - 0.3662).abs() < 5e-5, "{}", p.upper);
        // 0 of 10: 0 to 0.2775 (Newcombe 1998).
        let z = proportion(0, 10);
        assert_eq!(z.lower, 0.0);
        assert!((z.upper - 0.2775).abs() < 5e-5, "{}", z.upper);
        assert_eq!(proportion(0, 0).upper, 1.0);
    }

    #[test]
    fn the_difference_has_the_normal_interval() {
        // 56/70 against 48/80 (Newcombe 1998, example (a)): Wald interval
        // 0.0575 to 0.3425.
        let (d, lo, hi) = difference(&proportion(56, 70), &proportion(48, 80));
        assert!((d - 0.2).abs() < 1e-12);
        assert!((lo - 0.0575).abs() < 5e-5, "{lo}");
        assert!((hi - 0.3425).abs() < 5e-5, "{hi}");
        assert_eq!(
            difference(&proportion(1, 2), &proportion(0, 0)),
            (0.0, 0.0, 0.0)
        );
    }
}
