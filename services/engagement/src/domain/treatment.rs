//! Treatments: what one is (the fields decisions read), how a request's
//! fields become one (creation and masked updates share one path), and its
//! message.

use chrono::{DateTime, Utc};
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::error::Violations;
use rapport_proto::rapport::common::v1::{Money, RelationshipStage};
use rapport_proto::rapport::engagement::v1::{
    self as pb, ContactChannel, LadderGoal, TreatmentKind, TreatmentState,
};
use rapport_proto::rapport::profile::v1::ConsentPurpose;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Amount, NANOS};

/// What an accepted treatment is worth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A fixed amount (in the treatment's currency).
    Fixed(Amount),
    /// A share of the customer's CLV, in basis points.
    ClvShare(i32),
    /// A share of the customer's margin over the last year, in basis points.
    MarginShare(i32),
    /// A share of the customer's CLV net of its cost to serve, in basis
    /// points.
    NetClvShare(i32),
}

/// A treatment's fields other than its name and bookkeeping: what decisions
/// read. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub description: String,
    /// `TreatmentKind` number.
    pub kind: i32,
    /// `ContactChannel` number.
    pub channel: i32,
    /// `LadderGoal` number.
    pub ladder_goal: i32,
    /// `RelationshipStage` numbers.
    pub stages: Vec<i32>,
    pub target_segments: Vec<Uuid>,
    pub exclude_segments: Vec<Uuid>,
    /// Profile's `ConsentPurpose` number.
    pub consent_purpose: i32,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Cost per contact; its currency is the treatment's.
    pub cost: Amount,
    pub value: Value,
    pub priority_percent: i32,
    pub control_share_bps: i32,
    pub prior_alpha: f64,
    pub prior_beta: f64,
}

/// A treatment being created or changed: its name and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub name: String,
    pub spec: Spec,
}

impl Draft {
    /// What a creation starts from: every field empty, the defaults set.
    pub fn empty() -> Self {
        Self {
            name: String::new(),
            spec: Spec {
                description: String::new(),
                kind: 0,
                channel: 0,
                ladder_goal: 0,
                stages: vec![],
                target_segments: vec![],
                exclude_segments: vec![],
                consent_purpose: 0,
                start_time: None,
                end_time: None,
                cost: Amount {
                    currency: String::new(),
                    nanos: 0,
                },
                value: Value::ClvShare(0),
                priority_percent: 100,
                control_share_bps: 0,
                prior_alpha: 1.0,
                prior_beta: 9.0,
            },
        }
    }
}

/// Every field a request may set, in the order of the message.
pub const FIELDS: [&str; 17] = [
    "name",
    "description",
    "kind",
    "channel",
    "ladder_goal",
    "stages",
    "target_segment_ids",
    "exclude_segment_ids",
    "consent_purpose",
    "start_time",
    "end_time",
    "cost_per_contact",
    "value",
    "priority_percent",
    "control_share_bps",
    "prior_alpha",
    "prior_beta",
];

const OUTPUT_ONLY: [&str; 7] = [
    "treatment_id",
    "state",
    "etag",
    "version",
    "create_time",
    "update_time",
    "archive_time",
];

/// Checks an update mask: at least one path, each a field that can change.
pub fn check_mask(paths: &[String], v: &mut Violations) {
    if paths.is_empty() {
        v.add(
            "update_mask",
            format!("name at least one field to change: {}", FIELDS.join(", ")),
        );
    }
    for (i, p) in paths.iter().enumerate() {
        if FIELDS.contains(&p.as_str()) {
            continue;
        }
        let why = if OUTPUT_ONLY.contains(&p.as_str()) {
            format!("\"{p}\" is output only")
        } else if p == "fixed_value"
            || p == "clv_share_bps"
            || p == "margin_share_bps"
            || p == "net_clv_share_bps"
        {
            "name \"value\" to change the value, whichever form it takes".into()
        } else {
            format!("unknown field \"{p}\"")
        };
        v.add(format!("update_mask.paths[{i}]"), why);
    }
}

fn text(v: &mut Violations, field: &str, s: &str, min: usize, max: usize, control_ok: bool) {
    let n = s.chars().count();
    if n < min || n > max {
        v.add(field, format!("{min} to {max} characters, got {n}"));
    } else if s.contains('\0') || (!control_ok && s.chars().any(char::is_control)) {
        v.add(field, "must not contain control characters");
    } else if min > 0 && s.trim() != s {
        v.add(field, "must not start or end with white space");
    }
}

fn is_currency(code: &str) -> bool {
    code.len() == 3
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && iso_currency::Currency::from_code(code).is_some()
}

/// A Money as an amount, or its problems added under `field`.
pub fn amount(v: &mut Violations, field: &str, m: &Money) -> Option<Amount> {
    let mut ok = true;
    if !is_currency(&m.currency_code) {
        v.add(
            format!("{field}.currency_code"),
            "must be an ISO 4217 currency code in upper case, e.g. \"EUR\"",
        );
        ok = false;
    }
    if !(-999_999_999..=999_999_999).contains(&m.nanos) {
        v.add(
            format!("{field}.nanos"),
            "must be in -999999999..=999999999",
        );
        return None;
    }
    if (m.units > 0 && m.nanos < 0) || (m.units < 0 && m.nanos > 0) {
        v.add(
            format!("{field}.nanos"),
            "units and nanos must have the same sign",
        );
        return None;
    }
    let nanos = i128::from(m.units) * NANOS + i128::from(m.nanos);
    // Amounts are kept to ±9.2 billion units, far beyond any offer.
    let Ok(nanos) = i64::try_from(nanos) else {
        v.add(format!("{field}.units"), "at most 9,000,000,000 units");
        return None;
    };
    ok.then(|| Amount {
        currency: m.currency_code.clone(),
        nanos,
    })
}

fn uuids(v: &mut Violations, field: &str, ids: &[String]) -> Vec<Uuid> {
    if ids.len() > 20 {
        v.add(field, format!("at most 20 segments, got {}", ids.len()));
        // Refused as a whole: reading each of a list this long (and matching
        // it against the other list) takes quadratic time.
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if let Some(u) = v.uuid(format!("{field}[{i}]"), id)
            && !out.contains(&u)
        {
            out.push(u);
        }
    }
    out
}

/// A time given in a request, or (for an invalid one) `None` with its
/// problem added to `v` under `field`.
pub fn time(
    v: &mut Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let t = t?;
    let parsed = from_timestamp(t);
    if parsed.is_none() {
        v.add(
            field,
            "not a valid time (0001-01-01 to 9999-12-31, nanos 0..=999999999)",
        );
    }
    parsed
}

/// `base` with the fields of `t` named in `paths` (every field for a
/// creation), then the whole checked; every problem is added to `v` under
/// `treatment.<field>`.
pub fn apply(base: &Draft, t: &pb::Treatment, paths: &[&str], v: &mut Violations) -> Draft {
    let mut d = base.clone();
    let s = &mut d.spec;
    // Each field once, however often the mask names it.
    let mut done: Vec<&str> = Vec::new();
    for p in paths {
        if done.contains(p) {
            continue;
        }
        if FIELDS.contains(p) {
            done.push(p);
        }
        match *p {
            "name" => {
                text(v, "treatment.name", &t.name, 1, 200, false);
                d.name = t.name.clone();
            }
            "description" => {
                text(v, "treatment.description", &t.description, 0, 2000, true);
                s.description = t.description.clone();
            }
            "kind" => {
                if TreatmentKind::try_from(t.kind).is_err() {
                    v.add("treatment.kind", format!("unknown kind {}", t.kind));
                }
                s.kind = t.kind;
            }
            "channel" => {
                if ContactChannel::try_from(t.channel).is_err() {
                    v.add(
                        "treatment.channel",
                        format!("unknown channel {}", t.channel),
                    );
                }
                s.channel = t.channel;
            }
            "ladder_goal" => {
                if LadderGoal::try_from(t.ladder_goal).is_err() {
                    v.add(
                        "treatment.ladder_goal",
                        format!("unknown ladder goal {}", t.ladder_goal),
                    );
                }
                s.ladder_goal = t.ladder_goal;
            }
            "stages" => {
                if t.stages.len() > 5 {
                    v.add(
                        "treatment.stages",
                        format!("at most 5 stages, got {}", t.stages.len()),
                    );
                }
                let mut stages = Vec::new();
                for (i, st) in t.stages.iter().enumerate() {
                    match RelationshipStage::try_from(*st) {
                        Ok(RelationshipStage::Unspecified) | Err(_) => v.add(
                            format!("treatment.stages[{i}]"),
                            format!("must be a known stage, not {st}"),
                        ),
                        Ok(_) if !stages.contains(st) => stages.push(*st),
                        Ok(_) => {}
                    }
                }
                s.stages = stages;
            }
            "target_segment_ids" => {
                s.target_segments = uuids(v, "treatment.target_segment_ids", &t.target_segment_ids)
            }
            "exclude_segment_ids" => {
                s.exclude_segments =
                    uuids(v, "treatment.exclude_segment_ids", &t.exclude_segment_ids)
            }
            "consent_purpose" => {
                if ConsentPurpose::try_from(t.consent_purpose).is_err() {
                    v.add(
                        "treatment.consent_purpose",
                        format!("unknown purpose {}", t.consent_purpose),
                    );
                }
                s.consent_purpose = t.consent_purpose;
            }
            "start_time" => s.start_time = time(v, "treatment.start_time", t.start_time.as_ref()),
            "end_time" => s.end_time = time(v, "treatment.end_time", t.end_time.as_ref()),
            "cost_per_contact" => match &t.cost_per_contact {
                None => v.add(
                    "treatment.cost_per_contact",
                    "required: a Money, zero or more",
                ),
                Some(m) => {
                    if let Some(a) = amount(v, "treatment.cost_per_contact", m) {
                        if a.nanos < 0 {
                            v.add("treatment.cost_per_contact", "must not be negative");
                        }
                        s.cost = a;
                    }
                }
            },
            "value" => match &t.value {
                None => v.add(
                    "treatment.value",
                    "required: fixed_value (a Money), clv_share_bps, margin_share_bps or net_clv_share_bps (1..=10000)",
                ),
                Some(pb::treatment::Value::FixedValue(m)) => {
                    if let Some(a) = amount(v, "treatment.fixed_value", m) {
                        if a.nanos <= 0 {
                            v.add("treatment.fixed_value", "must be more than zero");
                        }
                        s.value = Value::Fixed(a);
                    }
                }
                Some(pb::treatment::Value::MarginShareBps(b)) => {
                    if !(1..=10_000).contains(b) {
                        v.add(
                            "treatment.margin_share_bps",
                            format!("must be in 1..=10000, got {b}"),
                        );
                    }
                    s.value = Value::MarginShare(*b);
                }
                Some(pb::treatment::Value::ClvShareBps(b)) => {
                    if !(1..=10_000).contains(b) {
                        v.add(
                            "treatment.clv_share_bps",
                            format!("must be in 1..=10000, got {b}"),
                        );
                    }
                    s.value = Value::ClvShare(*b);
                }
                Some(pb::treatment::Value::NetClvShareBps(b)) => {
                    if !(1..=10_000).contains(b) {
                        v.add(
                            "treatment.net_clv_share_bps",
                            format!("must be in 1..=10000, got {b}"),
                        );
                    }
                    s.value = Value::NetClvShare(*b);
                }
            },
            "priority_percent" => {
                let p = if t.priority_percent == 0 {
                    100
                } else {
                    t.priority_percent
                };
                if !(1..=1000).contains(&p) {
                    v.add(
                        "treatment.priority_percent",
                        format!("must be in 1..=1000 (0 means 100), got {p}"),
                    );
                }
                s.priority_percent = p;
            }
            "control_share_bps" => {
                if !(0..=5000).contains(&t.control_share_bps) {
                    v.add(
                        "treatment.control_share_bps",
                        format!("must be in 0..=5000, got {}", t.control_share_bps),
                    );
                }
                s.control_share_bps = t.control_share_bps;
            }
            "prior_alpha" => s.prior_alpha = prior(v, "treatment.prior_alpha", t.prior_alpha, 1.0),
            "prior_beta" => s.prior_beta = prior(v, "treatment.prior_beta", t.prior_beta, 9.0),
            _ => {}
        }
    }
    // What must hold of the whole, whatever changed.
    let s = &d.spec;
    if s.kind == 0 && paths.contains(&"kind") {
        v.add("treatment.kind", "required: what kind of action it is");
    }
    if s.channel == 0 && paths.contains(&"channel") {
        v.add(
            "treatment.channel",
            "required: the channel it is delivered through",
        );
    }
    if s.consent_purpose == 0 && paths.contains(&"consent_purpose") {
        v.add(
            "treatment.consent_purpose",
            "required: the consent purpose the contact needs (e.g. MARKETING or SERVICE)",
        );
    }
    if let (Some(a), Some(b)) = (s.start_time, s.end_time)
        && b <= a
    {
        v.add("treatment.end_time", "must be after start_time");
    }
    if let Value::Fixed(f) = &s.value
        && !s.cost.currency.is_empty()
        && f.currency != s.cost.currency
    {
        v.add(
            "treatment.fixed_value.currency_code",
            format!(
                "must be the currency of cost_per_contact ({})",
                s.cost.currency
            ),
        );
    }
    if let Some(same) = s
        .target_segments
        .iter()
        .find(|t| s.exclude_segments.contains(t))
    {
        v.add(
            "treatment.exclude_segment_ids",
            format!("segment {same} is both targeted and excluded"),
        );
    }
    d
}

fn prior(v: &mut Violations, field: &str, x: f64, default: f64) -> f64 {
    let x = if x == 0.0 { default } else { x };
    if !(x.is_finite() && x > 0.0 && x <= 10_000.0) {
        v.add(
            field,
            "must be more than 0 and at most 10000 (0 means the default)",
        );
    }
    x
}

/// A stored treatment.
#[derive(Debug, Clone)]
pub struct Stored {
    pub treatment_id: Uuid,
    pub name: String,
    pub archived: bool,
    pub version: i64,
    pub spec: Spec,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub archive_time: Option<DateTime<Utc>>,
}

/// The etag of a treatment version.
pub fn etag(version: i64) -> String {
    format!("t{version}")
}

impl Stored {
    /// As its message.
    pub fn to_proto(&self) -> pb::Treatment {
        let s = &self.spec;
        pb::Treatment {
            treatment_id: self.treatment_id.to_string(),
            name: self.name.clone(),
            description: s.description.clone(),
            kind: s.kind,
            channel: s.channel,
            ladder_goal: s.ladder_goal,
            stages: s.stages.clone(),
            target_segment_ids: s.target_segments.iter().map(Uuid::to_string).collect(),
            exclude_segment_ids: s.exclude_segments.iter().map(Uuid::to_string).collect(),
            consent_purpose: s.consent_purpose,
            start_time: s.start_time.map(timestamp),
            end_time: s.end_time.map(timestamp),
            cost_per_contact: Some(s.cost.to_money()),
            value: Some(match &s.value {
                Value::Fixed(a) => pb::treatment::Value::FixedValue(a.to_money()),
                Value::ClvShare(b) => pb::treatment::Value::ClvShareBps(*b),
                Value::MarginShare(b) => pb::treatment::Value::MarginShareBps(*b),
                Value::NetClvShare(b) => pb::treatment::Value::NetClvShareBps(*b),
            }),
            priority_percent: s.priority_percent,
            control_share_bps: s.control_share_bps,
            prior_alpha: s.prior_alpha,
            prior_beta: s.prior_beta,
            state: if self.archived {
                TreatmentState::Archived
            } else {
                TreatmentState::Active
            } as i32,
            etag: etag(self.version),
            version: self.version,
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            archive_time: self.archive_time.map(timestamp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(units: i64, nanos: i32) -> Money {
        Money {
            currency_code: "EUR".into(),
            units,
            nanos,
        }
    }

    fn valid() -> pb::Treatment {
        pb::Treatment {
            name: "Spring offer".into(),
            kind: TreatmentKind::Offer as i32,
            channel: ContactChannel::Email as i32,
            consent_purpose: ConsentPurpose::Marketing as i32,
            cost_per_contact: Some(eur(0, 250_000_000)),
            value: Some(pb::treatment::Value::FixedValue(eur(20, 0))),
            ..Default::default()
        }
    }

    #[test]
    fn a_creation_takes_every_field_and_the_defaults() {
        let mut v = Violations::new();
        let d = apply(&Draft::empty(), &valid(), &FIELDS, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(d.name, "Spring offer");
        assert_eq!(d.spec.cost.nanos, 250_000_000);
        assert_eq!(d.spec.priority_percent, 100);
        assert_eq!((d.spec.prior_alpha, d.spec.prior_beta), (1.0, 9.0));
    }

    #[test]
    fn every_bad_field_is_named() {
        let t = pb::Treatment {
            name: " x".into(),
            kind: 99,
            channel: 0,
            stages: vec![0],
            target_segment_ids: vec!["nope".into()],
            consent_purpose: 0,
            start_time: Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 50,
                nanos: 0,
            }),
            cost_per_contact: Some(Money {
                currency_code: "eur".into(),
                units: -1,
                nanos: 5,
            }),
            value: Some(pb::treatment::Value::ClvShareBps(0)),
            priority_percent: 2000,
            control_share_bps: 6000,
            prior_alpha: -1.0,
            prior_beta: f64::NAN,
            ..Default::default()
        };
        let mut v = Violations::new();
        apply(&Draft::empty(), &t, &FIELDS, &mut v);
        let err = format!("{:?}", v.finish().unwrap_err());
        for f in [
            "treatment.name",
            "treatment.kind",
            "treatment.channel",
            "treatment.stages[0]",
            "treatment.target_segment_ids[0]",
            "treatment.consent_purpose",
            "treatment.end_time",
            "treatment.cost_per_contact.currency_code",
            "treatment.cost_per_contact.nanos",
            "treatment.clv_share_bps",
            "treatment.priority_percent",
            "treatment.control_share_bps",
            "treatment.prior_alpha",
            "treatment.prior_beta",
        ] {
            assert!(err.contains(f), "{f} missing from {err}");
        }
    }

    #[test]
    fn an_update_changes_only_the_masked_fields() {
        let mut v = Violations::new();
        let base = apply(&Draft::empty(), &valid(), &FIELDS, &mut v);
        let t = pb::Treatment {
            priority_percent: 150,
            name: String::new(),
            ..Default::default()
        };
        let d = apply(&base, &t, &["priority_percent"], &mut v);
        assert!(v.is_empty());
        assert_eq!(d.name, "Spring offer");
        assert_eq!(d.spec.priority_percent, 150);
        let mut v = Violations::new();
        check_mask(
            &["etag".into(), "clv_share_bps".into(), "zzz".into()],
            &mut v,
        );
        let err = format!("{:?}", v.finish().unwrap_err());
        assert!(
            err.contains("output only")
                && err.contains("to change the value")
                && err.contains("unknown")
        );
    }

    #[test]
    fn a_fixed_value_is_in_the_cost_currency() {
        let mut t = valid();
        t.value = Some(pb::treatment::Value::FixedValue(Money {
            currency_code: "USD".into(),
            units: 5,
            nanos: 0,
        }));
        let mut v = Violations::new();
        apply(&Draft::empty(), &t, &FIELDS, &mut v);
        let err = format!("{:?}", v.finish().unwrap_err());
        assert!(err.contains("treatment.fixed_value.currency_code"), "{err}");
    }
}
