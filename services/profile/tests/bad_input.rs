//! The bad-input matrix of ProfileService, over real gRPC and PostgreSQL:
//! every method of the contract is sent what a careless or hostile client
//! sends (missing fields, oversized values, malformed and unknown ids, other
//! tenants' ids, out-of-range numbers, enums and timestamps, forged page
//! tokens, NUL bytes, SQL metacharacters and unusual Unicode) and must answer
//! the documented code, never INTERNAL, and change nothing when it refuses.

mod support;

use std::collections::HashMap;

use futures::StreamExt;
use prost_types::{FieldMask, Timestamp};
use rapport_proto::rapport::common::v1::{FeedPosition, Identifier, Money};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::*;
use rapport_testkit::hostile::{
    self, BAD_IDS, TEXT, YEAR_1, YEAR_9999_END, at, forged_tokens, invalid_times,
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

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

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
    .expect("list")
    .into_inner()
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
    .expect("define")
    .into_inner()
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

// ---------------------------------------------------------------------------
// Tenancy.

/// Every tenant-scoped method with an otherwise harmless request.
async fn call_every_method(c: &mut Client) -> Vec<(&'static str, Status)> {
    let id = Uuid::new_v4().to_string();
    let other = Uuid::new_v4().to_string();
    let mut out = Vec::new();
    macro_rules! call {
        ($name:literal, $e:expr) => {
            match $e.await {
                Ok(_) => panic!("{} answered without a valid tenant", $name),
                Err(s) => out.push(($name, s)),
            }
        };
    }
    call!(
        "CreateCustomer",
        c.create_customer(CreateCustomerRequest {
            customer: Some(person("Ana", "", "ana@x.com")),
            request_id: String::new(),
        })
    );
    call!(
        "ResolveIdentities",
        c.resolve_identities(ResolveIdentitiesRequest {
            requests: vec![ResolveIdentityRequest {
                identifiers: vec![email("ana@x.com")],
                ..Default::default()
            }],
        })
    );
    call!(
        "ImportCustomers",
        c.import_customers(futures::stream::iter(vec![ImportCustomersRequest {
            items: vec![ImportCustomerItem {
                customer: Some(person("Ana", "", "ana@x.com")),
                ..Default::default()
            }],
        }]))
    );
    call!(
        "GetCustomer",
        c.get_customer(GetCustomerRequest {
            customer_id: id.clone()
        })
    );
    call!(
        "BatchGetCustomers",
        c.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![id.clone()]
        })
    );
    call!(
        "UpdateCustomer",
        c.update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
    );
    call!(
        "DeleteCustomer",
        c.delete_customer(DeleteCustomerRequest {
            customer_id: id.clone(),
            etag: String::new()
        })
    );
    call!(
        "UndeleteCustomer",
        c.undelete_customer(UndeleteCustomerRequest {
            customer_id: id.clone(),
            etag: String::new()
        })
    );
    call!(
        "ListCustomers",
        c.list_customers(ListCustomersRequest::default())
    );
    call!(
        "SearchCustomers",
        c.search_customers(SearchCustomersRequest {
            query: "ana".into(),
            ..Default::default()
        })
    );
    call!(
        "ResolveIdentity",
        c.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("ana@x.com")],
            traits: None,
            lookup_only: false,
        })
    );
    call!(
        "FindDuplicates",
        c.find_duplicates(FindDuplicatesRequest::default())
    );
    call!(
        "MergeCustomers",
        c.merge_customers(MergeCustomersRequest {
            survivor_customer_id: id.clone(),
            merged_customer_id: other.clone(),
            ..Default::default()
        })
    );
    call!(
        "UnmergeCustomers",
        c.unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: id.clone(),
            request_id: String::new(),
        })
    );
    call!(
        "MarkNotDuplicate",
        c.mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: id.clone(),
            second_customer_id: other.clone(),
        })
    );
    call!(
        "EraseCustomer",
        c.erase_customer(EraseCustomerRequest {
            customer_id: id.clone(),
            request_reference: String::new(),
        })
    );
    call!(
        "LinkContact",
        c.link_contact(LinkContactRequest {
            link: Some(ContactLink {
                person_customer_id: id.clone(),
                organization_customer_id: other.clone(),
                role: ContactRole::Buyer as i32,
                ..Default::default()
            }),
        })
    );
    call!(
        "UnlinkContact",
        c.unlink_contact(UnlinkContactRequest {
            person_customer_id: id.clone(),
            organization_customer_id: other.clone(),
            role: ContactRole::Buyer as i32,
        })
    );
    call!(
        "ListContacts",
        c.list_contacts(ListContactsRequest {
            organization_customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "ListOrganizations",
        c.list_organizations(ListOrganizationsRequest {
            person_customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "SetConsent",
        c.set_consent(consent_request(&id, ConsentStatus::Granted))
    );
    call!(
        "CheckConsent",
        c.check_consent(CheckConsentRequest {
            customer_id: id.clone(),
            channel: ConsentChannel::Email as i32,
            purpose: ConsentPurpose::Marketing as i32,
        })
    );
    call!(
        "ListConsentHistory",
        c.list_consent_history(ListConsentHistoryRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
    );
    call!(
        "CreateAttributeDefinition",
        c.create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                r#type: AttributeType::String as i32,
                ..Default::default()
            }),
        })
    );
    call!(
        "ListAttributeDefinitions",
        c.list_attribute_definitions(ListAttributeDefinitionsRequest::default())
    );
    call!(
        "UpdateAttributeDefinition",
        c.update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                description: "x".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
    );
    call!(
        "DeprecateAttributeDefinition",
        c.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
            name: "tier".into()
        })
    );
    out
}

#[tokio::test]
async fn a_call_without_a_valid_tenant_is_unauthenticated_on_every_method() {
    let env = start().await;
    let channel = rapport_testkit::channel(&env.running).await;
    let mut clients = vec![env.client_for(None)];
    for raw in ["not-a-tenant", "1 OR 1=1", "../x", ""] {
        let value = raw.parse().expect("ascii metadata");
        clients.push(ProfileServiceClient::with_interceptor(
            channel.clone(),
            Tenant(Some(value)),
        ));
    }
    for mut c in clients {
        let answers = call_every_method(&mut c).await;
        assert_eq!(answers.len(), 27, "every tenant-scoped method");
        for (method, status) in answers {
            assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        }
    }
    // Nothing was written by any of them.
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        0
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.attribute_definitions")
            .await,
        0
    );
    assert_eq!(env.events().await, 0);
}

#[tokio::test]
async fn watch_changes_refuses_negative_sequences_and_foreign_positions() {
    let env = start().await;
    let mut internal = env.client_for(None);
    for after in [-1, i64::MIN] {
        refused(
            internal
                .watch_changes(WatchChangesRequest {
                    after_sequence: after,
                    ..Default::default()
                })
                .await
                .map(|_| Response::new(())),
            "after_sequence",
        );
    }
    // On behalf of a tenant: a negative sequence, or a position naming
    // another tenant, is refused with its field.
    let mut tenant = env.client.clone();
    refused(
        tenant
            .watch_changes(WatchChangesRequest {
                after_sequence: -1,
                ..Default::default()
            })
            .await
            .map(|_| Response::new(())),
        "after_sequence",
    );
    for (bad, field) in [
        ("not-a-tenant".to_string(), "positions[0].tenant_id"),
        (Uuid::new_v4().to_string(), "positions[0].tenant_id"),
    ] {
        refused(
            tenant
                .watch_changes(WatchChangesRequest {
                    after_sequence: 0,
                    positions: vec![FeedPosition {
                        tenant_id: bad,
                        after_sequence: 0,
                    }],
                })
                .await
                .map(|_| Response::new(())),
            field,
        );
    }
    refused(
        internal
            .watch_changes(WatchChangesRequest {
                after_sequence: 0,
                positions: vec![FeedPosition {
                    tenant_id: Uuid::new_v4().to_string(),
                    after_sequence: -5,
                }],
            })
            .await
            .map(|_| Response::new(())),
        "positions[0].after_sequence",
    );
    // A sequence far beyond the last event is simply "nothing yet".
    create(&mut tenant, person("Ana", "", "ana@x.com")).await;
    let mut stream = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: i64::MAX,
            ..Default::default()
        })
        .await
        .expect("a sequence beyond the end is valid")
        .into_inner();
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "no event after i64::MAX: {next:?}");
    // From 0 the backlog arrives.
    let mut stream = internal
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the backlog arrives")
        .expect("an item")
        .expect("an event");
    assert_eq!(first.event.expect("event").event_type, "CustomerCreated");
}

// ---------------------------------------------------------------------------
// CreateCustomer and UpdateCustomer.

#[tokio::test]
async fn create_customer_refuses_every_bad_value_and_writes_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let events = env.events().await;

    // Missing customer, missing or unknown kind, details of the other kind.
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: None,
            request_id: String::new(),
        })
        .await,
        "customer",
    );
    for kind in [0, 3, 999, -1, i32::MAX] {
        let mut p = person("Ana", "", "");
        p.kind = kind;
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(p),
                request_id: String::new(),
            })
            .await,
            "customer.kind",
        );
    }
    let mut wrong = organization("Acme");
    wrong.kind = CustomerKind::Person as i32;
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: Some(wrong),
            request_id: String::new(),
        })
        .await,
        "customer.organization",
    );

    for bad in bad_customer_values() {
        let mut input = base(bad.kind);
        (bad.set)(&mut input);
        let field = format!("customer.{}", bad.field);
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(input),
                request_id: String::new(),
            })
            .await,
            &field,
        );
    }

    // So many problems, or such long client-chosen names, that listing them
    // all would not fit in the response headers: still INVALID_ARGUMENT,
    // with the first problems named.
    let mut many = person("Ana", "", "");
    for i in 0..100 {
        many.attributes
            .insert(format!("{}{i:02}", "x".repeat(62)), string_value("x"));
    }
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(many),
            request_id: String::new(),
        })
        .await
        .expect_err("unknown attributes");
    let fields = violations(&e);
    assert!(!fields.is_empty(), "{e:?}");
    assert!(fields[0].starts_with("customer.attributes["), "{fields:?}");
    let mut huge = person("Ana", "", "");
    huge.attributes
        .insert("k".repeat(200_000), string_value("x"));
    let e = c
        .create_customer(CreateCustomerRequest {
            customer: Some(huge),
            request_id: String::new(),
        })
        .await
        .expect_err("an unknown, huge attribute name");
    assert!(
        violations(&e)
            .iter()
            .any(|f| f.starts_with("customer.attributes[kkk") && f.len() <= 256),
        "{e:?}"
    );

    // Request ids: too long, control characters.
    for rid in ["x".repeat(65), NUL.to_string(), "a\nb".to_string()] {
        refused(
            c.create_customer(CreateCustomerRequest {
                customer: Some(person("Ana", "", "")),
                request_id: rid,
            })
            .await,
            "request_id",
        );
    }

    assert!(everyone(&mut c).await.is_empty(), "nothing was created");
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.identifiers").await,
        0
    );
    assert_eq!(env.events().await, events, "no event for a refused create");
}

#[tokio::test]
async fn update_customer_refuses_every_bad_value_and_changes_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let mut ana = person("Ana", "López", "ana@example.com");
    ana.attributes.insert("notes".into(), string_value("kept"));
    let ana = create(&mut c, ana).await;
    let acme = create(&mut c, organization("Acme Iberia S.L.")).await;
    let events = env.events().await;

    for bad in bad_customer_values() {
        let before = match bad.kind {
            CustomerKind::Organization => &acme,
            _ => &ana,
        };
        let mut input = before.clone();
        (bad.set)(&mut input);
        let field = format!("customer.{}", bad.field);
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(input.clone()),
                update_mask: mask(&[bad.path]),
            })
            .await,
            &field,
        );
        // "*" carries the same value: refused too.
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(input),
                update_mask: mask(&["*"]),
            })
            .await,
            &field,
        );
        unchanged(&mut c, before).await;
    }

    // Missing customer, missing or bad mask, immutable and unknown paths.
    refused(
        c.update_customer(UpdateCustomerRequest {
            customer: None,
            update_mask: mask(&["tags"]),
        })
        .await,
        "customer",
    );
    for m in [None, mask(&[])] {
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(ana.clone()),
                update_mask: m,
            })
            .await,
            "update_mask",
        );
    }
    for path in [
        "kind",
        "customer_id",
        "state",
        "etag",
        "consents",
        "merged_customer_ids",
        "create_time",
        "nope",
        "",
        "organization.legal_name",
        "person.nope",
        "attributes.",
        "tags\0",
        "1 OR 1=1",
        "../x",
    ] {
        refused(
            c.update_customer(UpdateCustomerRequest {
                customer: Some(ana.clone()),
                update_mask: mask(&[path]),
            })
            .await,
            "update_mask.paths[0]",
        );
    }
    // A valid path next to a bad one: the whole update is refused.
    let mut tagged = ana.clone();
    tagged.tags = vec!["gold".into()];
    refused(
        c.update_customer(UpdateCustomerRequest {
            customer: Some(tagged),
            update_mask: mask(&["tags", "kind"]),
        })
        .await,
        "update_mask.paths[1]",
    );
    unchanged(&mut c, &ana).await;
    unchanged(&mut c, &acme).await;
    assert_eq!(env.events().await, events, "no event for a refused update");
}

#[tokio::test]
async fn update_delete_undelete_refuse_bad_unknown_and_foreign_ids() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "López", "ana@example.com")).await;
    let events = env.events().await;

    for raw in BAD_IDS {
        refused(
            a.update_customer(UpdateCustomerRequest {
                customer: Some(Customer {
                    customer_id: raw.into(),
                    tags: vec!["x".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["tags"]),
            })
            .await,
            "customer.customer_id",
        );
        refused(
            a.delete_customer(DeleteCustomerRequest {
                customer_id: raw.into(),
                etag: String::new(),
            })
            .await,
            "customer_id",
        );
        refused(
            a.undelete_customer(UndeleteCustomerRequest {
                customer_id: raw.into(),
                etag: String::new(),
            })
            .await,
            "customer_id",
        );
    }
    // Unknown in the tenant, and the other tenant's customer: NOT_FOUND,
    // exactly alike, never the customer.
    for (mut client, id) in [
        (a.clone(), Uuid::new_v4().to_string()),
        (b.clone(), ana.customer_id.clone()),
        (b.clone(), ana.customer_id.to_uppercase()),
    ] {
        failed(
            client
                .update_customer(UpdateCustomerRequest {
                    customer: Some(Customer {
                        customer_id: id.clone(),
                        tags: vec!["stolen".into()],
                        ..Default::default()
                    }),
                    update_mask: mask(&["tags"]),
                })
                .await,
            Code::NotFound,
        );
        failed(
            client
                .delete_customer(DeleteCustomerRequest {
                    customer_id: id.clone(),
                    etag: String::new(),
                })
                .await,
            Code::NotFound,
        );
        failed(
            client
                .undelete_customer(UndeleteCustomerRequest {
                    customer_id: id.clone(),
                    etag: String::new(),
                })
                .await,
            Code::NotFound,
        );
        failed(
            get(&mut client, &id).await.map(Response::new),
            Code::NotFound,
        );
    }
    // Stale or forged etags: ABORTED.
    for etag in ["\"999\"", "1 OR 1=1", NUL, "\"1\"\0"] {
        failed(
            a.update_customer(UpdateCustomerRequest {
                customer: Some(Customer {
                    customer_id: ana.customer_id.clone(),
                    etag: etag.into(),
                    tags: vec!["x".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["tags"]),
            })
            .await,
            Code::Aborted,
        );
        failed(
            a.delete_customer(DeleteCustomerRequest {
                customer_id: ana.customer_id.clone(),
                etag: etag.into(),
            })
            .await,
            Code::Aborted,
        );
    }
    unchanged(&mut a, &ana).await;
    assert_eq!(env.events().await, events);
    // The other tenant still sees nothing.
    assert!(everyone(&mut b).await.is_empty());
    // A deleted customer refuses updates with FAILED_PRECONDITION, unchanged.
    let deleted = a
        .delete_customer(DeleteCustomerRequest {
            customer_id: ana.customer_id.clone(),
            etag: ana.etag.clone(),
        })
        .await
        .expect("delete")
        .into_inner()
        .customer
        .expect("customer");
    failed(
        a.update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: ana.customer_id.clone(),
                tags: vec!["x".into()],
                ..Default::default()
            }),
            update_mask: mask(&["tags"]),
        })
        .await,
        Code::FailedPrecondition,
    );
    // Undelete with a stale etag: ABORTED, still deleted.
    failed(
        a.undelete_customer(UndeleteCustomerRequest {
            customer_id: ana.customer_id.clone(),
            etag: ana.etag.clone(),
        })
        .await,
        Code::Aborted,
    );
    unchanged(&mut a, &deleted).await;
}

#[tokio::test]
async fn hostile_text_is_stored_and_returned_byte_for_byte() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;

    let mut p = person(TEXT, TEXT, "o'brien%_+x@example.com");
    p.display_name = TEXT.into();
    p.emails[0].label = HOSTILE32.into();
    p.phones = vec![phone_entry("+34 911 23 45 67", HOSTILE32)];
    p.postal_addresses = vec![PostalAddress {
        label: HOSTILE32.into(),
        address_lines: vec![TEXT.into(), "ß 😀 \\".into()],
        locality: TEXT.into(),
        administrative_area: TEXT.into(),
        postal_code: "'%_\\ß😀-1".into(),
        country_code: String::new(),
    }];
    p.external_identifiers = vec![external("loyalty", TEXT)];
    p.attributes.insert("notes".into(), string_value(TEXT));
    p.attributes.insert(
        "stores".into(),
        list_value(vec![TEXT.into(), String::new(), "😀".into()]),
    );
    // Extreme but valid numbers and instants round-trip too.
    p.attributes.insert("score".into(), number_value(f64::MAX));
    p.attributes
        .insert("seen".into(), time_value(at(YEAR_1, 0)));
    p.estimated_category_wallet = money("EUR", i64::MAX, 999_999_999);
    p.relationship_stage = 5;
    let first = CreateCustomerRequest {
        customer: Some(p),
        request_id: TEXT.into(),
    };
    let created = c
        .create_customer(first.clone())
        .await
        .expect("hostile text is valid text")
        .into_inner()
        .customer
        .expect("customer");
    let got = current(&mut c, &created.customer_id).await;
    assert_eq!(got, created);
    assert_eq!(got.display_name, TEXT);
    let person = match got.details.as_ref() {
        Some(customer::Details::Person(p)) => p.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(person.given_name, TEXT);
    assert_eq!(person.family_name, TEXT);
    assert_eq!(got.emails[0].address, "o'brien%_+x@example.com");
    assert_eq!(got.emails[0].label, HOSTILE32);
    assert_eq!(got.phones[0].label, HOSTILE32);
    let a = &got.postal_addresses[0];
    assert_eq!(a.label, HOSTILE32);
    assert_eq!(a.address_lines, vec![TEXT.to_string(), "ß 😀 \\".into()]);
    assert_eq!(a.locality, TEXT);
    assert_eq!(a.administrative_area, TEXT);
    assert_eq!(a.postal_code, "'%_\\ß😀-1".to_uppercase());
    assert_eq!(got.external_identifiers[0].value, TEXT);
    assert_eq!(got.attributes["notes"], string_value(TEXT));
    assert_eq!(
        got.attributes["stores"],
        list_value(vec![TEXT.into(), String::new(), "😀".into()])
    );
    assert_eq!(got.attributes["score"], number_value(f64::MAX));
    assert_eq!(got.attributes["seen"], time_value(at(YEAR_1, 0)));
    assert_eq!(
        got.estimated_category_wallet,
        money("EUR", i64::MAX, 999_999_999)
    );

    // The hostile request_id is an idempotency key like any other: the same
    // request again is the first result, another request with it is refused.
    let retried = c
        .create_customer(first)
        .await
        .expect("a retry")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(retried, created);
    refused(
        c.create_customer(CreateCustomerRequest {
            customer: Some(person_with("Someone Else")),
            request_id: TEXT.into(),
        })
        .await,
        "request_id",
    );
    assert_eq!(everyone(&mut c).await.len(), 1);

    // An organisation's free text.
    let mut org = organization(TEXT);
    org_mut(&mut org).industry = TEXT.into();
    org_mut(&mut org).website = "https://acme.example/a'b?q=%27;--&x=ß😀".into();
    let acme = create(&mut c, org).await;
    match current(&mut c, &acme.customer_id).await.details {
        Some(customer::Details::Organization(o)) => {
            assert_eq!(o.legal_name, TEXT);
            assert_eq!(o.industry, TEXT);
            assert_eq!(o.website, "https://acme.example/a'b?q=%27;--&x=ß😀");
        }
        other => panic!("{other:?}"),
    }

    // Updating to hostile text keeps it too.
    let updated = c
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                customer_id: created.customer_id.clone(),
                display_name: format!("{TEXT} 2"),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .expect("update")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(updated.display_name, format!("{TEXT} 2"));

    // Filters and search with metacharacters match literally, never broadly.
    let found = c
        .list_customers(ListCustomersRequest {
            attribute_filters: vec![AttributeFilter {
                name: "notes".into(),
                value: Some(string_value(TEXT)),
            }],
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(found.customers.len(), 1);
    assert_eq!(found.customers[0].customer_id, created.customer_id);
    let found = c
        .list_customers(ListCustomersRequest {
            attribute_filters: vec![AttributeFilter {
                name: "stores".into(),
                value: Some(string_value(TEXT)),
            }],
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(found.customers.len(), 1);
    for wildcard in ["%", "_", "%%", "' OR '1'='1", "\\", "*"] {
        let none = c
            .list_customers(ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "notes".into(),
                    value: Some(string_value(wildcard)),
                }],
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(none.customers.is_empty(), "{wildcard:?} matched {none:?}");
        let none = c
            .search_customers(SearchCustomersRequest {
                query: wildcard.into(),
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner();
        assert!(none.results.is_empty(), "{wildcard:?} found {none:?}");
    }
    let hit = c
        .search_customers(SearchCustomersRequest {
            query: TEXT.into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    // The exact external identifier ranks first (score 1, like the identical
    // legal name of the organisation, ties by id).
    let exact: Vec<_> = hit
        .results
        .iter()
        .filter(|h| h.match_kind == SearchMatchKind::ExternalId as i32)
        .map(|h| h.customer.as_ref().expect("customer").customer_id.clone())
        .collect();
    assert_eq!(exact, vec![created.customer_id.clone()]);
    assert!(hit.results.iter().all(|h| h.score <= 1.0 && h.score >= 0.3));
    // ResolveIdentity finds it by the hostile external value.
    let r = resolve(&mut c, vec![external("loyalty", TEXT)]).await;
    match r.result.expect("result") {
        resolve_identity_response::Result::Resolved(r) => {
            assert!(!r.created);
            assert_eq!(
                r.customer.expect("customer").customer_id,
                created.customer_id
            );
        }
        other => panic!("{other:?}"),
    }
    // The tables are all still there.
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        2
    );
}

#[tokio::test]
async fn extreme_numbers_and_instants_round_trip_exactly() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    // Values near the ends of f64 and of the Timestamp range: stored in
    // jsonb, which writes every digit back, they must read back exactly (a
    // customer that cannot be read back would break every list it is in).
    let numbers = [
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        0.1 + 0.2,
        1e300,
        123_456_789.123_456_79,
        9_007_199_254_740_993.0,
    ];
    let instants = [
        at(YEAR_1, 0),
        at(YEAR_9999_END, 999_999_000),
        at(-1, 999_999_000),
        at(0, 0),
    ];
    for (i, n) in numbers.iter().enumerate() {
        let mut p = person(&format!("N{i}"), "", "");
        p.attributes.insert("score".into(), number_value(*n));
        p.attributes
            .insert("seen".into(), time_value(instants[i % instants.len()]));
        let created = create(&mut c, p).await;
        let got = current(&mut c, &created.customer_id).await;
        assert_eq!(got.attributes["score"], number_value(*n), "{n:e}");
        assert_eq!(
            got.attributes["seen"],
            time_value(instants[i % instants.len()])
        );
        // And an equality filter finds exactly it.
        let found = c
            .list_customers(ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "score".into(),
                    value: Some(number_value(*n)),
                }],
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let ids: Vec<_> = found.customers.iter().map(|c| &c.customer_id).collect();
        assert_eq!(ids, vec![&created.customer_id], "{n:e}");
    }
    assert_eq!(everyone(&mut c).await.len(), numbers.len());
}

fn person_with(name: &str) -> Customer {
    let mut p = person(name, "", "");
    p.display_name = name.into();
    p
}

// ---------------------------------------------------------------------------
// GetCustomer and BatchGetCustomers.

#[tokio::test]
async fn get_and_batch_get_refuse_malformed_ids_and_hide_other_tenants() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;

    for raw in BAD_IDS {
        refused(get(&mut a, raw).await.map(Response::new), "customer_id");
    }
    failed(
        get(&mut a, &Uuid::new_v4().to_string())
            .await
            .map(Response::new),
        Code::NotFound,
    );
    failed(
        get(&mut a, &Uuid::nil().to_string())
            .await
            .map(Response::new),
        Code::NotFound,
    );
    let e = failed(
        get(&mut b, &ana.customer_id).await.map(Response::new),
        Code::NotFound,
    );
    assert!(!e.message().contains("Ana"), "{e:?}");

    // BatchGet: no ids, too many, one violation per malformed id.
    refused(
        a.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: vec![],
        })
        .await,
        "customer_ids",
    );
    refused(
        a.batch_get_customers(BatchGetCustomersRequest {
            customer_ids: (0..1001).map(|_| Uuid::new_v4().to_string()).collect(),
        })
        .await,
        "customer_ids",
    );
    let mut ids: Vec<String> = vec![ana.customer_id.clone()];
    ids.extend(BAD_IDS.iter().map(|s| s.to_string()));
    let e = a
        .batch_get_customers(BatchGetCustomersRequest { customer_ids: ids })
        .await
        .expect_err("malformed ids");
    let fields = violations(&e);
    let expected: Vec<String> = (1..=BAD_IDS.len())
        .map(|i| format!("customer_ids[{i}]"))
        .collect();
    assert_eq!(fields, expected);
    // A thousand malformed ids: refused, naming the first ones (the whole
    // list would not fit in the response headers).
    let e = a
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: (0..1000).map(|i| format!("../{i}")).collect(),
        })
        .await
        .expect_err("malformed ids");
    let fields = violations(&e);
    assert!(fields.len() >= 10, "{fields:?}");
    assert_eq!(
        fields[..3],
        ["customer_ids[0]", "customer_ids[1]", "customer_ids[2]"]
    );
    assert!(e.message().contains("more problems"), "{}", e.message());
    // Exactly 1,000 is fine; the other tenant's id is missing, never returned.
    let mut ids: Vec<String> = (0..999).map(|_| Uuid::new_v4().to_string()).collect();
    ids.push(ana.customer_id.clone());
    let r = b
        .batch_get_customers(BatchGetCustomersRequest {
            customer_ids: ids.clone(),
        })
        .await
        .expect("1,000 ids")
        .into_inner();
    assert!(r.customers.is_empty());
    assert_eq!(r.missing_customer_ids.len(), 1000);
    assert!(r.merged_customer_ids.is_empty());
    let r = a
        .batch_get_customers(BatchGetCustomersRequest { customer_ids: ids })
        .await
        .expect("1,000 ids")
        .into_inner();
    assert_eq!(r.customers, vec![ana]);
}

// ---------------------------------------------------------------------------
// ListCustomers and SearchCustomers.

#[tokio::test]
async fn list_customers_refuses_bad_filters_sizes_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    define_all(&mut a).await;
    for i in 0..3 {
        create(&mut a, person(&format!("P{i}"), "", &format!("p{i}@x.com"))).await;
    }
    create(&mut b, person("Other", "", "other@x.com")).await;
    create(&mut b, person("Other", "", "other2@x.com")).await;

    let cases: Vec<(ListCustomersRequest, &str)> = vec![
        (
            ListCustomersRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListCustomersRequest {
                page_size: i32::MIN,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListCustomersRequest {
                kind: 999,
                ..Default::default()
            },
            "kind",
        ),
        (
            ListCustomersRequest {
                kind: -1,
                ..Default::default()
            },
            "kind",
        ),
        (
            ListCustomersRequest {
                relationship_stage: 999,
                ..Default::default()
            },
            "relationship_stage",
        ),
        (
            ListCustomersRequest {
                order_by: 999,
                ..Default::default()
            },
            "order_by",
        ),
        (
            ListCustomersRequest {
                order_by: -1,
                ..Default::default()
            },
            "order_by",
        ),
        (
            ListCustomersRequest {
                tags: (0..11).map(|i| format!("t{i}")).collect(),
                ..Default::default()
            },
            "tags",
        ),
        (
            ListCustomersRequest {
                tags: vec![NUL.into()],
                ..Default::default()
            },
            "tags[0]",
        ),
        (
            ListCustomersRequest {
                tags: vec![String::new()],
                ..Default::default()
            },
            "tags[0]",
        ),
        (
            ListCustomersRequest {
                tags: vec![TEXT.into()],
                ..Default::default()
            },
            "tags[0]",
        ),
        (
            ListCustomersRequest {
                country_code: NUL.into(),
                ..Default::default()
            },
            "country_code",
        ),
        (
            ListCustomersRequest {
                country_code: "XX".into(),
                ..Default::default()
            },
            "country_code",
        ),
        (
            ListCustomersRequest {
                owner_id: NUL.into(),
                ..Default::default()
            },
            "owner_id",
        ),
        (
            ListCustomersRequest {
                owner_id: "1 OR 1=1".into(),
                ..Default::default()
            },
            "owner_id",
        ),
        (
            ListCustomersRequest {
                attribute_filters: (0..11)
                    .map(|_| AttributeFilter {
                        name: "notes".into(),
                        value: Some(string_value("x")),
                    })
                    .collect(),
                ..Default::default()
            },
            "attribute_filters",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "no\0tes".into(),
                    value: Some(string_value("x")),
                }],
                ..Default::default()
            },
            "attribute_filters[0].name",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "notes".into(),
                    value: None,
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "notes".into(),
                    value: Some(string_value(NUL)),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "stores".into(),
                    value: Some(string_value(NUL)),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "score".into(),
                    value: Some(number_value(f64::NAN)),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "score".into(),
                    value: Some(number_value(f64::NEG_INFINITY)),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "seen".into(),
                    value: Some(time_value(at(0, -1))),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
        (
            ListCustomersRequest {
                attribute_filters: vec![AttributeFilter {
                    name: "vip".into(),
                    value: Some(string_value("true")),
                }],
                ..Default::default()
            },
            "attribute_filters[0].value",
        ),
    ];
    for (req, field) in cases {
        refused(a.list_customers(req).await, field);
    }
    for t in invalid_times() {
        refused(
            a.list_customers(ListCustomersRequest {
                updated_since: Some(t),
                ..Default::default()
            })
            .await,
            "updated_since",
        );
    }
    // The extremes of the range are valid: everything since year 1, nothing
    // since the end of year 9999; a huge page size is capped.
    let all = a
        .list_customers(ListCustomersRequest {
            updated_since: Some(at(YEAR_1, 0)),
            page_size: i32::MAX,
            ..Default::default()
        })
        .await
        .expect("year 1")
        .into_inner();
    assert_eq!(all.customers.len(), 3);
    let none = a
        .list_customers(ListCustomersRequest {
            updated_since: Some(at(YEAR_9999_END, 999_999_999)),
            ..Default::default()
        })
        .await
        .expect("year 9999")
        .into_inner();
    assert!(none.customers.is_empty());

    // Page tokens: forged, tampered, from another tenant, another method,
    // other filters.
    let first = a
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    let genuine = first.next_page_token.clone();
    let foreign = b
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let other_method = a
        .list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    tokens.push(other_method);
    for token in tokens {
        refused(
            a.list_customers(ListCustomersRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await,
            "page_token",
        );
    }
    for other_filters in [
        ListCustomersRequest {
            show_deleted: true,
            ..Default::default()
        },
        ListCustomersRequest {
            order_by: CustomerOrder::CreateTimeDesc as i32,
            ..Default::default()
        },
        ListCustomersRequest {
            kind: CustomerKind::Person as i32,
            ..Default::default()
        },
    ] {
        refused(
            a.list_customers(ListCustomersRequest {
                page_size: 1,
                page_token: genuine.clone(),
                ..other_filters
            })
            .await,
            "page_token",
        );
    }
    // The genuine token still works, with another page size even.
    let rest = a
        .list_customers(ListCustomersRequest {
            page_size: 10,
            page_token: genuine,
            ..Default::default()
        })
        .await
        .expect("genuine token")
        .into_inner();
    assert_eq!(rest.customers.len(), 2);
}

#[tokio::test]
async fn search_customers_refuses_bad_queries_regions_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    for i in 0..3 {
        create(
            &mut a,
            person("Ana", &format!("López {i}"), &format!("a{i}@x.com")),
        )
        .await;
        create(
            &mut b,
            person("Ana", &format!("López {i}"), &format!("a{i}@x.com")),
        )
        .await;
    }
    let search = |query: &str| SearchCustomersRequest {
        query: query.into(),
        ..Default::default()
    };
    for q in ["", "   ", "\t\n", NUL, "Ana\0López"] {
        refused(a.search_customers(search(q)).await, "query");
    }
    refused(a.search_customers(search(&"ß".repeat(201))).await, "query");
    a.search_customers(search(&"ß".repeat(200)))
        .await
        .expect("200 characters are fine");
    for region in ["XX", NUL, "E\0", "1 OR 1=1", "../x"] {
        refused(
            a.search_customers(SearchCustomersRequest {
                query: "ana".into(),
                default_country_code: region.into(),
                ..Default::default()
            })
            .await,
            "default_country_code",
        );
    }
    for kind in [999, -1, 3] {
        refused(
            a.search_customers(SearchCustomersRequest {
                query: "ana".into(),
                kind,
                ..Default::default()
            })
            .await,
            "kind",
        );
    }
    refused(
        a.search_customers(SearchCustomersRequest {
            query: "ana".into(),
            page_size: -5,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    // A phone-looking query that cannot be a phone is just text.
    a.search_customers(SearchCustomersRequest {
        query: "+99999999999999999999999999".into(),
        default_country_code: "ES".into(),
        page_size: i32::MAX,
        ..Default::default()
    })
    .await
    .expect("not a phone, not an error");

    let page = |c: &mut Client, token: String| {
        let mut c = c.clone();
        async move {
            c.search_customers(SearchCustomersRequest {
                query: "Ana López".into(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
        }
    };
    let genuine = page(&mut a, String::new())
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let foreign = page(&mut b, String::new())
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let list_token = a
        .list_customers(ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    tokens.push(list_token);
    for token in tokens {
        refused(page(&mut a, token).await, "page_token");
    }
    // Another query with a genuine token.
    refused(
        a.search_customers(SearchCustomersRequest {
            query: "Ana Lopez".into(),
            page_size: 1,
            page_token: genuine.clone(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_eq!(
        page(&mut a, genuine)
            .await
            .expect("genuine")
            .into_inner()
            .results
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------
// ResolveIdentity and FindDuplicates.

#[tokio::test]
async fn resolve_identity_refuses_bad_identifiers_and_traits_and_creates_nothing() {
    let env = start().await;
    let mut c = env.client.clone();
    let req = |identifiers: Vec<Identifier>, traits: Option<Customer>| ResolveIdentityRequest {
        identifiers,
        traits,
        lookup_only: false,
    };
    refused(c.resolve_identity(req(vec![], None)).await, "identifiers");
    refused(
        c.resolve_identity(req(
            (0..21).map(|i| email(&format!("e{i}@x.com"))).collect(),
            None,
        ))
        .await,
        "identifiers",
    );
    let bad: Vec<(Identifier, &str)> = vec![
        (email(""), "identifiers[0].value"),
        (email(NUL), "identifiers[0].value"),
        (email("a\0b@x.com"), "identifiers[0].value"),
        (email("1 OR 1=1"), "identifiers[0].value"),
        (
            email(&format!("{}@x.com", "a".repeat(250))),
            "identifiers[0].value",
        ),
        (phone("+34 911\0 23 45 67"), "identifiers[0].value"),
        (phone("911 23 45 67"), "identifiers[0].value"),
        (phone("+1-800-FLOWERS"), "identifiers[0].value"),
        (phone(&"9".repeat(100)), "identifiers[0].value"),
        (external("", "L-1"), "identifiers[0].system"),
        (external("Loyalty", "L-1"), "identifiers[0].system"),
        (external("loy\0alty", "L-1"), "identifiers[0].system"),
        (external("loyalty", ""), "identifiers[0].value"),
        (external("loyalty", NUL), "identifiers[0].value"),
        (
            external("loyalty", &"x".repeat(257)),
            "identifiers[0].value",
        ),
        (
            Identifier {
                kind: 0,
                system: String::new(),
                value: "ana@x.com".into(),
            },
            "identifiers[0].kind",
        ),
        (
            Identifier {
                kind: 999,
                system: String::new(),
                value: "ana@x.com".into(),
            },
            "identifiers[0].kind",
        ),
    ];
    for (id, field) in bad {
        refused(c.resolve_identity(req(vec![id], None)).await, field);
    }
    // Traits: identifiers belong in `identifiers`; every customer rule holds.
    let ok = vec![email("ana@x.com")];
    let mut traits: Vec<(Customer, &str)> = vec![
        (person("Ana", "", "ana@x.com"), "traits.emails"),
        (
            Customer {
                phones: vec![phone_entry("+34 911 23 45 67", "")],
                ..Default::default()
            },
            "traits.phones",
        ),
        (
            Customer {
                external_identifiers: vec![external("loyalty", "L-1")],
                ..Default::default()
            },
            "traits.external_identifiers",
        ),
        (
            Customer {
                kind: 999,
                ..Default::default()
            },
            "traits.kind",
        ),
        (
            Customer {
                kind: -1,
                ..Default::default()
            },
            "traits.kind",
        ),
        (
            Customer {
                display_name: NUL.into(),
                ..Default::default()
            },
            "traits.display_name",
        ),
        (
            Customer {
                country_code: "XX".into(),
                ..Default::default()
            },
            "traits.country_code",
        ),
        (
            Customer {
                relationship_stage: 999,
                ..Default::default()
            },
            "traits.relationship_stage",
        ),
        (
            Customer {
                attributes: HashMap::from([("nope".to_string(), string_value("x"))]),
                ..Default::default()
            },
            "traits.attributes[nope]",
        ),
    ];
    let mut org = Customer {
        kind: CustomerKind::Person as i32,
        ..Default::default()
    };
    org_mut(&mut org).legal_name = "Acme".into();
    traits.push((org, "traits.organization"));
    let mut p = Customer::default();
    person_mut(&mut p).given_name = "x".repeat(201);
    traits.push((p, "traits.person.given_name"));
    for (t, field) in traits {
        refused(c.resolve_identity(req(ok.clone(), Some(t))).await, field);
    }
    // A pure lookup of unknown identifiers: NOT_FOUND.
    failed(
        c.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("nobody@x.com"), external("loyalty", TEXT)],
            traits: None,
            lookup_only: true,
        })
        .await,
        Code::NotFound,
    );
    assert!(everyone(&mut c).await.is_empty(), "nothing was created");
    assert_eq!(env.events().await, 0);

    // Another tenant's customer is not found by its identifiers.
    let ana = create(&mut c, person("Ana", "", "ana@x.com")).await;
    let mut b = env.client_for(Some(Uuid::new_v4()));
    failed(
        b.resolve_identity(ResolveIdentityRequest {
            identifiers: vec![email("ana@x.com")],
            traits: None,
            lookup_only: true,
        })
        .await,
        Code::NotFound,
    );
    unchanged(&mut c, &ana).await;
}

#[tokio::test]
async fn find_duplicates_refuses_bad_ids_scores_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let mut ids = Vec::new();
    for i in 0..3 {
        // Sub-addresses of one mailbox: the same e-mail key, likely duplicates.
        let p = person("Ana", "López García", &format!("ana+{i}@x.com"));
        ids.push(create(&mut a, p.clone()).await.customer_id);
        create(&mut b, p).await;
    }
    for raw in ["not-a-uuid", "../x", "1 OR 1=1", "\0"] {
        refused(
            a.find_duplicates(FindDuplicatesRequest {
                customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "customer_id",
        );
    }
    failed(
        a.find_duplicates(FindDuplicatesRequest {
            customer_id: Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.find_duplicates(FindDuplicatesRequest {
            customer_id: ids[0].clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    for score in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.1,
        1.000_001,
        f64::MAX,
        f64::MIN,
    ] {
        refused(
            a.find_duplicates(FindDuplicatesRequest {
                min_score: score,
                ..Default::default()
            })
            .await,
            "min_score",
        );
    }
    refused(
        a.find_duplicates(FindDuplicatesRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    let page = |c: &mut Client, token: String| {
        let mut c = c.clone();
        async move {
            c.find_duplicates(FindDuplicatesRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
        }
    };
    let first = page(&mut a, String::new())
        .await
        .expect("duplicates")
        .into_inner();
    assert_eq!(first.candidates.len(), 1, "three similar customers");
    let genuine = first.next_page_token;
    let foreign = page(&mut b, String::new())
        .await
        .expect("duplicates")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(page(&mut a, token).await, "page_token");
    }
    refused(
        a.find_duplicates(FindDuplicatesRequest {
            min_score: 0.9,
            page_size: 1,
            page_token: genuine.clone(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    assert_eq!(
        page(&mut a, genuine)
            .await
            .expect("genuine")
            .into_inner()
            .candidates
            .len(),
        1
    );
    // Valid extremes: 1 (only exact pairs) and a huge page.
    a.find_duplicates(FindDuplicatesRequest {
        min_score: 1.0,
        page_size: i32::MAX,
        ..Default::default()
    })
    .await
    .expect("min_score 1 is valid");
}

// ---------------------------------------------------------------------------
// MergeCustomers, UnmergeCustomers, MarkNotDuplicate, EraseCustomer.

#[tokio::test]
async fn merge_unmerge_and_marks_refuse_bad_unknown_and_foreign_ids() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let ana2 = create(&mut a, person("Ana", "", "ana2@x.com")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    let events = env.events().await;
    let good = ana.customer_id.clone();
    let good2 = ana2.customer_id.clone();

    for raw in BAD_IDS {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: raw.into(),
                merged_customer_id: good2.clone(),
                ..Default::default()
            })
            .await,
            "survivor_customer_id",
        );
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.unmerge_customers(UnmergeCustomersRequest {
                merged_customer_id: raw.into(),
                request_id: String::new(),
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: raw.into(),
                second_customer_id: good2.clone(),
            })
            .await,
            "first_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: good.clone(),
                second_customer_id: raw.into(),
            })
            .await,
            "second_customer_id",
        );
    }
    // The same id twice (also written differently).
    for (x, y) in [
        (good.clone(), good.clone()),
        (good.clone(), good.to_uppercase()),
    ] {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: x.clone(),
                merged_customer_id: y.clone(),
                ..Default::default()
            })
            .await,
            "merged_customer_id",
        );
        refused(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: x,
                second_customer_id: y,
            })
            .await,
            "second_customer_id",
        );
    }
    for rid in ["x".repeat(65), NUL.into()] {
        refused(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: good2.clone(),
                request_id: rid.clone(),
                ..Default::default()
            })
            .await,
            "request_id",
        );
        refused(
            a.unmerge_customers(UnmergeCustomersRequest {
                merged_customer_id: good2.clone(),
                request_id: rid,
            })
            .await,
            "request_id",
        );
    }
    // Unknown ids, and ids of another tenant, on either side: NOT_FOUND.
    let unknown = Uuid::new_v4().to_string();
    for (x, y) in [
        (good.clone(), unknown.clone()),
        (unknown.clone(), good.clone()),
        (good.clone(), bea.customer_id.clone()),
        (bea.customer_id.clone(), good.clone()),
    ] {
        failed(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: x.clone(),
                merged_customer_id: y.clone(),
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
        failed(
            a.mark_not_duplicate(MarkNotDuplicateRequest {
                first_customer_id: x,
                second_customer_id: y,
            })
            .await,
            Code::NotFound,
        );
    }
    failed(
        b.merge_customers(MergeCustomersRequest {
            survivor_customer_id: good.clone(),
            merged_customer_id: good2.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.mark_not_duplicate(MarkNotDuplicateRequest {
            first_customer_id: good.clone(),
            second_customer_id: good2.clone(),
        })
        .await,
        Code::NotFound,
    );
    for (client, id) in [(&mut a, unknown.clone()), (&mut b, good2.clone())] {
        failed(
            client
                .unmerge_customers(UnmergeCustomersRequest {
                    merged_customer_id: id,
                    request_id: String::new(),
                })
                .await,
            Code::NotFound,
        );
    }
    // Not merged: FAILED_PRECONDITION. A stale survivor etag: ABORTED.
    failed(
        a.unmerge_customers(UnmergeCustomersRequest {
            merged_customer_id: good2.clone(),
            request_id: String::new(),
        })
        .await,
        Code::FailedPrecondition,
    );
    for etag in ["\"999\"", NUL, "1 OR 1=1"] {
        failed(
            a.merge_customers(MergeCustomersRequest {
                survivor_customer_id: good.clone(),
                merged_customer_id: good2.clone(),
                survivor_etag: etag.into(),
                request_id: String::new(),
            })
            .await,
            Code::Aborted,
        );
    }
    unchanged(&mut a, &ana).await;
    unchanged(&mut a, &ana2).await;
    unchanged(&mut b, &bea).await;
    assert_eq!(env.events().await, events);
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.not_duplicates")
            .await,
        0
    );
    assert_eq!(env.scalar("SELECT count(*) FROM profile.merges").await, 0);
}

#[tokio::test]
async fn erase_refuses_bad_ids_references_and_other_tenants() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let events = env.events().await;
    for raw in BAD_IDS {
        refused(
            a.erase_customer(EraseCustomerRequest {
                customer_id: raw.into(),
                request_reference: String::new(),
            })
            .await,
            "customer_id",
        );
    }
    for reference in ["x".repeat(129), NUL.into(), "a\nb".into()] {
        refused(
            a.erase_customer(EraseCustomerRequest {
                customer_id: ana.customer_id.clone(),
                request_reference: reference,
            })
            .await,
            "request_reference",
        );
    }
    failed(
        a.erase_customer(EraseCustomerRequest {
            customer_id: Uuid::new_v4().to_string(),
            request_reference: String::new(),
        })
        .await,
        Code::NotFound,
    );
    failed(
        b.erase_customer(EraseCustomerRequest {
            customer_id: ana.customer_id.clone(),
            request_reference: TEXT.into(),
        })
        .await,
        Code::NotFound,
    );
    unchanged(&mut a, &ana).await;
    assert_eq!(env.events().await, events);

    // A hostile reference is kept byte for byte with the tombstone.
    a.erase_customer(EraseCustomerRequest {
        customer_id: ana.customer_id.clone(),
        request_reference: TEXT.into(),
    })
    .await
    .expect("erase");
    let mut db = env.db().await;
    let kept: Option<String> =
        sqlx::query_scalar("SELECT erase_reference FROM profile.customers WHERE customer_id = $1")
            .bind(Uuid::parse_str(&ana.customer_id).expect("uuid"))
            .fetch_one(&mut db)
            .await
            .expect("tombstone");
    assert_eq!(kept.as_deref(), Some(TEXT));
    failed(
        get(&mut a, &ana.customer_id).await.map(Response::new),
        Code::NotFound,
    );
}

// ---------------------------------------------------------------------------
// Contact links.

fn link(person: &str, org: &str, role: i32) -> ContactLink {
    ContactLink {
        person_customer_id: person.into(),
        organization_customer_id: org.into(),
        role,
        ..Default::default()
    }
}

async fn contacts_of(c: &mut Client, org: &str) -> Vec<ContactLink> {
    c.list_contacts(ListContactsRequest {
        organization_customer_id: org.into(),
        include_ended: true,
        ..Default::default()
    })
    .await
    .expect("contacts")
    .into_inner()
    .links
}

#[tokio::test]
async fn link_and_unlink_contact_refuse_bad_input_and_change_nothing() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let acme = create(&mut a, organization("Acme")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    let globex = create(&mut b, organization("Globex")).await;
    let buyer = ContactRole::Buyer as i32;
    let mut original = link(&ana.customer_id, &acme.customer_id, buyer);
    original.job_title = TEXT.into();
    original.start_date = date(1, 1, 1);
    original.end_date = date(9999, 12, 31);
    let stored = a
        .link_contact(LinkContactRequest {
            link: Some(original.clone()),
        })
        .await
        .expect("hostile title and extreme dates are valid")
        .into_inner()
        .link
        .expect("link");
    assert_eq!(stored.job_title, TEXT);
    assert_eq!(stored.start_date, date(1, 1, 1));
    assert_eq!(stored.end_date, date(9999, 12, 31));
    let events = env.events().await;
    let (p, o) = (ana.customer_id.clone(), acme.customer_id.clone());
    let ana_linked = current(&mut a, &p).await;
    let acme_linked = current(&mut a, &o).await;

    refused(
        a.link_contact(LinkContactRequest { link: None }).await,
        "link",
    );
    let mut cases: Vec<(ContactLink, &str)> = Vec::new();
    for raw in BAD_IDS {
        cases.push((link(raw, &o, buyer), "link.person_customer_id"));
        cases.push((link(&p, raw, buyer), "link.organization_customer_id"));
    }
    for role in [0, 7, 999, -1] {
        cases.push((link(&p, &o, role), "link.role"));
    }
    let with = |f: &dyn Fn(&mut ContactLink)| {
        let mut l = original.clone();
        f(&mut l);
        l
    };
    cases.push((with(&|l| l.job_title = "x".repeat(201)), "link.job_title"));
    cases.push((with(&|l| l.job_title = NUL.into()), "link.job_title"));
    for bad in [
        date(0, 1, 1),
        date(10_000, 1, 1),
        date(-1, 1, 1),
        date(2024, 13, 1),
        date(2023, 2, 29),
        date(2024, 1, 0),
        date(i32::MAX, i32::MIN, i32::MAX),
    ] {
        cases.push((with(&|l| l.start_date = bad), "link.start_date"));
        cases.push((with(&|l| l.end_date = bad), "link.end_date"));
    }
    cases.push((
        with(&|l| {
            l.start_date = date(2024, 1, 2);
            l.end_date = date(2024, 1, 1);
        }),
        "link.end_date",
    ));
    for (l, field) in cases {
        refused(
            a.link_contact(LinkContactRequest { link: Some(l) }).await,
            field,
        );
    }
    // Unknown customers and the other tenant's customers: NOT_FOUND.
    let unknown = Uuid::new_v4().to_string();
    for l in [
        link(&unknown, &o, buyer),
        link(&p, &unknown, buyer),
        link(&bea.customer_id, &o, buyer),
        link(&p, &globex.customer_id, buyer),
    ] {
        failed(
            a.link_contact(LinkContactRequest { link: Some(l) }).await,
            Code::NotFound,
        );
    }
    failed(
        b.link_contact(LinkContactRequest {
            link: Some(original.clone()),
        })
        .await,
        Code::NotFound,
    );
    // Kinds the wrong way round: FAILED_PRECONDITION.
    failed(
        a.link_contact(LinkContactRequest {
            link: Some(link(&o, &p, buyer)),
        })
        .await,
        Code::FailedPrecondition,
    );

    // UnlinkContact.
    for raw in BAD_IDS {
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: raw.into(),
                organization_customer_id: o.clone(),
                role: buyer,
            })
            .await,
            "person_customer_id",
        );
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: p.clone(),
                organization_customer_id: raw.into(),
                role: buyer,
            })
            .await,
            "organization_customer_id",
        );
    }
    for role in [0, 7, 999, -1] {
        refused(
            a.unlink_contact(UnlinkContactRequest {
                person_customer_id: p.clone(),
                organization_customer_id: o.clone(),
                role,
            })
            .await,
            "role",
        );
    }
    for (mut client, person_id, org_id, role) in [
        (a.clone(), p.clone(), o.clone(), ContactRole::User as i32),
        (a.clone(), unknown.clone(), o.clone(), buyer),
        (a.clone(), p.clone(), unknown.clone(), buyer),
        (b.clone(), p.clone(), o.clone(), buyer),
    ] {
        failed(
            client
                .unlink_contact(UnlinkContactRequest {
                    person_customer_id: person_id,
                    organization_customer_id: org_id,
                    role,
                })
                .await,
            Code::NotFound,
        );
    }
    assert_eq!(contacts_of(&mut a, &o).await, vec![stored]);
    assert_eq!(env.events().await, events);
    unchanged(&mut a, &ana_linked).await;
    unchanged(&mut a, &acme_linked).await;
}

#[tokio::test]
async fn list_contacts_and_organizations_refuse_bad_ids_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let acme = create(&mut a, organization("Acme")).await;
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let globex = create(&mut b, organization("Globex")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    for role in [ContactRole::Buyer, ContactRole::User, ContactRole::Other] {
        a.link_contact(LinkContactRequest {
            link: Some(link(&ana.customer_id, &acme.customer_id, role as i32)),
        })
        .await
        .expect("link");
        b.link_contact(LinkContactRequest {
            link: Some(link(&bea.customer_id, &globex.customer_id, role as i32)),
        })
        .await
        .expect("link");
    }
    let contacts = |org: &str, role: i32, size: i32, token: String| ListContactsRequest {
        organization_customer_id: org.into(),
        role,
        include_ended: false,
        page_size: size,
        page_token: token,
    };
    let orgs = |person: &str, size: i32, token: String| ListOrganizationsRequest {
        person_customer_id: person.into(),
        include_ended: false,
        page_size: size,
        page_token: token,
    };
    for raw in BAD_IDS {
        refused(
            a.list_contacts(contacts(raw, 0, 0, String::new())).await,
            "organization_customer_id",
        );
        refused(
            a.list_organizations(orgs(raw, 0, String::new())).await,
            "person_customer_id",
        );
    }
    for role in [7, 999, -1] {
        refused(
            a.list_contacts(contacts(&acme.customer_id, role, 0, String::new()))
                .await,
            "role",
        );
    }
    refused(
        a.list_contacts(contacts(&acme.customer_id, 0, -1, String::new()))
            .await,
        "page_size",
    );
    refused(
        a.list_organizations(orgs(&ana.customer_id, i32::MIN, String::new()))
            .await,
        "page_size",
    );
    // Unknown and foreign ids: NOT_FOUND; the wrong kind: FAILED_PRECONDITION.
    for id in [Uuid::new_v4().to_string(), globex.customer_id.clone()] {
        failed(
            a.list_contacts(contacts(&id, 0, 0, String::new())).await,
            Code::NotFound,
        );
    }
    for id in [Uuid::new_v4().to_string(), bea.customer_id.clone()] {
        failed(
            a.list_organizations(orgs(&id, 0, String::new())).await,
            Code::NotFound,
        );
    }
    failed(
        a.list_contacts(contacts(&ana.customer_id, 0, 0, String::new()))
            .await,
        Code::FailedPrecondition,
    );
    failed(
        a.list_organizations(orgs(&acme.customer_id, 0, String::new()))
            .await,
        Code::FailedPrecondition,
    );

    // Tokens.
    let genuine = a
        .list_contacts(contacts(&acme.customer_id, 0, 1, String::new()))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let foreign = b
        .list_contacts(contacts(&globex.customer_id, 0, 1, String::new()))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let orgs_token = a
        .list_organizations(orgs(&ana.customer_id, 1, String::new()))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign.clone());
    tokens.push(orgs_token.clone());
    for token in tokens {
        refused(
            a.list_contacts(contacts(&acme.customer_id, 0, 1, token))
                .await,
            "page_token",
        );
    }
    refused(
        a.list_contacts(contacts(
            &acme.customer_id,
            ContactRole::Buyer as i32,
            1,
            genuine.clone(),
        ))
        .await,
        "page_token",
    );
    let mut tokens = forged_tokens(&orgs_token);
    tokens.push(genuine.clone());
    tokens.push(foreign);
    for token in tokens {
        refused(
            a.list_organizations(orgs(&ana.customer_id, 1, token)).await,
            "page_token",
        );
    }
    assert_eq!(
        a.list_contacts(contacts(&acme.customer_id, 0, i32::MAX, genuine))
            .await
            .expect("genuine")
            .into_inner()
            .links
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------
// Consents.

fn consent_request(customer: &str, status: ConsentStatus) -> SetConsentRequest {
    SetConsentRequest {
        customer_id: customer.into(),
        channel: ConsentChannel::Email as i32,
        purpose: ConsentPurpose::Marketing as i32,
        status: status as i32,
        source: "web-signup-form".into(),
        evidence: String::new(),
        effective_time: None,
        request_id: String::new(),
    }
}

async fn history(c: &mut Client, customer: &str) -> Vec<ConsentRecord> {
    c.list_consent_history(ListConsentHistoryRequest {
        customer_id: customer.into(),
        page_size: 1000,
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .records
}

#[tokio::test]
async fn set_consent_refuses_bad_input_and_appends_nothing() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let id = ana.customer_id.clone();
    // A hostile source and evidence are recorded byte for byte; an effective
    // time in year 1 is a valid (if odd) past.
    let mut first = consent_request(&id, ConsentStatus::Granted);
    first.source = TEXT.into();
    first.evidence = TEXT.into();
    first.effective_time = Some(at(YEAR_1, 0));
    let record = a
        .set_consent(first)
        .await
        .expect("hostile text is valid")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(record.source, TEXT);
    assert_eq!(record.evidence, TEXT);
    assert_eq!(record.effective_time, Some(at(YEAR_1, 0)));
    let ana = current(&mut a, &id).await;
    let before = history(&mut a, &id).await;
    assert_eq!(before, vec![record]);
    let events = env.events().await;

    let with = |f: &dyn Fn(&mut SetConsentRequest)| {
        let mut r = consent_request(&id, ConsentStatus::Denied);
        f(&mut r);
        r
    };
    let mut cases: Vec<(SetConsentRequest, &str)> = Vec::new();
    for raw in BAD_IDS {
        cases.push((with(&|r| r.customer_id = raw.into()), "customer_id"));
    }
    for bad in [0, 7, 999, -1] {
        cases.push((with(&|r| r.channel = bad), "channel"));
    }
    for bad in [0, 5, 999, -1] {
        cases.push((with(&|r| r.purpose = bad), "purpose"));
    }
    for bad in [0, 4, 999, -1] {
        cases.push((with(&|r| r.status = bad), "status"));
    }
    for bad in [
        String::new(),
        "   ".into(),
        "x".repeat(129),
        NUL.into(),
        "rapport:merge".into(),
        "rapport:".into(),
    ] {
        cases.push((with(&|r| r.source = bad.clone()), "source"));
    }
    cases.push((with(&|r| r.evidence = "x".repeat(1001)), "evidence"));
    cases.push((with(&|r| r.evidence = NUL.into()), "evidence"));
    let mut times = invalid_times();
    let soon = now_ts();
    times.push(at(soon.seconds + 3600, 0));
    times.push(at(YEAR_9999_END, 999_999_999));
    for t in times {
        cases.push((with(&|r| r.effective_time = Some(t)), "effective_time"));
    }
    for rid in ["x".repeat(65), NUL.to_string()] {
        cases.push((with(&|r| r.request_id = rid.clone()), "request_id"));
    }
    for (r, field) in cases {
        refused(a.set_consent(r).await, field);
    }
    // A request_id reused for another decision.
    let mut keyed = consent_request(&id, ConsentStatus::Withdrawn);
    keyed.request_id = "k-1".into();
    a.set_consent(keyed.clone()).await.expect("first use");
    let after_keyed = history(&mut a, &id).await;
    let events_keyed = env.events().await;
    keyed.status = ConsentStatus::Granted as i32;
    refused(a.set_consent(keyed).await, "request_id");
    assert_eq!(history(&mut a, &id).await, after_keyed);
    assert_eq!(env.events().await, events_keyed);

    // Unknown and foreign customers: NOT_FOUND.
    failed(
        a.set_consent(consent_request(
            &Uuid::new_v4().to_string(),
            ConsentStatus::Granted,
        ))
        .await,
        Code::NotFound,
    );
    failed(
        b.set_consent(consent_request(&id, ConsentStatus::Withdrawn))
            .await,
        Code::NotFound,
    );
    assert_eq!(history(&mut a, &id).await, after_keyed);
    assert_eq!(history(&mut a, &id).await.len(), before.len() + 1);
    assert_eq!(env.events().await, events_keyed);
    assert!(events_keyed > events);
    let now = current(&mut a, &id).await;
    assert_eq!(now.consents.len(), 1);
    assert_ne!(now.etag, ana.etag, "the accepted withdrawal changed it");
}

#[tokio::test]
async fn check_consent_and_history_refuse_bad_input_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let ana = create(&mut a, person("Ana", "", "ana@x.com")).await;
    let bea = create(&mut b, person("Bea", "", "bea@x.com")).await;
    for (c, id) in [(&mut a, &ana.customer_id), (&mut b, &bea.customer_id)] {
        for status in [
            ConsentStatus::Granted,
            ConsentStatus::Withdrawn,
            ConsentStatus::Granted,
        ] {
            c.set_consent(consent_request(id, status))
                .await
                .expect("consent");
        }
    }
    let check = |id: &str, channel: i32, purpose: i32| CheckConsentRequest {
        customer_id: id.into(),
        channel,
        purpose,
    };
    let (email_ch, marketing) = (
        ConsentChannel::Email as i32,
        ConsentPurpose::Marketing as i32,
    );
    for raw in BAD_IDS {
        refused(
            a.check_consent(check(raw, email_ch, marketing)).await,
            "customer_id",
        );
        refused(
            a.list_consent_history(ListConsentHistoryRequest {
                customer_id: raw.into(),
                ..Default::default()
            })
            .await,
            "customer_id",
        );
    }
    for bad in [0, 7, 999, -1] {
        refused(
            a.check_consent(check(&ana.customer_id, bad, marketing))
                .await,
            "channel",
        );
    }
    for bad in [0, 5, 999, -1] {
        refused(
            a.check_consent(check(&ana.customer_id, email_ch, bad))
                .await,
            "purpose",
        );
    }
    for (mut c, id) in [
        (a.clone(), Uuid::new_v4().to_string()),
        (a.clone(), bea.customer_id.clone()),
        (b.clone(), ana.customer_id.clone()),
    ] {
        failed(
            c.check_consent(check(&id, email_ch, marketing)).await,
            Code::NotFound,
        );
        failed(
            c.list_consent_history(ListConsentHistoryRequest {
                customer_id: id,
                ..Default::default()
            })
            .await,
            Code::NotFound,
        );
    }
    let hist = |id: &str, channel: i32, purpose: i32, size: i32, token: String| {
        ListConsentHistoryRequest {
            customer_id: id.into(),
            channel,
            purpose,
            page_size: size,
            page_token: token,
        }
    };
    for (channel, purpose, field) in [
        (999, 0, "channel"),
        (-1, 0, "channel"),
        (0, 999, "purpose"),
        (0, -1, "purpose"),
    ] {
        refused(
            a.list_consent_history(hist(&ana.customer_id, channel, purpose, 0, String::new()))
                .await,
            field,
        );
    }
    refused(
        a.list_consent_history(hist(&ana.customer_id, 0, 0, -1, String::new()))
            .await,
        "page_size",
    );
    let genuine = a
        .list_consent_history(hist(&ana.customer_id, 0, 0, 1, String::new()))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let foreign = b
        .list_consent_history(hist(&bea.customer_id, 0, 0, 1, String::new()))
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(
            a.list_consent_history(hist(&ana.customer_id, 0, 0, 1, token))
                .await,
            "page_token",
        );
    }
    refused(
        a.list_consent_history(hist(&ana.customer_id, email_ch, 0, 1, genuine.clone()))
            .await,
        "page_token",
    );
    assert_eq!(
        a.list_consent_history(hist(&ana.customer_id, 0, 0, i32::MAX, genuine))
            .await
            .expect("genuine")
            .into_inner()
            .records
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------
// Attribute definitions.

async fn definitions(c: &mut Client) -> Vec<AttributeDefinition> {
    c.list_attribute_definitions(ListAttributeDefinitionsRequest {
        page_size: 1000,
        show_deprecated: true,
        ..Default::default()
    })
    .await
    .expect("definitions")
    .into_inner()
    .definitions
}

#[tokio::test]
async fn attribute_definitions_refuse_bad_names_types_descriptions_and_tokens() {
    let env = start().await;
    let mut a = env.client.clone();
    let mut b = env.client_for(Some(Uuid::new_v4()));
    let tier = a
        .create_attribute_definition(CreateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: "tier".into(),
                r#type: AttributeType::String as i32,
                description: TEXT.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("a hostile description is valid")
        .into_inner()
        .definition
        .expect("definition");
    assert_eq!(tier.description, TEXT);
    define(&mut a, "vip", AttributeType::Boolean).await;
    define(&mut a, "only_a", AttributeType::String).await;
    define(&mut b, "tier", AttributeType::Number).await;
    define(&mut b, "vip", AttributeType::Boolean).await;
    define(&mut b, "only_b", AttributeType::String).await;
    let before = definitions(&mut a).await;
    let before_b = definitions(&mut b).await;

    // CreateAttributeDefinition.
    refused(
        a.create_attribute_definition(CreateAttributeDefinitionRequest { definition: None })
            .await,
        "definition",
    );
    let def = |name: &str, t: i32, description: &str| CreateAttributeDefinitionRequest {
        definition: Some(AttributeDefinition {
            name: name.into(),
            r#type: t,
            description: description.into(),
            ..Default::default()
        }),
    };
    let string = AttributeType::String as i32;
    for name in [
        "",
        "Tier",
        "1tier",
        "_tier",
        "tier-2",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        "ß",
        &"a".repeat(65),
    ] {
        refused(
            a.create_attribute_definition(def(name, string, "")).await,
            "definition.name",
        );
    }
    for t in [0, 6, 999, -1] {
        refused(
            a.create_attribute_definition(def("fresh", t, "")).await,
            "definition.type",
        );
    }
    for d in ["x".repeat(1001), NUL.to_string()] {
        refused(
            a.create_attribute_definition(def("fresh", string, &d))
                .await,
            "definition.description",
        );
    }
    failed(
        a.create_attribute_definition(def("tier", string, "")).await,
        Code::AlreadyExists,
    );

    // UpdateAttributeDefinition.
    refused(
        a.update_attribute_definition(UpdateAttributeDefinitionRequest {
            definition: None,
            update_mask: mask(&["description"]),
        })
        .await,
        "definition",
    );
    let update = |name: &str, description: &str, etag: &str, m: Option<FieldMask>| {
        UpdateAttributeDefinitionRequest {
            definition: Some(AttributeDefinition {
                name: name.into(),
                description: description.into(),
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: m,
        }
    };
    let desc = || mask(&["description"]);
    for name in [
        "",
        "   ",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        &"a".repeat(65),
        &"a".repeat(100_000),
    ] {
        refused(
            a.update_attribute_definition(update(name, "x", "", desc()))
                .await,
            "definition.name",
        );
    }
    for m in [None, mask(&[])] {
        refused(
            a.update_attribute_definition(update("tier", "x", "", m))
                .await,
            "update_mask",
        );
    }
    for path in ["required", "type", "name", "state", "", "description\0"] {
        refused(
            a.update_attribute_definition(update("tier", "x", "", mask(&[path])))
                .await,
            "update_mask.paths[0]",
        );
    }
    for d in ["x".repeat(1001), NUL.to_string()] {
        refused(
            a.update_attribute_definition(update("tier", &d, "", desc()))
                .await,
            "definition.description",
        );
    }
    failed(
        a.update_attribute_definition(update("nope", "x", "", desc()))
            .await,
        Code::NotFound,
    );
    for etag in ["\"999\"", NUL, "1 OR 1=1"] {
        failed(
            a.update_attribute_definition(update("tier", "x", etag, desc()))
                .await,
            Code::Aborted,
        );
    }

    // DeprecateAttributeDefinition.
    for name in [
        "",
        "   ",
        "ti\0er",
        "1 OR 1=1",
        "../x",
        &"a".repeat(100_000),
    ] {
        refused(
            a.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
                name: name.into(),
            })
            .await,
            "name",
        );
    }
    failed(
        a.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
    );
    // A name only the other tenant has: NOT_FOUND, both ways.
    for (mut c, name) in [(a.clone(), "only_b"), (b.clone(), "only_a")] {
        failed(
            c.deprecate_attribute_definition(DeprecateAttributeDefinitionRequest {
                name: name.into(),
            })
            .await,
            Code::NotFound,
        );
        failed(
            c.update_attribute_definition(update(name, "stolen", "", desc()))
                .await,
            Code::NotFound,
        );
    }
    assert_eq!(definitions(&mut a).await, before, "nothing changed");
    assert_eq!(definitions(&mut b).await, before_b, "nothing changed");

    // ListAttributeDefinitions.
    refused(
        a.list_attribute_definitions(ListAttributeDefinitionsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    let page = |c: &mut Client, deprecated: bool, token: String| {
        let mut c = c.clone();
        async move {
            c.list_attribute_definitions(ListAttributeDefinitionsRequest {
                page_size: 1,
                page_token: token,
                show_deprecated: deprecated,
            })
            .await
        }
    };
    let genuine = page(&mut a, false, String::new())
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let foreign = page(&mut b, false, String::new())
        .await
        .expect("page")
        .into_inner()
        .next_page_token;
    let mut tokens = forged_tokens(&genuine);
    tokens.push(foreign);
    for token in tokens {
        refused(page(&mut a, false, token).await, "page_token");
    }
    refused(page(&mut a, true, genuine.clone()).await, "page_token");
    let rest = page(&mut a, false, genuine)
        .await
        .expect("genuine")
        .into_inner();
    assert_eq!(rest.definitions.len(), 1);
    assert_eq!(rest.definitions[0].name, "tier");
    // The update with a hostile description keeps it byte for byte.
    let updated = a
        .update_attribute_definition(update("tier", &format!("{TEXT}!"), &tier.etag, desc()))
        .await
        .expect("update")
        .into_inner()
        .definition
        .expect("definition");
    assert_eq!(updated.description, format!("{TEXT}!"));
}

/// The identifier sets ResolveIdentity refuses, with the field it names.
fn bad_identifier_sets() -> Vec<(Vec<Identifier>, &'static str)> {
    let one = |i: Identifier, f: &'static str| (vec![i], f);
    vec![
        (vec![], "identifiers"),
        (
            (0..21).map(|i| email(&format!("e{i}@x.com"))).collect(),
            "identifiers",
        ),
        one(email(""), "identifiers[0].value"),
        one(email(NUL), "identifiers[0].value"),
        one(email("1 OR 1=1"), "identifiers[0].value"),
        one(phone("+1-800-FLOWERS"), "identifiers[0].value"),
        one(external("", "L-1"), "identifiers[0].system"),
        one(external("loyalty", NUL), "identifiers[0].value"),
        one(
            Identifier {
                kind: 999,
                system: String::new(),
                value: "ana@x.com".into(),
            },
            "identifiers[0].kind",
        ),
    ]
}

#[tokio::test]
async fn resolve_identities_refuses_bad_sets_alone_and_bounds_the_call() {
    let env = start().await;
    let mut c = env.client.clone();
    refused(
        c.resolve_identities(ResolveIdentitiesRequest { requests: vec![] })
            .await,
        "requests",
    );
    refused(
        c.resolve_identities(ResolveIdentitiesRequest {
            requests: (0..1001)
                .map(|n| ResolveIdentityRequest {
                    identifiers: vec![email(&format!("n{n}@x.com"))],
                    ..Default::default()
                })
                .collect(),
        })
        .await,
        "requests",
    );
    assert_eq!(env.events().await, 0);
    // Every bad set beside one good one, with bad traits too: each bad set
    // is refused with the field ResolveIdentity names; the good one lands.
    let mut sets: Vec<(ResolveIdentityRequest, Option<&str>)> = bad_identifier_sets()
        .into_iter()
        .map(|(ids, f)| {
            (
                ResolveIdentityRequest {
                    identifiers: ids,
                    ..Default::default()
                },
                Some(f),
            )
        })
        .collect();
    sets.push((
        ResolveIdentityRequest {
            identifiers: vec![email("t@x.com")],
            traits: Some(Customer {
                display_name: NUL.into(),
                ..Default::default()
            }),
            lookup_only: false,
        },
        Some("traits.display_name"),
    ));
    sets.push((
        ResolveIdentityRequest {
            identifiers: vec![email("good@x.com")],
            ..Default::default()
        },
        None,
    ));
    let answer = c
        .resolve_identities(ResolveIdentitiesRequest {
            requests: sets.iter().map(|(r, _)| r.clone()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results.len(), sets.len());
    for ((_, field), r) in sets.iter().zip(&answer.results) {
        match (field, &r.result) {
            (Some(f), Some(resolve_identities_result::Result::Refused(x))) => {
                assert_eq!(x.code, Code::InvalidArgument as i32, "{f}: {x:?}");
                assert!(
                    x.field_violations.iter().any(|v| v.field == *f),
                    "{f}: {x:?}"
                );
            }
            (None, Some(resolve_identities_result::Result::Resolved(c))) => assert!(c.created),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        1
    );
}

#[tokio::test]
async fn import_customers_refuses_every_bad_value_per_item_and_writes_only_the_good() {
    let env = start().await;
    let mut c = env.client.clone();
    define_all(&mut c).await;
    let mut items = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for bad in bad_customer_values() {
        let mut input = base(bad.kind);
        (bad.set)(&mut input);
        if input.emails.is_empty()
            && input.phones.is_empty()
            && input.external_identifiers.is_empty()
        {
            input
                .emails
                .push(email_entry(&format!("item{}@x.com", items.len()), ""));
        }
        expected.push(format!("customer.{}", bad.field));
        items.push(ImportCustomerItem {
            customer: Some(input),
            ..Default::default()
        });
    }
    // Missing customer, unknown kind, no identifier, identifier paths in the
    // mask, a bad request_id.
    let mut no_kind = person("Ana", "", "k@x.com");
    no_kind.kind = 999;
    let mut no_ids = person("Ana", "", "");
    no_ids.emails.clear();
    for (item, field) in [
        (ImportCustomerItem::default(), "customer.kind"),
        (
            ImportCustomerItem {
                customer: Some(no_kind),
                ..Default::default()
            },
            "customer.kind",
        ),
        (
            ImportCustomerItem {
                customer: Some(no_ids),
                ..Default::default()
            },
            "customer",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "m@x.com")),
                update_mask: mask(&["phones"]),
                ..Default::default()
            },
            "update_mask.paths[0]",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "r@x.com")),
                request_id: "x".repeat(65),
                ..Default::default()
            },
            "request_id",
        ),
        (
            ImportCustomerItem {
                customer: Some(person("Ana", "", "n@x.com")),
                request_id: NUL.into(),
                ..Default::default()
            },
            "request_id",
        ),
    ] {
        items.push(item);
        expected.push(field.to_string());
    }
    let bad_count = items.len();
    items.push(ImportCustomerItem {
        customer: Some(person(TEXT, TEXT, "good@x.com")),
        request_id: TEXT.chars().take(20).collect(),
        ..Default::default()
    });
    let messages: Vec<ImportCustomersRequest> = items
        .chunks(7)
        .map(|c| ImportCustomersRequest { items: c.to_vec() })
        .collect();
    let answer = c
        .import_customers(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.created_count, 1, "{answer:?}");
    assert_eq!(answer.rejected_count as usize, bad_count);
    for (n, field) in expected.iter().enumerate() {
        let r = &answer.rejections[n];
        assert_eq!(r.index as usize, n, "{r:?}");
        assert_eq!(r.reason, ImportRejectionReason::Invalid as i32);
        assert!(
            r.field_violations.iter().any(|v| &v.field == field),
            "item {n}: expected {field}, got {r:?}"
        );
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM profile.customers").await,
        1
    );
    let all = everyone(&mut c).await;
    let Some(customer::Details::Person(p)) = &all[0].details else {
        panic!("{all:?}");
    };
    assert_eq!(p.given_name, TEXT, "stored byte for byte");
}
