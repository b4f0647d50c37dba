//! An interaction as stored, its protobuf form and its change-feed payloads;
//! campaigns likewise.

use chrono::{DateTime, SecondsFormat, Utc};
use rapport_kit::convert::{json_to_struct, timestamp};
use rapport_proto::rapport::common::v1::{CustomerRef, customer_ref};
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel, Initiator, Interaction, InteractionType, LineItem, ServiceRequestStatus,
    Survey,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::money::{Amount, decimal_to_nanos, nanos_to_decimal, nanos_to_money};
use super::validate::{NewInteraction, NewLineItem};

/// An interaction as the service keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInteraction {
    /// Its id.
    pub interaction_id: Uuid,
    /// The customer it belongs to now.
    pub customer_id: Uuid,
    /// The customer it was first recorded under.
    pub original_customer_id: Uuid,
    /// `InteractionType` value.
    pub kind: i32,
    /// Tenant-defined type.
    pub custom_type: Option<String>,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// `Channel` value.
    pub channel: i32,
    /// `Initiator` value.
    pub initiator: i32,
    /// Money value.
    pub amount: Option<Amount>,
    /// Gross margin.
    pub margin: Option<Amount>,
    /// Goods.
    pub line_items: Vec<NewLineItem>,
    /// Campaign.
    pub campaign_id: Option<Uuid>,
    /// Agent.
    pub agent_id: Option<String>,
    /// CSAT.
    pub csat: Option<i32>,
    /// NPS.
    pub nps: Option<i32>,
    /// Survey comment.
    pub comment: Option<String>,
    /// `ServiceRequestStatus` value.
    pub status: i32,
    /// When last resolved.
    pub resolve_time: Option<DateTime<Utc>>,
    /// Free attributes.
    pub attributes: Option<Value>,
    /// The client's key.
    pub idempotency_key: Option<String>,
    /// When recorded.
    pub create_time: DateTime<Utc>,
    /// When last changed.
    pub update_time: DateTime<Utc>,
    /// Version, the etag.
    pub version: i64,
}

/// RFC 3339 in UTC, as the feed writes times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A money object as the feed writes it.
pub fn money_json(a: &Amount) -> Value {
    let m = nanos_to_money(&a.currency, a.nanos);
    json!({"currency_code": m.currency_code, "units": m.units.to_string(), "nanos": m.nanos})
}

fn type_name(kind: i32) -> &'static str {
    InteractionType::try_from(kind).map_or("INTERACTION_TYPE_UNSPECIFIED", |t| t.as_str_name())
}

fn status_name(s: i32) -> &'static str {
    ServiceRequestStatus::try_from(s)
        .map_or("SERVICE_REQUEST_STATUS_UNSPECIFIED", |t| t.as_str_name())
}

/// Line items as stored: a JSON array, unit prices as exact decimal text in
/// the interaction's currency.
pub fn line_items_json(items: &[NewLineItem]) -> Option<Value> {
    if items.is_empty() {
        return None;
    }
    Some(Value::Array(
        items
            .iter()
            .map(|li| {
                json!({
                    "sku": li.sku,
                    "name": li.name,
                    "category": li.category,
                    "quantity": li.quantity,
                    "currency": li.unit_price.currency,
                    "unit_price": nanos_to_decimal(li.unit_price.nanos),
                })
            })
            .collect(),
    ))
}

/// Line items back from their stored JSON.
pub fn line_items_from_json(v: Option<&Value>) -> Vec<NewLineItem> {
    let Some(Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|li| {
            Some(NewLineItem {
                sku: li.get("sku")?.as_str()?.to_string(),
                name: li.get("name")?.as_str().unwrap_or_default().to_string(),
                category: li.get("category")?.as_str().unwrap_or_default().to_string(),
                quantity: li.get("quantity")?.as_f64()?,
                unit_price: Amount {
                    currency: li.get("currency")?.as_str()?.to_string(),
                    nanos: decimal_to_nanos(li.get("unit_price")?.as_str()?)?,
                },
            })
        })
        .collect()
}

impl StoredInteraction {
    /// The interaction a recording creates.
    pub fn from_new(
        new: &NewInteraction,
        interaction_id: Uuid,
        original_customer_id: Uuid,
        customer_id: Uuid,
        now: DateTime<Utc>,
    ) -> Self {
        StoredInteraction {
            interaction_id,
            customer_id,
            original_customer_id,
            kind: new.kind as i32,
            custom_type: new.custom_type.clone(),
            occur_time: new.occur_time,
            channel: new.channel,
            initiator: new.initiator,
            amount: new.amount.clone(),
            margin: new.margin.clone(),
            line_items: new.line_items.clone(),
            campaign_id: new.campaign_id,
            agent_id: new.agent_id.clone(),
            csat: new.csat,
            nps: new.nps,
            comment: new.comment.clone(),
            status: new.status,
            resolve_time: new.resolve_time,
            attributes: new.attributes.clone(),
            idempotency_key: new.idempotency_key.clone(),
            create_time: now,
            update_time: now,
            version: 1,
        }
    }

    /// The etag clients see.
    pub fn etag(&self) -> String {
        format!("v{}", self.version)
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> Interaction {
        let survey = (self.kind == InteractionType::SurveyResponse as i32).then(|| Survey {
            csat: self.csat,
            nps: self.nps,
            comment: self.comment.clone().unwrap_or_default(),
        });
        Interaction {
            interaction_id: self.interaction_id.to_string(),
            customer: Some(CustomerRef {
                r#ref: Some(customer_ref::Ref::CustomerId(self.customer_id.to_string())),
            }),
            customer_id: self.customer_id.to_string(),
            original_customer_id: self.original_customer_id.to_string(),
            r#type: self.kind,
            custom_type: self.custom_type.clone().unwrap_or_default(),
            occur_time: Some(timestamp(self.occur_time)),
            channel: self.channel,
            initiator: self.initiator,
            amount: self.amount.as_ref().map(Amount::to_money),
            margin: self.margin.as_ref().map(Amount::to_money),
            line_items: self
                .line_items
                .iter()
                .map(|li| LineItem {
                    sku: li.sku.clone(),
                    name: li.name.clone(),
                    category: li.category.clone(),
                    quantity: li.quantity,
                    unit_price: Some(li.unit_price.to_money()),
                })
                .collect(),
            campaign_id: self.campaign_id.map(|c| c.to_string()).unwrap_or_default(),
            agent_id: self.agent_id.clone().unwrap_or_default(),
            survey,
            service_request_status: self.status,
            resolve_time: self.resolve_time.map(timestamp),
            attributes: self.attributes.clone().map(json_to_struct),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: self.etag(),
        }
    }

    /// The InteractionRecorded payload: no free text, no idempotency key.
    pub fn recorded_payload(&self) -> Value {
        let mut p = serde_json::Map::new();
        p.insert("interaction_id".into(), json!(self.interaction_id));
        p.insert("customer_id".into(), json!(self.customer_id));
        p.insert(
            "original_customer_id".into(),
            json!(self.original_customer_id),
        );
        p.insert("type".into(), json!(type_name(self.kind)));
        if let Some(c) = &self.custom_type {
            p.insert("custom_type".into(), json!(c));
        }
        p.insert("occur_time".into(), json!(rfc3339(self.occur_time)));
        p.insert(
            "channel".into(),
            json!(
                Channel::try_from(self.channel).map_or("CHANNEL_UNSPECIFIED", |c| c.as_str_name())
            ),
        );
        p.insert(
            "initiator".into(),
            json!(
                Initiator::try_from(self.initiator)
                    .map_or("INITIATOR_UNSPECIFIED", |c| c.as_str_name())
            ),
        );
        if let Some(a) = &self.amount {
            p.insert("amount".into(), money_json(a));
        }
        if let Some(m) = &self.margin {
            p.insert("margin".into(), money_json(m));
        }
        if let Some(c) = self.campaign_id {
            p.insert("campaign_id".into(), json!(c));
        }
        if let Some(a) = &self.agent_id {
            p.insert("agent_id".into(), json!(a));
        }
        if let Some(c) = self.csat {
            p.insert("csat".into(), json!(c));
        }
        if let Some(n) = self.nps {
            p.insert("nps".into(), json!(n));
        }
        if self.status != 0 {
            p.insert(
                "service_request_status".into(),
                json!(status_name(self.status)),
            );
        }
        Value::Object(p)
    }

    /// The ServiceRequestUpdated payload.
    pub fn status_payload(&self, previous_status: i32) -> Value {
        let mut p = serde_json::Map::new();
        p.insert("interaction_id".into(), json!(self.interaction_id));
        p.insert("customer_id".into(), json!(self.customer_id));
        p.insert("type".into(), json!(type_name(self.kind)));
        p.insert("occur_time".into(), json!(rfc3339(self.occur_time)));
        p.insert(
            "previous_status".into(),
            json!(status_name(previous_status)),
        );
        p.insert("status".into(), json!(status_name(self.status)));
        if let Some(r) = self.resolve_time {
            p.insert("resolve_time".into(), json!(rfc3339(r)));
        }
        if let Some(a) = &self.agent_id {
            p.insert("agent_id".into(), json!(a));
        }
        p.insert("update_time".into(), json!(rfc3339(self.update_time)));
        Value::Object(p)
    }
}

/// A campaign as the service keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCampaign {
    /// Its id.
    pub campaign_id: Uuid,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `Channel` value.
    pub channel: i32,
    /// Target segment.
    pub target_segment_id: Option<Uuid>,
    /// Start.
    pub start_time: Option<DateTime<Utc>>,
    /// End.
    pub end_time: Option<DateTime<Utc>>,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Version, the etag.
    pub version: i64,
}

impl StoredCampaign {
    /// The etag clients see.
    pub fn etag(&self) -> String {
        format!("v{}", self.version)
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> Campaign {
        Campaign {
            campaign_id: self.campaign_id.to_string(),
            name: self.name.clone(),
            description: self.description.clone(),
            channel: self.channel,
            target_segment_id: self
                .target_segment_id
                .map(|s| s.to_string())
                .unwrap_or_default(),
            start_time: self.start_time.map(timestamp),
            end_time: self.end_time.map(timestamp),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: self.etag(),
        }
    }

    /// The CampaignCreated payload (CampaignUpdated adds `update_mask`).
    pub fn payload(&self, update_mask: Option<&[String]>) -> Value {
        let mut p = serde_json::Map::new();
        p.insert("campaign_id".into(), json!(self.campaign_id));
        p.insert("name".into(), json!(self.name));
        p.insert(
            "channel".into(),
            json!(
                Channel::try_from(self.channel).map_or("CHANNEL_UNSPECIFIED", |c| c.as_str_name())
            ),
        );
        if let Some(s) = self.target_segment_id {
            p.insert("target_segment_id".into(), json!(s));
        }
        if let Some(t) = self.start_time {
            p.insert("start_time".into(), json!(rfc3339(t)));
        }
        if let Some(t) = self.end_time {
            p.insert("end_time".into(), json!(rfc3339(t)));
        }
        if let Some(mask) = update_mask {
            p.insert("update_mask".into(), json!(mask));
        }
        Value::Object(p)
    }
}

/// The InteractionsReassigned payload.
pub fn reassigned_payload(
    from: Uuid,
    to: Uuid,
    reason: &str,
    ids: &[Uuid],
    profile_sequence: i64,
) -> Value {
    let mut p = serde_json::Map::new();
    p.insert("from_customer_id".into(), json!(from));
    p.insert("to_customer_id".into(), json!(to));
    p.insert("reason".into(), json!(reason));
    p.insert("interaction_count".into(), json!(ids.len()));
    if ids.len() <= 10_000 {
        p.insert("interaction_ids".into(), json!(ids));
    }
    p.insert("profile_sequence".into(), json!(profile_sequence));
    Value::Object(p)
}

/// The CustomerInteractionsErased payload.
pub fn erased_payload(customer_id: Uuid, count: usize, profile_sequence: i64) -> Value {
    json!({
        "customer_id": customer_id,
        "interaction_count": count,
        "profile_sequence": profile_sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_payload_follows_the_contract() {
        let id = Uuid::nil();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = StoredInteraction {
            interaction_id: id,
            customer_id: id,
            original_customer_id: id,
            kind: InteractionType::SurveyResponse as i32,
            custom_type: None,
            occur_time: t,
            channel: Channel::Web as i32,
            initiator: 0,
            amount: Some(Amount {
                currency: "EUR".into(),
                nanos: 12_500_000_000,
            }),
            margin: None,
            line_items: vec![],
            campaign_id: None,
            agent_id: None,
            csat: Some(4),
            nps: None,
            comment: Some("personal words".into()),
            status: 0,
            resolve_time: None,
            attributes: Some(json!({"k": "v"})),
            idempotency_key: Some("key-1".into()),
            create_time: t,
            update_time: t,
            version: 1,
        };
        let p = s.recorded_payload();
        assert_eq!(p["type"], "INTERACTION_TYPE_SURVEY_RESPONSE");
        assert_eq!(p["channel"], "CHANNEL_WEB");
        assert_eq!(p["occur_time"], "2023-11-14T22:13:20Z");
        assert_eq!(
            p["amount"],
            json!({"currency_code": "EUR", "units": "12", "nanos": 500000000})
        );
        assert_eq!(p["csat"], 4);
        let text = p.to_string();
        assert!(!text.contains("personal words"));
        assert!(!text.contains("key-1"));
        assert!(p.get("attributes").is_none());
        assert!(p.get("service_request_status").is_none());
        assert_eq!(s.to_proto().survey.unwrap().comment, "personal words");
    }

    #[test]
    fn line_items_round_trip_through_json() {
        let items = vec![NewLineItem {
            sku: "a".into(),
            name: "b".into(),
            category: "c".into(),
            quantity: 1.25,
            unit_price: Amount {
                currency: "EUR".into(),
                nanos: 3_000_000_001,
            },
        }];
        assert_eq!(
            line_items_from_json(line_items_json(&items).as_ref()),
            items
        );
    }
}
