//! The profile service: identifies every customer (DESIGN.md, "Services").
//! Owns the `profile` schema.
//!
//! Until its contract (`rapport.profile.v1.ProfileService`) is implemented, the
//! process serves health, reflection and its change-feed tables only: no method
//! is registered that would answer UNIMPLEMENTED.

use rapport_kit::db::SchemaSpec;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use sqlx::migrate::Migrator;

/// Schema `profile`, role `rapport_profile`; `pg_trgm` for fuzzy name search.
pub const SCHEMA: SchemaSpec =
    SchemaSpec::new("profile", "rapport_profile").with_extensions(&["pg_trgm"]);

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds the service's gRPC services to `server`.
pub fn register(_server: &mut ServerBuilder, _runtime: &ServiceRuntime) {}
