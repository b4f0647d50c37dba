//! Duplicate detection: the looser "match keys" identifiers are compared by,
//! and the scoring of the evidence for a pair.

use std::collections::BTreeMap;

use rapport_proto::rapport::profile::v1::{
    DuplicateCandidate, DuplicateReason, DuplicateReasonKind,
};
use uuid::Uuid;

use super::customer::{EMAIL, EXTERNAL, PHONE};
use super::normalize;

/// The mailbox an address delivers to: sub-address tags dropped, and for
/// gmail.com / googlemail.com dots in the local part ignored and the two
/// domains taken as one.
pub fn email_key(address: &str) -> String {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let local = local.split('+').next().unwrap_or(local);
    if domain == "gmail.com" || domain == "googlemail.com" {
        format!("{}@gmail.com", local.replace('.', ""))
    } else {
        format!("{local}@{domain}")
    }
}

/// An external id without case, white space, punctuation and leading zeros of
/// its digit runs: "ABC-00123" and "abc123" share a key.
pub fn external_key(value: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in value.chars().filter(|c| c.is_alphanumeric()) {
        let c = c.to_lowercase().next().unwrap_or(c);
        if c.is_ascii_digit() {
            if !in_digits && c == '0' {
                continue;
            }
            in_digits = true;
        } else {
            in_digits = false;
        }
        out.push(c);
    }
    out
}

/// The key duplicate detection compares an identifier by.
pub fn match_key(kind: i16, value: &str) -> String {
    match kind {
        EMAIL => email_key(value),
        PHONE => normalize::phone_national(value),
        EXTERNAL => external_key(value),
        _ => value.to_string(),
    }
}

/// Least name similarity that counts as evidence.
pub const NAME_SIMILARITY: f64 = 0.6;

/// One piece of evidence found by the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Equivalent identifiers of `kind` (EMAIL, PHONE, EXTERNAL).
    Identifier {
        /// Identifier kind.
        kind: i16,
        /// The first customer's value.
        first: String,
        /// The second customer's value.
        second: String,
    },
    /// Similar names and a place in common.
    Name {
        /// Name similarity, 0..=1.
        similarity: f64,
        /// The two names.
        names: (String, String),
        /// Same postal code (true) or same city (false).
        same_postal_code: bool,
        /// The shared place, e.g. "Madrid" or "ES 28004".
        place: String,
    },
}

fn weight_of(e: &Evidence) -> (DuplicateReasonKind, f64, String) {
    match e {
        Evidence::Identifier {
            kind,
            first,
            second,
        } => {
            let (k, w) = match *kind {
                EMAIL => (DuplicateReasonKind::SameEmail, 0.9),
                PHONE => (DuplicateReasonKind::SamePhone, 0.8),
                _ => (DuplicateReasonKind::SameExternalId, 0.9),
            };
            (k, w, format!("{first} ~ {second}"))
        }
        Evidence::Name {
            similarity,
            names,
            same_postal_code,
            place,
        } => {
            let scaled = ((similarity - NAME_SIMILARITY) / (1.0 - NAME_SIMILARITY)).clamp(0.0, 1.0);
            let (k, base) = if *same_postal_code {
                (DuplicateReasonKind::SimilarNameSamePostalCode, 0.5)
            } else {
                (DuplicateReasonKind::SimilarNameSameCity, 0.4)
            };
            (
                k,
                base + 0.4 * scaled,
                format!("'{}' ~ '{}' ({similarity:.2}), {place}", names.0, names.1),
            )
        }
    }
}

/// Combines the evidence for one pair into a candidate: the strongest reason
/// of each kind counts, and the score is 1 - prod(1 - weight).
pub fn score(first: Uuid, second: Uuid, evidence: &[Evidence]) -> DuplicateCandidate {
    let (first, second) = if first <= second {
        (first, second)
    } else {
        (second, first)
    };
    let mut best: BTreeMap<i32, DuplicateReason> = BTreeMap::new();
    for e in evidence {
        let (kind, weight, detail) = weight_of(e);
        let weight = (weight * 1000.0).round() / 1000.0;
        let entry = best.entry(kind as i32).or_insert_with(|| DuplicateReason {
            kind: kind as i32,
            detail: detail.clone(),
            weight,
        });
        if weight > entry.weight {
            entry.weight = weight;
            entry.detail = detail;
        }
    }
    let mut reasons: Vec<DuplicateReason> = best.into_values().collect();
    reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.kind.cmp(&b.kind)));
    let keep = reasons.iter().fold(1.0, |acc, r| acc * (1.0 - r.weight));
    let score = ((1.0 - keep) * 1_000_000.0).round() / 1_000_000.0;
    DuplicateCandidate {
        first_customer_id: first.to_string(),
        second_customer_id: second.to_string(),
        score,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_expose_the_usual_variants() {
        assert_eq!(email_key("ana+shop@x.com"), email_key("ana@x.com"));
        assert_eq!(
            email_key("ana.lopez+news@googlemail.com"),
            email_key("analopez@gmail.com")
        );
        assert_ne!(email_key("ana.lopez@x.com"), email_key("analopez@x.com"));
        assert_eq!(external_key("ABC-00123"), external_key("abc123"));
        assert_eq!(external_key("0042"), "42");
        assert_ne!(external_key("a1"), external_key("a10"));
        assert_eq!(
            match_key(PHONE, "+34911234567"),
            match_key(PHONE, "+44911234567")
        );
    }

    #[test]
    fn scores_combine_and_order_reasons() {
        let a = Uuid::from_u128(2);
        let b = Uuid::from_u128(1);
        let c = score(
            a,
            b,
            &[
                Evidence::Name {
                    similarity: 0.8,
                    names: ("Ana López".into(), "Ana Lopez".into()),
                    same_postal_code: true,
                    place: "ES 28004".into(),
                },
                Evidence::Identifier {
                    kind: EMAIL,
                    first: "ana+x@y.com".into(),
                    second: "ana@y.com".into(),
                },
            ],
        );
        assert_eq!(c.first_customer_id, b.to_string());
        assert_eq!(c.reasons[0].kind, DuplicateReasonKind::SameEmail as i32);
        assert!((c.score - (1.0 - 0.1 * 0.3)).abs() < 1e-9, "{}", c.score);
    }

    proptest! {
        #[test]
        fn scores_stay_in_range(sims in proptest::collection::vec(0.6f64..=1.0, 0..4), ids in 0usize..3) {
            let mut ev: Vec<Evidence> = sims.iter().map(|s| Evidence::Name {
                similarity: *s, names: ("a".into(), "b".into()), same_postal_code: *s > 0.8, place: "x".into(),
            }).collect();
            for _ in 0..ids {
                ev.push(Evidence::Identifier { kind: PHONE, first: "1".into(), second: "2".into() });
            }
            let c = score(Uuid::from_u128(1), Uuid::from_u128(2), &ev);
            prop_assert!((0.0..=1.0).contains(&c.score));
            for r in &c.reasons {
                prop_assert!(r.weight <= c.score + 1e-9);
            }
        }

        #[test]
        fn external_key_ignores_case_and_punctuation(s in "[A-Za-z0-9]{1,12}") {
            let dashed: String = s.chars().flat_map(|c| [c, '-']).collect();
            prop_assert_eq!(external_key(&s.to_uppercase()), external_key(&dashed.to_lowercase()));
        }
    }
}
