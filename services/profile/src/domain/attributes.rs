//! Custom attributes: the tenant's definitions and the validation of values
//! against them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use rapport_kit::Violations;
use rapport_proto::rapport::profile::v1::{
    AttributeDefinitionState, AttributeType, AttributeValue, StringList, attribute_value,
};
use serde::{Deserialize, Serialize};

use super::normalize;

/// Most custom attributes on one customer.
pub const MAX_ATTRIBUTES: usize = 100;
/// Largest encoded size of a customer's attribute map.
pub const MAX_ATTRIBUTES_BYTES: usize = 32 * 1024;
/// Most definitions per tenant.
pub const MAX_DEFINITIONS: i64 = 500;

/// A stored attribute value: self-describing, so that equality filters are
/// JSON containment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    /// STRING.
    #[serde(rename = "s")]
    String(String),
    /// NUMBER (finite).
    #[serde(rename = "n")]
    Number(f64),
    /// BOOLEAN.
    #[serde(rename = "b")]
    Bool(bool),
    /// TIMESTAMP, as RFC 3339 with exactly six fractional digits, UTC.
    #[serde(rename = "t")]
    Timestamp(String),
    /// STRING_LIST.
    #[serde(rename = "l")]
    List(Vec<String>),
}

/// The canonical stored form of an instant (microseconds, UTC).
pub fn canonical_time(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(6)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl AttrValue {
    /// The type this value has.
    pub fn attribute_type(&self) -> AttributeType {
        match self {
            AttrValue::String(_) => AttributeType::String,
            AttrValue::Number(_) => AttributeType::Number,
            AttrValue::Bool(_) => AttributeType::Boolean,
            AttrValue::Timestamp(_) => AttributeType::Timestamp,
            AttrValue::List(_) => AttributeType::StringList,
        }
    }

    /// The value as the contract carries it.
    pub fn to_proto(&self) -> AttributeValue {
        let value = match self {
            AttrValue::String(s) => attribute_value::Value::StringValue(s.clone()),
            AttrValue::Number(n) => attribute_value::Value::NumberValue(*n),
            AttrValue::Bool(b) => attribute_value::Value::BoolValue(*b),
            AttrValue::Timestamp(t) => {
                let ts = DateTime::parse_from_rfc3339(t)
                    .map(|d| rapport_kit::convert::timestamp(d.with_timezone(&Utc)))
                    .unwrap_or_default();
                attribute_value::Value::TimestampValue(ts)
            }
            AttrValue::List(l) => {
                attribute_value::Value::StringListValue(StringList { values: l.clone() })
            }
        };
        AttributeValue { value: Some(value) }
    }
}

/// What validation needs to know of one definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The attribute's name.
    pub name: String,
    /// Its type (AttributeType number).
    pub attribute_type: i32,
    /// Whether every customer must have a value.
    pub required: bool,
    /// ACTIVE or DEPRECATED (AttributeDefinitionState number).
    pub state: i32,
}

impl Definition {
    /// True while the definition accepts new values.
    pub fn active(&self) -> bool {
        self.state == AttributeDefinitionState::Active as i32
    }
}

/// A tenant's definitions by name.
pub type Definitions = HashMap<String, Definition>;

/// Checks a definition's name: `^[a-z][a-z0-9_]{0,63}$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Checks one string of a STRING or STRING_LIST value: any text but NUL,
/// which PostgreSQL cannot store.
fn check_string(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(())
}

/// Converts one value to the stored form, checking it against `expected`
/// (an AttributeType number). Returns why it is refused.
pub fn convert_value(value: &AttributeValue, expected: i32) -> Result<AttrValue, String> {
    let Some(v) = &value.value else {
        return Err("a value must be set; to remove an attribute, leave it out".into());
    };
    let converted = match v {
        attribute_value::Value::StringValue(s) => {
            let n = s.chars().count();
            if n > 1024 {
                return Err(format!(
                    "a string value has at most 1,024 characters (got {n})"
                ));
            }
            check_string(s)?;
            AttrValue::String(s.clone())
        }
        attribute_value::Value::NumberValue(n) => {
            if !n.is_finite() {
                return Err("a number must be finite".into());
            }
            AttrValue::Number(*n)
        }
        attribute_value::Value::BoolValue(b) => AttrValue::Bool(*b),
        attribute_value::Value::TimestampValue(t) => {
            match rapport_kit::convert::from_timestamp(t) {
                Some(t) => AttrValue::Timestamp(canonical_time(t)),
                None => return Err("not a valid timestamp".into()),
            }
        }
        attribute_value::Value::StringListValue(l) => {
            if l.values.len() > 100 {
                return Err("a string list has at most 100 entries".into());
            }
            if l.values.iter().any(|s| s.chars().count() > 256) {
                return Err("each entry of a string list has at most 256 characters".into());
            }
            for s in &l.values {
                check_string(s)?;
            }
            AttrValue::List(l.values.clone())
        }
    };
    let got = converted.attribute_type() as i32;
    if got != expected {
        let name = |t: i32| {
            AttributeType::try_from(t)
                .map(|t| t.as_str_name())
                .unwrap_or("ATTRIBUTE_TYPE_UNSPECIFIED")
        };
        return Err(format!(
            "the definition's type is {}, the value is {}",
            name(expected),
            name(got)
        ));
    }
    Ok(converted)
}

/// How attribute values are checked on a write.
#[derive(Debug, Clone, Copy)]
pub struct AttributeRules<'a> {
    /// Values the customer already has: keeping one of a deprecated
    /// definition is allowed.
    pub existing: &'a BTreeMap<String, AttrValue>,
    /// Whether active required definitions must have a value.
    pub enforce_required: bool,
}

/// Validates a customer's whole attribute map, recording one violation per
/// problem under `{prefix}.attributes[<name>]`.
pub fn validate_map(
    map: &HashMap<String, AttributeValue>,
    prefix: &str,
    defs: &Definitions,
    rules: AttributeRules<'_>,
    v: &mut Violations,
) -> BTreeMap<String, AttrValue> {
    let mut out = BTreeMap::new();
    let field = format!("{prefix}.attributes");
    if map.len() > MAX_ATTRIBUTES {
        v.add(
            &field,
            format!("at most {MAX_ATTRIBUTES} attributes (got {})", map.len()),
        );
    }
    let size = prost::encoding::hash_map::encoded_len(
        prost::encoding::string::encoded_len,
        prost::encoding::message::encoded_len,
        13,
        map,
    );
    if size > MAX_ATTRIBUTES_BYTES {
        v.add(
            &field,
            format!("at most 32 KiB of attributes in total (got {size} bytes)"),
        );
    }
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    for name in names {
        let path = format!("{prefix}.attributes[{name}]");
        let Some(def) = defs.get(name.as_str()) else {
            v.add(
                path,
                format!("no attribute definition is named {name:?}; create one first"),
            );
            continue;
        };
        match convert_value(&map[name], def.attribute_type) {
            Ok(value) => {
                if !def.active() && rules.existing.get(name.as_str()) != Some(&value) {
                    v.add(
                        path,
                        "the definition is deprecated: it accepts no new values",
                    );
                    continue;
                }
                out.insert(name.clone(), value);
            }
            Err(e) => v.add(path, e),
        }
    }
    if rules.enforce_required {
        let mut required: Vec<&Definition> = defs
            .values()
            .filter(|d| d.required && d.active() && !map.contains_key(&d.name))
            .collect();
        required.sort_by(|a, b| a.name.cmp(&b.name));
        for d in required {
            v.add(
                format!("{prefix}.attributes[{}]", d.name),
                "required: every customer must have a value",
            );
        }
    }
    out
}

/// The stored form of a list filter value (`string_value` on a STRING_LIST
/// attribute matches lists containing it).
pub fn filter_value(value: &AttributeValue, def: &Definition) -> Result<AttrValue, String> {
    if def.attribute_type == AttributeType::StringList as i32 {
        return match &value.value {
            Some(attribute_value::Value::StringValue(s)) => {
                check_string(s)?;
                Ok(AttrValue::List(vec![s.clone()]))
            }
            _ => Err("a STRING_LIST attribute is filtered with a string_value".into()),
        };
    }
    convert_value(value, def.attribute_type)
}

/// Normalises a text with `normalize::text` (re-exported for callers of this module).
pub fn description(raw: &str) -> Result<String, String> {
    normalize::text(raw, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Definitions {
        let mut d = Definitions::new();
        for (name, t, req, state) in [
            ("tier", AttributeType::String, false, 1),
            ("vip", AttributeType::Boolean, true, 1),
            ("old", AttributeType::Number, false, 2),
            ("stores", AttributeType::StringList, false, 1),
        ] {
            d.insert(
                name.into(),
                Definition {
                    name: name.into(),
                    attribute_type: t as i32,
                    required: req,
                    state,
                },
            );
        }
        d
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue {
            value: Some(attribute_value::Value::StringValue(v.into())),
        }
    }

    #[test]
    fn one_violation_per_problem() {
        let mut map = HashMap::new();
        map.insert("tier".to_string(), s("gold"));
        map.insert("unknown".to_string(), s("x"));
        map.insert(
            "old".to_string(),
            AttributeValue {
                value: Some(attribute_value::Value::NumberValue(1.0)),
            },
        );
        map.insert("stores".to_string(), s("wrong type"));
        let mut v = Violations::new();
        let existing = BTreeMap::new();
        let out = validate_map(
            &map,
            "customer",
            &defs(),
            AttributeRules {
                existing: &existing,
                enforce_required: true,
            },
            &mut v,
        );
        assert_eq!(out.len(), 1);
        let err = v.finish().unwrap_err();
        let text = err.to_string();
        for p in [
            "attributes[unknown]",
            "attributes[old]",
            "attributes[stores]",
            "attributes[vip]",
        ] {
            assert!(text.contains(p), "{text}");
        }
    }

    #[test]
    fn deprecated_values_may_be_kept() {
        let mut map = HashMap::new();
        map.insert(
            "old".to_string(),
            AttributeValue {
                value: Some(attribute_value::Value::NumberValue(1.0)),
            },
        );
        let mut existing = BTreeMap::new();
        existing.insert("old".to_string(), AttrValue::Number(1.0));
        let mut v = Violations::new();
        validate_map(
            &map,
            "customer",
            &defs(),
            AttributeRules {
                existing: &existing,
                enforce_required: false,
            },
            &mut v,
        );
        assert!(v.is_empty());
    }

    #[test]
    fn names_and_numbers() {
        assert!(valid_name("loyalty_tier"));
        assert!(!valid_name("Loyalty"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name(&"a".repeat(65)));
        let nan = AttributeValue {
            value: Some(attribute_value::Value::NumberValue(f64::NAN)),
        };
        assert!(convert_value(&nan, AttributeType::Number as i32).is_err());
    }

    #[test]
    fn strings_refuse_nul_characters() {
        let nul = s("a\0b");
        assert!(convert_value(&nul, AttributeType::String as i32).is_err());
        let list = AttributeValue {
            value: Some(attribute_value::Value::StringListValue(StringList {
                values: vec!["ok".into(), "a\0b".into()],
            })),
        };
        assert!(convert_value(&list, AttributeType::StringList as i32).is_err());
        let defs = defs();
        assert!(filter_value(&nul, &defs["stores"]).is_err());
        assert!(filter_value(&nul, &defs["tier"]).is_err());
        // Other unusual text is fine.
        let odd = s("Robert'); DROP TABLE customers;-- \"%_\\ ß 😀\n");
        assert!(convert_value(&odd, AttributeType::String as i32).is_ok());
    }
}
