//! Every SQL statement of the engagement service, one module per aggregate;
//! the items are re-exported here.

mod decisions;
mod policies;
mod projection;
mod reports;
mod treatments;

pub use decisions::*;
pub use policies::*;
pub use projection::*;
pub use reports::*;
pub use treatments::*;

/// Errors of the store: the database's.
pub type Result<T> = std::result::Result<T, sqlx::Error>;
