//! Acquisition cohorts: calendar months or quarters (UTC) as consecutive
//! period numbers, their labels ("2024-03", "2024-Q1"), and the cohort
//! report's rows assembled from per-cohort, per-period aggregates.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use rust_decimal::Decimal;

use super::money;

/// Longest report, in cohorts.
pub const MAX_COHORTS: i64 = 240;

/// Largest report, in cohort periods (the cells of the retention matrix):
/// a report of the latest 240 monthly cohorts holds 28,920; a range
/// starting centuries ago would hold millions.
pub const MAX_CELLS: i64 = 100_000;

/// The number of cohort periods of the report of cohorts `first..=last`
/// when `current` is the period of the report time: each cohort has one
/// period per period since its acquisition, up to the current one.
pub fn cells(first: i64, last: i64, current: i64) -> i64 {
    let mut n: i64 = 0;
    let mut c = first;
    while c <= last && n <= MAX_CELLS {
        n = n.saturating_add(current.saturating_sub(c).max(0).saturating_add(1));
        c += 1;
    }
    n
}

/// Months or quarters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
}

impl Granularity {
    /// Months per period.
    fn months(self) -> i64 {
        match self {
            Granularity::Month => 1,
            Granularity::Quarter => 3,
        }
    }

    /// The proto enum value (MONTH = 1, QUARTER = 2).
    pub fn to_proto(self) -> i32 {
        match self {
            Granularity::Month => 1,
            Granularity::Quarter => 2,
        }
    }
}

/// The period number (months or quarters since year 0) containing `t`.
pub fn period_of(t: DateTime<Utc>, g: Granularity) -> i64 {
    let month = i64::from(t.year()) * 12 + i64::from(t.month0());
    month.div_euclid(g.months())
}

/// Start (00:00 UTC on the first day) of period `p`.
pub fn period_start(p: i64, g: Granularity) -> Option<DateTime<Utc>> {
    let month = p * g.months();
    let year = i32::try_from(month.div_euclid(12)).ok()?;
    let m = u32::try_from(month.rem_euclid(12)).ok()? + 1;
    Utc.with_ymd_and_hms(year, m, 1, 0, 0, 0).single()
}

/// The label of period `p`: "YYYY-MM" or "YYYY-Qn".
pub fn label(p: i64, g: Granularity) -> String {
    let month = p * g.months();
    let year = month.div_euclid(12);
    match g {
        Granularity::Month => format!("{year:04}-{:02}", month.rem_euclid(12) + 1),
        Granularity::Quarter => format!("{year:04}-Q{}", month.rem_euclid(12) / 3 + 1),
    }
}

/// Parses "YYYY-MM" or "YYYY-Qn" into its granularity and period.
pub fn parse_label(s: &str) -> Option<(Granularity, i64)> {
    let (year, rest) = s.split_once('-')?;
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    if year < 1 {
        return None;
    }
    if let Some(q) = rest.strip_prefix('Q') {
        let q: i64 = match q {
            "1" | "2" | "3" | "4" => q.parse().ok()?,
            _ => return None,
        };
        return Some((Granularity::Quarter, year * 4 + q - 1));
    }
    if rest.len() != 2 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let m: i64 = rest.parse().ok()?;
    (1..=12)
        .contains(&m)
        .then_some((Granularity::Month, year * 12 + m - 1))
}

/// Aggregates of one cohort in one period since acquisition.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The cohort's period.
    pub cohort: i64,
    /// The calendar period of the purchases.
    pub period: i64,
    /// Distinct customers buying.
    pub active: i64,
    /// Purchases in the report currency.
    pub revenue: Decimal,
}

/// Stored values of one cohort's customers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CohortValues {
    /// Customers with a stored value.
    pub scored: i64,
    /// Sum of their historical values.
    pub historical: Decimal,
    /// Sum of their CLVs.
    pub clv: Decimal,
}

/// One period of a cohort row.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodRow {
    /// Periods since acquisition.
    pub index: i32,
    /// Customers buying in it.
    pub active: i64,
    /// active / size.
    pub retention: f64,
    /// Revenue in the report currency.
    pub revenue: Decimal,
    /// Whether the period has ended.
    pub complete: bool,
}

/// One cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortRow {
    /// Its period.
    pub period: i64,
    /// Its label.
    pub label: String,
    /// Customers acquired.
    pub size: i64,
    /// Periods 0 to the current one.
    pub periods: Vec<PeriodRow>,
    /// Revenue to date.
    pub revenue: Decimal,
    /// Customers with a stored value.
    pub scored: i64,
    /// Mean historical value of the scored customers.
    pub mean_historical: Option<Decimal>,
    /// Mean CLV of the scored customers.
    pub mean_clv: Option<Decimal>,
}

/// Assembles the rows for cohorts `first..=last` with `current` the period
/// of the report time.
pub fn rows(
    first: i64,
    last: i64,
    current: i64,
    sizes: &HashMap<i64, i64>,
    activity: &[Activity],
    values: &HashMap<i64, CohortValues>,
) -> Vec<CohortRow> {
    let mut by_cell: HashMap<(i64, i64), (i64, Decimal)> = HashMap::new();
    for a in activity {
        let cell = by_cell.entry((a.cohort, a.period)).or_default();
        cell.0 += a.active;
        cell.1 += a.revenue;
    }
    (first..=last)
        .map(|c| {
            let size = sizes.get(&c).copied().unwrap_or(0);
            let periods: Vec<PeriodRow> = (c..=current.max(c))
                .map(|p| {
                    let (active, revenue) = by_cell.get(&(c, p)).cloned().unwrap_or_default();
                    PeriodRow {
                        index: i32::try_from(p - c).unwrap_or(i32::MAX),
                        active,
                        retention: if size > 0 {
                            (active as f64 / size as f64).clamp(0.0, 1.0)
                        } else {
                            0.0
                        },
                        revenue,
                        complete: p < current,
                    }
                })
                .collect();
            let revenue = periods.iter().map(|p| p.revenue).sum();
            let v = values.get(&c).cloned().unwrap_or_default();
            CohortRow {
                period: c,
                label: String::new(),
                size,
                periods,
                revenue,
                scored: v.scored,
                mean_historical: money::mean(v.historical, v.scored),
                mean_clv: money::mean(v.clv, v.scored),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_labels_and_parsing() {
        let t = Utc.with_ymd_and_hms(2024, 3, 31, 23, 59, 59).unwrap();
        let m = period_of(t, Granularity::Month);
        let q = period_of(t, Granularity::Quarter);
        assert_eq!(label(m, Granularity::Month), "2024-03");
        assert_eq!(label(q, Granularity::Quarter), "2024-Q1");
        assert_eq!(
            period_start(m + 1, Granularity::Month),
            Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).single()
        );
        assert_eq!(
            period_start(q + 1, Granularity::Quarter),
            Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).single()
        );
        assert_eq!(parse_label("2024-03"), Some((Granularity::Month, m)));
        assert_eq!(parse_label("2024-Q1"), Some((Granularity::Quarter, q)));
        for bad in [
            "2024-13", "2024-Q5", "24-01", "2024-1", "2024/01", "", "2024-Q",
        ] {
            assert_eq!(parse_label(bad), None, "{bad}");
        }
        assert_eq!(label(m - 3, Granularity::Month), "2023-12");
    }

    #[test]
    fn cells_count_periods_since_acquisition() {
        assert_eq!(cells(10, 12, 12), 3 + 2 + 1);
        assert_eq!(cells(10, 12, 11), 2 + 1 + 1);
        assert_eq!(cells(13, 12, 12), 0);
        // The latest 240 monthly cohorts fit; 240 cohorts from year 1 do not.
        assert_eq!(cells(1, 240, 240), 240 * 241 / 2);
        assert!(cells(1, 240, 240) <= MAX_CELLS);
        assert!(cells(12, 251, 2026 * 12) > MAX_CELLS);
        assert!(cells(i64::MIN, i64::MIN + 239, i64::MAX) > MAX_CELLS);
    }

    #[test]
    fn rows_fill_gaps_and_compute_retention() {
        let sizes = HashMap::from([(10, 4), (12, 2)]);
        let activity = vec![
            Activity {
                cohort: 10,
                period: 10,
                active: 4,
                revenue: Decimal::from(100),
            },
            Activity {
                cohort: 10,
                period: 12,
                active: 1,
                revenue: Decimal::from(30),
            },
            Activity {
                cohort: 12,
                period: 12,
                active: 2,
                revenue: Decimal::from(10),
            },
        ];
        let values = HashMap::from([(
            10,
            CohortValues {
                scored: 3,
                historical: Decimal::from(90),
                clv: Decimal::from(10),
            },
        )]);
        let r = rows(10, 12, 12, &sizes, &activity, &values);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].periods.len(), 3);
        assert_eq!(r[0].periods[0].retention, 1.0);
        assert_eq!(r[0].periods[1].active, 0);
        assert_eq!(r[0].periods[2].retention, 0.25);
        assert!(r[0].periods[1].complete && !r[0].periods[2].complete);
        assert_eq!(r[0].revenue, Decimal::from(130));
        assert_eq!(r[0].mean_historical, Some(Decimal::from(30)));
        assert_eq!(r[1].size, 0);
        assert_eq!(r[1].periods[0].retention, 0.0);
        assert_eq!(r[1].mean_clv, None);
        assert_eq!(r[2].periods.len(), 1);
    }
}
