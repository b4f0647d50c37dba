//! The customer as stored, its validation from the contract's `Customer`, and
//! its conversion back.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use rapport_kit::Violations;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind, Money as PbMoney};
use rapport_proto::rapport::profile::v1::{
    CalendarDate, ConsentRecord, Customer, CustomerKind, CustomerState, EmailAddress,
    OrganizationDetails, PersonDetails, PhoneNumber, PostalAddress, customer,
};
use serde::{Deserialize, Serialize};

use super::attributes::{self, AttrValue, AttributeRules, Definitions};
use super::normalize::{self, Date, Money};

/// Limits of the contract.
pub const MAX_EMAILS: usize = 10;
/// Most phones per customer.
pub const MAX_PHONES: usize = 10;
/// Most postal addresses per customer.
pub const MAX_ADDRESSES: usize = 5;
/// Most external identifiers per customer.
pub const MAX_EXTERNAL: usize = 20;

/// Identifier kinds as stored (the contract's IdentifierKind numbers).
pub const EMAIL: i16 = IdentifierKind::Email as i16;
/// Phone numbers.
pub const PHONE: i16 = IdentifierKind::Phone as i16;
/// External identifiers.
pub const EXTERNAL: i16 = IdentifierKind::External as i16;

/// Person-only fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Given name(s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub given_name: String,
    /// Family name(s).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub family_name: String,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
}

/// Organisation-only fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Registered legal name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub legal_name: String,
    /// Industry label or code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub industry: String,
    /// Employees; 0 unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub employee_count: i32,
    /// Yearly revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annual_revenue: Option<Money>,
    /// Web site.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub website: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A postal address as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Street lines.
    #[serde(default)]
    pub address_lines: Vec<String>,
    /// City or town.
    #[serde(default)]
    pub locality: String,
    /// State, province or region.
    #[serde(default)]
    pub administrative_area: String,
    /// Postal code, upper-cased.
    #[serde(default)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    pub country_code: String,
}

/// The descriptive profile of a customer, stored as one JSON document. Empty
/// fields are left out, so that containment filters match set values only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Name to show.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Person fields (kind PERSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<Person>,
    /// Organisation fields (kind ORGANIZATION).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Organization>,
    /// Postal addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postal_addresses: Vec<Address>,
    /// Country.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country_code: String,
    /// BCP 47 language tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locale: String,
    /// Sorted, unique tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Account manager id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_id: String,
    /// Estimated category wallet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_category_wallet: Option<Money>,
    /// RelationshipStage number; 0 unset.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relationship_stage: i32,
    /// Custom attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, AttrValue>,
}

impl Profile {
    /// The names a search or a duplicate check compares: display, given +
    /// family, legal (non-empty ones).
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.display_name.is_empty() {
            out.push(self.display_name.clone());
        }
        if let Some(p) = &self.person {
            let full = format!("{} {}", p.given_name, p.family_name)
                .trim()
                .to_string();
            if !full.is_empty() {
                out.push(full);
            }
        }
        if let Some(o) = &self.organization
            && !o.legal_name.is_empty()
        {
            out.push(o.legal_name.clone());
        }
        out
    }
}

/// One identifier of a customer (e-mail, phone or external).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    /// EMAIL, PHONE or EXTERNAL.
    pub kind: i16,
    /// Issuing system (EXTERNAL only).
    pub system: String,
    /// Normalised value.
    pub value: String,
    /// Primary among its kind (EMAIL and PHONE).
    pub primary: bool,
    /// Label (EMAIL and PHONE).
    pub label: String,
}

impl Ident {
    /// The identifier as the contract carries it.
    pub fn to_identifier(&self) -> Identifier {
        Identifier {
            kind: i32::from(self.kind),
            system: self.system.clone(),
            value: self.value.clone(),
        }
    }

    /// The (kind, system, value) key the database keeps unique.
    pub fn key(&self) -> (i16, String, String) {
        (self.kind, self.system.clone(), self.value.clone())
    }
}

/// A validated customer, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// CustomerKind number.
    pub kind: i32,
    /// The descriptive profile.
    pub profile: Profile,
    /// E-mails, phones and external identifiers, each kind in order.
    pub idents: Vec<Ident>,
}

/// Where a customer being validated comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// CreateCustomer or UpdateCustomer: everything applies.
    Customer,
    /// ResolveIdentity traits: identifiers must be passed separately.
    Traits,
}

fn check_text(v: &mut Violations, path: String, raw: &str, max: usize) -> String {
    match normalize::text(raw, max) {
        Ok(t) => t,
        Err(e) => {
            v.add(path, e);
            String::new()
        }
    }
}

fn check_money(v: &mut Violations, path: &str, m: &PbMoney) -> Option<Money> {
    match normalize::money(&m.currency_code, m.units, m.nanos) {
        Ok(m) => Some(m),
        Err(problems) => {
            for (sub, e) in problems {
                v.add(format!("{path}.{sub}"), e);
            }
            None
        }
    }
}

/// Validates and normalises `c` (at `prefix`, e.g. "customer") as a customer
/// of kind `kind`. Every problem is recorded in `v`; the result is meaningful
/// only when none was.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    c: &Customer,
    prefix: &str,
    kind: i32,
    defs: &Definitions,
    rules: AttributeRules<'_>,
    source: Source,
    today: NaiveDate,
    v: &mut Violations,
) -> Validated {
    let mut p = Profile {
        display_name: check_text(v, format!("{prefix}.display_name"), &c.display_name, 300),
        ..Profile::default()
    };
    p.country_code = match normalize::country_code(&c.country_code) {
        Ok(cc) => cc,
        Err(e) => {
            v.add(format!("{prefix}.country_code"), e);
            String::new()
        }
    };
    match normalize::locale(&c.locale) {
        Ok(l) => p.locale = l,
        Err(e) => v.add(format!("{prefix}.locale"), e),
    }
    match &c.details {
        Some(customer::Details::Person(d)) => {
            if kind != CustomerKind::Person as i32 {
                v.add(
                    format!("{prefix}.person"),
                    "person details are only for customers of kind PERSON",
                );
            } else {
                let birth_date = d.birth_date.as_ref().and_then(|b| {
                    match normalize::birth_date(b.year, b.month, b.day, today) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            v.add(format!("{prefix}.person.birth_date"), e);
                            None
                        }
                    }
                });
                p.person = Some(Person {
                    given_name: check_text(
                        v,
                        format!("{prefix}.person.given_name"),
                        &d.given_name,
                        200,
                    ),
                    family_name: check_text(
                        v,
                        format!("{prefix}.person.family_name"),
                        &d.family_name,
                        200,
                    ),
                    birth_date,
                });
            }
        }
        Some(customer::Details::Organization(d)) => {
            if kind != CustomerKind::Organization as i32 {
                v.add(
                    format!("{prefix}.organization"),
                    "organisation details are only for customers of kind ORGANIZATION",
                );
            } else {
                if !(0..=10_000_000).contains(&d.employee_count) {
                    v.add(
                        format!("{prefix}.organization.employee_count"),
                        "must be in 0..=10,000,000",
                    );
                }
                let website = match normalize::website(&d.website) {
                    Ok(w) => w,
                    Err(e) => {
                        v.add(format!("{prefix}.organization.website"), e);
                        String::new()
                    }
                };
                p.organization = Some(Organization {
                    legal_name: check_text(
                        v,
                        format!("{prefix}.organization.legal_name"),
                        &d.legal_name,
                        300,
                    ),
                    industry: check_text(
                        v,
                        format!("{prefix}.organization.industry"),
                        &d.industry,
                        100,
                    ),
                    employee_count: d.employee_count.clamp(0, 10_000_000),
                    annual_revenue: d.annual_revenue.as_ref().and_then(|m| {
                        check_money(v, &format!("{prefix}.organization.annual_revenue"), m)
                    }),
                    website,
                });
            }
        }
        None => {}
    }
    if kind == CustomerKind::Person as i32 && p.person.is_none() {
        p.person = Some(Person::default());
    }
    if kind == CustomerKind::Organization as i32 && p.organization.is_none() {
        p.organization = Some(Organization::default());
    }
    if p.display_name.is_empty() {
        p.display_name = derived_display_name(&p);
    }

    // Postal addresses.
    if c.postal_addresses.len() > MAX_ADDRESSES {
        v.add(
            format!("{prefix}.postal_addresses"),
            format!("at most {MAX_ADDRESSES} postal addresses"),
        );
    }
    for (i, a) in c.postal_addresses.iter().enumerate() {
        let path = format!("{prefix}.postal_addresses[{i}]");
        if a.address_lines.len() > 4 {
            v.add(format!("{path}.address_lines"), "at most 4 lines");
        }
        let lines: Vec<String> = a
            .address_lines
            .iter()
            .enumerate()
            .map(|(j, l)| check_text(v, format!("{path}.address_lines[{j}]"), l, 200))
            .filter(|l| !l.is_empty())
            .collect();
        let country = match normalize::country_code(&a.country_code) {
            Ok(cc) if cc.is_empty() => {
                if p.country_code.is_empty() {
                    v.add(
                        format!("{path}.country_code"),
                        "required when the customer has no country_code",
                    );
                }
                p.country_code.clone()
            }
            Ok(cc) => cc,
            Err(e) => {
                v.add(format!("{path}.country_code"), e);
                String::new()
            }
        };
        p.postal_addresses.push(Address {
            label: check_text(v, format!("{path}.label"), &a.label, 32),
            address_lines: lines,
            locality: check_text(v, format!("{path}.locality"), &a.locality, 100),
            administrative_area: check_text(
                v,
                format!("{path}.administrative_area"),
                &a.administrative_area,
                100,
            ),
            postal_code: check_text(v, format!("{path}.postal_code"), &a.postal_code, 20)
                .to_uppercase(),
            country_code: country,
        });
    }

    // Tags.
    if c.tags.len() > normalize::MAX_TAGS {
        v.add(
            format!("{prefix}.tags"),
            format!("at most {} tags", normalize::MAX_TAGS),
        );
    }
    let mut tags = Vec::new();
    for (i, t) in c.tags.iter().enumerate() {
        match normalize::tag(t) {
            Ok(t) => tags.push(t),
            Err(e) => v.add(format!("{prefix}.tags[{i}]"), e),
        }
    }
    tags.sort();
    tags.dedup();
    p.tags = tags;

    match normalize::owner_id(&c.owner_id) {
        Ok(o) => p.owner_id = o,
        Err(e) => v.add(format!("{prefix}.owner_id"), e),
    }
    p.estimated_category_wallet = c
        .estimated_category_wallet
        .as_ref()
        .and_then(|m| check_money(v, &format!("{prefix}.estimated_category_wallet"), m));
    if !(0..=5).contains(&c.relationship_stage) {
        v.add(
            format!("{prefix}.relationship_stage"),
            "not a RelationshipStage value",
        );
    } else {
        p.relationship_stage = c.relationship_stage;
    }
    p.attributes = attributes::validate_map(&c.attributes, prefix, defs, rules, v);

    // Identifiers.
    let mut idents = Vec::new();
    if source == Source::Traits {
        for (name, empty) in [
            ("emails", c.emails.is_empty()),
            ("phones", c.phones.is_empty()),
            ("external_identifiers", c.external_identifiers.is_empty()),
        ] {
            if !empty {
                v.add(
                    format!("{prefix}.{name}"),
                    "must be empty in traits: pass identifiers in `identifiers`",
                );
            }
        }
    } else {
        idents.extend(validate_emails(&c.emails, prefix, v));
        idents.extend(validate_phones(&c.phones, prefix, &p.country_code, v));
        idents.extend(validate_external(&c.external_identifiers, prefix, v));
    }
    Validated {
        kind,
        profile: p,
        idents,
    }
}

/// "given family" for a person, the legal name for an organisation.
pub fn derived_display_name(p: &Profile) -> String {
    if let Some(person) = &p.person {
        return format!("{} {}", person.given_name, person.family_name)
            .trim()
            .to_string();
    }
    if let Some(org) = &p.organization {
        return org.legal_name.clone();
    }
    String::new()
}

fn set_primary(list: &mut [Ident], primaries: &[usize], path: &str, v: &mut Violations) {
    if primaries.len() > 1 {
        v.add(
            format!("{path}[{}].primary", primaries[1]),
            "at most one entry may be primary",
        );
    }
    if let Some(first) = list.first_mut()
        && primaries.is_empty()
    {
        first.primary = true;
    }
}

fn validate_emails(emails: &[EmailAddress], prefix: &str, v: &mut Violations) -> Vec<Ident> {
    let path = format!("{prefix}.emails");
    if emails.len() > MAX_EMAILS {
        v.add(&path, format!("at most {MAX_EMAILS} e-mail addresses"));
    }
    let mut out: Vec<Ident> = Vec::new();
    let mut primaries = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in emails.iter().enumerate() {
        let label = check_text(v, format!("{path}[{i}].label"), &e.label, 32);
        match normalize::email(&e.address) {
            Ok(addr) => {
                if !seen.insert(addr.clone()) {
                    v.add(
                        format!("{path}[{i}].address"),
                        "the same address appears twice",
                    );
                    continue;
                }
                if e.primary {
                    primaries.push(i);
                }
                out.push(Ident {
                    kind: EMAIL,
                    system: String::new(),
                    value: addr,
                    primary: e.primary,
                    label,
                });
            }
            Err(err) => v.add(format!("{path}[{i}].address"), err),
        }
    }
    set_primary(&mut out, &primaries, &path, v);
    out
}

fn validate_phones(
    phones: &[PhoneNumber],
    prefix: &str,
    country: &str,
    v: &mut Violations,
) -> Vec<Ident> {
    let path = format!("{prefix}.phones");
    if phones.len() > MAX_PHONES {
        v.add(&path, format!("at most {MAX_PHONES} phone numbers"));
    }
    let mut out: Vec<Ident> = Vec::new();
    let mut primaries = Vec::new();
    let mut seen = HashSet::new();
    for (i, ph) in phones.iter().enumerate() {
        let label = check_text(v, format!("{path}[{i}].label"), &ph.label, 32);
        match normalize::phone(&ph.number, country) {
            Ok(n) => {
                if !seen.insert(n.clone()) {
                    v.add(
                        format!("{path}[{i}].number"),
                        "the same number appears twice",
                    );
                    continue;
                }
                if ph.primary {
                    primaries.push(i);
                }
                out.push(Ident {
                    kind: PHONE,
                    system: String::new(),
                    value: n,
                    primary: ph.primary,
                    label,
                });
            }
            Err(err) => v.add(format!("{path}[{i}].number"), err),
        }
    }
    set_primary(&mut out, &primaries, &path, v);
    out
}

fn validate_external(ids: &[Identifier], prefix: &str, v: &mut Violations) -> Vec<Ident> {
    let path = format!("{prefix}.external_identifiers");
    if ids.len() > MAX_EXTERNAL {
        v.add(
            &path,
            format!("at most {MAX_EXTERNAL} external identifiers"),
        );
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if id.kind != IdentifierKind::External as i32 {
            v.add(
                format!("{path}[{i}].kind"),
                "must be IDENTIFIER_KIND_EXTERNAL (e-mails and phones have their own fields)",
            );
            continue;
        }
        let system = normalize::system(&id.system);
        let value = normalize::external_value(&id.value);
        if let Err(e) = &system {
            v.add(format!("{path}[{i}].system"), e.clone());
        }
        if let Err(e) = &value {
            v.add(format!("{path}[{i}].value"), e.clone());
        }
        if let (Ok(system), Ok(value)) = (system, value) {
            if !seen.insert((system.clone(), value.clone())) {
                v.add(format!("{path}[{i}]"), "the same identifier appears twice");
                continue;
            }
            out.push(Ident {
                kind: EXTERNAL,
                system,
                value,
                primary: false,
                label: String::new(),
            });
        }
    }
    out
}

/// Normalises one identifier of a ResolveIdentity request; phones without a
/// prefix are read in `country`.
pub fn normalize_identifier(id: &Identifier, country: &str) -> Result<Ident, (String, String)> {
    let ident = |kind, system: String, value| Ident {
        kind,
        system,
        value,
        primary: false,
        label: String::new(),
    };
    match IdentifierKind::try_from(id.kind) {
        Ok(IdentifierKind::Email) => normalize::email(&id.value)
            .map(|e| ident(EMAIL, String::new(), e))
            .map_err(|e| ("value".into(), e)),
        Ok(IdentifierKind::Phone) => normalize::phone(&id.value, country)
            .map(|p| ident(PHONE, String::new(), p))
            .map_err(|e| ("value".into(), e)),
        Ok(IdentifierKind::External) => {
            let system = normalize::system(&id.system).map_err(|e| ("system".to_string(), e))?;
            let value =
                normalize::external_value(&id.value).map_err(|e| ("value".to_string(), e))?;
            Ok(ident(EXTERNAL, system, value))
        }
        _ => Err(("kind".into(), "must be EMAIL, PHONE or EXTERNAL".into())),
    }
}

/// A customer as read from the store, with everything the contract shows.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its id.
    pub customer_id: uuid::Uuid,
    /// CustomerKind number.
    pub kind: i32,
    /// 'active' or 'deleted' (merged and erased ones are never shown).
    pub deleted: bool,
    /// Descriptive profile.
    pub profile: Profile,
    /// Identifiers, each kind in position order.
    pub idents: Vec<Ident>,
    /// Version (the etag).
    pub version: i64,
    /// Times.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Soft deletion.
    pub delete_time: Option<DateTime<Utc>>,
    /// When the stage last changed.
    pub stage_set_time: Option<DateTime<Utc>>,
    /// Records in force.
    pub consents: Vec<ConsentRecord>,
    /// Customers merged into it, transitively.
    pub merged_ids: Vec<uuid::Uuid>,
}

/// The etag of a version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn money_pb(m: &Money) -> PbMoney {
    PbMoney {
        currency_code: m.currency_code.clone(),
        units: m.units,
        nanos: m.nanos,
    }
}

fn date_pb(d: &Date) -> CalendarDate {
    CalendarDate {
        year: d.year,
        month: d.month,
        day: d.day,
    }
}

/// The mutable fields of a profile and its identifiers as a contract
/// `Customer` (output-only fields left unset).
pub fn fields_to_proto(kind: i32, p: &Profile, idents: &[Ident]) -> Customer {
    let details = if kind == CustomerKind::Organization as i32 {
        let o = p.organization.clone().unwrap_or_default();
        Some(customer::Details::Organization(OrganizationDetails {
            legal_name: o.legal_name,
            industry: o.industry,
            employee_count: o.employee_count,
            annual_revenue: o.annual_revenue.as_ref().map(money_pb),
            website: o.website,
        }))
    } else {
        let pe = p.person.clone().unwrap_or_default();
        Some(customer::Details::Person(PersonDetails {
            given_name: pe.given_name,
            family_name: pe.family_name,
            birth_date: pe.birth_date.as_ref().map(date_pb),
        }))
    };
    Customer {
        kind,
        display_name: p.display_name.clone(),
        details,
        emails: idents
            .iter()
            .filter(|i| i.kind == EMAIL)
            .map(|i| EmailAddress {
                address: i.value.clone(),
                primary: i.primary,
                label: i.label.clone(),
            })
            .collect(),
        phones: idents
            .iter()
            .filter(|i| i.kind == PHONE)
            .map(|i| PhoneNumber {
                number: i.value.clone(),
                primary: i.primary,
                label: i.label.clone(),
            })
            .collect(),
        postal_addresses: p
            .postal_addresses
            .iter()
            .map(|a| PostalAddress {
                label: a.label.clone(),
                address_lines: a.address_lines.clone(),
                locality: a.locality.clone(),
                administrative_area: a.administrative_area.clone(),
                postal_code: a.postal_code.clone(),
                country_code: a.country_code.clone(),
            })
            .collect(),
        country_code: p.country_code.clone(),
        locale: p.locale.clone(),
        external_identifiers: idents
            .iter()
            .filter(|i| i.kind == EXTERNAL)
            .map(Ident::to_identifier)
            .collect(),
        attributes: p
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.to_proto()))
            .collect(),
        tags: p.tags.clone(),
        owner_id: p.owner_id.clone(),
        estimated_category_wallet: p.estimated_category_wallet.as_ref().map(money_pb),
        relationship_stage: p.relationship_stage,
        ..Customer::default()
    }
}

/// The whole contract `Customer` of a stored one.
pub fn to_proto(s: &Stored) -> Customer {
    let mut c = fields_to_proto(s.kind, &s.profile, &s.idents);
    c.customer_id = s.customer_id.to_string();
    c.state = if s.deleted {
        CustomerState::Deleted as i32
    } else {
        CustomerState::Active as i32
    };
    c.stage_set_time = s.stage_set_time.map(timestamp);
    c.consents = s.consents.clone();
    c.merged_customer_ids = s.merged_ids.iter().map(|u| u.to_string()).collect();
    c.create_time = Some(timestamp(s.create_time));
    c.update_time = Some(timestamp(s.update_time));
    c.delete_time = s.delete_time.map(timestamp);
    c.etag = etag(s.version);
    c
}

/// The top-level field paths whose values differ between two customers.
pub fn changed_fields(before: &Customer, after: &Customer) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (pb, pa) = (person_of(before), person_of(after));
    let (ob, oa) = (org_of(before), org_of(after));
    let checks: [(&'static str, bool); 14] = [
        ("display_name", before.display_name != after.display_name),
        ("person", pb != pa),
        ("organization", ob != oa),
        ("emails", before.emails != after.emails),
        ("phones", before.phones != after.phones),
        (
            "postal_addresses",
            before.postal_addresses != after.postal_addresses,
        ),
        ("country_code", before.country_code != after.country_code),
        ("locale", before.locale != after.locale),
        (
            "external_identifiers",
            before.external_identifiers != after.external_identifiers,
        ),
        ("attributes", before.attributes != after.attributes),
        ("tags", before.tags != after.tags),
        ("owner_id", before.owner_id != after.owner_id),
        (
            "estimated_category_wallet",
            before.estimated_category_wallet != after.estimated_category_wallet,
        ),
        (
            "relationship_stage",
            before.relationship_stage != after.relationship_stage,
        ),
    ];
    for (name, changed) in checks {
        if changed {
            out.push(name);
        }
    }
    out
}

/// The person details of a customer (default when unset).
pub fn person_of(c: &Customer) -> PersonDetails {
    match &c.details {
        Some(customer::Details::Person(p)) => p.clone(),
        _ => PersonDetails::default(),
    }
}

/// The organisation details of a customer (default when unset).
pub fn org_of(c: &Customer) -> OrganizationDetails {
    match &c.details {
        Some(customer::Details::Organization(o)) => o.clone(),
        _ => OrganizationDetails::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::profile::v1::AttributeValue;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
    }

    fn run(c: &Customer, kind: i32) -> (Validated, Vec<String>) {
        let defs = Definitions::new();
        let existing = BTreeMap::new();
        let mut v = Violations::new();
        let out = validate(
            c,
            "customer",
            kind,
            &defs,
            AttributeRules {
                existing: &existing,
                enforce_required: true,
            },
            Source::Customer,
            today(),
            &mut v,
        );
        let fields = match v.finish() {
            Ok(()) => vec![],
            Err(rapport_kit::ApiError::InvalidArgument(vs)) => {
                vs.into_iter().map(|v| v.field).collect()
            }
            Err(e) => panic!("{e}"),
        };
        (out, fields)
    }

    #[test]
    fn a_person_is_normalised() {
        let c = Customer {
            kind: 1,
            details: Some(customer::Details::Person(PersonDetails {
                given_name: " Ana ".into(),
                family_name: "López".into(),
                birth_date: None,
            })),
            emails: vec![
                EmailAddress {
                    address: "Ana@Example.com".into(),
                    ..Default::default()
                },
                EmailAddress {
                    address: "ana.work@example.com".into(),
                    label: "work".into(),
                    ..Default::default()
                },
            ],
            phones: vec![PhoneNumber {
                number: "911 23 45 67".into(),
                ..Default::default()
            }],
            country_code: "es".into(),
            tags: vec!["VIP".into(), "vip".into(), "b2c".into()],
            ..Default::default()
        };
        let (out, fields) = run(&c, 1);
        assert!(fields.is_empty(), "{fields:?}");
        assert_eq!(out.profile.display_name, "Ana López");
        assert_eq!(out.profile.country_code, "ES");
        assert_eq!(out.profile.tags, vec!["b2c", "vip"]);
        assert_eq!(out.idents[0].value, "ana@example.com");
        assert!(out.idents[0].primary && !out.idents[1].primary);
        assert_eq!(out.idents[2].value, "+34911234567");
    }

    #[test]
    fn every_problem_is_reported_once() {
        let c = Customer {
            kind: 1,
            details: Some(customer::Details::Organization(
                OrganizationDetails::default(),
            )),
            emails: vec![
                EmailAddress {
                    address: "not-an-email".into(),
                    ..Default::default()
                },
                EmailAddress {
                    address: "a@x.com".into(),
                    primary: true,
                    ..Default::default()
                },
                EmailAddress {
                    address: "A@x.com".into(),
                    ..Default::default()
                },
            ],
            phones: vec![PhoneNumber {
                number: "911234567".into(),
                ..Default::default()
            }],
            country_code: "XX".into(),
            locale: "en_GB".into(),
            tags: vec!["-bad".into()],
            attributes: [("nope".to_string(), AttributeValue { value: None })]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let (_, fields) = run(&c, 1);
        assert_eq!(
            fields,
            vec![
                "customer.country_code",
                "customer.locale",
                "customer.organization",
                "customer.tags[0]",
                "customer.attributes[nope]",
                "customer.emails[0].address",
                "customer.emails[2].address",
                "customer.phones[0].number",
            ]
        );
    }

    #[test]
    fn changed_fields_lists_top_level_paths() {
        let a = Customer {
            tags: vec!["a".into()],
            ..Default::default()
        };
        let mut b = a.clone();
        b.tags.push("b".into());
        b.locale = "es".into();
        assert_eq!(changed_fields(&a, &b), vec!["locale", "tags"]);
    }
}
