//! An interaction as stored, its protobuf form and its change-feed events
//! (`rapport.interaction.v1.InteractionEvent`); campaigns likewise.

use chrono::{DateTime, Utc};
use rapport_kit::convert::{json_to_struct, timestamp};
use rapport_proto::rapport::common::v1::{CustomerRef, customer_ref};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Campaign, CampaignChanged, CustomerInteractionsErased, Interaction, InteractionEvent,
    InteractionRecorded, InteractionType, InteractionsReassigned, LineItem, ReassignReason,
    ServiceRequestUpdated, Survey,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::money::{Amount, decimal_to_nanos, nanos_to_decimal};
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
    /// The engagement decision it answers.
    pub decision_id: Option<Uuid>,
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
            decision_id: new.decision_id,
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
            decision_id: self.decision_id.map(|d| d.to_string()).unwrap_or_default(),
        }
    }

    /// The InteractionRecorded event: no free text (survey comment,
    /// attributes, line items), no idempotency key. Money is exact (units and
    /// nanos), scores are integers.
    pub fn recorded_event(&self) -> InteractionRecorded {
        InteractionRecorded {
            interaction_id: self.interaction_id.to_string(),
            customer_id: self.customer_id.to_string(),
            original_customer_id: self.original_customer_id.to_string(),
            r#type: self.kind,
            custom_type: self.custom_type.clone().unwrap_or_default(),
            occur_time: Some(timestamp(self.occur_time)),
            channel: self.channel,
            initiator: self.initiator,
            amount: self.amount.as_ref().map(Amount::to_money),
            margin: self.margin.as_ref().map(Amount::to_money),
            campaign_id: self.campaign_id.map(|c| c.to_string()).unwrap_or_default(),
            agent_id: self.agent_id.clone().unwrap_or_default(),
            csat: self.csat,
            nps: self.nps,
            service_request_status: self.status,
            decision_id: self.decision_id.map(|d| d.to_string()).unwrap_or_default(),
        }
    }

    /// The ServiceRequestUpdated event, after a change from `previous_status`.
    pub fn status_event(&self, previous_status: i32) -> ServiceRequestUpdated {
        ServiceRequestUpdated {
            interaction_id: self.interaction_id.to_string(),
            customer_id: self.customer_id.to_string(),
            r#type: self.kind,
            occur_time: Some(timestamp(self.occur_time)),
            previous_status,
            status: self.status,
            resolve_time: self.resolve_time.map(timestamp),
            agent_id: self.agent_id.clone().unwrap_or_default(),
            update_time: Some(timestamp(self.update_time)),
        }
    }
}

/// The feed envelope of one case.
pub fn envelope(event: Event) -> InteractionEvent {
    InteractionEvent { event: Some(event) }
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

    /// The CampaignCreated event; CampaignUpdated adds the changed paths.
    pub fn changed_event(&self, update_mask: Option<&[String]>) -> CampaignChanged {
        CampaignChanged {
            campaign_id: self.campaign_id.to_string(),
            name: self.name.clone(),
            channel: self.channel,
            target_segment_id: self
                .target_segment_id
                .map(|s| s.to_string())
                .unwrap_or_default(),
            start_time: self.start_time.map(timestamp),
            end_time: self.end_time.map(timestamp),
            update_mask: update_mask.map(<[String]>::to_vec).unwrap_or_default(),
        }
    }
}

/// Most interaction ids an InteractionsReassigned event lists.
pub const MAX_REASSIGNED_IDS: usize = 10_000;

/// The InteractionsReassigned event: the ids are listed when at most
/// [`MAX_REASSIGNED_IDS`] moved.
pub fn reassigned_event(
    from: Uuid,
    to: Uuid,
    reason: ReassignReason,
    ids: &[Uuid],
    profile_sequence: i64,
) -> InteractionsReassigned {
    let complete = ids.len() <= MAX_REASSIGNED_IDS;
    InteractionsReassigned {
        from_customer_id: from.to_string(),
        to_customer_id: to.to_string(),
        reason: reason as i32,
        interaction_count: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        interaction_ids: if complete {
            ids.iter().map(Uuid::to_string).collect()
        } else {
            Vec::new()
        },
        ids_complete: complete,
        profile_sequence,
    }
}

/// The CustomerInteractionsErased event.
pub fn erased_event(
    customer_id: Uuid,
    count: usize,
    profile_sequence: i64,
) -> CustomerInteractionsErased {
    CustomerInteractionsErased {
        customer_id: customer_id.to_string(),
        interaction_count: i64::try_from(count).unwrap_or(i64::MAX),
        profile_sequence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::interaction::v1::Channel;

    #[test]
    fn recorded_event_follows_the_contract() {
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
            decision_id: Some(Uuid::from_u128(7)),
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
        let e = s.recorded_event();
        assert_eq!(e.r#type, InteractionType::SurveyResponse as i32);
        assert_eq!(e.channel, Channel::Web as i32);
        assert_eq!(e.occur_time, Some(timestamp(t)));
        let amount = e.amount.clone().unwrap();
        assert_eq!(
            (amount.currency_code.as_str(), amount.units, amount.nanos),
            ("EUR", 12, 500_000_000)
        );
        assert_eq!(e.margin, None);
        assert_eq!((e.csat, e.nps), (Some(4), None));
        assert_eq!(e.service_request_status, 0);
        assert_eq!(e.custom_type, "");
        assert_eq!(e.decision_id, Uuid::from_u128(7).to_string());
        let ev = rapport_kit::feed::NewEvent::new(
            id,
            "interaction",
            id.to_string(),
            "InteractionRecorded",
            &envelope(Event::InteractionRecorded(e)),
        );
        let text = String::from_utf8_lossy(&ev.event.value);
        assert!(!text.contains("personal words"));
        assert!(!text.contains("key-1"));
        assert!(!text.contains("\"k\""));
        assert_eq!(s.to_proto().survey.unwrap().comment, "personal words");
    }

    #[test]
    fn reassigned_lists_ids_up_to_the_limit() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let few = vec![Uuid::now_v7(); 3];
        let e = reassigned_event(a, b, ReassignReason::Merge, &few, 7);
        assert_eq!(e.interaction_count, 3);
        assert_eq!(e.interaction_ids.len(), 3);
        assert!(e.ids_complete);
        assert_eq!(e.reason, ReassignReason::Merge as i32);
        assert_eq!(e.profile_sequence, 7);
        let limit = vec![Uuid::nil(); MAX_REASSIGNED_IDS];
        assert!(reassigned_event(a, b, ReassignReason::Unmerge, &limit, 1).ids_complete);
        let many = vec![Uuid::nil(); MAX_REASSIGNED_IDS + 1];
        let e = reassigned_event(a, b, ReassignReason::Unmerge, &many, 1);
        assert!(!e.ids_complete);
        assert!(e.interaction_ids.is_empty());
        assert_eq!(e.interaction_count, MAX_REASSIGNED_IDS as i64 + 1);
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
