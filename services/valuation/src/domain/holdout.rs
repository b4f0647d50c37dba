//! Calibration/holdout validation of a transaction model (Fader, Hardie &
//! Lee 2005): actual against predicted holdout purchases by calibration
//! frequency (0, 1, ..., 6, 7+), and error figures.

/// One customer: calibration frequency, actual and predicted holdout purchases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldoutCase {
    /// Calibration repeat purchases.
    pub frequency: i64,
    /// Purchases (distinct days) in the holdout window.
    pub actual: f64,
    /// The model's conditional expectation for the window.
    pub predicted: f64,
}

/// One bucket of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Smallest frequency.
    pub min_frequency: i64,
    /// Largest frequency; `None` for the open bucket 7+.
    pub max_frequency: Option<i64>,
    /// Customers.
    pub customers: i64,
    /// Mean actual holdout purchases.
    pub actual_mean: f64,
    /// Mean predicted holdout purchases.
    pub predicted_mean: f64,
}

/// The validation figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Non-empty buckets in increasing frequency.
    pub buckets: Vec<Bucket>,
    /// Total actual purchases.
    pub actual_total: i64,
    /// Total predicted purchases.
    pub predicted_total: f64,
    /// (predicted − actual) / actual × 100; 0 without actual purchases.
    pub total_error_percent: f64,
    /// Mean |predicted − actual| per customer.
    pub mean_absolute_error: f64,
    /// Root mean squared error per customer.
    pub root_mean_squared_error: f64,
    /// Bucket-size weighted mean of |predicted mean − actual mean|.
    pub bucket_mean_absolute_error: f64,
}

/// Builds the table and figures.
pub fn validate(cases: &[HoldoutCase]) -> Validation {
    let mut sums = [(0i64, 0.0f64, 0.0f64); 8];
    let (mut actual_total, mut predicted_total, mut abs, mut sq) = (0.0, 0.0, 0.0, 0.0);
    for c in cases {
        let b = c.frequency.clamp(0, 7) as usize;
        sums[b].0 += 1;
        sums[b].1 += c.actual;
        sums[b].2 += c.predicted;
        actual_total += c.actual;
        predicted_total += c.predicted;
        abs += (c.predicted - c.actual).abs();
        sq += (c.predicted - c.actual).powi(2);
    }
    let n = cases.len().max(1) as f64;
    let mut buckets = Vec::new();
    let mut bucket_error = 0.0;
    for (i, &(count, actual, predicted)) in sums.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let c = count as f64;
        let b = Bucket {
            min_frequency: i as i64,
            max_frequency: (i < 7).then_some(i as i64),
            customers: count,
            actual_mean: actual / c,
            predicted_mean: predicted / c,
        };
        bucket_error += c * (b.predicted_mean - b.actual_mean).abs();
        buckets.push(b);
    }
    Validation {
        buckets,
        actual_total: actual_total.round() as i64,
        predicted_total,
        total_error_percent: if actual_total > 0.0 {
            (predicted_total - actual_total) / actual_total * 100.0
        } else {
            0.0
        },
        mean_absolute_error: abs / n,
        root_mean_squared_error: (sq / n).sqrt(),
        bucket_mean_absolute_error: bucket_error / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_errors() {
        let cases = [
            HoldoutCase {
                frequency: 0,
                actual: 0.0,
                predicted: 0.5,
            },
            HoldoutCase {
                frequency: 0,
                actual: 1.0,
                predicted: 0.5,
            },
            HoldoutCase {
                frequency: 9,
                actual: 4.0,
                predicted: 3.0,
            },
            HoldoutCase {
                frequency: 7,
                actual: 2.0,
                predicted: 3.0,
            },
        ];
        let v = validate(&cases);
        assert_eq!(v.buckets.len(), 2);
        assert_eq!(v.buckets[0].max_frequency, Some(0));
        assert_eq!(v.buckets[1].min_frequency, 7);
        assert_eq!(v.buckets[1].max_frequency, None);
        assert_eq!(v.buckets[1].customers, 2);
        assert_eq!(v.actual_total, 7);
        assert!((v.predicted_total - 7.0).abs() < 1e-12);
        assert!(v.total_error_percent.abs() < 1e-9);
        assert!((v.mean_absolute_error - 0.75).abs() < 1e-12);
        assert!((v.root_mean_squared_error - (2.5f64 / 4.0).sqrt()).abs() < 1e-12);
        assert!(v.bucket_mean_absolute_error.abs() < 1e-12);
        assert_eq!(validate(&[]).total_error_percent, 0.0);
    }
}
