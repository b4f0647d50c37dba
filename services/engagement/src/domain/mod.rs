//! Pure decisions of the engagement service: no I/O, unit-tested.
//!
//! * [`treatment`]: what a treatment is, its validation and its changes.
//! * [`policy`]: the tenant's contact caps, quiet periods and learning settings.
//! * [`playbook`]: which kinds of treatment come first for whom.
//! * [`consent`]: whether a consent in force allows a purpose on a channel.
//! * [`propensity`]: Beta posteriors of acceptance.
//! * [`decide`]: eligibility, control groups and ranking, explained.
//! * [`outcome`]: when an outcome may be recorded, and what it counts.
//! * [`report`]: proportions, intervals and lift of a treatment report.

pub mod consent;
pub mod decide;
pub mod outcome;
pub mod playbook;
pub mod policy;
pub mod propensity;
pub mod report;
pub mod treatment;

/// The time now, to the microsecond: what PostgreSQL keeps, so an answer
/// shows the instant a later read will.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Utc};
    Utc::now().trunc_subsecs(6)
}

/// `t` to the microsecond (what PostgreSQL keeps).
pub fn to_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

/// Nanos in one unit of money.
pub const NANOS: i128 = 1_000_000_000;

/// An exact amount: a currency and billionths of its unit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Amount {
    /// ISO 4217 code.
    pub currency: String,
    /// Billionths of a unit (units × 10⁹ + nanos).
    pub nanos: i64,
}

impl Amount {
    /// As a `Money` message.
    pub fn to_money(&self) -> rapport_proto::rapport::common::v1::Money {
        money(&self.currency, i128::from(self.nanos))
    }
}

/// A `Money` for `nanos` of `currency` (saturating at the range of `units`).
pub fn money(currency: &str, nanos: i128) -> rapport_proto::rapport::common::v1::Money {
    let units = nanos / NANOS;
    rapport_proto::rapport::common::v1::Money {
        currency_code: currency.to_string(),
        units: i64::try_from(units).unwrap_or(if units > 0 { i64::MAX } else { i64::MIN }),
        nanos: (nanos % NANOS) as i32,
    }
}
