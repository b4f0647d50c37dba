//! The bad-input matrix of ProfileService, over real gRPC and PostgreSQL:
//! every method of the contract is sent what a careless or hostile client
//! sends (missing fields, oversized values, malformed and unknown ids, other
//! tenants' ids, out-of-range numbers, enums and timestamps, forged page
//! tokens, NUL bytes, SQL metacharacters and unusual Unicode) and must answer
//! the documented code, never INTERNAL, and change nothing when it refuses.

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;

use futures::StreamExt;
use prost_types::{FieldMask, Timestamp};
use rapport_proto::rapport::common::v1::{FeedPosition, Identifier, Money};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::*;
use rapport_testkit::hostile::{
    self, BAD_IDS, TEXT, YEAR_1, YEAR_9999_END, at, forged_tokens, invalid_times, with_default,
};
use support::*;
use tonic::{Code, Response, Status};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Values a hostile client sends (the rest: rapport_testkit::hostile).

/// Hostile text within 32 characters (labels).
const HOSTILE32: &str = "'); DROP--\"%_\\ ß 😀";
/// A string with a NUL byte, which PostgreSQL cannot store in text.
const NUL: &str = "a\0b";

fn now_ts() -> Timestamp {
    rapport_kit::convert::timestamp(chrono::Utc::now())
}

/// Asserts an INVALID_ARGUMENT with a BadRequest field violation on `field`.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<Response<T>, Status>, field: &str) {
    hostile::assert_invalid(r, field, field);
}

/// Asserts an error with `code`.
#[track_caller]
fn failed<T: std::fmt::Debug>(r: Result<Response<T>, Status>, code: Code) -> Status {
    hostile::assert_code(r, code, "the call")
}

/// The customer as it is now.
async fn current(c: &mut Client, id: &str) -> Customer {
    get(c, id)
        .await
        .expect("the customer is readable")
        .customer
        .expect("a customer")
}

/// Asserts the customer is exactly `before` (same etag, same update time).
async fn unchanged(c: &mut Client, before: &Customer) {
    assert_eq!(&current(c, &before.customer_id).await, before);
}

/// Every customer of the tenant, deleted ones included.
async fn everyone(c: &mut Client) -> Vec<Customer> {
    c.list_customers(ListCustomersRequest {
        show_deleted: true,
        page_size: 1000,
        ..Default::default()
    })
    .await
    .expect_answer("list")
    .customers
}

fn person_mut(c: &mut Customer) -> &mut PersonDetails {
    if !matches!(c.details, Some(customer::Details::Person(_))) {
        c.details = Some(customer::Details::Person(PersonDetails::default()));
    }
    match c.details.as_mut() {
        Some(customer::Details::Person(p)) => p,
        _ => unreachable!("just set"),
    }
}

fn org_mut(c: &mut Customer) -> &mut OrganizationDetails {
    if !matches!(c.details, Some(customer::Details::Organization(_))) {
        c.details = Some(customer::Details::Organization(
            OrganizationDetails::default(),
        ));
    }
    match c.details.as_mut() {
        Some(customer::Details::Organization(o)) => o,
        _ => unreachable!("just set"),
    }
}

fn string_value(s: &str) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::StringValue(s.into())),
    }
}

fn number_value(n: f64) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::NumberValue(n)),
    }
}

fn time_value(t: Timestamp) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::TimestampValue(t)),
    }
}

/// One attribute filter, `name` = `value`.
fn filter(name: &str, value: Option<AttributeValue>) -> Vec<AttributeFilter> {
    vec![AttributeFilter {
        name: name.into(),
        value,
    }]
}

/// The customers whose attribute `name` equals `value`.
async fn filtered(c: &mut Client, name: &str, value: AttributeValue) -> Vec<Customer> {
    c.list_customers(ListCustomersRequest {
        attribute_filters: filter(name, Some(value)),
        ..Default::default()
    })
    .await
    .expect_answer("list")
    .customers
}

fn list_value(values: Vec<String>) -> AttributeValue {
    AttributeValue {
        value: Some(attribute_value::Value::StringListValue(StringList {
            values,
        })),
    }
}

fn money(code: &str, units: i64, nanos: i32) -> Option<Money> {
    Some(Money {
        currency_code: code.into(),
        units,
        nanos,
    })
}

fn date(year: i32, month: i32, day: i32) -> Option<CalendarDate> {
    Some(CalendarDate { year, month, day })
}

async fn define(c: &mut Client, name: &str, t: AttributeType) -> AttributeDefinition {
    c.create_attribute_definition(CreateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: name.into(),
            r#type: t as i32,
            ..Default::default()
        }),
    })
    .await
    .expect_answer("define")
    .definition
    .expect("definition")
}

/// The attribute definitions the customer cases use.
async fn define_all(c: &mut Client) {
    define(c, "notes", AttributeType::String).await;
    define(c, "score", AttributeType::Number).await;
    define(c, "seen", AttributeType::Timestamp).await;
    define(c, "stores", AttributeType::StringList).await;
    define(c, "stores_b", AttributeType::StringList).await;
    define(c, "vip", AttributeType::Boolean).await;
}

type Mutation = Box<dyn Fn(&mut Customer)>;

/// One bad value of a customer: the UpdateCustomer mask path that carries it,
/// the field violation expected (below `customer.`), and how to set it.
struct Case {
    kind: CustomerKind,
    path: &'static str,
    field: &'static str,
    set: Mutation,
}

fn case(
    kind: CustomerKind,
    path: &'static str,
    field: &'static str,
    set: impl Fn(&mut Customer) + 'static,
) -> Case {
    Case {
        kind,
        path,
        field,
        set: Box::new(set),
    }
}

fn email_entry(address: &str, label: &str) -> EmailAddress {
    EmailAddress {
        address: address.into(),
        primary: false,
        label: label.into(),
    }
}

fn phone_entry(number: &str, label: &str) -> PhoneNumber {
    PhoneNumber {
        number: number.into(),
        primary: false,
        label: label.into(),
    }
}

fn address(f: impl FnOnce(&mut PostalAddress)) -> Vec<PostalAddress> {
    let mut a = PostalAddress {
        address_lines: vec!["Calle Mayor 1".into()],
        locality: "Madrid".into(),
        ..Default::default()
    };
    f(&mut a);
    vec![a]
}

/// Every bad customer value: NUL bytes in every string, oversized strings and
/// lists, negative and out-of-range numbers, unknown enums, impossible dates,
/// non-finite numbers and out-of-range timestamps in attributes.
fn bad_customer_values() -> Vec<Case> {
    use CustomerKind::{Organization as O, Person as P};
    let long = |n: usize| "x".repeat(n);
    vec![
        // NUL bytes.
        case(P, "display_name", "display_name", |c| {
            c.display_name = NUL.into()
        }),
        case(P, "person.given_name", "person.given_name", |c| {
            person_mut(c).given_name = NUL.into()
        }),
        case(P, "person.family_name", "person.family_name", |c| {
            person_mut(c).family_name = NUL.into()
        }),
        case(
            O,
            "organization.legal_name",
            "organization.legal_name",
            |c| org_mut(c).legal_name = NUL.into(),
        ),
        case(O, "organization.industry", "organization.industry", |c| {
            org_mut(c).industry = NUL.into()
        }),
        case(O, "organization.website", "organization.website", |c| {
            org_mut(c).website = "https://acme.example/a\0b".into()
        }),
        case(O, "organization.website", "organization.website", |c| {
            org_mut(c).website = "\0https://acme.example".into()
        }),
        case(O, "organization.website", "organization.website", |c| {
            org_mut(c).website = "https://acme.example/\nx".into()
        }),
        case(P, "emails", "emails[0].address", |c| {
            c.emails = vec![email_entry("a\0b@x.com", "")]
        }),
        case(P, "emails", "emails[0].label", |c| {
            c.emails = vec![email_entry("nul@x.com", NUL)]
        }),
        case(P, "phones", "phones[0].number", |c| {
            c.phones = vec![phone_entry("+34 911\0 234 567", "")]
        }),
        case(P, "phones", "phones[0].label", |c| {
            c.phones = vec![phone_entry("+34 911 234 567", NUL)]
        }),
        case(P, "postal_addresses", "postal_addresses[0].label", |c| {
            c.postal_addresses = address(|a| a.label = NUL.into())
        }),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].address_lines[0]",
            |c| c.postal_addresses = address(|a| a.address_lines = vec![NUL.into()]),
        ),
        case(P, "postal_addresses", "postal_addresses[0].locality", |c| {
            c.postal_addresses = address(|a| a.locality = NUL.into())
        }),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].administrative_area",
            |c| c.postal_addresses = address(|a| a.administrative_area = NUL.into()),
        ),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].postal_code",
            |c| c.postal_addresses = address(|a| a.postal_code = NUL.into()),
        ),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].country_code",
            |c| c.postal_addresses = address(|a| a.country_code = "E\0".into()),
        ),
        case(P, "country_code", "country_code", |c| {
            c.country_code = "E\0".into()
        }),
        case(P, "locale", "locale", |c| c.locale = "en\0".into()),
        case(
            P,
            "external_identifiers",
            "external_identifiers[0].value",
            |c| c.external_identifiers = vec![external("loyalty", NUL)],
        ),
        case(
            P,
            "external_identifiers",
            "external_identifiers[0].system",
            |c| c.external_identifiers = vec![external("loy\0alty", "L-1")],
        ),
        case(P, "tags", "tags[0]", |c| c.tags = vec![NUL.into()]),
        case(P, "owner_id", "owner_id", |c| c.owner_id = NUL.into()),
        case(
            P,
            "estimated_category_wallet",
            "estimated_category_wallet.currency_code",
            |c| c.estimated_category_wallet = money("EU\0", 1, 0),
        ),
        case(P, "attributes.notes", "attributes[notes]", |c| {
            c.attributes.insert("notes".into(), string_value(NUL));
        }),
        case(P, "attributes.stores", "attributes[stores]", |c| {
            c.attributes
                .insert("stores".into(), list_value(vec!["s1".into(), NUL.into()]));
        }),
        case(P, "attributes", "attributes[no\0tes]", |c| {
            c.attributes.insert("no\0tes".into(), string_value("x"));
        }),
        // Oversized strings and too many items.
        case(P, "display_name", "display_name", move |c| {
            c.display_name = "ß".repeat(301)
        }),
        case(P, "person.given_name", "person.given_name", move |c| {
            person_mut(c).given_name = "😀".repeat(201)
        }),
        case(P, "person.family_name", "person.family_name", move |c| {
            person_mut(c).family_name = long(201)
        }),
        case(
            O,
            "organization.legal_name",
            "organization.legal_name",
            move |c| org_mut(c).legal_name = long(301),
        ),
        case(
            O,
            "organization.industry",
            "organization.industry",
            move |c| org_mut(c).industry = long(101),
        ),
        case(
            O,
            "organization.website",
            "organization.website",
            move |c| org_mut(c).website = format!("https://acme.example/{}", long(2048)),
        ),
        case(P, "emails", "emails[0].address", move |c| {
            c.emails = vec![email_entry(&format!("{}@x.com", long(249)), "")]
        }),
        case(P, "emails", "emails[0].label", move |c| {
            c.emails = vec![email_entry("label@x.com", &long(33))]
        }),
        case(P, "emails", "emails", |c| {
            c.emails = (0..11)
                .map(|i| email_entry(&format!("e{i}@x.com"), ""))
                .collect()
        }),
        case(P, "phones", "phones", |c| {
            c.phones = (0..11)
                .map(|i| phone_entry(&format!("+34 911 234 56{i}"), ""))
                .collect()
        }),
        case(P, "phones", "phones[0].number", move |c| {
            c.phones = vec![phone_entry(&"9".repeat(65), "")]
        }),
        case(P, "postal_addresses", "postal_addresses", |c| {
            c.postal_addresses = (0..6).flat_map(|_| address(|_| {})).collect()
        }),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].address_lines",
            |c| c.postal_addresses = address(|a| a.address_lines = vec!["l".into(); 5]),
        ),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].address_lines[0]",
            move |c| c.postal_addresses = address(|a| a.address_lines = vec![long(201)]),
        ),
        case(
            P,
            "postal_addresses",
            "postal_addresses[0].postal_code",
            move |c| c.postal_addresses = address(|a| a.postal_code = long(21)),
        ),
        case(P, "external_identifiers", "external_identifiers", |c| {
            c.external_identifiers = (0..21)
                .map(|i| external("loyalty", &format!("L-{i}")))
                .collect()
        }),
        case(
            P,
            "external_identifiers",
            "external_identifiers[0].value",
            move |c| c.external_identifiers = vec![external("loyalty", &long(257))],
        ),
        case(
            P,
            "external_identifiers",
            "external_identifiers[0].system",
            move |c| c.external_identifiers = vec![external(&long(65), "L-1")],
        ),
        case(
            P,
            "external_identifiers",
            "external_identifiers[0].kind",
            |c| {
                c.external_identifiers = vec![Identifier {
                    kind: 999,
                    system: "loyalty".into(),
                    value: "L-1".into(),
                }]
            },
        ),
        case(P, "tags", "tags", |c| {
            c.tags = (0..51).map(|i| format!("t{i}")).collect()
        }),
        case(P, "tags", "tags[0]", move |c| c.tags = vec![long(65)]),
        case(P, "tags", "tags[0]", |c| c.tags = vec![TEXT.into()]),
        case(P, "owner_id", "owner_id", move |c| c.owner_id = long(129)),
        case(P, "owner_id", "owner_id", |c| {
            c.owner_id = "1 OR 1=1".into()
        }),
        case(P, "locale", "locale", move |c| c.locale = long(36)),
        case(P, "attributes.notes", "attributes[notes]", |c| {
            c.attributes
                .insert("notes".into(), string_value(&"ß".repeat(1025)));
        }),
        case(P, "attributes.stores", "attributes[stores]", |c| {
            c.attributes
                .insert("stores".into(), list_value(vec!["s".into(); 101]));
        }),
        case(P, "attributes.stores", "attributes[stores]", move |c| {
            c.attributes
                .insert("stores".into(), list_value(vec![long(257)]));
        }),
        case(P, "attributes", "attributes", |c| {
            for i in 0..101 {
                c.attributes.insert(format!("a{i}"), string_value("x"));
            }
        }),
        case(P, "attributes", "attributes", move |c| {
            // Two lists of 100 entries of 256 characters: over 32 KiB.
            c.attributes
                .insert("stores".into(), list_value(vec![long(256); 100]));
            c.attributes
                .insert("stores_b".into(), list_value(vec![long(256); 100]));
        }),
        case(P, "attributes.nope", "attributes[nope]", |c| {
            c.attributes.insert("nope".into(), string_value("x"));
        }),
        // Negative and out-of-range numbers, unknown enums.
        case(
            O,
            "organization.employee_count",
            "organization.employee_count",
            |c| org_mut(c).employee_count = -1,
        ),
        case(
            O,
            "organization.employee_count",
            "organization.employee_count",
            |c| org_mut(c).employee_count = i32::MAX,
        ),
        case(
            O,
            "organization.annual_revenue",
            "organization.annual_revenue.units",
            |c| org_mut(c).annual_revenue = money("EUR", -1, 0),
        ),
        case(
            P,
            "estimated_category_wallet",
            "estimated_category_wallet.units",
            |c| c.estimated_category_wallet = money("EUR", i64::MIN, 0),
        ),
        case(
            P,
            "estimated_category_wallet",
            "estimated_category_wallet.nanos",
            |c| c.estimated_category_wallet = money("EUR", 1, 2_000_000_000),
        ),
        case(
            P,
            "estimated_category_wallet",
            "estimated_category_wallet.nanos",
            |c| c.estimated_category_wallet = money("EUR", 1, -1),
        ),
        case(
            P,
            "estimated_category_wallet",
            "estimated_category_wallet.currency_code",
            |c| c.estimated_category_wallet = money("", 1, 0),
        ),
        case(P, "relationship_stage", "relationship_stage", |c| {
            c.relationship_stage = 999
        }),
        case(P, "relationship_stage", "relationship_stage", |c| {
            c.relationship_stage = -1
        }),
        // Impossible dates.
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(1, 1, 1)
        }),
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(9999, 12, 31)
        }),
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(1980, 13, 1)
        }),
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(1981, 2, 29)
        }),
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(-1, 1, 1)
        }),
        case(P, "person.birth_date", "person.birth_date", |c| {
            person_mut(c).birth_date = date(i32::MAX, i32::MAX, i32::MIN)
        }),
        // Non-finite numbers, bad timestamps and unset values in attributes.
        case(P, "attributes.score", "attributes[score]", |c| {
            c.attributes.insert("score".into(), number_value(f64::NAN));
        }),
        case(P, "attributes.score", "attributes[score]", |c| {
            c.attributes
                .insert("score".into(), number_value(f64::INFINITY));
        }),
        case(P, "attributes.score", "attributes[score]", |c| {
            c.attributes
                .insert("score".into(), number_value(f64::NEG_INFINITY));
        }),
        case(P, "attributes.score", "attributes[score]", |c| {
            c.attributes.insert("score".into(), string_value("1"));
        }),
        case(P, "attributes.score", "attributes[score]", |c| {
            c.attributes
                .insert("score".into(), AttributeValue { value: None });
        }),
        case(P, "attributes.seen", "attributes[seen]", |c| {
            c.attributes
                .insert("seen".into(), time_value(at(0, 2_000_000_000)));
        }),
        case(P, "attributes.seen", "attributes[seen]", |c| {
            c.attributes.insert("seen".into(), time_value(at(0, -1)));
        }),
        case(P, "attributes.seen", "attributes[seen]", |c| {
            c.attributes
                .insert("seen".into(), time_value(at(i64::MAX / 2, 0)));
        }),
        case(P, "attributes.seen", "attributes[seen]", |c| {
            c.attributes
                .insert("seen".into(), time_value(at(YEAR_1 - 1, 0)));
        }),
        case(P, "attributes.seen", "attributes[seen]", |c| {
            c.attributes
                .insert("seen".into(), time_value(at(YEAR_9999_END + 1, 0)));
        }),
    ]
}

fn base(kind: CustomerKind) -> Customer {
    match kind {
        CustomerKind::Organization => organization("Acme Iberia S.L."),
        _ => person("Ana", "López", "ana@example.com"),
    }
}

mod consents;
mod contacts;
mod customers;
mod definitions;
mod identity;
mod listing;
mod merging;
mod reads;
mod tenancy;

#[allow(unused_imports)]
use consents::*;
#[allow(unused_imports)]
use contacts::*;
#[allow(unused_imports)]
use customers::*;
#[allow(unused_imports)]
use definitions::*;
#[allow(unused_imports)]
use identity::*;
#[allow(unused_imports)]
use listing::*;
#[allow(unused_imports)]
use merging::*;
use rapport_testkit::mask;
#[allow(unused_imports)]
use reads::*;
#[allow(unused_imports)]
use tenancy::*;
