//! Change-feed payloads: customers and consent records in the proto3 JSON
//! mapping with the proto field names (snake_case), enum values by name,
//! 64-bit integers as strings, times in RFC 3339, default values left out.

use chrono::SecondsFormat;
use prost_types::Timestamp;
use rapport_proto::rapport::common::v1::{IdentifierKind, Money, RelationshipStage};
use rapport_proto::rapport::profile::v1::{
    AttributeValue, CalendarDate, ConsentChannel, ConsentPurpose, ConsentRecord, ConsentStatus,
    Customer, CustomerKind, CustomerState, attribute_value, customer,
};
use serde_json::{Map, Value, json};

/// An RFC 3339 string (UTC, "Z") for a timestamp.
pub fn time(t: &Timestamp) -> Value {
    match rapport_kit::convert::from_timestamp(t) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => Value::Null,
    }
}

struct Obj(Map<String, Value>);

impl Obj {
    fn new() -> Self {
        Obj(Map::new())
    }
    fn s(&mut self, k: &str, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::String(v.into()));
        }
        self
    }
    fn i(&mut self, k: &str, v: i32) -> &mut Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn b(&mut self, k: &str, v: bool) -> &mut Self {
        if v {
            self.0.insert(k.into(), Value::Bool(true));
        }
        self
    }
    fn e(&mut self, k: &str, v: i32, name: Option<&str>) -> &mut Self {
        if v != 0 {
            let n = name.map_or_else(|| json!(v), |n| Value::String(n.into()));
            self.0.insert(k.into(), n);
        }
        self
    }
    fn v(&mut self, k: &str, v: Option<Value>) -> &mut Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v);
        }
        self
    }
    fn list(&mut self, k: &str, v: Vec<Value>) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(k.into(), Value::Array(v));
        }
        self
    }
    fn done(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.0))
    }
}

fn money(m: &Money) -> Value {
    let mut o = Obj::new();
    o.s("currency_code", &m.currency_code);
    if m.units != 0 {
        o.0.insert("units".into(), Value::String(m.units.to_string()));
    }
    o.i("nanos", m.nanos).done()
}

/// A calendar date as JSON.
pub fn date(d: &CalendarDate) -> Value {
    Obj::new()
        .i("year", d.year)
        .i("month", d.month)
        .i("day", d.day)
        .done()
}

fn attribute(v: &AttributeValue) -> Value {
    let mut o = Obj::new();
    match &v.value {
        Some(attribute_value::Value::StringValue(s)) => {
            o.0.insert("string_value".into(), Value::String(s.clone()));
        }
        Some(attribute_value::Value::NumberValue(n)) => {
            o.0.insert("number_value".into(), json!(n));
        }
        Some(attribute_value::Value::BoolValue(b)) => {
            o.0.insert("bool_value".into(), Value::Bool(*b));
        }
        Some(attribute_value::Value::TimestampValue(t)) => {
            o.0.insert("timestamp_value".into(), time(t));
        }
        Some(attribute_value::Value::StringListValue(l)) => {
            o.0.insert(
                "string_list_value".into(),
                Obj::new()
                    .list(
                        "values",
                        l.values.iter().map(|s| Value::String(s.clone())).collect(),
                    )
                    .done(),
            );
        }
        None => {}
    }
    o.done()
}

/// An identifier as JSON ({kind, system, value}).
pub fn identifier(kind: i32, system: &str, value: &str) -> Value {
    json!({
        "kind": IdentifierKind::try_from(kind).map(|k| k.as_str_name()).unwrap_or("IDENTIFIER_KIND_UNSPECIFIED"),
        "system": system,
        "value": value,
    })
}

/// A consent record as JSON.
pub fn consent(r: &ConsentRecord) -> Value {
    Obj::new()
        .s("consent_record_id", &r.consent_record_id)
        .s("customer_id", &r.customer_id)
        .e(
            "channel",
            r.channel,
            ConsentChannel::try_from(r.channel)
                .ok()
                .map(|c| c.as_str_name()),
        )
        .e(
            "purpose",
            r.purpose,
            ConsentPurpose::try_from(r.purpose)
                .ok()
                .map(|c| c.as_str_name()),
        )
        .e(
            "status",
            r.status,
            ConsentStatus::try_from(r.status)
                .ok()
                .map(|c| c.as_str_name()),
        )
        .s("source", &r.source)
        .s("evidence", &r.evidence)
        .v("effective_time", r.effective_time.as_ref().map(time))
        .v("record_time", r.record_time.as_ref().map(time))
        .s("recorded_by", &r.recorded_by)
        .done()
}

/// A customer snapshot as JSON.
pub fn customer(c: &Customer) -> Value {
    let mut o = Obj::new();
    o.s("customer_id", &c.customer_id)
        .e(
            "kind",
            c.kind,
            CustomerKind::try_from(c.kind).ok().map(|k| k.as_str_name()),
        )
        .e(
            "state",
            c.state,
            CustomerState::try_from(c.state)
                .ok()
                .map(|k| k.as_str_name()),
        )
        .s("display_name", &c.display_name);
    match &c.details {
        Some(customer::Details::Person(p)) => {
            let v = Obj::new()
                .s("given_name", &p.given_name)
                .s("family_name", &p.family_name)
                .v("birth_date", p.birth_date.as_ref().map(date))
                .done();
            o.v("person", Some(v));
        }
        Some(customer::Details::Organization(g)) => {
            let v = Obj::new()
                .s("legal_name", &g.legal_name)
                .s("industry", &g.industry)
                .i("employee_count", g.employee_count)
                .v("annual_revenue", g.annual_revenue.as_ref().map(money))
                .s("website", &g.website)
                .done();
            o.v("organization", Some(v));
        }
        None => {}
    }
    o.list(
        "emails",
        c.emails
            .iter()
            .map(|e| {
                Obj::new()
                    .s("address", &e.address)
                    .b("primary", e.primary)
                    .s("label", &e.label)
                    .done()
            })
            .collect(),
    )
    .list(
        "phones",
        c.phones
            .iter()
            .map(|p| {
                Obj::new()
                    .s("number", &p.number)
                    .b("primary", p.primary)
                    .s("label", &p.label)
                    .done()
            })
            .collect(),
    )
    .list(
        "postal_addresses",
        c.postal_addresses
            .iter()
            .map(|a| {
                Obj::new()
                    .s("label", &a.label)
                    .list(
                        "address_lines",
                        a.address_lines
                            .iter()
                            .map(|l| Value::String(l.clone()))
                            .collect(),
                    )
                    .s("locality", &a.locality)
                    .s("administrative_area", &a.administrative_area)
                    .s("postal_code", &a.postal_code)
                    .s("country_code", &a.country_code)
                    .done()
            })
            .collect(),
    )
    .s("country_code", &c.country_code)
    .s("locale", &c.locale)
    .list(
        "external_identifiers",
        c.external_identifiers
            .iter()
            .map(|i| identifier(i.kind, &i.system, &i.value))
            .collect(),
    );
    if !c.attributes.is_empty() {
        let mut names: Vec<&String> = c.attributes.keys().collect();
        names.sort();
        let map: Map<String, Value> = names
            .into_iter()
            .map(|k| (k.clone(), attribute(&c.attributes[k])))
            .collect();
        o.v("attributes", Some(Value::Object(map)));
    }
    o.list(
        "tags",
        c.tags.iter().map(|t| Value::String(t.clone())).collect(),
    )
    .s("owner_id", &c.owner_id)
    .v(
        "estimated_category_wallet",
        c.estimated_category_wallet.as_ref().map(money),
    )
    .e(
        "relationship_stage",
        c.relationship_stage,
        RelationshipStage::try_from(c.relationship_stage)
            .ok()
            .map(|s| s.as_str_name()),
    )
    .v("stage_set_time", c.stage_set_time.as_ref().map(time))
    .list("consents", c.consents.iter().map(consent).collect())
    .list(
        "merged_customer_ids",
        c.merged_customer_ids
            .iter()
            .map(|s| Value::String(s.clone()))
            .collect(),
    )
    .v("create_time", c.create_time.as_ref().map(time))
    .v("update_time", c.update_time.as_ref().map(time))
    .v("delete_time", c.delete_time.as_ref().map(time))
    .s("etag", &c.etag)
    .done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::profile::v1::{EmailAddress, PersonDetails};

    #[test]
    fn customers_use_proto_names_and_enum_names() {
        let c = Customer {
            customer_id: "c1".into(),
            kind: 1,
            details: Some(customer::Details::Person(PersonDetails {
                given_name: "Ana".into(),
                ..Default::default()
            })),
            emails: vec![EmailAddress {
                address: "ana@x.com".into(),
                primary: true,
                label: String::new(),
            }],
            estimated_category_wallet: Some(Money {
                currency_code: "EUR".into(),
                units: 12,
                nanos: 500_000_000,
            }),
            create_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let j = customer(&c);
        assert_eq!(j["kind"], "CUSTOMER_KIND_PERSON");
        assert_eq!(j["person"]["given_name"], "Ana");
        assert_eq!(j["emails"][0]["primary"], true);
        assert_eq!(j["estimated_category_wallet"]["units"], "12");
        assert_eq!(j["create_time"], "2023-11-14T22:13:20Z");
        assert!(j.get("locale").is_none());
    }
}
