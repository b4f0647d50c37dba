//! Hostile input: the one vocabulary of every service's bad-input tests.
//!
//! Strings that break naive SQL, `LIKE` patterns, `COPY`'s text format and
//! byte-length assumptions; identifiers that are not UUIDs; instants outside
//! what `google.protobuf.Timestamp` may hold; and the checks that a call was
//! refused with `INVALID_ARGUMENT` naming the field.

use prost_types::Timestamp;
use tonic::{Code, Status};

/// Text that must be stored and returned byte for byte: SQL injection,
/// `LIKE` wildcards, a backslash, `COPY`'s null marker and end-of-data
/// marker, non-ASCII letters and a four-byte character.
pub const TEXT: &str = "Robert'); DROP TABLE customers;-- \"%_\\ ß 😀 \\N \\.";

/// [`TEXT`] with a tab and a line break, for free text (notes, subjects)
/// where control characters are allowed.
pub const MULTILINE_TEXT: &str = "Robert'); DROP TABLE customers;-- \"%_\\ ß 😀 \\N \\.\ttab\nline";

/// Identifiers that are not UUIDs (none empty: an empty id means "unset",
/// which some fields allow).
pub const MALFORMED_IDS: [&str; 6] = [
    "not-a-uuid",
    "../x",
    "1 OR 1=1",
    "\0",
    "   ",
    "00000000-0000-0000-0000-00000000000g",
];

/// The empty identifier and every one of [`MALFORMED_IDS`]: for fields
/// where an id is required.
pub const BAD_IDS: [&str; 7] = {
    let mut ids = [""; 7];
    let mut i = 0;
    while i < MALFORMED_IDS.len() {
        ids[i + 1] = MALFORMED_IDS[i];
        i += 1;
    }
    ids
};

/// A string that decodes as base64url but was never issued as a page token.
pub const FORGED_TOKEN: &str = "eyJ0IjoxLCJpZCI6IngifQAAAAAAAAAAAAAAAAAAAAA";

/// `token` with its character at `pos` changed (to 'A', or 'B' if it was
/// an 'A').
fn changed_at(token: &str, pos: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if let Some(c) = chars.get_mut(pos) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// `token` with its middle character changed.
pub fn tampered(token: &str) -> String {
    changed_at(token, token.chars().count() / 2)
}

/// `token` with one character changed at its start, its middle and its end.
pub fn altered(token: &str) -> Vec<String> {
    let n = token.chars().count();
    [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .map(|pos| changed_at(token, pos))
        .collect()
}

/// Page tokens no server issued: forged (valid base64 of other JSON, or of
/// plain text), not base64, NUL, overlong, SQL, hostile text, and `genuine`
/// altered, extended, truncated and NUL-suffixed.
pub fn forged_tokens(genuine: &str) -> Vec<String> {
    let mut truncated = genuine.to_string();
    truncated.pop();
    let mut tokens: Vec<String> = vec![
        FORGED_TOKEN.into(),
        "eyJpZCI6IjEgT1IgMT0xIn0".into(),
        "dGhpcyBpcyBub3QgYSB0b2tlbg".into(),
        "A".repeat(58),
        "!!!not base64!!!".into(),
        "\0".into(),
        "A".repeat(5000),
        "1 OR 1=1".into(),
        TEXT.into(),
    ];
    tokens.extend(altered(genuine));
    tokens.extend([format!("{genuine}A"), truncated, format!("{genuine}\0")]);
    tokens
}

/// 0001-01-01T00:00:00Z, the first instant a Timestamp may hold.
pub const YEAR_1: i64 = -62_135_596_800;

/// 9999-12-31T23:59:59Z, the last second a Timestamp may hold.
pub const YEAR_9999_END: i64 = 253_402_300_799;

/// The Timestamp `seconds` after the epoch, plus `nanos`.
pub fn at(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp { seconds, nanos }
}

/// Timestamps that are not valid `google.protobuf.Timestamp`s: nanos out of
/// range either way, seconds far out of range either way, and the seconds
/// just before year 1 and just after year 9999.
pub fn invalid_times() -> Vec<Timestamp> {
    vec![
        at(1_700_000_000, 1_000_000_000),
        at(1_700_000_000, -1),
        at(i64::MAX / 2, 0),
        at(i64::MIN / 2, 0),
        at(i64::MAX, 999_999_999),
        at(YEAR_1 - 1, 0),
        at(YEAR_9999_END + 1, 0),
    ]
}

/// `value` with `change` applied: one row of a bad-input table, e.g.
/// `changed(base(), |s| s.name = NUL.into())`.
pub fn changed<T>(mut value: T, change: impl FnOnce(&mut T)) -> T {
    change(&mut value);
    value
}

/// `T::default()` with `change` applied: a row of a bad-input table over a
/// message whose other fields are unset. Bind it to the message type once,
/// `let case = |f: &dyn Fn(&mut ListRequest)| with_default(f);`, and each
/// row is `case(&|r| r.page_size = -1)`.
pub fn with_default<T: Default>(change: impl FnOnce(&mut T)) -> T {
    changed(T::default(), change)
}

/// The fields named by the `BadRequest` details of `status`.
pub fn violations(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts that `result` is `INVALID_ARGUMENT` with a field violation on
/// `field`; `case` says which input it was, for the failure message.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str, case: &str) {
    let status = match result {
        Ok(ok) => panic!("{case}: expected INVALID_ARGUMENT on {field}, got {ok:?}"),
        Err(s) => s,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{case}: expected INVALID_ARGUMENT on {field}: {status:?}"
    );
    let fields = violations(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "{case}: expected a violation on {field:?}, got {fields:?} ({status:?})"
    );
}

/// Asserts that `result` is `INVALID_ARGUMENT` with exactly the field
/// violations `fields`, in order; `case` says which input it was.
#[track_caller]
pub fn assert_violations<T: std::fmt::Debug>(
    result: Result<T, Status>,
    fields: &[&str],
    case: &str,
) {
    let status = match result {
        Ok(ok) => panic!("{case}: expected INVALID_ARGUMENT on {fields:?}, got {ok:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert_eq!(violations(&status), fields, "{case}: {status:?}");
}

/// Asserts that `result` failed with `code`, and returns the status.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    case: &str,
) -> Status {
    match result {
        Ok(ok) => panic!("{case}: expected {code:?}, got {ok:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{case}: {s:?}");
            s
        }
    }
}

/// Checks the answers every read of one record by its id owes, and returns
/// the record: `read(tenant, id)` with each of [`BAD_IDS`] is
/// `INVALID_ARGUMENT` naming `field`; an id never issued, and `known` read by
/// `stranger`, are `NOT_FOUND`; `known` read by `owner` is found. A bad id
/// must be the request's one violation.
pub async fn assert_read_by_id<T, F, Fut>(
    field: &str,
    owner: uuid::Uuid,
    stranger: uuid::Uuid,
    known: &str,
    mut read: F,
) -> T
where
    T: std::fmt::Debug,
    F: FnMut(uuid::Uuid, String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    for id in BAD_IDS {
        assert_violations(
            read(owner, id.into()).await,
            &[field],
            &format!("{field} {id:?}"),
        );
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_code(read(owner, unknown).await, Code::NotFound, "an unknown id");
    assert_code(
        read(stranger, known.into()).await,
        Code::NotFound,
        "another tenant's id",
    );
    read(owner, known.into())
        .await
        .unwrap_or_else(|s| panic!("the owner reads {field} {known}: {s:?}"))
        .into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_the_first_and_last_seconds_of_a_timestamp() {
        use chrono::{DateTime, Utc};
        let first = DateTime::<Utc>::from_timestamp(YEAR_1, 0).map(|t| t.to_rfc3339());
        let last = DateTime::<Utc>::from_timestamp(YEAR_9999_END, 0).map(|t| t.to_rfc3339());
        assert_eq!(first.as_deref(), Some("0001-01-01T00:00:00+00:00"));
        assert_eq!(last.as_deref(), Some("9999-12-31T23:59:59+00:00"));
    }

    #[test]
    fn bad_ids_are_the_empty_id_and_the_malformed_ones() {
        assert_eq!(BAD_IDS[0], "");
        assert_eq!(&BAD_IDS[1..], &MALFORMED_IDS[..]);
        for id in BAD_IDS {
            assert!(uuid::Uuid::parse_str(id).is_err(), "{id:?} parses");
        }
    }

    #[test]
    fn invalid_times_are_all_outside_a_timestamp() {
        for t in invalid_times() {
            let valid = (0..1_000_000_000).contains(&t.nanos)
                && (YEAR_1..=YEAR_9999_END).contains(&t.seconds);
            assert!(!valid, "{t:?} is a valid Timestamp");
        }
    }

    #[test]
    fn forged_tokens_differ_from_the_genuine_one() {
        let genuine = "eyJ0IjoyLCJpZCI6InkifQ";
        let forged = forged_tokens(genuine);
        assert!(forged.iter().all(|t| t != genuine), "{forged:?}");
        assert_eq!(tampered("AAA"), "ABA");
        assert_eq!(altered("AAA"), vec!["BAA", "ABA", "AAB"]);
    }

    #[test]
    fn violations_are_read_from_bad_request_details() {
        let mut v = rapport_kit::error::Violations::default();
        v.add("customer_id", "not a UUID");
        let status = v.finish().err().map(Status::from);
        let status = status.expect("a violation makes an error");
        assert_eq!(violations(&status), vec!["customer_id".to_string()]);
        assert_invalid::<()>(Err(status.clone()), "customer_id", "a bad id");
        assert_violations::<()>(Err(status), &["customer_id"], "a bad id");
    }
}
