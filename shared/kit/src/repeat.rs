//! The model inputs of Buy-Till-You-Die models (frequency, recency, T and the
//! mean repeat-purchase value) from a customer's purchase days.
//!
//! Two services compute them: the interaction service when it exports
//! `PurchaseHistorySummary`s, and the valuation service from the purchase
//! summaries it keeps from the interaction feed (a fit that needs no
//! export). Both call [`repeat_inputs`], so both give the same figures to
//! the last bit. See ARCHITECTURE.md for who owns what.

use chrono::{DateTime, NaiveDate, Utc};

/// Nanos in one unit of money.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A customer's calibration purchases grouped by day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseDays {
    /// Distinct purchase days (at least 1).
    pub days: i64,
    /// The first purchase day.
    pub first_day: NaiveDate,
    /// The first instant of that day in the time zone the days are counted in.
    pub first_day_start: DateTime<Utc>,
    /// The last purchase day.
    pub last_day: NaiveDate,
    /// Purchases in the summary's currency, nanos.
    pub total_value: i128,
    /// Of which the first purchase day's, nanos.
    pub first_day_value: i128,
}

/// The model inputs of one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatInputs {
    /// Repeat purchase days: purchase days after the first.
    pub frequency: i64,
    /// First to last purchase day, in periods (0 without a repeat).
    pub recency: f64,
    /// The first purchase day's start to the calibration end, in periods.
    pub t: f64,
    /// Mean value of a repeat purchase day, in units (0 without a repeat).
    pub monetary_value: f64,
}

/// The inputs of `d` for the calibration end `calibration_end` and a period
/// of `unit_days` days.
pub fn repeat_inputs(
    d: &PurchaseDays,
    calibration_end: DateTime<Utc>,
    unit_days: f64,
) -> RepeatInputs {
    let frequency = (d.days - 1).max(0);
    let recency_days = (d.last_day - d.first_day).num_days() as f64;
    let t_days = days_between(d.first_day_start, calibration_end);
    let monetary_value = if frequency > 0 {
        nanos_to_units_f64(d.total_value - d.first_day_value) / frequency as f64
    } else {
        0.0
    };
    RepeatInputs {
        frequency,
        recency: if frequency > 0 {
            recency_days / unit_days
        } else {
            0.0
        },
        t: t_days / unit_days,
        monetary_value,
    }
}

/// Exact days from `a` to `b` (86,400 seconds a day, fractional).
pub fn days_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    let secs = (b.timestamp() - a.timestamp()) as f64;
    let nanos = f64::from(b.timestamp_subsec_nanos()) - f64::from(a.timestamp_subsec_nanos());
    (secs + nanos / 1e9) / 86_400.0
}

/// Nanos as a floating-point number of whole units (rounded once).
pub fn nanos_to_units_f64(nanos: i128) -> f64 {
    let units = nanos / NANOS_PER_UNIT;
    let frac = nanos % NANOS_PER_UNIT;
    units as f64 + frac as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn inputs_count_repeat_days_in_periods() {
        let first = day("2026-01-01");
        let d = PurchaseDays {
            days: 3,
            first_day: first,
            first_day_start: first.and_hms_opt(0, 0, 0).unwrap().and_utc(),
            last_day: day("2026-01-15"),
            total_value: 35_500_000_000,
            first_day_value: 10_000_000_000,
        };
        let end = day("2026-01-29").and_hms_opt(12, 0, 0).unwrap().and_utc();
        let i = repeat_inputs(&d, end, 7.0);
        assert_eq!(i.frequency, 2);
        assert_eq!(i.recency, 2.0);
        assert_eq!(i.t, 28.5 / 7.0);
        assert_eq!(i.monetary_value, 12.75);
        let once = PurchaseDays {
            days: 1,
            last_day: first,
            total_value: 10_000_000_000,
            ..d
        };
        let i = repeat_inputs(&once, end, 1.0);
        assert_eq!((i.frequency, i.recency, i.monetary_value), (0, 0.0, 0.0));
        assert_eq!(i.t, 28.5);
    }

    #[test]
    fn nanos_become_units_once() {
        assert_eq!(nanos_to_units_f64(10_500_000_000), 10.5);
        assert_eq!(nanos_to_units_f64(-1), -1e-9);
        assert_eq!(nanos_to_units_f64(0), 0.0);
    }
}
