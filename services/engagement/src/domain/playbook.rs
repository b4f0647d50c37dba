//! Playbooks: for the customer in front of us, which kinds of treatment come
//! first (service recovery after a complaint, win-back in dissolution, the
//! ladder's goal on each rung). The first play that matches decides.

use chrono::{DateTime, Duration, Utc};
use rapport_kit::error::Violations;
use rapport_proto::rapport::common::v1::{LadderRung, RelationshipStage};
use rapport_proto::rapport::engagement::v1::{self as pb, TreatmentKind};
use serde::{Deserialize, Serialize};

use super::decide::Customer;

/// One play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Play {
    pub name: String,
    /// `LadderRung` numbers; empty: any.
    pub ladder_rungs: Vec<i32>,
    /// `RelationshipStage` numbers; empty: any.
    pub stages: Vec<i32>,
    /// Complained within this many days; 0: not a condition.
    pub complaint_within_days: i32,
    /// `TreatmentKind` numbers, first first.
    pub kinds: Vec<i32>,
    /// Only customers with a complaint still open.
    #[serde(default)]
    pub open_complaint: bool,
}

impl Play {
    /// Whether `c` matches every condition given.
    pub fn matches(&self, c: &Customer, now: DateTime<Utc>) -> bool {
        (self.ladder_rungs.is_empty() || self.ladder_rungs.contains(&c.ladder_rung))
            && (self.stages.is_empty() || self.stages.contains(&c.stage))
            && (!self.open_complaint || c.open_complaints > 0)
            && (self.complaint_within_days == 0
                || c.last_complaint.is_some_and(|t| {
                    t > now - Duration::days(i64::from(self.complaint_within_days))
                }))
    }

    /// Where a kind stands in the play: its index, or after every named one.
    pub fn position(&self, kind: i32) -> usize {
        self.kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(self.kinds.len())
    }

    /// As its message.
    pub fn to_proto(&self) -> pb::Play {
        pb::Play {
            name: self.name.clone(),
            ladder_rungs: self.ladder_rungs.clone(),
            stages: self.stages.clone(),
            complaint_within_days: self.complaint_within_days,
            kinds: self.kinds.clone(),
            open_complaint: self.open_complaint,
        }
    }
}

/// The playbook of a tenant that never set one.
pub fn default_playbook() -> Vec<Play> {
    use RelationshipStage as S;
    use TreatmentKind as K;
    let play = |name: &str, rungs: &[LadderRung], stages: &[S], complaint: i32, kinds: &[K]| Play {
        name: name.into(),
        ladder_rungs: rungs.iter().map(|r| *r as i32).collect(),
        stages: stages.iter().map(|s| *s as i32).collect(),
        complaint_within_days: complaint,
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        open_complaint: false,
    };
    vec![
        Play {
            open_complaint: true,
            ..play(
                "recover an open complaint",
                &[],
                &[],
                0,
                &[K::ServiceRecovery, K::CheckInCall],
            )
        },
        play(
            "recover after a complaint",
            &[],
            &[],
            30,
            &[K::ServiceRecovery, K::CheckInCall],
        ),
        play(
            "win back in dissolution",
            &[],
            &[S::Dissolution],
            0,
            &[K::WinBack, K::ServiceRecovery, K::CheckInCall],
        ),
        play(
            "acquire strangers",
            &[LadderRung::Stranger],
            &[],
            0,
            &[K::Welcome, K::Offer],
        ),
        play(
            "satisfy acquaintances",
            &[LadderRung::Acquaintance],
            &[],
            0,
            &[K::CheckInCall, K::Offer, K::CrossSell],
        ),
        play(
            "retain friends",
            &[LadderRung::Friend],
            &[],
            0,
            &[K::LoyaltyReward, K::CrossSell, K::Upsell],
        ),
        play(
            "enhance partners",
            &[LadderRung::Partner],
            &[],
            0,
            &[K::Upsell, K::CrossSell, K::LoyaltyReward],
        ),
    ]
}

/// The first play `c` matches.
pub fn select<'a>(playbook: &'a [Play], c: &Customer, now: DateTime<Utc>) -> Option<&'a Play> {
    playbook.iter().find(|p| p.matches(c, now))
}

/// A playbook from its messages; every problem is added to `v` under
/// `policy.playbook[i]`.
pub fn check(plays: &[pb::Play], v: &mut Violations) -> Vec<Play> {
    if plays.len() > 20 {
        v.add(
            "policy.playbook",
            format!("at most 20 plays, got {}", plays.len()),
        );
        return vec![];
    }
    let mut out: Vec<Play> = Vec::new();
    for (i, p) in plays.iter().enumerate() {
        let f = format!("policy.playbook[{i}]");
        let n = p.name.chars().count();
        if n == 0 || n > 100 {
            v.add(format!("{f}.name"), format!("1 to 100 characters, got {n}"));
        } else if p.name.chars().any(char::is_control) {
            v.add(format!("{f}.name"), "must not contain control characters");
        } else if out.iter().any(|o| o.name == p.name) {
            v.add(format!("{f}.name"), "another play has this name");
        }
        let enums = |field: &str,
                     values: &[i32],
                     max: usize,
                     known: &dyn Fn(i32) -> bool,
                     v: &mut Violations| {
            if values.len() > max {
                v.add(
                    format!("{f}.{field}"),
                    format!("at most {max}, got {}", values.len()),
                );
                return;
            }
            for (k, x) in values.iter().enumerate() {
                if !known(*x) {
                    v.add(
                        format!("{f}.{field}[{k}]"),
                        format!("must be a known value, not {x}"),
                    );
                } else if values[..k].contains(x) {
                    v.add(format!("{f}.{field}[{k}]"), "named twice");
                }
            }
        };
        enums(
            "ladder_rungs",
            &p.ladder_rungs,
            4,
            &|x| x != 0 && LadderRung::try_from(x).is_ok(),
            v,
        );
        enums(
            "stages",
            &p.stages,
            5,
            &|x| x != 0 && RelationshipStage::try_from(x).is_ok(),
            v,
        );
        if p.kinds.is_empty() {
            v.add(
                format!("{f}.kinds"),
                "required: 1 to 8 kinds of treatment, first first",
            );
        }
        enums(
            "kinds",
            &p.kinds,
            8,
            &|x| x != 0 && TreatmentKind::try_from(x).is_ok(),
            v,
        );
        v.check(
            !(0..=365).contains(&p.complaint_within_days),
            format!("{f}.complaint_within_days"),
            format!("must be in 0..=365, got {}", p.complaint_within_days),
        );
        out.push(Play {
            name: p.name.clone(),
            ladder_rungs: p.ladder_rungs.clone(),
            stages: p.stages.clone(),
            complaint_within_days: p.complaint_within_days,
            kinds: p.kinds.clone(),
            open_complaint: p.open_complaint,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap() + Duration::days(days)
    }

    #[test]
    fn the_first_matching_play_decides() {
        let book = default_playbook();
        let mut c = Customer {
            ladder_rung: LadderRung::Friend as i32,
            stage: RelationshipStage::Dissolution as i32,
            ..Default::default()
        };
        assert_eq!(
            select(&book, &c, at(0)).unwrap().name,
            "win back in dissolution"
        );
        c.last_complaint = Some(at(-20));
        assert_eq!(
            select(&book, &c, at(0)).unwrap().name,
            "recover after a complaint"
        );
        c.open_complaints = 1;
        c.last_complaint = Some(at(-90));
        assert_eq!(
            select(&book, &c, at(0)).unwrap().name,
            "recover an open complaint"
        );
        c.open_complaints = 0;
        c.last_complaint = Some(at(-31));
        c.stage = RelationshipStage::Expansion as i32;
        let p = select(&book, &c, at(0)).unwrap();
        assert_eq!(p.name, "retain friends");
        assert_eq!(p.position(TreatmentKind::CrossSell as i32), 1);
        assert_eq!(p.position(TreatmentKind::Offer as i32), 3);
        c.ladder_rung = 0;
        assert!(select(&book, &c, at(0)).is_none());
    }

    #[test]
    fn bad_plays_are_named() {
        let mut v = Violations::new();
        let plays = vec![
            pb::Play {
                name: "a".into(),
                kinds: vec![1, 1, 0],
                ladder_rungs: vec![9],
                complaint_within_days: -1,
                ..Default::default()
            },
            pb::Play {
                name: "a".into(),
                ..Default::default()
            },
        ];
        check(&plays, &mut v);
        let err = format!("{:?}", v.finish().unwrap_err());
        for f in [
            "policy.playbook[0].kinds[1]",
            "policy.playbook[0].kinds[2]",
            "policy.playbook[0].ladder_rungs[0]",
            "policy.playbook[0].complaint_within_days",
            "policy.playbook[1].name",
            "policy.playbook[1].kinds",
        ] {
            assert!(err.contains(f), "{f} in {err}");
        }
    }
}
