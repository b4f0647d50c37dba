//! Every SQL statement of the interaction service (schema `interaction`),
//! one module per part: the [`customers`] known from the profile feed,
//! [`recording`], [`reading`], [`export`] and [`campaigns`]. This module
//! holds the row type shared between them and re-exports every public item.
//! Every statement names the tenant; nothing reads across tenants except the
//! feed consumer's, which acts on the tenant each profile event names.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::interaction::v1::InteractionEvent;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::btyd::Purchase;
use crate::domain::campaign::{AttributedPurchase, CampaignInput, ResponseCounts};
use crate::domain::model::{
    StoredCampaign, StoredInteraction, line_items_from_json, line_items_json,
};
use crate::domain::money::{Amount, decimal_to_nanos, nanos_to_decimal};
use crate::domain::summary::SummaryRow;

macro_rules! interaction_cols {
    () => {
        "interaction_id, customer_id, original_customer_id, type AS kind, custom_type, occur_time, \
         channel, initiator, currency, amount::text AS amount, margin::text AS margin, line_items, \
         campaign_id, agent_id, csat, nps, survey_comment, status, resolve_time, attributes, \
         idempotency_key, create_time, update_time, version, decision_id"
    };
}

macro_rules! campaign_cols {
    () => {
        "campaign_id, name, description, channel, target_segment_id, start_time, end_time, \
         create_time, update_time, version"
    };
}

#[derive(sqlx::FromRow)]
struct InteractionRow {
    interaction_id: Uuid,
    customer_id: Uuid,
    original_customer_id: Uuid,
    kind: i16,
    custom_type: Option<String>,
    occur_time: DateTime<Utc>,
    channel: i16,
    initiator: i16,
    currency: Option<String>,
    amount: Option<String>,
    margin: Option<String>,
    line_items: Option<serde_json::Value>,
    campaign_id: Option<Uuid>,
    decision_id: Option<Uuid>,
    agent_id: Option<String>,
    csat: Option<i16>,
    nps: Option<i16>,
    survey_comment: Option<String>,
    status: i16,
    resolve_time: Option<DateTime<Utc>>,
    attributes: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    version: i64,
}

fn amount_of(currency: &Option<String>, text: &Option<String>) -> Option<Amount> {
    Some(Amount {
        currency: currency.clone()?,
        nanos: decimal_to_nanos(text.as_deref()?)?,
    })
}

impl From<InteractionRow> for StoredInteraction {
    fn from(r: InteractionRow) -> Self {
        StoredInteraction {
            interaction_id: r.interaction_id,
            customer_id: r.customer_id,
            original_customer_id: r.original_customer_id,
            kind: i32::from(r.kind),
            amount: amount_of(&r.currency, &r.amount),
            margin: amount_of(&r.currency, &r.margin),
            custom_type: r.custom_type,
            occur_time: r.occur_time,
            channel: i32::from(r.channel),
            initiator: i32::from(r.initiator),
            line_items: line_items_from_json(r.line_items.as_ref()),
            campaign_id: r.campaign_id,
            decision_id: r.decision_id,
            agent_id: r.agent_id,
            csat: r.csat.map(i32::from),
            nps: r.nps.map(i32::from),
            comment: r.survey_comment,
            status: i32::from(r.status),
            resolve_time: r.resolve_time,
            attributes: r.attributes,
            idempotency_key: r.idempotency_key,
            create_time: r.create_time,
            update_time: r.update_time,
            version: r.version,
        }
    }
}

pub mod campaigns;
pub mod customers;
pub mod export;
pub mod reading;
pub mod recording;

pub use campaigns::*;
pub use customers::*;
pub use export::*;
pub use reading::*;
pub use recording::*;
