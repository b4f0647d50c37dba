//! Campaign input rules, field-mask updates, and the campaign report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::error::{Violation, Violations};
use rapport_proto::rapport::interaction::v1::{Campaign, CampaignReport, Channel};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::StoredCampaign;
use super::money::nanos_to_money;
use super::validate::{check_no_nul, violation_list};

/// The fields `UpdateCampaign` may change.
pub const MASK_PATHS: [&str; 6] = [
    "name",
    "description",
    "channel",
    "target_segment_id",
    "start_time",
    "end_time",
];

/// A campaign's writable fields, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignInput {
    /// 1..=200 characters.
    pub name: String,
    /// At most 2,000 characters.
    pub description: String,
    /// `Channel` value, not UNSPECIFIED.
    pub channel: i32,
    /// Target segment.
    pub target_segment_id: Option<Uuid>,
    /// Start.
    pub start_time: Option<DateTime<Utc>>,
    /// End, after start.
    pub end_time: Option<DateTime<Utc>>,
}

fn check_name(v: &mut Violations, field: &str, name: &str) {
    let n = name.trim().chars().count();
    if n == 0 || name.chars().count() > 200 {
        v.add(field, "required, 1 to 200 characters");
    } else {
        check_no_nul(v, field, name);
    }
}

fn check_description(v: &mut Violations, field: &str, description: &str) {
    if description.chars().count() > 2000 {
        v.add(field, "at most 2000 characters");
    } else {
        check_no_nul(v, field, description);
    }
}

/// The attribution window of a campaign report when none is given: 7 days.
pub const DEFAULT_ATTRIBUTION_WINDOW: prost_types::Duration = prost_types::Duration {
    seconds: 7 * 86_400,
    nanos: 0,
};

/// Checks an attribution window (positive, at most 365 days, a valid
/// Duration: nanos within ±999,999,999 and of the sign of the seconds) and
/// returns it in nanoseconds.
pub fn check_attribution_window(
    v: &mut Violations,
    field: &str,
    window: &prost_types::Duration,
) -> Option<i128> {
    let valid_nanos = (-999_999_999..=999_999_999).contains(&window.nanos)
        && (window.seconds >= 0 && window.nanos >= 0 || window.seconds <= 0 && window.nanos <= 0);
    let nanos = i128::from(window.seconds) * 1_000_000_000 + i128::from(window.nanos);
    if !valid_nanos || nanos <= 0 || nanos > 365 * 86_400 * 1_000_000_000 {
        v.add(field, "must be positive and at most 365 days");
        return None;
    }
    Some(nanos)
}

fn check_channel(v: &mut Violations, field: &str, channel: i32) {
    let ok = matches!(Channel::try_from(channel), Ok(c) if c != Channel::Unspecified);
    v.check(
        !ok,
        field,
        "required: one of the Channel values, not UNSPECIFIED",
    );
}

fn segment(v: &mut Violations, field: &str, s: &str) -> Option<Uuid> {
    if s.is_empty() {
        return None;
    }
    match Uuid::parse_str(s) {
        Ok(u) => Some(u),
        Err(_) => {
            v.add(field, "must be a UUID");
            None
        }
    }
}

fn time(
    v: &mut Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let t = t?;
    match from_timestamp(t) {
        Some(t) => Some(t),
        None => {
            v.add(field, "is not a valid timestamp");
            None
        }
    }
}

/// Validates the campaign of a `CreateCampaign` request.
pub fn validate_new(c: &Campaign, prefix: &str) -> Result<CampaignInput, Vec<Violation>> {
    let mut v = Violations::new();
    let f = |x: &str| format!("{prefix}.{x}");
    check_name(&mut v, &f("name"), &c.name);
    check_description(&mut v, &f("description"), &c.description);
    check_channel(&mut v, &f("channel"), c.channel);
    let target_segment_id = segment(&mut v, &f("target_segment_id"), &c.target_segment_id);
    let start_time = time(&mut v, &f("start_time"), c.start_time.as_ref());
    let end_time = time(&mut v, &f("end_time"), c.end_time.as_ref());
    if let (Some(s), Some(e)) = (start_time, end_time)
        && e <= s
    {
        v.add(f("end_time"), "must be after start_time");
    }
    let list = violation_list(v);
    if !list.is_empty() {
        return Err(list);
    }
    Ok(CampaignInput {
        name: c.name.clone(),
        description: c.description.clone(),
        channel: c.channel,
        target_segment_id,
        start_time,
        end_time,
    })
}

/// Checks an update mask: non-empty, only known writable paths, no repeats.
pub fn check_mask(v: &mut Violations, paths: &[String]) {
    if paths.is_empty() {
        v.add("update_mask", "required: name the fields to change");
    }
    for (i, p) in paths.iter().enumerate() {
        if !MASK_PATHS.contains(&p.as_str()) {
            v.add(
                format!("update_mask.paths[{i}]"),
                format!(
                    "unknown or output-only field {p:?}; allowed: {}",
                    MASK_PATHS.join(", ")
                ),
            );
        } else if paths[..i].contains(p) {
            v.add(format!("update_mask.paths[{i}]"), "named twice");
        }
    }
}

/// The campaign after applying the masked fields of `c` to `current`.
pub fn apply_update(
    current: &StoredCampaign,
    c: &Campaign,
    paths: &[String],
) -> Result<CampaignInput, Vec<Violation>> {
    let mut v = Violations::new();
    let mut out = CampaignInput {
        name: current.name.clone(),
        description: current.description.clone(),
        channel: current.channel,
        target_segment_id: current.target_segment_id,
        start_time: current.start_time,
        end_time: current.end_time,
    };
    for p in paths {
        match p.as_str() {
            "name" => {
                check_name(&mut v, "campaign.name", &c.name);
                out.name = c.name.clone();
            }
            "description" => {
                check_description(&mut v, "campaign.description", &c.description);
                out.description = c.description.clone();
            }
            "channel" => {
                check_channel(&mut v, "campaign.channel", c.channel);
                out.channel = c.channel;
            }
            "target_segment_id" => {
                out.target_segment_id =
                    segment(&mut v, "campaign.target_segment_id", &c.target_segment_id);
            }
            "start_time" => {
                out.start_time = time(&mut v, "campaign.start_time", c.start_time.as_ref());
            }
            "end_time" => {
                out.end_time = time(&mut v, "campaign.end_time", c.end_time.as_ref());
            }
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (out.start_time, out.end_time)
        && e <= s
    {
        v.add(
            "campaign.end_time",
            "the resulting end_time must be after the resulting start_time",
        );
    }
    let list = violation_list(v);
    if list.is_empty() { Ok(out) } else { Err(list) }
}

/// Hash of a create request's campaign, to tell a retry from a reuse of its
/// request id.
pub fn input_hash(c: &CampaignInput) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [
        c.name.as_str(),
        c.description.as_str(),
        &c.channel.to_string(),
        &c.target_segment_id
            .map(|s| s.to_string())
            .unwrap_or_default(),
        &c.start_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
        &c.end_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_vec()
}

/// Distinct customers per response type of one campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseCounts {
    /// CAMPAIGN_SENT.
    pub sent: i64,
    /// CAMPAIGN_OPENED.
    pub opened: i64,
    /// CAMPAIGN_CLICKED.
    pub clicked: i64,
    /// CAMPAIGN_CONVERTED.
    pub converted: i64,
    /// CAMPAIGN_UNSUBSCRIBED.
    pub unsubscribed: i64,
}

/// A purchase credited to the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributedPurchase {
    /// Whose.
    pub customer_id: Uuid,
    /// Currency.
    pub currency: String,
    /// Amount, nanos.
    pub amount: i128,
    /// Margin, nanos.
    pub margin: Option<i128>,
}

fn rate(n: i64, sent: i64) -> Option<f64> {
    (sent > 0).then(|| (n as f64 / sent as f64).min(1.0))
}

/// The report of one campaign.
pub fn report(
    campaign_id: Uuid,
    report_time: DateTime<Utc>,
    window: prost_types::Duration,
    counts: ResponseCounts,
    purchases: &[AttributedPurchase],
) -> CampaignReport {
    let mut revenue: BTreeMap<&str, i128> = BTreeMap::new();
    let mut margin: BTreeMap<&str, i128> = BTreeMap::new();
    let mut customers = BTreeSet::new();
    for p in purchases {
        *revenue.entry(&p.currency).or_default() += p.amount;
        if let Some(m) = p.margin {
            *margin.entry(&p.currency).or_default() += m;
        }
        customers.insert(p.customer_id);
    }
    CampaignReport {
        campaign_id: campaign_id.to_string(),
        report_time: Some(timestamp(report_time)),
        attribution_window: Some(window),
        sent_count: counts.sent,
        opened_count: counts.opened,
        clicked_count: counts.clicked,
        converted_count: counts.converted,
        unsubscribed_count: counts.unsubscribed,
        open_rate: rate(counts.opened, counts.sent),
        click_rate: rate(counts.clicked, counts.sent),
        conversion_rate: rate(counts.converted, counts.sent),
        unsubscribe_rate: rate(counts.unsubscribed, counts.sent),
        attributed_revenue: revenue.iter().map(|(c, n)| nanos_to_money(c, *n)).collect(),
        attributed_margin: margin.iter().map(|(c, n)| nanos_to_money(c, *n)).collect(),
        attributed_purchase_count: purchases.len() as i64,
        attributed_customer_count: customers.len() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rates_are_capped_and_revenue_sorted() {
        let counts = ResponseCounts {
            sent: 4,
            opened: 2,
            clicked: 5,
            converted: 1,
            unsubscribed: 0,
        };
        let a = Uuid::from_u128(1);
        let p = |c: &str, n: i128, m: Option<i128>| AttributedPurchase {
            customer_id: a,
            currency: c.into(),
            amount: n,
            margin: m,
        };
        let r = report(
            Uuid::nil(),
            Utc::now(),
            prost_types::Duration {
                seconds: 604_800,
                nanos: 0,
            },
            counts,
            &[
                p("USD", 1_000_000_000, None),
                p("EUR", 2_500_000_000, Some(500_000_000)),
            ],
        );
        assert_eq!(r.open_rate, Some(0.5));
        assert_eq!(r.click_rate, Some(1.0));
        assert_eq!(r.unsubscribe_rate, Some(0.0));
        assert_eq!(r.attributed_revenue[0].currency_code, "EUR");
        assert_eq!(r.attributed_revenue[1].currency_code, "USD");
        assert_eq!(r.attributed_margin.len(), 1);
        assert_eq!(r.attributed_customer_count, 1);
        assert_eq!(r.attributed_purchase_count, 2);
        let empty = report(
            Uuid::nil(),
            Utc::now(),
            Default::default(),
            Default::default(),
            &[],
        );
        assert!(empty.open_rate.is_none() && empty.attributed_revenue.is_empty());
    }

    #[test]
    fn masks_and_updates() {
        let mut v = Violations::new();
        check_mask(
            &mut v,
            &["name".into(), "create_time".into(), "name".into()],
        );
        let f: Vec<String> = violation_list(v).into_iter().map(|v| v.field).collect();
        assert_eq!(f, ["update_mask.paths[1]", "update_mask.paths[2]"]);

        let now = Utc::now();
        let current = StoredCampaign {
            campaign_id: Uuid::nil(),
            name: "Spring".into(),
            description: String::new(),
            channel: Channel::Email as i32,
            target_segment_id: None,
            start_time: Some(now),
            end_time: None,
            create_time: now,
            update_time: now,
            version: 1,
        };
        let c = Campaign {
            name: String::new(),
            end_time: Some(timestamp(now - chrono::Duration::days(1))),
            ..Default::default()
        };
        let err = apply_update(&current, &c, &["end_time".into(), "name".into()]).unwrap_err();
        let f: Vec<String> = err.into_iter().map(|v| v.field).collect();
        assert_eq!(f, ["campaign.name", "campaign.end_time"]);
        let ok = apply_update(&current, &c, &["start_time".into()]).unwrap();
        assert_eq!(ok.start_time, None);
        assert_eq!(ok.name, "Spring");
    }
}
