//! The services this binary can run, and what each needs.

use rapport_kit::db::SchemaSpec;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use sqlx::migrate::Migrator;

/// One service: its name, schema, migrations and gRPC registration.
#[derive(Clone, Copy)]
pub struct Service {
    /// As on the command line: `profile`, `gateway`, …
    pub name: &'static str,
    /// Its schema and role.
    pub schema: SchemaSpec,
    /// Its migrations.
    pub migrator: &'static Migrator,
    /// Adds its gRPC services to a server.
    pub register: fn(&mut ServerBuilder, &ServiceRuntime),
}

/// Every service, in the order `rapport dev` starts them.
pub const ALL: [Service; 6] = [
    Service {
        name: "profile",
        schema: rapport_profile::SCHEMA,
        migrator: &rapport_profile::MIGRATOR,
        register: rapport_profile::register,
    },
    Service {
        name: "interaction",
        schema: rapport_interaction::SCHEMA,
        migrator: &rapport_interaction::MIGRATOR,
        register: rapport_interaction::register,
    },
    Service {
        name: "segmentation",
        schema: rapport_segmentation::SCHEMA,
        migrator: &rapport_segmentation::MIGRATOR,
        register: rapport_segmentation::register,
    },
    Service {
        name: "valuation",
        schema: rapport_valuation::SCHEMA,
        migrator: &rapport_valuation::MIGRATOR,
        register: rapport_valuation::register,
    },
    Service {
        name: "engagement",
        schema: rapport_engagement::SCHEMA,
        migrator: &rapport_engagement::MIGRATOR,
        register: rapport_engagement::register,
    },
    Service {
        name: "gateway",
        schema: rapport_gateway::SCHEMA,
        migrator: &rapport_gateway::MIGRATOR,
        register: rapport_gateway::register,
    },
];

/// The service called `name`.
pub fn by_name(name: &str) -> Option<Service> {
    ALL.iter().copied().find(|s| s.name == name)
}

/// Applies the migrations of `services` with an administrative URL.
pub async fn migrate(admin_url: &str, services: &[Service]) -> anyhow::Result<()> {
    for s in services {
        rapport_kit::db::migrate(admin_url, s.schema, s.migrator)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {}: {e}", s.name))?;
        tracing::info!(
            service = s.name,
            schema = s.schema.schema,
            "migrations applied"
        );
    }
    Ok(())
}
