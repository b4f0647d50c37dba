//! UpdateCustomer's field mask: which paths exist, and applying them to the
//! current customer.

use rapport_kit::Violations;
use rapport_proto::rapport::profile::v1::{Customer, CustomerKind, customer};

use super::customer::{org_of, person_of};

const TOP: [&str; 13] = [
    "display_name",
    "emails",
    "phones",
    "postal_addresses",
    "country_code",
    "locale",
    "external_identifiers",
    "tags",
    "owner_id",
    "estimated_category_wallet",
    "relationship_stage",
    "person",
    "organization",
];
const PERSON: [&str; 3] = ["given_name", "family_name", "birth_date"];
const ORGANIZATION: [&str; 5] = [
    "legal_name",
    "industry",
    "employee_count",
    "annual_revenue",
    "website",
];
const READ_ONLY: [&str; 10] = [
    "customer_id",
    "kind",
    "state",
    "stage_set_time",
    "consents",
    "merged_customer_ids",
    "create_time",
    "update_time",
    "delete_time",
    "etag",
];

/// The result of applying a mask.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The customer with the masked fields taken from the request.
    pub customer: Customer,
    /// Whether any path touched `attributes`.
    pub touches_attributes: bool,
}

/// Applies `paths` of `request` onto `current` (a customer of `kind`).
/// Records a violation on `update_mask.paths[i]` for each bad path.
pub fn apply(
    current: &Customer,
    request: &Customer,
    paths: &[String],
    kind: i32,
    v: &mut Violations,
) -> Applied {
    let mut out = current.clone();
    let mut touches_attributes = false;
    if paths.is_empty() {
        v.add(
            "update_mask",
            "required: name the fields to update, e.g. \"tags\" (\"*\" for every mutable field)",
        );
    }
    let is_person = kind == CustomerKind::Person as i32;
    for (i, path) in paths.iter().enumerate() {
        let field = format!("update_mask.paths[{i}]");
        let path = path.trim();
        if path == "*" {
            for top in TOP {
                if (top == "person" && !is_person) || (top == "organization" && is_person) {
                    continue;
                }
                copy_top(&mut out, request, top);
            }
            out.attributes = request.attributes.clone();
            touches_attributes = true;
            continue;
        }
        if READ_ONLY.contains(&path) {
            v.add(field, format!("{path:?} is output only or immutable"));
            continue;
        }
        if path == "attributes" {
            out.attributes = request.attributes.clone();
            touches_attributes = true;
            continue;
        }
        if let Some(name) = path.strip_prefix("attributes.") {
            if name.is_empty() {
                v.add(field, "name an attribute after \"attributes.\"");
                continue;
            }
            match request.attributes.get(name) {
                Some(val) => {
                    out.attributes.insert(name.to_string(), val.clone());
                }
                None => {
                    out.attributes.remove(name);
                }
            }
            touches_attributes = true;
            continue;
        }
        if let Some(sub) = path.strip_prefix("person.") {
            if !PERSON.contains(&sub) {
                v.add(field, format!("unknown path {path:?}"));
            } else if !is_person {
                v.add(field, "person paths apply only to customers of kind PERSON");
            } else {
                let mut p = person_of(&out);
                let r = person_of(request);
                match sub {
                    "given_name" => p.given_name = r.given_name,
                    "family_name" => p.family_name = r.family_name,
                    _ => p.birth_date = r.birth_date,
                }
                out.details = Some(customer::Details::Person(p));
            }
            continue;
        }
        if let Some(sub) = path.strip_prefix("organization.") {
            if !ORGANIZATION.contains(&sub) {
                v.add(field, format!("unknown path {path:?}"));
            } else if is_person {
                v.add(
                    field,
                    "organization paths apply only to customers of kind ORGANIZATION",
                );
            } else {
                let mut o = org_of(&out);
                let r = org_of(request);
                match sub {
                    "legal_name" => o.legal_name = r.legal_name,
                    "industry" => o.industry = r.industry,
                    "employee_count" => o.employee_count = r.employee_count,
                    "annual_revenue" => o.annual_revenue = r.annual_revenue,
                    _ => o.website = r.website,
                }
                out.details = Some(customer::Details::Organization(o));
            }
            continue;
        }
        if !TOP.contains(&path) {
            v.add(field, format!("unknown path {path:?}"));
            continue;
        }
        if path == "person" && !is_person {
            v.add(field, "person applies only to customers of kind PERSON");
            continue;
        }
        if path == "organization" && is_person {
            v.add(
                field,
                "organization applies only to customers of kind ORGANIZATION",
            );
            continue;
        }
        copy_top(&mut out, request, path);
    }
    // Details in the request of the wrong kind are refused like on create.
    if paths
        .iter()
        .any(|p| p == "*" || p.starts_with("person") || p.starts_with("organization"))
    {
        match (&request.details, is_person) {
            (Some(customer::Details::Organization(_)), true) => v.add(
                "customer.organization",
                "a person has no organization details",
            ),
            (Some(customer::Details::Person(_)), false) => {
                v.add("customer.person", "an organisation has no person details")
            }
            _ => {}
        }
    }
    Applied {
        customer: out,
        touches_attributes,
    }
}

/// Identifier fields: an import attaches new identifiers, never replaces them.
pub const IDENTIFIER_PATHS: [&str; 3] = ["emails", "phones", "external_identifiers"];

/// The mask an import item gets when it gives none: every field it sets
/// (non-empty), each attribute by name, never the identifiers. What the item
/// leaves out is kept.
pub fn import_paths(c: &Customer) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |set: bool, path: &str| {
        if set {
            out.push(path.to_string());
        }
    };
    push(!c.display_name.is_empty(), "display_name");
    match &c.details {
        Some(customer::Details::Person(p)) => {
            push(!p.given_name.is_empty(), "person.given_name");
            push(!p.family_name.is_empty(), "person.family_name");
            push(p.birth_date.is_some(), "person.birth_date");
        }
        Some(customer::Details::Organization(o)) => {
            push(!o.legal_name.is_empty(), "organization.legal_name");
            push(!o.industry.is_empty(), "organization.industry");
            push(o.employee_count != 0, "organization.employee_count");
            push(o.annual_revenue.is_some(), "organization.annual_revenue");
            push(!o.website.is_empty(), "organization.website");
        }
        None => {}
    }
    push(!c.postal_addresses.is_empty(), "postal_addresses");
    push(!c.country_code.is_empty(), "country_code");
    push(!c.locale.is_empty(), "locale");
    push(!c.tags.is_empty(), "tags");
    push(!c.owner_id.is_empty(), "owner_id");
    push(
        c.estimated_category_wallet.is_some(),
        "estimated_category_wallet",
    );
    push(c.relationship_stage != 0, "relationship_stage");
    let mut names: Vec<&String> = c.attributes.keys().collect();
    names.sort();
    out.extend(names.into_iter().map(|n| format!("attributes.{n}")));
    out
}

fn copy_top(out: &mut Customer, r: &Customer, path: &str) {
    match path {
        "display_name" => out.display_name = r.display_name.clone(),
        "emails" => out.emails = r.emails.clone(),
        "phones" => out.phones = r.phones.clone(),
        "postal_addresses" => out.postal_addresses = r.postal_addresses.clone(),
        "country_code" => out.country_code = r.country_code.clone(),
        "locale" => out.locale = r.locale.clone(),
        "external_identifiers" => out.external_identifiers = r.external_identifiers.clone(),
        "tags" => out.tags = r.tags.clone(),
        "owner_id" => out.owner_id = r.owner_id.clone(),
        "estimated_category_wallet" => {
            out.estimated_category_wallet = r.estimated_category_wallet.clone()
        }
        "relationship_stage" => out.relationship_stage = r.relationship_stage,
        "person" => out.details = Some(customer::Details::Person(person_of(r))),
        "organization" => out.details = Some(customer::Details::Organization(org_of(r))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::profile::v1::PersonDetails;

    #[test]
    fn an_import_item_without_a_mask_sets_what_it_has() {
        let c = Customer {
            details: Some(customer::Details::Person(PersonDetails {
                given_name: "Ana".into(),
                ..Default::default()
            })),
            emails: vec![Default::default()],
            tags: vec!["vip".into()],
            attributes: [("tier".to_string(), Default::default())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            import_paths(&c),
            vec!["person.given_name", "tags", "attributes.tier"]
        );
        assert!(import_paths(&Customer::default()).is_empty());
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn masked_fields_are_replaced_and_others_kept() {
        let current = Customer {
            kind: 1,
            locale: "es".into(),
            tags: vec!["a".into()],
            details: Some(customer::Details::Person(PersonDetails {
                given_name: "Ana".into(),
                family_name: "López".into(),
                birth_date: None,
            })),
            ..Default::default()
        };
        let request = Customer {
            tags: vec!["b".into()],
            locale: "en".into(),
            details: Some(customer::Details::Person(PersonDetails {
                given_name: "Anna".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut v = Violations::new();
        let out = apply(
            &current,
            &request,
            &paths(&["tags", "person.given_name"]),
            1,
            &mut v,
        );
        assert!(v.is_empty());
        assert_eq!(out.customer.tags, vec!["b"]);
        assert_eq!(out.customer.locale, "es");
        assert_eq!(person_of(&out.customer).given_name, "Anna");
        assert_eq!(person_of(&out.customer).family_name, "López");
    }

    #[test]
    fn bad_paths_are_refused_one_by_one() {
        let c = Customer::default();
        let mut v = Violations::new();
        apply(
            &c,
            &c,
            &paths(&["kind", "organization.website", "nope", "tags"]),
            1,
            &mut v,
        );
        let text = v.finish().unwrap_err().to_string();
        assert!(
            text.contains("paths[0]") && text.contains("paths[1]") && text.contains("paths[2]")
        );
        assert!(!text.contains("paths[3]"));
        let mut v = Violations::new();
        apply(&c, &c, &[], 1, &mut v);
        assert!(!v.is_empty());
    }
}
