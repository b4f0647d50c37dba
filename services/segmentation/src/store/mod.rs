//! Every SQL statement of the segmentation service, one module per part:
//! [`tenants`], the feature [`projection`] written a batch at a time and its
//! [`customers`] one at a time, [`rfm`], [`classification`], [`segments`],
//! the [`evaluation`] of their rules, the [`membership_log`] and the facts
//! of [`explanations`]. Values are always bound as parameters; the rule
//! compiler's SQL (`rule::Sql`) is spliced as a condition only, with its own
//! parameters bound after the tenant. This module re-exports every public
//! item.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use rapport_kit::convert::timestamp;
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::segmentation::v1::{
    self as pb, MembershipChangeReason, segmentation_event,
};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use crate::domain::classify::{Inputs, Rank};
pub use crate::domain::removal::Removal;
pub use crate::domain::segment::Kind;
use crate::rule::{Sql, SqlParam};

pub mod projection;

pub use projection::*;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// A decimal from a JSON number or string of a stored row (exact for
/// strings), normalised.
pub fn decimal(v: &Value) -> Option<Decimal> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()
        .map(|d| d.normalize())
}

/// The NOTIFY channel of the membership change log.
pub const MEMBERSHIP_CHANNEL: &str = "segmentation_membership";

/// The interaction types that count as contacts.
pub const CONTACT_TYPES: [&str; 7] = [
    "sales_visit",
    "call",
    "email",
    "meeting",
    "chat",
    "service_request",
    "complaint",
];

/// Campaign responses: opened, clicked, converted.
pub const RESPONSE_TYPES: [&str; 3] = ["campaign_opened", "campaign_clicked", "campaign_converted"];

pub mod classification;
pub mod customers;
pub mod evaluation;
pub mod explanations;
pub mod membership_log;
pub mod rfm;
mod rule_params;
pub mod segments;
pub mod tenants;

pub use classification::*;
pub use customers::*;
pub use evaluation::*;
pub use explanations::*;
pub use membership_log::*;
pub use rfm::*;
use rule_params::*;
pub use segments::*;
pub use tenants::*;
