//! Whether an outcome may be recorded for a decision, and what it adds to
//! the propensities' counts. One rule for RecordOutcome and for outcomes
//! arriving on the interaction feed.

use chrono::{DateTime, Utc};
use rapport_proto::rapport::interaction::v1::InteractionType;

/// What recording an outcome does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The decision already has this outcome: nothing changes.
    Unchanged,
    /// Set it, adding these (accepted, refused) to the counts.
    Set { accepted: i64, refused: i64 },
}

/// Why an outcome may not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A control-group record: nothing was offered.
    Control,
    /// The decision already has another outcome (not "ignored").
    Decided(String),
    /// The outcome happened before the decision.
    BeforeDecision,
}

/// Settles `outcome` ("accepted" or "declined") at `at` for a decision of
/// `arm` whose outcome is `current`, made at `decided`. A late outcome
/// replaces an "ignored" and takes back the refusal counted for it.
pub fn settle(
    arm: &str,
    current: &str,
    outcome: &str,
    decided: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<Settle, Refusal> {
    if arm == "control" {
        return Err(Refusal::Control);
    }
    if current == outcome {
        return Ok(Settle::Unchanged);
    }
    if current != "pending" && current != "ignored" {
        return Err(Refusal::Decided(current.to_string()));
    }
    if at < decided {
        return Err(Refusal::BeforeDecision);
    }
    let was_ignored = i64::from(current == "ignored");
    Ok(if outcome == "accepted" {
        Settle::Set {
            accepted: 1,
            refused: -was_ignored,
        }
    } else {
        Settle::Set {
            accepted: 0,
            refused: 1 - was_ignored,
        }
    })
}

/// The outcome an interaction carrying a decision id records: a conversion
/// or a purchase accepts, an unsubscribe declines; other types (opened,
/// clicked…) record nothing.
pub fn of_interaction(kind: i32) -> Option<&'static str> {
    match InteractionType::try_from(kind).ok()? {
        InteractionType::CampaignConverted | InteractionType::Purchase => Some("accepted"),
        InteractionType::CampaignUnsubscribed => Some("declined"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn outcomes_settle_once() {
        assert_eq!(
            settle("treatment", "pending", "accepted", t(1), t(2)),
            Ok(Settle::Set {
                accepted: 1,
                refused: 0
            })
        );
        assert_eq!(
            settle("treatment", "pending", "declined", t(1), t(2)),
            Ok(Settle::Set {
                accepted: 0,
                refused: 1
            })
        );
        assert_eq!(
            settle("treatment", "ignored", "accepted", t(1), t(2)),
            Ok(Settle::Set {
                accepted: 1,
                refused: -1
            })
        );
        assert_eq!(
            settle("treatment", "ignored", "declined", t(1), t(2)),
            Ok(Settle::Set {
                accepted: 0,
                refused: 0
            })
        );
        assert_eq!(
            settle("treatment", "accepted", "accepted", t(1), t(2)),
            Ok(Settle::Unchanged)
        );
        assert_eq!(
            settle("treatment", "accepted", "declined", t(1), t(2)),
            Err(Refusal::Decided("accepted".into()))
        );
        assert_eq!(
            settle("control", "pending", "accepted", t(1), t(2)),
            Err(Refusal::Control)
        );
        assert_eq!(
            settle("treatment", "pending", "accepted", t(2), t(1)),
            Err(Refusal::BeforeDecision)
        );
    }

    #[test]
    fn interactions_map_to_outcomes() {
        assert_eq!(
            of_interaction(InteractionType::CampaignConverted as i32),
            Some("accepted")
        );
        assert_eq!(
            of_interaction(InteractionType::Purchase as i32),
            Some("accepted")
        );
        assert_eq!(
            of_interaction(InteractionType::CampaignUnsubscribed as i32),
            Some("declined")
        );
        assert_eq!(of_interaction(InteractionType::CampaignOpened as i32), None);
    }
}
