//! Property tests of identifier normalisation (the values ResolveIdentity,
//! CreateCustomer and duplicate detection match on): whatever a client sends,
//! normalisation answers without panicking, either a value or the field at
//! fault; a normalised value is accepted again and normalises to itself.

use proptest::prelude::*;
use rapport_profile::domain::customer::normalize_identifier;
use rapport_profile::domain::normalize;
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind};

fn kind() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(IdentifierKind::Email as i32),
        Just(IdentifierKind::Phone as i32),
        Just(IdentifierKind::External as i32),
        Just(IdentifierKind::Unspecified as i32),
        any::<i32>(),
    ]
}

/// Values that look like identifiers, hostile text, and anything at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ \t]{0,2}[A-Za-z0-9._%+'-]{1,20}@[A-Za-z0-9-]{1,12}(\\.[A-Za-z]{2,6}){1,2}[ \t]{0,2}",
        "\\+?[0-9 ()./-]{3,20}",
        "\\+(1|33|34|44|49|52|81) ?[0-9]{6,12}",
        "[a-z0-9_.-]{1,30}",
        "'; DROP TABLE customers; --|\" OR 1=1 --|%_\\\\|\\$1|Ω≈ç√∫ 😀",
        ".{0,300}",
        any::<String>(),
    ]
}

fn country() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("US".to_string()),
        Just("ES".to_string()),
        Just("DE".to_string()),
        Just("JP".to_string()),
        "[A-Z]{2}",
        any::<String>(),
    ]
}

fn system() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("crm".to_string()),
        "[a-z0-9_.-]{1,64}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn normalisation_is_total_and_idempotent(
        kind in kind(),
        value in value(),
        system in system(),
        country in country(),
    ) {
        let id = Identifier { kind, system, value };
        match normalize_identifier(&id, &country) {
            Err((field, why)) => {
                prop_assert!(["kind", "system", "value"].contains(&field.as_str()), "{field}");
                prop_assert!(!why.is_empty());
            }
            Ok(first) => {
                prop_assert!(!first.value.is_empty());
                prop_assert!(!first.value.chars().any(char::is_control));
                let again = Identifier {
                    kind,
                    system: first.system.clone(),
                    value: first.value.clone(),
                };
                // Accepted again, in any country: a normalised phone is E.164.
                for c in [country.as_str(), "", "FR"] {
                    match normalize_identifier(&again, c) {
                        Ok(second) => {
                            prop_assert_eq!(&second.value, &first.value);
                            prop_assert_eq!(&second.system, &first.system);
                            prop_assert_eq!(second.kind, first.kind);
                        }
                        Err(e) => prop_assert!(false, "{:?} refused on the second pass: {:?}", first.value, e),
                    }
                }
            }
        }
    }

    #[test]
    fn emails_are_trimmed_lower_case_and_bounded(value in value()) {
        if let Ok(e) = normalize::email(&value) {
            prop_assert_eq!(e.clone(), value.trim().to_lowercase());
            prop_assert!(e.chars().count() <= normalize::MAX_EMAIL);
            prop_assert_eq!(e.matches('@').count(), 1);
        }
    }

    #[test]
    fn phones_are_e164(value in value(), country in country()) {
        if let Ok(p) = normalize::phone(&value, &country) {
            prop_assert!(p.starts_with('+'), "{p}");
            prop_assert!(p[1..].chars().all(|c| c.is_ascii_digit()), "{p}");
            prop_assert!(p.len() <= 16, "{p}");
        }
    }

    #[test]
    fn free_text_is_trimmed_and_bounded(value in value(), max in 0usize..400) {
        if let Ok(t) = normalize::text(&value, max) {
            prop_assert_eq!(t.as_str(), value.trim());
            prop_assert!(t.chars().count() <= max);
        }
    }
}
