//! The purchase summaries the valuation service keeps per customer from the
//! interaction feed, so that a fit over a whole tenant needs no export.
//!
//! A summary holds what the repeat-purchase models take from a customer's
//! purchases grouped by UTC day: first and last day, distinct days, the sum
//! of the amounts and the first day's, the margins, and the currency. New
//! purchases merge into it ([`deltas`]: what a batch adds per customer, and
//! the store merges that into the row); a merge, unmerge or erasure
//! rebuilds the customers it touches from their purchases. A fit turns
//! each row into the model inputs with the kit's
//! [`repeat_inputs`](rapport_kit::repeat::repeat_inputs), exactly as the
//! interaction service's export does, so both give the same estimates.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rapport_kit::repeat::{PurchaseDays, repeat_inputs};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use uuid::Uuid;

use super::fitting::FitCase;

/// The UTC calendar day of `t`, numbered from 1970-01-01.
pub fn utc_day(t: DateTime<Utc>) -> i32 {
    t.timestamp().div_euclid(86_400) as i32
}

/// The first instant of UTC day `day`.
pub fn day_start(day: i32) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(i64::from(day))
}

/// The date of UTC day `day`.
fn date(day: i32) -> NaiveDate {
    day_start(day).date_naive()
}

/// An amount in nanos (None beyond i128, out of any contract).
pub fn nanos(d: Decimal) -> Option<i128> {
    d.checked_mul(Decimal::from(1_000_000_000))?.to_i128()
}

/// A sum the summaries store: below 9e18 nanos in magnitude (9 billion
/// units), the bound the store's statements use too; None beyond.
fn stored(v: i128) -> Option<i64> {
    (v.abs() < 9_000_000_000_000_000_000).then_some(v as i64)
}

/// One new purchase, as a batch hands it to [`deltas`].
#[derive(Debug, Clone)]
pub struct NewPurchase<'a> {
    /// The customer.
    pub customer: Uuid,
    /// When.
    pub time: DateTime<Utc>,
    /// The currency of the amount, None without an amount.
    pub currency: Option<&'a str>,
    /// The amount, nanos.
    pub amount: Option<i128>,
    /// The margin, nanos.
    pub margin: Option<i128>,
}

/// What a batch of new purchases adds to one customer's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The customer.
    pub customer: Uuid,
    /// Earliest and latest purchase of the batch.
    pub first_time: DateTime<Utc>,
    /// Latest purchase of the batch.
    pub last_time: DateTime<Utc>,
    /// The batch's first and last purchase days.
    pub first_day: i32,
    /// The batch's last purchase day.
    pub last_day: i32,
    /// Days of the batch on which the customer had no purchase before.
    pub new_days: i32,
    /// Purchases in the batch.
    pub purchases: i64,
    /// The currency of the batch's amounts when there is one.
    pub currency: Option<String>,
    /// The batch's amounts are in more than one currency.
    pub mixed: bool,
    /// Sum of the amounts, nanos (None from 9e18 on).
    pub value: Option<i64>,
    /// Of which on the batch's first day.
    pub first_day_value: Option<i64>,
    /// Sum of the margins of purchases with an amount, nanos.
    pub margin: Option<i64>,
}

/// Per customer, what `purchases` add to the summaries, given the
/// (customer, day) pairs that already had a purchase before them.
pub fn deltas(purchases: &[NewPurchase<'_>], existing: &HashSet<(Uuid, i32)>) -> Vec<Delta> {
    #[derive(Default)]
    struct Acc<'a> {
        times: Option<(DateTime<Utc>, DateTime<Utc>)>,
        days: BTreeMap<i32, i128>,
        purchases: i64,
        currencies: Vec<&'a str>,
        value: i128,
        margin: i128,
    }
    let mut by: HashMap<Uuid, Acc<'_>> = HashMap::new();
    for p in purchases {
        let a = by.entry(p.customer).or_default();
        a.times = Some(match a.times {
            None => (p.time, p.time),
            Some((f, l)) => (f.min(p.time), l.max(p.time)),
        });
        let value = p.currency.and(p.amount).unwrap_or(0);
        *a.days.entry(utc_day(p.time)).or_default() += value;
        a.purchases += 1;
        if let Some(c) = p.currency {
            if !a.currencies.contains(&c) {
                a.currencies.push(c);
            }
            a.value += value;
            a.margin += p.margin.unwrap_or(0);
        }
    }
    let mut out: Vec<Delta> = by
        .into_iter()
        .filter_map(|(customer, a)| {
            let (first_time, last_time) = a.times?;
            let (&first_day, &first_value) = a.days.iter().next()?;
            let last_day = *a.days.keys().next_back()?;
            let new_days = a
                .days
                .keys()
                .filter(|d| !existing.contains(&(customer, **d)))
                .count() as i32;
            Some(Delta {
                customer,
                first_time,
                last_time,
                first_day,
                last_day,
                new_days,
                purchases: a.purchases,
                currency: (a.currencies.len() == 1).then(|| a.currencies[0].to_string()),
                mixed: a.currencies.len() > 1,
                value: stored(a.value),
                first_day_value: stored(first_value),
                margin: stored(a.margin),
            })
        })
        .collect();
    out.sort_unstable_by_key(|d| d.customer);
    out
}

/// One kept summary as a fit reads it: the value columns are in the fit's
/// currency (0 for a customer whose amounts are in another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptRow {
    /// The customer (nil when the read did not ask for it).
    pub customer_id: Uuid,
    /// The first purchase.
    pub first_time: DateTime<Utc>,
    /// Distinct purchase days.
    pub days: i32,
    /// First purchase day.
    pub first_day: i32,
    /// Last purchase day.
    pub last_day: i32,
    /// Sum of the amounts, nanos.
    pub value: i64,
    /// Of which on the first day.
    pub first_day_value: i64,
    /// Sum of the margins, nanos (0 when the read did not ask for it).
    pub margin: i64,
}

/// The fit case of a kept summary for the calibration end `end` and a
/// period of `unit_days` days: the figures the export would give.
pub fn fit_case(r: &KeptRow, end: DateTime<Utc>, unit_days: f64) -> FitCase {
    let days = PurchaseDays {
        days: i64::from(r.days),
        first_day: date(r.first_day),
        first_day_start: day_start(r.first_day),
        last_day: date(r.last_day),
        total_value: i128::from(r.value),
        first_day_value: i128::from(r.first_day_value),
    };
    let i = repeat_inputs(&days, end, unit_days);
    FitCase {
        frequency: i.frequency,
        recency: i.recency,
        t: i.t,
        monetary_value: i.monetary_value,
        in_currency: true,
        holdout_purchases: 0,
        opportunities: None,
        holdout_opportunities: (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn days_are_utc_days_from_1970() {
        assert_eq!(utc_day(at("1970-01-01T23:59:59Z")), 0);
        assert_eq!(utc_day(at("1969-12-31T23:59:59Z")), -1);
        assert_eq!(utc_day(at("2026-12-07T00:00:00Z")), 20_794);
        assert_eq!(day_start(20_794), at("2026-12-07T00:00:00Z"));
        assert_eq!(nanos(Decimal::new(1050, 2)), Some(10_500_000_000));
    }

    #[test]
    fn a_batch_adds_its_new_days_values_and_currency() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let p = |customer, time: &str, amount: i128, currency| NewPurchase {
            customer,
            time: at(time),
            currency,
            amount: Some(amount),
            margin: Some(amount / 4),
        };
        let batch = [
            p(a, "2026-01-02T10:00:00Z", 4_000, Some("EUR")),
            p(a, "2026-01-01T23:00:00Z", 1_000, Some("EUR")),
            p(a, "2026-01-01T01:00:00Z", 2_000, Some("EUR")),
            p(a, "2026-01-05T00:00:00Z", 8_000, None),
            p(b, "2026-01-03T00:00:00Z", 100, Some("EUR")),
            p(b, "2026-01-03T01:00:00Z", 200, Some("USD")),
        ];
        let day = |s: &str| utc_day(at(s));
        // a already bought on 2 January.
        let existing = HashSet::from([(a, day("2026-01-02T00:00:00Z"))]);
        let d = deltas(&batch, &existing);
        assert_eq!(d.len(), 2);
        let da = &d[0];
        assert_eq!(da.customer, a);
        assert_eq!(da.first_time, at("2026-01-01T01:00:00Z"));
        assert_eq!(da.last_time, at("2026-01-05T00:00:00Z"));
        assert_eq!(
            (da.first_day, da.last_day),
            (day("2026-01-01T00:00:00Z"), day("2026-01-05T00:00:00Z"))
        );
        assert_eq!(da.new_days, 2);
        assert_eq!(da.purchases, 4);
        assert_eq!(da.currency.as_deref(), Some("EUR"));
        assert!(!da.mixed);
        // The purchase without a currency counts as a day, not as value.
        assert_eq!(da.value, Some(7_000));
        assert_eq!(da.first_day_value, Some(3_000));
        assert_eq!(da.margin, Some(250 + 500 + 1_000));
        let db = &d[1];
        assert!(db.mixed);
        assert_eq!(db.currency, None);
        assert_eq!(db.new_days, 1);
    }

    #[test]
    fn a_kept_row_gives_the_exported_figures() {
        let first = utc_day(at("2026-01-01T00:00:00Z"));
        let r = KeptRow {
            customer_id: Uuid::nil(),
            margin: 0,
            first_time: at("2026-01-01T15:00:00Z"),
            days: 3,
            first_day: first,
            last_day: first + 14,
            value: 35_500_000_000,
            first_day_value: 10_000_000_000,
        };
        let c = fit_case(&r, at("2026-01-29T12:00:00Z"), 7.0);
        assert_eq!(c.frequency, 2);
        assert_eq!(c.recency, 2.0);
        assert_eq!(c.t, 28.5 / 7.0);
        assert_eq!(c.monetary_value, 12.75);
    }
}
