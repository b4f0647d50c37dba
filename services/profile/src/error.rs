//! The service's errors: the kit's [`ApiError`], plus the identifier clash
//! that names the customer holding the identifier (a `google.rpc.ResourceInfo`
//! detail).

use rapport_kit::ApiError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// An error of a profile operation.
#[derive(Debug)]
pub enum Error {
    /// Any error the kit knows how to answer.
    Api(ApiError),
    /// An e-mail, phone or external identifier belongs to another customer.
    IdentifierTaken {
        /// The request field, e.g. `customer.emails[0].address`.
        field: String,
        /// The customer holding it.
        owner: Uuid,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Api(e) => write!(f, "{e}"),
            Error::IdentifierTaken { field, owner } => {
                write!(f, "{field} already belongs to customer {owner}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Api(e.into())
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::Api(e) => e.into(),
            Error::IdentifierTaken { field, owner } => Status::with_error_details(
                Code::AlreadyExists,
                format!("{field} already belongs to another customer ({owner})"),
                ErrorDetails::with_resource_info(
                    "customer",
                    owner.to_string(),
                    "",
                    format!("holds the identifier of {field}"),
                ),
            ),
        }
    }
}

/// Shorthand results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// NOT_FOUND for a customer id.
pub fn customer_not_found(id: impl ToString) -> Error {
    Error::Api(ApiError::not_found("customer", id.to_string()))
}

/// FAILED_PRECONDITION.
pub fn precondition(msg: impl Into<String>) -> Error {
    Error::Api(ApiError::FailedPrecondition(msg.into()))
}

/// INVALID_ARGUMENT on one field.
pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Api(ApiError::invalid(field, msg))
}
