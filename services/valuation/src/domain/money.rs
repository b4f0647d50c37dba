//! Exact money: `Decimal` amounts rounded half-even to the nano, converted to
//! and from `rapport.common.v1.Money`, and ISO 4217 codes.

use rapport_proto::rapport::common::v1::Money;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// Nanos in one unit.
const NANOS: i64 = 1_000_000_000;

/// True when `code` is an ISO 4217 alphabetic code (upper case).
pub fn is_currency(code: &str) -> bool {
    code.len() == 3
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && iso_currency::Currency::from_code(code).is_some()
}

/// Rounds half-even to the nano.
pub fn round_nano(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(9, RoundingStrategy::MidpointNearestEven)
}

/// A model prediction as an exact amount, rounded half-even to the nano.
/// Non-finite or negative predictions are 0; huge ones saturate.
pub fn from_f64(v: f64) -> Decimal {
    if !v.is_finite() || v <= 0.0 {
        return Decimal::ZERO;
    }
    let capped = v.min(1e18);
    round_nano(Decimal::from_f64_retain(capped).unwrap_or(Decimal::ZERO))
}

/// The amount as a double (for shares and model inputs).
pub fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// `Money` for an amount (rounded half-even to the nano; saturating).
pub fn to_money(currency: &str, d: Decimal) -> Money {
    let d = round_nano(d);
    let units = d.trunc();
    let frac = (d - units) * Decimal::from(NANOS);
    Money {
        currency_code: currency.to_string(),
        units: units.to_i64().unwrap_or(if d.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        }),
        nanos: frac.to_i32().unwrap_or(0),
    }
}

/// The amount of a `Money`, or `None` when units and nanos disagree in sign
/// or nanos are out of range.
pub fn from_money(m: &Money) -> Option<Decimal> {
    if !(-999_999_999..=999_999_999).contains(&m.nanos)
        || (m.units > 0 && m.nanos < 0)
        || (m.units < 0 && m.nanos > 0)
    {
        return None;
    }
    Some(Decimal::from(m.units) + Decimal::new(i64::from(m.nanos), 9))
}

/// The mean of `total` over `n` items, rounded half-even to the nano.
pub fn mean(total: Decimal, n: i64) -> Option<Decimal> {
    (n > 0).then(|| round_nano(total / Decimal::from(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_and_rounds_half_even() {
        let d = Decimal::new(-125, 1);
        let m = to_money("EUR", d);
        assert_eq!((m.units, m.nanos), (-12, -500_000_000));
        assert_eq!(from_money(&m), Some(d));
        // 0.0000000005 rounds to 0, 0.0000000015 to 0.000000002.
        assert_eq!(round_nano(Decimal::new(5, 10)), Decimal::ZERO);
        assert_eq!(round_nano(Decimal::new(15, 10)), Decimal::new(2, 9));
        assert_eq!(from_f64(-3.0), Decimal::ZERO);
        assert_eq!(from_f64(f64::NAN), Decimal::ZERO);
        assert_eq!(to_money("EUR", from_f64(1.25)).nanos, 250_000_000);
        assert!(
            from_money(&Money {
                currency_code: "EUR".into(),
                units: 1,
                nanos: -1
            })
            .is_none()
        );
        assert!(is_currency("EUR") && !is_currency("eur") && !is_currency("XYZ"));
        assert_eq!(
            mean(Decimal::from(10), 3),
            Some(Decimal::new(3_333_333_333, 9))
        );
        assert_eq!(mean(Decimal::from(10), 0), None);
    }
}
