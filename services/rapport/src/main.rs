//! `rapport`: one binary for every Rapport service.
//!
//! * `rapport dev` — the whole platform on localhost, with an embedded
//!   throwaway-friendly PostgreSQL unless a database URL is given.
//! * `rapport serve <service>` — one service from configuration, as a
//!   container runs it.
//! * `rapport migrate [<service>]` — creates schemas and roles, applies migrations.
//! * `rapport seed` — a realistic demo tenant, sent through the gateway.
//! * `rapport bench` — the platform measured end to end on this machine.

mod bench;
mod dev;
mod export;
mod import;
mod seed;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rapport_kit::config::ServiceConfig;
use rapport_kit::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "rapport",
    version,
    about = "Rapport: a customer-relationship platform of gRPC services."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run every service and the gateway on localhost, with an embedded PostgreSQL
    /// unless --database-url is given.
    Dev(dev::DevArgs),
    /// Run one service (profile, interaction, segmentation, valuation, engagement or gateway)
    /// configured by RAPPORT_* environment variables and the optional RAPPORT_CONFIG file.
    Serve {
        /// The service to run.
        #[arg(value_parser = ["profile", "interaction", "segmentation", "valuation", "engagement", "gateway"])]
        service: String,
    },
    /// Create each service's role and schema when missing and apply its migrations.
    Migrate {
        /// Only this service (default: all of them).
        #[arg(value_parser = ["profile", "interaction", "segmentation", "valuation", "engagement", "gateway"])]
        service: Option<String>,
        /// An administrative PostgreSQL URL (a role that may create roles and schemas).
        #[arg(long, env = "RAPPORT_DATABASE_URL")]
        database_url: String,
    },
    /// Generate a realistic demo tenant (customers with contacts, consents and
    /// attributes; BG/NBD purchase histories with Gamma-Gamma spend; contacts,
    /// service requests, campaigns and surveys) and send it through the
    /// gateway's public APIs. Deterministic for a seed; safe to run twice.
    Seed(seed::SeedArgs),
    /// Import a CSV or JSON Lines file of customers or interactions through
    /// the gateway, with a progress bar and a file of rejected rows; safe to
    /// re-run after an interruption (keys are derived from the rows).
    Import(import::ImportArgs),
    /// Export a tenant's customers, interactions, segment members or values
    /// through the gateway as CSV or JSON Lines, streamed, with a progress bar.
    Export(export::ExportArgs),
    /// Measure the platform end to end on this machine: ingestion through the
    /// gateway beside raw COPY, unary read latency direct and through the
    /// gateway, segment refresh and preview beside hand-written SQL, model
    /// fits, and each service's resident memory. Prints tables and writes
    /// JSON to --out. Starts its own PostgreSQL and services.
    Bench(bench::BenchArgs),
    /// Create a key with the `admin` scope for the operator tenant (creating that
    /// tenant when there is none) and print it: the first admin key of a
    /// deployment, or a new one when every admin key was revoked.
    AdminKey {
        /// An administrative PostgreSQL URL (the gateway's migrations are applied first).
        #[arg(long, env = "RAPPORT_DATABASE_URL")]
        database_url: String,
        /// Name of the operator tenant, when it has to be created.
        #[arg(long, default_value = "operator")]
        tenant_name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rapport: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Serve { service } => serve(&service).await,
            Command::Migrate {
                service,
                database_url,
            } => {
                let _telemetry =
                    rapport_kit::telemetry::init("migrate", Default::default(), "info");
                let selected: Vec<_> = match service {
                    Some(name) => services::by_name(&name).into_iter().collect(),
                    None => services::ALL.to_vec(),
                };
                services::migrate(&database_url, &selected).await
            }
            Command::AdminKey {
                database_url,
                tenant_name,
            } => admin_key(&database_url, &tenant_name).await,
            Command::Bench(args) => {
                let _telemetry = rapport_kit::telemetry::init("bench", Default::default(), "error");
                bench::run(args).await
            }
            Command::Import(args) => {
                let _telemetry = rapport_kit::telemetry::init("import", Default::default(), "warn");
                import::run(args).await
            }
            Command::Export(args) => {
                let _telemetry = rapport_kit::telemetry::init("export", Default::default(), "warn");
                export::run(args).await
            }
            Command::Seed(args) => {
                let _telemetry = rapport_kit::telemetry::init("seed", Default::default(), "warn");
                seed::run(args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rapport: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn admin_key(database_url: &str, tenant_name: &str) -> anyhow::Result<()> {
    let _telemetry = rapport_kit::telemetry::init("admin-key", Default::default(), "warn");
    let gateway = services::by_name("gateway").ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    services::migrate(database_url, &[gateway]).await?;
    let pool = rapport_kit::db::connect(database_url, rapport_gateway::SCHEMA, 1).await?;
    let creds = rapport_gateway::create_operator_key(&pool, tenant_name).await?;
    pool.close().await;
    eprintln!(
        "admin key of the operator tenant {} (shown once):",
        creds.tenant_id
    );
    println!("{}", creds.api_key);
    Ok(())
}

async fn serve(name: &str) -> anyhow::Result<()> {
    let service =
        services::by_name(name).ok_or_else(|| anyhow::anyhow!("unknown service {name}"))?;
    let config = ServiceConfig::load()?;
    let _telemetry = rapport_kit::telemetry::init(service.name, config.log_format, &config.log);
    if let Some(addr) = config.metrics_listen {
        rapport_kit::metrics::install(addr, service.name)
            .map_err(|e| anyhow::anyhow!("RAPPORT_METRICS_LISTEN: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (RAPPORT_LISTEN): {e}", config.listen))?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    rapport_kit::server::run_service(
        service.name,
        service.schema,
        &config,
        listener,
        shutdown,
        |b, rt| (service.register)(b, rt),
    )
    .await?;
    Ok(())
}
