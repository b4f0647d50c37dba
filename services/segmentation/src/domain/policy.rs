//! The classification policy (classification.proto, ClassificationPolicy):
//! defaults, ranges, tenant overrides and update masks.

use rapport_proto::rapport::segmentation::v1::ClassificationPolicy;
use serde_json::{Map, Value, json};

/// The thresholds in effect for a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub friend_min_purchases: i32,
    pub friend_min_tenure_days: i32,
    pub friend_min_csat: i32,
    pub friend_min_nps: i32,
    pub friend_max_open_complaints: i32,
    pub partner_min_tenure_days: i32,
    pub partner_min_frequency_score: i32,
    pub partner_clv_top_percent: f64,
    pub partner_min_csat: i32,
    pub partner_min_nps: i32,
    pub partner_contract_tag: String,
    pub dissolution_max_p_alive: f64,
    pub dissolution_silence_factor: f64,
    pub dissolution_min_silence_days: i32,
    pub exploration_window_days: i32,
    pub expansion_period_days: i32,
    pub expansion_min_growth_percent: f64,
    pub commitment_min_tenure_days: i32,
    pub commitment_min_active_periods: i32,
    pub commitment_min_p_alive: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            friend_min_purchases: 2,
            friend_min_tenure_days: 90,
            friend_min_csat: 4,
            friend_min_nps: 7,
            friend_max_open_complaints: 0,
            partner_min_tenure_days: 365,
            partner_min_frequency_score: 4,
            partner_clv_top_percent: 20.0,
            partner_min_csat: 5,
            partner_min_nps: 9,
            partner_contract_tag: "contract".into(),
            dissolution_max_p_alive: 0.2,
            dissolution_silence_factor: 3.0,
            dissolution_min_silence_days: 90,
            exploration_window_days: 90,
            expansion_period_days: 90,
            expansion_min_growth_percent: 20.0,
            commitment_min_tenure_days: 365,
            commitment_min_active_periods: 3,
            commitment_min_p_alive: 0.7,
        }
    }
}

/// The kind and range of one policy field.
#[derive(Debug, Clone, Copy)]
enum Range {
    Int(i32, i32),
    /// Inclusive bounds, the lower one exclusive when the flag is set.
    Float(f64, f64, bool),
    Tag,
}

/// Every policy field with its range, in proto order.
const FIELDS: [(&str, Range); 20] = [
    ("friend_min_purchases", Range::Int(2, 1000)),
    ("friend_min_tenure_days", Range::Int(0, 3650)),
    ("friend_min_csat", Range::Int(1, 5)),
    ("friend_min_nps", Range::Int(0, 10)),
    ("friend_max_open_complaints", Range::Int(0, 1000)),
    ("partner_min_tenure_days", Range::Int(0, 3650)),
    ("partner_min_frequency_score", Range::Int(1, 5)),
    ("partner_clv_top_percent", Range::Float(0.0, 100.0, true)),
    ("partner_min_csat", Range::Int(1, 5)),
    ("partner_min_nps", Range::Int(0, 10)),
    ("partner_contract_tag", Range::Tag),
    ("dissolution_max_p_alive", Range::Float(0.0, 1.0, false)),
    (
        "dissolution_silence_factor",
        Range::Float(1.0, 100.0, false),
    ),
    ("dissolution_min_silence_days", Range::Int(1, 3650)),
    ("exploration_window_days", Range::Int(1, 3650)),
    ("expansion_period_days", Range::Int(7, 1825)),
    (
        "expansion_min_growth_percent",
        Range::Float(0.0, 10000.0, false),
    ),
    ("commitment_min_tenure_days", Range::Int(0, 3650)),
    ("commitment_min_active_periods", Range::Int(1, 4)),
    ("commitment_min_p_alive", Range::Float(0.0, 1.0, false)),
];

/// Whether `tag` has the syntax of a profile tag (already lower case).
fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    (1..=64).contains(&tag.chars().count())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | ':' | '.' | '/')
        })
}

/// The value of policy field `name` in `p` as JSON, None when unset.
fn proto_field(p: &ClassificationPolicy, name: &str) -> Option<Value> {
    let i = |v: Option<i32>| v.map(|v| json!(v));
    let f = |v: Option<f64>| v.map(|v| json!(v));
    match name {
        "friend_min_purchases" => i(p.friend_min_purchases),
        "friend_min_tenure_days" => i(p.friend_min_tenure_days),
        "friend_min_csat" => i(p.friend_min_csat),
        "friend_min_nps" => i(p.friend_min_nps),
        "friend_max_open_complaints" => i(p.friend_max_open_complaints),
        "partner_min_tenure_days" => i(p.partner_min_tenure_days),
        "partner_min_frequency_score" => i(p.partner_min_frequency_score),
        "partner_clv_top_percent" => f(p.partner_clv_top_percent),
        "partner_min_csat" => i(p.partner_min_csat),
        "partner_min_nps" => i(p.partner_min_nps),
        "partner_contract_tag" => p.partner_contract_tag.clone().map(Value::String),
        "dissolution_max_p_alive" => f(p.dissolution_max_p_alive),
        "dissolution_silence_factor" => f(p.dissolution_silence_factor),
        "dissolution_min_silence_days" => i(p.dissolution_min_silence_days),
        "exploration_window_days" => i(p.exploration_window_days),
        "expansion_period_days" => i(p.expansion_period_days),
        "expansion_min_growth_percent" => f(p.expansion_min_growth_percent),
        "commitment_min_tenure_days" => i(p.commitment_min_tenure_days),
        "commitment_min_active_periods" => i(p.commitment_min_active_periods),
        "commitment_min_p_alive" => f(p.commitment_min_p_alive),
        _ => None,
    }
}

fn check(name: &str, range: Range, v: &Value) -> Result<Value, String> {
    match range {
        Range::Int(lo, hi) => match v.as_i64() {
            Some(x) if (i64::from(lo)..=i64::from(hi)).contains(&x) => Ok(v.clone()),
            _ => Err(format!("{name} must be between {lo} and {hi}")),
        },
        Range::Float(lo, hi, open) => match v.as_f64() {
            Some(x) if x.is_finite() && (if open { x > lo } else { x >= lo }) && x <= hi => {
                Ok(v.clone())
            }
            _ if open => Err(format!("{name} must be greater than {lo} and at most {hi}")),
            _ => Err(format!("{name} must be between {lo} and {hi}")),
        },
        Range::Tag => {
            let t = v.as_str().unwrap_or("").trim().to_lowercase();
            if t.is_empty() || is_tag(&t) {
                Ok(Value::String(t))
            } else {
                Err(format!(
                    "{name} must be empty or a tag: 1 to 64 letters, digits and \"_-:./\", starting with a letter or digit"
                ))
            }
        }
    }
}

/// The problems of an update: (field path, description).
pub type Problems = Vec<(String, String)>;

/// Applies an update mask to a tenant's overrides: each named field set in
/// `update` overrides the default, each named field unset returns to it.
/// Returns the changed field names.
pub fn apply_update(
    overrides: &mut Map<String, Value>,
    update: &ClassificationPolicy,
    paths: &[String],
) -> Result<Vec<String>, Problems> {
    let mut problems = Problems::new();
    if paths.is_empty() {
        problems.push((
            "update_mask".into(),
            "name at least one policy field to change, e.g. \"friend_min_purchases\"".into(),
        ));
    }
    let mut changed = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let Some((name, range)) = FIELDS.iter().find(|(n, _)| n == path) else {
            let why = if path == "etag" || path == "update_time" {
                format!("\"{path}\" is output only and cannot be updated")
            } else {
                format!("unknown policy field \"{path}\"")
            };
            problems.push((format!("update_mask.paths[{i}]"), why));
            continue;
        };
        match proto_field(update, name) {
            None => {
                overrides.remove(*name);
            }
            Some(v) => match check(name, *range, &v) {
                Ok(v) => {
                    overrides.insert((*name).to_string(), v);
                }
                Err(e) => problems.push((format!("policy.{name}"), e)),
            },
        }
        if !changed.contains(path) {
            changed.push(path.clone());
        }
    }
    if problems.is_empty() {
        Ok(changed)
    } else {
        Err(problems)
    }
}

impl Policy {
    /// The defaults with a tenant's overrides (ignoring malformed entries).
    pub fn with_overrides(overrides: &Map<String, Value>) -> Self {
        let mut p = Policy::default();
        let int = |k: &str, d: i32| {
            overrides
                .get(k)
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(d)
        };
        let float = |k: &str, d: f64| overrides.get(k).and_then(Value::as_f64).unwrap_or(d);
        p.friend_min_purchases = int("friend_min_purchases", p.friend_min_purchases);
        p.friend_min_tenure_days = int("friend_min_tenure_days", p.friend_min_tenure_days);
        p.friend_min_csat = int("friend_min_csat", p.friend_min_csat);
        p.friend_min_nps = int("friend_min_nps", p.friend_min_nps);
        p.friend_max_open_complaints =
            int("friend_max_open_complaints", p.friend_max_open_complaints);
        p.partner_min_tenure_days = int("partner_min_tenure_days", p.partner_min_tenure_days);
        p.partner_min_frequency_score =
            int("partner_min_frequency_score", p.partner_min_frequency_score);
        p.partner_clv_top_percent = float("partner_clv_top_percent", p.partner_clv_top_percent);
        p.partner_min_csat = int("partner_min_csat", p.partner_min_csat);
        p.partner_min_nps = int("partner_min_nps", p.partner_min_nps);
        if let Some(t) = overrides
            .get("partner_contract_tag")
            .and_then(Value::as_str)
        {
            p.partner_contract_tag = t.to_string();
        }
        p.dissolution_max_p_alive = float("dissolution_max_p_alive", p.dissolution_max_p_alive);
        p.dissolution_silence_factor =
            float("dissolution_silence_factor", p.dissolution_silence_factor);
        p.dissolution_min_silence_days = int(
            "dissolution_min_silence_days",
            p.dissolution_min_silence_days,
        );
        p.exploration_window_days = int("exploration_window_days", p.exploration_window_days);
        p.expansion_period_days = int("expansion_period_days", p.expansion_period_days);
        p.expansion_min_growth_percent = float(
            "expansion_min_growth_percent",
            p.expansion_min_growth_percent,
        );
        p.commitment_min_tenure_days =
            int("commitment_min_tenure_days", p.commitment_min_tenure_days);
        p.commitment_min_active_periods = int(
            "commitment_min_active_periods",
            p.commitment_min_active_periods,
        );
        p.commitment_min_p_alive = float("commitment_min_p_alive", p.commitment_min_p_alive);
        p
    }

    /// The policy as its message, every field set (no etag, no update time).
    pub fn to_proto(&self) -> ClassificationPolicy {
        ClassificationPolicy {
            friend_min_purchases: Some(self.friend_min_purchases),
            friend_min_tenure_days: Some(self.friend_min_tenure_days),
            friend_min_csat: Some(self.friend_min_csat),
            friend_min_nps: Some(self.friend_min_nps),
            friend_max_open_complaints: Some(self.friend_max_open_complaints),
            partner_min_tenure_days: Some(self.partner_min_tenure_days),
            partner_min_frequency_score: Some(self.partner_min_frequency_score),
            partner_clv_top_percent: Some(self.partner_clv_top_percent),
            partner_min_csat: Some(self.partner_min_csat),
            partner_min_nps: Some(self.partner_min_nps),
            partner_contract_tag: Some(self.partner_contract_tag.clone()),
            dissolution_max_p_alive: Some(self.dissolution_max_p_alive),
            dissolution_silence_factor: Some(self.dissolution_silence_factor),
            dissolution_min_silence_days: Some(self.dissolution_min_silence_days),
            exploration_window_days: Some(self.exploration_window_days),
            expansion_period_days: Some(self.expansion_period_days),
            expansion_min_growth_percent: Some(self.expansion_min_growth_percent),
            commitment_min_tenure_days: Some(self.commitment_min_tenure_days),
            commitment_min_active_periods: Some(self.commitment_min_active_periods),
            commitment_min_p_alive: Some(self.commitment_min_p_alive),
            update_time: None,
            etag: String::new(),
        }
    }
}

/// The etag of a policy version (version 0: never changed).
pub fn etag(version: i64) -> String {
    format!("p{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let p = Policy::default().to_proto();
        assert_eq!(p.friend_min_purchases, Some(2));
        assert_eq!(p.partner_clv_top_percent, Some(20.0));
        assert_eq!(p.partner_contract_tag.as_deref(), Some("contract"));
        assert_eq!(p.commitment_min_p_alive, Some(0.7));
    }

    #[test]
    fn updates_override_and_reset() {
        let mut o = Map::new();
        let u = ClassificationPolicy {
            friend_min_purchases: Some(3),
            partner_contract_tag: Some("Key-Account".into()),
            ..Default::default()
        };
        let changed = apply_update(
            &mut o,
            &u,
            &["friend_min_purchases".into(), "partner_contract_tag".into()],
        )
        .unwrap();
        assert_eq!(changed.len(), 2);
        let p = Policy::with_overrides(&o);
        assert_eq!(p.friend_min_purchases, 3);
        assert_eq!(p.partner_contract_tag, "key-account");
        // Named but unset: back to the default.
        apply_update(
            &mut o,
            &ClassificationPolicy::default(),
            &["friend_min_purchases".into()],
        )
        .unwrap();
        assert_eq!(Policy::with_overrides(&o).friend_min_purchases, 2);
    }

    #[test]
    fn out_of_range_and_unknown_paths_are_refused() {
        let mut o = Map::new();
        let u = ClassificationPolicy {
            friend_min_purchases: Some(1),
            partner_clv_top_percent: Some(0.0),
            commitment_min_active_periods: Some(5),
            ..Default::default()
        };
        let err = apply_update(
            &mut o,
            &u,
            &[
                "friend_min_purchases".into(),
                "partner_clv_top_percent".into(),
                "commitment_min_active_periods".into(),
                "etag".into(),
                "bogus".into(),
            ],
        )
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "policy.friend_min_purchases",
                "policy.partner_clv_top_percent",
                "policy.commitment_min_active_periods",
                "update_mask.paths[3]",
                "update_mask.paths[4]"
            ]
        );
        assert!(apply_update(&mut o, &u, &[]).is_err());
        assert!(o.is_empty());
    }
}
