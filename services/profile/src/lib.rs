//! The profile service: identifies every customer (ARCHITECTURE.md, "Services
//! and what each owns"). Owns the `profile` schema: customers (people and
//! organisations), their identifiers, custom attributes and the tenant's
//! attribute definitions, consents, B2B contact links, merges and duplicate
//! marks.
//!
//! * [`api`]: the gRPC handlers of `rapport.profile.v1.ProfileService`.
//! * [`domain`]: pure logic (validation, merge rules, scoring, consent).
//! * [`store`]: every SQL statement.

pub mod api;
pub mod consent;
pub mod contacts;
pub mod customers;
pub mod definitions;
pub mod domain;
pub mod erase;
pub mod error;
pub mod import;
pub mod merge;
pub mod resolution;
pub mod store;

use rapport_kit::db::SchemaSpec;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::profile::v1::profile_service_server::ProfileServiceServer;
use sqlx::migrate::Migrator;

/// Schema `profile`, role `rapport_profile`; `pg_trgm` for fuzzy name search
/// and `btree_gin` so that GIN indexes can lead with `tenant_id`.
pub const SCHEMA: SchemaSpec =
    SchemaSpec::new("profile", "rapport_profile").with_extensions(&["pg_trgm", "btree_gin"]);

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds `rapport.profile.v1.ProfileService` to `server`.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let service = api::ProfileApi::new(runtime);
    server.add_service(
        ProfileServiceServer::new(service)
            .max_decoding_message_size(runtime.config.max_message_bytes)
            .max_encoding_message_size(runtime.config.max_message_bytes),
    );
}
