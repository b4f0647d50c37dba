//! Model inputs: one customer's repeat-purchase history in model time units.

use std::collections::HashMap;

/// One customer's calibration-period history, in periods (days, weeks, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Repeat purchases (purchases after the first), `x`.
    pub frequency: f64,
    /// Time from the first purchase to the last, `t_x` (0 when x = 0).
    pub recency: f64,
    /// Time from the first purchase to the end of calibration, `T`.
    pub age: f64,
}

impl Observation {
    /// Checks `0 <= t_x <= T`, `x >= 0` integral, `t_x = 0` when `x = 0`, all finite.
    pub fn is_valid(&self) -> bool {
        let finite = self.frequency.is_finite() && self.recency.is_finite() && self.age.is_finite();
        finite
            && self.frequency >= 0.0
            && self.frequency.fract() == 0.0
            && self.recency >= 0.0
            && self.recency <= self.age + 1e-9
            && self.age > 0.0
            && (self.frequency > 0.0 || self.recency == 0.0)
    }
}

/// Frequency/recency/age data, with identical customers pooled so the
/// likelihood is evaluated once per distinct history (a large saving on real
/// data, where histories repeat). The distinct histories are kept in one
/// canonical order (by frequency, recency, age), so every sum over them, and
/// so a fit and its standard errors, is the same whatever order the
/// customers came in.
#[derive(Debug, Clone, Default)]
pub struct RfmData {
    /// Distinct histories.
    pub rows: Vec<Observation>,
    /// How many customers share each history.
    pub weights: Vec<f64>,
}

impl RfmData {
    /// Pools `observations`. Invalid ones are the caller's to refuse first.
    pub fn new(observations: impl IntoIterator<Item = Observation>) -> Self {
        let mut index: HashMap<(u64, u64, u64), usize> = HashMap::new();
        let mut data = RfmData::default();
        for o in observations {
            let key = (o.frequency.to_bits(), o.recency.to_bits(), o.age.to_bits());
            match index.get(&key) {
                Some(&i) => data.weights[i] += 1.0,
                None => {
                    index.insert(key, data.rows.len());
                    data.rows.push(o);
                    data.weights.push(1.0);
                }
            }
        }
        let mut order: Vec<usize> = (0..data.rows.len()).collect();
        order.sort_unstable_by(|&i, &j| {
            let (a, b) = (&data.rows[i], &data.rows[j]);
            a.frequency
                .total_cmp(&b.frequency)
                .then(a.recency.total_cmp(&b.recency))
                .then(a.age.total_cmp(&b.age))
        });
        RfmData {
            rows: order.iter().map(|&i| data.rows[i]).collect(),
            weights: order.iter().map(|&i| data.weights[i]).collect(),
        }
    }

    /// Number of customers.
    pub fn customers(&self) -> f64 {
        self.weights.iter().sum()
    }
}

/// Repeat customers' spend: number of repeat transactions and their mean value,
/// with the sums the Gamma-Gamma likelihood needs precomputed, so that each
/// evaluation costs one logarithm per customer.
#[derive(Debug, Clone, Default)]
pub struct SpendData {
    rows: Vec<(f64, f64)>,
    /// Distinct frequencies and how many customers have each.
    pub(crate) by_frequency: Vec<(f64, f64)>,
    /// Σ x ln m.
    pub(crate) sum_x_ln_m: f64,
    /// Σ ln m.
    pub(crate) sum_ln_m: f64,
}

impl SpendData {
    /// From `(x, m_x)` pairs: repeat transactions (> 0) and mean spend (> 0),
    /// kept in one canonical order (by x, then m_x) so the sums do not depend
    /// on the order the customers came in.
    pub fn new(mut rows: Vec<(f64, f64)>) -> Self {
        rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut counts: HashMap<u64, f64> = HashMap::new();
        let (mut sum_x_ln_m, mut sum_ln_m) = (0.0, 0.0);
        for &(x, m) in &rows {
            *counts.entry(x.to_bits()).or_default() += 1.0;
            sum_x_ln_m += x * m.ln();
            sum_ln_m += m.ln();
        }
        let mut by_frequency: Vec<(f64, f64)> = counts
            .into_iter()
            .map(|(x, n)| (f64::from_bits(x), n))
            .collect();
        by_frequency.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            rows,
            by_frequency,
            sum_x_ln_m,
            sum_ln_m,
        }
    }

    /// The `(x, m_x)` pairs.
    pub fn rows(&self) -> &[(f64, f64)] {
        &self.rows
    }
}
