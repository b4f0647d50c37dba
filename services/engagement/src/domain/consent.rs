//! Consent as the profile service decides it (its CheckConsent): the later of
//! the channel's own record and the ANY record in force decides; with no
//! record, SERVICE messages are allowed and every other purpose needs an
//! opt-in.

use chrono::{DateTime, Utc};
use rapport_proto::rapport::profile::v1::{ConsentPurpose, ConsentStatus};

/// A consent record in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Profile's `ConsentStatus` number.
    pub status: i32,
    /// When it took effect.
    pub effective_time: DateTime<Utc>,
}

/// Whether the purpose may be pursued, and why, in words.
pub fn allows(purpose: i32, own: Option<Record>, any: Option<Record>) -> (bool, String) {
    let deciding = match (own, any) {
        (Some(o), Some(a)) => Some(if a.effective_time > o.effective_time {
            (a, "for any channel")
        } else {
            (o, "for the channel")
        }),
        (Some(o), None) => Some((o, "for the channel")),
        (None, Some(a)) => Some((a, "for any channel")),
        (None, None) => None,
    };
    let name = purpose_name(purpose);
    match deciding {
        None if purpose == ConsentPurpose::Service as i32 => (
            true,
            format!("no consent record: {name} messages are allowed by default"),
        ),
        None => (
            false,
            format!("no consent record: {name} needs the customer's opt-in"),
        ),
        Some((r, scope)) => match ConsentStatus::try_from(r.status) {
            Ok(ConsentStatus::Granted) => (true, format!("{name} consent granted {scope}")),
            Ok(ConsentStatus::Withdrawn) => (false, format!("{name} consent withdrawn {scope}")),
            _ => (false, format!("{name} consent denied {scope}")),
        },
    }
}

/// A purpose's lower-case name.
pub fn purpose_name(purpose: i32) -> &'static str {
    match ConsentPurpose::try_from(purpose) {
        Ok(ConsentPurpose::Marketing) => "marketing",
        Ok(ConsentPurpose::Profiling) => "profiling",
        Ok(ConsentPurpose::Service) => "service",
        Ok(ConsentPurpose::Research) => "research",
        _ => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: ConsentStatus, secs: i64) -> Option<Record> {
        Some(Record {
            status: status as i32,
            effective_time: DateTime::from_timestamp(secs, 0).unwrap(),
        })
    }

    #[test]
    fn the_later_record_decides() {
        let m = ConsentPurpose::Marketing as i32;
        assert!(allows(m, rec(ConsentStatus::Granted, 10), None).0);
        assert!(
            !allows(
                m,
                rec(ConsentStatus::Granted, 10),
                rec(ConsentStatus::Withdrawn, 20)
            )
            .0
        );
        assert!(
            allows(
                m,
                rec(ConsentStatus::Denied, 10),
                rec(ConsentStatus::Granted, 20)
            )
            .0
        );
        assert!(
            !allows(
                m,
                rec(ConsentStatus::Denied, 30),
                rec(ConsentStatus::Granted, 20)
            )
            .0
        );
        let (ok, why) = allows(m, None, rec(ConsentStatus::Withdrawn, 1));
        assert!(!ok);
        assert_eq!(why, "marketing consent withdrawn for any channel");
    }

    #[test]
    fn without_a_record_only_service_is_allowed() {
        assert!(allows(ConsentPurpose::Service as i32, None, None).0);
        assert!(!allows(ConsentPurpose::Marketing as i32, None, None).0);
        assert!(!allows(ConsentPurpose::Research as i32, None, None).0);
        assert!(
            !allows(
                ConsentPurpose::Service as i32,
                rec(ConsentStatus::Denied, 1),
                None
            )
            .0
        );
    }
}
