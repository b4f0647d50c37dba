//! Exact money: amounts as integer billionths (`i128` nanos), converted to and
//! from `rapport.common.v1.Money` and the decimal text PostgreSQL's `numeric`
//! reads and writes. No floating point anywhere but the one documented place
//! (`PurchaseHistorySummary.monetary_value`).

use rapport_proto::rapport::common::v1::Money;

/// Billionths in one unit.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An exact amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Amount {
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// The amount in billionths of a unit.
    pub nanos: i128,
}

impl Amount {
    /// The amount as a `Money` message.
    pub fn to_money(&self) -> Money {
        nanos_to_money(&self.currency, self.nanos)
    }
}

/// True when `code` is an ISO 4217 alphabetic code (upper case).
pub fn is_currency(code: &str) -> bool {
    code.len() == 3
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && iso_currency::Currency::from_code(code).is_some()
}

/// The nanos of a `Money`, or a description of what is wrong with its number
/// part (the currency is checked separately).
pub fn money_nanos(m: &Money) -> Result<i128, &'static str> {
    if !(-999_999_999..=999_999_999).contains(&m.nanos) {
        return Err("nanos must be in -999999999..=999999999");
    }
    if (m.units > 0 && m.nanos < 0) || (m.units < 0 && m.nanos > 0) {
        return Err("units and nanos must have the same sign");
    }
    Ok(i128::from(m.units) * NANOS_PER_UNIT + i128::from(m.nanos))
}

/// A `Money` for `nanos` (saturating at the range of `units`).
pub fn nanos_to_money(currency: &str, nanos: i128) -> Money {
    let units = nanos / NANOS_PER_UNIT;
    let frac = nanos % NANOS_PER_UNIT;
    Money {
        currency_code: currency.to_string(),
        units: i64::try_from(units).unwrap_or(if units > 0 { i64::MAX } else { i64::MIN }),
        nanos: frac as i32,
    }
}

/// Decimal text with nine fractional digits, e.g. `-12.500000000`.
pub fn nanos_to_decimal(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let units = abs / NANOS_PER_UNIT as u128;
    let frac = abs % NANOS_PER_UNIT as u128;
    format!("{sign}{units}.{frac:09}")
}

/// Parses decimal text (as PostgreSQL prints `numeric`) into nanos. Digits
/// beyond the ninth decimal place must be zeros.
pub fn decimal_to_nanos(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kept, rest) = frac.split_at(frac.len().min(9));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let int_val: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut frac_val: i128 = if kept.is_empty() {
        0
    } else {
        kept.parse().ok()?
    };
    for _ in kept.len()..9 {
        frac_val *= 10;
    }
    let v = int_val.checked_mul(NANOS_PER_UNIT)?.checked_add(frac_val)?;
    Some(if neg { -v } else { v })
}

/// `n / d` rounded half to even (`d > 0`).
pub fn div_half_even(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    // r in 0..d; compare 2r with d.
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

pub use rapport_kit::repeat::nanos_to_units_f64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn money_round_trips_and_checks_signs() {
        let m = Money {
            currency_code: "EUR".into(),
            units: -1,
            nanos: -750_000_000,
        };
        let n = money_nanos(&m).unwrap();
        assert_eq!(n, -1_750_000_000);
        assert_eq!(nanos_to_money("EUR", n), m);
        assert!(
            money_nanos(&Money {
                currency_code: "EUR".into(),
                units: 1,
                nanos: -1
            })
            .is_err()
        );
        assert!(
            money_nanos(&Money {
                currency_code: "EUR".into(),
                units: 0,
                nanos: 1_000_000_000
            })
            .is_err()
        );
    }

    #[test]
    fn decimals_parse_as_postgres_prints_them() {
        assert_eq!(decimal_to_nanos("12.5"), Some(12_500_000_000));
        assert_eq!(decimal_to_nanos("-0.000000001"), Some(-1));
        assert_eq!(decimal_to_nanos("7"), Some(7_000_000_000));
        assert_eq!(decimal_to_nanos("1.0000000000000"), Some(1_000_000_000));
        assert_eq!(decimal_to_nanos("1.0000000001"), None);
        assert_eq!(decimal_to_nanos("abc"), None);
        assert_eq!(nanos_to_decimal(-1_750_000_000), "-1.750000000");
    }

    #[test]
    fn half_even() {
        assert_eq!(div_half_even(5, 2), 2);
        assert_eq!(div_half_even(7, 2), 4);
        assert_eq!(div_half_even(-5, 2), -2);
        assert_eq!(div_half_even(10, 3), 3);
        assert_eq!(div_half_even(11, 3), 4);
    }

    #[test]
    fn currencies() {
        assert!(is_currency("EUR"));
        assert!(!is_currency("eur"));
        assert!(!is_currency("XXY"));
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(n in -(1i128 << 100)..(1i128 << 100)) {
            prop_assert_eq!(decimal_to_nanos(&nanos_to_decimal(n)), Some(n));
        }

        #[test]
        fn money_round_trips(units in any::<i64>(), nanos in 0i32..1_000_000_000) {
            let nanos = if units < 0 { -nanos } else { nanos };
            let m = Money { currency_code: "USD".into(), units, nanos };
            let n = money_nanos(&m).unwrap();
            prop_assert_eq!(nanos_to_money("USD", n), m);
        }

        #[test]
        fn half_even_is_within_half(n in -1_000_000_000i128..1_000_000_000, d in 1i128..1000) {
            let q = div_half_even(n, d);
            prop_assert!((q * d - n).abs() * 2 <= d);
        }
    }
}
