//! Erasure rules: what to look for in the feed, and which feed events an
//! erasure reduces and why. Pure.

use prost::Message;
use rapport_proto::rapport::profile::v1::ProfileEvent;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use uuid::Uuid;

/// Identifier values shorter than this are not searched for in other
/// events' payloads: too short to name a person, and too likely to match
/// by chance.
pub const MIN_NEEDLE_CHARS: usize = 5;

/// What to look for in the feed: the erased customers' ids, and their
/// identifier values long enough to name them.
pub fn needles(ids: &[Uuid], identifier_values: Vec<String>) -> Vec<String> {
    let mut n: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    n.extend(
        identifier_values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_NEEDLE_CHARS),
    );
    n
}

/// A numbered feed event: (sequence, aggregate type, aggregate id, encoded event).
pub type FeedEntry = (i64, String, String, Vec<u8>);

/// A feed event to reduce: (sequence, subject id).
pub type Redaction = (i64, String);

/// Which feed events an erasure of `erased` (customer ids) reduces, given the
/// events that mention any of them or their identifiers: (events about an
/// erased customer, events of others that mention one), each as (sequence,
/// subject id). Already reduced events are left as they are.
pub fn erasure_redactions(
    mentioned: &[FeedEntry],
    erased: &[String],
) -> (Vec<Redaction>, Vec<Redaction>) {
    let mut about = Vec::new();
    let mut others = Vec::new();
    for (seq, aggregate_type, aggregate_id, body) in mentioned {
        if let Ok(ProfileEvent {
            event: Some(Ev::Redacted(_)),
        }) = ProfileEvent::decode(body.as_slice())
        {
            continue;
        }
        if aggregate_type == "customer" && erased.contains(aggregate_id) {
            about.push((*seq, aggregate_id.clone()));
            continue;
        }
        if aggregate_type == "contact_link" {
            let link = match ProfileEvent::decode(body.as_slice()) {
                Ok(ProfileEvent {
                    event: Some(Ev::ContactLinked(l)),
                }) => l
                    .link
                    .map(|l| (l.person_customer_id, l.organization_customer_id)),
                Ok(ProfileEvent {
                    event: Some(Ev::ContactUnlinked(u)),
                }) => Some((u.person_customer_id, u.organization_customer_id)),
                _ => None,
            };
            if let Some(id) =
                link.and_then(|(p, o)| [p, o].into_iter().find(|id| erased.contains(id)))
            {
                about.push((*seq, id));
                continue;
            }
        }
        others.push((*seq, aggregate_id.clone()));
    }
    (about, others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_proto::rapport::common::v1::RedactedEvent;
    use rapport_proto::rapport::profile::v1::{ContactLink, ContactLinked, CustomerErased};

    fn body(e: Ev) -> Vec<u8> {
        ProfileEvent { event: Some(e) }.encode_to_vec()
    }

    #[test]
    fn needles_are_ids_and_long_enough_identifiers() {
        let id = Uuid::from_u128(7);
        let n = needles(&[id], vec!["ab@c".into(), "ann@example.com".into()]);
        assert_eq!(n, vec![id.to_string(), "ann@example.com".to_string()]);
    }

    #[test]
    fn events_about_the_erased_and_events_mentioning_them_are_told_apart() {
        let (gone, org, other) = ("a".to_string(), "o".to_string(), "x".to_string());
        let erased_event = body(Ev::CustomerErased(CustomerErased::default()));
        let link = body(Ev::ContactLinked(ContactLinked {
            link: Some(ContactLink {
                person_customer_id: gone.clone(),
                organization_customer_id: org.clone(),
                ..ContactLink::default()
            }),
        }));
        let redacted = body(Ev::Redacted(RedactedEvent::default()));
        let mentioned = vec![
            (
                1,
                "customer".to_string(),
                gone.clone(),
                erased_event.clone(),
            ),
            (2, "contact_link".to_string(), "l".to_string(), link),
            (3, "customer".to_string(), other.clone(), erased_event),
            (4, "customer".to_string(), gone.clone(), redacted),
        ];
        let (about, others) = erasure_redactions(&mentioned, std::slice::from_ref(&gone));
        assert_eq!(about, vec![(1, gone.clone()), (2, gone)]);
        assert_eq!(others, vec![(3, other)]);
    }
}
