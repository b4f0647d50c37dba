//! Value concentration: top shares, the Lorenz curve and the Gini
//! coefficient of a value measure over customers.

use rust_decimal::Decimal;

use super::money::to_f64;

/// The share of the top `percent` of customers.
#[derive(Debug, Clone, PartialEq)]
pub struct TopShare {
    /// 1, 5, 10 or 20.
    pub percent: i32,
    /// ceil(percent × n / 100).
    pub customers: i64,
    /// The group's total value.
    pub value: Decimal,
    /// The group's share of the total (negatives as zero), in [0, 1].
    pub share: f64,
}

/// How a measure is distributed.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Sum of every value (negatives included).
    pub total: Decimal,
    /// Top 1, 5, 10 and 20 %.
    pub top_shares: Vec<TopShare>,
    /// (customer share, value share) at 0, 1/k, ..., 1.
    pub lorenz: Vec<(f64, f64)>,
    /// Gini coefficient in [0, 1].
    pub gini: f64,
}

/// The distribution of `values` (any order), Lorenz curve at `intervals`
/// equal steps.
pub fn distribution(values: &[Decimal], intervals: usize) -> Distribution {
    let total: Decimal = values.iter().copied().sum();
    let mut sorted: Vec<Decimal> = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let n = sorted.len();
    let clipped: Vec<f64> = sorted.iter().map(|v| to_f64(*v).max(0.0)).collect();
    let positive_total: f64 = clipped.iter().sum();
    let top_shares = [1, 5, 10, 20]
        .into_iter()
        .map(|percent| {
            let k = (percent as usize * n).div_ceil(100);
            let value: Decimal = sorted[..k].iter().copied().sum();
            let part: f64 = clipped[..k].iter().sum();
            TopShare {
                percent,
                customers: k as i64,
                value,
                share: if positive_total > 0.0 {
                    (part / positive_total).clamp(0.0, 1.0)
                } else {
                    0.0
                },
            }
        })
        .collect();
    // Ascending cumulative shares: cum[i] = share held by the poorest i.
    let mut cum = Vec::with_capacity(n + 1);
    cum.push(0.0);
    let mut running = 0.0;
    for v in clipped.iter().rev() {
        running += v;
        cum.push(if positive_total > 0.0 {
            running / positive_total
        } else {
            0.0
        });
    }
    let k = intervals.max(1);
    let lorenz = (0..=k)
        .map(|j| {
            let share = j as f64 / k as f64;
            if n == 0 {
                return (share, share);
            }
            let pos = share * n as f64;
            let lo = (pos.floor() as usize).min(n);
            let hi = (lo + 1).min(n);
            let frac = pos - lo as f64;
            let v = cum[lo] + (cum[hi] - cum[lo]) * frac;
            let v = if j == k && positive_total > 0.0 {
                1.0
            } else {
                v
            };
            (share, v.clamp(0.0, 1.0))
        })
        .collect();
    let gini = if positive_total > 0.0 && n > 0 {
        let nf = n as f64;
        let weighted: f64 = clipped
            .iter()
            .rev()
            .enumerate()
            .map(|(i, v)| (i as f64 + 1.0) * v)
            .sum();
        (2.0 * weighted / (nf * positive_total) - (nf + 1.0) / nf).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Distribution {
        total,
        top_shares,
        lorenz,
        gini,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    #[test]
    fn equal_values_have_no_concentration() {
        let values = vec![d(10); 100];
        let dist = distribution(&values, 10);
        assert_eq!(dist.total, d(1000));
        assert!(dist.gini.abs() < 1e-12);
        assert_eq!(dist.lorenz.len(), 11);
        for (s, v) in &dist.lorenz {
            assert!((s - v).abs() < 1e-12);
        }
        assert_eq!(dist.top_shares[0].customers, 1);
        assert!((dist.top_shares[3].share - 0.2).abs() < 1e-12);
    }

    #[test]
    fn one_customer_holding_everything() {
        let mut values = vec![d(0); 99];
        values.push(d(500));
        let dist = distribution(&values, 100);
        assert!((dist.gini - 0.99).abs() < 1e-12, "{}", dist.gini);
        assert_eq!(dist.top_shares[0].share, 1.0);
        assert_eq!(dist.top_shares[0].value, d(500));
        assert_eq!(dist.lorenz[99].1, 0.0);
        assert_eq!(dist.lorenz[100], (1.0, 1.0));
    }

    #[test]
    fn negatives_count_as_zero_except_in_the_total() {
        let dist = distribution(&[d(-5), d(5), d(5)], 10);
        assert_eq!(dist.total, d(5));
        assert!((dist.top_shares[0].share - 0.5).abs() < 1e-12);
        let empty = distribution(&[], 10);
        assert_eq!(empty.gini, 0.0);
        assert_eq!(empty.top_shares[0].customers, 0);
        // Interpolation between customers: 3 values 1, 2, 3 at shares 0.5.
        let dist = distribution(&[d(1), d(2), d(3)], 2);
        let (s, v) = dist.lorenz[1];
        assert_eq!(s, 0.5);
        // Poorest 1.5 customers hold 1 + 0.5 × 2 = 2 of 6.
        assert!((v - 2.0 / 6.0).abs() < 1e-12);
    }
}
