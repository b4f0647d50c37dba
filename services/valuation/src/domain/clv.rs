//! Customer lifetime value from a purchase model and a spend model.

/// Discounted CLV over `horizon` periods: the expected number of purchases in
/// each period (from the cumulative `expected_purchases(t)`), times the
/// expected value of a purchase and the margin ratio, discounted at
/// `discount_rate` per period to the end of that period:
///
/// CLV = Σ_{k=1..H} m · v · (E[Y(k)] − E[Y(k−1)]) / (1 + d)^k
///
/// `None` when a prediction cannot be computed or an input is out of range
/// (negative horizon or value, margin outside [0, 1], discount rate ≤ −1).
pub fn discounted_clv(
    expected_purchases: impl Fn(f64) -> Option<f64>,
    expected_value: f64,
    margin: f64,
    horizon: u32,
    discount_rate: f64,
) -> Option<f64> {
    if !(expected_value >= 0.0 && (0.0..=1.0).contains(&margin) && discount_rate > -1.0) {
        return None;
    }
    let mut total = 0.0;
    let mut previous = 0.0;
    for k in 1..=horizon {
        let cumulative = expected_purchases(f64::from(k))?;
        let in_period = (cumulative - previous).max(0.0);
        previous = cumulative;
        total += margin * expected_value * in_period / (1.0 + discount_rate).powi(k as i32);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_matches_an_annuity() {
        // One purchase per period of value 10 at margin 0.5 for 3 periods at 10 %.
        let clv = discounted_clv(Some, 10.0, 0.5, 3, 0.1).unwrap();
        let want = 5.0 / 1.1 + 5.0 / 1.1f64.powi(2) + 5.0 / 1.1f64.powi(3);
        assert!((clv - want).abs() < 1e-12);
        assert_eq!(discounted_clv(Some, 10.0, 0.5, 0, 0.1), Some(0.0));
        assert!(discounted_clv(Some, 10.0, 1.5, 3, 0.1).is_none());
        assert!(discounted_clv(|_| None, 10.0, 0.5, 3, 0.1).is_none());
    }
}
