//! The one error type handlers return, and its mapping to `tonic::Status`.
//!
//! Every variant maps to a precise gRPC code. Invalid input carries one
//! `google.rpc.BadRequest` field violation per problem so clients can point at
//! the offending field. Internal errors are logged with their cause and answered
//! with a bare "internal error": SQL text and stack traces never reach a client.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// An error a handler can return. Convert with `?` into `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; one violation per problem.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// The named resource does not exist (or belongs to another tenant).
    #[error("{resource} {id} not found")]
    NotFound {
        /// Resource type, e.g. "customer".
        resource: &'static str,
        /// The id the client asked for.
        id: String,
    },
    /// The resource the client tried to create already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency failed (stale etag) or a conflicting write won.
    #[error("{0}")]
    Aborted(String),
    /// The system is not in a state where the operation is allowed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A quota or rate limit was exceeded; `retry_after` says when to retry.
    #[error("{message}")]
    ResourceExhausted {
        /// What was exhausted.
        message: String,
        /// When the client may retry.
        retry_after: Option<Duration>,
    },
    /// A dependency (database, another service) is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed before the work finished.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else: logged with its cause, answered as "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dot-separated path of the field, e.g. `customer.emails[0].address`.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

fn describe(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

// A status travels in HTTP/2 response headers, and clients refuse header
// blocks above a limit (16 KiB for hyper, so for tonic): a refusal that
// exceeds it reaches the client as a transport error instead. Invalid input
// can name any number of fields, with texts the client chose (attribute
// names, map keys), so what a status carries is bounded.

/// Longest status message, in bytes (before percent-encoding).
const MAX_MESSAGE: usize = 1024;
/// Longest field path or description of one violation, in bytes.
const MAX_VIOLATION_TEXT: usize = 256;
/// Most bytes of violation texts in one status (base64-encoded in a header).
const MAX_DETAILS: usize = 5 * 1024;

/// `s` cut to at most `max` bytes at a character boundary, "…" marking a cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The violations a status carries: each text clipped, and as many as fit in
/// [`MAX_DETAILS`], in order. Returns them with the number left out.
fn bounded(violations: Vec<Violation>) -> (Vec<Violation>, usize) {
    let total = violations.len();
    let mut budget = MAX_DETAILS;
    let mut kept = Vec::new();
    for v in violations {
        let v = Violation {
            field: clip(&v.field, MAX_VIOLATION_TEXT),
            description: clip(&v.description, MAX_VIOLATION_TEXT),
        };
        // The texts plus the few bytes of protobuf framing around them.
        let cost = v.field.len() + v.description.len() + 8;
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.push(v);
    }
    let left_out = total - kept.len();
    (kept, left_out)
}

impl ApiError {
    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// NOT_FOUND for a resource type and id.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// An internal error: the cause is logged here, the client sees none of it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::Internal(cause.to_string())
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

/// One required id, failing at once with INVALID_ARGUMENT on `field`.
pub fn required_uuid(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    let mut v = Violations::new();
    let id = v.uuid(field, raw);
    v.finish()?;
    id.ok_or_else(|| ApiError::invalid(field, "required: a UUID"))
}

/// Collects field violations while validating a request, then fails once with
/// all of them, so a client learns every problem in one round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records a problem when `bad` holds.
    pub fn check(&mut self, bad: bool, field: impl Into<String>, description: impl Into<String>) {
        if bad {
            self.add(field, description);
        }
    }

    /// A required id: the UUID `raw` holds, or a violation of `field`
    /// ("required: a UUID" when empty, "must be a UUID" otherwise) and None.
    pub fn uuid(&mut self, field: impl Into<String>, raw: &str) -> Option<uuid::Uuid> {
        if raw.is_empty() {
            self.add(field, "required: a UUID");
            return None;
        }
        match uuid::Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                self.add(field, "must be a UUID");
                None
            }
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else INVALID_ARGUMENT with them all.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(violations) => {
                let (violations, left_out) = bounded(violations);
                let mut message = clip(
                    &format!("invalid argument: {}", describe(&violations)),
                    MAX_MESSAGE,
                );
                if left_out > 0 {
                    message.push_str(&format!(" (and {left_out} more problems not listed)"));
                }
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound { resource, id } => {
                let id = clip(&id, MAX_VIOLATION_TEXT);
                Status::with_error_details(
                    Code::NotFound,
                    format!("{resource} {id} not found"),
                    ErrorDetails::with_resource_info(resource, id.clone(), "", "not found"),
                )
            }
            ApiError::ResourceExhausted {
                message,
                retry_after,
            } => Status::with_error_details(
                Code::ResourceExhausted,
                clip(&message, MAX_MESSAGE),
                ErrorDetails::with_retry_info(retry_after),
            ),
            ApiError::Internal(_) => Status::new(Code::Internal, "internal error"),
            other => Status::new(other.code(), clip(&other.to_string(), MAX_MESSAGE)),
        }
    }
}

/// How long a client is asked to wait when every database connection of a
/// service stayed busy.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Every connection stayed in use while the database answers: the
        // service is busy (shed, retry shortly), not down.
        if matches!(err, sqlx::Error::PoolTimedOut) && crate::db::reachable() {
            tracing::warn!("every database connection stayed busy; shedding the call");
            return ApiError::ResourceExhausted {
                message: format!(
                    "the service is busy: no database connection became free in time; retry in {} s",
                    BUSY_RETRY.as_secs()
                ),
                retry_after: Some(BUSY_RETRY),
            };
        }
        if is_transient(&err) {
            if is_broken_connection(&err) {
                crate::db::suspect();
            }
            tracing::warn!(error = %err, "database unavailable");
            return ApiError::Unavailable("the database is unavailable; retry later".into());
        }
        ApiError::internal(err)
    }
}

/// True when `err` says a connection broke or could not be made (not that
/// the database refused a statement).
fn is_broken_connection(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// True when `err` says the database could not be reached or is going away
/// (restart, failover, shutdown, overload), not that the request was wrong:
/// the caller may retry the same request later.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P: operator intervention (admin or
            // crash shutdown, cannot connect now); 53: insufficient resources;
            // 40001/40P01: serialization failure and deadlock, retried as a whole.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

/// True when `err` is a unique-constraint violation (SQLSTATE 23505), optionally
/// on the named constraint.
pub fn is_unique_violation(err: &sqlx::Error, constraint: Option<&str>) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && constraint.is_none_or(|c| db.constraint() == Some(c))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let mut v = Violations::new();
        v.add("email", "not an e-mail address");
        v.check(true, "country", "not ISO 3166-1 alpha-2");
        v.check(false, "name", "never recorded");
        let status: Status = v.finish().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "country"]);
    }

    #[test]
    fn statuses_stay_small_enough_for_http2_headers() {
        // A thousand violations naming long, client-chosen keys.
        let mut v = Violations::new();
        for i in 0..1000 {
            v.add(
                format!("customer.attributes[{}{i}]", "ß".repeat(5000)),
                format!("no attribute definition is named {:?}", "k".repeat(5000)),
            );
        }
        let status: Status = v.finish().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().len() <= MAX_MESSAGE + 64,
            "{}",
            status.message()
        );
        assert!(status.message().contains("more problems not listed"));
        // The details repeat the message next to the violations.
        assert!(status.details().len() <= MAX_DETAILS + MAX_MESSAGE + 512);
        let details = status.get_error_details();
        let kept = &details.bad_request().expect("bad request").field_violations;
        assert!(!kept.is_empty() && kept.len() < 1000);
        assert!(kept[0].field.starts_with("customer.attributes[ßß"));
        assert!(kept[0].field.len() <= MAX_VIOLATION_TEXT);
        // A long id in NOT_FOUND, a long message elsewhere.
        let status: Status =
            ApiError::not_found("attribute definition", "n".repeat(100_000)).into();
        assert!(status.message().len() < 2 * MAX_VIOLATION_TEXT);
        let status: Status = ApiError::FailedPrecondition("p".repeat(100_000)).into();
        assert!(status.message().len() <= MAX_MESSAGE);
        // Small statuses are untouched.
        let status: Status = ApiError::invalid("email", "not an e-mail address").into();
        assert_eq!(
            status.message(),
            "invalid argument: email: not an e-mail address"
        );
        assert_eq!(clip("ab", 2), "ab");
        assert_eq!(clip("aßc", 3), "…");
        assert_eq!(clip("abcdef", 5), "ab…");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::internal("syntax error at or near SELECT").into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn not_found_names_the_resource() {
        let status: Status = ApiError::not_found("customer", "42").into();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("customer 42"));
    }

    #[test]
    fn an_unreachable_database_is_unavailable_not_internal() {
        for err in [
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            let status: Status = ApiError::from(err).into();
            assert_eq!(status.code(), Code::Unavailable);
        }
        let status: Status = ApiError::from(sqlx::Error::RowNotFound).into();
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn a_busy_pool_sheds_with_retry_info_while_the_database_answers() {
        assert!(crate::db::reachable());
        let status: Status = ApiError::from(sqlx::Error::PoolTimedOut).into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("busy"), "{}", status.message());
        let retry = status.get_error_details().retry_info().cloned();
        assert_eq!(retry.and_then(|r| r.retry_delay), Some(BUSY_RETRY));
    }
}
