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

/// Takes the tenant's advisory lock named `what` (e.g.
/// `valuation.values`), held until the transaction ends.
async fn tenant_lock(
    tx: &mut sqlx::PgConnection,
    what: &'static str,
    tenant: uuid::Uuid,
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2::text))")
        .bind(what)
        .bind(tenant)
        .execute(tx)
        .await?;
    Ok(())
}
