//! Consent decisions: which record is in force, whether a contact is allowed
//! and why, and which record wins when two customers merge.

use chrono::{DateTime, Duration, Utc};
use rapport_proto::rapport::profile::v1::{
    ConsentChannel, ConsentCheckReason, ConsentPurpose, ConsentStatus,
};

/// What the decisions need of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// ConsentStatus number.
    pub status: i32,
    /// When the customer expressed it.
    pub effective_time: DateTime<Utc>,
    /// When it was recorded.
    pub record_time: DateTime<Utc>,
    /// Its id (last tie-breaker).
    pub id: uuid::Uuid,
}

impl Rec {
    fn order_key(&self) -> (DateTime<Utc>, DateTime<Utc>, uuid::Uuid) {
        (self.effective_time, self.record_time, self.id)
    }
}

/// The later of two records (the one in force between them).
pub fn later<'a>(a: Option<&'a Rec>, b: Option<&'a Rec>) -> Option<&'a Rec> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.order_key() > a.order_key() { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

fn restrictive(status: i32) -> bool {
    status == ConsentStatus::Denied as i32 || status == ConsentStatus::Withdrawn as i32
}

/// What a merge does for one (channel, purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeConsent {
    /// The survivor's record stays in force: nothing to write.
    Keep,
    /// Append a "rapport:merge" record with this status and effective time,
    /// so that it is in force on the survivor (before and after an unmerge).
    Append {
        /// The winning status.
        status: i32,
        /// Later than every record of both customers.
        effective_time: DateTime<Utc>,
    },
}

/// The most restrictive of the two records in force wins (DENIED or WITHDRAWN
/// over GRANTED; between equally restrictive ones, the later). A new record is
/// written unless the survivor's own record already wins and stays the latest.
pub fn merge_decision(
    survivor: Option<&Rec>,
    merged: Option<&Rec>,
    now: DateTime<Utc>,
) -> MergeConsent {
    let winner = match (survivor, merged) {
        (Some(s), Some(m)) => {
            if restrictive(s.status) != restrictive(m.status) {
                if restrictive(s.status) { s } else { m }
            } else if m.order_key() > s.order_key() {
                m
            } else {
                s
            }
        }
        (Some(s), None) => s,
        (None, Some(m)) => m,
        (None, None) => return MergeConsent::Keep,
    };
    let latest = later(survivor, merged);
    if survivor.is_some_and(|s| s == winner) && latest.is_some_and(|l| l == winner) {
        return MergeConsent::Keep;
    }
    let after_latest = latest
        .map(|l| l.effective_time + Duration::microseconds(1))
        .unwrap_or(now);
    MergeConsent::Append {
        status: winner.status,
        effective_time: now.max(after_latest),
    }
}

/// The answer of CheckConsent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// May the tenant contact the customer.
    pub allowed: bool,
    /// Why.
    pub reason: ConsentCheckReason,
    /// Which of the two candidates decided: `Some(true)` the channel's own
    /// record, `Some(false)` the ANY record, `None` no record.
    pub deciding_own: Option<bool>,
}

/// Decides from the channel's own record in force and the ANY record in force
/// for the same purpose (for a check of channel ANY, pass `own` = None).
pub fn check(deleted: bool, purpose: i32, own: Option<&Rec>, any: Option<&Rec>) -> Decision {
    if deleted {
        return Decision {
            allowed: false,
            reason: ConsentCheckReason::CustomerDeleted,
            deciding_own: None,
        };
    }
    let deciding = later(own, any);
    match deciding {
        None => {
            if purpose == ConsentPurpose::Service as i32 {
                Decision {
                    allowed: true,
                    reason: ConsentCheckReason::NoRecordAllowedByDefault,
                    deciding_own: None,
                }
            } else {
                Decision {
                    allowed: false,
                    reason: ConsentCheckReason::NoRecordOptInRequired,
                    deciding_own: None,
                }
            }
        }
        Some(r) => {
            let own_decides = own.is_some_and(|o| o == r);
            let (allowed, reason) = match ConsentStatus::try_from(r.status) {
                Ok(ConsentStatus::Granted) => (true, ConsentCheckReason::Granted),
                Ok(ConsentStatus::Withdrawn) => (false, ConsentCheckReason::Withdrawn),
                _ => (false, ConsentCheckReason::Denied),
            };
            Decision {
                allowed,
                reason,
                deciding_own: Some(own_decides),
            }
        }
    }
}

fn words(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix)
        .to_lowercase()
        .replace('_', " ")
}

/// The decision in one English sentence.
pub fn explain(
    d: &Decision,
    channel: i32,
    purpose: i32,
    source: &str,
    effective_time: Option<DateTime<Utc>>,
) -> String {
    let channel = ConsentChannel::try_from(channel)
        .map(|c| words(c.as_str_name(), "CONSENT_CHANNEL_"))
        .unwrap_or_default();
    let purpose = ConsentPurpose::try_from(purpose)
        .map(|p| words(p.as_str_name(), "CONSENT_PURPOSE_"))
        .unwrap_or_default();
    let when = effective_time
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    match d.reason {
        ConsentCheckReason::Granted => format!("Granted via {source} on {when}."),
        ConsentCheckReason::Denied => format!("Denied via {source} on {when}."),
        ConsentCheckReason::Withdrawn => format!("Withdrawn via {source} on {when}."),
        ConsentCheckReason::NoRecordOptInRequired => format!(
            "No consent is recorded for {purpose} through {channel}, and {purpose} needs an opt-in."
        ),
        ConsentCheckReason::NoRecordAllowedByDefault => format!(
            "No consent is recorded for {purpose} through {channel}; service messages are allowed until the customer denies or withdraws them."
        ),
        ConsentCheckReason::CustomerDeleted => {
            "The customer is deleted; nobody may be contacted through a deleted profile.".into()
        }
        ConsentCheckReason::Unspecified => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(status: ConsentStatus, secs: i64) -> Rec {
        let t = Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap();
        Rec {
            status: status as i32,
            effective_time: t,
            record_time: t,
            id: uuid::Uuid::from_u128(secs as u128),
        }
    }

    #[test]
    fn the_later_record_decides_between_channel_and_any() {
        let own = rec(ConsentStatus::Granted, 10);
        let any = rec(ConsentStatus::Withdrawn, 20);
        let d = check(
            false,
            ConsentPurpose::Marketing as i32,
            Some(&own),
            Some(&any),
        );
        assert!(!d.allowed);
        assert_eq!(d.reason, ConsentCheckReason::Withdrawn);
        assert_eq!(d.deciding_own, Some(false));
        let d = check(false, ConsentPurpose::Marketing as i32, Some(&own), None);
        assert!(d.allowed);
    }

    #[test]
    fn defaults_and_deleted() {
        assert!(check(false, ConsentPurpose::Service as i32, None, None).allowed);
        assert!(!check(false, ConsentPurpose::Marketing as i32, None, None).allowed);
        let own = rec(ConsentStatus::Granted, 1);
        let d = check(true, ConsentPurpose::Service as i32, Some(&own), None);
        assert_eq!(d.reason, ConsentCheckReason::CustomerDeleted);
        assert!(explain(&d, 1, 3, "", None).contains("deleted"));
    }

    #[test]
    fn merge_keeps_the_most_restrictive() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let granted_late = rec(ConsentStatus::Granted, 50);
        let denied_early = rec(ConsentStatus::Denied, 10);
        // The survivor denied earlier, the merged customer granted later: the
        // denial wins and is re-recorded so that it stays in force.
        match merge_decision(Some(&denied_early), Some(&granted_late), now) {
            MergeConsent::Append { status, .. } => {
                assert_eq!(status, ConsentStatus::Denied as i32)
            }
            MergeConsent::Keep => panic!("must append"),
        }
        // The survivor's later denial already wins.
        let denied_late = rec(ConsentStatus::Denied, 60);
        assert_eq!(
            merge_decision(Some(&denied_late), Some(&granted_late), now),
            MergeConsent::Keep
        );
        // Only the merged customer has a record: it is adopted.
        assert!(matches!(
            merge_decision(None, Some(&granted_late), now),
            MergeConsent::Append { .. }
        ));
        assert_eq!(merge_decision(None, None, now), MergeConsent::Keep);
    }
}
