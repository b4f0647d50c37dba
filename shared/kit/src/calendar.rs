//! Calendar periods in UTC, as the models of discrete opportunities count
//! them (`rapport.common.v1.PeriodUnit`): days, ISO weeks (Monday to
//! Sunday), calendar months and calendar years.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rapport_proto::rapport::common::v1::PeriodUnit;

/// The calendar period of `unit` that `day` falls in, numbered so that
/// consecutive periods have consecutive numbers: UTC days, ISO weeks (Monday
/// to Sunday), calendar months, calendar years.
pub fn period_index(unit: PeriodUnit, day: NaiveDate) -> i64 {
    let from_ce = i64::from(day.num_days_from_ce());
    match unit {
        PeriodUnit::Day | PeriodUnit::Unspecified => from_ce,
        // 1 January of the year 1 (day 1 from the common era) was a Monday.
        PeriodUnit::Week => (from_ce - 1).div_euclid(7),
        PeriodUnit::Month => i64::from(day.year()) * 12 + i64::from(day.month0()),
        PeriodUnit::Year => i64::from(day.year()),
    }
}

/// Whether `at` is the first instant of its calendar period.
pub fn starts_period(unit: PeriodUnit, at: DateTime<Utc>) -> bool {
    let day = at.date_naive();
    let midnight = at.time() == chrono::NaiveTime::MIN;
    midnight
        && match unit {
            PeriodUnit::Day | PeriodUnit::Unspecified => true,
            PeriodUnit::Week => day.weekday() == chrono::Weekday::Mon,
            PeriodUnit::Month => day.day() == 1,
            PeriodUnit::Year => day.ordinal() == 1,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn calendar_periods_number_consecutively() {
        // 2025-01-05 is a Sunday, 2025-01-06 a Monday.
        let w = |d| period_index(PeriodUnit::Week, d);
        assert_eq!(w(day(2025, 1, 6)), w(day(2025, 1, 5)) + 1);
        assert_eq!(w(day(2025, 1, 12)), w(day(2025, 1, 6)));
        let m = |d| period_index(PeriodUnit::Month, d);
        assert_eq!(m(day(2025, 1, 1)), m(day(2024, 12, 31)) + 1);
        assert_eq!(period_index(PeriodUnit::Year, day(2001, 6, 1)), 2001);
        assert!(starts_period(PeriodUnit::Week, at(2025, 1, 6, 0)));
        assert!(!starts_period(PeriodUnit::Week, at(2025, 1, 5, 0)));
        assert!(!starts_period(PeriodUnit::Day, at(2025, 1, 5, 1)));
        assert!(starts_period(PeriodUnit::Month, at(2025, 2, 1, 0)));
    }
}
