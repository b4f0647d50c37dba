//! The valuation service (DESIGN.md, "Services"). Owns the `valuation` schema.
//!
//! Until its contract is implemented, the process serves health, reflection and
//! its change-feed tables only: no method is registered that would answer
//! UNIMPLEMENTED.

pub mod domain;

use rapport_kit::db::SchemaSpec;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use sqlx::migrate::Migrator;

/// Schema `valuation`, role `rapport_valuation`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("valuation", "rapport_valuation");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds the service's gRPC services to `server`.
pub fn register(_server: &mut ServerBuilder, _runtime: &ServiceRuntime) {}
