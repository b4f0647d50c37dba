//! Change feeds (ARCHITECTURE.md, "The path of an event").
//!
//! A feed is ordered per tenant: each tenant's events are numbered in commit
//! order (by their readers, once committed), and writers never wait on each
//! other.
//!
//! * [`append`] writes events to the service's `outbox` in the caller's
//!   transaction, so an event exists if and only if its change committed.
//! * [`serve_watch`] serves any service's `WatchChanges` (one policy for all):
//!   each tenant's backlog first, then live events, woken by `LISTEN/NOTIFY`
//!   naming the tenant (with a slow poll as a safety net).
//! * [`PeerFeed`] reads a peer's feed over gRPC; [`Consumer`] follows it and
//!   applies each tenant's events in a batch, in one transaction of its own
//!   schema with that tenant's cursor, so after any restart it resumes where
//!   it stopped and never applies an event twice.
//!
//! The parts: `outbox` (appending, numbering, reading and redacting events),
//! `position` (where a reader stands), `watch` (serving `WatchChanges`) and
//! `consumer` (following a peer's feed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use prost_types::Any;
use rapport_proto::rapport::common::v1::{
    ChangeEvent, FeedPosition, RedactedEvent, RedactionReason,
};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{ApiError, Violations};
use crate::shutdown::Shutdown;

mod consumer;
mod outbox;
mod position;
mod watch;

pub use consumer::*;
pub use outbox::*;
pub use position::*;
pub use watch::*;

/// A service's feed envelope: the message of its `events.proto` whose `oneof`
/// holds one case per event type, carried in `ChangeEvent.event`.
pub trait FeedEnvelope: prost::Message + Default + Sized {
    /// The type URL of `ChangeEvent.event` for this envelope.
    const TYPE_URL: &'static str;
    /// The envelope's `redacted` case.
    fn redacted(r: RedactedEvent) -> Self;
}

macro_rules! envelope {
    ($ty:ty, $name:literal, $case:path) => {
        impl FeedEnvelope for $ty {
            const TYPE_URL: &'static str = concat!("type.googleapis.com/", $name);
            fn redacted(r: RedactedEvent) -> Self {
                Self {
                    event: Some($case(r)),
                }
            }
        }
    };
}

envelope!(
    rapport_proto::rapport::profile::v1::ProfileEvent,
    "rapport.profile.v1.ProfileEvent",
    rapport_proto::rapport::profile::v1::profile_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::interaction::v1::InteractionEvent,
    "rapport.interaction.v1.InteractionEvent",
    rapport_proto::rapport::interaction::v1::interaction_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::segmentation::v1::SegmentationEvent,
    "rapport.segmentation.v1.SegmentationEvent",
    rapport_proto::rapport::segmentation::v1::segmentation_event::Event::Redacted
);
envelope!(
    rapport_proto::rapport::valuation::v1::ValuationEvent,
    "rapport.valuation.v1.ValuationEvent",
    rapport_proto::rapport::valuation::v1::valuation_event::Event::Redacted
);

/// An event to append to the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant whose data changed.
    pub tenant_id: Uuid,
    /// What kind of thing changed, e.g. `customer`.
    pub aggregate_type: &'static str,
    /// Its id.
    pub aggregate_id: String,
    /// What happened, e.g. `CustomerCreated`: the name of the envelope's case.
    pub event_type: &'static str,
    /// The typed event: the service's envelope, encoded.
    pub event: Any,
}

impl NewEvent {
    /// An event whose data is `envelope`.
    pub fn new<E: FeedEnvelope>(
        tenant_id: Uuid,
        aggregate_type: &'static str,
        aggregate_id: impl Into<String>,
        event_type: &'static str,
        envelope: &E,
    ) -> Self {
        Self {
            tenant_id,
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            event_type,
            event: Any {
                type_url: E::TYPE_URL.to_string(),
                value: envelope.encode_to_vec(),
            },
        }
    }
}

/// The typed event of `event` as envelope `E`: `None` for an event appended
/// before typed events, or one of another envelope, or one that does not
/// decode (logged: the producer and this consumer disagree on the contract).
pub fn decode<E: FeedEnvelope>(event: &ChangeEvent) -> Option<E> {
    let any = event.event.as_ref()?;
    if any.type_url != E::TYPE_URL {
        tracing::warn!(
            sequence = event.sequence,
            type_url = %any.type_url,
            expected = E::TYPE_URL,
            "feed event of an unexpected type; skipped"
        );
        return None;
    }
    match E::decode(any.value.as_slice()) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(sequence = event.sequence, error = %err, "feed event does not decode; skipped");
            None
        }
    }
}
