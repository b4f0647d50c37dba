//! Merge rules for profiles: the survivor keeps its values and takes the
//! merged customer's where its own are empty; what it took is remembered so
//! that an unmerge gives back exactly that (unless changed since).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::attributes::AttrValue;
use super::customer::{Address, MAX_ADDRESSES, Profile};

/// Top-level single-valued fields a survivor may take.
const SCALARS: [&str; 6] = [
    "display_name",
    "country_code",
    "locale",
    "owner_id",
    "estimated_category_wallet",
    "relationship_stage",
];
/// Kind-specific fields a survivor may take.
const NESTED: [(&str, &[&str]); 2] = [
    ("person", &["given_name", "family_name", "birth_date"]),
    (
        "organization",
        &[
            "legal_name",
            "industry",
            "employee_count",
            "annual_revenue",
            "website",
        ],
    ),
];

/// What a survivor took from a merged customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    /// Field path ("locale", "person.given_name") -> the value taken.
    pub fields: BTreeMap<String, Value>,
    /// Postal addresses appended.
    pub addresses: Vec<Address>,
    /// Tags added.
    pub tags: Vec<String>,
    /// Attributes set: name -> (the survivor's value before, the value taken).
    pub attributes: BTreeMap<String, (Option<AttrValue>, AttrValue)>,
}

fn to_map(p: &Profile) -> Map<String, Value> {
    match serde_json::to_value(p) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn from_map(m: Map<String, Value>, fallback: &Profile) -> Profile {
    serde_json::from_value(Value::Object(m)).unwrap_or_else(|_| fallback.clone())
}

fn empty_attr(v: &AttrValue) -> bool {
    match v {
        AttrValue::String(s) => s.is_empty(),
        AttrValue::List(l) => l.is_empty(),
        _ => false,
    }
}

/// The survivor's profile after absorbing `merged`, and what it took.
pub fn merge_profiles(survivor: &Profile, merged: &Profile) -> (Profile, Taken) {
    let mut taken = Taken::default();
    let mut s = to_map(survivor);
    let m = to_map(merged);
    for key in SCALARS {
        if !s.contains_key(key)
            && let Some(v) = m.get(key)
        {
            s.insert(key.to_string(), v.clone());
            taken.fields.insert(key.to_string(), v.clone());
        }
    }
    for (outer, inner) in NESTED {
        let Some(Value::Object(mo)) = m.get(outer) else {
            continue;
        };
        let so = s
            .entry(outer.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(so) = so else { continue };
        for key in inner {
            if !so.contains_key(*key)
                && let Some(v) = mo.get(*key)
            {
                so.insert(key.to_string(), v.clone());
                taken.fields.insert(format!("{outer}.{key}"), v.clone());
            }
        }
    }
    let mut out = from_map(s, survivor);
    for a in &merged.postal_addresses {
        if out.postal_addresses.len() >= MAX_ADDRESSES {
            break;
        }
        if !out.postal_addresses.contains(a) {
            out.postal_addresses.push(a.clone());
            taken.addresses.push(a.clone());
        }
    }
    for t in &merged.tags {
        if !out.tags.contains(t) {
            out.tags.push(t.clone());
            taken.tags.push(t.clone());
        }
    }
    out.tags.sort();
    for (name, value) in &merged.attributes {
        let before = out.attributes.get(name).cloned();
        let survivor_empty = before.as_ref().is_none_or(empty_attr);
        if survivor_empty && !empty_attr(value) {
            out.attributes.insert(name.clone(), value.clone());
            taken
                .attributes
                .insert(name.clone(), (before, value.clone()));
        }
    }
    (out, taken)
}

/// The survivor's profile after giving back what it took, where it still
/// holds exactly the value taken (values changed since stay).
pub fn unmerge_profile(current: &Profile, taken: &Taken) -> Profile {
    let mut s = to_map(current);
    for (path, value) in &taken.fields {
        match path.split_once('.') {
            None => {
                if s.get(path) == Some(value) {
                    s.remove(path);
                }
            }
            Some((outer, inner)) => {
                if let Some(Value::Object(o)) = s.get_mut(outer)
                    && o.get(inner) == Some(value)
                {
                    o.remove(inner);
                }
            }
        }
    }
    let mut out = from_map(s, current);
    out.postal_addresses
        .retain(|a| !taken.addresses.contains(a));
    out.tags.retain(|t| !taken.tags.contains(t));
    for (name, (before, value)) in &taken.attributes {
        if out.attributes.get(name) == Some(value) {
            match before {
                Some(b) => {
                    out.attributes.insert(name.clone(), b.clone());
                }
                None => {
                    out.attributes.remove(name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::Person;
    use proptest::prelude::*;

    fn person(given: &str, family: &str) -> Profile {
        Profile {
            display_name: format!("{given} {family}").trim().to_string(),
            person: Some(Person {
                given_name: given.into(),
                family_name: family.into(),
                birth_date: None,
            }),
            ..Profile::default()
        }
    }

    #[test]
    fn survivor_wins_unless_empty() {
        let mut s = person("Ana", "");
        s.tags = vec!["vip".into()];
        s.attributes
            .insert("tier".into(), AttrValue::String("gold".into()));
        let mut m = person("Anna", "López");
        m.locale = "es".into();
        m.tags = vec!["b2c".into(), "vip".into()];
        m.attributes
            .insert("tier".into(), AttrValue::String("silver".into()));
        m.attributes.insert("vip".into(), AttrValue::Bool(true));
        let (out, taken) = merge_profiles(&s, &m);
        let p = out.person.clone().unwrap();
        assert_eq!(p.given_name, "Ana");
        assert_eq!(p.family_name, "López");
        assert_eq!(out.locale, "es");
        assert_eq!(out.tags, vec!["b2c", "vip"]);
        assert_eq!(out.attributes["tier"], AttrValue::String("gold".into()));
        assert_eq!(out.attributes["vip"], AttrValue::Bool(true));
        assert_eq!(unmerge_profile(&out, &taken), s);
    }

    #[test]
    fn values_changed_after_the_merge_stay() {
        let s = person("Ana", "");
        let mut m = person("Ana", "López");
        m.locale = "es".into();
        let (mut out, taken) = merge_profiles(&s, &m);
        out.locale = "en".into();
        let back = unmerge_profile(&out, &taken);
        assert_eq!(back.locale, "en");
        assert_eq!(back.person.unwrap().family_name, "");
    }

    proptest! {
        #[test]
        fn unmerge_undoes_merge(
            sg in "[a-z]{0,5}", sf in "[a-z]{0,5}", mg in "[a-z]{0,5}", mf in "[a-z]{0,5}",
            st in proptest::collection::btree_set("[a-c]{1,2}", 0..4),
            mt in proptest::collection::btree_set("[a-c]{1,2}", 0..4),
            sl in proptest::option::of("[a-z]{2}"), ml in proptest::option::of("[a-z]{2}"),
        ) {
            let mut s = person(&sg, &sf);
            s.tags = st.into_iter().collect();
            s.locale = sl.unwrap_or_default();
            let mut m = person(&mg, &mf);
            m.tags = mt.into_iter().collect();
            m.locale = ml.unwrap_or_default();
            let (out, taken) = merge_profiles(&s, &m);
            prop_assert_eq!(unmerge_profile(&out, &taken), s);
            for t in &m.tags {
                prop_assert!(out.tags.contains(t));
            }
        }
    }
}
