//! The tenant's engagement policy: contact caps per channel, quiet periods,
//! the outcome window and exploration, with their defaults and validation.

use chrono::{DateTime, Utc};
use rapport_kit::convert::timestamp;
use rapport_kit::error::Violations;
use rapport_proto::rapport::engagement::v1::{self as pb, ContactChannel};
use serde::{Deserialize, Serialize};

use super::playbook::{self, Play};

/// One channel's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    /// `ContactChannel` number.
    pub channel: i32,
    /// Contacts allowed in the window.
    pub max_contacts: i32,
    /// The window, in days.
    pub window_days: i32,
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// One cap per capped channel.
    pub caps: Vec<Cap>,
    /// Days after a complaint with only service recovery.
    pub complaint_quiet_days: i32,
    /// Days after an unsubscribe with no marketing.
    pub unsubscribe_quiet_days: i32,
    /// Days after which a decision without outcome counts as ignored.
    pub outcome_window_days: i32,
    /// Thompson sampling.
    pub exploration: bool,
    /// Which kinds come first for whom (policies stored before playbooks
    /// read as the default playbook).
    #[serde(default = "super::playbook::default_playbook")]
    pub playbook: Vec<Play>,
}

impl Default for Policy {
    fn default() -> Self {
        let cap = |c: ContactChannel, max_contacts, window_days| Cap {
            channel: c as i32,
            max_contacts,
            window_days,
        };
        Self {
            caps: vec![
                cap(ContactChannel::Email, 3, 7),
                cap(ContactChannel::Sms, 2, 7),
                cap(ContactChannel::Push, 5, 7),
                cap(ContactChannel::Phone, 1, 7),
                cap(ContactChannel::FieldVisit, 1, 30),
            ],
            complaint_quiet_days: 14,
            unsubscribe_quiet_days: 30,
            outcome_window_days: 7,
            exploration: false,
            playbook: super::playbook::default_playbook(),
        }
    }
}

impl Policy {
    /// The cap of a channel, if it has one.
    pub fn cap(&self, channel: i32) -> Option<Cap> {
        self.caps.iter().copied().find(|c| c.channel == channel)
    }

    /// As its message.
    pub fn to_proto(
        &self,
        version: i64,
        update_time: Option<DateTime<Utc>>,
    ) -> pb::EngagementPolicy {
        pb::EngagementPolicy {
            caps: self
                .caps
                .iter()
                .map(|c| pb::ContactCap {
                    channel: c.channel,
                    max_contacts: c.max_contacts,
                    window_days: c.window_days,
                })
                .collect(),
            complaint_quiet_days: self.complaint_quiet_days,
            unsubscribe_quiet_days: self.unsubscribe_quiet_days,
            outcome_window_days: self.outcome_window_days,
            exploration: self.exploration,
            playbook: self.playbook.iter().map(Play::to_proto).collect(),
            etag: etag(version),
            update_time: update_time.map(timestamp),
        }
    }
}

/// The etag of a policy version (0: the defaults).
pub fn etag(version: i64) -> String {
    format!("p{version}")
}

/// The fields UpdatePolicy can change.
const UPDATABLE: [&str; 6] = [
    "caps",
    "complaint_quiet_days",
    "unsubscribe_quiet_days",
    "outcome_window_days",
    "exploration",
    "playbook",
];

/// `base` with the fields of `p` named in `paths`; every problem is added
/// to `v` (field paths under `policy.`, mask paths under `update_mask`).
pub fn apply(
    base: &Policy,
    p: &pb::EngagementPolicy,
    paths: &[String],
    v: &mut Violations,
) -> Policy {
    let mut out = base.clone();
    if paths.is_empty() {
        v.add(
            "update_mask",
            format!(
                "name at least one field to change: {}",
                UPDATABLE.join(", ")
            ),
        );
    }
    // Each field once, however often the mask names it.
    let mut done: Vec<&str> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if UPDATABLE.contains(&path.as_str()) {
            if done.contains(&path.as_str()) {
                continue;
            }
            done.push(path);
        }
        match path.as_str() {
            "caps" => out.caps = check_caps(&p.caps, v),
            "complaint_quiet_days" => {
                range(
                    v,
                    "policy.complaint_quiet_days",
                    p.complaint_quiet_days,
                    0,
                    365,
                );
                out.complaint_quiet_days = p.complaint_quiet_days;
            }
            "unsubscribe_quiet_days" => {
                range(
                    v,
                    "policy.unsubscribe_quiet_days",
                    p.unsubscribe_quiet_days,
                    0,
                    3650,
                );
                out.unsubscribe_quiet_days = p.unsubscribe_quiet_days;
            }
            "outcome_window_days" => {
                range(
                    v,
                    "policy.outcome_window_days",
                    p.outcome_window_days,
                    1,
                    365,
                );
                out.outcome_window_days = p.outcome_window_days;
            }
            "exploration" => out.exploration = p.exploration,
            "playbook" => out.playbook = playbook::check(&p.playbook, v),
            "etag" | "update_time" => v.add(
                format!("update_mask.paths[{i}]"),
                format!("\"{path}\" is output only"),
            ),
            _ => v.add(
                format!("update_mask.paths[{i}]"),
                format!("unknown field \"{path}\"; one of: {}", UPDATABLE.join(", ")),
            ),
        }
    }
    out
}

fn range(v: &mut Violations, field: &str, x: i32, lo: i32, hi: i32) {
    v.check(
        !(lo..=hi).contains(&x),
        field,
        format!("must be in {lo}..={hi}, got {x}"),
    );
}

fn check_caps(caps: &[pb::ContactCap], v: &mut Violations) -> Vec<Cap> {
    let mut out: Vec<Cap> = Vec::new();
    // The known channels capped so far (at most 5, so a long list of caps
    // is checked in linear time).
    let mut capped: Vec<i32> = Vec::new();
    for (i, c) in caps.iter().enumerate() {
        let f = format!("policy.caps[{i}]");
        match ContactChannel::try_from(c.channel) {
            Ok(ContactChannel::Unspecified) | Err(_) => {
                v.add(format!("{f}.channel"), "required: a known channel")
            }
            Ok(_) if capped.contains(&c.channel) => v.add(
                format!("{f}.channel"),
                "one cap per channel: this channel already has one",
            ),
            Ok(_) => capped.push(c.channel),
        }
        range(v, &format!("{f}.max_contacts"), c.max_contacts, 0, 1000);
        range(v, &format!("{f}.window_days"), c.window_days, 1, 365);
        out.push(Cap {
            channel: c.channel,
            max_contacts: c.max_contacts,
            window_days: c.window_days,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cap_every_channel() {
        let p = Policy::default();
        assert_eq!(p.caps.len(), 5);
        assert_eq!(
            p.cap(ContactChannel::Phone as i32).map(|c| c.max_contacts),
            Some(1)
        );
    }

    #[test]
    fn only_masked_fields_change_and_bad_ones_are_named() {
        let base = Policy::default();
        let mut v = Violations::new();
        let p = pb::EngagementPolicy {
            complaint_quiet_days: 3,
            outcome_window_days: 0,
            ..Default::default()
        };
        let out = apply(&base, &p, &["complaint_quiet_days".into()], &mut v);
        assert!(v.is_empty());
        assert_eq!(out.complaint_quiet_days, 3);
        assert_eq!(out.outcome_window_days, 7);
        let mut v = Violations::new();
        apply(
            &base,
            &pb::EngagementPolicy {
                caps: vec![
                    pb::ContactCap {
                        channel: 1,
                        max_contacts: 2,
                        window_days: 7,
                    },
                    pb::ContactCap {
                        channel: 1,
                        max_contacts: -1,
                        window_days: 0,
                    },
                ],
                ..Default::default()
            },
            &[
                "caps".into(),
                "outcome_window_days".into(),
                "etag".into(),
                "x".into(),
            ],
            &mut v,
        );
        let err = format!("{:?}", v.finish().unwrap_err());
        for f in [
            "policy.caps[1].channel",
            "policy.caps[1].max_contacts",
            "policy.caps[1].window_days",
            "policy.outcome_window_days",
            "update_mask.paths[2]",
            "update_mask.paths[3]",
        ] {
            assert!(err.contains(f), "{f} in {err}");
        }
    }
}
