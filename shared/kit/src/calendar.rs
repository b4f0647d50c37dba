//! Calendar days and periods in a time zone (UTC unless a request names
//! another), as purchase histories count them: days, ISO weeks (Monday to
//! Sunday), calendar months and calendar years
//! (`rapport.common.v1.PeriodUnit`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
pub use chrono_tz::Tz;
use rapport_proto::rapport::common::v1::PeriodUnit;

use crate::error::Violations;

/// The zone an IANA name ("Europe/Madrid", "UTC") names; UTC for the empty
/// name; None for an unknown one.
pub fn zone(name: &str) -> Option<Tz> {
    if name.is_empty() {
        return Some(Tz::UTC);
    }
    name.parse().ok()
}

impl Violations {
    /// The zone `name` names (UTC when empty), or a violation on `field`
    /// and UTC when the IANA database does not know it.
    pub fn time_zone(&mut self, field: impl Into<String>, name: &str) -> Tz {
        zone(name).unwrap_or_else(|| {
            self.add(
                field,
                "must be an IANA time zone name, e.g. \"Europe/Madrid\" (or empty for UTC)",
            );
            Tz::UTC
        })
    }
}

/// The calendar day `at` falls on in `zone`.
pub fn local_day(at: DateTime<Utc>, zone: Tz) -> NaiveDate {
    at.with_timezone(&zone).date_naive()
}

/// The first instant of `day` in `zone`: its local midnight, or the first
/// local time after a gap when the clocks jump over midnight that day.
pub fn start_of_day(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let mut local = day.and_time(NaiveTime::MIN);
    for _ in 0..48 {
        if let Some(t) = zone.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    local.and_utc()
}

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

/// Whether `at` is the first instant of its calendar period in `zone`.
pub fn starts_period(unit: PeriodUnit, at: DateTime<Utc>, zone: Tz) -> bool {
    let day = local_day(at, zone);
    start_of_day(day, zone) == at
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
        let utc = Tz::UTC;
        assert!(starts_period(PeriodUnit::Week, at(2025, 1, 6, 0), utc));
        assert!(!starts_period(PeriodUnit::Week, at(2025, 1, 5, 0), utc));
        assert!(!starts_period(PeriodUnit::Day, at(2025, 1, 5, 1), utc));
        assert!(starts_period(PeriodUnit::Month, at(2025, 2, 1, 0), utc));
        // In New York (UTC−5 in winter) a month starts at 05:00 UTC.
        let ny = zone("America/New_York").unwrap();
        assert!(starts_period(PeriodUnit::Month, at(2025, 2, 1, 5), ny));
        assert!(!starts_period(PeriodUnit::Month, at(2025, 2, 1, 0), ny));
    }

    #[test]
    fn zones_days_and_midnights() {
        assert_eq!(zone(""), Some(Tz::UTC));
        assert!(zone("Mars/Olympus").is_none());
        let ny = zone("America/New_York").unwrap();
        // 03:00 UTC on 1 January is still 31 December in New York.
        assert_eq!(local_day(at(2025, 1, 1, 3), ny), day(2024, 12, 31));
        assert_eq!(start_of_day(day(2025, 7, 1), ny), at(2025, 7, 1, 4));
        // Where the clocks jump over midnight (Santiago, 7 September 2025,
        // 00:00 -> 01:00), the day starts at 01:00 local time.
        let santiago = zone("America/Santiago").unwrap();
        assert_eq!(start_of_day(day(2025, 9, 7), santiago), at(2025, 9, 7, 4));
    }
}
