//! Contact-link rules: who may be linked, how many links fit, and when a
//! primary contact takes the flag from the organisation's others. Pure.

use chrono::NaiveDate;
use rapport_proto::rapport::profile::v1::CustomerKind;
use uuid::Uuid;

use super::normalize::Date;
use super::status::CustomerStatus;

/// Most contact links per organisation.
pub const MAX_LINKS_PER_ORGANIZATION: i64 = 200;
/// Most contact links per person.
pub const MAX_LINKS_PER_PERSON: i64 = 50;

/// Why a link cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A precondition fails, for the reason given.
    Precondition(String),
    /// The person or the organisation has as many links as it may.
    TooMany(String),
}

/// Whether `person` and `organization` (their kinds and states) may be linked.
pub fn check_parties(
    person: (Uuid, i16, CustomerStatus),
    organization: (Uuid, i16, CustomerStatus),
) -> Result<(), Refusal> {
    if i32::from(person.1) != CustomerKind::Person as i32 {
        return Err(Refusal::Precondition(format!(
            "customer {} is not a person",
            person.0
        )));
    }
    if i32::from(organization.1) != CustomerKind::Organization as i32 {
        return Err(Refusal::Precondition(format!(
            "customer {} is not an organisation",
            organization.0
        )));
    }
    if person.2 != CustomerStatus::Active || organization.2 != CustomerStatus::Active {
        return Err(Refusal::Precondition(
            "a soft-deleted customer cannot be linked; undelete it first".into(),
        ));
    }
    Ok(())
}

/// Whether one more link fits an organisation and a person with these counts.
pub fn check_room(per_organization: i64, per_person: i64) -> Result<(), Refusal> {
    if per_organization >= MAX_LINKS_PER_ORGANIZATION || per_person >= MAX_LINKS_PER_PERSON {
        return Err(Refusal::TooMany(format!(
            "an organisation has at most {MAX_LINKS_PER_ORGANIZATION} contact links and a person at most {MAX_LINKS_PER_PERSON}"
        )));
    }
    Ok(())
}

/// Whether a primary link takes the flag from the organisation's others:
/// only a current one (no end date, or one not yet past).
pub fn takes_primary(primary: bool, end_date: Option<Date>, today: NaiveDate) -> bool {
    primary && end_date.and_then(|d| d.naive()).is_none_or(|d| d >= today)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_active_person_and_organisation_are_linked() {
        use CustomerStatus::*;
        let (p, o) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let person = CustomerKind::Person as i16;
        let org = CustomerKind::Organization as i16;
        assert_eq!(check_parties((p, person, Active), (o, org, Active)), Ok(()));
        assert!(matches!(
            check_parties((p, org, Active), (o, org, Active)),
            Err(Refusal::Precondition(m)) if m.contains("is not a person")
        ));
        assert!(matches!(
            check_parties((p, person, Active), (o, person, Active)),
            Err(Refusal::Precondition(m)) if m.contains("is not an organisation")
        ));
        assert!(matches!(
            check_parties((p, person, Deleted), (o, org, Active)),
            Err(Refusal::Precondition(m)) if m.contains("soft-deleted")
        ));
    }

    #[test]
    fn room_is_counted_on_both_sides() {
        assert!(check_room(MAX_LINKS_PER_ORGANIZATION - 1, MAX_LINKS_PER_PERSON - 1).is_ok());
        assert!(check_room(MAX_LINKS_PER_ORGANIZATION, 0).is_err());
        assert!(check_room(0, MAX_LINKS_PER_PERSON).is_err());
    }
}
