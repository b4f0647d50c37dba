//! Every SQL statement of the valuation service, one module per aggregate.
//! Values are always bound as parameters (statements built with `format!`
//! only splice constant column lists and column names); bulk writes go
//! through `unnest` arrays or COPY.

pub mod activities;
pub mod costs;
pub mod kept_reports;
mod models;
pub mod profitability;
mod purchases;
mod queue;
pub mod summaries;
mod values;

pub use models::*;
pub use purchases::*;
pub use queue::*;
pub use values::*;

/// Rows per bulk statement.
const CHUNK: usize = 10_000;
