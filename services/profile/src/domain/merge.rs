//! Merge rules for profiles: the survivor keeps its values and takes the
//! merged customer's where its own are empty; what it took is remembered so
//! that an unmerge gives back exactly that (unless changed since).

use std::collections::{BTreeMap, HashMap, HashSet};

use rapport_proto::rapport::profile::v1::CustomerKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::attributes::AttrValue;
use super::contacts::{MAX_LINKS_PER_ORGANIZATION, MAX_LINKS_PER_PERSON};
use super::customer::{
    Address, EMAIL, EXTERNAL, MAX_ADDRESSES, MAX_EMAILS, MAX_EXTERNAL, MAX_PHONES, PHONE, Profile,
};
use super::status::CustomerStatus;

/// One of the two customers of a merge, as its locked row shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party {
    /// Its id.
    pub id: Uuid,
    /// Where it is in its life.
    pub status: CustomerStatus,
    /// CustomerKind number.
    pub kind: i16,
    /// Its version (etag).
    pub version: i64,
    /// The survivor it was merged into.
    pub merged_into: Option<Uuid>,
}

/// Why MergeCustomers or UnmergeCustomers cannot go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The customer does not exist or was erased.
    NotFound(Uuid),
    /// The customer was merged into another one (its chain ends elsewhere);
    /// `survivor_side` says whether it is the one asked to survive.
    MergedAway {
        /// The customer merged away.
        customer: Uuid,
        /// Whether it is the would-be survivor.
        survivor_side: bool,
    },
    /// A precondition fails, for the reason given.
    Precondition(String),
    /// The survivor changed since the etag was read.
    StaleEtag,
}

/// What MergeCustomers does once both customers are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Merge them.
    Merge,
    /// Already merged into this survivor: answer with the survivor unchanged.
    AlreadyDone,
}

/// Whether `merged` may be absorbed into `survivor` (None: not found or erased).
pub fn admit(
    survivor_id: Uuid,
    merged_id: Uuid,
    survivor: Option<Party>,
    merged: Option<Party>,
    etag_matches: impl Fn(i64) -> bool,
) -> Result<Admission, Refusal> {
    let live = |p: Option<Party>, id| match p {
        Some(p) if p.status != CustomerStatus::Erased => Ok(p),
        _ => Err(Refusal::NotFound(id)),
    };
    let s = live(survivor, survivor_id)?;
    let m = live(merged, merged_id)?;
    if m.status == CustomerStatus::Merged {
        if m.merged_into == Some(s.id) && s.status != CustomerStatus::Merged {
            return Ok(Admission::AlreadyDone);
        }
        return Err(Refusal::MergedAway {
            customer: m.id,
            survivor_side: false,
        });
    }
    if s.status == CustomerStatus::Merged {
        return Err(Refusal::MergedAway {
            customer: s.id,
            survivor_side: true,
        });
    }
    if s.kind != m.kind {
        return Err(Refusal::Precondition(
            "a person and an organisation cannot be merged: the two customers differ in kind"
                .into(),
        ));
    }
    if s.status == CustomerStatus::Deleted || m.status == CustomerStatus::Deleted {
        return Err(Refusal::Precondition(
            "a soft-deleted customer cannot be merged; undelete it first".into(),
        ));
    }
    if !etag_matches(s.version) {
        return Err(Refusal::StaleEtag);
    }
    Ok(Admission::Merge)
}

/// Whether the identifiers of both (their kinds) fit one customer's limits.
pub fn check_identifier_limits(survivor: &[i16], merged: &[i16]) -> Result<(), Refusal> {
    for (kind, limit, name) in [
        (EMAIL, MAX_EMAILS, "e-mail addresses"),
        (PHONE, MAX_PHONES, "phone numbers"),
        (EXTERNAL, MAX_EXTERNAL, "external identifiers"),
    ] {
        let n = survivor
            .iter()
            .chain(merged)
            .filter(|k| **k == kind)
            .count();
        if n > limit {
            return Err(Refusal::Precondition(format!(
                "together the two customers have {n} {name}, more than the {limit} a customer may have"
            )));
        }
    }
    Ok(())
}

/// Where one of the merged customer's identifiers goes at the survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifierMove {
    /// Its position, after the survivor's own of its kind.
    pub position: i32,
    /// Whether it stays primary (only where the survivor has no primary of its kind).
    pub is_primary: bool,
}

/// The identifier moves, in the order of `merged` ((kind, position, primary)),
/// given the survivor's next free position per kind and its primary kinds.
pub fn plan_identifiers(
    merged: &[(i16, i32, bool)],
    start: &HashMap<i16, i32>,
    survivor_primary_kinds: &HashSet<i16>,
) -> Vec<IdentifierMove> {
    merged
        .iter()
        .map(|&(kind, position, primary)| IdentifierMove {
            position: start.get(&kind).copied().unwrap_or(0) + position,
            is_primary: primary && !survivor_primary_kinds.contains(&kind),
        })
        .collect()
}

/// A contact link as merge planning sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Its id.
    pub id: Uuid,
    /// The person.
    pub person: Uuid,
    /// The organisation.
    pub organization: Uuid,
    /// ContactRole number.
    pub role: i16,
    /// Primary contact.
    pub primary: bool,
}

/// What happens to the merged customer's contact links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPlan {
    /// Links that move to the survivor, with whether each stays primary.
    pub moves: Vec<(Uuid, bool)>,
    /// Links dropped: the survivor already has the same one.
    pub drops: Vec<Uuid>,
    /// The customers at the other end of the merged customer's links.
    pub counterparts: Vec<Uuid>,
}

/// The merged customer's links move to the survivor unless it already has
/// the same link (same counterpart and role); the union must fit the
/// survivor's limit; a moved primary contact of an organisation stays
/// primary only where the survivor has none.
pub fn plan_links(
    survivor: Uuid,
    merged: Uuid,
    kind: i16,
    survivor_links: &[Link],
    merged_links: &[Link],
) -> Result<LinkPlan, Refusal> {
    let same = |l: &Link, s: &Link| {
        l.role == s.role
            && if l.person == merged {
                s.person == survivor && s.organization == l.organization
            } else {
                s.organization == survivor && s.person == l.person
            }
    };
    let moving = merged_links
        .iter()
        .filter(|l| !survivor_links.iter().any(|s| same(l, s)))
        .count();
    let limit = if i32::from(kind) == CustomerKind::Person as i32 {
        MAX_LINKS_PER_PERSON
    } else {
        MAX_LINKS_PER_ORGANIZATION
    };
    let count = (survivor_links.len() + moving) as i64;
    if count > limit {
        return Err(Refusal::Precondition(format!(
            "together the two customers have {count} contact links, more than the {limit} allowed"
        )));
    }
    let survivor_has_primary = survivor_links
        .iter()
        .any(|l| l.organization == survivor && l.primary);
    let mut plan = LinkPlan::default();
    for l in merged_links {
        if survivor_links.iter().any(|s| same(l, s)) {
            plan.drops.push(l.id);
        } else {
            let keep = l.primary && !(l.organization == merged && survivor_has_primary);
            plan.moves.push((l.id, keep));
        }
        plan.counterparts.push(if l.person == merged {
            l.organization
        } else {
            l.person
        });
    }
    Ok(plan)
}

/// Whether UnmergeCustomers may restore `merged` (None: not found or
/// erased); returns its survivor. `survivor_status` is looked up after.
pub fn admit_unmerge(merged_id: Uuid, merged: Option<Party>) -> Result<Uuid, Refusal> {
    let m = match merged {
        Some(p) if p.status != CustomerStatus::Erased => p,
        _ => return Err(Refusal::NotFound(merged_id)),
    };
    m.merged_into
        .filter(|_| m.status == CustomerStatus::Merged)
        .ok_or_else(|| {
            Refusal::Precondition(format!(
                "customer {merged_id} is not merged into another customer"
            ))
        })
}

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

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn party(n: u128, status: CustomerStatus) -> Option<Party> {
        Some(Party {
            id: id(n),
            status,
            kind: 1,
            version: 3,
            merged_into: None,
        })
    }

    #[test]
    fn admission_follows_the_states_of_both() {
        use CustomerStatus::*;
        let any = |_: i64| true;
        let admit2 = |s, m| admit(id(1), id(2), s, m, any);
        assert_eq!(
            admit2(party(1, Active), party(2, Active)),
            Ok(Admission::Merge)
        );
        assert_eq!(
            admit2(None, party(2, Active)),
            Err(Refusal::NotFound(id(1)))
        );
        assert_eq!(
            admit2(party(1, Active), party(2, Erased)),
            Err(Refusal::NotFound(id(2)))
        );
        let mut done = party(2, Merged);
        done.as_mut().unwrap().merged_into = Some(id(1));
        assert_eq!(admit2(party(1, Active), done), Ok(Admission::AlreadyDone));
        let mut elsewhere = party(2, Merged);
        elsewhere.as_mut().unwrap().merged_into = Some(id(9));
        assert_eq!(
            admit2(party(1, Active), elsewhere),
            Err(Refusal::MergedAway {
                customer: id(2),
                survivor_side: false
            })
        );
        assert_eq!(
            admit2(party(1, Merged), party(2, Active)),
            Err(Refusal::MergedAway {
                customer: id(1),
                survivor_side: true
            })
        );
        assert!(matches!(
            admit2(party(1, Deleted), party(2, Active)),
            Err(Refusal::Precondition(m)) if m.contains("soft-deleted")
        ));
        let mut org = party(2, Active);
        org.as_mut().unwrap().kind = 2;
        assert!(matches!(
            admit2(party(1, Active), org),
            Err(Refusal::Precondition(m)) if m.contains("differ in kind")
        ));
        assert_eq!(
            admit(id(1), id(2), party(1, Active), party(2, Active), |v| v == 4),
            Err(Refusal::StaleEtag)
        );
    }

    #[test]
    fn identifier_limits_count_both_customers() {
        let emails = |n| vec![EMAIL; n];
        assert!(check_identifier_limits(&emails(5), &emails(5)).is_ok());
        assert!(matches!(
            check_identifier_limits(&emails(6), &emails(5)),
            Err(Refusal::Precondition(m)) if m.contains("11 e-mail addresses")
        ));
    }

    #[test]
    fn moved_identifiers_follow_the_survivors_and_keep_one_primary() {
        let start: HashMap<i16, i32> = [(EMAIL, 2)].into_iter().collect();
        let primaries: HashSet<i16> = [EMAIL].into_iter().collect();
        let moves = plan_identifiers(&[(EMAIL, 0, true), (PHONE, 0, true)], &start, &primaries);
        assert_eq!(
            moves,
            vec![
                IdentifierMove {
                    position: 2,
                    is_primary: false
                },
                IdentifierMove {
                    position: 0,
                    is_primary: true
                },
            ]
        );
    }

    #[test]
    fn links_move_unless_the_survivor_has_the_same_one() {
        let (org, survivor, merged) = (id(10), id(1), id(2));
        let link = |n, person, primary| Link {
            id: id(n),
            person,
            organization: org,
            role: 1,
            primary,
        };
        let plan = plan_links(
            survivor,
            merged,
            1,
            &[link(100, survivor, false)],
            &[
                link(101, merged, true),
                Link {
                    role: 2,
                    ..link(102, merged, false)
                },
            ],
        )
        .unwrap();
        assert_eq!(plan.drops, vec![id(101)]);
        assert_eq!(plan.moves, vec![(id(102), false)]);
        assert_eq!(plan.counterparts, vec![org, org]);
        let many: Vec<Link> = (0..50)
            .map(|n| Link {
                role: n,
                ..link(200 + n as u128, survivor, false)
            })
            .collect();
        assert!(matches!(
            plan_links(
                survivor,
                merged,
                1,
                &many,
                &[Link {
                    role: 99,
                    ..link(101, merged, false)
                }]
            ),
            Err(Refusal::Precondition(m)) if m.contains("51 contact links")
        ));
    }

    #[test]
    fn unmerge_needs_a_merged_customer() {
        let mut m = party(2, CustomerStatus::Merged);
        m.as_mut().unwrap().merged_into = Some(id(1));
        assert_eq!(admit_unmerge(id(2), m), Ok(id(1)));
        assert_eq!(admit_unmerge(id(2), None), Err(Refusal::NotFound(id(2))));
        assert!(matches!(
            admit_unmerge(id(2), party(2, CustomerStatus::Active)),
            Err(Refusal::Precondition(m)) if m.contains("not merged")
        ));
    }

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
