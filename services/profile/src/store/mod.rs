//! Every SQL statement of the profile service, and the transactions that
//! make up each operation, one module per aggregate: [`customers`],
//! [`identifiers`], [`resolution`], [`merge`], [`duplicates`], [`erase`],
//! [`contacts`], [`consent`], [`definitions`], [`search`] and the
//! [`request_keys`] of idempotent creates. Pure decisions (validation, merge
//! rules, consent, scoring) come from [`crate::domain`]; every change appends
//! its change-feed event in the same transaction. This module holds the row
//! types shared between them and re-exports every public item.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rapport_kit::ApiError;
use rapport_kit::convert::timestamp;
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::common::v1::Identifier;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use rapport_proto::rapport::profile::v1::{
    self as ev, AttributeDefinition, ConsentRecord, ContactLink, Customer, DuplicateCandidate,
    ProfileEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::attributes::{AttrValue, Definition, Definitions};
use crate::domain::consent::Rec;
use crate::domain::customer::{
    self as cust, EMAIL, EXTERNAL, Ident, PHONE, Profile, Stored, Validated,
};
use crate::domain::duplicates::{self as duplicate_rules, Evidence};
use crate::domain::merge::{self as merge_rules, Taken};
use crate::domain::normalize::Date;
pub use crate::domain::resolution::{Key, Resolution};
pub use crate::domain::status::CustomerStatus;
use crate::error::{Error, Result, customer_not_found, precondition};

/// Who recorded what the service writes itself.
pub const SERVICE_PRINCIPAL: &str = "rapport";
pub use crate::domain::contacts::{MAX_LINKS_PER_ORGANIZATION, MAX_LINKS_PER_PERSON};

macro_rules! customer_cols {
    () => {
        "customer_id, kind, status, data, merged_into, version, create_time, update_time, delete_time, stage_set_time, erase_time"
    };
}

/// A `customers` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    /// Id.
    pub customer_id: Uuid,
    /// CustomerKind number.
    pub kind: i16,
    /// Where the record is in its life.
    pub status: CustomerStatus,
    /// The profile document.
    pub data: Json<Profile>,
    /// The survivor, when merged.
    pub merged_into: Option<Uuid>,
    /// Version (etag).
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Soft-deleted.
    pub delete_time: Option<DateTime<Utc>>,
    /// Stage last changed.
    pub stage_set_time: Option<DateTime<Utc>>,
    /// Erased.
    pub erase_time: Option<DateTime<Utc>>,
}

/// An `identifiers` row.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct IdentRow {
    /// Holder.
    pub customer_id: Uuid,
    /// EMAIL, PHONE, EXTERNAL.
    pub kind: i16,
    /// Issuing system.
    pub system: String,
    /// Value.
    pub value: String,
    /// Order within its kind.
    pub position: i32,
    /// Primary within its kind.
    pub is_primary: bool,
    /// Label.
    pub label: String,
}

impl IdentRow {
    /// The contract's identifier.
    pub fn identifier(&self) -> Identifier {
        customers::identifier(i32::from(self.kind), &self.system, &self.value)
    }

    fn ident(&self) -> Ident {
        Ident {
            kind: self.kind,
            system: self.system.clone(),
            value: self.value.clone(),
            primary: self.is_primary,
            label: self.label.clone(),
        }
    }
}

/// A `consent_records` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConsentRow {
    /// Id.
    pub consent_record_id: Uuid,
    /// Recorded for.
    pub customer_id: Uuid,
    /// Held by.
    pub holder_id: Uuid,
    /// Channel number.
    pub channel: i16,
    /// Purpose number.
    pub purpose: i16,
    /// Status number.
    pub status: i16,
    /// Source.
    pub source: String,
    /// Evidence.
    pub evidence: String,
    /// Effective.
    pub effective_time: DateTime<Utc>,
    /// Recorded.
    pub record_time: DateTime<Utc>,
    /// Recorded by.
    pub recorded_by: String,
}

impl ConsentRow {
    /// The contract's record.
    pub fn to_proto(&self) -> ConsentRecord {
        ConsentRecord {
            consent_record_id: self.consent_record_id.to_string(),
            customer_id: self.customer_id.to_string(),
            channel: i32::from(self.channel),
            purpose: i32::from(self.purpose),
            status: i32::from(self.status),
            source: self.source.clone(),
            evidence: self.evidence.clone(),
            effective_time: Some(timestamp(self.effective_time)),
            record_time: Some(timestamp(self.record_time)),
            recorded_by: self.recorded_by.clone(),
        }
    }

    /// What consent decisions need.
    pub fn rec(&self) -> Rec {
        Rec {
            status: i32::from(self.status),
            effective_time: self.effective_time,
            record_time: self.record_time,
            id: self.consent_record_id,
        }
    }
}

macro_rules! consent_cols {
    () => {
        "consent_record_id, customer_id, holder_id, channel, purpose, status, source, evidence, effective_time, record_time, recorded_by"
    };
}

/// A `contact_links` row.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, Deserialize)]
pub struct LinkRow {
    /// Id.
    pub contact_link_id: Uuid,
    /// The person.
    pub person_id: Uuid,
    /// The organisation.
    pub organization_id: Uuid,
    /// ContactRole number.
    pub role: i16,
    /// Job title.
    pub job_title: String,
    /// First day.
    pub start_date: Option<Json<Date>>,
    /// Last day.
    pub end_date: Option<Json<Date>>,
    /// Primary contact.
    pub is_primary: bool,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Changed.
    pub update_time: DateTime<Utc>,
}

macro_rules! link_cols {
    () => {
        "contact_link_id, person_id, organization_id, role, job_title, start_date, end_date, is_primary, create_time, update_time"
    };
}

impl LinkRow {
    /// The contract's link.
    pub fn to_proto(&self) -> ContactLink {
        let d = |d: &Option<Json<Date>>| {
            d.as_ref()
                .map(|d| rapport_proto::rapport::profile::v1::CalendarDate {
                    year: d.0.year,
                    month: d.0.month,
                    day: d.0.day,
                })
        };
        ContactLink {
            contact_link_id: self.contact_link_id.to_string(),
            person_customer_id: self.person_id.to_string(),
            organization_customer_id: self.organization_id.to_string(),
            role: i32::from(self.role),
            job_title: self.job_title.clone(),
            start_date: d(&self.start_date),
            end_date: d(&self.end_date),
            primary: self.is_primary,
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
        }
    }

    /// Its ContactLinked event (the caller sets the tenant).
    pub fn event(&self) -> NewEvent {
        NewEvent::new(
            Uuid::nil(),
            "contact_link",
            self.contact_link_id.to_string(),
            "ContactLinked",
            &ProfileEvent {
                event: Some(Ev::ContactLinked(ev::ContactLinked {
                    link: Some(self.to_proto()),
                })),
            },
        )
    }
}

/// A customer event: its type is the name of `event`'s case.
pub fn event(tenant: Uuid, aggregate_id: Uuid, event: Ev) -> NewEvent {
    let event_type = match &event {
        Ev::CustomerCreated(_) => "CustomerCreated",
        Ev::CustomerUpdated(_) => "CustomerUpdated",
        Ev::CustomerDeleted(_) => "CustomerDeleted",
        Ev::CustomerUndeleted(_) => "CustomerUndeleted",
        Ev::CustomerMerged(_) => "CustomerMerged",
        Ev::CustomerUnmerged(_) => "CustomerUnmerged",
        Ev::CustomerErased(_) => "CustomerErased",
        Ev::ConsentChanged(_) => "ConsentChanged",
        Ev::ContactLinked(_) => "ContactLinked",
        Ev::ContactUnlinked(_) => "ContactUnlinked",
        Ev::Redacted(_) => "Redacted",
    };
    NewEvent::new(
        tenant,
        "customer",
        aggregate_id.to_string(),
        event_type,
        &ProfileEvent { event: Some(event) },
    )
}

/// Appends one customer event to the outbox in the caller's transaction.
pub async fn append_customer_event(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    e: Ev,
) -> Result<()> {
    append(conn, vec![event(tenant, customer, e)]).await
}

/// Appends events to the outbox in the caller's transaction.
pub async fn append(conn: &mut PgConnection, events: Vec<NewEvent>) -> Result<()> {
    feed::append(conn, &events).await?;
    Ok(())
}

/// Today's date in UTC, for birth-date checks.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Five minutes: how far in the future an effective time may be.
pub fn consent_future_slack() -> Duration {
    Duration::minutes(5)
}

/// The stored attribute value type, re-exported for filters.
pub type StoredValue = AttrValue;

pub mod consent;
pub mod contacts;
pub mod customers;
pub mod definitions;
pub mod duplicates;
pub mod erase;
pub mod identifiers;
pub mod merge;
pub mod request_keys;
pub mod resolution;
pub mod search;

pub use consent::*;
pub use contacts::*;
pub use customers::*;
pub use definitions::*;
pub use duplicates::*;
pub use erase::*;
pub use identifiers::*;
pub use merge::*;
pub use request_keys::*;
pub use resolution::*;
pub use search::*;
