//! Turning the rows of an import file into the messages Rapport takes: a
//! row is a map from column name to text; a mapping says which column
//! holds which field. Pure, so every rule is unit-tested.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, Money, customer_ref,
};
use rapport_proto::rapport::interaction::v1::{Channel, Interaction, InteractionType, Survey};
use rapport_proto::rapport::profile::v1::{
    AttributeType, AttributeValue, CalendarDate, Customer, CustomerKind, EmailAddress,
    OrganizationDetails, PersonDetails, PhoneNumber, StringList, attribute_value, customer,
};
use sha2::{Digest, Sha256};

/// One row: column → text (empty cells are absent).
pub type Row = BTreeMap<String, String>;

/// Customer fields a column can be mapped to (besides `attr.<name>`).
pub const CUSTOMER_FIELDS: [&str; 16] = [
    "kind",
    "email",
    "phone",
    "external_system",
    "external_id",
    "given_name",
    "family_name",
    "birth_date",
    "display_name",
    "legal_name",
    "industry",
    "website",
    "country_code",
    "locale",
    "tags",
    "owner_id",
];

/// Interaction fields a column can be mapped to.
pub const INTERACTION_FIELDS: [&str; 17] = [
    "customer_id",
    "email",
    "phone",
    "external_system",
    "external_id",
    "type",
    "custom_type",
    "occur_time",
    "channel",
    "amount",
    "margin",
    "currency",
    "campaign_id",
    "agent_id",
    "csat",
    "nps",
    "idempotency_key",
];

/// Which column holds each field: by default the column of the field's own
/// name; `overrides` are `field=column` pairs.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    columns: HashMap<String, String>,
}

impl Mapping {
    /// The mapping for `fields` (and `attr.*` columns) with `overrides`.
    /// An override naming an unknown field is an error.
    pub fn new(fields: &[&str], overrides: &[(String, String)]) -> Result<Self, String> {
        let mut columns: HashMap<String, String> = fields
            .iter()
            .map(|f| (f.to_string(), f.to_string()))
            .collect();
        for (field, column) in overrides {
            if !fields.contains(&field.as_str()) && !field.starts_with("attr.") {
                return Err(format!(
                    "unknown field {field:?} in the mapping; known: {}, attr.<name>",
                    fields.join(", ")
                ));
            }
            columns.insert(field.clone(), column.clone());
        }
        Ok(Self { columns })
    }

    /// The row's value of `field`, trimmed; `None` when empty or absent.
    pub fn get<'r>(&self, row: &'r Row, field: &str) -> Option<&'r str> {
        let column = self.columns.get(field).map_or(field, String::as_str);
        row.get(column).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// The attribute columns of a row: (attribute name, value). A column
    /// `attr.NAME` is attribute NAME unless the mapping maps `attr.NAME`
    /// elsewhere.
    pub fn attributes<'r>(&self, row: &'r Row) -> Vec<(String, &'r str)> {
        let mut out: BTreeMap<String, &str> = BTreeMap::new();
        for (col, value) in row {
            if let Some(name) = col.strip_prefix("attr.")
                && !self.columns.contains_key(col.as_str())
            {
                out.insert(name.to_string(), value.trim());
            }
        }
        for (field, col) in &self.columns {
            if let (Some(name), Some(v)) = (field.strip_prefix("attr."), row.get(col)) {
                out.insert(name.to_string(), v.trim());
            }
        }
        out.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }
}

/// Parses `field=column` lines (blank lines and `#` comments ignored).
pub fn parse_mapping_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_pair(line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

/// One `field=column` pair.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (f, c) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not field=column"))?;
    let (f, c) = (f.trim(), c.trim().trim_matches('"'));
    if f.is_empty() || c.is_empty() {
        return Err(format!("{s:?} is not field=column"));
    }
    Ok((f.to_string(), c.to_string()))
}

/// A stable key for a row: the same mapped content gives the same key on
/// every run, so a re-run after an interruption duplicates nothing.
pub fn row_key(prefix: &str, row: &Row) -> String {
    let mut h = Sha256::new();
    for (k, v) in row {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.trim().as_bytes());
        h.update([0]);
    }
    format!("{prefix}{}", &hex::encode(h.finalize())[..40])
}

/// An exact amount from decimal text ("12.5", "-3", "1,234.50" is refused):
/// integer units and nanos, never a float.
pub fn money(text: &str, currency: &str) -> Result<Money, String> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9;
    if !ok {
        return Err(format!(
            "{text:?} is not an amount (digits, an optional '.' and up to 9 decimals)"
        ));
    }
    let units: i64 = whole
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let nanos: i32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| format!("{text:?} is not an amount"))?
    };
    let sign = if neg { -1 } else { 1 };
    Ok(Money {
        currency_code: currency.to_ascii_uppercase(),
        units: sign * units,
        nanos: sign as i32 * nanos,
    })
}

/// An instant from RFC 3339, or a date (YYYY-MM-DD, midnight UTC).
pub fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

fn date(text: &str) -> Result<CalendarDate, String> {
    let d = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not YYYY-MM-DD"))?;
    use chrono::Datelike;
    Ok(CalendarDate {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    })
}

/// An enum value from its short name ("purchase"), its full name
/// ("INTERACTION_TYPE_PURCHASE"), in any case.
fn enum_value(text: &str, prefix: &str, from: impl Fn(&str) -> Option<i32>) -> Option<i32> {
    let upper = text.trim().to_ascii_uppercase().replace(['-', ' '], "_");
    from(&upper)
        .or_else(|| from(&format!("{prefix}{upper}")))
        .filter(|v| *v != 0)
}

/// The identifiers a row gives (e-mail, phone, external id).
fn identifiers(m: &Mapping, row: &Row) -> Vec<Identifier> {
    let mut out = Vec::new();
    if let Some(e) = m.get(row, "email") {
        out.push(Identifier {
            kind: IdentifierKind::Email as i32,
            system: String::new(),
            value: e.to_string(),
        });
    }
    if let Some(p) = m.get(row, "phone") {
        out.push(Identifier {
            kind: IdentifierKind::Phone as i32,
            system: String::new(),
            value: p.to_string(),
        });
    }
    if let Some(x) = m.get(row, "external_id") {
        out.push(Identifier {
            kind: IdentifierKind::External as i32,
            system: m.get(row, "external_system").unwrap_or("").to_string(),
            value: x.to_string(),
        });
    }
    out
}

/// A customer from a row. `types` are the tenant's attribute types by name
/// (attributes without a definition are sent as text, and the service
/// refuses them if the tenant requires definitions).
pub fn customer(
    m: &Mapping,
    row: &Row,
    default_kind: CustomerKind,
    types: &HashMap<String, AttributeType>,
) -> Result<Customer, String> {
    let kind = match m.get(row, "kind") {
        Some(k) => match k.to_ascii_lowercase().as_str() {
            "person" | "customer_kind_person" => CustomerKind::Person,
            "organization" | "organisation" | "customer_kind_organization" => {
                CustomerKind::Organization
            }
            other => return Err(format!("kind {other:?} is not person or organization")),
        },
        None => default_kind,
    };
    let mut c = Customer {
        kind: kind as i32,
        display_name: m.get(row, "display_name").unwrap_or("").into(),
        country_code: m.get(row, "country_code").unwrap_or("").into(),
        locale: m.get(row, "locale").unwrap_or("").into(),
        owner_id: m.get(row, "owner_id").unwrap_or("").into(),
        tags: m
            .get(row, "tags")
            .map(|t| {
                t.split([';', '|'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    c.details = Some(match kind {
        CustomerKind::Organization => customer::Details::Organization(OrganizationDetails {
            legal_name: m.get(row, "legal_name").unwrap_or("").into(),
            industry: m.get(row, "industry").unwrap_or("").into(),
            website: m.get(row, "website").unwrap_or("").into(),
            ..Default::default()
        }),
        _ => customer::Details::Person(PersonDetails {
            given_name: m.get(row, "given_name").unwrap_or("").into(),
            family_name: m.get(row, "family_name").unwrap_or("").into(),
            birth_date: m.get(row, "birth_date").map(date).transpose()?,
        }),
    });
    for id in identifiers(m, row) {
        match IdentifierKind::try_from(id.kind) {
            Ok(IdentifierKind::Email) => c.emails.push(EmailAddress {
                address: id.value,
                ..Default::default()
            }),
            Ok(IdentifierKind::Phone) => c.phones.push(PhoneNumber {
                number: id.value,
                ..Default::default()
            }),
            _ => c.external_identifiers.push(id),
        }
    }
    for (name, text) in m.attributes(row) {
        let value = match types.get(&name).copied().unwrap_or(AttributeType::String) {
            AttributeType::Number => attribute_value::Value::NumberValue(
                text.parse::<f64>()
                    .map_err(|_| format!("attribute {name}: {text:?} is not a number"))?,
            ),
            AttributeType::Boolean => {
                attribute_value::Value::BoolValue(match text.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(format!("attribute {name}: {text:?} is not true or false")),
                })
            }
            AttributeType::Timestamp => attribute_value::Value::TimestampValue(timestamp(
                instant(text).map_err(|e| format!("attribute {name}: {e}"))?,
            )),
            AttributeType::StringList => attribute_value::Value::StringListValue(StringList {
                values: text
                    .split([';', '|'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            }),
            _ => attribute_value::Value::StringValue(text.to_string()),
        };
        c.attributes
            .insert(name, AttributeValue { value: Some(value) });
    }
    Ok(c)
}

/// An interaction from a row; `currency` is the default currency of
/// amounts without a `currency` column.
pub fn interaction(m: &Mapping, row: &Row, currency: &str) -> Result<Interaction, String> {
    let customer = match m.get(row, "customer_id") {
        Some(id) => customer_ref::Ref::CustomerId(id.to_string()),
        None => {
            let ids = identifiers(m, row);
            if ids.is_empty() {
                return Err("no customer: map customer_id, email, phone or external_id".to_string());
            }
            customer_ref::Ref::Identifiers(IdentifierSet { identifiers: ids })
        }
    };
    let kind = match m.get(row, "type") {
        Some(t) => enum_value(t, "INTERACTION_TYPE_", |s| {
            InteractionType::from_str_name(s).map(|v| v as i32)
        })
        .ok_or_else(|| format!("type {t:?} is not an interaction type"))?,
        None => InteractionType::Purchase as i32,
    };
    let occur = m
        .get(row, "occur_time")
        .ok_or("occur_time is required")
        .and_then(|t| instant(t).map_err(|_| "occur_time is neither RFC 3339 nor YYYY-MM-DD"))
        .map_err(str::to_string)?;
    let currency = m.get(row, "currency").unwrap_or(currency);
    let channel = match m.get(row, "channel") {
        Some(c) => enum_value(c, "CHANNEL_", |s| {
            Channel::from_str_name(s).map(|v| v as i32)
        })
        .ok_or_else(|| format!("channel {c:?} is not a channel"))?,
        None => 0,
    };
    let score = |field: &str| -> Result<Option<i32>, String> {
        m.get(row, field)
            .map(|v| {
                v.parse::<i32>()
                    .map_err(|_| format!("{field} {v:?} is not a whole number"))
            })
            .transpose()
    };
    let (csat, nps) = (score("csat")?, score("nps")?);
    Ok(Interaction {
        customer: Some(CustomerRef {
            r#ref: Some(customer),
        }),
        r#type: kind,
        custom_type: m.get(row, "custom_type").unwrap_or("").into(),
        occur_time: Some(timestamp(occur)),
        channel,
        amount: m
            .get(row, "amount")
            .map(|a| money(a, currency))
            .transpose()?,
        margin: m
            .get(row, "margin")
            .map(|a| money(a, currency))
            .transpose()?,
        campaign_id: m.get(row, "campaign_id").unwrap_or("").into(),
        agent_id: m.get(row, "agent_id").unwrap_or("").into(),
        survey: (csat.is_some() || nps.is_some()).then(|| Survey {
            csat,
            nps,
            ..Default::default()
        }),
        idempotency_key: match m.get(row, "idempotency_key") {
            Some(k) => k.to_string(),
            None => row_key("import:", row),
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn amounts_are_exact() {
        let m = money("10.50", "eur").unwrap();
        assert_eq!(
            (m.currency_code.as_str(), m.units, m.nanos),
            ("EUR", 10, 500_000_000)
        );
        let m = money("-0.000000001", "EUR").unwrap();
        assert_eq!((m.units, m.nanos), (0, -1));
        assert_eq!(money("7", "EUR").unwrap().units, 7);
        for bad in ["", "1,5", "1.2.3", "abc", "1.0000000001", "-", "1e3"] {
            assert!(money(bad, "EUR").is_err(), "{bad}");
        }
    }

    #[test]
    fn mappings_rename_columns_and_refuse_unknown_fields() {
        let m = Mapping::new(
            &CUSTOMER_FIELDS,
            &[
                ("email".into(), "E-mail".into()),
                ("attr.tier".into(), "Tier".into()),
            ],
        )
        .unwrap();
        let r = row(&[
            ("E-mail", " ana@x.com "),
            ("Tier", "gold"),
            ("attr.sport", "golf"),
        ]);
        assert_eq!(m.get(&r, "email"), Some("ana@x.com"));
        assert_eq!(
            m.attributes(&r),
            vec![("sport".to_string(), "golf"), ("tier".to_string(), "gold")]
        );
        assert!(Mapping::new(&CUSTOMER_FIELDS, &[("emial".into(), "x".into())]).is_err());
        assert_eq!(
            parse_mapping_lines("# mine\nemail = E-mail\n\ngiven_name=\"First name\"\n").unwrap(),
            vec![
                ("email".to_string(), "E-mail".to_string()),
                ("given_name".to_string(), "First name".to_string())
            ]
        );
        assert!(parse_mapping_lines("email").is_err());
    }

    #[test]
    fn customers_from_rows() {
        let m = Mapping::new(&CUSTOMER_FIELDS, &[]).unwrap();
        let types: HashMap<String, AttributeType> = [("score".to_string(), AttributeType::Number)]
            .into_iter()
            .collect();
        let r = row(&[
            ("email", "ana@x.com"),
            ("phone", "+34600000001"),
            ("given_name", "Ana"),
            ("tags", "vip; golf"),
            ("birth_date", "1990-02-03"),
            ("attr.score", "12.5"),
        ]);
        let c = customer(&m, &r, CustomerKind::Person, &types).unwrap();
        assert_eq!(c.kind, CustomerKind::Person as i32);
        assert_eq!(c.emails[0].address, "ana@x.com");
        assert_eq!(c.phones[0].number, "+34600000001");
        assert_eq!(c.tags, vec!["vip", "golf"]);
        assert_eq!(
            c.attributes["score"].value,
            Some(attribute_value::Value::NumberValue(12.5))
        );
        let Some(customer::Details::Person(p)) = &c.details else {
            panic!()
        };
        assert_eq!(p.birth_date.as_ref().map(|d| d.day), Some(3));
        let bad = row(&[("email", "a@x.com"), ("attr.score", "lots")]);
        assert!(customer(&m, &bad, CustomerKind::Person, &types).is_err());
        let org = row(&[("kind", "Organization"), ("legal_name", "Acme SL")]);
        let o = customer(&m, &org, CustomerKind::Person, &types).unwrap();
        assert_eq!(o.kind, CustomerKind::Organization as i32);
    }

    #[test]
    fn interactions_from_rows_with_stable_keys() {
        let m = Mapping::new(&INTERACTION_FIELDS, &[]).unwrap();
        let r = row(&[
            ("email", "ana@x.com"),
            ("type", "survey response"),
            ("occur_time", "2025-03-02"),
            ("csat", "2"),
            ("nps", "3"),
        ]);
        let i = interaction(&m, &r, "EUR").unwrap();
        assert_eq!(i.r#type, InteractionType::SurveyResponse as i32);
        assert_eq!(i.survey.as_ref().and_then(|s| s.csat), Some(2));
        assert_eq!(i.occur_time.map(|t| t.seconds), Some(1_740_873_600));
        assert_eq!(
            i.idempotency_key,
            interaction(&m, &r, "EUR").unwrap().idempotency_key
        );
        assert!(i.idempotency_key.starts_with("import:"));
        let p = row(&[
            ("customer_id", "0190a0b0-0000-7000-8000-000000000001"),
            ("occur_time", "2025-03-02T10:00:00Z"),
            ("amount", "10.50"),
            ("currency", "usd"),
        ]);
        let i = interaction(&m, &p, "EUR").unwrap();
        assert_eq!(i.r#type, InteractionType::Purchase as i32);
        assert_eq!(
            i.amount.map(|a| (a.currency_code, a.units, a.nanos)),
            Some(("USD".into(), 10, 500_000_000))
        );
        assert!(interaction(&m, &row(&[("occur_time", "2025-01-01")]), "EUR").is_err());
        assert!(interaction(&m, &row(&[("email", "a@x.com")]), "EUR").is_err());
        assert!(
            interaction(
                &m,
                &row(&[
                    ("email", "a@x.com"),
                    ("occur_time", "2025-01-01"),
                    ("type", "nope")
                ]),
                "EUR"
            )
            .is_err()
        );
    }
}
