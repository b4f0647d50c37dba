//! The purchase-history summaries Buy-Till-You-Die models take
//! (`PurchaseHistorySummary`): frequency, recency and T in a period unit, the
//! mean repeat-purchase value, and holdout figures.
//!
//! Purchases are grouped by UTC calendar day: several purchases on one day are
//! one transaction whose value is their sum.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rapport_kit::calendar::{Tz, local_day, period_index, start_of_day, starts_period};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{
    OpportunityHistory, PurchaseHistorySummary, SummaryColumns,
};
use uuid::Uuid;

use rapport_kit::repeat::{self, RepeatInputs, nanos_to_units_f64, repeat_inputs};

use super::money::nanos_to_money;

/// Days in one period unit: 1, 7, 30.4375 or 365.25. None for UNSPECIFIED.
pub fn unit_days(unit: PeriodUnit) -> Option<f64> {
    match unit {
        PeriodUnit::Day => Some(1.0),
        PeriodUnit::Week => Some(7.0),
        PeriodUnit::Month => Some(365.25 / 12.0),
        PeriodUnit::Year => Some(365.25),
        PeriodUnit::Unspecified => None,
    }
}

/// A history counted in opportunities (see `OpportunityHistory`): the
/// calibration purchase days `calibration` (ascending, the first purchase
/// first), the holdout purchase days `holdout` (ascending), the calibration
/// end and the optional holdout end, with days and periods in `zone`.
pub fn opportunity_history(
    unit: PeriodUnit,
    calibration: impl IntoIterator<Item = NaiveDate>,
    holdout: impl IntoIterator<Item = NaiveDate>,
    (calibration_end, holdout_end): (DateTime<Utc>, Option<DateTime<Utc>>),
    zone: Tz,
) -> OpportunityHistory {
    let mut days = calibration.into_iter();
    let Some(first) = days.next() else {
        return OpportunityHistory::default();
    };
    let first = period_index(unit, first);
    let end = period_index(unit, local_day(calibration_end, zone));
    // Opportunities 1..=n: the periods after the first purchase's that have
    // ended by the calibration end.
    let n = (end - 1 - first).max(0);
    let (mut x, mut last, mut renewals) = (0, 0, 0);
    for k in days.map(|d| period_index(unit, d) - first) {
        if k < 1 || k > n || k == last {
            continue;
        }
        x += 1;
        last = k;
        if k == renewals + 1 {
            renewals = k;
        }
    }
    let (mut holdout_opportunities, mut holdout_frequency) = (0, 0);
    if let Some(h) = holdout_end {
        let start = if starts_period(unit, calibration_end, zone) {
            end
        } else {
            end + 1
        };
        let stop = period_index(unit, local_day(h, zone)) - 1;
        holdout_opportunities = (stop - start + 1).max(0);
        let mut seen = None;
        for k in holdout.into_iter().map(|d| period_index(unit, d)) {
            if (start..=stop).contains(&k) && seen != Some(k) {
                holdout_frequency += 1;
                seen = Some(k);
            }
        }
    }
    OpportunityHistory {
        opportunities: n,
        frequency: x,
        recency: last,
        renewals,
        holdout_opportunities,
        holdout_frequency,
    }
}

/// One customer's purchases grouped by day, as the export query returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseDays {
    /// The customer.
    pub customer_id: Uuid,
    /// The first purchase ever (within the calibration period, by definition).
    pub first_time: DateTime<Utc>,
    /// Distinct purchase days in the calibration period.
    pub calibration_days: i64,
    /// The first calibration purchase day.
    pub first_day: NaiveDate,
    /// The first instant of that day in the export's time zone.
    pub first_day_start: DateTime<Utc>,
    /// The last calibration purchase day.
    pub last_day: NaiveDate,
    /// Calibration purchases in the export currency, nanos.
    pub total_value: i128,
    /// Of which the first purchase day's, nanos.
    pub first_day_value: i128,
    /// Calibration margins in the export currency, nanos.
    pub total_margin: i128,
    /// Distinct purchase days in the holdout period.
    pub holdout_days: i64,
    /// Holdout purchases in the export currency, nanos.
    pub holdout_value: i128,
    /// The history in opportunities, when the export asked for it.
    pub opportunities: Option<OpportunityHistory>,
}

/// The model inputs of one customer (the kit's [`repeat_inputs`], which the
/// valuation service's kept summaries use too).
fn inputs(d: &PurchaseDays, calibration_end: DateTime<Utc>, unit_days: f64) -> RepeatInputs {
    let days = repeat::PurchaseDays {
        days: d.calibration_days,
        first_day: d.first_day,
        first_day_start: d.first_day_start,
        last_day: d.last_day,
        total_value: d.total_value,
        first_day_value: d.first_day_value,
    };
    repeat_inputs(&days, calibration_end, unit_days)
}

/// The summary of one customer for calibration end `calibration_end`, unit
/// `unit_days` and currency `currency`.
pub fn purchase_history(
    d: &PurchaseDays,
    calibration_end: DateTime<Utc>,
    unit_days: f64,
    currency: &str,
) -> PurchaseHistorySummary {
    let i = inputs(d, calibration_end, unit_days);
    PurchaseHistorySummary {
        customer_id: d.customer_id.to_string(),
        first_purchase_time: Some(timestamp(d.first_time)),
        frequency: i.frequency,
        recency: i.recency,
        t: i.t,
        monetary_value: i.monetary_value,
        currency_code: currency.to_string(),
        historical_value: Some(nanos_to_money(currency, d.total_value)),
        historical_margin: Some(nanos_to_money(currency, d.total_margin)),
        holdout_purchases: d.holdout_days,
        holdout_value: nanos_to_units_f64(d.holdout_value),
        opportunities: d.opportunities,
    }
}

/// Appends one customer's model inputs to `columns` (see `SummaryColumns`):
/// the same figures as [`purchase_history`], column by column.
pub fn push_columns(
    columns: &mut SummaryColumns,
    d: &PurchaseDays,
    calibration_end: DateTime<Utc>,
    unit_days: f64,
) {
    let i = inputs(d, calibration_end, unit_days);
    columns
        .customer_ids
        .extend_from_slice(d.customer_id.as_bytes());
    columns
        .first_purchase_micros
        .push(d.first_time.timestamp_micros());
    columns.frequency.push(i.frequency);
    columns.recency.push(i.recency);
    columns.t.push(i.t);
    columns.monetary_value.push(i.monetary_value);
    columns.holdout_purchases.push(d.holdout_days);
    if let Some(o) = &d.opportunities {
        columns.opportunities.push(o.opportunities);
        columns.opportunity_frequency.push(o.frequency);
        columns.opportunity_recency.push(o.recency);
        columns.renewals.push(o.renewals);
        columns.holdout_opportunities.push(o.holdout_opportunities);
        columns
            .holdout_opportunity_frequency
            .push(o.holdout_frequency);
    }
}

/// One purchase, for [`group_days`].
#[derive(Debug, Clone)]
pub struct Purchase {
    /// When.
    pub occur_time: DateTime<Utc>,
    /// Whether it is in the export currency (amount and margin count only
    /// then).
    pub in_currency: bool,
    /// Amount, nanos.
    pub amount: i128,
    /// Margin, nanos.
    pub margin: Option<i128>,
}

/// What an export asks for: the windows and whether to count opportunities
/// (in calendar periods of which unit).
#[derive(Debug, Clone)]
pub struct Windows {
    /// End of the calibration window, exclusive.
    pub calibration_end: DateTime<Utc>,
    /// End of the holdout window, exclusive.
    pub holdout_end: Option<DateTime<Utc>>,
    /// The unit of opportunities, when they are asked for.
    pub opportunities: Option<PeriodUnit>,
    /// The time zone whose days (and periods) purchases are grouped by.
    pub zone: Tz,
}

/// Groups one customer's purchases by day, the way the export query does:
/// calibration purchases are those before `calibration_end`, holdout ones
/// those in `[calibration_end, holdout_end)`. None when the customer made no
/// calibration purchase.
pub fn group_days(customer_id: Uuid, purchases: &[Purchase], w: &Windows) -> Option<PurchaseDays> {
    let (calibration_end, holdout_end) = (w.calibration_end, w.holdout_end);
    let value = |p: &Purchase| if p.in_currency { p.amount } else { 0 };
    let mut cal: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    let mut holdout: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    let mut first_time: Option<DateTime<Utc>> = None;
    let mut margin = 0i128;
    for p in purchases {
        let day = local_day(p.occur_time, w.zone);
        if p.occur_time < calibration_end {
            *cal.entry(day).or_default() += value(p);
            first_time = Some(first_time.map_or(p.occur_time, |f| f.min(p.occur_time)));
            if p.in_currency {
                margin += p.margin.unwrap_or(0);
            }
        } else if holdout_end.is_some_and(|h| p.occur_time < h) {
            *holdout.entry(day).or_default() += value(p);
        }
    }
    let (first_day, first_day_value) = cal.iter().next().map(|(d, v)| (*d, *v))?;
    let last_day = *cal.keys().next_back()?;
    let opportunities = w.opportunities.map(|unit| {
        opportunity_history(
            unit,
            cal.keys().copied(),
            holdout.keys().copied(),
            (calibration_end, holdout_end),
            w.zone,
        )
    });
    Some(PurchaseDays {
        customer_id,
        first_time: first_time?,
        calibration_days: cal.len() as i64,
        first_day,
        first_day_start: start_of_day(first_day, w.zone),
        last_day,
        total_value: cal.values().sum(),
        first_day_value,
        total_margin: margin,
        holdout_days: holdout.len() as i64,
        holdout_value: holdout.values().sum(),
        opportunities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap()
    }

    fn windows(c: DateTime<Utc>, h: Option<DateTime<Utc>>) -> Windows {
        Windows {
            calibration_end: c,
            holdout_end: h,
            opportunities: None,
            zone: Tz::UTC,
        }
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn donations_style_years() {
        // First gift in 1995, then 1996, 1998 (twice) and 2000; the
        // calibration ends on 1 January 2002: opportunities are 1996-2001.
        let cal = [
            day(1995, 3, 1),
            day(1996, 5, 1),
            day(1998, 2, 1),
            day(1998, 9, 1),
            day(2000, 1, 1),
        ];
        let c = Utc.with_ymd_and_hms(2002, 1, 1, 0, 0, 0).unwrap();
        let h = Utc.with_ymd_and_hms(2006, 1, 1, 0, 0, 0).unwrap();
        let o = opportunity_history(
            PeriodUnit::Year,
            cal,
            [day(2003, 4, 1), day(2003, 5, 1), day(2005, 12, 31)],
            (c, Some(h)),
            Tz::UTC,
        );
        assert_eq!(
            (o.opportunities, o.frequency, o.recency, o.renewals),
            (6, 3, 5, 1)
        );
        assert_eq!((o.holdout_opportunities, o.holdout_frequency), (4, 2));
        // Mid-year ends: the current year does not count, and the holdout
        // starts with the first whole year.
        let mid = Utc.with_ymd_and_hms(2001, 7, 1, 0, 0, 0).unwrap();
        let o = opportunity_history(PeriodUnit::Year, cal, [], (mid, Some(h)), Tz::UTC);
        assert_eq!((o.opportunities, o.frequency, o.recency), (5, 3, 5));
        assert_eq!(o.holdout_opportunities, 4);
        // A first purchase in the current period has no opportunity yet.
        let o = opportunity_history(
            PeriodUnit::Year,
            [day(2001, 3, 1)],
            [],
            (mid, None),
            Tz::UTC,
        );
        assert_eq!(o, OpportunityHistory::default());
    }

    #[test]
    fn renewals_stop_at_the_first_gap() {
        let c = Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap();
        let months = [1, 2, 3, 5, 6].map(|m| day(2025, m, 10));
        let o = opportunity_history(PeriodUnit::Month, months, [], (c, None), Tz::UTC);
        assert_eq!(
            (o.opportunities, o.frequency, o.recency, o.renewals),
            (5, 4, 5, 2)
        );
    }

    fn p(t: DateTime<Utc>, cur: &str, units: i128) -> Purchase {
        Purchase {
            occur_time: t,
            in_currency: cur == "EUR",
            amount: units * 1_000_000_000,
            margin: Some(units * 100_000_000),
        }
    }

    #[test]
    fn a_hand_computed_customer() {
        // Days: Jan 1 (10 + 5, same day), Jan 8 (20), Jan 29 (30 USD: counts
        // for frequency but not for money), then Feb 5 (holdout, 7).
        let purchases = vec![
            p(at(1, 1, 9), "EUR", 10),
            p(at(1, 1, 18), "EUR", 5),
            p(at(1, 8, 12), "EUR", 20),
            p(at(1, 29, 12), "USD", 30),
            p(at(2, 5, 12), "EUR", 7),
        ];
        let c = at(2, 1, 0);
        let h = at(3, 1, 0);
        let d = group_days(Uuid::nil(), &purchases, &windows(c, Some(h))).unwrap();
        assert_eq!(d.calibration_days, 3);
        assert_eq!(d.first_time, at(1, 1, 9));
        let s = purchase_history(&d, c, 7.0, "EUR");
        assert_eq!(s.frequency, 2);
        // Jan 1 -> Jan 29 = 28 days = 4 weeks; Jan 1 00:00 -> Feb 1 = 31 days.
        assert_eq!(s.recency, 4.0);
        assert!((s.t - 31.0 / 7.0).abs() < 1e-12);
        // Repeat days: Jan 8 (20 EUR) and Jan 29 (0 EUR): mean 10.
        assert_eq!(s.monetary_value, 10.0);
        assert_eq!(s.historical_value.as_ref().unwrap().units, 35);
        assert_eq!(s.historical_margin.as_ref().unwrap().units, 3);
        assert_eq!(s.historical_margin.as_ref().unwrap().nanos, 500_000_000);
        assert_eq!(s.holdout_purchases, 1);
        assert_eq!(s.holdout_value, 7.0);
        let m = purchase_history(&d, c, unit_days(PeriodUnit::Month).unwrap(), "EUR");
        assert!((m.t - 31.0 / 30.4375).abs() < 1e-12);
        // The columns carry the same inputs.
        let mut cols = SummaryColumns::default();
        push_columns(&mut cols, &d, c, 7.0);
        push_columns(&mut cols, &d, c, 7.0);
        assert_eq!(cols.customer_ids.len(), 32);
        assert_eq!(cols.frequency, vec![2, 2]);
        assert_eq!(cols.recency, vec![s.recency; 2]);
        assert_eq!(cols.t, vec![s.t; 2]);
        assert_eq!(cols.monetary_value, vec![10.0; 2]);
        assert_eq!(cols.holdout_purchases, vec![1, 1]);
        assert_eq!(
            cols.first_purchase_micros[0],
            at(1, 1, 9).timestamp_micros()
        );
        assert!(cols.opportunities.is_empty());
    }

    #[test]
    fn one_purchase_day_has_no_repeat_figures() {
        let purchases = vec![p(at(1, 1, 9), "EUR", 10), p(at(1, 1, 10), "EUR", 1)];
        let d = group_days(Uuid::nil(), &purchases, &windows(at(1, 2, 0), None)).unwrap();
        let s = purchase_history(&d, at(1, 2, 0), 1.0, "EUR");
        assert_eq!((s.frequency, s.recency, s.monetary_value), (0, 0.0, 0.0));
        assert_eq!(s.t, 1.0);
        assert!(group_days(Uuid::nil(), &purchases, &windows(at(1, 1, 0), None)).is_none());
    }

    proptest! {
        #[test]
        fn recency_is_at_most_t(offsets in proptest::collection::vec(0i64..(400 * 86_400), 1..30), unit in 0usize..3) {
            let base = at(1, 1, 0);
            let purchases: Vec<Purchase> = offsets.iter()
                .map(|s| p(base + chrono::Duration::seconds(*s), "EUR", 1))
                .collect();
            let c = base + chrono::Duration::days(401);
            let d = group_days(Uuid::nil(), &purchases, &windows(c, None)).unwrap();
            let u = [1.0, 7.0, 30.4375][unit];
            let s = purchase_history(&d, c, u, "EUR");
            prop_assert!(s.recency >= 0.0 && s.recency <= s.t);
            prop_assert!(s.frequency >= 0 && (s.frequency as usize) < offsets.len());
            prop_assert!(s.monetary_value == 0.0 || s.monetary_value >= 1.0);
        }
    }
}
