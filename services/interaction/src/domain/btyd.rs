//! The purchase-history summaries Buy-Till-You-Die models take
//! (`PurchaseHistorySummary`): frequency, recency and T in a period unit, the
//! mean repeat-purchase value, and holdout figures.
//!
//! Purchases are grouped by UTC calendar day: several purchases on one day are
//! one transaction whose value is their sum.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::PurchaseHistorySummary;
use uuid::Uuid;

use super::money::{nanos_to_money, nanos_to_units_f64};
use super::summary::days_between;

/// Days in one period unit: 1, 7 or 30.4375. None for UNSPECIFIED.
pub fn unit_days(unit: PeriodUnit) -> Option<f64> {
    match unit {
        PeriodUnit::Day => Some(1.0),
        PeriodUnit::Week => Some(7.0),
        PeriodUnit::Month => Some(365.25 / 12.0),
        PeriodUnit::Unspecified => None,
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
}

/// The summary of one customer for calibration end `calibration_end`, unit
/// `unit_days` and currency `currency`.
pub fn purchase_history(
    d: &PurchaseDays,
    calibration_end: DateTime<Utc>,
    unit_days: f64,
    currency: &str,
) -> PurchaseHistorySummary {
    let frequency = (d.calibration_days - 1).max(0);
    let recency_days = (d.last_day - d.first_day).num_days() as f64;
    let first_midnight = d.first_day.and_time(chrono::NaiveTime::MIN).and_utc();
    let t_days = days_between(first_midnight, calibration_end);
    let monetary_value = if frequency > 0 {
        let repeat = d.total_value - d.first_day_value;
        nanos_to_units_f64(repeat) / frequency as f64
    } else {
        0.0
    };
    PurchaseHistorySummary {
        customer_id: d.customer_id.to_string(),
        first_purchase_time: Some(timestamp(d.first_time)),
        frequency,
        recency: if frequency > 0 {
            recency_days / unit_days
        } else {
            0.0
        },
        t: t_days / unit_days,
        monetary_value,
        currency_code: currency.to_string(),
        historical_value: Some(nanos_to_money(currency, d.total_value)),
        historical_margin: Some(nanos_to_money(currency, d.total_margin)),
        holdout_purchases: d.holdout_days,
        holdout_value: nanos_to_units_f64(d.holdout_value),
    }
}

/// One purchase, for [`group_days`].
#[derive(Debug, Clone)]
pub struct Purchase {
    /// When.
    pub occur_time: DateTime<Utc>,
    /// Currency of amount and margin.
    pub currency: String,
    /// Amount, nanos.
    pub amount: i128,
    /// Margin, nanos.
    pub margin: Option<i128>,
}

/// Groups one customer's purchases by day, the way the export query does:
/// calibration purchases are those before `calibration_end`, holdout ones
/// those in `[calibration_end, holdout_end)`. None when the customer made no
/// calibration purchase.
pub fn group_days(
    customer_id: Uuid,
    purchases: &[Purchase],
    calibration_end: DateTime<Utc>,
    holdout_end: Option<DateTime<Utc>>,
    currency: &str,
) -> Option<PurchaseDays> {
    let value = |p: &Purchase| if p.currency == currency { p.amount } else { 0 };
    let mut cal: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    let mut holdout: BTreeMap<NaiveDate, i128> = BTreeMap::new();
    let mut first_time: Option<DateTime<Utc>> = None;
    let mut margin = 0i128;
    for p in purchases {
        let day = p.occur_time.date_naive();
        if p.occur_time < calibration_end {
            *cal.entry(day).or_default() += value(p);
            first_time = Some(first_time.map_or(p.occur_time, |f| f.min(p.occur_time)));
            if p.currency == currency {
                margin += p.margin.unwrap_or(0);
            }
        } else if holdout_end.is_some_and(|h| p.occur_time < h) {
            *holdout.entry(day).or_default() += value(p);
        }
    }
    let (first_day, first_day_value) = cal.iter().next().map(|(d, v)| (*d, *v))?;
    let last_day = *cal.keys().next_back()?;
    Some(PurchaseDays {
        customer_id,
        first_time: first_time?,
        calibration_days: cal.len() as i64,
        first_day,
        last_day,
        total_value: cal.values().sum(),
        first_day_value,
        total_margin: margin,
        holdout_days: holdout.len() as i64,
        holdout_value: holdout.values().sum(),
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

    fn p(t: DateTime<Utc>, cur: &str, units: i128) -> Purchase {
        Purchase {
            occur_time: t,
            currency: cur.into(),
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
        let d = group_days(Uuid::nil(), &purchases, c, Some(h), "EUR").unwrap();
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
    }

    #[test]
    fn one_purchase_day_has_no_repeat_figures() {
        let purchases = vec![p(at(1, 1, 9), "EUR", 10), p(at(1, 1, 10), "EUR", 1)];
        let d = group_days(Uuid::nil(), &purchases, at(1, 2, 0), None, "EUR").unwrap();
        let s = purchase_history(&d, at(1, 2, 0), 1.0, "EUR");
        assert_eq!((s.frequency, s.recency, s.monetary_value), (0, 0.0, 0.0));
        assert_eq!(s.t, 1.0);
        assert!(group_days(Uuid::nil(), &purchases, at(1, 1, 0), None, "EUR").is_none());
    }

    proptest! {
        #[test]
        fn recency_is_at_most_t(offsets in proptest::collection::vec(0i64..(400 * 86_400), 1..30), unit in 0usize..3) {
            let base = at(1, 1, 0);
            let purchases: Vec<Purchase> = offsets.iter()
                .map(|s| p(base + chrono::Duration::seconds(*s), "EUR", 1))
                .collect();
            let c = base + chrono::Duration::days(401);
            let d = group_days(Uuid::nil(), &purchases, c, None, "EUR").unwrap();
            let u = [1.0, 7.0, 30.4375][unit];
            let s = purchase_history(&d, c, u, "EUR");
            prop_assert!(s.recency >= 0.0 && s.recency <= s.t);
            prop_assert!(s.frequency >= 0 && (s.frequency as usize) < offsets.len());
            prop_assert!(s.monetary_value == 0.0 || s.monetary_value >= 1.0);
        }
    }
}
