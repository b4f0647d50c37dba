//! A customer's summary at a point in time (`CustomerSummary`), computed from
//! the customer's interactions.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::interaction::v1::{
    ContactCount, CurrencySummary, CustomerSummary, InteractionType,
};
use uuid::Uuid;

use super::money::{div_half_even, nanos_to_money};
use super::types::{CONTACT_TYPES, is_contact, is_open_status};

/// What the summary needs of one interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Tie-breaker among interactions at the same time.
    pub interaction_id: Uuid,
    /// `InteractionType` value.
    pub kind: i32,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// Currency of `amount` and `margin`.
    pub currency: Option<String>,
    /// Amount in nanos.
    pub amount: Option<i128>,
    /// Margin in nanos.
    pub margin: Option<i128>,
    /// Campaign.
    pub campaign_id: Option<Uuid>,
    /// `ServiceRequestStatus` value.
    pub status: i32,
    /// When last resolved.
    pub resolve_time: Option<DateTime<Utc>>,
    /// CSAT score.
    pub csat: Option<i32>,
    /// NPS score.
    pub nps: Option<i32>,
}

pub use rapport_kit::repeat::days_between;

#[derive(Default)]
struct Money {
    purchases: i64,
    total: i128,
    with_margin: i64,
    margin: i128,
    returns: i64,
    returned: i128,
}

/// The summary of `customer_id` at `as_of`. Rows after `as_of` are ignored.
pub fn customer_summary(
    customer_id: Uuid,
    as_of: DateTime<Utc>,
    rows: &[SummaryRow],
) -> CustomerSummary {
    let mut s = CustomerSummary {
        customer_id: customer_id.to_string(),
        as_of: Some(timestamp(as_of)),
        ..Default::default()
    };
    let key = |r: &SummaryRow| (r.occur_time, r.interaction_id);
    let mut first_purchase: Option<DateTime<Utc>> = None;
    let mut last_purchase: Option<DateTime<Utc>> = None;
    let mut money: BTreeMap<String, Money> = BTreeMap::new();
    let windows = [30, 90, 365].map(|d| as_of - Duration::days(d));
    let mut contacts: Vec<ContactCount> = CONTACT_TYPES
        .iter()
        .map(|t| ContactCount {
            r#type: *t as i32,
            ..Default::default()
        })
        .collect();
    let mut last_contact: Option<&SummaryRow> = None;
    let mut resolution_total: i128 = 0;
    let mut latest_csat: Option<&SummaryRow> = None;
    let mut latest_nps: Option<&SummaryRow> = None;
    let (mut csat_sum, mut nps_sum) = (0i64, 0i64);
    let mut sent = BTreeSet::new();
    let mut responded = BTreeSet::new();

    for r in rows.iter().filter(|r| r.occur_time <= as_of) {
        let Ok(kind) = InteractionType::try_from(r.kind) else {
            continue;
        };
        match kind {
            InteractionType::Purchase => {
                s.purchase_count += 1;
                first_purchase = Some(first_purchase.map_or(r.occur_time, |f| f.min(r.occur_time)));
                last_purchase = Some(last_purchase.map_or(r.occur_time, |l| l.max(r.occur_time)));
                if let (Some(c), Some(a)) = (&r.currency, r.amount) {
                    let m = money.entry(c.clone()).or_default();
                    m.purchases += 1;
                    m.total += a;
                    if let Some(g) = r.margin {
                        m.with_margin += 1;
                        m.margin += g;
                    }
                }
            }
            InteractionType::Return => {
                s.return_count += 1;
                if let (Some(c), Some(a)) = (&r.currency, r.amount) {
                    let m = money.entry(c.clone()).or_default();
                    m.returns += 1;
                    m.returned += a;
                }
            }
            InteractionType::SurveyResponse => {
                if let Some(c) = r.csat {
                    s.csat_count += 1;
                    csat_sum += i64::from(c);
                    if latest_csat.is_none_or(|l| key(r) > key(l)) {
                        latest_csat = Some(r);
                    }
                }
                if let Some(n) = r.nps {
                    s.nps_count += 1;
                    nps_sum += i64::from(n);
                    if latest_nps.is_none_or(|l| key(r) > key(l)) {
                        latest_nps = Some(r);
                    }
                }
            }
            InteractionType::CampaignSent => {
                if let Some(c) = r.campaign_id {
                    sent.insert(c);
                }
            }
            InteractionType::CampaignClicked | InteractionType::CampaignConverted => {
                if let Some(c) = r.campaign_id {
                    responded.insert(c);
                }
            }
            _ => {}
        }
        if is_contact(kind) {
            if let Some(c) = contacts.iter_mut().find(|c| c.r#type == r.kind) {
                c.total += 1;
                if r.occur_time > windows[0] {
                    c.last_30_days += 1;
                }
                if r.occur_time > windows[1] {
                    c.last_90_days += 1;
                }
                if r.occur_time > windows[2] {
                    c.last_365_days += 1;
                }
            }
            if last_contact.is_none_or(|l| key(r) > key(l)) {
                last_contact = Some(r);
            }
        }
        if matches!(
            kind,
            InteractionType::ServiceRequest | InteractionType::Complaint
        ) {
            let open = is_open_status(r.status) || r.resolve_time.is_some_and(|t| t > as_of);
            if kind == InteractionType::ServiceRequest {
                if open {
                    s.open_service_requests += 1;
                }
                if let Some(rt) = r.resolve_time.filter(|t| *t <= as_of) {
                    s.resolved_service_requests += 1;
                    resolution_total += (rt - r.occur_time).num_nanoseconds().map_or(0, i128::from);
                }
            } else {
                s.complaint_count += 1;
                if open {
                    s.open_complaints += 1;
                }
            }
        }
    }

    if let (Some(f), Some(l)) = (first_purchase, last_purchase) {
        s.first_purchase_time = Some(timestamp(f));
        s.last_purchase_time = Some(timestamp(l));
        s.recency_days = Some(days_between(f, l));
        s.days_since_last_purchase = Some(days_between(l, as_of));
        s.age_days = Some(days_between(f, as_of));
    }
    s.repeat_purchase_count = (s.purchase_count - 1).max(0);
    s.currencies = money
        .into_iter()
        .map(|(c, m)| CurrencySummary {
            purchase_count: m.purchases,
            total_value: Some(nanos_to_money(&c, m.total)),
            average_value: (m.purchases > 0)
                .then(|| nanos_to_money(&c, div_half_even(m.total, i128::from(m.purchases)))),
            purchases_with_margin: m.with_margin,
            total_margin: Some(nanos_to_money(&c, m.margin)),
            average_margin: (m.with_margin > 0)
                .then(|| nanos_to_money(&c, div_half_even(m.margin, i128::from(m.with_margin)))),
            return_count: m.returns,
            returned_value: Some(nanos_to_money(&c, m.returned)),
            currency_code: c,
        })
        .collect();
    s.contacts_last_30_days = contacts.iter().map(|c| c.last_30_days).sum();
    s.contacts_last_90_days = contacts.iter().map(|c| c.last_90_days).sum();
    s.contacts_last_365_days = contacts.iter().map(|c| c.last_365_days).sum();
    s.contacts_by_type = contacts;
    if let Some(l) = last_contact {
        s.last_contact_time = Some(timestamp(l.occur_time));
        s.last_contact_type = l.kind;
    }
    if s.resolved_service_requests > 0 {
        let mean = div_half_even(resolution_total, i128::from(s.resolved_service_requests));
        s.mean_resolution_time = Some(prost_types::Duration {
            seconds: (mean / 1_000_000_000) as i64,
            nanos: (mean % 1_000_000_000) as i32,
        });
    }
    s.latest_csat = latest_csat.and_then(|r| r.csat);
    s.latest_nps = latest_nps.and_then(|r| r.nps);
    if s.csat_count > 0 {
        s.mean_csat = Some(csat_sum as f64 / s.csat_count as f64);
    }
    if s.nps_count > 0 {
        s.mean_nps = Some(nps_sum as f64 / s.nps_count as f64);
    }
    s.campaigns_sent = sent.len() as i64;
    s.campaigns_responded = responded.len() as i64;
    if !sent.is_empty() {
        s.campaign_response_rate = Some((responded.len() as f64 / sent.len() as f64).min(1.0));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rapport_proto::rapport::interaction::v1::ServiceRequestStatus;

    fn t(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, d, h, 0, 0).unwrap()
    }

    fn row(n: u128, kind: InteractionType, at: DateTime<Utc>) -> SummaryRow {
        SummaryRow {
            interaction_id: Uuid::from_u128(n),
            kind: kind as i32,
            occur_time: at,
            currency: None,
            amount: None,
            margin: None,
            campaign_id: None,
            status: 0,
            resolve_time: None,
            csat: None,
            nps: None,
        }
    }

    fn buy(n: u128, at: DateTime<Utc>, cur: &str, nanos: i128, margin: Option<i128>) -> SummaryRow {
        SummaryRow {
            currency: Some(cur.into()),
            amount: Some(nanos),
            margin,
            ..row(n, InteractionType::Purchase, at)
        }
    }

    #[test]
    fn a_small_history_by_hand() {
        let as_of = t(31, 0);
        let camp = Uuid::from_u128(99);
        let rows = vec![
            buy(1, t(1, 0), "EUR", 10_000_000_000, Some(4_000_000_000)),
            buy(2, t(11, 12), "EUR", 20_000_000_000, None),
            buy(3, t(21, 0), "USD", 5_000_000_000, None),
            SummaryRow {
                currency: Some("EUR".into()),
                amount: Some(3_000_000_000),
                ..row(4, InteractionType::Return, t(22, 0))
            },
            row(5, InteractionType::Call, t(25, 0)),
            SummaryRow {
                status: ServiceRequestStatus::Resolved as i32,
                resolve_time: Some(t(3, 0)),
                ..row(6, InteractionType::ServiceRequest, t(2, 0))
            },
            SummaryRow {
                status: ServiceRequestStatus::Open as i32,
                ..row(7, InteractionType::Complaint, t(26, 0))
            },
            SummaryRow {
                csat: Some(3),
                nps: Some(9),
                ..row(8, InteractionType::SurveyResponse, t(5, 0))
            },
            SummaryRow {
                csat: Some(5),
                ..row(9, InteractionType::SurveyResponse, t(6, 0))
            },
            SummaryRow {
                campaign_id: Some(camp),
                ..row(10, InteractionType::CampaignSent, t(7, 0))
            },
            SummaryRow {
                campaign_id: Some(camp),
                ..row(11, InteractionType::CampaignClicked, t(8, 0))
            },
            // Exactly 30 days before as_of: outside the 30-day window.
            row(13, InteractionType::Meeting, t(1, 0)),
            // After as_of: ignored.
            buy(12, t(31, 1), "EUR", 1_000_000_000, None),
        ];
        let s = customer_summary(Uuid::nil(), as_of, &rows);
        assert_eq!(s.purchase_count, 3);
        assert_eq!(s.repeat_purchase_count, 2);
        assert_eq!(s.recency_days, Some(20.0));
        assert_eq!(s.days_since_last_purchase, Some(10.0));
        assert_eq!(s.age_days, Some(30.0));
        assert_eq!(s.currencies.len(), 2);
        let eur = &s.currencies[0];
        assert_eq!(eur.currency_code, "EUR");
        assert_eq!(eur.purchase_count, 2);
        assert_eq!(eur.total_value.as_ref().unwrap().units, 30);
        assert_eq!(eur.average_value.as_ref().unwrap().units, 15);
        assert_eq!(eur.purchases_with_margin, 1);
        assert_eq!(eur.average_margin.as_ref().unwrap().units, 4);
        assert_eq!(eur.return_count, 1);
        assert_eq!(eur.returned_value.as_ref().unwrap().units, 3);
        assert_eq!(s.currencies[1].currency_code, "USD");
        assert!(s.currencies[1].average_margin.is_none());
        assert_eq!(s.return_count, 1);
        // Contacts: meeting (1st, on the window's open edge), service
        // request (2nd), call (25th), complaint (26th).
        assert_eq!(s.contacts_last_30_days, 3);
        assert_eq!(s.contacts_last_90_days, 4);
        assert_eq!(s.contacts_by_type[3].total, 1);
        assert_eq!(s.contacts_by_type[3].last_30_days, 0);
        assert_eq!(s.contacts_by_type.len(), 7);
        assert_eq!(s.last_contact_type, InteractionType::Complaint as i32);
        assert_eq!(s.open_service_requests, 0);
        assert_eq!(s.resolved_service_requests, 1);
        assert_eq!(s.mean_resolution_time.unwrap().seconds, 86_400);
        assert_eq!(s.complaint_count, 1);
        assert_eq!(s.open_complaints, 1);
        assert_eq!(s.latest_csat, Some(5));
        assert_eq!(s.mean_csat, Some(4.0));
        assert_eq!(s.latest_nps, Some(9));
        assert_eq!(s.campaigns_sent, 1);
        assert_eq!(s.campaign_response_rate, Some(1.0));
    }

    #[test]
    fn nothing_gives_zeros_and_unset_fields() {
        let s = customer_summary(Uuid::nil(), t(1, 0), &[]);
        assert_eq!(s.purchase_count, 0);
        assert_eq!(s.repeat_purchase_count, 0);
        assert!(s.recency_days.is_none() && s.age_days.is_none());
        assert!(s.mean_csat.is_none() && s.campaign_response_rate.is_none());
        assert_eq!(s.contacts_by_type.len(), 7);
    }

    proptest! {
        #[test]
        fn recency_never_exceeds_age(times in proptest::collection::vec(0i64..10_000_000, 1..20), extra in 0i64..1_000_000) {
            let base = t(1, 0);
            let rows: Vec<SummaryRow> = times.iter().enumerate()
                .map(|(i, s)| buy(i as u128, base + Duration::seconds(*s), "EUR", 1, None))
                .collect();
            let as_of = base + Duration::seconds(times.iter().max().copied().unwrap_or(0) + extra);
            let s = customer_summary(Uuid::nil(), as_of, &rows);
            prop_assert!(s.recency_days.unwrap() <= s.age_days.unwrap() + 1e-9);
            prop_assert_eq!(s.purchase_count as usize, times.len());
            prop_assert_eq!(s.repeat_purchase_count as usize, times.len() - 1);
        }
    }
}
